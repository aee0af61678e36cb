/**
 * The one entry every NTP socket backend calls per datagram: admission first (the `[[server]]` access list,
 * then the per-client rate limit: core/admission.ts), then either `respond()` or `respondRefused()`
 * (core/responder.ts). No shell orders these steps itself, so the native and the dgram backends cannot
 * drift apart (chrony's `NCR_ProcessRxUnknown`, ntpd-rs's `Server::handle`).
 *
 * Pure and allocation-free: the caller owns a ServeState per thread (responder context, policies, reused
 * results) and passes the peer in core/ip.ts words, the time for the limiter and the output buffer.
 * RFC 9769 interleaved mode runs inside respond(), after admission, for policies that have a table: the
 * peer and the time are handed on for it (a refused request never touches the table).
 */
import { admit, type Admission } from './admission.js';
import { InterleaveTable } from './interleave.js';
import type { IpFamily } from './ip.js';
import type { NtpTimestamp } from './ntp/timestamp.js';
import {
  resetResult,
  Outcome,
  respond,
  respondRefused,
  type InterleaveClient,
  type RefusedResult,
  type RespondResult,
  type ResponderContext,
} from './responder.js';

/** Per-listener responder policy (`[[server]] require-nts`, `accept-ntp-versions`). */
export interface ResponderPolicy {
  /** Drop plain NTP requests. */
  readonly requireNts: boolean;
  /** NTP versions answered. */
  readonly acceptNtpVersions: readonly number[];
}

/** A thread's serve() state: its responder context, the policies and checks per `[[server]]`, reused scratch. */
export interface ServeState {
  readonly ctx: ResponderContext;
  /** Indexed by a listener's policy index; index 0 is the fallback. */
  readonly policies: readonly ResponderPolicy[];
  /** Checks per policy index (replaced on SIGHUP); a missing entry admits everything. */
  admissions: readonly Admission[];
  readonly refused: RefusedResult;
  readonly limiterScratch: Uint32Array;
  /** The refusal policy handed to respondRefused, refreshed when the policy changes. */
  readonly refusal: { requireNts: boolean; acceptNtpVersions: readonly number[]; precision: number };
  /** The policy index ctx is set up for (-1 = none yet). */
  current: number;
  /** RFC 9769 interleaved mode per policy index (undefined = basic mode only), reused per request. */
  readonly interleave: readonly (InterleaveClient | undefined)[];
}

/**
 * Creates the state of one thread; throws RangeError without a policy. `interleaveTables` holds, per policy
 * index, the shared buffer of that `[[server]]`'s interleave table (core/interleave.ts), or undefined for
 * basic mode only (the default).
 */
export function createServeState(
  ctx: ResponderContext,
  policies: readonly ResponderPolicy[],
  admissions: readonly Admission[],
  interleaveTables: readonly (SharedArrayBuffer | undefined)[] = [],
): ServeState {
  const first = policies[0];
  if (first === undefined) throw new RangeError('serve: at least one responder policy is required');
  return {
    ctx,
    policies,
    admissions,
    refused: { outcome: Outcome.dropAccess, length: 0 },
    limiterScratch: new Uint32Array(4),
    refusal: { requireNts: first.requireNts, acceptNtpVersions: first.acceptNtpVersions, precision: 0 },
    current: -1,
    interleave: policies.map((_, i) => {
      const buffer = interleaveTables[i];
      return buffer === undefined ? undefined : { table: InterleaveTable.attach(buffer), peer: new Uint32Array(4), nowMs: 0 };
    }),
  };
}

/**
 * Answers one datagram received on a listener with policy `policyIndex` from `peer` (core/ip.ts words,
 * left untouched; family 0 = unknown, admitted). `nowMs` is the limiter's clock. The reply goes to
 * out[0, result.length); `out` must be at least as long as `request`, so a reply never outgrows it.
 * The result is the context's reused RespondResult (valid until the next call).
 */
export function serve(
  state: ServeState,
  policyIndex: number,
  request: Uint8Array,
  receiveTime: NtpTimestamp,
  peer: Uint32Array,
  family: IpFamily | 0,
  nowMs: number,
  out: Uint8Array,
): RespondResult {
  const ctx = state.ctx;
  if (policyIndex !== state.current) {
    const p = state.policies[policyIndex] ?? state.policies[0];
    if (p !== undefined) {
      ctx.requireNts = state.refusal.requireNts = p.requireNts;
      ctx.acceptNtpVersions = state.refusal.acceptNtpVersions = p.acceptNtpVersions;
    }
    state.current = policyIndex;
  }
  const admission = state.admissions[policyIndex];
  if (family !== 0 && admission !== undefined && (admission.access !== undefined || admission.limiter !== undefined)) {
    const decision = admit(admission, peer, family, nowMs, state.limiterScratch);
    if (decision !== 'admit') {
      const r = resetResult(ctx.scratch.result);
      if (decision === 'limit') {
        r.outcome = Outcome.dropRateLimited;
        r.length = 0;
        return r;
      }
      state.refusal.precision = ctx.serverFields.precision;
      const refused = respondRefused(request, receiveTime, decision, state.refusal, out, state.refused);
      r.outcome = refused.outcome;
      r.length = refused.length;
      return r;
    }
  }
  // Interleaved mode needs to know who asks; a peer of unknown family gets basic mode.
  const client = family === 0 ? undefined : state.interleave[policyIndex];
  if (client !== undefined) {
    client.peer = peer; // read during this call only
    client.nowMs = nowMs;
  }
  return respond(request, receiveTime, ctx, out, client);
}
