/**
 * The front-end side of NTS for pools (draft-ietf-ntp-nts-keyexchange-pool, as nts-pool-ke does it):
 * the pure decisions of a pool's KE front end, with no sockets.
 *
 * Per client: pick a source the client did not deny (weighted, healthy ones only), query its
 * capabilities (protocols and AEADs with key lengths) or reuse a cached answer, pick the protocol and
 * AEAD in the client's order, export the client's keys at the source's key length (the shell does that),
 * send a fixed key request, and relay the cookies with a Server record (the source's, or the source's
 * registered name when it sent none). The front end's own errors are 0xF000–0xF003 (ids.ts).
 */
import { AeadId, NextProtocolId } from '../nts/ids.js';
import type { KeRequest } from '../nts/ke-message.js';
import { decodeKeMessage, encodeKeMessage, type KeRecord, type SupportedAlgorithm } from '../nts/ke-record.js';

/** What a source answered to the capability query. */
export interface SourceCapabilities {
  /** Supported Next Protocol List (record 9). */
  readonly protocolIds: readonly number[];
  /** Supported Algorithm List (record 10): AEAD ids with their key lengths. */
  readonly algorithms: readonly SupportedAlgorithm[];
}

/** Why a source's answer was not usable. */
export type SourceAnswerProblem =
  /** Not one well-formed KE message. */
  | 'malformed'
  /** The source answered with an Error record (its code is kept). */
  | 'error_record'
  /** A list we asked for is missing, or an answer lacks a record it must have. */
  | 'incomplete'
  /** A record that does not belong in this answer (a critical unknown one, a second list, …). */
  | 'unexpected_record'
  /** The negotiated protocol or AEAD is not the one we asked for. */
  | 'wrong_choice'
  /** No cookies. */
  | 'no_cookies';

/** A parsed capability answer, or the problem. */
export type CapabilityAnswer =
  | { readonly ok: true; readonly capabilities: SourceCapabilities; readonly keepAlive: boolean }
  | { readonly ok: false; readonly problem: SourceAnswerProblem; readonly errorCode?: number };

/** A parsed fixed-key answer, or the problem. */
export type FixedKeyAnswer =
  | {
      readonly ok: true;
      /** Cookie bodies, in order (views into the answer). */
      readonly cookies: readonly Uint8Array[];
      /** The source's Server record, when it sent one. */
      readonly server: string | undefined;
      /** The source's Port record, when it sent one. */
      readonly port: number | undefined;
      readonly keepAlive: boolean;
    }
  | { readonly ok: false; readonly problem: SourceAnswerProblem; readonly errorCode?: number };

/** The protocol and AEAD for one client at one source. */
export type PoolNegotiation =
  | { readonly ok: true; readonly aeadId: number; readonly keyLength: number }
  /** The client offered no protocol the source (and we) support: answer an empty Next Protocol record. */
  | { readonly ok: false; readonly reason: 'no_common_protocol' }
  /** No AEAD in common: answer Next Protocol [0] and an empty AEAD record. */
  | { readonly ok: false; readonly reason: 'no_common_aead' };

/** One source as the chooser sees it. */
export interface SourceCandidate {
  /** Registered name (compared with NTP Server Deny, case-insensitively). */
  readonly name: string;
  readonly weight: number;
  /** False while health checks fail. */
  readonly healthy: boolean;
}

/** Longest Server record body we relay (RFC 8915 §4.1.7 names are at most 255 octets). */
const MAX_SERVER_NAME_LENGTH = 255;

function isPrintableAscii(s: string): boolean {
  if (s.length === 0 || s.length > MAX_SERVER_NAME_LENGTH) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/** Lower-cases ASCII letters and drops one trailing dot, for comparing DNS names. */
function normalizeName(name: string): string {
  const trimmed = name.endsWith('.') ? name.slice(0, -1) : name;
  return trimmed.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/**
 * Picks a source for a client: healthy, not named by any of the client's NTP Server Deny records, by
 * weight; `random` is a number in [0, 1). `exclude` lists indexes already tried for this client.
 * Returns the index into `sources`, or undefined when none is left (Error 0xF000).
 */
export function chooseSource(
  sources: readonly SourceCandidate[],
  denied: readonly string[],
  random: number,
  exclude: readonly number[] = [],
): number | undefined {
  const deniedSet = new Set(denied.map(normalizeName));
  let total = 0;
  const usable: number[] = [];
  sources.forEach((s, i) => {
    if (s.healthy && s.weight > 0 && !exclude.includes(i) && !deniedSet.has(normalizeName(s.name))) {
      usable.push(i);
      total += s.weight;
    }
  });
  if (usable.length === 0) return undefined;
  let point = Math.min(Math.max(random, 0), 0.999999999) * total;
  for (const i of usable) {
    point -= sources[i]?.weight ?? 0;
    if (point < 0) return i;
  }
  return usable[usable.length - 1];
}

/**
 * Protocol and AEAD for `client` at a source with `capabilities`, in the client's order of preference.
 * Only NTPv4 (0) has a key export we know (RFC 8915 §5.1), so it must be offered by both.
 */
export function negotiateAtSource(client: KeRequest, capabilities: SourceCapabilities): PoolNegotiation {
  if (!client.nextProtocolIds.includes(NextProtocolId.ntpv4) || !capabilities.protocolIds.includes(NextProtocolId.ntpv4)) {
    return { ok: false, reason: 'no_common_protocol' };
  }
  for (const aeadId of client.aeadIds ?? []) {
    const hit = capabilities.algorithms.find((a) => a.aeadId === aeadId);
    if (hit !== undefined && hit.keyLength > 0) return { ok: true, aeadId, keyLength: hit.keyLength };
  }
  return { ok: false, reason: 'no_common_aead' };
}

function tokenRecord(token: Uint8Array): KeRecord {
  return { kind: 'authenticationToken', critical: false, token };
}

/** The capability query: token, empty 10, empty 9, Keep Alive when wanted, End of Message. */
export function buildCapabilityQuery(token: Uint8Array, keepAlive: boolean): Uint8Array {
  const records: KeRecord[] = [
    tokenRecord(token),
    { kind: 'supportedAlgorithmList', critical: true, algorithms: [] },
    { kind: 'supportedNextProtocolList', critical: true, protocolIds: [] },
  ];
  if (keepAlive) records.push({ kind: 'keepAlive', critical: false });
  records.push({ kind: 'endOfMessage', critical: true });
  return encodeKeMessage(records);
}

/**
 * The fixed key request: token, 12 (C2S ‖ S2C), Next Protocol [0], AEAD [aeadId], Keep Alive when
 * wanted, End of Message. The result holds the keys: wipe it once written.
 */
export function buildFixedKeyRequest(token: Uint8Array, c2s: Uint8Array, s2c: Uint8Array, aeadId: number, keepAlive: boolean): Uint8Array {
  const keys = new Uint8Array(c2s.length + s2c.length);
  keys.set(c2s, 0);
  keys.set(s2c, c2s.length);
  const records: KeRecord[] = [
    tokenRecord(token),
    { kind: 'fixedKeyRequest', critical: true, keys },
    { kind: 'nextProtocol', critical: true, protocolIds: [NextProtocolId.ntpv4] },
    { kind: 'aeadAlgorithm', critical: true, aeadIds: [aeadId] },
  ];
  if (keepAlive) records.push({ kind: 'keepAlive', critical: false });
  records.push({ kind: 'endOfMessage', critical: true });
  const out = encodeKeMessage(records);
  keys.fill(0);
  return out;
}

/** True when a decoded answer carries Keep Alive (the source keeps the connection open). */
export function grantsKeepAlive(records: readonly KeRecord[]): boolean {
  return records.some((r) => r.kind === 'keepAlive');
}

function errorOf(records: readonly KeRecord[]): number | undefined {
  for (const r of records) if (r.kind === 'error') return r.code;
  return undefined;
}

/** Parses a source's answer to the capability query (both lists were asked for). */
export function parseCapabilityAnswer(bytes: Uint8Array): CapabilityAnswer {
  const decoded = decodeKeMessage(bytes);
  if (!decoded.ok) return { ok: false, problem: 'malformed' };
  const errorCode = errorOf(decoded.records);
  if (errorCode !== undefined) return { ok: false, problem: 'error_record', errorCode };
  let protocolIds: readonly number[] | undefined;
  let algorithms: readonly SupportedAlgorithm[] | undefined;
  for (const r of decoded.records) {
    switch (r.kind) {
      case 'supportedNextProtocolList':
        if (protocolIds !== undefined) return { ok: false, problem: 'unexpected_record' };
        protocolIds = r.protocolIds;
        break;
      case 'supportedAlgorithmList':
        if (algorithms !== undefined) return { ok: false, problem: 'unexpected_record' };
        algorithms = r.algorithms;
        break;
      case 'unknown':
        if (r.critical) return { ok: false, problem: 'unexpected_record' };
        break;
      default:
        break;
    }
  }
  if (protocolIds === undefined || algorithms === undefined) return { ok: false, problem: 'incomplete' };
  return { ok: true, capabilities: { protocolIds, algorithms }, keepAlive: grantsKeepAlive(decoded.records) };
}

/** Parses a source's answer to a fixed key request for `aeadId`. */
export function parseFixedKeyAnswer(bytes: Uint8Array, aeadId: number): FixedKeyAnswer {
  const decoded = decodeKeMessage(bytes);
  if (!decoded.ok) return { ok: false, problem: 'malformed' };
  const errorCode = errorOf(decoded.records);
  if (errorCode !== undefined) return { ok: false, problem: 'error_record', errorCode };
  let protocolIds: readonly number[] | undefined;
  let aeadIds: readonly number[] | undefined;
  let server: string | undefined;
  let port: number | undefined;
  const cookies: Uint8Array[] = [];
  for (const r of decoded.records) {
    switch (r.kind) {
      case 'nextProtocol':
        if (protocolIds !== undefined) return { ok: false, problem: 'unexpected_record' };
        protocolIds = r.protocolIds;
        break;
      case 'aeadAlgorithm':
        if (aeadIds !== undefined) return { ok: false, problem: 'unexpected_record' };
        aeadIds = r.aeadIds;
        break;
      case 'newCookie':
        if (r.cookie.length > 0) cookies.push(r.cookie);
        break;
      case 'ntpv4Server':
        if (server !== undefined || !isPrintableAscii(r.server)) return { ok: false, problem: 'unexpected_record' };
        server = r.server;
        break;
      case 'ntpv4Port':
        if (port !== undefined || r.port === 0) return { ok: false, problem: 'unexpected_record' };
        port = r.port;
        break;
      case 'warning':
        // RFC 8915 §4.1.4: no warning codes are defined; an unknown one is treated as an error.
        return { ok: false, problem: 'unexpected_record' };
      case 'unknown':
        if (r.critical) return { ok: false, problem: 'unexpected_record' };
        break;
      default:
        break;
    }
  }
  if (protocolIds === undefined || aeadIds === undefined) return { ok: false, problem: 'incomplete' };
  if (protocolIds.length !== 1 || protocolIds[0] !== NextProtocolId.ntpv4 || aeadIds.length !== 1 || aeadIds[0] !== aeadId) {
    return { ok: false, problem: 'wrong_choice' };
  }
  if (cookies.length === 0) return { ok: false, problem: 'no_cookies' };
  return { ok: true, cookies, server, port, keepAlive: grantsKeepAlive(decoded.records) };
}

/**
 * The answer to the client: Next Protocol [0], AEAD [aeadId], record 1024 when the chrony rule applies
 * (exporter.ts: the client sent it and AEAD 30 was chosen), Port when the source sent one, Server (the
 * source's, else `sourceName`), the cookies, End of Message. Keep Alive is never passed on.
 */
export function buildClientAnswer(
  answer: { readonly cookies: readonly Uint8Array[]; readonly server: string | undefined; readonly port: number | undefined },
  aeadId: number,
  echoCompliant: boolean,
  sourceName: string,
): Uint8Array {
  const records: KeRecord[] = [
    { kind: 'nextProtocol', critical: true, protocolIds: [NextProtocolId.ntpv4] },
    { kind: 'aeadAlgorithm', critical: true, aeadIds: [aeadId] },
  ];
  if (echoCompliant && aeadId === AeadId.AES_128_GCM_SIV) records.push({ kind: 'chronyCompliantExporter', critical: false });
  if (answer.port !== undefined) records.push({ kind: 'ntpv4Port', critical: true, port: answer.port });
  records.push({ kind: 'ntpv4Server', critical: true, server: answer.server ?? sourceName });
  for (const cookie of answer.cookies) records.push({ kind: 'newCookie', critical: false, cookie });
  records.push({ kind: 'endOfMessage', critical: true });
  return encodeKeMessage(records);
}

/** The answer when negotiation failed at the source: an empty Next Protocol, or Next Protocol [0] and an empty AEAD. */
export function buildNoCommonAnswer(reason: 'no_common_protocol' | 'no_common_aead'): Uint8Array {
  if (reason === 'no_common_protocol') {
    return encodeKeMessage([
      { kind: 'nextProtocol', critical: true, protocolIds: [] },
      { kind: 'endOfMessage', critical: true },
    ]);
  }
  return encodeKeMessage([
    { kind: 'nextProtocol', critical: true, protocolIds: [NextProtocolId.ntpv4] },
    { kind: 'aeadAlgorithm', critical: true, aeadIds: [] },
    { kind: 'endOfMessage', critical: true },
  ]);
}
