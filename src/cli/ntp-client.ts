/**
 * NTS-protected NTPv4 client exchange (RFC 8915 §5, RFC 5905 §8).
 *
 * `buildNtsRequest` writes a mode-3 request into a caller buffer (so a load generator can precompute
 * many), `verifyNtsResponse` checks a reply against what was sent, and `ntsExchange` does one
 * request/response over UDP and computes offset and delay. Peer input never throws: every problem is
 * a returned value.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { randomFillSync } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { WallClock } from '../runtime/clock.js';
import { getAead, type AeadAlgorithm, type AeadCipher } from '../core/crypto/aead.js';
import { constantTimeEqual, padTo4, readU16, readU32, type FillRandom } from '../core/bytes.js';
import {
  decodeHeader,
  KISS_OF_DEATH_STRATUM,
  NTP_HEADER_LENGTH,
  NtpHeaderOffset,
  NtpMode,
  packLiVnMode,
  type NtpHeader,
} from '../core/ntp/header.js';
import { createExtensionFieldCursor, EF_HEADER_LENGTH, EfScan, scanExtensionField, scanInnerExtensionField } from '../core/ntp/extension.js';
import { writeTimestamp, type NtpTimestamp } from '../core/ntp/timestamp.js';
import { KISS_NTSN, NtsExtensionFieldType } from '../core/nts/ids.js';
import { authenticatorFieldLength, encodeNtsClientRequest, MAX_COOKIES_PER_REPLY, UNIQUE_ID_MIN_LENGTH } from '../core/nts/ntp-fields.js';

/** Smallest Unique Identifier a client sends: 32 octets (RFC 8915 §5.3; the core's UNIQUE_ID_MIN_LENGTH). */
export const MIN_UNIQUE_ID_LENGTH = UNIQUE_ID_MIN_LENGTH;
/** A client sends at most 7 placeholders, so its stash returns to 8 cookies (RFC 8915 §5.7). */
export const MAX_COOKIE_PLACEHOLDERS = MAX_COOKIES_PER_REPLY - 1;
/** NTP version we speak (RFC 5905 §7.3). */
const NTP_VERSION = 4;

/** Everything that goes into one NTS request. */
export interface NtsRequestParams {
  /** The negotiated AEAD (for nonce and tag sizes). */
  readonly aead: AeadAlgorithm;
  /** Cipher keyed with C2S (RFC 8915 §5.6: client-to-server key). */
  readonly c2sCipher: AeadCipher;
  /** Unique Identifier, at least 32 random octets (RFC 8915 §5.3). */
  readonly uniqueId: Uint8Array;
  /** One cookie from the stash (RFC 8915 §5.4). */
  readonly cookie: Uint8Array;
  /** Number of cookie placeholders, 0..7 (RFC 8915 §5.5). */
  readonly placeholders: number;
  /** Source of the AEAD nonce (RFC 8915 §5.6: a fresh full-size nonce per request). */
  readonly fillRandom: FillRandom;
  /** Value for the transmit timestamp field; the server echoes it as the origin timestamp (RFC 5905 §8). */
  readonly transmitTime: NtpTimestamp;
  /** Poll exponent to advertise (default 4). */
  readonly poll?: number;
}

/** Length in octets of the request `buildNtsRequest` writes for these sizes. */
export function ntsRequestLength(aead: AeadAlgorithm, uniqueIdLength: number, cookieLength: number, placeholders: number): number {
  const uidField = EF_HEADER_LENGTH + padTo4(uniqueIdLength);
  const cookieField = EF_HEADER_LENGTH + padTo4(cookieLength);
  return NTP_HEADER_LENGTH + uidField + cookieField * (1 + placeholders) + authenticatorFieldLength(aead.nonceLength, 0, aead.tagLength);
}

/**
 * Writes a mode-3 NTS request (RFC 8915 §5.7) at out[offset..] with the core's encoder: header, Unique
 * Identifier, Cookie, `placeholders` Cookie Placeholders as long as the cookie (§5.5), then the
 * Authenticator over everything before it, with an empty plaintext (§5.6). Returns the offset after the
 * packet. Throws RangeError on caller bugs (short UID, too many placeholders, small buffer).
 */
export function buildNtsRequest(params: NtsRequestParams, out: Uint8Array, offset = 0): number {
  if (params.uniqueId.length < UNIQUE_ID_MIN_LENGTH) throw new RangeError(`Unique Identifier must be at least ${UNIQUE_ID_MIN_LENGTH} octets`);
  if (!Number.isInteger(params.placeholders) || params.placeholders < 0 || params.placeholders > MAX_COOKIE_PLACEHOLDERS) {
    throw new RangeError(`placeholders must be 0..${MAX_COOKIE_PLACEHOLDERS}`);
  }
  const header = new Uint8Array(NTP_HEADER_LENGTH);
  header[0] = packLiVnMode(0, NTP_VERSION, NtpMode.client);
  header[NtpHeaderOffset.poll] = (params.poll ?? 4) & 0xff;
  writeTimestamp(header, NtpHeaderOffset.transmitTime, params.transmitTime);
  const length = encodeNtsClientRequest(
    { header, uniqueId: params.uniqueId, cookie: params.cookie, placeholders: params.placeholders, aead: params.aead, c2s: params.c2sCipher },
    params.fillRandom,
    out.subarray(offset),
  );
  return offset + length;
}

/** What the client expects of the reply to one request. */
export interface NtsResponseExpectation {
  /** The Unique Identifier sent (RFC 8915 §5.3). */
  readonly uniqueId: Uint8Array;
  /** The transmit timestamp sent; the reply's origin timestamp must equal it (RFC 5905 §8). */
  readonly transmitTime: NtpTimestamp;
  /** Cipher keyed with S2C (RFC 8915 §5.6: server-to-client key). */
  readonly s2cCipher: AeadCipher;
}

/** An authenticated reply. */
export interface NtsVerifiedResponse {
  /** The NTP header (authenticated as associated data). */
  readonly header: NtpHeader;
  /** Fresh cookies from the encrypted part (RFC 8915 §5.7), copies. */
  readonly cookies: Uint8Array[];
  /** Number of EFs that followed the Authenticator (unauthenticated, discarded per §5.7). */
  readonly unauthenticatedFields: number;
}

/** Why a reply was refused. */
export type NtsResponseError =
  /** Shorter than an NTP header, or EFs that do not parse (RFC 7822). */
  | 'malformed'
  /** Not a mode-4 NTPv4 reply. */
  | 'not_server_reply'
  /** Origin timestamp differs from our transmit timestamp (a stale, duplicate or bogus packet; RFC 5905 §8). */
  | 'origin_mismatch'
  /** No Unique Identifier, or more than one, before the Authenticator (RFC 8915 §5.3, §5.7). */
  | 'missing_unique_id'
  /** The Unique Identifier differs from ours (RFC 8915 §5.3). */
  | 'unique_id_mismatch'
  /** NTS negative acknowledgement: stratum 0, kiss code NTSN, matching UID (RFC 8915 §5.7). */
  | 'nts_nak'
  /** Another Kiss-o'-Death (RFC 5905 §7.4); see `kissCode`. */
  | 'kiss_of_death'
  /** No Authenticator EF (RFC 8915 §5.7). */
  | 'missing_authenticator'
  /** Authenticator EF body does not parse (RFC 8915 §5.6). */
  | 'malformed_authenticator'
  /** The AEAD did not verify with S2C (RFC 8915 §5.6). */
  | 'bad_tag'
  /** No cookie inside the encrypted part (RFC 8915 §5.7: at least one). */
  | 'missing_cookie';

/** Result of verifying a reply. */
export type NtsResponseCheck =
  | { readonly ok: true; readonly response: NtsVerifiedResponse }
  | { readonly ok: false; readonly error: NtsResponseError; readonly kissCode?: string };

function sameTimestamp(buf: Uint8Array, offset: number, ts: NtpTimestamp): boolean {
  return readU32(buf, offset) === ts.seconds >>> 0 && readU32(buf, offset + 4) === ts.fraction >>> 0;
}

/** Renders a kiss code / refid as four ASCII characters (RFC 5905 §7.4). */
export function kissCodeString(referenceId: number): string {
  let s = '';
  for (let shift = 24; shift >= 0; shift -= 8) {
    const c = (referenceId >>> shift) & 0xff;
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : '?';
  }
  return s;
}

/**
 * Verifies a reply to a request built with `buildNtsRequest` (RFC 8915 §5.7): mode 4, origin timestamp,
 * Unique Identifier, NTS NAK detection, Authenticator with S2C over everything before it, and the
 * cookies in the decrypted plaintext. Never throws.
 */
export function verifyNtsResponse(packet: Uint8Array, expect: NtsResponseExpectation): NtsResponseCheck {
  const decoded = decodeHeader(packet);
  if (!decoded.ok) return { ok: false, error: 'malformed' };
  const { header } = decoded;
  if (header.mode !== NtpMode.server || header.version !== NTP_VERSION) return { ok: false, error: 'not_server_reply' };
  if (!sameTimestamp(packet, NtpHeaderOffset.originTime, expect.transmitTime)) return { ok: false, error: 'origin_mismatch' };

  const cursor = createExtensionFieldCursor();
  let uniqueIdOffset = -1;
  let uniqueIdLength = 0;
  let uniqueIdCount = 0;
  let authOffset = -1;
  let authValueOffset = 0;
  let authValueLength = 0;
  let unauthenticatedFields = 0;
  let at = NTP_HEADER_LENGTH;
  for (;;) {
    const kind = scanExtensionField(packet, at, cursor);
    if (kind === EfScan.end || kind === EfScan.legacyMac || kind === EfScan.cryptoNak) break;
    if (kind === EfScan.malformed) {
      // Anything after the Authenticator is unauthenticated and discarded (§5.7), so it cannot spoil the reply.
      if (authOffset >= 0) break;
      return { ok: false, error: 'malformed' };
    }
    if (authOffset >= 0) {
      unauthenticatedFields++;
    } else if (cursor.type === NtsExtensionFieldType.uniqueIdentifier) {
      uniqueIdCount++;
      uniqueIdOffset = cursor.valueOffset;
      uniqueIdLength = cursor.valueLength;
    } else if (cursor.type === NtsExtensionFieldType.ntsAuthenticatorAndEncrypted) {
      authOffset = cursor.offset;
      authValueOffset = cursor.valueOffset;
      authValueLength = cursor.valueLength;
    }
    at = cursor.next;
  }
  if (uniqueIdCount !== 1) return { ok: false, error: 'missing_unique_id' };
  // The EF value is the identifier plus zero padding to 4 octets (RFC 7822 §3).
  if (
    uniqueIdLength !== padTo4(expect.uniqueId.length) ||
    !constantTimeEqual(packet.subarray(uniqueIdOffset, uniqueIdOffset + expect.uniqueId.length), expect.uniqueId)
  ) {
    return { ok: false, error: 'unique_id_mismatch' };
  }
  if (header.stratum === KISS_OF_DEATH_STRATUM) {
    // §5.7: a NAK is stratum 0 with kiss code NTSN; it is only believed with our UID (checked above).
    if (header.referenceId === KISS_NTSN) return { ok: false, error: 'nts_nak', kissCode: 'NTSN' };
    if (authOffset < 0) return { ok: false, error: 'kiss_of_death', kissCode: kissCodeString(header.referenceId) };
  }
  if (authOffset < 0) return { ok: false, error: 'missing_authenticator' };

  // §5.6 body: nonce length, ciphertext length, padded nonce, padded ciphertext (and optional padding).
  if (authValueLength < 4) return { ok: false, error: 'malformed_authenticator' };
  const nonceLength = readU16(packet, authValueOffset);
  const ciphertextLength = readU16(packet, authValueOffset + 2);
  const nonceStart = authValueOffset + 4;
  const ciphertextStart = nonceStart + padTo4(nonceLength);
  if (ciphertextStart + padTo4(ciphertextLength) > authValueOffset + authValueLength) return { ok: false, error: 'malformed_authenticator' };
  const nonce = packet.subarray(nonceStart, nonceStart + nonceLength);
  const ciphertext = packet.subarray(ciphertextStart, ciphertextStart + ciphertextLength);
  const plaintext = new Uint8Array(ciphertextLength);
  const end = expect.s2cCipher.open(nonce, packet.subarray(0, authOffset), ciphertext, plaintext, 0);
  if (end < 0) return { ok: false, error: 'bad_tag' };

  const cookies: Uint8Array[] = [];
  let inner = 0;
  for (;;) {
    const kind = scanInnerExtensionField(plaintext, inner, cursor, end);
    if (kind === EfScan.end) break;
    if (kind !== EfScan.field) return { ok: false, error: 'malformed' };
    if (cursor.type === NtsExtensionFieldType.ntsCookie && cursor.valueLength > 0) {
      cookies.push(plaintext.slice(cursor.valueOffset, cursor.next));
    }
    inner = cursor.next;
  }
  if (cookies.length === 0) return { ok: false, error: 'missing_cookie' };
  return { ok: true, response: { header, cookies, unauthenticatedFields } };
}

/** Signed difference a − b of two NTP timestamps in seconds, assuming they are within 68 years (RFC 5905 §6). */
export function timestampDifferenceS(a: NtpTimestamp, b: NtpTimestamp): number {
  return ((a.seconds - b.seconds) | 0) + (a.fraction - b.fraction) / 0x1_0000_0000;
}

/**
 * Clock offset θ and round-trip delay δ (RFC 5905 §8): t1 client transmit, t2 server receive,
 * t3 server transmit, t4 client receive. θ = ((t2 − t1) + (t3 − t4)) / 2, δ = (t4 − t1) − (t3 − t2).
 */
export function offsetAndDelay(
  t1: NtpTimestamp,
  t2: NtpTimestamp,
  t3: NtpTimestamp,
  t4: NtpTimestamp,
): { readonly offsetS: number; readonly delayS: number } {
  return {
    offsetS: (timestampDifferenceS(t2, t1) + timestampDifferenceS(t3, t4)) / 2,
    delayS: timestampDifferenceS(t4, t1) - timestampDifferenceS(t3, t2),
  };
}

/** Options of one NTS exchange. */
export interface NtsExchangeOptions {
  /** NTP server host or address (from the KE result). */
  readonly server: string;
  /** NTP server UDP port (from the KE result). */
  readonly port: number;
  /** Negotiated AEAD id. */
  readonly aeadId: number;
  /** Client-to-server key. */
  readonly c2s: Uint8Array;
  /** Server-to-client key. */
  readonly s2c: Uint8Array;
  /** The cookie to spend. */
  readonly cookie: Uint8Array;
  /** Placeholders to send (0..7). */
  readonly placeholders: number;
  /** How long to wait for a valid reply. */
  readonly timeoutMs: number;
  /** Clock for t1/t4 (default: a fresh WallClock). */
  readonly clock?: WallClock;
  /** Local address to send from (default: the system's choice), e.g. 127.0.0.2 to be a second loopback client. */
  readonly localAddress?: string;
}

/** Outcome of one authenticated exchange. */
export interface NtsExchangeResult {
  /** Offset of the server clock relative to ours, seconds (RFC 5905 §8). */
  readonly offsetS: number;
  /** Round-trip delay, seconds (RFC 5905 §8). */
  readonly delayS: number;
  /** The authenticated reply header. */
  readonly header: NtpHeader;
  /** New cookies from the reply. */
  readonly cookies: Uint8Array[];
  /** Size of the request and the reply, octets. */
  readonly requestLength: number;
  /** Reply length, octets. */
  readonly responseLength: number;
  /** Address the reply came from. */
  readonly serverAddress: string;
}

/** Why an exchange failed. */
export type NtsExchangeFailure =
  | { readonly kind: 'timeout'; readonly message: string; readonly ignoredPackets: number }
  | { readonly kind: 'network'; readonly message: string }
  | { readonly kind: 'nts_nak'; readonly message: string }
  | { readonly kind: 'kiss_of_death'; readonly message: string; readonly kissCode: string }
  | { readonly kind: 'bad_tag'; readonly message: string }
  | { readonly kind: 'malformed'; readonly message: string; readonly error: NtsResponseError }
  | { readonly kind: 'unsupported_aead'; readonly message: string };

/** Outcome of ntsExchange. */
export type NtsExchangeOutcome =
  | { readonly ok: true; readonly result: NtsExchangeResult }
  | { readonly ok: false; readonly failure: NtsExchangeFailure };

const ERROR_TEXT: Record<NtsResponseError, string> = {
  malformed: 'reply does not parse (RFC 7822)',
  not_server_reply: 'reply is not an NTPv4 mode-4 packet',
  origin_mismatch: 'origin timestamp does not match the request (RFC 5905 §8)',
  missing_unique_id: 'reply does not carry exactly one Unique Identifier (RFC 8915 §5.3)',
  unique_id_mismatch: 'Unique Identifier does not match the request (RFC 8915 §5.3)',
  nts_nak: 'server sent an NTS NAK (kiss code NTSN): it could not use the cookie or authenticate the request (RFC 8915 §5.7)',
  kiss_of_death: 'server sent a Kiss-o\'-Death (RFC 5905 §7.4)',
  missing_authenticator: 'reply has no NTS Authenticator (RFC 8915 §5.7)',
  malformed_authenticator: 'NTS Authenticator does not parse (RFC 8915 §5.6)',
  bad_tag: 'NTS Authenticator does not verify with the S2C key (RFC 8915 §5.6)',
  missing_cookie: 'authenticated reply carries no new cookie (RFC 8915 §5.7)',
};

/** A one-sentence description of a reply error. */
export function describeNtsResponseError(error: NtsResponseError): string {
  return ERROR_TEXT[error];
}

/** Errors that mean "not the reply to this request" (keep waiting) rather than "the reply is bad". */
function isForeignPacket(error: NtsResponseError): boolean {
  return error === 'origin_mismatch' || error === 'unique_id_mismatch' || error === 'not_server_reply' || error === 'malformed' || error === 'missing_unique_id';
}

/**
 * Sends one NTS request over UDP and waits for the authenticated reply (RFC 8915 §5.7, RFC 5905 §8).
 * Packets that are not the reply to this request are ignored until the timeout. Never rejects.
 */
export async function ntsExchange(options: NtsExchangeOptions): Promise<NtsExchangeOutcome> {
  const aead = getAead(options.aeadId);
  if (aead === undefined) return { ok: false, failure: { kind: 'unsupported_aead', message: `AEAD ${options.aeadId} is not implemented` } };
  let address = options.server;
  if (isIP(address) === 0) {
    try {
      address = (await lookup(options.server)).address;
    } catch (err) {
      return { ok: false, failure: { kind: 'network', message: `cannot resolve NTP server ${options.server}: ${err instanceof Error ? err.message : String(err)}` } };
    }
  }
  const clock = options.clock ?? new WallClock();
  const c2sCipher = aead.newCipher(options.c2s);
  const s2cCipher = aead.newCipher(options.s2c);
  const uniqueId = new Uint8Array(UNIQUE_ID_MIN_LENGTH);
  randomFillSync(uniqueId);
  const random = new Uint8Array(8);
  randomFillSync(random);
  const transmitTime: NtpTimestamp = { seconds: readU32(random, 0), fraction: readU32(random, 4) };
  const request = new Uint8Array(ntsRequestLength(aead, uniqueId.length, options.cookie.length, options.placeholders));

  const socket: Socket = createSocket(isIP(address) === 6 ? 'udp6' : 'udp4');
  return new Promise<NtsExchangeOutcome>((resolve) => {
    let settled = false;
    let ignoredPackets = 0;
    let t1: NtpTimestamp = { seconds: 0, fraction: 0 };
    const finish = (outcome: NtsExchangeOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.close();
      resolve(outcome);
    };
    const timer = setTimeout(() => {
      finish({
        ok: false,
        failure: {
          kind: 'timeout',
          ignoredPackets,
          message: `no valid NTS reply from ${address}:${options.port} within ${options.timeoutMs} ms${ignoredPackets > 0 ? ` (${ignoredPackets} unrelated packets ignored)` : ''}`,
        },
      });
    }, options.timeoutMs);
    socket.on('error', (err) => {
      finish({ ok: false, failure: { kind: 'network', message: `UDP error talking to ${address}:${options.port}: ${err.message}` } });
    });
    socket.on('message', (msg, rinfo) => {
      const t4 = clock.nowNtp({ seconds: 0, fraction: 0 });
      const packet = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
      const checked = verifyNtsResponse(packet, { uniqueId, transmitTime, s2cCipher });
      if (!checked.ok) {
        if (isForeignPacket(checked.error)) {
          ignoredPackets++;
          return;
        }
        const message = describeNtsResponseError(checked.error);
        switch (checked.error) {
          case 'nts_nak':
            finish({ ok: false, failure: { kind: 'nts_nak', message } });
            return;
          case 'kiss_of_death':
            finish({ ok: false, failure: { kind: 'kiss_of_death', kissCode: checked.kissCode ?? '????', message: `${message}: ${checked.kissCode ?? '????'}` } });
            return;
          case 'bad_tag':
            finish({ ok: false, failure: { kind: 'bad_tag', message } });
            return;
          default:
            finish({ ok: false, failure: { kind: 'malformed', error: checked.error, message } });
            return;
        }
      }
      const { header, cookies } = checked.response;
      if (header.stratum === KISS_OF_DEATH_STRATUM) {
        const kissCode = kissCodeString(header.referenceId);
        finish({ ok: false, failure: { kind: 'kiss_of_death', kissCode, message: `server sent an authenticated Kiss-o'-Death: ${kissCode} (RFC 5905 §7.4)` } });
        return;
      }
      const { offsetS, delayS } = offsetAndDelay(t1, header.receiveTime, header.transmitTime, t4);
      finish({
        ok: true,
        result: { offsetS, delayS, header, cookies, requestLength: request.length, responseLength: packet.length, serverAddress: rinfo.address },
      });
    });
    const connect = (): void => socket.connect(options.port, address, () => {
      // The transmit field carries random octets, not our clock (as chrony does): the server only echoes
      // it as the origin timestamp, so t1 can be read after the sealing, just before the send.
      buildNtsRequest(
        { aead, c2sCipher, uniqueId, cookie: options.cookie, placeholders: options.placeholders, fillRandom: randomFillSync, transmitTime },
        request,
        0,
      );
      t1 = clock.nowNtp({ seconds: 0, fraction: 0 });
      socket.send(request, (err) => {
        if (err) finish({ ok: false, failure: { kind: 'network', message: `cannot send to ${address}:${options.port}: ${err.message}` } });
      });
    });
    if (options.localAddress === undefined) connect();
    else socket.bind({ address: options.localAddress, port: 0 }, connect);
  });
}
