/**
 * The 48-octet NTP packet header (RFC 5905 §7.3, Figure 8).
 *
 *   octet 0      LI (2 bits) | VN (3 bits) | Mode (3 bits)
 *   octet 1      stratum (u8)
 *   octet 2      poll (s8, log2 seconds)
 *   octet 3      precision (s8, log2 seconds)
 *   octets 4–7   root delay (NTP short format)
 *   octets 8–11  root dispersion (NTP short format)
 *   octets 12–15 reference id
 *   octets 16–23 reference timestamp
 *   octets 24–31 origin timestamp
 *   octets 32–39 receive timestamp
 *   octets 40–47 transmit timestamp
 *
 * `decodeHeader` returns a value for tests and tools; the responder reads single fields with the
 * accessors below, which do not allocate.
 */
import { readU32, writeU32 } from '../bytes.js';
import { readTimestamp, writeTimestamp, type NtpTimestamp } from './timestamp.js';

/** Length of the NTP header in octets (RFC 5905 §7.3). */
export const NTP_HEADER_LENGTH = 48;

/** Octet offsets of header fields (RFC 5905 §7.3, Figure 8). */
export const NtpHeaderOffset = {
  liVnMode: 0,
  stratum: 1,
  poll: 2,
  precision: 3,
  rootDelay: 4,
  rootDispersion: 8,
  referenceId: 12,
  referenceTime: 16,
  originTime: 24,
  receiveTime: 32,
  transmitTime: 40,
} as const;

/** Association modes (RFC 5905 §7.3, Figure 10). */
export const NtpMode = {
  reserved: 0,
  symmetricActive: 1,
  symmetricPassive: 2,
  client: 3,
  server: 4,
  broadcast: 5,
  control: 6,
  private: 7,
} as const;
/** A mode number (three bits; every value is named). */
export type NtpModeValue = (typeof NtpMode)[keyof typeof NtpMode];

/** Leap indicator values (RFC 5905 §7.3, Figure 9). */
export const LeapIndicator = {
  noWarning: 0,
  lastMinuteHas61Seconds: 1,
  lastMinuteHas59Seconds: 2,
  /** Clock unsynchronised; also used in Kiss-o'-Death packets (RFC 5905 §7.4). */
  unsynchronized: 3,
} as const;
/** A leap indicator value (two bits; every value is named). */
export type LeapIndicatorValue = (typeof LeapIndicator)[keyof typeof LeapIndicator];

/** Stratum 0 marks a Kiss-o'-Death packet whose reference id is an ASCII kiss code (RFC 5905 §7.4). */
export const KISS_OF_DEATH_STRATUM = 0;
/** Stratum 16: unsynchronised (RFC 5905 §7.3, Figure 11). */
export const UNSYNCHRONIZED_STRATUM = 16;

/** A decoded NTP header (RFC 5905 §7.3). Integers keep their wire ranges; root delay/dispersion stay in short format. */
export interface NtpHeader {
  readonly leap: LeapIndicatorValue;
  readonly version: number;
  readonly mode: NtpModeValue;
  readonly stratum: number;
  /** Poll exponent, signed (log2 s). */
  readonly poll: number;
  /** Precision exponent, signed (log2 s). */
  readonly precision: number;
  /** Root delay in NTP short format (u32, seconds · 2^16). */
  readonly rootDelay: number;
  /** Root dispersion in NTP short format (u32, seconds · 2^16). */
  readonly rootDispersion: number;
  /** Reference id (u32): a refid, an IPv4 address, a hash, or a kiss code when stratum is 0. */
  readonly referenceId: number;
  readonly referenceTime: NtpTimestamp;
  readonly originTime: NtpTimestamp;
  readonly receiveTime: NtpTimestamp;
  readonly transmitTime: NtpTimestamp;
}

/** Why a header did not decode. */
export type NtpHeaderDecodeError = 'too_short';

/** Result of decoding a header. */
export type NtpHeaderDecodeResult =
  | { readonly ok: true; readonly header: NtpHeader }
  | { readonly ok: false; readonly error: NtpHeaderDecodeError };

/** Leap indicator of the packet in `buf` (top two bits of octet 0). */
export function readLeap(buf: Uint8Array): LeapIndicatorValue {
  return (((buf[0] ?? 0) >>> 6) & 3) as LeapIndicatorValue;
}

/** Version number of the packet in `buf` (bits 2–4 of octet 0). */
export function readVersion(buf: Uint8Array): number {
  return ((buf[0] ?? 0) >>> 3) & 7;
}

/** Association mode of the packet in `buf` (low three bits of octet 0). */
export function readMode(buf: Uint8Array): NtpModeValue {
  return ((buf[0] ?? 0) & 7) as NtpModeValue;
}

/** Packs LI, VN and mode into octet 0 (RFC 5905 §7.3). */
export function packLiVnMode(leap: number, version: number, mode: number): number {
  return ((leap & 3) << 6) | ((version & 7) << 3) | (mode & 7);
}

/** Reads a signed 8-bit value (poll, precision). */
function readS8(buf: Uint8Array, offset: number): number {
  const v = buf[offset] ?? 0;
  return v >= 0x80 ? v - 0x100 : v;
}

/** Decodes the 48-octet header at the start of `buf`; never throws. */
export function decodeHeader(buf: Uint8Array): NtpHeaderDecodeResult {
  if (buf.length < NTP_HEADER_LENGTH) return { ok: false, error: 'too_short' };
  return {
    ok: true,
    header: {
      leap: readLeap(buf),
      version: readVersion(buf),
      mode: readMode(buf),
      stratum: buf[NtpHeaderOffset.stratum] ?? 0,
      poll: readS8(buf, NtpHeaderOffset.poll),
      precision: readS8(buf, NtpHeaderOffset.precision),
      rootDelay: readU32(buf, NtpHeaderOffset.rootDelay),
      rootDispersion: readU32(buf, NtpHeaderOffset.rootDispersion),
      referenceId: readU32(buf, NtpHeaderOffset.referenceId),
      referenceTime: readTimestamp(buf, NtpHeaderOffset.referenceTime),
      originTime: readTimestamp(buf, NtpHeaderOffset.originTime),
      receiveTime: readTimestamp(buf, NtpHeaderOffset.receiveTime),
      transmitTime: readTimestamp(buf, NtpHeaderOffset.transmitTime),
    },
  };
}

/**
 * Writes `header` as 48 octets at out[offset..]; returns the offset after it.
 * Throws RangeError when `out` is too small (a caller bug, not peer input).
 */
export function encodeHeader(header: NtpHeader, out: Uint8Array, offset: number): number {
  if (offset < 0 || out.length - offset < NTP_HEADER_LENGTH) throw new RangeError('encodeHeader: output buffer too small');
  out[offset] = packLiVnMode(header.leap, header.version, header.mode);
  out[offset + 1] = header.stratum & 0xff;
  out[offset + 2] = header.poll & 0xff;
  out[offset + 3] = header.precision & 0xff;
  writeU32(out, offset + NtpHeaderOffset.rootDelay, header.rootDelay);
  writeU32(out, offset + NtpHeaderOffset.rootDispersion, header.rootDispersion);
  writeU32(out, offset + NtpHeaderOffset.referenceId, header.referenceId);
  writeTimestamp(out, offset + NtpHeaderOffset.referenceTime, header.referenceTime);
  writeTimestamp(out, offset + NtpHeaderOffset.originTime, header.originTime);
  writeTimestamp(out, offset + NtpHeaderOffset.receiveTime, header.receiveTime);
  writeTimestamp(out, offset + NtpHeaderOffset.transmitTime, header.transmitTime);
  return offset + NTP_HEADER_LENGTH;
}

/** Encodes a four-character ASCII code (kiss code or refid such as "NTSN", "GPS") as a u32, NUL-padded. */
export function asciiReferenceId(code: string): number {
  let v = 0;
  for (let i = 0; i < 4; i++) v = v * 256 + (i < code.length ? code.charCodeAt(i) & 0xff : 0);
  return v >>> 0;
}
