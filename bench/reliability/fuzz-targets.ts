/**
 * What the fuzz battery feeds and what it asserts. Four targets, each with valid seed inputs built by the
 * project's own client and encoders, the offsets of its length fields (for structure-aware edits), and a
 * `run` that checks the invariants and returns a short signature of what happened (new signatures grow the
 * corpus: feedback by outcome, since coverage-guided fuzzing is not available here; see fuzz.ts).
 *
 *  - respond:   the NTP/NTS responder (src/core/responder.ts) with a real keyset and real cookies.
 *               No throw; exactly one valid outcome; reply length ≤ request length, 0 exactly for drops;
 *               replies are mode 4 with the request's version and origin; a NAK is stratum 0 "NTSN" carrying
 *               only the request's Unique Identifier; every NTS time reply authenticates under the S2C key of
 *               one of the seed sessions; with require-nts no plain reply; respond() never rate-limits.
 *               On the same input, respondRefused (rate limit, access lists) answers at most a 48-octet KoD
 *               RATE/DENY, and only to a bare plain NTP header: never to an NTS request.
 *  - ke:        NTS-KE framing and handling as the KE session does it (scanKeMessage with the 4096-octet cap,
 *               then handleKeRequest, on a fresh, a keepable or a kept connection, with pool front-end support
 *               and fixed key requests among the seeds). No throw; exactly one outcome; the response decodes and is either a
 *               success (checked by the client's checkKeResponse: chosen AEAD, 8 cookies, port, server), a
 *               negotiation answer without an Error record, or exactly one Error record with the outcome's
 *               code; never internal_error; scanning in chunks agrees with scanning at once; a decoded
 *               message re-encodes to the same octets.
 *  - keyset:    decodeKeyset (src/core/nts/keyset.ts). No throw; a decoded keyset re-encodes to exactly
 *               the input and its key count fits its stale-key-count. Edits may recompute the checksum so
 *               they reach the fields behind it.
 *  - config:    TOML parsing and validation (src/config/load.ts parseConfig, schema.ts validateConfig).
 *               No throw; valid xor at least one problem; every problem is one line that names its TOML key
 *               (or "(toml)" with line and column); the same text gives the same answer twice.
 */
import { randomFillSync } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildKeRequestRecords, checkKeResponse } from '../../src/cli/ke-response.js';
import { buildNtsRequest, verifyNtsResponse } from '../../src/cli/ntp-client.js';
import { parseConfig } from '../../src/config/load.js';
import { DEFAULT_CONFIG_TOML } from '../../src/config/default.js';
import { readU16, readU32, writeU32 } from '../../src/core/bytes.js';
import { getAead, type AeadCipher } from '../../src/core/crypto/aead.js';
import { handleKeRequest, type KePolicy } from '../../src/core/ke-handler.js';
import type { KePoolConnection } from '../../src/core/pool/source.js';
import { cookieLength, openCookie, sealCookie } from '../../src/core/nts/cookie.js';
import type { ExportKeys } from '../../src/core/nts/exporter.js';
import { validateKeRequest } from '../../src/core/nts/ke-message.js';
import { decodeKeMessage, encodeKeMessage, scanKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';
import {
  KEYSET_CHECKSUM_LENGTH,
  KEYSET_HEADER_LENGTH,
  KEYSET_RECORD_LENGTH,
  crc32,
  createKeyset,
  decodeKeyset,
  encodeKeyset,
  keysetKeys,
  rotateKeyset,
  type Keyset,
} from '../../src/core/nts/keyset.js';
import {
  KISS_DENY,
  KISS_RATE,
  OUTCOME_COUNT,
  OUTCOME_METRICS,
  Outcome,
  createPooledFillRandom,
  createResponderContext,
  respond,
  respondRefused,
  type RefusalPolicy,
  type RefusalReason,
  type RefusedResult,
  type ResponderContext,
  type ServerFields,
} from '../../src/core/responder.js';
import type { Rng } from './common.js';

/** An invariant that did not hold (as opposed to an exception thrown by the code under test). */
export class InvariantViolation extends Error {}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new InvariantViolation(message);
}

/** One fuzz target. */
export interface FuzzTarget {
  readonly name: string;
  /** Valid inputs the mutator starts from. */
  readonly seeds: readonly Uint8Array[];
  /** Longest input worth producing. */
  readonly maxLength: number;
  /** Offsets of u16 length/count/type fields in `input`. */
  fieldOffsets(input: Uint8Array): number[];
  /** Target-specific edit (e.g. text-level for the configuration), tried in place of the generic mutator. */
  customMutate?(rng: Rng, input: Uint8Array): Uint8Array;
  /** Repair after edits (e.g. recompute a checksum) so the edits reach the fields behind it; `rng` decides. */
  fixup?(rng: Rng, input: Uint8Array): Uint8Array;
  /** Runs one input; throws InvariantViolation (or whatever the code under test threw). Returns a signature. */
  run(input: Uint8Array): string;
}

const fill = (b: Uint8Array): void => {
  randomFillSync(b);
};

// ---------------------------------------------------------------------------------------------------------
// respond()

const SERVER_FIELDS: ServerFields = {
  leap: 0,
  stratum: 2,
  precision: -20,
  rootDelay: 0x100,
  rootDispersion: 0x200,
  referenceId: 0x4c4f_434c,
  referenceTime: { seconds: 3_900_000_000, fraction: 0 },
};
const KISS_NTSN = 0x4e54_534e;
const REFUSAL_REASONS: readonly RefusalReason[] = ['rateLimited', 'denied', 'ignored'];
const OPEN_REFUSAL: RefusalPolicy = { requireNts: false, acceptNtpVersions: [3, 4], precision: -20 };
const STRICT_REFUSAL: RefusalPolicy = { requireNts: true, acceptNtpVersions: [4], precision: -20 };
const EF_UNIQUE_ID = 0x0104;
const T0_S = 1_800_000_000;

interface FuzzSession {
  readonly aeadId: number;
  readonly s2c: AeadCipher;
}

/** NTP extension field offsets (type at o, length at o + 2), walked from the header while they parse. */
function efOffsets(input: Uint8Array): number[] {
  const out: number[] = [0, 2];
  let o = 48;
  while (o + 4 <= input.length && out.length < 64) {
    out.push(o, o + 2);
    const len = readU16(input, o + 2);
    if (len < 4) break;
    // Inside the Authenticator: nonce and ciphertext lengths.
    if (readU16(input, o) === 0x0404) out.push(o + 4, o + 6);
    o += len;
  }
  return out;
}

/** The Unique Identifier EF value of an NTS request (first one), or undefined. */
function uniqueIdOf(request: Uint8Array): Uint8Array | undefined {
  let o = 48;
  while (o + 4 <= request.length) {
    const len = readU16(request, o + 2);
    if (len < 4 || o + len > request.length) return undefined;
    if (readU16(request, o) === EF_UNIQUE_ID) return request.subarray(o + 4, o + len);
    o += len;
  }
  return undefined;
}

/** The respond() target: a keyset with current, stale and next keys, cookies under each, both NTS policies. */
export function respondTarget(): FuzzTarget {
  const ks0 = createKeyset(T0_S, fill, { staleKeyCount: 2 });
  const ks1 = rotateKeyset(ks0, T0_S + 60, fill);
  const ks2 = rotateKeyset(ks1, T0_S + 120, fill);
  const stranger = createKeyset(T0_S, fill, { staleKeyCount: 0 });
  const makeCtx = (requireNts: boolean, versions: readonly number[]): ResponderContext =>
    createResponderContext({
      keyset: ks2,
      serverFields: SERVER_FIELDS,
      now: () => ({ seconds: 0xe9a1_b2c3, fraction: 0x1234_5678 }),
      fillRandom: createPooledFillRandom(fill),
      requireNts,
      acceptNtpVersions: versions,
    });
  const open = makeCtx(false, [3, 4]);
  const strict = makeCtx(true, [4]);
  const sessions: FuzzSession[] = [];
  const seeds: Uint8Array[] = [];
  // Cookies sealed under a stale key (ks0, ks1), the current one (ks2), and a key the server never had.
  const plan: readonly { aeadId: number; keyset: Keyset }[] = [
    { aeadId: 15, keyset: ks2 },
    { aeadId: 16, keyset: ks1 },
    { aeadId: 17, keyset: ks0 },
    { aeadId: 30, keyset: ks2 },
    { aeadId: 15, keyset: stranger },
  ];
  for (const p of plan) {
    const aead = getAead(p.aeadId);
    if (aead === undefined) throw new Error(`AEAD ${p.aeadId} missing`);
    const c2s = randomFillSync(new Uint8Array(aead.keyLength));
    const s2c = randomFillSync(new Uint8Array(aead.keyLength));
    const cookie = new Uint8Array(cookieLength(p.aeadId));
    sealCookie(p.keyset, p.aeadId, c2s, s2c, fill, cookie, 0);
    sessions.push({ aeadId: p.aeadId, s2c: aead.newCipher(s2c) });
    for (const placeholders of [0, 1, 7]) {
      for (const uidLength of [32, 52]) {
        const out = new Uint8Array(2048);
        const uniqueId = randomFillSync(new Uint8Array(uidLength));
        const end = buildNtsRequest(
          { aead, c2sCipher: aead.newCipher(c2s), uniqueId, cookie, placeholders, fillRandom: fill, transmitTime: { seconds: 0xe9a1_0000 + seeds.length, fraction: 7 } },
          out,
        );
        seeds.push(out.slice(0, end));
      }
    }
  }
  for (const version of [1, 2, 3, 4]) {
    const plain = new Uint8Array(48);
    plain[0] = (version << 3) | 3;
    randomFillSync(plain.subarray(40, 48));
    seeds.push(plain);
  }
  const out = new Uint8Array(70_000);
  const refusedResult: RefusedResult = { outcome: Outcome.dropAccess, length: 0 };

  const verifiesUnderSomeSession = (request: Uint8Array, reply: Uint8Array): boolean => {
    const uniqueId = uniqueIdOf(request);
    if (uniqueId === undefined) return false;
    const transmitTime = { seconds: readU32(request, 40), fraction: readU32(request, 44) };
    return sessions.some((s) => verifyNtsResponse(reply, { uniqueId, transmitTime, s2cCipher: s.s2c }).ok);
  };

  return {
    name: 'respond',
    seeds,
    maxLength: 65_507,
    fieldOffsets: efOffsets,
    run(input) {
      // One input in eight (by the low bits of its transmit timestamp) goes to the require-nts, NTPv4-only policy.
      const ctx = ((input[47] ?? 0) & 7) === 5 ? strict : open;
      const result = respond(input, { seconds: 0xe9a1_b2c3, fraction: 1 }, ctx, out);
      const outcome = result.outcome;
      check(Number.isInteger(outcome) && outcome >= 0 && outcome < OUTCOME_COUNT, `outcome ${String(outcome)} out of range`);
      const labels = OUTCOME_METRICS[outcome];
      check(labels !== undefined, `no labels for outcome ${outcome}`);
      check(
        outcome !== Outcome.kodRate && outcome !== Outcome.kodDeny && outcome !== Outcome.dropRateLimited && outcome !== Outcome.dropAccess,
        `respond() returned the refusal outcome ${outcome}`,
      );
      check(result.length <= input.length, `reply of ${result.length} octets to a request of ${input.length}`);
      check((labels.response === null) === (result.length === 0), `outcome ${outcome} with reply length ${result.length}`);
      if (result.length > 0) {
        const reply = out.subarray(0, result.length);
        check(result.length >= 48, `reply shorter than an NTP header (${result.length})`);
        check(((reply[0] ?? 0) & 7) === 4, 'reply is not mode 4');
        check((((reply[0] ?? 0) >>> 3) & 7) === (((input[0] ?? 0) >>> 3) & 7), 'reply version differs from the request');
        for (let i = 0; i < 8; i++) check(reply[24 + i] === input[40 + i], 'origin timestamp is not the request transmit timestamp');
        if (labels.nakReason !== null) {
          check(reply[1] === 0 && readU32(reply, 12) === KISS_NTSN, 'NTS NAK without stratum 0 / NTSN');
          const uid = uniqueIdOf(input);
          check(uid !== undefined && result.length === 48 + 4 + uid.length, 'NAK is not the header plus the Unique Identifier');
        } else if (outcome === Outcome.ntpTime) {
          check(!ctx.requireNts, 'plain reply although NTS is required');
          check(result.length === 48, `plain reply of ${result.length} octets`);
        } else if (outcome === Outcome.ntsTime) {
          check(result.cookiesIssued >= 1 && result.cookiesIssued <= 8, `${result.cookiesIssued} cookies issued`);
          check(verifiesUnderSomeSession(input, reply), 'NTS time reply does not authenticate under any session key');
        }
      }
      // The refusal path (rate limit leak share, access lists) on the same input: a KoD only for plain NTP.
      const reason = REFUSAL_REASONS[(input[46] ?? 0) % REFUSAL_REASONS.length] ?? 'ignored';
      const refused = respondRefused(input, { seconds: 0xe9a1_b2c3, fraction: 1 }, reason, ctx === strict ? STRICT_REFUSAL : OPEN_REFUSAL, out, refusedResult);
      check(refused.length <= input.length && (refused.length === 0 || refused.length === 48), `refusal of ${refused.length} octets to ${input.length}`);
      if (refused.length > 0) {
        const kod = out.subarray(0, 48);
        check(reason !== 'ignored' && !ctx.requireNts, `a KoD for reason ${reason} (require-nts ${String(ctx.requireNts)})`);
        check(input.length === 48, 'a KoD answers a request with extension fields (an NTS client could be silenced by a forgery)');
        check(((kod[0] ?? 0) & 7) === 4 && kod[1] === 0, 'a KoD that is not mode 4 stratum 0');
        check(readU32(kod, 12) === (reason === 'rateLimited' ? KISS_RATE : KISS_DENY), 'a KoD with the wrong kiss code');
        check(refused.outcome === (reason === 'rateLimited' ? Outcome.kodRate : Outcome.kodDeny), `KoD with outcome ${refused.outcome}`);
        for (let i = 0; i < 8; i++) check(kod[24 + i] === input[40 + i], 'KoD origin timestamp is not the request transmit timestamp');
      } else {
        check(refused.outcome === (reason === 'rateLimited' ? Outcome.dropRateLimited : Outcome.dropAccess), `refusal drop with outcome ${refused.outcome}`);
      }
      return `${outcome}:${result.keyAge}:${result.cookiesIssued}:${ctx === strict ? 's' : 'o'}:r${refused.outcome}`;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// NTS-KE

const KE_MAX_REQUEST_BYTES = 4096;
const POOL_TOKEN = 'fuzz-pool-token';
const KE_POLICY: KePolicy = { aeadIds: [15, 16, 17, 30], ntpPort: 4123, ntpServer: 'ntp.example.net', cookieCount: 8, poolAuthenticationTokens: [POOL_TOKEN] };
/** The three connection states a request can arrive on (chosen by the request length). */
const CONNECTIONS: readonly KePoolConnection[] = [
  { kept: false, keepAliveAvailable: false },
  { kept: false, keepAliveAvailable: true },
  { kept: true, keepAliveAvailable: true },
];
const ERROR_CODE_OF: Readonly<Record<string, number>> = { bad_request: 1, unrecognized_critical: 0, internal_error: 2 };

/** NTS-KE record header offsets (type at o, length at o + 2). */
function keOffsets(input: Uint8Array): number[] {
  const out: number[] = [];
  let o = 0;
  while (o + 4 <= input.length && out.length < 64) {
    out.push(o, o + 2);
    o += 4 + readU16(input, o + 2);
  }
  return out;
}

/** Scans `input` delivered in chunks (sizes from a small generator seeded by the length), resuming like the session. */
function scanInChunks(input: Uint8Array): ReturnType<typeof scanKeMessage> {
  let state = (input.length * 2_654_435_761) >>> 0;
  let end = 0;
  let resume = 0;
  for (;;) {
    state = (Math.imul(state, 1_103_515_245) + 12_345) >>> 0;
    end = Math.min(input.length, end + 1 + (state % 97));
    const scan = scanKeMessage(input.subarray(0, end), { fromOffset: resume, maxLength: KE_MAX_REQUEST_BYTES });
    if (scan.status !== 'incomplete') return scan;
    resume = scan.resumeOffset;
    if (end >= input.length) return scan;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The NTS-KE target: session framing, request validation and the handler with a real keyset. */
export function keTarget(): FuzzTarget {
  const keyset = rotateKeyset(createKeyset(T0_S, fill, { staleKeyCount: 2 }), T0_S + 60, fill);
  const exportKeys: ExportKeys = (c2sContext, s2cContext, keyLength) => ({
    c2s: new Uint8Array(keyLength).fill(0x10 ^ (c2sContext[4] ?? 0)),
    s2c: new Uint8Array(keyLength).fill(0x20 ^ (s2cContext[4] ?? 0)),
  });
  const offers: readonly (readonly number[])[] = [[15], [16], [17], [30], [30, 15], [17, 16, 15, 30], [99, 15], [1, 2, 30]];
  const seeds: Uint8Array[] = offers.map((ids) => encodeKeMessage(buildKeRequestRecords(ids)));
  const extra: KeRecord[][] = [
    [
      { kind: 'nextProtocol', critical: true, protocolIds: [1, 0] },
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
      { kind: 'warning', critical: false, code: 7 },
      { kind: 'unknown', critical: false, type: 0x1234, body: new Uint8Array([1, 2, 3]) },
      { kind: 'ntpv4Server', critical: false, server: 'pool.example' },
      { kind: 'ntpv4Port', critical: false, port: 123 },
      { kind: 'endOfMessage', critical: true },
    ],
    [
      { kind: 'nextProtocol', critical: true, protocolIds: [5] },
      { kind: 'endOfMessage', critical: true },
    ],
    [
      { kind: 'nextProtocol', critical: true, protocolIds: [0] },
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [99] },
      { kind: 'endOfMessage', critical: true },
    ],
  ];
  // Pool front-end requests (support and fixed key, draft-ietf-ntp-nts-keyexchange-pool), with the right token and a wrong one.
  const token = (t: string): KeRecord => ({ kind: 'authenticationToken', critical: false, token: new TextEncoder().encode(t) });
  const keepAlive: KeRecord = { kind: 'keepAlive', critical: false };
  const eom: KeRecord = { kind: 'endOfMessage', critical: true };
  const fixedKey = (keyLength: number): KeRecord => ({ kind: 'fixedKeyRequest', critical: true, keys: randomFillSync(new Uint8Array(2 * keyLength)) });
  extra.push(
    [token(POOL_TOKEN), { kind: 'supportedAlgorithmList', critical: true, algorithms: [] }, { kind: 'supportedNextProtocolList', critical: true, protocolIds: [] }, keepAlive, eom],
    [token(POOL_TOKEN), fixedKey(32), { kind: 'nextProtocol', critical: true, protocolIds: [0] }, { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] }, keepAlive, eom],
    [token(POOL_TOKEN), fixedKey(64), { kind: 'nextProtocol', critical: true, protocolIds: [0] }, { kind: 'aeadAlgorithm', critical: true, aeadIds: [17] }, eom],
    [token('fuzz-pool-tokem'), fixedKey(32), { kind: 'nextProtocol', critical: true, protocolIds: [0] }, { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] }, eom],
  );
  for (const records of extra) seeds.push(encodeKeMessage(records));

  return {
    name: 'ke',
    seeds,
    maxLength: 70_000,
    fieldOffsets: keOffsets,
    run(input) {
      // Decoding on its own: a message that decodes re-encodes to the same octets.
      const decoded = decodeKeMessage(input);
      if (decoded.ok) check(sameBytes(encodeKeMessage(decoded.records), input), 'decoded message does not re-encode to its octets');

      // Framing as the session does it, at once and in chunks.
      const view = input.length > KE_MAX_REQUEST_BYTES ? input.subarray(0, KE_MAX_REQUEST_BYTES) : input;
      const scan = scanKeMessage(view, { fromOffset: 0, maxLength: KE_MAX_REQUEST_BYTES });
      const chunked = scanInChunks(view);
      check(
        scan.status === chunked.status && (scan.status !== 'complete' || (chunked.status === 'complete' && chunked.length === scan.length)),
        `scan at once (${JSON.stringify(scan)}) and in chunks (${JSON.stringify(chunked)}) disagree`,
      );
      if (scan.status !== 'complete') return `frame:${scan.status}`;
      check(scan.length <= view.length && scan.length >= 4, `complete at ${scan.length} of ${view.length}`);
      const request = view.subarray(0, scan.length);

      const connection = CONNECTIONS[request.length % CONNECTIONS.length] ?? CONNECTIONS[0];
      if (connection === undefined) throw new Error('no connection state');
      const result = handleKeRequest(request, exportKeys, keyset, KE_POLICY, fill, connection);
      check(result.outcome !== 'internal_error', `internal_error: ${String(result.internalError)}`);
      const answer = decodeKeMessage(result.response);
      check(answer.ok, `the response does not decode (${answer.ok ? '' : answer.error})`);
      const records = answer.records;
      const keepAliveRecords = records.filter((r) => r.kind === 'keepAlive').length;
      check(keepAliveRecords === (result.keepAlive ? 1 : 0), `keepAlive ${String(result.keepAlive)} with ${keepAliveRecords} Keep Alive records`);
      check(!result.keepAlive || connection.keepAliveAvailable, 'Keep Alive granted on a connection that cannot be kept');
      check(!(connection.kept && result.requestKind === 'ordinary' && result.outcome !== 'bad_request' && result.outcome !== 'unrecognized_critical'), `an ordinary request on a kept connection got ${result.outcome}`);
      const errors = records.filter((r) => r.kind === 'error');
      const code = ERROR_CODE_OF[result.outcome];
      if (code !== undefined) {
        check(records.length === 2 && errors.length === 1, `outcome ${result.outcome} with ${records.length} records, ${errors.length} Error records`);
        const e = errors[0];
        check(e !== undefined && e.kind === 'error' && e.code === code, `outcome ${result.outcome} with Error code ${JSON.stringify(e)}`);
        check(result.cookiesIssued === 0, 'cookies issued with an Error response');
        return `ke:${result.outcome}:${result.defect ?? ''}`;
      }
      check(errors.length === 0, `outcome ${result.outcome} carries an Error record`);
      const validation = validateKeRequest(request);
      check(validation.ok, `outcome ${result.outcome} for a request that does not validate`);
      if (result.outcome === 'success' && result.requestKind === 'support') {
        check(result.cookiesIssued === 0 && !records.some((r) => r.kind === 'newCookie'), 'cookies in a support response');
        check(records.some((r) => r.kind === 'supportedAlgorithmList' || r.kind === 'supportedNextProtocolList'), 'a support response without a supported list');
        return `ke:success:support:${result.keepAlive ? 'k' : ''}`;
      }
      if (result.outcome === 'success' && result.requestKind === 'fixed_key') {
        const cookies = records.flatMap((r) => (r.kind === 'newCookie' ? [r.cookie] : []));
        check(cookies.length === 8 && result.cookiesIssued === 8, `${cookies.length} cookies for a fixed key request`);
        const opened = openCookie(keyset, cookies[0] ?? new Uint8Array(0));
        check(opened.ok && opened.aeadId === result.aeadId, 'a fixed key cookie does not open under the keyset');
        return `ke:success:fixed_key:${result.aeadId ?? 0}:${result.keepAlive ? 'k' : ''}`;
      }
      if (result.outcome === 'success') {
        const checked = checkKeResponse(records, validation.request.aeadIds ?? []);
        check(checked.ok, `success response refused by the client: ${checked.ok ? '' : checked.problem.message}`);
        check(checked.content.aeadId === result.aeadId, 'client and server disagree on the AEAD');
        check(checked.content.cookies.length === 8 && result.cookiesIssued === 8, `${checked.content.cookies.length} cookies`);
        check(checked.content.ntpPort === 4123 && checked.content.ntpServer === 'ntp.example.net', 'port or server record wrong');
        return `ke:success:${result.aeadId ?? 0}:${checked.content.compliantGcmSivExporter ? 'c' : ''}`;
      }
      // Keep Alive (checked above) may sit before End of Message on a front end's connection.
      const shape = records.filter((r) => r.kind !== 'keepAlive');
      if (result.outcome === 'no_common_protocol') {
        const first = shape[0];
        check(shape.length === 2 && first?.kind === 'nextProtocol' && first.protocolIds.length === 0, 'no_common_protocol response shape');
      } else {
        check(result.outcome === 'no_common_aead', `unknown outcome ${String(result.outcome)}`);
        const second = shape[1];
        check(shape.length === 3 && second?.kind === 'aeadAlgorithm' && second.aeadIds.length === 0, 'no_common_aead response shape');
      }
      return `ke:${result.outcome}`;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// keyset decoding

/** The key file decoder target. */
export function keysetTarget(): FuzzTarget {
  const seeds: Uint8Array[] = [];
  for (const stale of [0, 1, 2, 5]) {
    let ks = createKeyset(T0_S, fill, { staleKeyCount: stale });
    seeds.push(encodeKeyset(ks));
    for (let i = 1; i <= stale + 1; i++) ks = rotateKeyset(ks, T0_S + i * 60, fill);
    seeds.push(encodeKeyset(ks));
  }
  return {
    name: 'keyset',
    seeds,
    maxLength: 70_000,
    fieldOffsets(input) {
      const out = [8, 10, 12, 14, 16, 18, 20, 22];
      for (let at = KEYSET_HEADER_LENGTH; at + KEYSET_RECORD_LENGTH <= input.length && out.length < 64; at += KEYSET_RECORD_LENGTH) {
        out.push(at, at + 2, at + 4, at + 10, at + 12, at + 14);
      }
      return out;
    },
    fixup(rng, input) {
      // Half of the time, recompute the CRC-32 so the edit is judged by the fields, not the checksum.
      if (!rng.chance(0.5) || input.length < KEYSET_HEADER_LENGTH + KEYSET_CHECKSUM_LENGTH) return input;
      const out = input.slice();
      const bodyEnd = out.length - KEYSET_CHECKSUM_LENGTH;
      writeU32(out, bodyEnd, crc32(out.subarray(0, bodyEnd)));
      return out;
    },
    run(input) {
      const decoded = decodeKeyset(input);
      if (!decoded.ok) return `keyset:${decoded.error}`;
      const ks = decoded.keyset;
      check(sameBytes(encodeKeyset(ks), input), 'a decoded keyset does not re-encode to the same octets');
      const keys = keysetKeys(ks);
      check(keys.length >= 2 && keys.length - 2 <= ks.staleKeyCount, `${keys.length} keys with stale-key-count ${ks.staleKeyCount}`);
      for (const k of keys) check(ks.find(k.id)?.key === k, `key ${k.id} is not found by its id`);
      return `keyset:ok:${Math.min(keys.length, 9)}`;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// configuration

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });
const VALUE_EDITS: readonly string[] = [
  '-1', '0', '1', '1e400', '9007199254740993', '1.5', '0x10', 'nan', 'inf', '-inf', 'true', '[]', '[1, 2]', '[15, 99]', '{}',
  '""', '"x"', '"127.0.0.1:0"', '"[::1]:123"', '"::"', '"0.0.0.0:99999"', '"a\\u0000b"', '"ratchet"', '"follow"', '"local"',
  '"10.0.0.0/8"', '"::/0"', '"/"', `"${'a'.repeat(300)}"`, '1979-05-27T07:32:00Z', "'''\nx'''",
];
const HEADER_EDITS: readonly string[] = ['[[server]]', '[[nts-ke-server]]', '[keyset]', '[observability]', '[worker-pool]', '[time-source]', '[unknown]', '[[server.access]]', '[server]'];

/** The repository's example configurations (every deploy/*.toml) and the embedded development one. */
function configSeeds(): Uint8Array[] {
  const texts = [DEFAULT_CONFIG_TOML];
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const deploy = join(dir, 'deploy');
    if (existsSync(join(deploy, 'ntsd.toml'))) {
      for (const name of readdirSync(deploy).filter((n) => n.endsWith('.toml')).sort()) texts.push(readFileSync(join(deploy, name), 'utf8'));
      break;
    }
    dir = dirname(dir);
  }
  texts.push('[[server]]\nlisten = "127.0.0.1:123"\n\n[keyset]\nmode = "ratchet"\nshared-secret-path = "seed"\nkey-rotation-interval-s = 60\n');
  return texts.map((t) => encoder.encode(t));
}

function lineEdit(rng: Rng, text: string): string {
  const lines = text.split('\n');
  const i = rng.below(lines.length);
  const line = lines[i] ?? '';
  switch (rng.below(7)) {
    case 0: {
      // Uncomment an example setting (deploy/ntsd.toml documents most keys as comments).
      const commented = lines.map((l, k) => (/^#\s*[a-z-]+\s*=/.test(l) ? k : -1)).filter((k) => k >= 0);
      const k = commented.length > 0 ? (commented[rng.below(commented.length)] ?? i) : i;
      lines[k] = (lines[k] ?? '').replace(/^#\s*/, '');
      break;
    }
    case 1: {
      const eq = line.indexOf('=');
      if (eq > 0) lines[i] = `${line.slice(0, eq + 1)} ${rng.pick(VALUE_EDITS)}`;
      else lines[i] = `${line}\nkey-${rng.below(9)} = ${rng.pick(VALUE_EDITS)}`;
      break;
    }
    case 2:
      lines.splice(i, 1);
      break;
    case 3:
      lines.splice(i, 0, line);
      break;
    case 4: {
      const j = rng.below(lines.length);
      lines[i] = lines[j] ?? '';
      lines[j] = line;
      break;
    }
    case 5:
      lines.splice(i, 0, rng.pick(HEADER_EDITS));
      break;
    default: {
      const eq = line.indexOf('=');
      if (eq > 0) lines[i] = `${line.slice(0, eq).trim()}x = ${line.slice(eq + 1)}`;
      break;
    }
  }
  return lines.join('\n');
}

/** One line of "key.path: message" or "(toml) …"; the key path is what an operator greps the file for. */
const PROBLEM_SHAPE = /^(\(toml\) |[^\s:][^\n]*?: )[^\n]+$/;

/** The configuration parser target. */
export function configTarget(): FuzzTarget {
  return {
    name: 'config',
    seeds: configSeeds(),
    maxLength: 64 * 1024,
    fieldOffsets: () => [],
    customMutate(rng, input) {
      let text = decoder.decode(input);
      const edits = rng.int(1, 3);
      for (let i = 0; i < edits; i++) text = lineEdit(rng, text);
      return encoder.encode(text);
    },
    run(input) {
      const text = decoder.decode(input);
      const result = parseConfig(text, '/etc/ntsd', 2);
      if (input.length % 50 === 7) {
        check(JSON.stringify(parseConfig(text, '/etc/ntsd', 2)) === JSON.stringify(result), 'the same text parsed twice gives different answers');
      }
      if (result.ok) {
        const c = result.config;
        // A node serves NTP, NTS-KE, or is a pool's KE front end ([pool-ke]).
        check(c.servers.length + c.ntsKeServers.length >= 1 || c.poolKe !== undefined, 'a valid configuration with no listener');
        return `config:ok:${c.poolKe !== undefined ? 'pool-ke' : c.keyset.mode}`;
      }
      check(result.errors.length >= 1, 'invalid without a problem');
      for (const e of result.errors) check(typeof e === 'string' && PROBLEM_SHAPE.test(e), `problem not of the form "key: message": ${JSON.stringify(e)}`);
      const first = result.errors[0] ?? '';
      let key = first.startsWith('(toml)') ? '(toml)' : first.slice(0, first.indexOf(': ')).replace(/\[\d+\]/g, '[]');
      // Unknown keys differ only by name: one signature per table, so they do not flood the corpus.
      if (first.endsWith(': unknown key')) key = `${key.slice(0, Math.max(0, key.lastIndexOf('.')))}.<unknown>`;
      return `config:${key.slice(0, 60)}`;
    },
  };
}

/** Every target, by name. */
export function allTargets(): FuzzTarget[] {
  return [respondTarget(), keTarget(), keysetTarget(), configTarget()];
}
