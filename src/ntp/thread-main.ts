/**
 * Entry of an NTP thread (started by src/ntp/threads.ts): owns one socket per `[[server]]` address,
 * answers every request inline with `respond()`, and reports counts to the main thread. It never logs.
 *
 * The sockets come from one of two backends, each in its own file:
 *  - thread-native.ts: the native addon (kernel receive timestamps, recvmmsg batches, shared memory);
 *  - thread-dgram.ts: Node's dgram with `reusePort` (Node ≥ 22.12), receive time read in the callback.
 * This file holds what both share: the counters, the report timer and the messages from the main thread.
 * Counts a thread had not reported yet when it died (at most one report interval) are lost with it.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { TALLY_WORDS } from './tally.js';
import { installInheritedAeadBackend } from '../runtime/aead-openssl.js';
import type { AdmissionSpec } from '../core/admission.js';
import type { ServerFields } from '../core/responder.js';
import {
  errorMessage,
  isThreadInit,
  isToThread,
  type FromThread,
  type ThreadBoundAddress,
  type ThreadEventKind,
  type ThreadInit,
  type ThreadReport,
} from './messages.js';

/** Counters of one thread since its last report, plus the first error message of each kind. */
export class ThreadCounters {
  received = 0;
  sent = 0;
  sendErrors = 0;
  socketErrors = 0;
  queueRejected = 0;
  truncated = 0;
  unstamped = 0;
  /** Gauge: packets in flight now. */
  queueDepth = 0;
  transmitStamps = 0;
  transmitCompensationSumS = 0;
  /** Deltas in ntp/tally.ts Tally layout. */
  readonly tally = new Float64Array(TALLY_WORDS);
  readonly #bounds: readonly number[] | undefined;
  readonly #durationCounts: Float64Array;
  #durationSumS = 0;
  #lastQueueDepth = 0;
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
      this.received > 0 || this.sent > 0 || this.sendErrors > 0 || this.socketErrors > 0 || this.queueRejected > 0 ||
      this.truncated > 0 || this.unstamped > 0 || this.transmitStamps > 0 || this.queueDepth !== this.#lastQueueDepth ||
      this.tally.some((v) => v !== 0);
    if (!changed) return { report: undefined, errors };
    const report: ThreadReport = {
      tally: Array.from(this.tally),
      received: this.received,
      sent: this.sent,
      sendErrors: this.sendErrors,
      socketErrors: this.socketErrors,
      queueRejected: this.queueRejected,
      truncated: this.truncated,
      unstamped: this.unstamped,
      queueDepth: this.queueDepth,
      durationCounts: Array.from(this.#durationCounts),
      durationSumS: this.#durationSumS,
      transmitStamps: this.transmitStamps,
      transmitCompensationSumS: this.transmitCompensationSumS,
    };
    this.#lastQueueDepth = this.queueDepth;
    this.received = this.sent = this.sendErrors = this.socketErrors = this.queueRejected = 0;
    this.truncated = this.unstamped = this.transmitStamps = this.transmitCompensationSumS = 0;
    this.tally.fill(0);
    this.#durationCounts.fill(0);
    this.#durationSumS = 0;
    return { report, errors };
  }
}

/** What a backend gives the thread once its sockets are bound. */
export interface ThreadBackendHandle {
  readonly addresses: readonly ThreadBoundAddress[];
  /** Installs a keyset; returns the reason when it does not decode. */
  setKeyset(bytes: Uint8Array): string | undefined;
  setServerFields(fields: ServerFields): void;
  /** Installs new access lists / limiter tables (SIGHUP), indexed by policy. */
  setAdmissions(specs: readonly AdmissionSpec[]): void;
  /** Moves the backend's own cumulative counts into the counters (called before each report). */
  collect(): void;
  /** Closes the sockets and finishes pending work. */
  close(): Promise<void>;
}

/** A backend's start result: bound, or which address failed and why. */
export type ThreadBackendStart = { ok: true; handle: ThreadBackendHandle } | { ok: false; where: string; message: string };

async function runThread(init: ThreadInit): Promise<void> {
  const port = parentPort;
  if (port === null) return;
  const post = (msg: FromThread): void => port.postMessage(msg);
  const counters = new ThreadCounters(init.durationBucketsS);
  installInheritedAeadBackend(); // before the keyset is decoded: its master keys take the installed AEAD
  // Imported here so a thread loads only the backend it runs.
  const started =
    init.backend === 'native'
      ? await (await import('./socket-native.js')).startNativeBackend(init, counters)
      : await (await import('./socket-dgram.js')).startDgramBackend(init, counters);
  if (!started.ok) {
    // Wait for the main thread to end this thread (it treats this as a start failure or a death).
    post({ kind: 'bindFailed', where: started.where, message: started.message });
    return;
  }
  const backend = started.handle;
  const report = (): void => {
    backend.collect();
    const { report: r, errors } = counters.take();
    if (r !== undefined) post({ kind: 'report', report: r });
    for (const [event, message] of errors) post({ kind: 'event', event, message });
  };
  const reportTimer = setInterval(report, init.reportIntervalMs);
  port.on('message', (msg: unknown) => {
    if (!isToThread(msg)) return;
    switch (msg.kind) {
      case 'keyset': {
        const reason = backend.setKeyset(msg.bytes);
        if (reason !== undefined) counters.noteError('keysetRejected', reason);
        return;
      }
      case 'serverFields':
        backend.setServerFields(msg.fields);
        return;
      case 'admissions':
        backend.setAdmissions(msg.specs);
        return;
      case 'stop':
        clearInterval(reportTimer);
        void backend.close().then(() => {
          report();
          post({ kind: 'stopped' });
        });
        return;
      default: {
        const unreachable: never = msg;
        return unreachable;
      }
    }
  });
  post({ kind: 'ready', addresses: backend.addresses });
}

if (!isMainThread && isThreadInit(workerData)) {
  runThread(workerData).catch((error: unknown) => {
    // A bug: rethrown outside the promise so the thread dies and the main thread replaces and counts it.
    setImmediate(() => {
      throw new Error(`ntp thread: ${errorMessage(error)}`, { cause: error });
    });
  });
}
