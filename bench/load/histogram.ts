/**
 * A fixed-size log-bucketed histogram of non-negative values in microseconds (delays, |offsets|).
 * Buckets grow by 1 % from 0.01 µs up to about 100 s, so any quantile is within ±0.5 % of the true
 * value; recording is one Math.log and one array increment, with no allocation. Worker threads post
 * their `counts` array; the main thread merges them.
 */

/** Smallest value with a bucket of its own, µs; smaller values (zero included) share bucket 0. */
const MIN_US = 0.01;
/** Relative width of one bucket. */
const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
/** Enough buckets for MIN_US · GROWTH^n ≥ 1e8 µs (100 s); larger values land in the last bucket. */
export const HISTOGRAM_BUCKETS = Math.ceil(Math.log(1e8 / MIN_US) / LOG_GROWTH) + 2;

/** Quantiles reported for every histogram. */
export interface QuantilesUs {
  /** Number of values recorded. */
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  /** Largest value recorded (exact). */
  readonly max: number;
  /** Arithmetic mean (exact). */
  readonly mean: number;
}

/** A mergeable histogram of microsecond values. */
export class UsHistogram {
  /** Bucket counts (post this to merge elsewhere). */
  readonly counts: Float64Array;
  #count = 0;
  #sum = 0;
  #max = 0;

  constructor(counts?: Float64Array) {
    this.counts = counts ?? new Float64Array(HISTOGRAM_BUCKETS);
  }

  /** Records one value in microseconds (negative values are recorded as their magnitude). */
  record(valueUs: number): void {
    const v = valueUs < 0 ? -valueUs : valueUs;
    if (!(v === v)) return; // NaN
    let index = 0;
    if (v >= MIN_US) {
      index = Math.floor(Math.log(v / MIN_US) / LOG_GROWTH) + 1;
      if (index >= HISTOGRAM_BUCKETS) index = HISTOGRAM_BUCKETS - 1;
    }
    this.counts[index] = (this.counts[index] ?? 0) + 1;
    this.#count++;
    this.#sum += v;
    if (v > this.#max) this.#max = v;
  }

  /** Plain-data snapshot for postMessage. */
  snapshot(): HistogramSnapshot {
    return { counts: this.counts, count: this.#count, sum: this.#sum, max: this.#max };
  }

  /** Adds another histogram's snapshot into this one. */
  merge(other: HistogramSnapshot): void {
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) this.counts[i] = (this.counts[i] ?? 0) + (other.counts[i] ?? 0);
    this.#count += other.count;
    this.#sum += other.sum;
    if (other.max > this.#max) this.#max = other.max;
  }

  /** Number of values recorded. */
  get count(): number {
    return this.#count;
  }

  /** The value below which a fraction `q` of the recorded values lie (bucket geometric midpoint), µs. */
  quantile(q: number): number {
    if (this.#count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil(q * this.#count));
    let seen = 0;
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) {
      seen += this.counts[i] ?? 0;
      if (seen >= rank) return Math.min(this.#max, bucketMidpointUs(i));
    }
    return this.#max;
  }

  /** The standard quantile set. */
  quantiles(): QuantilesUs {
    return {
      count: this.#count,
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p99: this.quantile(0.99),
      p999: this.quantile(0.999),
      max: this.#count === 0 ? Number.NaN : this.#max,
      mean: this.#count === 0 ? Number.NaN : this.#sum / this.#count,
    };
  }
}

/** What a worker posts for one histogram. */
export interface HistogramSnapshot {
  readonly counts: Float64Array;
  readonly count: number;
  readonly sum: number;
  readonly max: number;
}

function bucketMidpointUs(index: number): number {
  if (index === 0) return MIN_US / 2;
  const low = MIN_US * GROWTH ** (index - 1);
  return low * Math.sqrt(GROWTH);
}
