/**
 * Messages and buffer layouts between the pool (main thread) and its worker threads.
 *
 * Packets travel in batches: one ArrayBuffer per batch, transferred (not copied) to the worker, which
 * writes each reply over its request (a reply is never longer than its request, RFC 8915 §5.5/§8.4)
 * plus an outcome tally into the header, and transfers the same buffer back. One postMessage per batch
 * in each direction, no per-packet messages.
 *
 * Batch buffer layout (u32 words in the platform's byte order; both ends run in one process):
 *
 *   word 0                     count: number of entries
 *   word 1                     transmit stamps: replies whose transmit timestamp was taken (worker)
 *   words 2..3 (f64 slot 1)    done time: monotonic seconds (clock.ts monotonicS) when the worker
 *                              finished the batch, for the return-hop estimate (0 = not set)
 *   words 4..5 (f64 slot 2)    sum of the transmit compensation added to those stamps, seconds (worker)
 *   words 6 .. 6+TALLY_WORDS   tally, written by the worker (see Tally below)
 *   then count × ENTRY_WORDS   entries: slot | policy | length | recvSeconds | recvFraction | dataOffset
 *   then the packet bytes, at each entry's dataOffset (octets from the start of the buffer)
 *
 * `slot` indexes the main thread's reply-target table; the worker never interprets it. `length` is the
 * request length on the way in and the reply length on the way back (0 = no reply, a counted drop).
 */
import { OUTCOME_COUNT } from '../core/responder.js';
import type { ServerFields } from '../core/responder.js';

/** Index of the entry count in the batch header. */
export const BATCH_COUNT_WORD = 0;
/** Index of the transmit-stamp count in the batch header (written by the worker). */
export const BATCH_STAMPS_WORD = 1;
/** Float64 slots of the batch header (indexes into a Float64Array over the buffer's first BATCH_F64_SLOTS × 8 octets). */
export const BatchF64 = {
  /** Monotonic seconds when the worker finished the batch (0 = not set). */
  doneS: 1,
  /** Sum of the transmit compensation added to this batch's stamps, seconds. */
  compensationSumS: 2,
} as const;
/** Float64 slots covered by BatchF64 (slot 0 overlaps words 0 and 1). */
export const BATCH_F64_SLOTS = 3;
/** First tally word in the batch header. */
export const BATCH_TALLY_WORD = BATCH_F64_SLOTS * 2;

/** Highest key generation counted on its own (older ones share the last bucket). */
export const KEY_AGE_MAX_TRACKED = 15;
/** Tally layout: word offsets relative to the tally's start. */
export const Tally = {
  /** OUTCOME_COUNT words: one counter per responder Outcome value. */
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
/** Number of u32 words in a tally. */
export const TALLY_WORDS = Tally.respondErrors + 1;

/** Bucket index for a key age (-1 = next, 0 = current, 1..n = stale generations). */
export function keyAgeBucket(age: number): number {
  if (age < 0) return 0;
  return age > KEY_AGE_MAX_TRACKED ? KEY_AGE_MAX_TRACKED + 2 : age + 1;
}

/** Label for a key-age bucket index: "next", "0".."15", "older". */
export function keyAgeLabel(bucket: number): string {
  if (bucket === 0) return 'next';
  if (bucket >= KEY_AGE_MAX_TRACKED + 2) return 'older';
  return String(bucket - 1);
}

/** Words per batch entry. */
export const ENTRY_WORDS = 6;
/** Word offsets inside one entry. */
export const Entry = {
  slot: 0,
  policy: 1,
  length: 2,
  recvSeconds: 3,
  recvFraction: 4,
  dataOffset: 5,
} as const;
/** Octets of the batch header. */
export const BATCH_HEADER_BYTES = (BATCH_TALLY_WORD + TALLY_WORDS) * 4;
/** Octets of one batch entry. */
export const ENTRY_BYTES = ENTRY_WORDS * 4;
/** Largest UDP payload over IPv4 (65535 − 20 − 8); also bounds every request we accept. */
export const MAX_DATAGRAM_BYTES = 65507;

/** Word index (into a Uint32Array over the batch) where entry `i` begins. */
export function entryWord(i: number): number {
  return BATCH_TALLY_WORD + TALLY_WORDS + i * ENTRY_WORDS;
}

/** Octets a batch needs for `count` packets totalling `payloadBytes`. */
export function batchBytes(count: number, payloadBytes: number): number {
  return BATCH_HEADER_BYTES + count * ENTRY_BYTES + payloadBytes;
}

/** Per-listener responder policy (`[[server]] require-nts`, `accept-ntp-versions`). */
export interface ResponderPolicy {
  /** Drop plain NTP requests. */
  readonly requireNts: boolean;
  /** NTP versions answered. */
  readonly acceptNtpVersions: readonly number[];
}

/** What a worker needs to start (passed as workerData). */
export interface WorkerInit {
  /** Marker that makes worker.ts run its message loop. */
  readonly role: typeof POOL_WORKER_ROLE;
  /** Encoded keyset (src/core/nts/keyset.ts format). */
  readonly keysetBytes: Uint8Array;
  readonly serverFields: ServerFields;
  /** Policies indexed by an entry's `policy` word. */
  readonly policies: readonly ResponderPolicy[];
  /** Shared anchor of the main thread's WallClock (src/runtime/clock.ts). */
  readonly clockShared: SharedArrayBuffer;
  /** The main thread's return-path estimates (CompensationSlot layout), read at the start of each batch. */
  readonly compensationShared: SharedArrayBuffer;
  /** Add the estimated clock-read-to-departure delay to transmit timestamps (false: measure only). */
  readonly transmitCompensation: boolean;
}

// ---------------------------------------------------------------------------------------------
// Transmit-timestamp compensation: what the main thread shares with the workers
// ---------------------------------------------------------------------------------------------

/** Number of batch size classes the return hop is estimated by (batchSizeClass). */
export const BATCH_SIZE_CLASS_COUNT = 5;

/**
 * Size class of a batch of `count` packets for the return-hop estimate: 1, 2–3, 4–7, 8–15, 16 and more.
 * The hop depends on what the main thread is doing when the batch comes back, and that correlates with
 * the batch's size: under bursty arrivals the small batch that opens a burst returns while the main
 * thread is still reading the rest of the burst, and the large one that follows returns to an idle thread.
 */
export function batchSizeClass(count: number): number {
  if (count <= 1) return 0;
  const c = 31 - Math.clz32(count);
  return c < BATCH_SIZE_CLASS_COUNT ? c : BATCH_SIZE_CLASS_COUNT - 1;
}

/**
 * Float64 slots of the compensation buffer (a SharedArrayBuffer, like the clock anchor in clock.ts):
 * written by the thread that sends replies, read by every batch processor at the start of a batch.
 * A slot reads 0 until its estimate is warmed up.
 */
export const CompensationSlot = {
  /**
   * First of BATCH_SIZE_CLASS_COUNT slots: batch done in the worker → main starts delivering its replies,
   * per batchSizeClass (EWMA, seconds; the all-batches estimate until a class has its own).
   */
  returnHopS: 0,
  /** Main-thread time per reply delivered (reply callback incl. the socket send; EWMA, seconds). */
  sendCostS: BATCH_SIZE_CLASS_COUNT,
} as const;
/** Number of Float64 slots in the compensation buffer. */
export const COMPENSATION_SLOTS = BATCH_SIZE_CLASS_COUNT + 1;
/** Upper bound of the compensation added to one transmit timestamp, seconds (2 ms). */
export const MAX_TRANSMIT_COMPENSATION_S = 0.002;

/** workerData marker of pool workers. */
export const POOL_WORKER_ROLE = 'ntsd-pool-worker';

/** Main → worker messages. */
export type ToWorker =
  | { readonly kind: 'batch'; readonly buffer: ArrayBuffer }
  | { readonly kind: 'keyset'; readonly bytes: Uint8Array }
  | { readonly kind: 'serverFields'; readonly fields: ServerFields };

/** Worker → main messages. */
export type FromWorker =
  | {
      readonly kind: 'done';
      readonly buffer: ArrayBuffer;
      /** First respond() exception message in this batch, when one was thrown (the pool reports it; workers do not log). */
      readonly error?: string;
    }
  | { readonly kind: 'keysetRejected'; readonly reason: string };

/** True when `data` is a WorkerInit (narrowing workerData, which is `unknown` to us). */
export function isWorkerInit(data: unknown): data is WorkerInit {
  return typeof data === 'object' && data !== null && (data as { role?: unknown }).role === POOL_WORKER_ROLE;
}

/** Narrows a message from a worker. */
export function isFromWorker(msg: unknown): msg is FromWorker {
  if (typeof msg !== 'object' || msg === null) return false;
  const kind = (msg as { kind?: unknown }).kind;
  return kind === 'done' || kind === 'keysetRejected';
}

/** Narrows a message to a worker. */
export function isToWorker(msg: unknown): msg is ToWorker {
  if (typeof msg !== 'object' || msg === null) return false;
  const kind = (msg as { kind?: unknown }).kind;
  return kind === 'batch' || kind === 'keyset' || kind === 'serverFields';
}
