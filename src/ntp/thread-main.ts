/**
 * Entry of an NTP thread (started by src/ntp/threads.ts): owns one socket per `[[server]]` address,
 * answers every request inline through core/serve.ts, and reports counts to the main thread. It never logs.
 *
 * The sockets come from one of two sibling backends that share ntp/thread-responder.ts per packet:
 *  - socket-native.ts: the native addon (kernel receive timestamps, recvmmsg batches, shared memory);
 *  - socket-dgram.ts: Node's dgram (with `reusePort` where several threads share a port), receive time
 *    read first in the callback.
 * This file holds the report timer and the messages from the main thread. Counts a thread had not
 * reported yet when it died (at most one report interval) are lost with it.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { installInheritedAeadBackend } from '../runtime/aead-openssl.js';
import { ThreadCounters } from './counters.js';
import type { ThreadResponder } from './thread-responder.js';
import { errorMessage, isThreadInit, isToThread, type FromThread, type ThreadBoundAddress, type ThreadInit } from './messages.js';

/** What a backend gives the thread once its sockets are bound. */
export interface ThreadBackendHandle {
  readonly addresses: readonly ThreadBoundAddress[];
  /** The thread's responder (keyset, server fields and admissions are installed there). */
  readonly responder: ThreadResponder;
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
        const reason = backend.responder.setKeyset(msg.bytes);
        if (reason !== undefined) counters.noteError('keysetRejected', reason);
        return;
      }
      case 'serverFields':
        backend.responder.setServerFields(msg.fields);
        return;
      case 'admissions':
        backend.responder.setAdmissions(msg.specs);
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
