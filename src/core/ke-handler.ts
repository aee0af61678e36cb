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
 */
import type { FillRandom } from './bytes.js';
import { getAead } from './crypto/aead.js';
import { cookieLength, sealCookie } from './nts/cookie.js';
import { type ExportKeys, ntpv4ExporterContexts } from './nts/exporter.js';
import { AeadId, KeErrorCode, KeRecordType, NextProtocolId, NTP_PORT } from './nts/ids.js';
import { encodeKeErrorResponse, type KeRequestDefect, validateKeRequest } from './nts/ke-message.js';
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
  /** AEAD ids the server accepts (order irrelevant: the client's order decides). 15 is always added (§4.1.5). */
  readonly aeadIds: readonly number[];
  /** NTPv4 Server Negotiation value (§4.1.7): ASCII IPv4/IPv6 literal or FQDN; omitted when undefined or empty. */
  readonly ntpServer?: string | undefined;
  /** NTP UDP port; a Port Negotiation record (§4.1.8) is sent whenever it is not 123. Default 123. */
  readonly ntpPort?: number | undefined;
  /** New Cookie records per success response, 1..8 (§4.1.6: at least 1, SHOULD be 8). Default 8. */
  readonly cookieCount?: number | undefined;
}

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
}

/** Default and maximum number of cookies per success response (RFC 8915 §4.1.6 SHOULD 8). */
export const KE_COOKIES_PER_RESPONSE = 8;

function result(
  response: Uint8Array,
  outcome: KeOutcome,
  extra: { aeadId?: number; cookiesIssued?: number; defect?: KeRequestDefect; internalError?: unknown } = {},
): KeHandlerResult {
  return {
    response,
    outcome,
    aeadId: extra.aeadId,
    cookiesIssued: extra.cookiesIssued ?? 0,
    defect: extra.defect,
    internalError: extra.internalError,
  };
}

/**
 * Picks the AEAD: the first client-offered id (client order, as chrony and ntpd-rs do) that the
 * server accepts and implements. 15 is always accepted (§4.1.5: a server accepting NTPv4 MUST NOT
 * answer empty when AEAD_AES_SIV_CMAC_256 was offered). Returns undefined when none overlaps.
 */
export function chooseAead(clientAeadIds: readonly number[], serverAeadIds: readonly number[]): number | undefined {
  for (const id of clientAeadIds) {
    if ((id === AeadId.AES_SIV_CMAC_256 || serverAeadIds.includes(id)) && getAead(id) !== undefined) return id;
  }
  return undefined;
}

/**
 * Handles one NTS-KE request (bytes as received, or already decoded records) and returns the
 * complete response. Never throws on peer input; exceptions from the injected `exportKeys` or from
 * cookie sealing become an Error 2 response with outcome 'internal_error'.
 */
export function handleKeRequest(
  request: Uint8Array | readonly KeRecord[],
  exportKeys: ExportKeys,
  keyset: Keyset,
  policy: KePolicy,
  fillRandom: FillRandom,
): KeHandlerResult {
  const validation = validateKeRequest(request);
  if (!validation.ok) {
    const outcome: KeOutcome =
      validation.errorCode === KeErrorCode.unrecognizedCriticalRecord ? 'unrecognized_critical' : 'bad_request';
    return result(encodeKeErrorResponse(validation.errorCode), outcome, { defect: validation.defect });
  }
  const req = validation.request;

  // §4.1.2: the response lists the protocols we accept out of those offered; only NTPv4 exists.
  if (!req.nextProtocolIds.includes(NextProtocolId.ntpv4)) {
    const response: KeRecord[] = [
      { kind: 'nextProtocol', critical: true, protocolIds: [] },
      { kind: 'endOfMessage', critical: true },
    ];
    return result(encodeKeMessage(response), 'no_common_protocol');
  }
  // Validation guarantees an AEAD record when NTPv4 is offered (§4.1.5).
  const aeadId = chooseAead(req.aeadIds ?? [], policy.aeadIds);
  if (aeadId === undefined) {
    const response: KeRecord[] = [
      { kind: 'nextProtocol', critical: true, protocolIds: [NextProtocolId.ntpv4] },
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [] },
      { kind: 'endOfMessage', critical: true },
    ];
    return result(encodeKeMessage(response), 'no_common_aead');
  }

  try {
    return mintSuccess(aeadId, req.compliantGcmSivExporter, exportKeys, keyset, policy, fillRandom);
  } catch (internalError: unknown) {
    return result(encodeKeErrorResponse(KeErrorCode.internalServerError), 'internal_error', { internalError });
  }
}

function mintSuccess(
  aeadId: number,
  compliantGcmSivExporter: boolean,
  exportKeys: ExportKeys,
  keyset: Keyset,
  policy: KePolicy,
  fillRandom: FillRandom,
): KeHandlerResult {
  const keyLength = getAead(aeadId)?.keyLength;
  if (keyLength === undefined) throw new Error(`AEAD ${aeadId} has no implementation`);
  // chrony rule (exporter.ts): record 1024 matters only for AEAD 30, and is echoed only then.
  const echoCompliant = compliantGcmSivExporter && aeadId === AeadId.AES_128_GCM_SIV;
  const contexts = ntpv4ExporterContexts(aeadId, echoCompliant);
  const keys = exportKeys(contexts.c2s, contexts.s2c, keyLength);
  if (keys.c2s.length !== keyLength || keys.s2c.length !== keyLength) {
    throw new Error(`exported key length ${keys.c2s.length}/${keys.s2c.length}, expected ${keyLength}`);
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
  p = writeKeRecordHeader(out, p, true, KeRecordType.endOfMessage, 0);
  if (p !== total) throw new Error('KE response length mismatch');
  return result(out, 'success', { aeadId, cookiesIssued: cookieCount });
}
