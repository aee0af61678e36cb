/**
 * Client-side checks of an NTS-KE response (RFC 8915 §4, §4.1): what a client must see before it may use
 * the keys and cookies. Pure: decoded records in, a tagged value out; never throws on peer input.
 *
 * Decisions (the RFC leaves a client room; a checking tool should be strict and say why):
 *  - An Error record (§4.1.3) wins over every other defect: the server has told us why it refused.
 *  - Any Warning record (§4.1.4) fails the exchange: RFC 8915 defines no warning codes, and an
 *    unrecognised warning code is treated as an error.
 *  - End of Message and Next Protocol MUST carry the critical bit (§4.1.1, §4.1.2); a response that
 *    clears it is malformed.
 *  - An unknown record with the critical bit set is malformed (§4: a recipient rejects critical
 *    records it does not recognise); unknown non-critical records are skipped.
 */
import { AeadId, NextProtocolId } from '../core/nts/ids.js';
import type { KeRecord } from '../core/nts/ke-record.js';

/** What a valid response negotiated, before the keys are exported. */
export interface KeResponseContent {
  /** The AEAD the server chose (§4.1.5), one of those offered. */
  readonly aeadId: number;
  /** Cookies from New Cookie records (§4.1.6), in order, each a copy. */
  readonly cookies: readonly Uint8Array[];
  /** NTPv4 Server Negotiation value (§4.1.7), when the record was present. */
  readonly ntpServer: string | undefined;
  /** NTPv4 Port Negotiation value (§4.1.8), when the record was present. */
  readonly ntpPort: number | undefined;
  /** The server echoed chrony's record 1024, so AEAD 30 uses the RFC exporter context (see core/nts/exporter.ts). */
  readonly compliantGcmSivExporter: boolean;
}

/** Why a response was refused; `kind` matches the KE failure kinds of ke-client.ts. */
export type KeResponseProblem =
  /** §4.1.3: the server sent an Error record with this code. */
  | { readonly kind: 'ke_error'; readonly code: number; readonly message: string }
  /** §4.1.4: the server sent Warning records with these codes. */
  | { readonly kind: 'ke_warning'; readonly codes: readonly number[]; readonly message: string }
  /** §4.1.2 / §4.1.5: the server accepted none of the offered protocols or AEADs. */
  | { readonly kind: 'negotiation'; readonly message: string }
  /** Anything else that breaks §4 / §4.1. */
  | { readonly kind: 'malformed'; readonly message: string };

/** Result of checking a response. */
export type KeResponseCheck =
  | { readonly ok: true; readonly content: KeResponseContent }
  | { readonly ok: false; readonly problem: KeResponseProblem };

/** Human names of the KE error codes (RFC 8915 §4.1.3). */
export function describeKeErrorCode(code: number): string {
  switch (code) {
    case 0:
      return 'Unrecognized Critical Record';
    case 1:
      return 'Bad Request';
    case 2:
      return 'Internal Server Error';
    default:
      return code >= 32768 ? 'private or experimental error code' : 'unassigned error code';
  }
}

function malformed(message: string): KeResponseCheck {
  return { ok: false, problem: { kind: 'malformed', message } };
}

function isPrintableAscii(s: string): boolean {
  if (s.length === 0 || s.length > 255) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/**
 * Checks the decoded records of a response (the list must end with End of Message) against what the
 * client offered: Next Protocol NTPv4 (§4.1.2) and `offeredAeadIds` (§4.1.5).
 */
export function checkKeResponse(records: readonly KeRecord[], offeredAeadIds: readonly number[]): KeResponseCheck {
  // §4.1.3: after an Error record the client discards everything else.
  for (const record of records) {
    if (record.kind === 'error') {
      return {
        ok: false,
        problem: {
          kind: 'ke_error',
          code: record.code,
          message: `server sent NTS-KE Error ${record.code} (${describeKeErrorCode(record.code)})`,
        },
      };
    }
  }
  const warnings: number[] = [];
  let protocolIds: readonly number[] | undefined;
  let aeadIds: readonly number[] | undefined;
  let ntpServer: string | undefined;
  let ntpPort: number | undefined;
  let compliantGcmSivExporter = false;
  let ended = false;
  const cookies: Uint8Array[] = [];

  for (const record of records) {
    if (ended) return malformed('record after End of Message (RFC 8915 §4.1.1)');
    switch (record.kind) {
      case 'endOfMessage':
        if (!record.critical) return malformed('End of Message without the critical bit (RFC 8915 §4.1.1)');
        ended = true;
        break;
      case 'nextProtocol':
        if (protocolIds !== undefined) return malformed('more than one Next Protocol record (RFC 8915 §4.1.2)');
        if (!record.critical) return malformed('Next Protocol record without the critical bit (RFC 8915 §4.1.2)');
        protocolIds = record.protocolIds;
        break;
      case 'aeadAlgorithm':
        if (aeadIds !== undefined) return malformed('more than one AEAD Algorithm record (RFC 8915 §4.1.5)');
        aeadIds = record.aeadIds;
        break;
      case 'error':
        // Handled before the loop.
        break;
      case 'warning':
        warnings.push(record.code);
        break;
      case 'newCookie':
        if (record.cookie.length === 0) return malformed('empty New Cookie record (RFC 8915 §4.1.6)');
        cookies.push(record.cookie.slice());
        break;
      case 'ntpv4Server':
        if (ntpServer !== undefined) return malformed('more than one NTPv4 Server Negotiation record (RFC 8915 §4.1.7)');
        if (!isPrintableAscii(record.server)) {
          return malformed('NTPv4 Server Negotiation record is not 1..255 printable ASCII octets (RFC 8915 §4.1.7)');
        }
        ntpServer = record.server;
        break;
      case 'ntpv4Port':
        if (ntpPort !== undefined) return malformed('more than one NTPv4 Port Negotiation record (RFC 8915 §4.1.8)');
        if (record.port === 0) return malformed('NTPv4 Port Negotiation record carries port 0 (RFC 8915 §4.1.8)');
        ntpPort = record.port;
        break;
      case 'chronyCompliantExporter':
        compliantGcmSivExporter = true;
        break;
      case 'unknown':
        if (record.critical) return malformed(`unrecognized critical record type ${record.type} (RFC 8915 §4)`);
        break;
    }
  }
  if (!ended) return malformed('no End of Message record (RFC 8915 §4.1.1)');
  if (warnings.length > 0) {
    return {
      ok: false,
      problem: {
        kind: 'ke_warning',
        codes: warnings,
        message: `server sent NTS-KE Warning ${warnings.join(', ')} (no warning codes are defined; RFC 8915 §4.1.4)`,
      },
    };
  }
  if (protocolIds === undefined) return malformed('no Next Protocol record (RFC 8915 §4.1.2)');
  if (protocolIds.length === 0) {
    return { ok: false, problem: { kind: 'negotiation', message: 'server accepted none of the offered protocols (NTPv4) (RFC 8915 §4.1.2)' } };
  }
  if (protocolIds.length !== 1 || protocolIds[0] !== NextProtocolId.ntpv4) {
    return malformed(`Next Protocol record [${protocolIds.join(', ')}] is not a subset of the offered [0] (RFC 8915 §4.1.2)`);
  }
  if (aeadIds === undefined) return malformed('no AEAD Algorithm record (RFC 8915 §4.1.5)');
  const aeadId = aeadIds[0];
  if (aeadId === undefined) {
    return {
      ok: false,
      problem: { kind: 'negotiation', message: `server supports none of the offered AEADs [${offeredAeadIds.join(', ')}] (RFC 8915 §4.1.5)` },
    };
  }
  if (aeadIds.length > 1) return malformed(`AEAD Algorithm record lists ${aeadIds.length} ids; a response has at most one (RFC 8915 §4.1.5)`);
  if (!offeredAeadIds.includes(aeadId)) return malformed(`server chose AEAD ${aeadId}, which was not offered (RFC 8915 §4.1.5)`);
  if (cookies.length === 0) return malformed('no New Cookie records (RFC 8915 §4.1.6: at least one)');
  return { ok: true, content: { aeadId, cookies, ntpServer, ntpPort, compliantGcmSivExporter } };
}

/** Builds the records of a client request (RFC 8915 §4): Next Protocol [NTPv4], AEAD list, optional record 1024, End of Message. */
export function buildKeRequestRecords(aeadIds: readonly number[]): KeRecord[] {
  const records: KeRecord[] = [
    { kind: 'nextProtocol', critical: true, protocolIds: [NextProtocolId.ntpv4] },
    { kind: 'aeadAlgorithm', critical: true, aeadIds },
  ];
  // chrony 4.4+: offer the RFC exporter context for AEAD 30 (record 1024, non-critical; exporter.ts).
  if (aeadIds.includes(AeadId.AES_128_GCM_SIV)) records.push({ kind: 'chronyCompliantExporter', critical: false });
  records.push({ kind: 'endOfMessage', critical: true });
  return records;
}
