/**
 * What an NTP thread counts, and the layout its outcome tally travels in: the thread adds up its
 * packets here (ThreadCounters), reports the deltas every report interval (ntp/messages.ts ThreadReport),
 * and the main thread (ntp/threads.ts) sums the reports for the metrics.
 */
import { OUTCOME_COUNT } from '../core/responder.js';
import type { ThreadEventKind, ThreadReport } from './messages.js';

/** Highest key generation counted on its own (older ones share the last bucket). */
export const KEY_AGE_MAX_TRACKED = 15;
/** Tally layout: offsets into a thread's tally array. */
export const Tally = {
  /** OUTCOME_COUNT counters: one per responder Outcome value. */
  outcomes: 0,
  /** Key-age buckets: [next (-1), 0, 1, …, KEY_AGE_MAX_TRACKED, older]. */
  keyAges: OUTCOME_COUNT,
  /** Cookies placed in replies (`ntsd_nts_cookies_issued_total{via="ntp"}`). */
  cookiesIssued: OUTCOME_COUNT + KEY_AGE_MAX_TRACKED + 3,
  /** respond() threw (a bug): the packet was dropped. */
  respondErrors: OUTCOME_COUNT + KEY_AGE_MAX_TRACKED + 4,
} as const;
/** Number of key-age buckets in a tally. */
export const KEY_AGE_BUCKETS = KEY_AGE_MAX_TRACKED + 3;
/** Number of counters in a tally. */
export const TALLY_WORDS = Tally.respondErrors + 1;

/** Bucket index for a key age (-1 = next, 0 = current, 1..n = stale generations). */
export function keyAgeBucket(age: number): number {
  if (age < 0) return 0;
  return age > KEY_AGE_MAX_TRACKED ? KEY_AGE_MAX_TRACKED + 2 : age + 1;
}

/** Counters of one thread since its last report, plus the first error message of each kind. */
export class ThreadCounters {
  received = 0;
  sent = 0;
  sendErrors = 0;
  socketErrors = 0;
  truncated = 0;
  unstamped = 0;
  transmitStamps = 0;
  transmitCompensationSumS = 0;
  interleavedReplies = 0;
  txStampsCaptured = 0;
  txStampsMissing = 0;
  txStampsLate = 0;
  /** Deltas in the Tally layout. */
  readonly tally = new Float64Array(TALLY_WORDS);
  readonly #bounds: readonly number[] | undefined;
  readonly #durationCounts: Float64Array;
  #durationSumS = 0;
  readonly #firstErrors = new Map<ThreadEventKind, string>();

  constructor(durationBucketsS: readonly number[] | undefined) {
    this.#bounds = durationBucketsS;
    this.#durationCounts = new Float64Array(durationBucketsS === undefined ? 0 : durationBucketsS.length + 1);
  }

  /** Whether receive-to-send durations are wanted. */
  get measuresDurations(): boolean {
    return this.#bounds !== undefined;
  }

  /** Counts one receive-to-send duration, seconds. */
  observeDurationS(durationS: number): void {
    const bounds = this.#bounds;
    if (bounds === undefined) return;
    let i = 0;
    while (i < bounds.length && durationS > (bounds[i] ?? Infinity)) i++;
    this.#durationCounts[i] = (this.#durationCounts[i] ?? 0) + 1;
    this.#durationSumS += durationS;
  }

  /** Remembers the first message of an error kind in this interval. */
  noteError(kind: ThreadEventKind, message: string): void {
    if (!this.#firstErrors.has(kind)) this.#firstErrors.set(kind, message);
  }

  /** The report since the last call (undefined when nothing changed), and the interval's error messages; resets. */
  take(): { report: ThreadReport | undefined; errors: [ThreadEventKind, string][] } {
    const errors = [...this.#firstErrors];
    this.#firstErrors.clear();
    const changed =
      this.received > 0 || this.sent > 0 || this.sendErrors > 0 || this.socketErrors > 0 || this.truncated > 0 ||
      this.unstamped > 0 || this.transmitStamps > 0 || this.tally.some((v) => v !== 0) ||
      this.txStampsCaptured > 0 || this.txStampsMissing > 0 || this.txStampsLate > 0;
    if (!changed) return { report: undefined, errors };
    const report: ThreadReport = {
      tally: Array.from(this.tally),
      received: this.received,
      sent: this.sent,
      sendErrors: this.sendErrors,
      socketErrors: this.socketErrors,
      truncated: this.truncated,
      unstamped: this.unstamped,
      durationCounts: Array.from(this.#durationCounts),
      durationSumS: this.#durationSumS,
      transmitStamps: this.transmitStamps,
      transmitCompensationSumS: this.transmitCompensationSumS,
      interleavedReplies: this.interleavedReplies,
      txStampsCaptured: this.txStampsCaptured,
      txStampsMissing: this.txStampsMissing,
      txStampsLate: this.txStampsLate,
    };
    this.received = this.sent = this.sendErrors = this.socketErrors = this.truncated = this.unstamped = 0;
    this.transmitStamps = this.transmitCompensationSumS = 0;
    this.interleavedReplies = this.txStampsCaptured = this.txStampsMissing = this.txStampsLate = 0;
    this.tally.fill(0);
    this.#durationCounts.fill(0);
    this.#durationSumS = 0;
    return { report, errors };
  }
}
