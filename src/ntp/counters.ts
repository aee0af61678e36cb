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

/** The scalar counts an NTP thread keeps, reports, and the main thread adds up, by name. */
export const PACKET_COUNT_NAMES = [
  'sent',
  'sendErrors',
  'socketErrors',
  'truncated',
  'unstamped',
  'transmitStamps',
  'transmitCompensationSumS',
  'interleavedReplies',
  'txStampsCaptured',
  'txStampsMissing',
  'txStampsLate',
] as const;
/** One of PACKET_COUNT_NAMES. */
export type PacketCountName = (typeof PACKET_COUNT_NAMES)[number];
/** The scalar counts as plain data (in a thread's report and in the summed stats). */
export type PacketCountValues = { readonly [K in PacketCountName]: number };

/** The scalar counts, each documented once: a thread's since its last report, or the sum over all threads. */
export class PacketCounts {
  /** Replies handed to the kernel (KoDs included). */
  sent = 0;
  /** Send calls that failed. */
  sendErrors = 0;
  /** Socket errors (a failed receive, the socket's 'error' event). */
  socketErrors = 0;
  /** Datagrams longer than a native receive slot, dropped (`ntsd_ntp_dropped_total{reason="truncated"}`). */
  truncated = 0;
  /** Datagrams without a kernel receive timestamp (native backend; the clock was read on arrival instead). */
  unstamped = 0;
  /** Transmit timestamps taken (replies and NAKs). */
  transmitStamps = 0;
  /** Sum of the compensation added to those timestamps, seconds. */
  transmitCompensationSumS = 0;
  /** RFC 9769: replies sent in interleaved mode. */
  interleavedReplies = 0;
  /** Kernel TX stamps of replies saved for interleaving clients, stored in the table. */
  txStampsCaptured = 0;
  /** ... that never came (within a second, or before their pending slot was reused). */
  txStampsMissing = 0;
  /** ... that came after the client's next request had used (or the table had dropped) their entry. */
  txStampsLate = 0;

  /** Adds `other`'s counts to these. */
  addCounts(other: PacketCountValues): void {
    for (const name of PACKET_COUNT_NAMES) this[name] += other[name];
  }

  /** The counts as plain data. */
  countValues(): PacketCountValues {
    return Object.fromEntries(PACKET_COUNT_NAMES.map((name) => [name, this[name]])) as PacketCountValues;
  }

  /** Whether any count is not zero. */
  anyCount(): boolean {
    return PACKET_COUNT_NAMES.some((name) => this[name] !== 0);
  }

  /** Zeroes every count. */
  resetCounts(): void {
    for (const name of PACKET_COUNT_NAMES) this[name] = 0;
  }
}

/** Counters of one thread since its last report, plus the first error message of each kind. */
export class ThreadCounters extends PacketCounts {
  received = 0;
  /** Deltas in the Tally layout. */
  readonly tally = new Float64Array(TALLY_WORDS);
  readonly #bounds: readonly number[] | undefined;
  readonly #durationCounts: Float64Array;
  #durationSumS = 0;
  readonly #firstErrors = new Map<ThreadEventKind, string>();

  constructor(durationBucketsS: readonly number[] | undefined) {
    super();
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
    const changed = this.received > 0 || this.anyCount() || this.tally.some((v) => v !== 0);
    if (!changed) return { report: undefined, errors };
    const report: ThreadReport = {
      ...this.countValues(),
      tally: Array.from(this.tally),
      received: this.received,
      durationCounts: Array.from(this.#durationCounts),
      durationSumS: this.#durationSumS,
    };
    this.received = 0;
    this.resetCounts();
    this.tally.fill(0);
    this.#durationCounts.fill(0);
    this.#durationSumS = 0;
    return { report, errors };
  }
}
