/**
 * The compute side of the pool: turns a batch of requests into a batch of replies with `respond()`.
 *
 * `createBatchProcessor` is the single place that builds the responder context and walks a batch; the
 * worker thread below and the inline mode (`threads = 0`, in pool.ts) both use it, so the two modes run
 * the very same code. Workers compute and count; they neither log nor own metrics: the tally travels
 * back inside the batch buffer (protocol.ts).
 *
 * Transmit-timestamp compensation. respond() reads the clock for the transmit timestamp (T3) as late as
 * it can, but the reply still leaves later: after the AEAD seal, after the rest of the batch is answered,
 * after the batch travels back to the main thread, and after the replies before it are sent. Clients see
 * that wait as a negative offset. chrony has the same problem with the time its authentication takes
 * after the timestamp is read, and adds a measured estimate of that delay to the transmit timestamp it
 * sends. We do the same, by measurement, for each packet i of a batch:
 *
 *   T3(i) = clock + sealCost(class_i) + Σ_{j>i} respondCost(class_j) + returnHop + (i + ½) · sendCost
 *
 *  - respondCost(class), sealCost(class): EWMAs measured here, per request size class (the work depends
 *    on the request: 48-octet plain NTP ≈ 0.1 µs, an NTS request ≈ 10 µs and more with placeholders).
 *    respondCost is the whole per-packet time (respond() plus the copy), sealCost the part after the
 *    clock read. Two clock reads per packet: the transmit read itself and one when the packet is done.
 *  - returnHop (worker done → main starts the replies; per batch size class, protocol.ts batchSizeClass)
 *    and sendCost (main's time per reply, including the socket send): EWMAs measured by the pool on the
 *    main thread and shared through a SharedArrayBuffer (protocol.ts CompensationSlot). Inline mode runs
 *    the same code; its hop is ≈ 0. The ½ puts the departure in the middle of the packet's own send.
 *
 * Each estimate reads 0 until it has seen COST_WARMUP_SAMPLES samples, and the sum is clamped to
 * [0, MAX_TRANSMIT_COMPENSATION_S]. The header (with T3) is in the AEAD's associated data, so the
 * compensation must be known when the clock is read: it is planned at the start of the batch.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { randomFillSync } from 'node:crypto';
import { WallClock, monotonicS, unixSToNtp, type NtpTime } from '../runtime/clock.js';
import { decodeKeyset } from '../core/nts/keyset.js';
import { installInheritedAeadBackend } from '../runtime/aead-openssl.js';
import {
  KEY_AGE_NONE,
  createPooledFillRandom,
  createResponderContext,
  respond,
  type ResponderContext,
  type ServerFields,
} from '../core/responder.js';
import {
  BATCH_COUNT_WORD,
  BATCH_F64_SLOTS,
  BATCH_STAMPS_WORD,
  BATCH_TALLY_WORD,
  BatchF64,
  COMPENSATION_SLOTS,
  CompensationSlot,
  Entry,
  MAX_DATAGRAM_BYTES,
  MAX_TRANSMIT_COMPENSATION_S,
  TALLY_WORDS,
  Tally,
  batchSizeClass,
  entryWord,
  isToWorker,
  isWorkerInit,
  keyAgeBucket,
  type ResponderPolicy,
  type ToWorker,
} from './tally.js';

/** Inputs of a batch processor. */
export interface BatchProcessorInit {
  /** Encoded keyset; must decode (the pool checks before handing it over). */
  readonly keysetBytes: Uint8Array;
  readonly serverFields: ServerFields;
  /** Policies indexed by an entry's `policy` word (index 0 must exist). */
  readonly policies: readonly ResponderPolicy[];
  /** Clock for transmit timestamps (shares its anchor across threads). */
  readonly clock: WallClock;
  /** The sending thread's return-path estimates (protocol.ts CompensationSlot); default: all 0. */
  readonly compensationShared?: SharedArrayBuffer;
  /** Add the estimated delay to transmit timestamps (default true; false: measure only, stamp the raw clock). */
  readonly transmitCompensation?: boolean;
  /** Monotonic clock in seconds (default clock.ts monotonicS; tests inject a scripted one). */
  readonly monotonicS?: () => number;
}

/** Runs respond() over batches; owns one responder context and one scratch buffer. */
export interface BatchProcessor {
  /** Decodes and installs a keyset; returns the decode error, or undefined on success. */
  setKeyset(bytes: Uint8Array): string | undefined;
  /** Installs new server fields (stratum, leap, …) for the following replies. */
  setServerFields(fields: ServerFields): void;
  /**
   * Answers every entry of the batch in place: reply bytes over the request, `length` = reply length
   * (0 = drop), tally, transmit-stamp count, compensation sum and done time filled in the header.
   * Returns the first respond() exception message, or undefined when none was thrown.
   */
  process(buffer: ArrayBuffer): string | undefined;
}

function fillRandom(target: Uint8Array): void {
  randomFillSync(target);
}

// ---------------------------------------------------------------------------------------------
// Transmit-timestamp compensation: the estimators (model in the module comment)
// ---------------------------------------------------------------------------------------------

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
 * The worker side of the model: per-size-class respond and seal costs, and the plan of one batch.
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
  #returnHopS = 0;
  #sendCostS = 0;
  #position = 0;

  /** Starts planning a batch with the main thread's current return-hop and per-reply send estimates. */
  beginBatch(returnHopS: number, sendCostS: number): void {
    for (let c = 0; c < SIZE_CLASS_COUNT; c++) {
      this.#respondPlan[c] = this.#respond[c]?.valueS ?? 0;
      this.#sealPlan[c] = this.#seal[c]?.valueS ?? 0;
    }
    this.#restS = 0;
    this.#returnHopS = returnHopS > 0 ? returnHopS : 0;
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
    return clampCompensationS((this.#sealPlan[sizeClass] ?? 0) + rest + this.#returnHopS + (i + 0.5) * this.#sendCostS);
  }

  /**
   * Compensation for a packet answered and sent on its own (send-mode "each"): its seal plus half a send.
   * The same figure as beginBatch(0, sendCostS), addToBatch(c), next(c), without copying the plan.
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

/** Creates a processor; throws if the initial keyset does not decode (a bug in the caller). */
export function createBatchProcessor(init: BatchProcessorInit): BatchProcessor {
  const decoded = decodeKeyset(init.keysetBytes);
  if (!decoded.ok) throw new Error(`pool: initial keyset does not decode (${decoded.error})`);
  const clock = init.clock;
  const mono = init.monotonicS ?? monotonicS;
  const compensate = init.transmitCompensation ?? true;
  const shared = new Float64Array(init.compensationShared ?? new SharedArrayBuffer(COMPENSATION_SLOTS * Float64Array.BYTES_PER_ELEMENT));
  const estimator = new TransmitEstimator();
  const nowTarget: NtpTime = { seconds: 0, fraction: 0 };
  // Per-packet state the transmit clock reads: realtime − monotonic for this batch, the packet's
  // compensation, and the monotonic time of its transmit read (-1 = not read yet).
  let wallOffsetS = 0;
  let compensationS = 0;
  let stampedAtS = -1;
  const policies = init.policies;
  const defaultPolicy = policies[0];
  if (defaultPolicy === undefined) throw new Error('pool: at least one responder policy is required');
  const ctx: ResponderContext = createResponderContext({
    keyset: decoded.keyset,
    serverFields: init.serverFields,
    // The responder copies the two halves out at once, so one reused target object is enough.
    now: () => {
      stampedAtS = mono();
      return unixSToNtp(stampedAtS + wallOffsetS + compensationS, nowTarget);
    },
    // One randomFillSync per 4 KiB instead of one per cookie and nonce (≈3 µs per NTS request).
    fillRandom: createPooledFillRandom(fillRandom),
    requireNts: defaultPolicy.requireNts,
    acceptNtpVersions: defaultPolicy.acceptNtpVersions,
  });
  // Replies are built here, then copied over their request. Sized per request with subarray, so a reply
  // longer than its request cannot be written (respond() also refuses a shorter `out`).
  const scratch = new Uint8Array(MAX_DATAGRAM_BYTES);
  const receiveTime: NtpTime = { seconds: 0, fraction: 0 };

  return {
    setKeyset(bytes) {
      const next = decodeKeyset(bytes);
      if (!next.ok) return next.error;
      ctx.keyset = next.keyset;
      return undefined;
    },
    setServerFields(fields) {
      ctx.serverFields = fields;
    },
    process(buffer) {
      const words = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
      const bytes = new Uint8Array(buffer);
      const header = new Float64Array(buffer, 0, BATCH_F64_SLOTS);
      const count = words[BATCH_COUNT_WORD] ?? 0;
      words.fill(0, BATCH_TALLY_WORD, BATCH_TALLY_WORD + TALLY_WORDS);
      // Plan the batch: its packets' size classes and the main thread's current return-path estimates.
      estimator.beginBatch(shared[CompensationSlot.returnHopS + batchSizeClass(count)] ?? 0, shared[CompensationSlot.sendCostS] ?? 0);
      for (let i = 0; i < count; i++) estimator.addToBatch(requestSizeClass(words[entryWord(i) + Entry.length] ?? 0));
      // realtime − monotonic, once per batch: the wall clock read bracketed by two monotonic reads.
      const before = mono();
      const wallS = clock.nowUnixS();
      // The last monotonic read: where the next packet's cost starts, and the batch's done time at the end.
      let lastReadS = mono();
      wallOffsetS = wallS - (before + lastReadS) / 2;
      let stamps = 0;
      let compensationSumS = 0;
      let firstError: string | undefined;
      let currentPolicy = -1;
      for (let i = 0; i < count; i++) {
        const e = entryWord(i);
        const policyIndex = words[e + Entry.policy] ?? 0;
        if (policyIndex !== currentPolicy) {
          const p = policies[policyIndex] ?? defaultPolicy;
          ctx.requireNts = p.requireNts;
          ctx.acceptNtpVersions = p.acceptNtpVersions;
          currentPolicy = policyIndex;
        }
        const length = words[e + Entry.length] ?? 0;
        const offset = words[e + Entry.dataOffset] ?? 0;
        receiveTime.seconds = words[e + Entry.recvSeconds] ?? 0;
        receiveTime.fraction = words[e + Entry.recvFraction] ?? 0;
        let replyLength = 0;
        const sizeClass = requestSizeClass(length);
        const planned = estimator.next(sizeClass);
        compensationS = compensate ? planned : 0;
        stampedAtS = -1;
        if (length <= MAX_DATAGRAM_BYTES && offset + length <= bytes.length) {
          try {
            const result = respond(bytes.subarray(offset, offset + length), receiveTime, ctx, scratch.subarray(0, length));
            const t = BATCH_TALLY_WORD;
            words[t + Tally.outcomes + result.outcome] = (words[t + Tally.outcomes + result.outcome] ?? 0) + 1;
            if (result.keyAge !== KEY_AGE_NONE) {
              const b = t + Tally.keyAges + keyAgeBucket(result.keyAge);
              words[b] = (words[b] ?? 0) + 1;
            }
            words[t + Tally.cookiesIssued] = (words[t + Tally.cookiesIssued] ?? 0) + result.cookiesIssued;
            if (result.length > 0 && result.length <= length) {
              bytes.set(scratch.subarray(0, result.length), offset);
              replyLength = result.length;
            }
          } catch (error) {
            // A bug in respond() must not let one crafted packet kill the worker over and over:
            // drop the packet, count it, and report the first message to the main thread.
            const w = BATCH_TALLY_WORD + Tally.respondErrors;
            words[w] = (words[w] ?? 0) + 1;
            firstError ??= error instanceof Error ? `${error.name}: ${error.message}` : String(error);
          }
        }
        words[e + Entry.length] = replyLength;
        const endS = mono();
        if (stampedAtS >= 0) {
          stamps++;
          compensationSumS += compensationS;
          estimator.observe(sizeClass, endS - lastReadS, endS - stampedAtS);
        } else {
          estimator.observe(sizeClass, endS - lastReadS, -1);
        }
        lastReadS = endS;
      }
      words[BATCH_STAMPS_WORD] = stamps;
      header[BatchF64.doneS] = lastReadS;
      header[BatchF64.compensationSumS] = compensationSumS;
      return firstError;
    },
  };
}

/** Handles one message in a worker thread. */
function onWorkerMessage(processor: BatchProcessor, msg: ToWorker): void {
  const port = parentPort;
  if (port === null) return;
  switch (msg.kind) {
    case 'batch': {
      const error = processor.process(msg.buffer);
      if (error === undefined) port.postMessage({ kind: 'done', buffer: msg.buffer }, [msg.buffer]);
      else port.postMessage({ kind: 'done', buffer: msg.buffer, error }, [msg.buffer]);
      return;
    }
    case 'keyset': {
      const reason = processor.setKeyset(msg.bytes);
      if (reason !== undefined) port.postMessage({ kind: 'keysetRejected', reason });
      return;
    }
    case 'serverFields':
      processor.setServerFields(msg.fields);
      return;
    default: {
      const unreachable: never = msg;
      return unreachable;
    }
  }
}

if (!isMainThread && parentPort !== null && isWorkerInit(workerData)) {
  const init = workerData;
  installInheritedAeadBackend(); // before the keyset is decoded: its master keys take the installed AEAD
  const processor = createBatchProcessor({
    keysetBytes: init.keysetBytes,
    serverFields: init.serverFields,
    policies: init.policies,
    clock: new WallClock(init.clockShared),
    compensationShared: init.compensationShared,
    transmitCompensation: init.transmitCompensation,
  });
  const port = parentPort;
  port.on('message', (msg: unknown) => {
    if (isToWorker(msg)) onWorkerMessage(processor, msg);
  });
}
