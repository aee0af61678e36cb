/**
 * What both socket backends of an NTP thread do per datagram, in one place: plan the transmit-timestamp
 * compensation (ntp/transmit-estimate.ts), call core/serve.ts serve(), count the outcome in the tally,
 * turn a responder exception into a counted drop, and feed the estimator what the packet cost.
 * The backends (socket-native.ts, socket-dgram.ts) only move bytes and read their clocks.
 *
 * Nothing is allocated per packet: the responder context, its `now` closure and the results are made
 * once per thread.
 */
import { performance } from 'node:perf_hooks';
import { randomFillSync } from 'node:crypto';
import type { NtpTime } from '../runtime/clock.js';
import { createAdmissions, type AdmissionSpec } from '../core/admission.js';
import { ClientLog } from '../core/client-log.js';
import type { IpFamily } from '../core/ip.js';
import { decodeKeyset } from '../core/nts/keyset.js';
import { KEY_AGE_NONE, createPooledFillRandom, createResponderContext, type RespondResult, type ServerFields } from '../core/responder.js';
import { createServeState, serve, type ServeState } from '../core/serve.js';
import { Tally, keyAgeBucket, type ThreadCounters } from './counters.js';
import { CostEwma, MAX_PACKET_COST_SAMPLE_S, TransmitEstimator, requestSizeClass } from './transmit-estimate.js';
import { errorMessage, type ThreadInit } from './messages.js';

const TWO_POW_32 = 4_294_967_296;

/** Writes the uncompensated transmit clock (T3) into `out`; the responder adds the compensation. */
export type TransmitClock = (out: NtpTime) => void;

/** One thread's answering state: serve() state, estimator, and the counters it writes. */
export class ThreadResponder {
  /** Per-size-class respond and seal costs. */
  readonly estimator = new TransmitEstimator();
  /** Cost of one send, seconds (a sendmsg, a dgram send(), or a sendmmsg's share per reply). */
  readonly sendCost = new CostEwma(MAX_PACKET_COST_SAMPLE_S);
  /** performance.now() right after the current packet's T3 read; -1 until it is read. */
  stampedAtMs = -1;
  /** performance.now() where the next packet's cost starts (set by the backend on wake-up, advanced here). */
  markMs = 0;
  /**
   * RFC 9769: after answer(), whether the reply should leave with a kernel TX stamp request, and the
   * key (the reply's receive timestamp) to store that stamp under (InterleaveTable.setTransmit).
   */
  transmitStampWanted = false;
  readonly stampKey: NtpTime = { seconds: 0, fraction: 0 };
  readonly #state: ServeState;
  readonly #counters: ThreadCounters;
  readonly #policies: number;
  /** The shared per-client log (`[observability] client-log-size`), undefined when off. */
  readonly #clientLog: ClientLog | undefined;
  #compensationS = 0;

  private constructor(state: ServeState, counters: ThreadCounters, policies: number, clientLog: ClientLog | undefined) {
    this.#state = state;
    this.#counters = counters;
    this.#policies = policies;
    this.#clientLog = clientLog;
  }

  /** Builds the responder of a thread, or returns why it cannot (the keyset does not decode, no policy). */
  static create(init: ThreadInit, counters: ThreadCounters, readClock: TransmitClock): ThreadResponder | string {
    const decoded = decodeKeyset(init.keysetBytes);
    if (!decoded.ok) return `keyset: ${decoded.error}`;
    const first = init.policies[0];
    if (first === undefined) return 'no responder policy';
    const transmit: NtpTime = { seconds: 0, fraction: 0 };
    let self: ThreadResponder | undefined;
    const ctx = createResponderContext({
      keyset: decoded.keyset,
      serverFields: init.serverFields,
      // T3: the raw clock, then the planned compensation added in NTP fraction units (≤ 2 ms: one carry at most).
      now: () => {
        readClock(transmit);
        if (self === undefined) return transmit;
        self.stampedAtMs = performance.now();
        const fraction = transmit.fraction + Math.floor(self.#compensationS * TWO_POW_32);
        if (fraction >= TWO_POW_32) {
          transmit.fraction = fraction - TWO_POW_32;
          transmit.seconds = (transmit.seconds + 1) >>> 0;
        } else {
          transmit.fraction = fraction;
        }
        return transmit;
      },
      // One randomFillSync per 4 KiB instead of one per cookie and nonce.
      fillRandom: createPooledFillRandom((b) => randomFillSync(b)),
      requireNts: first.requireNts,
      acceptNtpVersions: first.acceptNtpVersions,
    });
    const state = createServeState(ctx, init.policies, createAdmissions(init.admissions, init.policies.length), init.interleaveTables);
    self = new ThreadResponder(state, counters, init.policies.length, init.clientLog === undefined ? undefined : ClientLog.attach(init.clientLog));
    return self;
  }

  /**
   * Answers one datagram into `out` (at least as long as the request) and returns the reply length
   * (0 = none). `batched`: the reply leaves with a batch planned by estimator.beginBatch/addToBatch;
   * otherwise it is sent at once and the backend calls sent() right after.
   */
  answer(policy: number, request: Uint8Array, receiveTime: NtpTime, peer: Uint32Array, family: IpFamily | 0, nowMs: number, out: Uint8Array, batched: boolean): number {
    const length = request.length;
    const sizeClass = requestSizeClass(length);
    const plannedS = batched ? this.estimator.next(sizeClass) : this.estimator.lone(sizeClass, this.sendCost.valueS);
    this.#compensationS = plannedS;
    this.stampedAtMs = -1;
    this.transmitStampWanted = false;
    const counters = this.#counters;
    const tally = counters.tally;
    let replyLength = 0;
    try {
      const r = serve(this.#state, policy, request, receiveTime, peer, family, nowMs, out);
      tally[Tally.outcomes + r.outcome] = (tally[Tally.outcomes + r.outcome] ?? 0) + 1;
      if (r.keyAge !== KEY_AGE_NONE) {
        const b = Tally.keyAges + keyAgeBucket(r.keyAge);
        tally[b] = (tally[b] ?? 0) + 1;
      }
      tally[Tally.cookiesIssued] = (tally[Tally.cookiesIssued] ?? 0) + r.cookiesIssued;
      this.#clientLog?.noteNtp(peer, family, r.outcome, length, nowMs);
      if (r.length > 0 && r.length <= length) {
        replyLength = r.length;
        this.#noteInterleave(r);
      }
    } catch (error) {
      // A bug in the responder must not let one crafted packet kill the thread over and over.
      tally[Tally.respondErrors] = (tally[Tally.respondErrors] ?? 0) + 1;
      counters.noteError('respondError', errorMessage(error));
    }
    const doneMs = performance.now();
    const stamped = this.stampedAtMs >= 0;
    // The whole packet's cost (the rest-of-batch term) and, when stamped, the part after the T3 read.
    this.estimator.observe(sizeClass, (doneMs - this.markMs) / 1000, stamped ? (doneMs - this.stampedAtMs) / 1000 : -1);
    this.markMs = doneMs;
    if (replyLength > 0 && stamped) {
      counters.transmitStamps++;
      counters.transmitCompensationSumS += plannedS;
    }
    return replyLength;
  }

  #noteInterleave(r: RespondResult): void {
    if (r.interleaved) this.#counters.interleavedReplies++;
    if (!r.transmitStampWanted) return;
    this.transmitStampWanted = true;
    this.stampKey.seconds = r.stampKey.seconds;
    this.stampKey.fraction = r.stampKey.fraction;
  }

  /** Call right after a lone reply's send: measures the send; returns performance.now(). */
  sent(): number {
    const nowMs = performance.now();
    this.sendCost.observe((nowMs - this.markMs) / 1000);
    this.markMs = nowMs;
    return nowMs;
  }

  /** Installs a keyset; returns the reason when it does not decode. */
  setKeyset(bytes: Uint8Array): string | undefined {
    const next = decodeKeyset(bytes);
    if (!next.ok) return next.error;
    this.#state.ctx.keyset = next.keyset;
    return undefined;
  }

  /** Installs new server fields for the following replies. */
  setServerFields(fields: ServerFields): void {
    this.#state.ctx.serverFields = fields;
  }

  /** Installs new access lists / limiter tables (SIGHUP), indexed by policy. */
  setAdmissions(specs: readonly AdmissionSpec[]): void {
    this.#state.admissions = createAdmissions(specs, this.#policies);
  }
}
