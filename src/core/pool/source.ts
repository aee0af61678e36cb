/**
 * The source side of NTS for pools (draft-ietf-ntp-nts-keyexchange-pool, as ntpd-rs 1.9 and
 * nts-pool-ke speak it): a pool's KE front end, authenticated by a token the pool issued, asks which
 * protocols and AEADs this server supports (a support request), then asks for cookies sealed over keys
 * it supplies (a fixed key request), possibly many times over one kept-alive TLS connection.
 *
 * Pure: the shell says whether a connection may be kept (`KePoolConnection`), this module decides
 * whether this request earns it. The token compare is constant-time in the token's content.
 */
import { getAead } from '../crypto/aead.js';
import { AeadId, NextProtocolId } from '../nts/ids.js';
import type { KeRecord, SupportedAlgorithm } from '../nts/ke-record.js';

/** What the shell knows about the connection a request arrived on. */
export interface KePoolConnection {
  /** An earlier request on this connection was answered with Keep Alive: only pool requests are allowed now. */
  readonly kept: boolean;
  /** The shell would keep this connection open: below the long-lived cap and not past its maximum age. */
  readonly keepAliveAvailable: boolean;
}

/** A fresh connection that cannot be kept open: the default for callers that do not do keep-alive. */
export const FRESH_CONNECTION: KePoolConnection = { kept: false, keepAliveAvailable: false };

/** Idle time after which a kept connection is closed, in seconds (the bound: at most 300). */
export const POOL_KEEP_ALIVE_MAX_IDLE_S = 300;
/** Age after which a kept connection is closed, in seconds (at most one hour). */
export const POOL_KEEP_ALIVE_MAX_AGE_S = 3600;

/**
 * Default cap on long-lived (kept-alive) connections for a `concurrent-connections` cap: a tenth of it
 * (as ntpd-rs does), at least 1.
 */
export function defaultLonglivedConnections(concurrentConnections: number): number {
  return Math.max(1, Math.floor(concurrentConnections / 10));
}

/**
 * Equality of two octet strings whose running time depends on `expected`'s length only, never on where
 * the two differ (no early exit; the length difference is folded into the result).
 */
export function constantTimeEqual(given: Uint8Array, expected: Uint8Array): boolean {
  let diff = given.length ^ expected.length;
  for (let i = 0; i < expected.length; i++) diff |= (expected[i] ?? 0) ^ (given[i] ?? 0);
  return diff === 0;
}

/** UTF-8 octets of each accepted token, for `isAcceptedToken`. */
export function encodeTokens(tokens: readonly string[]): Uint8Array[] {
  const encoder = new TextEncoder();
  return tokens.map((t) => encoder.encode(t));
}

/**
 * True when `token` equals one of `accepted`. Every accepted token is compared in full, so the time
 * taken does not tell which one matched or how much of any prefix was right.
 */
export function isAcceptedToken(token: Uint8Array, accepted: readonly Uint8Array[]): boolean {
  let hit = 0;
  for (const candidate of accepted) hit |= constantTimeEqual(token, candidate) ? 1 : 0;
  return hit === 1;
}

/**
 * The Supported Algorithm List this server answers with: its accepted AEADs that are implemented, in
 * its configured order, with AEAD_AES_SIV_CMAC_256 (15, mandatory, RFC 8915 §5.1) first if missing.
 */
export function supportedAlgorithms(serverAeadIds: readonly number[]): SupportedAlgorithm[] {
  const ids = serverAeadIds.includes(AeadId.AES_SIV_CMAC_256) ? serverAeadIds : [AeadId.AES_SIV_CMAC_256, ...serverAeadIds];
  const out: SupportedAlgorithm[] = [];
  for (const aeadId of ids) {
    const keyLength = getAead(aeadId)?.keyLength;
    if (keyLength !== undefined && !out.some((a) => a.aeadId === aeadId)) out.push({ aeadId, keyLength });
  }
  return out;
}

/**
 * Records of the answer to a support request: only the lists asked for (Supported Algorithm List, then
 * Supported Next Protocol List, both critical), Keep Alive when granted, End of Message.
 */
export function supportResponseRecords(
  ask: { readonly algorithms: boolean; readonly protocols: boolean },
  serverAeadIds: readonly number[],
  keepAlive: boolean,
): KeRecord[] {
  const records: KeRecord[] = [];
  if (ask.algorithms) records.push({ kind: 'supportedAlgorithmList', critical: true, algorithms: supportedAlgorithms(serverAeadIds) });
  if (ask.protocols) records.push({ kind: 'supportedNextProtocolList', critical: true, protocolIds: [NextProtocolId.ntpv4] });
  if (keepAlive) records.push({ kind: 'keepAlive', critical: false });
  records.push({ kind: 'endOfMessage', critical: true });
  return records;
}
