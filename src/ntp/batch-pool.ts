/**
 * The worker pool: batches received packets, hands them to worker threads (or answers inline when
 * `threads = 0`), and gives each reply back to the caller with its reply target.
 *
 * Flow (ARCHITECTURE.md "How data flows", UDP):
 *  - `submit` takes a free slot in a bounded table (slot → reply target); no free slot = `queue_full`
 *    drop. The slot count is `queueLimit`, so at most `queueLimit` packets are ever in flight.
 *  - Packets collect in a pending batch. It is flushed when it holds `batchSize` packets, when its oldest
 *    packet is `flushIntervalUs` old (judged from the receive timestamps, so no extra clock read), or in
 *    the check phase right after the I/O phase that received them (setImmediate), whichever comes first:
 *    all datagrams libuv read in one loop turn travel together, and a lone packet waits only for the end
 *    of its own turn (a few µs), never for a timer.
 *    Measured and rejected: holding a batch past the end of the turn while every worker is busy (spinning
 *    on setImmediate). Under NTS load the workers are the bottleneck (≈14 µs per request vs ≈1.4 µs of
 *    pool work on main at batch 32), so a held batch only leaves a worker idle between batches, and the
 *    turn-end flush already yields batches of ≈28 at saturation. See the pool measurements in the report.
 *  - A flush copies the packets into one ArrayBuffer (layout in protocol.ts) and transfers it to the
 *    least-loaded worker: one postMessage per batch. The worker writes replies in place and transfers
 *    the buffer back with an outcome tally, which is added to cumulative counters (`stats()`).
 *  - A worker that exits is replaced (with back-off if it keeps dying young) and counted; the packets
 *    it held are counted as lost and their slots freed.
 *  - Transmit-timestamp compensation (model in worker.ts): when a batch comes back, the pool measures the
 *    return hop (worker done → delivery starts; the worker writes its done time into the batch header)
 *    and the time per reply delivered, keeps EWMAs of them (the hop per batch size class), and publishes
 *    them in a SharedArrayBuffer the workers read at the start of every batch. Inline mode measures the
 *    same way (its hop is ≈ 0).
 *
 * The pool knows nothing about sockets: a reply target is an opaque value of type T.
 */
import { Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { WallClock, monotonicS, type NtpTime } from '../runtime/clock.js';
import { decodeKeyset } from '../core/nts/keyset.js';
import { OUTCOME_COUNT, Outcome, type ServerFields } from '../core/responder.js';
import {
  BATCH_COUNT_WORD,
  BATCH_F64_SLOTS,
  BATCH_SIZE_CLASS_COUNT,
  BATCH_STAMPS_WORD,
  BATCH_TALLY_WORD,
  BatchF64,
  COMPENSATION_SLOTS,
  CompensationSlot,
  Entry,
  KEY_AGE_BUCKETS,
  MAX_DATAGRAM_BYTES,
  POOL_WORKER_ROLE,
  TALLY_WORDS,
  Tally,
  batchBytes,
  batchSizeClass,
  entryWord,
  isFromWorker,
  type ResponderPolicy,
  type WorkerInit,
} from './tally.js';
import { CostEwma, MAX_PACKET_COST_SAMPLE_S, createBatchProcessor, type BatchProcessor } from './batch-worker.js';

/** Return-hop samples longer than this are discarded (the compensation is capped far below), seconds. */
const MAX_RETURN_HOP_SAMPLE_S = 0.005;

/** Options for {@link createPool}. */
export interface PoolOptions {
  /** Worker threads; 0 = answer inline on the main thread with the same code. */
  readonly threads: number;
  /** Packets per batch (≥ 1). */
  readonly batchSize: number;
  /** Flush a batch once its oldest packet is this old, microseconds, even within one long I/O phase (0 = no age bound). */
  readonly flushIntervalUs: number;
  /** Packets in flight (queued, at a worker, or awaiting their reply callback) before new ones are dropped. */
  readonly queueLimit: number;
  /** Encoded keyset (src/core/nts/keyset.ts), e.g. KeysetStore.bytes. */
  readonly keysetBytes: Uint8Array;
  /** Stratum, leap, root delay/dispersion, refid, reference time for replies. */
  readonly serverFields: ServerFields;
  /** Policy 0: drop plain NTP (default false). */
  readonly requireNts?: boolean;
  /** Policy 0: NTP versions answered (default [3, 4]). */
  readonly acceptNtpVersions?: readonly number[];
  /**
   * Per-listener policies, indexed by `submit`'s `policy` argument. When given it replaces policy 0
   * built from `requireNts`/`acceptNtpVersions`.
   */
  readonly policies?: readonly ResponderPolicy[];
  /** Clock for transmit timestamps; its shared anchor is passed to the workers. Default: a new WallClock. */
  readonly clock?: WallClock;
  /**
   * Add the estimated delay between reading the transmit clock and the reply leaving (worker.ts) to
   * transmit timestamps. Default true; false stamps the raw clock (the estimates are still measured).
   */
  readonly transmitCompensation?: boolean;
  /** Operational events (worker exits, respond() bugs) for the caller to log; workers never log. */
  readonly onEvent?: (event: PoolEvent) => void;
}

/** Something the caller may want to log. */
export type PoolEvent =
  | {
      readonly kind: 'workerExit';
      readonly index: number;
      readonly exitCode: number;
      readonly error: unknown;
      /** Packets the worker held, counted as lost. */
      readonly lostPackets: number;
      /** Delay before the replacement starts (0 = at once). */
      readonly restartInMs: number;
    }
  | { readonly kind: 'respondError'; readonly message: string }
  | { readonly kind: 'replyCallbackError'; readonly error: unknown }
  | { readonly kind: 'keysetRejected'; readonly reason: string };

/** Called once per reply; `reply` is a view into a batch buffer that is never reused, so it may be sent asynchronously. */
export type ReplyCallback<T> = (reply: Uint8Array, target: T, receiveSeconds: number, receiveFraction: number) => void;

/** Counters since the pool started (cumulative, for metrics collected at scrape time). */
export interface PoolStats {
  /** Worker threads configured (0 = inline). */
  readonly threads: number;
  /** Worker threads currently running. */
  readonly workersAlive: number;
  /** Packets in flight right now (`ntsd_worker_queue_depth`). */
  readonly queueDepth: number;
  /** Packets accepted by submit. */
  readonly submitted: number;
  /** Replies handed to the reply callback. */
  readonly replied: number;
  /** Packets refused because `queueLimit` packets were in flight (`queue_full`). */
  readonly queueRejected: number;
  /** Workers replaced after exiting (`ntsd_worker_restarts_total`). */
  readonly workerRestarts: number;
  /** Packets lost with a worker that died. */
  readonly lost: number;
  /** Batches dispatched (submitted / batches = mean batch size). */
  readonly batches: number;
  /** Counts per responder Outcome value (index = Outcome). */
  readonly outcomes: readonly number[];
  /** Cookie decodes per key-age bucket (protocol.ts keyAgeBucket/keyAgeLabel). */
  readonly keyAges: readonly number[];
  /** Cookies issued in NTS replies (`ntsd_nts_cookies_issued_total{via="ntp"}`). */
  readonly cookiesIssued: number;
  /** Packets dropped because respond() threw (a bug). */
  readonly respondErrors: number;
  /** Transmit timestamps taken (replies and NAKs). */
  readonly transmitStamps: number;
  /** Sum of the compensation added to those timestamps, seconds (mean = sum / transmitStamps). */
  readonly transmitCompensationSumS: number;
  /** Current return-hop estimate, seconds (0 until warmed up). */
  readonly returnHopS: number;
  /** Current per-reply delivery estimate, seconds (0 until warmed up). */
  readonly sendCostS: number;
}

/** The pool as the UDP server and the daemon see it. */
export interface Pool<T> {
  /**
   * Queues one request. `receiveTime` is read at once (the object may be reused); `packet` is kept until
   * the next flush and must not be modified. Returns false when dropped (queue full or oversize).
   */
  submit(packet: Uint8Array, receiveTime: NtpTime, target: T, policy?: number): boolean;
  /** Broadcasts a new keyset (encoded) to every worker; throws RangeError if it does not decode. */
  setKeyset(bytes: Uint8Array): void;
  /** Broadcasts new server fields to every worker. */
  setServerFields(fields: ServerFields): void;
  /** Sets the reply callback (one per pool; the last call wins). */
  onReply(cb: ReplyCallback<T>): void;
  /** Cumulative counters and current queue depth. */
  stats(): PoolStats;
  /** Terminates worker `index` as if it had crashed (tests; forced recycling). Resolves false if there is none. */
  terminateWorker(index: number): Promise<boolean>;
  /** Stops the workers and drops whatever is in flight. */
  close(): Promise<void>;
}

/** Slot owner marks (non-negative values are worker ids). */
const SLOT_FREE = -1;
const SLOT_PENDING = -2;
const SLOT_BACKLOG = -3;

/** A worker that lived shorter than this is "dying young" and restarted with back-off. */
const YOUNG_WORKER_MS = 1000;
const RESTART_BACKOFF_FIRST_MS = 100;
const RESTART_BACKOFF_MAX_MS = 5000;

interface WorkerHandle {
  readonly id: number;
  readonly index: number;
  readonly worker: Worker;
  readonly startedAtMs: number;
  /** Packets dispatched to this worker and not yet returned. */
  inFlight: number;
  lastError: unknown;
  /** Set on 'exit': anything the worker still delivers afterwards is ignored (its slots were freed). */
  exited: boolean;
}

function checkPositiveInteger(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new RangeError(`pool: ${name} must be an integer ≥ ${min}`);
}

/** Creates a pool; with `threads` > 0 the workers start at once. */
export function createPool<T>(options: PoolOptions): Pool<T> {
  checkPositiveInteger('threads', options.threads, 0);
  checkPositiveInteger('batchSize', options.batchSize, 1);
  checkPositiveInteger('queueLimit', options.queueLimit, 1);
  if (!(options.flushIntervalUs >= 0)) throw new RangeError('pool: flushIntervalUs must be ≥ 0');
  const initial = decodeKeyset(options.keysetBytes);
  if (!initial.ok) throw new RangeError(`pool: keyset does not decode (${initial.error})`);

  const threads = options.threads;
  const batchSize = options.batchSize;
  const flushIntervalUs = options.flushIntervalUs;
  /** NTP fraction units per microsecond. */
  const fractionPerUs = 4294.967296;
  const queueLimit = options.queueLimit;
  const clock = options.clock ?? new WallClock();
  const onEvent = options.onEvent;
  const policies: readonly ResponderPolicy[] = options.policies ?? [
    { requireNts: options.requireNts ?? false, acceptNtpVersions: options.acceptNtpVersions ?? [3, 4] },
  ];
  if (policies.length === 0) throw new RangeError('pool: policies must not be empty');
  let keysetBytes = options.keysetBytes.slice();
  let serverFields = options.serverFields;

  // Slot table: reply targets by slot, a stack of free slots, and who holds each slot.
  const targets: (T | undefined)[] = new Array<T | undefined>(queueLimit).fill(undefined);
  const freeSlots = new Int32Array(queueLimit);
  for (let i = 0; i < queueLimit; i++) freeSlots[i] = queueLimit - 1 - i;
  let freeTop = queueLimit;
  const slotOwner = new Int32Array(queueLimit).fill(SLOT_FREE);

  // The pending batch.
  const pendingPackets: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(batchSize).fill(undefined);
  const pendingMeta = new Uint32Array(batchSize * 4); // slot, policy, recvSeconds, recvFraction
  let pendingCount = 0;
  let pendingBytes = 0;
  let pendingFirstSeconds = 0;
  let pendingFirstFraction = 0;
  let immediate: NodeJS.Immediate | undefined;

  // Counters.
  const tally = new Float64Array(TALLY_WORDS);
  let submitted = 0;
  let replied = 0;
  let queueRejected = 0;
  let workerRestarts = 0;
  let lost = 0;
  let batches = 0;

  let transmitStamps = 0;
  let transmitCompensationSumS = 0;

  let replyCallback: ReplyCallback<T> | undefined;
  let closed = false;

  // Return-path estimates, shared with the batch processors (protocol.ts CompensationSlot).
  const transmitCompensation = options.transmitCompensation ?? true;
  const compensationShared = new SharedArrayBuffer(COMPENSATION_SLOTS * Float64Array.BYTES_PER_ELEMENT);
  const compensation = new Float64Array(compensationShared);
  const returnHop = new CostEwma(MAX_RETURN_HOP_SAMPLE_S);
  const returnHopByClass = Array.from({ length: BATCH_SIZE_CLASS_COUNT }, () => new CostEwma(MAX_RETURN_HOP_SAMPLE_S));
  const sendCost = new CostEwma(MAX_PACKET_COST_SAMPLE_S);

  // Execution: inline processor or worker threads.
  const inline: BatchProcessor | undefined =
    threads === 0
      ? createBatchProcessor({ keysetBytes, serverFields, policies, clock, compensationShared, transmitCompensation })
      : undefined;
  const workers: (WorkerHandle | undefined)[] = new Array<WorkerHandle | undefined>(threads).fill(undefined);
  const restartTimers: (NodeJS.Timeout | undefined)[] = new Array<NodeJS.Timeout | undefined>(threads).fill(undefined);
  const youngDeaths = new Int32Array(threads);
  const backlog: ArrayBuffer[] = [];
  const inlineQueue: ArrayBuffer[] = [];
  let inlineDraining = false;
  let nextWorkerId = 0;

  const releaseSlot = (slot: number): void => {
    targets[slot] = undefined;
    slotOwner[slot] = SLOT_FREE;
    freeSlots[freeTop++] = slot;
  };

  const setOwners = (buffer: ArrayBuffer, owner: number): void => {
    const words = new Uint32Array(buffer);
    const count = words[BATCH_COUNT_WORD] ?? 0;
    for (let i = 0; i < count; i++) slotOwner[words[entryWord(i) + Entry.slot] ?? 0] = owner;
  };

  /** Delivers the replies of a returned batch, frees its slots, adds its tally, measures the return path. */
  const complete = (buffer: ArrayBuffer): void => {
    const arrivedAtS = monotonicS();
    const words = new Uint32Array(buffer);
    const header = new Float64Array(buffer, 0, BATCH_F64_SLOTS);
    const doneAtS = header[BatchF64.doneS] ?? 0;
    const count = words[BATCH_COUNT_WORD] ?? 0;
    if (doneAtS > 0) {
      returnHop.observe(arrivedAtS - doneAtS);
      returnHopByClass[batchSizeClass(count)]?.observe(arrivedAtS - doneAtS);
    }
    transmitStamps += words[BATCH_STAMPS_WORD] ?? 0;
    transmitCompensationSumS += header[BatchF64.compensationSumS] ?? 0;
    for (let j = 0; j < TALLY_WORDS; j++) tally[j] = (tally[j] ?? 0) + (words[BATCH_TALLY_WORD + j] ?? 0);
    const cb = replyCallback;
    let delivered = 0;
    for (let i = 0; i < count; i++) {
      const e = entryWord(i);
      const slot = words[e + Entry.slot] ?? 0;
      const length = words[e + Entry.length] ?? 0;
      const target = targets[slot];
      if (slotOwner[slot] === SLOT_FREE) continue; // already released (worker exit raced the reply)
      releaseSlot(slot);
      if (length === 0 || target === undefined || cb === undefined) continue;
      replied++;
      delivered++;
      try {
        cb(new Uint8Array(buffer, words[e + Entry.dataOffset] ?? 0, length), target, words[e + Entry.recvSeconds] ?? 0, words[e + Entry.recvFraction] ?? 0);
      } catch (error) {
        onEvent?.({ kind: 'replyCallbackError', error });
      }
    }
    if (delivered > 0) sendCost.observe((monotonicS() - arrivedAtS) / delivered);
    // A size class without an estimate of its own (not warmed up yet) uses the all-batches one.
    for (let c = 0; c < BATCH_SIZE_CLASS_COUNT; c++) {
      const own = returnHopByClass[c]?.valueS ?? 0;
      compensation[CompensationSlot.returnHopS + c] = own > 0 ? own : returnHop.valueS;
    }
    compensation[CompensationSlot.sendCostS] = sendCost.valueS;
  };

  const pickWorker = (): WorkerHandle | undefined => {
    let best: WorkerHandle | undefined;
    for (const h of workers) {
      if (h !== undefined && (best === undefined || h.inFlight < best.inFlight)) best = h;
    }
    return best;
  };

  const sendToWorker = (h: WorkerHandle, buffer: ArrayBuffer): void => {
    const count = new Uint32Array(buffer, 0, 1)[0] ?? 0;
    setOwners(buffer, h.id);
    h.inFlight += count;
    h.worker.postMessage({ kind: 'batch', buffer }, [buffer]);
  };

  const dispatch = (buffer: ArrayBuffer): void => {
    batches++;
    if (inline !== undefined) {
      // A reply callback may submit again and fill another batch; queue it and run the queue as a loop
      // here rather than recursing through complete() → submit() → flush() → dispatch().
      inlineQueue.push(buffer);
      if (inlineDraining) return;
      inlineDraining = true;
      try {
        for (let next = inlineQueue.shift(); next !== undefined; next = inlineQueue.shift()) {
          const error = inline.process(next);
          if (error !== undefined) onEvent?.({ kind: 'respondError', message: error });
          complete(next);
        }
      } finally {
        inlineDraining = false;
      }
      return;
    }
    const h = pickWorker();
    if (h === undefined) {
      setOwners(buffer, SLOT_BACKLOG);
      backlog.push(buffer);
      return;
    }
    sendToWorker(h, buffer);
  };

  const flush = (): void => {
    const count = pendingCount;
    if (count === 0) return;
    const size = (batchBytes(count, pendingBytes) + 3) & ~3;
    const buffer = new ArrayBuffer(size);
    const words = new Uint32Array(buffer);
    const bytes = new Uint8Array(buffer);
    words[BATCH_COUNT_WORD] = count;
    let dataOffset = batchBytes(count, 0);
    for (let i = 0; i < count; i++) {
      const packet = pendingPackets[i];
      pendingPackets[i] = undefined;
      const length = packet?.length ?? 0;
      const e = entryWord(i);
      const m = i * 4;
      words[e + Entry.slot] = pendingMeta[m] ?? 0;
      words[e + Entry.policy] = pendingMeta[m + 1] ?? 0;
      words[e + Entry.length] = length;
      words[e + Entry.recvSeconds] = pendingMeta[m + 2] ?? 0;
      words[e + Entry.recvFraction] = pendingMeta[m + 3] ?? 0;
      words[e + Entry.dataOffset] = dataOffset;
      if (packet !== undefined) bytes.set(packet, dataOffset);
      dataOffset += length;
    }
    pendingCount = 0;
    pendingBytes = 0;
    dispatch(buffer);
  };

  const onImmediate = (): void => {
    immediate = undefined;
    if (pendingCount === 0 || closed) return;
    flush();
  };

  const spawn = (index: number): void => {
    restartTimers[index] = undefined;
    if (closed) return;
    const init: WorkerInit = {
      role: POOL_WORKER_ROLE,
      keysetBytes,
      serverFields,
      policies,
      clockShared: clock.shared,
      compensationShared,
      transmitCompensation,
    };
    let worker: Worker;
    try {
      worker = new Worker(new URL('./batch-worker.js', import.meta.url), { workerData: init });
    } catch (error) {
      // Thread creation itself failed (resource limits): report and retry with back-off.
      const deaths = (youngDeaths[index] ?? 0) + 1;
      youngDeaths[index] = deaths;
      const restartInMs = Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_FIRST_MS * 2 ** (deaths - 1));
      onEvent?.({ kind: 'workerExit', index, exitCode: -1, error, lostPackets: 0, restartInMs });
      const t = setTimeout(() => spawn(index), restartInMs);
      t.unref();
      restartTimers[index] = t;
      return;
    }
    worker.unref();
    const h: WorkerHandle = { id: nextWorkerId++, index, worker, startedAtMs: performance.now(), inFlight: 0, lastError: undefined, exited: false };
    workers[index] = h;
    worker.on('message', (msg: unknown) => {
      if (h.exited || !isFromWorker(msg)) return;
      switch (msg.kind) {
        case 'done': {
          const count = new Uint32Array(msg.buffer, 0, 1)[0] ?? 0;
          h.inFlight -= count;
          if (msg.error !== undefined) onEvent?.({ kind: 'respondError', message: msg.error });
          complete(msg.buffer);
          return;
        }
        case 'keysetRejected':
          onEvent?.({ kind: 'keysetRejected', reason: msg.reason });
          return;
        default: {
          const unreachable: never = msg;
          return unreachable;
        }
      }
    });
    worker.on('error', (error: unknown) => {
      h.lastError = error;
    });
    worker.on('exit', (exitCode: number) => onWorkerExit(h, exitCode));
    // Batches that waited for a worker go to the first one that appears.
    while (backlog.length > 0) {
      const buffer = backlog.shift();
      if (buffer !== undefined) sendToWorker(h, buffer);
    }
  };

  const onWorkerExit = (h: WorkerHandle, exitCode: number): void => {
    h.exited = true;
    if (workers[h.index] === h) workers[h.index] = undefined;
    if (closed) return;
    let lostPackets = 0;
    for (let slot = 0; slot < queueLimit; slot++) {
      if (slotOwner[slot] === h.id) {
        releaseSlot(slot);
        lostPackets++;
      }
    }
    lost += lostPackets;
    workerRestarts++;
    const young = performance.now() - h.startedAtMs < YOUNG_WORKER_MS;
    const deaths = young ? (youngDeaths[h.index] ?? 0) + 1 : 0;
    youngDeaths[h.index] = deaths;
    const restartInMs = deaths === 0 ? 0 : Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_FIRST_MS * 2 ** (deaths - 1));
    onEvent?.({ kind: 'workerExit', index: h.index, exitCode, error: h.lastError, lostPackets, restartInMs });
    if (restartInMs === 0) {
      spawn(h.index);
    } else {
      const t = setTimeout(() => spawn(h.index), restartInMs);
      t.unref();
      restartTimers[h.index] = t;
    }
  };

  for (let i = 0; i < threads; i++) spawn(i);

  return {
    submit(packet, receiveTime, target, policy = 0) {
      if (closed) return false;
      if (packet.length > MAX_DATAGRAM_BYTES) {
        const w = Tally.outcomes + Outcome.dropMalformed;
        tally[w] = (tally[w] ?? 0) + 1;
        return false;
      }
      if (freeTop === 0) {
        queueRejected++;
        return false;
      }
      const slot = freeSlots[--freeTop] ?? 0;
      targets[slot] = target;
      slotOwner[slot] = SLOT_PENDING;
      submitted++;
      const i = pendingCount++;
      pendingPackets[i] = packet;
      const m = i * 4;
      pendingMeta[m] = slot;
      pendingMeta[m + 1] = policy;
      pendingMeta[m + 2] = receiveTime.seconds;
      pendingMeta[m + 3] = receiveTime.fraction;
      pendingBytes += packet.length;
      if (i === 0) {
        pendingFirstSeconds = receiveTime.seconds;
        pendingFirstFraction = receiveTime.fraction;
        if (immediate === undefined) immediate = setImmediate(onImmediate);
      } else if (flushIntervalUs > 0) {
        const ageUs =
          ((receiveTime.seconds - pendingFirstSeconds) | 0) * 1e6 + (receiveTime.fraction - pendingFirstFraction) / fractionPerUs;
        if (ageUs >= flushIntervalUs) {
          flush();
          return true;
        }
      }
      if (pendingCount >= batchSize) flush();
      return true;
    },
    setKeyset(bytes) {
      const decoded = decodeKeyset(bytes);
      if (!decoded.ok) throw new RangeError(`pool: keyset does not decode (${decoded.error})`);
      keysetBytes = bytes.slice();
      if (inline !== undefined) inline.setKeyset(keysetBytes);
      for (const h of workers) h?.worker.postMessage({ kind: 'keyset', bytes: keysetBytes });
    },
    setServerFields(fields) {
      serverFields = fields;
      if (inline !== undefined) inline.setServerFields(fields);
      for (const h of workers) h?.worker.postMessage({ kind: 'serverFields', fields });
    },
    onReply(cb) {
      replyCallback = cb;
    },
    stats() {
      let alive = 0;
      for (const h of workers) if (h !== undefined) alive++;
      const at = (w: number): number => tally[w] ?? 0;
      return {
        threads,
        workersAlive: alive,
        queueDepth: queueLimit - freeTop,
        submitted,
        replied,
        queueRejected,
        workerRestarts,
        lost,
        batches,
        outcomes: Array.from(tally.subarray(Tally.outcomes, Tally.outcomes + OUTCOME_COUNT)),
        keyAges: Array.from(tally.subarray(Tally.keyAges, Tally.keyAges + KEY_AGE_BUCKETS)),
        cookiesIssued: at(Tally.cookiesIssued),
        respondErrors: at(Tally.respondErrors),
        transmitStamps,
        transmitCompensationSumS,
        returnHopS: returnHop.valueS,
        sendCostS: sendCost.valueS,
      };
    },
    async terminateWorker(index) {
      const h = workers[index];
      if (h === undefined) return false;
      await h.worker.terminate();
      return true;
    },
    async close() {
      if (closed) return;
      closed = true;
      if (immediate !== undefined) clearImmediate(immediate);
      immediate = undefined;
      for (const t of restartTimers) if (t !== undefined) clearTimeout(t);
      const running = workers.filter((h): h is WorkerHandle => h !== undefined);
      workers.fill(undefined);
      await Promise.all(running.map((h) => h.worker.terminate()));
      for (let i = 0; i < pendingCount; i++) pendingPackets[i] = undefined;
      pendingCount = 0;
      backlog.length = 0;
      for (let slot = 0; slot < queueLimit; slot++) if (slotOwner[slot] !== SLOT_FREE) releaseSlot(slot);
    },
  };
}
