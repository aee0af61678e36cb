/**
 * PROXY protocol version 2 (HAProxy's "The PROXY protocol", section 2.2: the binary header an L4 balancer
 * such as HAProxy `send-proxy-v2` puts before the client's bytes), so the KE listener sees the client's
 * address instead of the balancer's. Pure: bytes in, one outcome out; never throws on input.
 *
 * Header layout (all integers big-endian):
 *   0   12  signature 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
 *   12  1   version (high nibble, must be 2) | command (low nibble: 0 LOCAL, 1 PROXY)
 *   13  1   family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) | protocol (low: 0 UNSPEC, 1 STREAM, 2 DGRAM)
 *   14  2   length of the rest (address block + TLVs)
 *   16  …   TCP over IPv4 (0x11): src addr 4, dst addr 4, src port 2, dst port 2 (12 octets)
 *           TCP over IPv6 (0x21): src addr 16, dst addr 16, src port 2, dst port 2 (36 octets)
 *   …   …   TLVs: type 1, length 2, value; type 0x03 (PP2_TYPE_CRC32C) carries a CRC-32C of the whole
 *           header computed with its own 4 value octets set to zero
 *
 * Outcomes: `incomplete` (a prefix of a header that may still be valid: read more, within the deadline),
 * `local` (LOCAL command: a health check by the balancer itself; keep the socket's addresses), `proxy`
 * (the client's address), or `invalid` with one reason. The spec's rule is that a receiver never guesses:
 * anything that is not a valid header is refused, never treated as the start of TLS.
 */
import { formatIpAddress, type IpFamily } from './ip.js';

/** The 12-octet signature (section 2.2). */
export const PROXY_V2_SIGNATURE: readonly number[] = Object.freeze([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** Octets before the address block: signature, version/command, family/protocol, length. */
export const PROXY_V2_FIXED_LENGTH = 16;
/**
 * Largest accepted value of the length field. A TCP6 block is 36 octets; HAProxy adds a few TLVs (ALPN,
 * authority, CRC32C, unique id ≤ 128, SSL details); 1024 leaves room for all of them, and anything larger
 * is refused before it is buffered.
 */
export const PROXY_V2_MAX_LENGTH = 1024;
/** PP2_TYPE_CRC32C (section 2.2.5). */
export const PP2_TYPE_CRC32C = 0x03;

/** Why a header was refused; each defect class maps to exactly one reason. */
export type ProxyHeaderDefect =
  | 'bad_signature'
  | 'bad_version'
  | 'bad_command'
  | 'unsupported_protocol'
  | 'too_long'
  | 'bad_address_length'
  | 'bad_tlv'
  | 'bad_crc';

/** An endpoint from the address block; IPv4-mapped IPv6 addresses are given as plain IPv4. */
export interface ProxyEndpoint {
  readonly address: string;
  readonly port: number;
  readonly family: IpFamily;
}

/** The result of parsing the first bytes of a connection. */
export type ProxyHeaderResult =
  | { readonly kind: 'incomplete' }
  | { readonly kind: 'local'; readonly headerLength: number }
  | { readonly kind: 'proxy'; readonly headerLength: number; readonly source: ProxyEndpoint; readonly destination: ProxyEndpoint }
  | { readonly kind: 'invalid'; readonly reason: ProxyHeaderDefect };

const INCOMPLETE: ProxyHeaderResult = Object.freeze({ kind: 'incomplete' });

function invalid(reason: ProxyHeaderDefect): ProxyHeaderResult {
  return { kind: 'invalid', reason };
}

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF), table-driven.
const CRC32C_TABLE = ((): Uint32Array => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C (RFC 3720 B.4) of `data`, with octets [zeroFrom, zeroFrom + zeroLength) read as zero. */
export function crc32c(data: Uint8Array, zeroFrom = -1, zeroLength = 0): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) {
    const b = i >= zeroFrom && i < zeroFrom + zeroLength ? 0 : (data[i] ?? 0);
    c = (CRC32C_TABLE[(c ^ b) & 0xff] ?? 0) ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}

function readU16(b: Uint8Array, at: number): number {
  return ((b[at] ?? 0) << 8) | (b[at + 1] ?? 0);
}

function readU32(b: Uint8Array, at: number): number {
  return (((b[at] ?? 0) << 24) | ((b[at + 1] ?? 0) << 16) | ((b[at + 2] ?? 0) << 8) | (b[at + 3] ?? 0)) >>> 0;
}

function endpointV4(b: Uint8Array, addrAt: number, port: number): ProxyEndpoint {
  const words = new Uint32Array([0, 0, 0xffff, readU32(b, addrAt)]);
  return { address: formatIpAddress(words, 4), port, family: 4 };
}

function endpointV6(b: Uint8Array, addrAt: number, port: number): ProxyEndpoint {
  const words = new Uint32Array([readU32(b, addrAt), readU32(b, addrAt + 4), readU32(b, addrAt + 8), readU32(b, addrAt + 12)]);
  // An IPv4-mapped address (::ffff:a.b.c.d, RFC 4291 §2.5.5.2) is the IPv4 client it stands for.
  const mapped = words[0] === 0 && words[1] === 0 && words[2] === 0xffff;
  return { address: formatIpAddress(words, mapped ? 4 : 6), port, family: mapped ? 4 : 6 };
}

/** Walks the TLVs in [from, end) with bounds checks; verifies a CRC32C TLV against the whole header. */
function checkTlvs(b: Uint8Array, from: number, end: number): ProxyHeaderDefect | undefined {
  let at = from;
  while (at < end) {
    if (end - at < 3) return 'bad_tlv';
    const type = b[at] ?? 0;
    const length = readU16(b, at + 1);
    const value = at + 3;
    if (length > end - value) return 'bad_tlv';
    if (type === PP2_TYPE_CRC32C) {
      if (length !== 4) return 'bad_tlv';
      if (crc32c(b.subarray(0, end), value, 4) !== readU32(b, value)) return 'bad_crc';
    }
    at = value + length;
  }
  return undefined;
}

/**
 * Parses a PROXY v2 header at the start of `bytes` (the octets received so far on a connection).
 * `headerLength` of a complete header says where the client's own bytes (TLS) begin.
 */
export function parseProxyHeader(bytes: Uint8Array): ProxyHeaderResult {
  // Refuse a wrong signature as soon as one octet of it differs: never wait for more of a non-header.
  const signatureSeen = Math.min(bytes.length, PROXY_V2_SIGNATURE.length);
  for (let i = 0; i < signatureSeen; i++) if (bytes[i] !== PROXY_V2_SIGNATURE[i]) return invalid('bad_signature');
  if (bytes.length < 13) return INCOMPLETE;
  const versionCommand = bytes[12] ?? 0;
  if (versionCommand >>> 4 !== 2) return invalid('bad_version');
  const command = versionCommand & 0x0f;
  if (command > 1) return invalid('bad_command');
  if (bytes.length < PROXY_V2_FIXED_LENGTH) return INCOMPLETE;
  const familyProtocol = bytes[13] ?? 0;
  const length = readU16(bytes, 14);
  if (length > PROXY_V2_MAX_LENGTH) return invalid('too_long');
  const headerLength = PROXY_V2_FIXED_LENGTH + length;
  if (bytes.length < headerLength) return INCOMPLETE;
  // LOCAL (section 2.2): the balancer's own connection; its address block is ignored.
  if (command === 0) return { kind: 'local', headerLength };
  let addressLength: number;
  if (familyProtocol === 0x11) addressLength = 12;
  else if (familyProtocol === 0x21) addressLength = 36;
  else return invalid('unsupported_protocol'); // the KE listener is TCP: only TCP4 and TCP6 can be proxied to it
  if (length < addressLength) return invalid('bad_address_length');
  const tlvDefect = checkTlvs(bytes, PROXY_V2_FIXED_LENGTH + addressLength, headerLength);
  if (tlvDefect !== undefined) return invalid(tlvDefect);
  const a = PROXY_V2_FIXED_LENGTH;
  if (familyProtocol === 0x11) {
    return { kind: 'proxy', headerLength, source: endpointV4(bytes, a, readU16(bytes, a + 8)), destination: endpointV4(bytes, a + 4, readU16(bytes, a + 10)) };
  }
  return { kind: 'proxy', headerLength, source: endpointV6(bytes, a, readU16(bytes, a + 32)), destination: endpointV6(bytes, a + 16, readU16(bytes, a + 34)) };
}
