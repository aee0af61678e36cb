/**
 * NTP threads, main-thread role: starts N threads (src/ntp/thread-main.ts), each owning one SO_REUSEPORT socket
 * per `[[server]]` address and answering inline, with the native addon's sockets or dgram's.
 *
 *  - The first thread binds the configured ports; the others join the ports it got (port 0 in tests).
 *  - Keyset snapshots and server fields are broadcast to every thread.
 *  - The threads' periodic reports (deltas in the pool's Tally layout, packet counts, receive-to-send
 *    duration buckets) are added up here for the metrics.
 *  - A thread that dies is replaced (its sockets re-created by the new thread) and counted, with back-off
 *    when it keeps dying young.
 * Threads never log; they count, and report the first error message of each report interval.
 */
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { WallClock } from '../runtime/clock.js';
import type { AdmissionSpec } from '../core/admission.js';
import { decodeKeyset } from '../core/nts/keyset.js';
import { OUTCOME_COUNT, type ServerFields } from '../core/responder.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { KEY_AGE_BUCKETS, TALLY_WORDS, Tally, type ResponderPolicy } from './tally.js';
import {
  NTP_THREAD_ROLE,
  isFromThread,
  type FromThread,
  type ThreadBackend,
  type ThreadBoundAddress,
  type ThreadInit,
  type ThreadListen,
  type ThreadReport,
  type ToThread,
} from './messages.js';

/** One address to listen on (the same shape as udp-server.ts UdpListenOptions). */
export interface NtpThreadListenOptions {
  /** IP literal, e.g. "0.0.0.0", "::", "127.0.0.1". */
  readonly host: string;
  /** Port; 0 = any free port (the first thread's choice is then shared by the others). */
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  /** Responder policy index for packets from this listener (the `[[server]]` index; default 0). */
  readonly policy?: number;
}

/** Options for {@link startNtpThreads}. */
export interface NtpThreadsOptions {
  /** Receiver threads (≥ 1). */
  readonly threads: number;
  readonly listen: readonly NtpThreadListenOptions[];
  /** Encoded keyset (src/core/nts/keyset.ts), e.g. KeysetStore.bytes. */
  readonly keysetBytes: Uint8Array;
  readonly serverFields: ServerFields;
  /** Responder policies indexed by a listener's `policy` (index 0 must exist). */
  readonly policies: readonly ResponderPolicy[];
  /** Clock for receive and transmit timestamps; its shared anchor is passed to the threads. */
  readonly clock: WallClock;
  /** Packets per batch in each thread (≥ 1). */
  readonly batchSize: number;
  /** Age bound of a partial batch, microseconds (0 = none; batches also end with each I/O turn). */
  readonly flushIntervalUs: number;
  /** Packets in flight per thread beyond which new ones are dropped (`queue_full`). */
  readonly queueLimit: number;
  /** SO_RCVBUF in octets (default: the OS default). */
  readonly receiveBufferBytes?: number;
  /** Socket backend of every thread: the native addon, or dgram with reusePort (default "dgram"). */
  readonly backend?: ThreadBackend;
  /** Access list and shared rate-limit table per policy index (default: admit everything). */
  readonly admissions?: readonly AdmissionSpec[];
  /** Native backend: sendmsg per reply ("each", default) or sendmmsg per batch ("batch"). */
  readonly sendMode?: 'each' | 'batch';
  /** How often each thread reports its counters, milliseconds (default 250). */
  readonly reportIntervalMs?: number;
  /**
   * Upper bounds (seconds) of receive-to-send duration buckets, e.g. metrics' NTP_DURATION_BUCKETS_S;
   * counts come back with one extra +Inf bucket. Default: durations are not measured.
   */
  readonly durationBucketsS?: readonly number[];
  /** Operational events for the caller to log; threads never log. */
  readonly onEvent?: (event: NtpThreadEvent) => void;
}

/** Something the caller may want to log. */
export type NtpThreadEvent =
  | {
      readonly kind: 'threadExit';
      readonly index: number;
      readonly exitCode: number;
      readonly error: unknown;
      /** Delay before the replacement starts (0 = at once). */
      readonly restartInMs: number;
    }
  | { readonly kind: 'respondError'; readonly index: number; readonly message: string }
  | { readonly kind: 'keysetRejected'; readonly index: number; readonly reason: string }
  | { readonly kind: 'udpError'; readonly index: number; readonly where: 'socket' | 'send'; readonly message: string };

/** Cumulative counters of every receiver thread since start (for metrics collected as deltas). */
export interface NtpThreadsStats {
  /** Receiver threads configured. */
  readonly threads: number;
  /** Receiver threads running and bound. */
  readonly threadsAlive: number;
  /** Threads replaced after exiting (`ntsd_worker_restarts_total`). */
  readonly restarts: number;
  /** Datagrams received (`ntsd_ntp_packets_received_total`). */
  readonly received: number;
  /** Datagrams received per thread index (replacements continue their index's count). */
  readonly receivedPerThread: readonly number[];
  /** Replies handed to the kernel. */
  readonly sent: number;
  /** Send calls that failed. */
  readonly sendErrors: number;
  /** Socket 'error' events. */
  readonly socketErrors: number;
  /** Packets refused because a thread had `queueLimit` packets in flight (`queue_full`). */
  readonly queueRejected: number;
  /** Datagrams longer than a native receive slot, dropped (`ntsd_ntp_dropped_total{reason="truncated"}`). */
  readonly truncated: number;
  /** Datagrams without a kernel receive timestamp (native backend; the clock was read on arrival instead). */
  readonly unstamped: number;
  /** Packets in flight in all threads at their last reports (`ntsd_worker_queue_depth`). */
  readonly queueDepth: number;
  /** Counts per responder Outcome value (index = Outcome). */
  readonly outcomes: readonly number[];
  /** Cookie decodes per key-age bucket (protocol.ts keyAgeBucket/keyAgeLabel). */
  readonly keyAges: readonly number[];
  /** Cookies issued in NTS replies. */
  readonly cookiesIssued: number;
  /** Packets dropped because respond() threw (a bug). */
  readonly respondErrors: number;
  /** Receive-to-send durations per `durationBucketsS` bucket, +Inf last (empty when not measured). */
  readonly durationCounts: readonly number[];
  /** Sum of those durations, seconds. */
  readonly durationSumS: number;
  /** Transmit timestamps taken (replies and NAKs). */
  readonly transmitStamps: number;
  /** Sum of the compensation added to those timestamps, seconds. */
  readonly transmitCompensationSumS: number;
}

/** Running receiver threads. */
export interface NtpThreads {
  /** Bound addresses, one per listen address (every thread shares them), in listen order. */
  readonly addresses: readonly ThreadBoundAddress[];
  /** Broadcasts a new keyset (encoded) to every thread; throws RangeError if it does not decode. */
  setKeyset(bytes: Uint8Array): void;
  /** Broadcasts new server fields to every thread. */
  setServerFields(fields: ServerFields): void;
  /** Broadcasts new access lists / limiter tables to every thread (SIGHUP). */
  setAdmissions(specs: readonly AdmissionSpec[]): void;
  stats(): NtpThreadsStats;
  /** Terminates thread `index` as if it had crashed (tests). Resolves false if there is none. */
  terminateThread(index: number): Promise<boolean>;
  /** Closes every socket and stops the threads, after collecting their last reports. */
  close(): Promise<void>;
}

/** The thread entry module. */
const THREAD_ENTRY = new URL('./thread-main.js', import.meta.url);

/** A thread that lived shorter than this is "dying young" and restarted with back-off. */
const YOUNG_THREAD_MS = 1000;
const RESTART_BACKOFF_FIRST_MS = 100;
const RESTART_BACKOFF_MAX_MS = 5000;
/** Longest wait for a stopping thread's last report before it is terminated. */
const STOP_GRACE_MS = 1000;
const DEFAULT_REPORT_INTERVAL_MS = 250;

interface ThreadHandle {
  readonly index: number;
  readonly worker: Worker;
  readonly startedAtMs: number;
  ready: boolean;
  exited: boolean;
  lastError: unknown;
  /** Latest queue-depth gauge of this thread. */
  queueDepth: number;
  /** Settles the start-up wait (ready, bind failure or early exit). */
  onReady: ((result: { ok: true; addresses: readonly ThreadBoundAddress[] } | { ok: false; error: unknown }) => void) | undefined;
  /** Resolves the stop wait. */
  onStopped: (() => void) | undefined;
}

function checkInteger(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new RangeError(`ntp threads: ${name} must be an integer ≥ ${min}`);
}

/**
 * Starts `threads` receiver threads and resolves once every one is bound. Throws NtsdError BIND_FAILED when
 * a bind fails (for example without dgram reusePort: feature-test with udp-server.ts probeReusePort first),
 * WORKER_FAILED when a thread cannot start; no thread is left running then.
 */
export async function startNtpThreads(options: NtpThreadsOptions): Promise<NtpThreads> {
  checkInteger('threads', options.threads, 1);
  checkInteger('batchSize', options.batchSize, 1);
  checkInteger('queueLimit', options.queueLimit, 1);
  if (options.policies.length === 0) throw new RangeError('ntp threads: policies must not be empty');
  const initial = decodeKeyset(options.keysetBytes);
  if (!initial.ok) throw new RangeError(`ntp threads: keyset does not decode (${initial.error})`);

  const threads = options.threads;
  const onEvent = options.onEvent;
  const reportIntervalMs = options.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS;
  const bucketCount = options.durationBucketsS === undefined ? 0 : options.durationBucketsS.length + 1;
  let keysetBytes = options.keysetBytes.slice();
  let serverFields = options.serverFields;
  let admissions = options.admissions ?? [];

  const v4Ports = new Set(options.listen.filter((l) => l.family === 'IPv4').map((l) => l.port));
  let listen: ThreadListen[] = options.listen.map((l) => ({
    host: l.host,
    port: l.port,
    family: l.family,
    policy: l.policy ?? 0,
    // A v6 wildcard next to a v4 listener on the same port must not claim the v4 side as well.
    ipv6Only: l.family === 'IPv6' && v4Ports.has(l.port),
  }));

  // Cumulative counters.
  const tally = new Float64Array(TALLY_WORDS);
  const receivedPerThread = new Float64Array(threads);
  const durationCounts = new Float64Array(bucketCount);
  let durationSumS = 0;
  let sent = 0;
  let sendErrors = 0;
  let socketErrors = 0;
  let queueRejected = 0;
  let truncated = 0;
  let unstamped = 0;
  let restarts = 0;
  let transmitStamps = 0;
  let transmitCompensationSumS = 0;

  const handles: (ThreadHandle | undefined)[] = new Array<ThreadHandle | undefined>(threads).fill(undefined);
  const restartTimers: (NodeJS.Timeout | undefined)[] = new Array<NodeJS.Timeout | undefined>(threads).fill(undefined);
  const youngDeaths = new Int32Array(threads);
  let starting = true;
  let closed = false;

  const addReport = (h: ThreadHandle, r: ThreadReport): void => {
    for (let j = 0; j < TALLY_WORDS; j++) tally[j] = (tally[j] ?? 0) + (r.tally[j] ?? 0);
    receivedPerThread[h.index] = (receivedPerThread[h.index] ?? 0) + r.received;
    sent += r.sent;
    sendErrors += r.sendErrors;
    socketErrors += r.socketErrors;
    queueRejected += r.queueRejected;
    truncated += r.truncated;
    unstamped += r.unstamped;
    h.queueDepth = r.queueDepth;
    for (let i = 0; i < bucketCount; i++) durationCounts[i] = (durationCounts[i] ?? 0) + (r.durationCounts[i] ?? 0);
    durationSumS += r.durationSumS;
    transmitStamps += r.transmitStamps;
    transmitCompensationSumS += r.transmitCompensationSumS;
  };

  const onMessage = (h: ThreadHandle, msg: FromThread): void => {
    switch (msg.kind) {
      case 'ready':
        h.ready = true;
        h.onReady?.({ ok: true, addresses: msg.addresses });
        h.onReady = undefined;
        return;
      case 'bindFailed': {
        const error = new NtsdError(NtsdErrorCode.BIND_FAILED, `cannot bind UDP ${msg.where} (receiver thread ${h.index}): ${msg.message}`);
        h.lastError = error;
        if (h.onReady !== undefined) {
          h.onReady({ ok: false, error });
          h.onReady = undefined;
        }
        // The thread waits to be ended; after start-up this counts as a death and is retried with back-off.
        void h.worker.terminate();
        return;
      }
      case 'report':
        addReport(h, msg.report);
        return;
      case 'event':
        switch (msg.event) {
          case 'respondError':
            onEvent?.({ kind: 'respondError', index: h.index, message: msg.message });
            return;
          case 'keysetRejected':
            onEvent?.({ kind: 'keysetRejected', index: h.index, reason: msg.message });
            return;
          case 'socketError':
            onEvent?.({ kind: 'udpError', index: h.index, where: 'socket', message: msg.message });
            return;
          case 'sendError':
            onEvent?.({ kind: 'udpError', index: h.index, where: 'send', message: msg.message });
            return;
          default: {
            const unreachable: never = msg.event;
            return unreachable;
          }
        }
      case 'stopped':
        h.onStopped?.();
        h.onStopped = undefined;
        return;
      default: {
        const unreachable: never = msg;
        return unreachable;
      }
    }
  };

  const scheduleRestart = (index: number, restartInMs: number): void => {
    if (restartInMs === 0) {
      spawn(index);
      return;
    }
    const t = setTimeout(() => spawn(index), restartInMs);
    t.unref();
    restartTimers[index] = t;
  };

  const onExit = (h: ThreadHandle, exitCode: number): void => {
    h.exited = true;
    h.queueDepth = 0;
    if (handles[h.index] === h) handles[h.index] = undefined;
    h.onStopped?.();
    h.onStopped = undefined;
    if (h.onReady !== undefined) {
      h.onReady({ ok: false, error: h.lastError ?? new NtsdError(NtsdErrorCode.WORKER_FAILED, `receiver thread ${h.index} exited (${exitCode}) before binding`) });
      h.onReady = undefined;
    }
    if (closed || starting) return;
    restarts++;
    const young = !h.ready || performance.now() - h.startedAtMs < YOUNG_THREAD_MS;
    const deaths = young ? (youngDeaths[h.index] ?? 0) + 1 : 0;
    youngDeaths[h.index] = deaths;
    const restartInMs = deaths === 0 ? 0 : Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_FIRST_MS * 2 ** (deaths - 1));
    onEvent?.({ kind: 'threadExit', index: h.index, exitCode, error: h.lastError, restartInMs });
    scheduleRestart(h.index, restartInMs);
  };

  /** Starts thread `index`; returns its handle, or undefined when the thread could not be created. */
  function spawn(index: number): ThreadHandle | undefined {
    restartTimers[index] = undefined;
    if (closed) return undefined;
    const init: ThreadInit = {
      role: NTP_THREAD_ROLE,
      index,
      backend: options.backend ?? 'dgram',
      sendMode: options.sendMode ?? 'each',
      listen,
      receiveBufferBytes: options.receiveBufferBytes,
      keysetBytes,
      serverFields,
      policies: options.policies,
      admissions,
      clockShared: options.clock.shared,
      batchSize: options.batchSize,
      flushIntervalUs: options.flushIntervalUs,
      queueLimit: options.queueLimit,
      reportIntervalMs,
      durationBucketsS: options.durationBucketsS,
    };
    let worker: Worker;
    try {
      worker = new Worker(THREAD_ENTRY, { workerData: init, name: `ntsd-ntp-${index}` });
    } catch (error) {
      if (starting) throw new NtsdError(NtsdErrorCode.WORKER_FAILED, `cannot start receiver thread ${index}`, { cause: error });
      // Thread creation itself failed (resource limits): report and retry with back-off.
      const deaths = (youngDeaths[index] ?? 0) + 1;
      youngDeaths[index] = deaths;
      const restartInMs = Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_FIRST_MS * 2 ** (deaths - 1));
      onEvent?.({ kind: 'threadExit', index, exitCode: -1, error, restartInMs });
      scheduleRestart(index, restartInMs);
      return undefined;
    }
    const h: ThreadHandle = {
      index,
      worker,
      startedAtMs: performance.now(),
      ready: false,
      exited: false,
      lastError: undefined,
      queueDepth: 0,
      onReady: undefined,
      onStopped: undefined,
    };
    handles[index] = h;
    worker.on('message', (msg: unknown) => {
      if (!h.exited && isFromThread(msg)) onMessage(h, msg);
    });
    worker.on('error', (error: unknown) => {
      h.lastError = error;
    });
    worker.on('exit', (exitCode: number) => onExit(h, exitCode));
    return h;
  }

  const whenReady = (h: ThreadHandle): Promise<readonly ThreadBoundAddress[]> =>
    new Promise((resolve, reject) => {
      h.onReady = (result) => (result.ok ? resolve(result.addresses) : reject(result.error));
    });

  const stopThread = async (h: ThreadHandle): Promise<void> => {
    // A thread that never bound has no sockets and nothing to report.
    if (h.ready && !h.exited) {
      const stopped = new Promise<void>((resolve) => {
        h.onStopped = resolve;
      });
      h.worker.postMessage({ kind: 'stop' } satisfies ToThread);
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, STOP_GRACE_MS);
      });
      await Promise.race([stopped, grace]);
      clearTimeout(timer);
    }
    await h.worker.terminate();
  };

  const stopAll = async (): Promise<void> => {
    closed = true;
    for (const t of restartTimers) if (t !== undefined) clearTimeout(t);
    restartTimers.fill(undefined);
    const running = handles.filter((h): h is ThreadHandle => h !== undefined);
    handles.fill(undefined);
    await Promise.all(running.map(stopThread));
  };

  // Start-up: the first thread binds the configured ports; the others join the ports it actually got.
  let addresses: readonly ThreadBoundAddress[];
  try {
    const first = spawn(0);
    if (first === undefined) throw new NtsdError(NtsdErrorCode.WORKER_FAILED, 'cannot start receiver thread 0');
    addresses = await whenReady(first);
    listen = listen.map((l, i) => ({ ...l, port: addresses[i]?.port ?? l.port }));
    const rest: Promise<readonly ThreadBoundAddress[]>[] = [];
    for (let i = 1; i < threads; i++) {
      const h = spawn(i);
      if (h === undefined) throw new NtsdError(NtsdErrorCode.WORKER_FAILED, `cannot start receiver thread ${i}`);
      rest.push(whenReady(h));
    }
    const settled = await Promise.allSettled(rest);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  } catch (error) {
    await stopAll();
    throw error;
  }
  starting = false;

  return {
    addresses,
    setKeyset(bytes) {
      const decoded = decodeKeyset(bytes);
      if (!decoded.ok) throw new RangeError(`ntp threads: keyset does not decode (${decoded.error})`);
      keysetBytes = bytes.slice();
      for (const h of handles) h?.worker.postMessage({ kind: 'keyset', bytes: keysetBytes } satisfies ToThread);
    },
    setServerFields(fields) {
      serverFields = fields;
      for (const h of handles) h?.worker.postMessage({ kind: 'serverFields', fields } satisfies ToThread);
    },
    setAdmissions(specs) {
      admissions = specs;
      for (const h of handles) h?.worker.postMessage({ kind: 'admissions', specs } satisfies ToThread);
    },
    stats() {
      let alive = 0;
      let queueDepth = 0;
      for (const h of handles) {
        if (h !== undefined && h.ready && !h.exited) alive++;
        queueDepth += h?.queueDepth ?? 0;
      }
      return {
        threads,
        threadsAlive: alive,
        restarts,
        received: receivedPerThread.reduce((a, b) => a + b, 0),
        receivedPerThread: Array.from(receivedPerThread),
        sent,
        sendErrors,
        socketErrors,
        queueRejected,
        truncated,
        unstamped,
        queueDepth,
        outcomes: Array.from(tally.subarray(Tally.outcomes, Tally.outcomes + OUTCOME_COUNT)),
        keyAges: Array.from(tally.subarray(Tally.keyAges, Tally.keyAges + KEY_AGE_BUCKETS)),
        cookiesIssued: tally[Tally.cookiesIssued] ?? 0,
        respondErrors: tally[Tally.respondErrors] ?? 0,
        durationCounts: Array.from(durationCounts),
        durationSumS,
        transmitStamps,
        transmitCompensationSumS,
      };
    },
    async terminateThread(index) {
      const h = handles[index];
      if (h === undefined) return false;
      await h.worker.terminate();
      return true;
    },
    close: stopAll,
  };
}

