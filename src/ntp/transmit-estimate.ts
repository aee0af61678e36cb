/**
 * Transmit-timestamp compensation. respond() reads the clock for the transmit timestamp (T3) as late as it
 * can, just before the final seal, but the reply still leaves later: after the seal, after the send call,
 * and with send-mode "batch" after the rest of the batch is answered. Clients would see that wait as a
 * negative offset. chrony adds a measured estimate of its authentication delay to the transmit timestamp;
 * every NTP thread does the same here, by measurement, for packet i of a batch:
 *
 *   T3(i) = clock + sealCost(class_i) + Σ_{j>i} respondCost(class_j) + (i + ½) · sendCost
 *
 * and for a packet sent on its own (send-mode "each", and the dgram backend) seal + ½ send.
 *  - respondCost(class), sealCost(class): EWMAs per request size class (48-octet plain NTP costs ≈ 0.1 µs,
 *    an NTS request ≈ 10 µs and more with placeholders); respondCost is the whole per-packet time,
 *    sealCost the part after the clock read;
 *  - sendCost: the owner's EWMA of one send (a sendmsg, a dgram send(), or a sendmmsg's share).
 * Each estimate reads 0 until it has seen COST_WARMUP_SAMPLES samples, and the sum is clamped to
 * [0, MAX_TRANSMIT_COMPENSATION_S]. The header (with T3) is in the AEAD's associated data, so the
 * compensation must be known when the clock is read: it is planned before the packet is answered.
 */

/** Upper bound of the compensation added to one transmit timestamp, seconds (2 ms). */
export const MAX_TRANSMIT_COMPENSATION_S = 0.002;
/** Samples an estimate needs before it is used (it reads 0 until then). */
export const COST_WARMUP_SAMPLES = 8;
/** Steady-state EWMA weight of a new sample (the first 1/weight samples are averaged evenly). */
const EWMA_WEIGHT = 1 / 16;
/** A sample above this many times the current estimate (plus COST_CAP_FLOOR_S) is cut down to it. */
const COST_CAP_FACTOR = 4;
const COST_CAP_FLOOR_S = 1e-6;
/** Per-packet samples longer than this (cold JIT, a descheduled thread) are discarded, seconds. */
export const MAX_PACKET_COST_SAMPLE_S = 0.001;

/**
 * A cost estimate in seconds: the mean of the first samples, then an exponentially weighted moving
 * average. Robust to the odd descheduled sample: negative or over-`maxSampleS` samples are dropped, and
 * once warmed up a sample is capped at COST_CAP_FACTOR × the estimate.
 */
export class CostEwma {
  readonly #maxSampleS: number;
  #valueS = 0;
  #samples = 0;

  constructor(maxSampleS: number) {
    this.#maxSampleS = maxSampleS;
  }

  /** Adds one sample (seconds). */
  observe(sampleS: number): void {
    if (!(sampleS >= 0 && sampleS <= this.#maxSampleS)) return; // also rejects NaN
    const n = this.#samples;
    let s = sampleS;
    if (n >= COST_WARMUP_SAMPLES) {
      const cap = COST_CAP_FACTOR * this.#valueS + COST_CAP_FLOOR_S;
      if (s > cap) s = cap;
    }
    this.#samples = n + 1;
    const weight = n + 1 < 1 / EWMA_WEIGHT ? 1 / (n + 1) : EWMA_WEIGHT;
    this.#valueS += (s - this.#valueS) * weight;
  }

  /** The estimate in seconds, or 0 until COST_WARMUP_SAMPLES samples were seen. */
  get valueS(): number {
    return this.#samples >= COST_WARMUP_SAMPLES ? this.#valueS : 0;
  }

  /** Samples accepted so far. */
  get samples(): number {
    return this.#samples;
  }
}

/** Number of request size classes (requestSizeClass). */
export const SIZE_CLASS_COUNT = 8;

/**
 * Size class of a request, the "kind" the per-packet costs are estimated by: 0 = up to 48 octets (plain
 * NTP), then one class per power of two (49–64, 65–128, 129–256, …), the last one open-ended.
 */
export function requestSizeClass(length: number): number {
  if (length <= 48) return 0;
  const c = 32 - Math.clz32(length - 1) - 5;
  return c < SIZE_CLASS_COUNT ? c : SIZE_CLASS_COUNT - 1;
}

/** Clamps a compensation to [0, MAX_TRANSMIT_COMPENSATION_S]. */
export function clampCompensationS(s: number): number {
  if (!(s > 0)) return 0;
  return s < MAX_TRANSMIT_COMPENSATION_S ? s : MAX_TRANSMIT_COMPENSATION_S;
}

/**
 * Per-size-class respond and seal costs, and the plan of one batch (send-mode "batch") or of a lone packet.
 * Use per batch: `beginBatch`, `addToBatch` for every packet (in order), then for every packet in order
 * `next` (its compensation) and, once it is done, `observe`.
 */
export class TransmitEstimator {
  readonly #respond: CostEwma[] = Array.from({ length: SIZE_CLASS_COUNT }, () => new CostEwma(MAX_PACKET_COST_SAMPLE_S));
  readonly #seal: CostEwma[] = Array.from({ length: SIZE_CLASS_COUNT }, () => new CostEwma(MAX_PACKET_COST_SAMPLE_S));
  /** The estimates frozen for the current batch, so the plan adds up whatever is observed meanwhile. */
  readonly #respondPlan = new Float64Array(SIZE_CLASS_COUNT);
  readonly #sealPlan = new Float64Array(SIZE_CLASS_COUNT);
  #restS = 0;
  #sendCostS = 0;
  #position = 0;

  /** Starts planning a batch whose replies leave together after its last seal, at `sendCostS` per reply. */
  beginBatch(sendCostS: number): void {
    for (let c = 0; c < SIZE_CLASS_COUNT; c++) {
      this.#respondPlan[c] = this.#respond[c]?.valueS ?? 0;
      this.#sealPlan[c] = this.#seal[c]?.valueS ?? 0;
    }
    this.#restS = 0;
    this.#sendCostS = sendCostS > 0 ? sendCostS : 0;
    this.#position = 0;
  }

  /** Adds one packet of size class `sizeClass` to the batch being planned. */
  addToBatch(sizeClass: number): void {
    this.#restS += this.#respondPlan[sizeClass] ?? 0;
  }

  /** Compensation (seconds, clamped) for the next packet of the batch, of size class `sizeClass`. */
  next(sizeClass: number): number {
    const i = this.#position++;
    this.#restS -= this.#respondPlan[sizeClass] ?? 0;
    const rest = this.#restS > 0 ? this.#restS : 0;
    return clampCompensationS((this.#sealPlan[sizeClass] ?? 0) + rest + (i + 0.5) * this.#sendCostS);
  }

  /**
   * Compensation for a packet answered and sent on its own (send-mode "each"): its seal plus half a send.
   * The same figure as beginBatch(sendCostS), addToBatch(c), next(c), without copying the plan.
   */
  lone(sizeClass: number, sendCostS: number): number {
    return clampCompensationS((this.#seal[sizeClass]?.valueS ?? 0) + 0.5 * (sendCostS > 0 ? sendCostS : 0));
  }

  /** Records a finished packet: its whole cost and, when it was stamped, the time after the clock read (else a negative value). */
  observe(sizeClass: number, respondS: number, sealS: number): void {
    this.#respond[sizeClass]?.observe(respondS);
    if (sealS >= 0) this.#seal[sizeClass]?.observe(sealS);
  }

  /** Current respond cost estimate of a size class, seconds (0 until warmed up). */
  respondCostS(sizeClass: number): number {
    return this.#respond[sizeClass]?.valueS ?? 0;
  }

  /** Current seal cost estimate of a size class, seconds (0 until warmed up). */
  sealCostS(sizeClass: number): number {
    return this.#seal[sizeClass]?.valueS ?? 0;
  }
}
