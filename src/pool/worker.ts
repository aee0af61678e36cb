/**
 * The compute side of the pool: turns a batch of requests into a batch of replies with `respond()`.
 *
 * `createBatchProcessor` is the single place that builds the responder context and walks a batch; the
 * worker thread below and the inline mode (`threads = 0`, in pool.ts) both use it, so the two modes run
 * the very same code. Workers compute and count; they neither log nor own metrics: the tally travels
 * back inside the batch buffer (protocol.ts).
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { randomFillSync } from 'node:crypto';
import { WallClock, type NtpTime } from '../clock.js';
import { decodeKeyset } from '../core/nts/keyset.js';
import { KEY_AGE_NONE, createResponderContext, respond, type ResponderContext, type ServerFields } from '../core/responder.js';
import {
  BATCH_COUNT_WORD,
  BATCH_TALLY_WORD,
  Entry,
  MAX_DATAGRAM_BYTES,
  TALLY_WORDS,
  Tally,
  entryWord,
  isToWorker,
  isWorkerInit,
  keyAgeBucket,
  type ResponderPolicy,
  type ToWorker,
} from './protocol.js';

/** Inputs of a batch processor. */
export interface BatchProcessorInit {
  /** Encoded keyset; must decode (the pool checks before handing it over). */
  readonly keysetBytes: Uint8Array;
  readonly serverFields: ServerFields;
  /** Policies indexed by an entry's `policy` word (index 0 must exist). */
  readonly policies: readonly ResponderPolicy[];
  /** Clock for transmit timestamps (shares its anchor across threads). */
  readonly clock: WallClock;
}

/** Runs respond() over batches; owns one responder context and one scratch buffer. */
export interface BatchProcessor {
  /** Decodes and installs a keyset; returns the decode error, or undefined on success. */
  setKeyset(bytes: Uint8Array): string | undefined;
  /** Installs new server fields (stratum, leap, …) for the following replies. */
  setServerFields(fields: ServerFields): void;
  /**
   * Answers every entry of the batch in place: reply bytes over the request, `length` = reply length
   * (0 = drop), tally filled. Returns the first respond() exception message, if any.
   */
  process(buffer: ArrayBuffer): string | undefined;
}

function fillRandom(target: Uint8Array): void {
  randomFillSync(target);
}

/** Creates a processor; throws if the initial keyset does not decode (a bug in the caller). */
export function createBatchProcessor(init: BatchProcessorInit): BatchProcessor {
  const decoded = decodeKeyset(init.keysetBytes);
  if (!decoded.ok) throw new Error(`pool: initial keyset does not decode (${decoded.error})`);
  const clock = init.clock;
  const nowTarget: NtpTime = { seconds: 0, fraction: 0 };
  const policies = init.policies;
  const defaultPolicy = policies[0];
  if (defaultPolicy === undefined) throw new Error('pool: at least one responder policy is required');
  const ctx: ResponderContext = createResponderContext({
    keyset: decoded.keyset,
    serverFields: init.serverFields,
    // The responder copies the two halves out at once, so one reused target object is enough.
    now: () => clock.nowNtp(nowTarget),
    fillRandom,
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
      const count = words[BATCH_COUNT_WORD] ?? 0;
      words.fill(0, BATCH_TALLY_WORD, BATCH_TALLY_WORD + TALLY_WORDS);
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
      }
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
  const processor = createBatchProcessor({
    keysetBytes: init.keysetBytes,
    serverFields: init.serverFields,
    policies: init.policies,
    clock: new WallClock(init.clockShared),
  });
  const port = parentPort;
  port.on('message', (msg: unknown) => {
    if (isToWorker(msg)) onWorkerMessage(processor, msg);
  });
}
