/**
 * NTS-KE server logic (RFC 8915 §4): one request in, one response and one outcome out.
 * Pure: the TLS exporter, the keyset and the random source are injected.
 *
 * Response shapes (records in this order, each message ends with End of Message):
 *  - success: Next Protocol [0] (critical), AEAD [chosen] (critical), record 1024 when chrony's
 *    compliant-exporter flag applies (non-critical), Port (critical, when the NTP port is not 123),
 *    Server (critical, when configured), `cookieCount` New Cookie records (non-critical; §4.1.6
 *    SHOULD send 8). Same order as chrony's server.
 *  - no_common_protocol: an empty Next Protocol record (§4.1.2).
 *  - no_common_aead: Next Protocol [0] and an empty AEAD record (§4.1.5).
 *  - bad_request / unrecognized_critical / internal_error: a single Error record (§4.1.3) with
 *    code 1 / 0 / 2.
 *
 * Pool requests from an authenticated front end (core/pool/source.ts, draft-ietf-ntp-nts-keyexchange-pool):
 *  - support request: only the lists asked for (10, then 9), Keep Alive when granted;
 *  - fixed key request: as a success above, but the cookies seal the keys the front end supplied (the
 *    TLS exporter is never called), no record 1024, Keep Alive before End of Message when granted.
 * A pool request whose token is not accepted gets Error 1 and no keep-alive (the shell closes). Keep
 * Alive is granted only to an authenticated pool request that asked for it, when the shell says the
 * connection may be kept; on a kept connection an ordinary request gets Error 1.
 */
import type { FillRandom } from './bytes.js';
import { getAead } from './crypto/aead.js';
import { encodeTokens, FRESH_CONNECTION, isAcceptedToken, type KePoolConnection, supportResponseRecords } from './pool/source.js';
import { cookieLength, sealCookie } from './nts/cookie.js';
import { type ExportKeys, ntpv4ExporterContexts } from './nts/exporter.js';
import { AeadId, KeErrorCode, KeRecordType, NextProtocolId, NTP_PORT } from './nts/ids.js';
import { encodeKeErrorResponse, type KeRequest, type KeRequestDefect, type PoolRequest, validateKeRequest } from './nts/ke-message.js';
import { encodeKeMessage, encodeKeRecord, KE_RECORD_HEADER_LENGTH, type KeRecord, keRecordLength, writeKeRecordHeader } from './nts/ke-record.js';
import type { Keyset } from './nts/keyset.js';

/** What a KE request came to; the daemon counts exactly one per request. */
export type KeOutcome =
  | 'success'
  | 'bad_request'
  | 'unrecognized_critical'
  | 'no_common_protocol'
  | 'no_common_aead'
  | 'internal_error';

/** Server policy for NTS-KE answers. */
export interface KePolicy {
  /** AEAD ids the server accepts (order irrelevant: chooseAead follows the client's, constant-time AEADs first). 15 is always added (§4.1.5). */
  readonly aeadIds: readonly number[];
  /** NTPv4 Server Negotiation value (§4.1.7): ASCII IPv4/IPv6 literal or FQDN; omitted when undefined or empty. */
  readonly ntpServer?: string | undefined;
  /** NTP UDP port; a Port Negotiation record (§4.1.8) is sent whenever it is not 123. Default 123. */
  readonly ntpPort?: number | undefined;
  /** New Cookie records per success response, 1..8 (§4.1.6: at least 1, SHOULD be 8). Default 8. */
  readonly cookieCount?: number | undefined;
  /** Pools: tokens a front end may authenticate with (`accepted-pool-authentication-tokens`; secret). None = no pool requests. */
  readonly poolAuthenticationTokens?: readonly string[] | undefined;
}

/** Which kind of request it was: an ordinary client's, or a pool front end's support or fixed key request. */
export type KeRequestKind = 'ordinary' | 'support' | 'fixed_key';

/** The response to write, and what to count. */
export interface KeHandlerResult {
  /** Complete response message, ending with End of Message. */
  readonly response: Uint8Array;
  /** Exactly one outcome per request. */
  readonly outcome: KeOutcome;
  /** The negotiated AEAD id on success, else undefined. */
  readonly aeadId: number | undefined;
  /** New Cookie records in the response. */
  readonly cookiesIssued: number;
  /** Why the request was refused (bad_request / unrecognized_critical), else undefined. */
  readonly defect: KeRequestDefect | undefined;
  /** What went wrong for internal_error (an exception from exportKeys / sealCookie, or a size mismatch), for logging. */
  readonly internalError: unknown;
  /** The request's kind; 'ordinary' also for requests too malformed to tell. */
  readonly requestKind: KeRequestKind;
  /** The response carries Keep Alive: the shell keeps the connection open for the next request. */
  readonly keepAlive: boolean;
}

/** Default and maximum number of cookies per success response (RFC 8915 §4.1.6 SHOULD 8). */
export const KE_COOKIES_PER_RESPONSE = 8;

function result(
  response: Uint8Array,
  outcome: KeOutcome,
  extra: {
    aeadId?: number;
    cookiesIssued?: number;
    defect?: KeRequestDefect;
    internalError?: unknown;
    requestKind?: KeRequestKind;
    keepAlive?: boolean;
  } = {},
): KeHandlerResult {
  return {
    response,
    outcome,
    aeadId: extra.aeadId,
    cookiesIssued: extra.cookiesIssued ?? 0,
    defect: extra.defect,
    internalError: extra.internalError,
    requestKind: extra.requestKind ?? 'ordinary',
    keepAlive: extra.keepAlive ?? false,
  };
}

/** UTF-8 tokens per policy token list, encoded once. */
const encodedTokens = new WeakMap<readonly string[], Uint8Array[]>();

function acceptedTokens(policy: KePolicy): readonly Uint8Array[] {
  const tokens = policy.poolAuthenticationTokens;
  if (tokens === undefined) return [];
  let encoded = encodedTokens.get(tokens);
  if (encoded === undefined) {
    encoded = encodeTokens(tokens);
    encodedTokens.set(tokens, encoded);
  }
  return encoded;
}

/**
 * Picks the AEAD among the client-offered ids that the server accepts and implements. 15 is always accepted
 * (§4.1.5: a server accepting NTPv4 MUST NOT answer empty when AEAD_AES_SIV_CMAC_256 was offered).
 * The client's order decides (as chrony and ntpd-rs do), except that an AEAD this thread runs on the
 * table-driven JavaScript AES comes after every offered one it runs in constant time (§4.1.5 lets the server
 * ignore the client's order). That is AEAD 30 where OpenSSL is older than 3.2 (Node 20): chrony ≥ 4.4 offers
 * "30 15" by default, and its per-request keys would otherwise meet a cache-timing channel there.
 * Returns undefined when none overlaps.
 */
export function chooseAead(clientAeadIds: readonly number[], serverAeadIds: readonly number[]): number | undefined {
  let fallback: number | undefined;
  for (const id of clientAeadIds) {
    if (id !== AeadId.AES_SIV_CMAC_256 && !serverAeadIds.includes(id)) continue;
    const aead = getAead(id);
    if (aead === undefined) continue;
    if (aead.constantTime) return id;
    fallback ??= id;
  }
  return fallback;
}

/**
 * Handles one NTS-KE request (bytes as received, or already decoded records) and returns the
 * complete response. Never throws on peer input; exceptions from the injected `exportKeys` or from
 * cookie sealing become an Error 2 response with outcome 'internal_error'. `connection` tells whether
 * the connection is a kept one and whether it may be kept (default: fresh, not keepable).
 */
export function handleKeRequest(
  request: Uint8Array | readonly KeRecord[],
  exportKeys: ExportKeys,
  keyset: Keyset,
  policy: KePolicy,
  fillRandom: FillRandom,
  connection: KePoolConnection = FRESH_CONNECTION,
): KeHandlerResult {
  const validation = validateKeRequest(request);
  if (!validation.ok) {
    const outcome: KeOutcome =
      validation.errorCode === KeErrorCode.unrecognizedCriticalRecord ? 'unrecognized_critical' : 'bad_request';
    return result(encodeKeErrorResponse(validation.errorCode), outcome, { defect: validation.defect });
  }
  const req = validation.request;
  if (req.pool !== undefined) return handlePoolRequest(req, req.pool, keyset, policy, fillRandom, connection);
  // A kept connection belongs to a front end: only support and fixed key requests on it.
  if (connection.kept) {
    return result(encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request', { defect: 'ordinary_request_on_kept_connection' });
  }
  const negotiated = negotiate(req, policy, 'ordinary', false);
  if (!negotiated.ok) return negotiated.result;
  const aeadId = negotiated.aeadId;
  try {
    const keyLength = getAead(aeadId)?.keyLength;
    if (keyLength === undefined) throw new Error(`AEAD ${aeadId} has no implementation`);
    // chrony rule (exporter.ts): record 1024 matters only for AEAD 30, and is echoed only then.
    const echoCompliant = req.compliantGcmSivExporter && aeadId === AeadId.AES_128_GCM_SIV;
    const contexts = ntpv4ExporterContexts(aeadId, echoCompliant);
    const keys = exportKeys(contexts.c2s, contexts.s2c, keyLength);
    return mintSuccess(aeadId, keys, { echoCompliant, keepAlive: false, requestKind: 'ordinary' }, keyset, policy, fillRandom);
  } catch (internalError: unknown) {
    return result(encodeKeErrorResponse(KeErrorCode.internalServerError), 'internal_error', { internalError });
  }
}

/** §4.1.2 / §4.1.5 negotiation: the chosen AEAD, or the complete no_common_* response. */
function negotiate(
  req: KeRequest,
  policy: KePolicy,
  requestKind: KeRequestKind,
  keepAlive: boolean,
): { readonly ok: true; readonly aeadId: number } | { readonly ok: false; readonly result: KeHandlerResult } {
  const tail: KeRecord[] = keepAlive ? [{ kind: 'keepAlive', critical: false }] : [];
  // §4.1.2: the response lists the protocols we accept out of those offered; only NTPv4 exists.
  if (!req.nextProtocolIds.includes(NextProtocolId.ntpv4)) {
    const response: KeRecord[] = [{ kind: 'nextProtocol', critical: true, protocolIds: [] }, ...tail, { kind: 'endOfMessage', critical: true }];
    return { ok: false, result: result(encodeKeMessage(response), 'no_common_protocol', { requestKind, keepAlive }) };
  }
  // Validation guarantees an AEAD record when NTPv4 is offered (§4.1.5).
  const aeadId = chooseAead(req.aeadIds ?? [], policy.aeadIds);
  if (aeadId === undefined) {
    const response: KeRecord[] = [
      { kind: 'nextProtocol', critical: true, protocolIds: [NextProtocolId.ntpv4] },
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [] },
      ...tail,
      { kind: 'endOfMessage', critical: true },
    ];
    return { ok: false, result: result(encodeKeMessage(response), 'no_common_aead', { requestKind, keepAlive }) };
  }
  return { ok: true, aeadId };
}

/** A support or fixed key request from a front end (validated form; the token is checked here). */
function handlePoolRequest(
  req: KeRequest,
  pool: PoolRequest,
  keyset: Keyset,
  policy: KePolicy,
  fillRandom: FillRandom,
  connection: KePoolConnection,
): KeHandlerResult {
  const requestKind: KeRequestKind = pool.kind === 'support' ? 'support' : 'fixed_key';
  // Validation guarantees a non-empty token on every pool request.
  const token = req.authenticationToken ?? new Uint8Array(0);
  if (!isAcceptedToken(token, acceptedTokens(policy))) {
    return result(encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request', { defect: 'bad_authentication_token', requestKind });
  }
  const keepAlive = req.keepAlive && connection.keepAliveAvailable;
  if (pool.kind === 'support') {
    return result(encodeKeMessage(supportResponseRecords(pool, policy.aeadIds, keepAlive)), 'success', { requestKind, keepAlive });
  }
  const negotiated = negotiate(req, policy, requestKind, keepAlive);
  if (!negotiated.ok) return negotiated.result;
  try {
    // The cookies carry the front end's keys (the client's, exported on the front end's TLS session).
    return mintSuccess(negotiated.aeadId, pool, { echoCompliant: false, keepAlive, requestKind }, keyset, policy, fillRandom);
  } catch (internalError: unknown) {
    return result(encodeKeErrorResponse(KeErrorCode.internalServerError), 'internal_error', { internalError, requestKind });
  }
}

function mintSuccess(
  aeadId: number,
  keys: { readonly c2s: Uint8Array; readonly s2c: Uint8Array },
  shape: { readonly echoCompliant: boolean; readonly keepAlive: boolean; readonly requestKind: KeRequestKind },
  keyset: Keyset,
  policy: KePolicy,
  fillRandom: FillRandom,
): KeHandlerResult {
  const keyLength = getAead(aeadId)?.keyLength;
  if (keyLength === undefined) throw new Error(`AEAD ${aeadId} has no implementation`);
  const echoCompliant = shape.echoCompliant;
  if (keys.c2s.length !== keyLength || keys.s2c.length !== keyLength) {
    throw new Error(`key length ${keys.c2s.length}/${keys.s2c.length}, expected ${keyLength}`);
  }

  const head: KeRecord[] = [
    { kind: 'nextProtocol', critical: true, protocolIds: [NextProtocolId.ntpv4] },
    { kind: 'aeadAlgorithm', critical: true, aeadIds: [aeadId] },
  ];
  if (echoCompliant) head.push({ kind: 'chronyCompliantExporter', critical: false });
  const ntpPort = policy.ntpPort ?? NTP_PORT;
  // §4.1.8: without a Port record the client uses 123 (NTPsec relies on this record).
  if (ntpPort !== NTP_PORT) head.push({ kind: 'ntpv4Port', critical: true, port: ntpPort });
  if (policy.ntpServer !== undefined && policy.ntpServer.length > 0) {
    head.push({ kind: 'ntpv4Server', critical: true, server: policy.ntpServer });
  }

  const cookieCount = Math.min(KE_COOKIES_PER_RESPONSE, Math.max(1, Math.floor(policy.cookieCount ?? KE_COOKIES_PER_RESPONSE)));
  const oneCookie = cookieLength(aeadId);
  const cookieRecordLength = KE_RECORD_HEADER_LENGTH + oneCookie;
  let total = KE_RECORD_HEADER_LENGTH; // End of Message
  for (const r of head) total += keRecordLength(r);
  total += cookieCount * cookieRecordLength;
  if (shape.keepAlive) total += KE_RECORD_HEADER_LENGTH;

  const out = new Uint8Array(total);
  let p = 0;
  for (const r of head) p = encodeKeRecord(r, out, p);
  for (let i = 0; i < cookieCount; i++) {
    // §4.1.6: New Cookie SHOULD NOT have the critical bit set.
    const body = writeKeRecordHeader(out, p, false, KeRecordType.newCookie, oneCookie);
    const end = sealCookie(keyset, aeadId, keys.c2s, keys.s2c, fillRandom, out, body);
    if (end !== body + oneCookie) throw new Error(`sealCookie wrote ${end - body} octets, expected ${oneCookie}`);
    p = end;
  }
  // Pools: Keep Alive (non-critical, empty) when granted.
  if (shape.keepAlive) p = writeKeRecordHeader(out, p, false, KeRecordType.keepAlive, 0);
  p = writeKeRecordHeader(out, p, true, KeRecordType.endOfMessage, 0);
  if (p !== total) throw new Error('KE response length mismatch');
  return result(out, 'success', { aeadId, cookiesIssued: cookieCount, requestKind: shape.requestKind, keepAlive: shape.keepAlive });
}

/** Why a KE connection was refused before TLS (the `reason` label of ntsd_ke_connections_rejected_total). */
export const KE_REJECT_REASONS = ['access_denied', 'access_ignored', 'connection_limit', 'source_limit', 'rate_limited', 'untrusted_proxy', 'proxy_header'] as const;
/** One of KE_REJECT_REASONS. */
export type KeRejectReasonLabel = (typeof KE_REJECT_REASONS)[number];
/** How a KE session ended, exactly one per connection (the `outcome` label of ntsd_ke_sessions_total). */
export const KE_SESSION_OUTCOMES = [
  'success',
  'tls_error',
  'timeout',
  'bad_request',
  'no_common_protocol',
  'no_common_aead',
  'internal_error',
  'client_closed',
  'evicted',
] as const;
/** One of KE_SESSION_OUTCOMES. */
export type KeSessionOutcomeLabel = (typeof KE_SESSION_OUTCOMES)[number];
