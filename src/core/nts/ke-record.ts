/**
 * NTS-KE record codec (RFC 8915 §4, §4.1).
 *
 * Wire form of one record (§4): a 4-octet header, then the body.
 *   octet 0, top bit : C, the critical bit
 *   remaining 15 bits: record type (big-endian)
 *   octets 2–3       : body length in octets (big-endian), counting the body only
 * A message is a run of records that ends with End of Message (§4.1.1).
 *
 * Decoders never throw on peer input and return subarray views of the input, never copies.
 * Encoders throw RangeError only for caller bugs (out-of-range numbers, a buffer that is too small).
 */
import { readU16, writeU16 } from '../bytes.js';
import { KeRecordType } from './ids.js';

/** Size of a record header in octets (RFC 8915 §4). */
export const KE_RECORD_HEADER_LENGTH = 4;
/** Largest body a record can carry: the length field is a u16 (RFC 8915 §4). */
export const KE_MAX_RECORD_BODY_LENGTH = 0xffff;
/** Largest record type: 15 bits (RFC 8915 §4). */
export const KE_MAX_RECORD_TYPE = 0x7fff;
/** The critical bit within the first header u16 (RFC 8915 §4). */
export const KE_CRITICAL_BIT = 0x8000;

/**
 * One decoded NTS-KE record. `kind` is the tag; every record carries its critical bit as received.
 * Registries stay open: unknown record types come back as `unknown` with their raw number,
 * and unknown protocol, AEAD, error and warning ids are kept as plain numbers.
 */
export type KeRecord =
  /** §4.1.1 End of Message (empty body). */
  | { readonly kind: 'endOfMessage'; readonly critical: boolean }
  /** §4.1.2 NTS Next Protocol Negotiation: a list of u16 protocol ids (may be empty in a response). */
  | { readonly kind: 'nextProtocol'; readonly critical: boolean; readonly protocolIds: readonly number[] }
  /** §4.1.3 Error: one u16 error code. */
  | { readonly kind: 'error'; readonly critical: boolean; readonly code: number }
  /** §4.1.4 Warning: one u16 warning code. */
  | { readonly kind: 'warning'; readonly critical: boolean; readonly code: number }
  /** §4.1.5 AEAD Algorithm Negotiation: a list of u16 AEAD ids (may be empty in a response). */
  | { readonly kind: 'aeadAlgorithm'; readonly critical: boolean; readonly aeadIds: readonly number[] }
  /** §4.1.6 New Cookie for NTPv4: an opaque cookie (a view into the input when decoded). */
  | { readonly kind: 'newCookie'; readonly critical: boolean; readonly cookie: Uint8Array }
  /** §4.1.7 NTPv4 Server Negotiation: the body as a string, one char per octet (lossless; ASCII is checked by validation). */
  | { readonly kind: 'ntpv4Server'; readonly critical: boolean; readonly server: string }
  /** §4.1.8 NTPv4 Port Negotiation: one u16 UDP port. */
  | { readonly kind: 'ntpv4Port'; readonly critical: boolean; readonly port: number }
  /** Record 1024, chrony's "Compliant AES-128-GCM-SIV Exporter Context" flag (empty body); see exporter.ts. */
  | { readonly kind: 'chronyCompliantExporter'; readonly critical: boolean }
  /** Record 8, NTS pools: Keep Alive (empty body): keep the TLS connection open for another request. */
  | { readonly kind: 'keepAlive'; readonly critical: boolean }
  /** Record 9, NTS pools: Supported Next Protocol List; empty in a request (the query), u16 ids in a response. */
  | { readonly kind: 'supportedNextProtocolList'; readonly critical: boolean; readonly protocolIds: readonly number[] }
  /** Record 10, NTS pools: Supported Algorithm List; empty in a request (the query), pairs in a response. */
  | { readonly kind: 'supportedAlgorithmList'; readonly critical: boolean; readonly algorithms: readonly SupportedAlgorithm[] }
  /** Record 12, NTS pools: Fixed Key Request; `keys` is C2S ‖ S2C (a view into the input when decoded; secret). */
  | { readonly kind: 'fixedKeyRequest'; readonly critical: boolean; readonly keys: Uint8Array }
  /** Record 13, NTS pools: NTP Server Deny; the body as a string, one char per octet (like ntpv4Server). */
  | { readonly kind: 'ntpServerDeny'; readonly critical: boolean; readonly server: string }
  /** Record 14, NTS pools: Authentication token; the raw body octets (UTF-8 text; secret). */
  | { readonly kind: 'authenticationToken'; readonly critical: boolean; readonly token: Uint8Array }
  /** Any other record type, kept raw (RFC 8915 §4: unknown non-critical records are skipped by receivers). */
  | { readonly kind: 'unknown'; readonly critical: boolean; readonly type: number; readonly body: Uint8Array };

/** One entry of a Supported Algorithm List (record 10): an AEAD id and its key length in octets. */
export interface SupportedAlgorithm {
  readonly aeadId: number;
  readonly keyLength: number;
}

/** The tag of a KeRecord. */
export type KeRecordKind = KeRecord['kind'];

/** Why a record or message did not decode. */
export type KeDecodeError =
  /** Fewer than 4 octets left where a record header should start. */
  | 'truncated_header'
  /** The header announces more body octets than are present. */
  | 'truncated_body'
  /** A known record type whose body length is impossible for it (non-empty End of Message, odd id list, …). */
  | 'bad_body_length'
  /** The input ended without an End of Message record (§4.1.1). */
  | 'missing_end_of_message'
  /** Octets follow the End of Message record (§4.1.1: it is the last record). */
  | 'data_after_end_of_message';

/** Result of decoding one record. */
export type KeRecordDecodeResult =
  | { readonly ok: true; readonly record: KeRecord; readonly next: number }
  | { readonly ok: false; readonly error: KeDecodeError; readonly offset: number; readonly type?: number };

/** Result of decoding a whole message. `length` counts octets up to and including End of Message. */
export type KeMessageDecodeResult =
  | { readonly ok: true; readonly records: readonly KeRecord[]; readonly length: number }
  | { readonly ok: false; readonly error: KeDecodeError; readonly offset: number; readonly type?: number };

/** Streaming framing result for a server socket: see scanKeMessage. */
export type KeScanResult =
  /** No End of Message yet; resume scanning at `resumeOffset` (the first record not fully received). */
  | { readonly status: 'incomplete'; readonly resumeOffset: number }
  /** A message ends at `length` (octets up to and including the End of Message record). */
  | { readonly status: 'complete'; readonly length: number }
  /** The message cannot end within `maxLength` octets; answer Bad Request (RFC 8915 §4.1.3) and close. */
  | { readonly status: 'malformed' };

function decodeIdList(body: Uint8Array): number[] | undefined {
  if ((body.length & 1) !== 0) return undefined;
  const ids: number[] = new Array<number>(body.length >>> 1);
  for (let i = 0; i < ids.length; i++) ids[i] = readU16(body, i * 2);
  return ids;
}

function latin1(body: Uint8Array): string {
  let s = '';
  for (let i = 0; i < body.length; i++) s += String.fromCharCode(body[i] ?? 0);
  return s;
}

/**
 * Decodes one record starting at `offset`. Never throws; bodies are subarray views of `buf`.
 * Known types with an impossible body length give `bad_body_length` (with the type).
 */
export function decodeKeRecord(buf: Uint8Array, offset: number): KeRecordDecodeResult {
  if (offset < 0 || buf.length - offset < KE_RECORD_HEADER_LENGTH) {
    return { ok: false, error: 'truncated_header', offset };
  }
  const word = readU16(buf, offset);
  const critical = (word & KE_CRITICAL_BIT) !== 0;
  const type = word & KE_MAX_RECORD_TYPE;
  const bodyLength = readU16(buf, offset + 2);
  const bodyStart = offset + KE_RECORD_HEADER_LENGTH;
  const next = bodyStart + bodyLength;
  if (next > buf.length) return { ok: false, error: 'truncated_body', offset, type };
  const body = buf.subarray(bodyStart, next);
  const bad: KeRecordDecodeResult = { ok: false, error: 'bad_body_length', offset, type };
  let record: KeRecord;
  switch (type) {
    case KeRecordType.endOfMessage:
      if (bodyLength !== 0) return bad;
      record = { kind: 'endOfMessage', critical };
      break;
    case KeRecordType.nextProtocol: {
      const protocolIds = decodeIdList(body);
      if (protocolIds === undefined) return bad;
      record = { kind: 'nextProtocol', critical, protocolIds };
      break;
    }
    case KeRecordType.error:
      if (bodyLength !== 2) return bad;
      record = { kind: 'error', critical, code: readU16(body, 0) };
      break;
    case KeRecordType.warning:
      if (bodyLength !== 2) return bad;
      record = { kind: 'warning', critical, code: readU16(body, 0) };
      break;
    case KeRecordType.aeadAlgorithm: {
      const aeadIds = decodeIdList(body);
      if (aeadIds === undefined) return bad;
      record = { kind: 'aeadAlgorithm', critical, aeadIds };
      break;
    }
    case KeRecordType.newCookie:
      record = { kind: 'newCookie', critical, cookie: body };
      break;
    case KeRecordType.ntpv4Server:
      record = { kind: 'ntpv4Server', critical, server: latin1(body) };
      break;
    case KeRecordType.ntpv4Port:
      if (bodyLength !== 2) return bad;
      record = { kind: 'ntpv4Port', critical, port: readU16(body, 0) };
      break;
    case KeRecordType.chronyCompliantGcmSivExporter:
      if (bodyLength !== 0) return bad;
      record = { kind: 'chronyCompliantExporter', critical };
      break;
    case KeRecordType.keepAlive:
      if (bodyLength !== 0) return bad;
      record = { kind: 'keepAlive', critical };
      break;
    case KeRecordType.supportedNextProtocolList: {
      const protocolIds = decodeIdList(body);
      if (protocolIds === undefined) return bad;
      record = { kind: 'supportedNextProtocolList', critical, protocolIds };
      break;
    }
    case KeRecordType.supportedAlgorithmList: {
      if ((bodyLength & 3) !== 0) return bad;
      const algorithms: SupportedAlgorithm[] = new Array<SupportedAlgorithm>(bodyLength >>> 2);
      for (let i = 0; i < algorithms.length; i++) algorithms[i] = { aeadId: readU16(body, i * 4), keyLength: readU16(body, i * 4 + 2) };
      record = { kind: 'supportedAlgorithmList', critical, algorithms };
      break;
    }
    case KeRecordType.fixedKeyRequest:
      // Two keys of one length: the body is even and not empty.
      if (bodyLength === 0 || (bodyLength & 1) !== 0) return bad;
      record = { kind: 'fixedKeyRequest', critical, keys: body };
      break;
    case KeRecordType.ntpServerDeny:
      record = { kind: 'ntpServerDeny', critical, server: latin1(body) };
      break;
    case KeRecordType.authenticationToken:
      record = { kind: 'authenticationToken', critical, token: body };
      break;
    default:
      record = { kind: 'unknown', critical, type, body };
  }
  return { ok: true, record, next };
}

/**
 * Decodes a whole message: records up to and including End of Message, which must be the last
 * octets of `buf` (RFC 8915 §4.1.1). Never throws. Any record with type 0 ends the message for
 * framing purposes, whatever its critical bit; policy about that bit belongs to validation.
 */
export function decodeKeMessage(buf: Uint8Array): KeMessageDecodeResult {
  const records: KeRecord[] = [];
  let offset = 0;
  while (offset < buf.length) {
    const r = decodeKeRecord(buf, offset);
    if (!r.ok) return r;
    records.push(r.record);
    offset = r.next;
    if (r.record.kind === 'endOfMessage') {
      if (offset !== buf.length) return { ok: false, error: 'data_after_end_of_message', offset };
      return { ok: true, records, length: offset };
    }
  }
  return { ok: false, error: 'missing_end_of_message', offset };
}

/**
 * Framing for a byte stream (the KE server socket). Walks record headers from `fromOffset`
 * (use the previous `resumeOffset` so each octet's header is read once) without decoding bodies.
 * Finds the first record of type 0 (End of Message, whatever its critical bit and body length) and reports
 * the message length through it; octets after it are not examined. `maxLength` (default: no
 * limit beyond the u16 lengths) is the request size cap: a message that cannot end within it is
 * `malformed`, reported as soon as a header proves it, without waiting for the body.
 * Never throws.
 */
export function scanKeMessage(
  buf: Uint8Array,
  options: { readonly fromOffset?: number; readonly maxLength?: number } = {},
): KeScanResult {
  const maxLength = options.maxLength ?? Number.POSITIVE_INFINITY;
  let offset = options.fromOffset ?? 0;
  if (!(offset >= 0)) offset = 0;
  for (;;) {
    // Even an End of Message header must fit within the cap.
    if (offset + KE_RECORD_HEADER_LENGTH > maxLength) return { status: 'malformed' };
    if (buf.length - offset < KE_RECORD_HEADER_LENGTH) return { status: 'incomplete', resumeOffset: offset };
    const type = readU16(buf, offset) & KE_MAX_RECORD_TYPE;
    const next = offset + KE_RECORD_HEADER_LENGTH + readU16(buf, offset + 2);
    if (next > maxLength) return { status: 'malformed' };
    if (type === KeRecordType.endOfMessage) {
      if (next > buf.length) return { status: 'incomplete', resumeOffset: offset };
      return { status: 'complete', length: next };
    }
    // A non-final record must leave room for at least an End of Message header after it.
    if (next + KE_RECORD_HEADER_LENGTH > maxLength) return { status: 'malformed' };
    if (next > buf.length) return { status: 'incomplete', resumeOffset: offset };
    offset = next;
  }
}

function checkU16(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) throw new RangeError(`${what} out of u16 range: ${value}`);
  return value;
}

/** Body length in octets of `record` when encoded. Throws RangeError for a non-Latin-1 server string (a caller bug). */
export function keRecordBodyLength(record: KeRecord): number {
  switch (record.kind) {
    case 'endOfMessage':
    case 'chronyCompliantExporter':
    case 'keepAlive':
      return 0;
    case 'nextProtocol':
    case 'supportedNextProtocolList':
      return record.protocolIds.length * 2;
    case 'supportedAlgorithmList':
      return record.algorithms.length * 4;
    case 'fixedKeyRequest':
      return record.keys.length;
    case 'ntpServerDeny':
      return record.server.length;
    case 'authenticationToken':
      return record.token.length;
    case 'aeadAlgorithm':
      return record.aeadIds.length * 2;
    case 'error':
    case 'warning':
    case 'ntpv4Port':
      return 2;
    case 'newCookie':
      return record.cookie.length;
    case 'ntpv4Server':
      return record.server.length;
    case 'unknown':
      return record.body.length;
  }
}

/** Encoded length in octets of `record`, header included. */
export function keRecordLength(record: KeRecord): number {
  return KE_RECORD_HEADER_LENGTH + keRecordBodyLength(record);
}

function recordType(record: KeRecord): number {
  switch (record.kind) {
    case 'endOfMessage':
      return KeRecordType.endOfMessage;
    case 'nextProtocol':
      return KeRecordType.nextProtocol;
    case 'error':
      return KeRecordType.error;
    case 'warning':
      return KeRecordType.warning;
    case 'aeadAlgorithm':
      return KeRecordType.aeadAlgorithm;
    case 'newCookie':
      return KeRecordType.newCookie;
    case 'ntpv4Server':
      return KeRecordType.ntpv4Server;
    case 'ntpv4Port':
      return KeRecordType.ntpv4Port;
    case 'chronyCompliantExporter':
      return KeRecordType.chronyCompliantGcmSivExporter;
    case 'keepAlive':
      return KeRecordType.keepAlive;
    case 'supportedNextProtocolList':
      return KeRecordType.supportedNextProtocolList;
    case 'supportedAlgorithmList':
      return KeRecordType.supportedAlgorithmList;
    case 'fixedKeyRequest':
      return KeRecordType.fixedKeyRequest;
    case 'ntpServerDeny':
      return KeRecordType.ntpServerDeny;
    case 'authenticationToken':
      return KeRecordType.authenticationToken;
    case 'unknown':
      if (!Number.isInteger(record.type) || record.type < 0 || record.type > KE_MAX_RECORD_TYPE) {
        throw new RangeError(`record type out of 15-bit range: ${record.type}`);
      }
      return record.type;
  }
}

/**
 * Writes a record header (RFC 8915 §4) at out[offset..]; returns the offset of the body.
 * Throws RangeError when the type, length or buffer space is wrong (caller bugs).
 */
export function writeKeRecordHeader(out: Uint8Array, offset: number, critical: boolean, type: number, bodyLength: number): number {
  if (!Number.isInteger(type) || type < 0 || type > KE_MAX_RECORD_TYPE) throw new RangeError(`record type out of range: ${type}`);
  checkU16(bodyLength, 'record body length');
  if (offset < 0 || offset + KE_RECORD_HEADER_LENGTH + bodyLength > out.length) {
    throw new RangeError('output buffer too small for KE record');
  }
  writeU16(out, offset, (critical ? KE_CRITICAL_BIT : 0) | type);
  return writeU16(out, offset + 2, bodyLength);
}

/**
 * Encodes `record` into out[offset..]; returns the offset after it.
 * Throws RangeError for caller bugs: ids or port outside u16, a type outside 15 bits,
 * a body over 65535 octets, a non-Latin-1 server string, or too little room in `out`.
 */
export function encodeKeRecord(record: KeRecord, out: Uint8Array, offset: number): number {
  const type = recordType(record);
  const bodyLength = keRecordBodyLength(record);
  let p = writeKeRecordHeader(out, offset, record.critical, type, bodyLength);
  switch (record.kind) {
    case 'endOfMessage':
    case 'chronyCompliantExporter':
    case 'keepAlive':
      break;
    case 'nextProtocol':
    case 'supportedNextProtocolList':
      for (const id of record.protocolIds) p = writeU16(out, p, checkU16(id, 'protocol id'));
      break;
    case 'supportedAlgorithmList':
      for (const a of record.algorithms) {
        p = writeU16(out, p, checkU16(a.aeadId, 'AEAD id'));
        p = writeU16(out, p, checkU16(a.keyLength, 'key length'));
      }
      break;
    case 'fixedKeyRequest':
      out.set(record.keys, p);
      p += record.keys.length;
      break;
    case 'authenticationToken':
      out.set(record.token, p);
      p += record.token.length;
      break;
    case 'aeadAlgorithm':
      for (const id of record.aeadIds) p = writeU16(out, p, checkU16(id, 'AEAD id'));
      break;
    case 'error':
    case 'warning':
      p = writeU16(out, p, checkU16(record.code, 'code'));
      break;
    case 'ntpv4Port':
      p = writeU16(out, p, checkU16(record.port, 'port'));
      break;
    case 'newCookie':
      out.set(record.cookie, p);
      p += record.cookie.length;
      break;
    case 'ntpv4Server':
    case 'ntpServerDeny':
      for (let i = 0; i < record.server.length; i++) {
        const c = record.server.charCodeAt(i);
        if (c > 0xff) throw new RangeError('server name is not Latin-1/ASCII');
        out[p++] = c;
      }
      break;
    case 'unknown':
      out.set(record.body, p);
      p += record.body.length;
      break;
  }
  return p;
}

/** Encodes a whole message (the caller includes End of Message) into one new Uint8Array. */
export function encodeKeMessage(records: readonly KeRecord[]): Uint8Array {
  let total = 0;
  for (const r of records) total += keRecordLength(r);
  const out = new Uint8Array(total);
  let p = 0;
  for (const r of records) p = encodeKeRecord(r, out, p);
  return out;
}
