/**
 * NTS-KE request validation (RFC 8915 §4, §4.1) and the fixed-form responses (Error).
 *
 * A request either validates into a KeRequest or yields exactly one error code to answer with:
 * 0 Unrecognized Critical Record or 1 Bad Request (§4.1.3). Records are checked in wire order and
 * the first defect wins; message-level checks (missing records) run after the last record.
 *
 * Decisions where the RFC leaves room (documented here once):
 *  - Client NTPv4 Server / Port Negotiation records (§4.1.7, §4.1.8) are understood, so a critical
 *    one is not "unrecognized". They are checked for form (Server: 1..255 printable ASCII octets;
 *    Port: exactly 2 octets; at most one of each, §4.1.7 "at most one per message") and returned as
 *    preferences, but the handler does not honour them: it can only vouch for the NTP server it is
 *    configured with, so it always answers with its own Server/Port records (or none), which the
 *    RFC permits ("the server SHOULD echo it if it can serve cookies for it").
 *  - End of Message without the critical bit is a Bad Request: §4.1.1 says the bit MUST be set,
 *    and every known client (chrony, ntpd-rs, NTPsec) sets it.
 *  - Next Protocol without the critical bit is a Bad Request (§4.1.2 MUST; chrony does the same).
 *    The AEAD record's critical bit is free (§4.1.5 "MAY").
 *  - Error, Warning and New Cookie records are server-only (§4.1.3, §4.1.4, §4.1.6): Bad Request.
 *  - Record 1024 (chrony's compliant-exporter flag) must have an empty body (as chrony checks);
 *    repeating it is harmless and accepted.
 *  - The Next Protocol and AEAD lists must be non-empty in a request (§4.1.2, §4.1.5: "at least
 *    one"), even when NTPv4 is not offered; duplicate records of either kind are Bad Request.
 *
 * NTS pool records (draft-ietf-ntp-nts-keyexchange-pool; types 8, 9, 10, 12, 13, 14). A request is
 *  - a support request when it carries an empty Supported Algorithm List (10) and/or an empty Supported
 *    Next Protocol List (9): it must carry an Authentication token (14), and no Next Protocol, AEAD or
 *    Fixed Key Request record (ntsd refuses such a mix rather than guess which request was meant);
 *  - a fixed key request when it carries a Fixed Key Request (12): it must carry a token, exactly one
 *    Next Protocol record with exactly one id and exactly one AEAD record with exactly one id, and when
 *    that AEAD is one we implement, each key must be exactly its key length;
 *  - otherwise an ordinary request, in which NTP Server Deny (13), Keep Alive (8) and a token are
 *    accepted and have no effect (a source ignores Deny; keep-alive is for front ends only).
 * Response-only forms in a request are Bad Request: a non-empty list 9 or 10 (that is the answer), as
 * with Error, Warning and New Cookie. A duplicate 9, 10, 12 or 14 is Bad Request; an empty token is Bad
 * Request; a repeated Keep Alive is harmless. Whether the token is valid is the handler's decision.
 */
import { getAead } from '../crypto/aead.js';
import { KeErrorCode, NextProtocolId } from './ids.js';
import { decodeKeMessage, encodeKeMessage, type KeDecodeError, type KeRecord } from './ke-record.js';

/** Why a request was refused; one value per kind of defect, for logs and tests. */
export type KeRequestDefect =
  | KeDecodeError
  /** §4.1.1: a record follows End of Message (decoded-record input). */
  | 'record_after_end_of_message'
  /** §4.1.1: End of Message MUST have the critical bit set. */
  | 'end_of_message_not_critical'
  /** §4.1.2: no Next Protocol record. */
  | 'missing_next_protocol'
  /** §4.1.2: more than one Next Protocol record. */
  | 'duplicate_next_protocol'
  /** §4.1.2: Next Protocol MUST have the critical bit set. */
  | 'next_protocol_not_critical'
  /** §4.1.2: a request lists at least one protocol. */
  | 'empty_next_protocol'
  /** §4.1.5: NTPv4 offered without an AEAD Algorithm record. */
  | 'missing_aead_algorithm'
  /** §4.1.5: more than one AEAD Algorithm record. */
  | 'duplicate_aead_algorithm'
  /** §4.1.5: a request lists at least one AEAD id. */
  | 'empty_aead_algorithm'
  /** §4.1.3: only servers send Error. */
  | 'client_sent_error'
  /** §4.1.4: only servers send Warning. */
  | 'client_sent_warning'
  /** §4.1.6: clients never send New Cookie. */
  | 'client_sent_new_cookie'
  /** §4.1.7: Server Negotiation body is not 1..255 printable ASCII octets. */
  | 'bad_ntpv4_server'
  /** §4.1.7: at most one Server Negotiation record per message. */
  | 'duplicate_ntpv4_server'
  /** §4.1.8: at most one Port Negotiation record per message (alongside §4.1.7). */
  | 'duplicate_ntpv4_port'
  /** §4.1.3 code 0: a critical record of a type we do not know. */
  | 'unrecognized_critical_record'
  /** Pools: a non-empty Supported Next Protocol / Algorithm List: that is the response's form. */
  | 'response_only_record'
  /** Pools: two Supported Next Protocol List or two Supported Algorithm List records. */
  | 'duplicate_supported_list'
  /** Pools: two Fixed Key Request records. */
  | 'duplicate_fixed_key_request'
  /** Pools: two Authentication token records. */
  | 'duplicate_authentication_token'
  /** Pools: an Authentication token record with an empty body. */
  | 'empty_authentication_token'
  /** Pools: a support or fixed key request without an Authentication token. */
  | 'missing_authentication_token'
  /** Pools: the token is not one of `accepted-pool-authentication-tokens` (decided by the handler). */
  | 'bad_authentication_token'
  /** Pools: a support request that also carries Next Protocol, AEAD or Fixed Key Request. */
  | 'mixed_pool_request'
  /** Pools: a fixed key request whose Next Protocol or AEAD record does not hold exactly one id. */
  | 'fixed_key_not_one_choice'
  /** Pools: a fixed key request whose keys are not each the key length of its AEAD. */
  | 'fixed_key_length'
  /** Pools: an ordinary request on a connection kept open for a front end (decided by the handler). */
  | 'ordinary_request_on_kept_connection';

/** What a pool front end asked for (draft-ietf-ntp-nts-keyexchange-pool); undefined for an ordinary request. */
export type PoolRequest =
  /** A capability query: answer only the lists asked for. */
  | { readonly kind: 'support'; readonly algorithms: boolean; readonly protocols: boolean }
  /** A fixed key request: seal cookies over these keys (views into the request; secret). */
  | { readonly kind: 'fixedKey'; readonly c2s: Uint8Array; readonly s2c: Uint8Array };

/** A request that passed validation. */
export interface KeRequest {
  /** Protocols offered, client order (§4.1.2); at least one. */
  readonly nextProtocolIds: readonly number[];
  /** AEAD ids offered, descending client preference (§4.1.5); undefined when no AEAD record was sent. */
  readonly aeadIds: readonly number[] | undefined;
  /** The client sent chrony's record 1024 (see exporter.ts). */
  readonly compliantGcmSivExporter: boolean;
  /** Client's Server Negotiation preference (§4.1.7), not honoured by the handler. */
  readonly ntpv4ServerPreference: string | undefined;
  /** Client's Port Negotiation preference (§4.1.8), not honoured by the handler. */
  readonly ntpv4PortPreference: number | undefined;
  /** Pools: a support or fixed key request, else undefined (an ordinary request). */
  readonly pool: PoolRequest | undefined;
  /** Pools: the Authentication token's octets (secret), unchecked; undefined when absent. */
  readonly authenticationToken: Uint8Array | undefined;
  /** Pools: the request carried Keep Alive. */
  readonly keepAlive: boolean;
  /** Pools: NTP Server Deny names, in order (a source ignores them; a front end avoids them). */
  readonly deniedServers: readonly string[];
}

/** KE error codes a request can earn (RFC 8915 §4.1.3). */
export type KeRequestErrorCode = typeof KeErrorCode.unrecognizedCriticalRecord | typeof KeErrorCode.badRequest;

/** Result of validating a request: a value, never an exception. */
export type KeRequestValidation =
  | { readonly ok: true; readonly request: KeRequest }
  | { readonly ok: false; readonly errorCode: KeRequestErrorCode; readonly defect: KeRequestDefect };

function bad(defect: KeRequestDefect): KeRequestValidation {
  return { ok: false, errorCode: KeErrorCode.badRequest, defect };
}

function isPrintableAscii(s: string): boolean {
  if (s.length === 0 || s.length > 255) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/** Validates decoded records as a request (RFC 8915 §4, §4.1); the list must end with End of Message. */
export function validateKeRequestRecords(records: readonly KeRecord[]): KeRequestValidation {
  let nextProtocolIds: readonly number[] | undefined;
  let aeadIds: readonly number[] | undefined;
  let compliantGcmSivExporter = false;
  let ntpv4ServerPreference: string | undefined;
  let ntpv4PortPreference: number | undefined;
  let ended = false;
  let askAlgorithms = false;
  let askProtocols = false;
  let fixedKeys: Uint8Array | undefined;
  let authenticationToken: Uint8Array | undefined;
  let keepAlive = false;
  const deniedServers: string[] = [];

  for (const record of records) {
    if (ended) return bad('record_after_end_of_message');
    switch (record.kind) {
      case 'endOfMessage':
        if (!record.critical) return bad('end_of_message_not_critical');
        ended = true;
        break;
      case 'nextProtocol':
        if (nextProtocolIds !== undefined) return bad('duplicate_next_protocol');
        if (!record.critical) return bad('next_protocol_not_critical');
        if (record.protocolIds.length === 0) return bad('empty_next_protocol');
        nextProtocolIds = record.protocolIds;
        break;
      case 'aeadAlgorithm':
        if (aeadIds !== undefined) return bad('duplicate_aead_algorithm');
        if (record.aeadIds.length === 0) return bad('empty_aead_algorithm');
        aeadIds = record.aeadIds;
        break;
      case 'error':
        return bad('client_sent_error');
      case 'warning':
        return bad('client_sent_warning');
      case 'newCookie':
        return bad('client_sent_new_cookie');
      case 'ntpv4Server':
        if (ntpv4ServerPreference !== undefined) return bad('duplicate_ntpv4_server');
        if (!isPrintableAscii(record.server)) return bad('bad_ntpv4_server');
        ntpv4ServerPreference = record.server;
        break;
      case 'ntpv4Port':
        if (ntpv4PortPreference !== undefined) return bad('duplicate_ntpv4_port');
        ntpv4PortPreference = record.port;
        break;
      case 'chronyCompliantExporter':
        compliantGcmSivExporter = true;
        break;
      case 'supportedAlgorithmList':
        if (record.algorithms.length !== 0) return bad('response_only_record');
        if (askAlgorithms) return bad('duplicate_supported_list');
        askAlgorithms = true;
        break;
      case 'supportedNextProtocolList':
        if (record.protocolIds.length !== 0) return bad('response_only_record');
        if (askProtocols) return bad('duplicate_supported_list');
        askProtocols = true;
        break;
      case 'fixedKeyRequest':
        if (fixedKeys !== undefined) return bad('duplicate_fixed_key_request');
        fixedKeys = record.keys;
        break;
      case 'authenticationToken':
        if (authenticationToken !== undefined) return bad('duplicate_authentication_token');
        if (record.token.length === 0) return bad('empty_authentication_token');
        authenticationToken = record.token;
        break;
      case 'keepAlive':
        keepAlive = true;
        break;
      case 'ntpServerDeny':
        deniedServers.push(record.server);
        break;
      case 'unknown':
        // §4: an unknown critical record is an error (code 0); an unknown non-critical one is skipped.
        if (record.critical) {
          return { ok: false, errorCode: KeErrorCode.unrecognizedCriticalRecord, defect: 'unrecognized_critical_record' };
        }
        break;
    }
  }
  if (!ended) return bad('missing_end_of_message');
  const common = { compliantGcmSivExporter, ntpv4ServerPreference, ntpv4PortPreference, authenticationToken, keepAlive, deniedServers };
  if (askAlgorithms || askProtocols) {
    if (nextProtocolIds !== undefined || aeadIds !== undefined || fixedKeys !== undefined) return bad('mixed_pool_request');
    if (authenticationToken === undefined) return bad('missing_authentication_token');
    const pool: PoolRequest = { kind: 'support', algorithms: askAlgorithms, protocols: askProtocols };
    return { ok: true, request: { ...common, nextProtocolIds: [], aeadIds: undefined, pool } };
  }
  if (nextProtocolIds === undefined) return bad('missing_next_protocol');
  // §4.1.5: the AEAD record is required exactly once when NTPv4 is offered.
  if (aeadIds === undefined && nextProtocolIds.includes(NextProtocolId.ntpv4)) return bad('missing_aead_algorithm');
  let pool: PoolRequest | undefined;
  if (fixedKeys !== undefined) {
    if (authenticationToken === undefined) return bad('missing_authentication_token');
    if (aeadIds === undefined) return bad('missing_aead_algorithm');
    const aeadId = aeadIds[0];
    if (nextProtocolIds.length !== 1 || aeadIds.length !== 1 || aeadId === undefined) return bad('fixed_key_not_one_choice');
    const half = fixedKeys.length >>> 1;
    const keyLength = getAead(aeadId)?.keyLength;
    if (keyLength !== undefined && half !== keyLength) return bad('fixed_key_length');
    pool = { kind: 'fixedKey', c2s: fixedKeys.subarray(0, half), s2c: fixedKeys.subarray(half) };
  }
  return { ok: true, request: { ...common, nextProtocolIds, aeadIds, pool } };
}

/**
 * Decodes and validates request bytes. Pass everything received, not only the scanned length,
 * so that octets after End of Message are refused (§4.1.1). Never throws.
 */
export function validateKeRequest(request: Uint8Array | readonly KeRecord[]): KeRequestValidation {
  if (!(request instanceof Uint8Array)) return validateKeRequestRecords(request);
  const decoded = decodeKeMessage(request);
  if (!decoded.ok) {
    // A non-empty End of Message is a framing defect like any other wrong body length.
    return bad(decoded.error);
  }
  return validateKeRequestRecords(decoded.records);
}

/**
 * A complete Error response (RFC 8915 §4.1.3): one critical Error record and End of Message,
 * 10 octets. The shell sends this with code 1 when a request never completes in time or exceeds
 * the size cap (scanKeMessage → 'malformed').
 */
export function encodeKeErrorResponse(code: number): Uint8Array {
  return encodeKeMessage([
    { kind: 'error', critical: true, code },
    { kind: 'endOfMessage', critical: true },
  ]);
}

