/**
 * Receiver threads for NTP/NTS (`[worker-pool] receive-threads`): several threads, each with its own
 * SO_REUSEPORT socket per listen address, so receiving can grow past one I/O thread.
 *
 * The default design (io/udp-server.ts + pool/) receives and stamps on the main thread and leaves the
 * crypto to pool workers; it tops out at one thread of dgram work (≈10 µs per packet). Here each thread
 * does all of it for the clients the kernel hashes to it (4-tuple flow hash over the sockets of one
 * SO_REUSEPORT group):
 *  - the receive timestamp is the first statement of the 'message' callback;
 *  - the packet goes to a pool in inline mode (`threads = 0`): the same batching, queue limit and
 *    `createBatchProcessor` code the pool workers run, flushed at the end of the I/O turn;
 *  - the reply leaves from the socket that received the request;
 *  - transmit timestamps are compensated for the rest of the batch and the sends before them by the
 *    pool's own measurements (pool/worker.ts; the return hop of inline mode is ≈ 0).
 *
 * The trade-off, and why this is opt-in: a thread that is saturated reads its next datagram only after
 * the crypto of the batch before it, so under load a packet's receive timestamp is taken later than the
 * packet arrived (the timestamp is still taken before its own processing, but the queueing delay in the
 * socket buffer is not in it). The main-thread design stamps every packet promptly because the crypto
 * runs elsewhere. Worth it only where one I/O thread is the bottleneck, i.e. on machines with many cores.
 *
 * dgram `reusePort` exists from Node 22.12; on Node 20 the option is ignored and a second bind to the
 * port fails, so the caller feature-tests first (udp-server.ts `probeReusePort`) and uses the main-thread
 * design without it. Linux only lets sockets of the same effective user join a reuseport group.
 *
 * This module has two roles, like io/ke-server.ts:
 *  - main thread: `startUdpReceivers` starts the threads (the first one binds, the others join the ports
 *    it got, which matters for port 0), broadcasts keyset snapshots and server fields, adds up the
 *    threads' periodic reports (deltas in the pool's Tally layout plus packet counts and receive-to-send
 *    duration buckets), and replaces a thread that dies (counted, with back-off if it keeps dying young);
 *  - receiver thread (`workerData.role === RECEIVER_ROLE`): the sockets and the inline pool. It never logs;
 *    it counts, and reports the first error message of each report interval.
 * Counts a thread had not reported yet when it died (at most one report interval) are lost with it.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { WallClock, type NtpTime } from '../clock.js';
import { decodeKeyset } from '../core/nts/keyset.js';
import { OUTCOME_COUNT, type ServerFields } from '../core/responder.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { bindSocket, closeSocket, literalLookup, type SocketOptionsWithReusePort } from '../udp-socket.js';
import { createPool, type PoolStats } from '../pool/pool.js';
import { KEY_AGE_BUCKETS, TALLY_WORDS, Tally, type ResponderPolicy } from '../pool/protocol.js';

/** One address to listen on (the same shape as udp-server.ts UdpListenOptions). */
export interface ReceiverListenOptions {
  /** IP literal, e.g. "0.0.0.0", "::", "127.0.0.1". */
  readonly host: string;
  /** Port; 0 = any free port (the first thread's choice is then shared by the others). */
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  /** Responder policy index for packets from this listener (the `[[server]]` index; default 0). */
  readonly policy?: number;
}

/** Options for {@link startUdpReceivers}. */
export interface UdpReceiversOptions {
  /** Receiver threads (≥ 1). */
  readonly threads: number;
  readonly listen: readonly ReceiverListenOptions[];
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
  /** How often each thread reports its counters, milliseconds (default 250). */
  readonly reportIntervalMs?: number;
  /**
   * Upper bounds (seconds) of receive-to-send duration buckets, e.g. metrics' NTP_DURATION_BUCKETS_S;
   * counts come back with one extra +Inf bucket. Default: durations are not measured.
   */
  readonly durationBucketsS?: readonly number[];
  /** Operational events for the caller to log; threads never log. */
  readonly onEvent?: (event: ReceiverEvent) => void;
}

/** Something the caller may want to log. */
export type ReceiverEvent =
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

/** A bound socket's local address. */
export interface ReceiverBoundAddress {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
}

/** Cumulative counters of every receiver thread since start (for metrics collected as deltas). */
export interface UdpReceiversStats {
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
export interface UdpReceivers {
  /** Bound addresses, one per listen address (every thread shares them), in listen order. */
  readonly addresses: readonly ReceiverBoundAddress[];
  /** Broadcasts a new keyset (encoded) to every thread; throws RangeError if it does not decode. */
  setKeyset(bytes: Uint8Array): void;
  /** Broadcasts new server fields to every thread. */
  setServerFields(fields: ServerFields): void;
  stats(): UdpReceiversStats;
  /** Terminates thread `index` as if it had crashed (tests). Resolves false if there is none. */
  terminateThread(index: number): Promise<boolean>;
  /** Closes every socket and stops the threads, after collecting their last reports. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Messages between the roles
// ---------------------------------------------------------------------------------------------

/** workerData marker of receiver threads. */
const RECEIVER_ROLE = 'ntsd-udp-receiver';

/** One listen address as a thread binds it (ports resolved, v6-only decided on main). */
interface ThreadListen {
  readonly host: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  readonly policy: number;
  readonly ipv6Only: boolean;
}

interface ReceiverInit {
  readonly role: typeof RECEIVER_ROLE;
  readonly index: number;
  readonly listen: readonly ThreadListen[];
  readonly receiveBufferBytes: number | undefined;
  readonly keysetBytes: Uint8Array;
  readonly serverFields: ServerFields;
  readonly policies: readonly ResponderPolicy[];
  readonly clockShared: SharedArrayBuffer;
  readonly batchSize: number;
  readonly flushIntervalUs: number;
  readonly queueLimit: number;
  readonly reportIntervalMs: number;
  readonly durationBucketsS: readonly number[] | undefined;
}

/** A thread's counters since its previous report. */
interface ReceiverReport {
  /** TALLY_WORDS deltas in protocol.ts Tally layout (outcomes, key ages, cookies issued, respond errors). */
  readonly tally: readonly number[];
  readonly received: number;
  readonly sent: number;
  readonly sendErrors: number;
  readonly socketErrors: number;
  readonly queueRejected: number;
  /** Gauge: packets in flight now. */
  readonly queueDepth: number;
  readonly durationCounts: readonly number[];
  readonly durationSumS: number;
  readonly transmitStamps: number;
  readonly transmitCompensationSumS: number;
}

type ToReceiver =
  | { readonly kind: 'keyset'; readonly bytes: Uint8Array }
  | { readonly kind: 'serverFields'; readonly fields: ServerFields }
  | { readonly kind: 'stop' };

type FromReceiver =
  | { readonly kind: 'ready'; readonly addresses: readonly ReceiverBoundAddress[] }
  | { readonly kind: 'bindFailed'; readonly where: string; readonly message: string }
  | { readonly kind: 'report'; readonly report: ReceiverReport }
  | { readonly kind: 'event'; readonly event: 'respondError' | 'keysetRejected' | 'socketError' | 'sendError'; readonly message: string }
  | { readonly kind: 'stopped' };

const TO_KINDS: ReadonlySet<string> = new Set(['keyset', 'serverFields', 'stop']);
const FROM_KINDS: ReadonlySet<string> = new Set(['ready', 'bindFailed', 'report', 'event', 'stopped']);

function hasKind(msg: unknown, kinds: ReadonlySet<string>): boolean {
  if (typeof msg !== 'object' || msg === null) return false;
  const kind = (msg as { kind?: unknown }).kind;
  return typeof kind === 'string' && kinds.has(kind);
}

/** Narrows a message from a receiver thread. */
function isFromReceiver(msg: unknown): msg is FromReceiver {
  return hasKind(msg, FROM_KINDS);
}

/** Narrows a message to a receiver thread. */
function isToReceiver(msg: unknown): msg is ToReceiver {
  return hasKind(msg, TO_KINDS);
}

function isReceiverInit(data: unknown): data is ReceiverInit {
  return typeof data === 'object' && data !== null && (data as { role?: unknown }).role === RECEIVER_ROLE;
}


function formatWhere(host: string, port: number, family: 'IPv4' | 'IPv6'): string {
  return family === 'IPv6' ? `[${host}]:${port}` : `${host}:${port}`;
}

// ---------------------------------------------------------------------------------------------
// Main-thread role
// ---------------------------------------------------------------------------------------------

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
  onReady: ((result: { ok: true; addresses: readonly ReceiverBoundAddress[] } | { ok: false; error: unknown }) => void) | undefined;
  /** Resolves the stop wait. */
  onStopped: (() => void) | undefined;
}

function checkInteger(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new RangeError(`udp-receiver: ${name} must be an integer ≥ ${min}`);
}

/**
 * Starts `threads` receiver threads and resolves once every one is bound. Throws NtsdError BIND_FAILED when
 * a bind fails (for example without dgram reusePort: feature-test with udp-server.ts probeReusePort first),
 * WORKER_FAILED when a thread cannot start; no thread is left running then.
 */
export async function startUdpReceivers(options: UdpReceiversOptions): Promise<UdpReceivers> {
  checkInteger('threads', options.threads, 1);
  checkInteger('batchSize', options.batchSize, 1);
  checkInteger('queueLimit', options.queueLimit, 1);
  if (options.policies.length === 0) throw new RangeError('udp-receiver: policies must not be empty');
  const initial = decodeKeyset(options.keysetBytes);
  if (!initial.ok) throw new RangeError(`udp-receiver: keyset does not decode (${initial.error})`);

  const threads = options.threads;
  const onEvent = options.onEvent;
  const reportIntervalMs = options.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS;
  const bucketCount = options.durationBucketsS === undefined ? 0 : options.durationBucketsS.length + 1;
  let keysetBytes = options.keysetBytes.slice();
  let serverFields = options.serverFields;

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
  let restarts = 0;
  let transmitStamps = 0;
  let transmitCompensationSumS = 0;

  const handles: (ThreadHandle | undefined)[] = new Array<ThreadHandle | undefined>(threads).fill(undefined);
  const restartTimers: (NodeJS.Timeout | undefined)[] = new Array<NodeJS.Timeout | undefined>(threads).fill(undefined);
  const youngDeaths = new Int32Array(threads);
  let starting = true;
  let closed = false;

  const addReport = (h: ThreadHandle, r: ReceiverReport): void => {
    for (let j = 0; j < TALLY_WORDS; j++) tally[j] = (tally[j] ?? 0) + (r.tally[j] ?? 0);
    receivedPerThread[h.index] = (receivedPerThread[h.index] ?? 0) + r.received;
    sent += r.sent;
    sendErrors += r.sendErrors;
    socketErrors += r.socketErrors;
    queueRejected += r.queueRejected;
    h.queueDepth = r.queueDepth;
    for (let i = 0; i < bucketCount; i++) durationCounts[i] = (durationCounts[i] ?? 0) + (r.durationCounts[i] ?? 0);
    durationSumS += r.durationSumS;
    transmitStamps += r.transmitStamps;
    transmitCompensationSumS += r.transmitCompensationSumS;
  };

  const onMessage = (h: ThreadHandle, msg: FromReceiver): void => {
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
    const init: ReceiverInit = {
      role: RECEIVER_ROLE,
      index,
      listen,
      receiveBufferBytes: options.receiveBufferBytes,
      keysetBytes,
      serverFields,
      policies: options.policies,
      clockShared: options.clock.shared,
      batchSize: options.batchSize,
      flushIntervalUs: options.flushIntervalUs,
      queueLimit: options.queueLimit,
      reportIntervalMs,
      durationBucketsS: options.durationBucketsS,
    };
    let worker: Worker;
    try {
      worker = new Worker(new URL(import.meta.url), { workerData: init, name: `ntsd-udp-${index}` });
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
      if (!h.exited && isFromReceiver(msg)) onMessage(h, msg);
    });
    worker.on('error', (error: unknown) => {
      h.lastError = error;
    });
    worker.on('exit', (exitCode: number) => onExit(h, exitCode));
    return h;
  }

  const whenReady = (h: ThreadHandle): Promise<readonly ReceiverBoundAddress[]> =>
    new Promise((resolve, reject) => {
      h.onReady = (result) => (result.ok ? resolve(result.addresses) : reject(result.error));
    });

  const stopThread = async (h: ThreadHandle): Promise<void> => {
    // A thread that never bound has no sockets and nothing to report.
    if (h.ready && !h.exited) {
      const stopped = new Promise<void>((resolve) => {
        h.onStopped = resolve;
      });
      h.worker.postMessage({ kind: 'stop' } satisfies ToReceiver);
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
  let addresses: readonly ReceiverBoundAddress[];
  try {
    const first = spawn(0);
    if (first === undefined) throw new NtsdError(NtsdErrorCode.WORKER_FAILED, 'cannot start receiver thread 0');
    addresses = await whenReady(first);
    listen = listen.map((l, i) => ({ ...l, port: addresses[i]?.port ?? l.port }));
    const rest: Promise<readonly ReceiverBoundAddress[]>[] = [];
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
      if (!decoded.ok) throw new RangeError(`udp-receiver: keyset does not decode (${decoded.error})`);
      keysetBytes = bytes.slice();
      for (const h of handles) h?.worker.postMessage({ kind: 'keyset', bytes: keysetBytes } satisfies ToReceiver);
    },
    setServerFields(fields) {
      serverFields = fields;
      for (const h of handles) h?.worker.postMessage({ kind: 'serverFields', fields } satisfies ToReceiver);
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

// ---------------------------------------------------------------------------------------------
// Receiver-thread role
// ---------------------------------------------------------------------------------------------

/** Where a reply goes: the receiving socket and the client's address. */
interface ThreadReplyTarget {
  readonly socket: Socket;
  readonly address: string;
  readonly port: number;
}

const TWO_POW_32 = 4_294_967_296;


function errorMessage(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

async function runReceiverThread(init: ReceiverInit): Promise<void> {
  const port = parentPort;
  if (port === null) return;
  const post = (msg: FromReceiver): void => port.postMessage(msg);
  const clock = new WallClock(init.clockShared);
  const bounds = init.durationBucketsS;

  // Counters since the last report, plus the first error message of the interval per kind.
  let received = 0;
  let sent = 0;
  let sendErrors = 0;
  let socketErrors = 0;
  const durationCounts = new Float64Array(bounds === undefined ? 0 : bounds.length + 1);
  let durationSumS = 0;
  const firstErrors = new Map<'respondError' | 'keysetRejected' | 'socketError' | 'sendError', string>();
  const noteError = (event: 'respondError' | 'keysetRejected' | 'socketError' | 'sendError', message: string): void => {
    if (!firstErrors.has(event)) firstErrors.set(event, message);
  };

  const pool = createPool<ThreadReplyTarget>({
    threads: 0,
    batchSize: init.batchSize,
    flushIntervalUs: init.flushIntervalUs,
    queueLimit: init.queueLimit,
    keysetBytes: init.keysetBytes,
    serverFields: init.serverFields,
    policies: init.policies,
    clock,
    onEvent: (event) => {
      switch (event.kind) {
        case 'respondError':
          noteError('respondError', event.message);
          return;
        case 'replyCallbackError':
          noteError('sendError', errorMessage(event.error));
          return;
        case 'keysetRejected':
          noteError('keysetRejected', event.reason);
          return;
        case 'workerExit':
          return; // inline mode has no workers
        default: {
          const unreachable: never = event;
          return unreachable;
        }
      }
    },
  });

  // Reused: the receive stamp is copied into the pool's batch at once; the send stamp is read at once.
  const receiveTime: NtpTime = { seconds: 0, fraction: 0 };
  const sendTime: NtpTime = { seconds: 0, fraction: 0 };
  const onSent = (error: Error | null): void => {
    if (error !== null) {
      sendErrors++;
      noteError('sendError', errorMessage(error));
    }
  };
  pool.onReply((reply, target, receiveSeconds, receiveFraction) => {
    try {
      target.socket.send(reply, target.port, target.address, onSent);
      sent++;
    } catch (error) {
      // The socket was closed while the reply was in the batch (stopping), or a bad address.
      sendErrors++;
      noteError('sendError', errorMessage(error));
      return;
    }
    if (bounds !== undefined) {
      clock.nowNtp(sendTime);
      // Era-safe difference: the seconds fields are compared modulo 2^32.
      const durationS = ((sendTime.seconds - receiveSeconds) | 0) + (sendTime.fraction - receiveFraction) / TWO_POW_32;
      let i = 0;
      while (i < bounds.length && durationS > (bounds[i] ?? Infinity)) i++;
      durationCounts[i] = (durationCounts[i] ?? 0) + 1;
      durationSumS += durationS;
    }
  });

  let last: PoolStats = pool.stats();
  const report = (): void => {
    const now = pool.stats();
    const t = new Array<number>(TALLY_WORDS).fill(0);
    for (let i = 0; i < OUTCOME_COUNT; i++) t[Tally.outcomes + i] = (now.outcomes[i] ?? 0) - (last.outcomes[i] ?? 0);
    for (let i = 0; i < KEY_AGE_BUCKETS; i++) t[Tally.keyAges + i] = (now.keyAges[i] ?? 0) - (last.keyAges[i] ?? 0);
    t[Tally.cookiesIssued] = now.cookiesIssued - last.cookiesIssued;
    t[Tally.respondErrors] = now.respondErrors - last.respondErrors;
    const queueRejected = now.queueRejected - last.queueRejected;
    const transmitStamps = now.transmitStamps - last.transmitStamps;
    const transmitCompensationSumS = now.transmitCompensationSumS - last.transmitCompensationSumS;
    const changed = transmitStamps > 0 || received > 0 || sent > 0 || sendErrors > 0 || socketErrors > 0 || queueRejected > 0 || t.some((v) => v !== 0) || now.queueDepth !== last.queueDepth;
    last = now;
    if (changed) {
      post({
        kind: 'report',
        report: {
          tally: t,
          received,
          sent,
          sendErrors,
          socketErrors,
          queueRejected,
          queueDepth: now.queueDepth,
          durationCounts: Array.from(durationCounts),
          durationSumS,
          transmitStamps,
          transmitCompensationSumS,
        },
      });
      received = 0;
      sent = 0;
      sendErrors = 0;
      socketErrors = 0;
      durationCounts.fill(0);
      durationSumS = 0;
    }
    for (const [event, message] of firstErrors) post({ kind: 'event', event, message });
    firstErrors.clear();
  };

  const sockets: Socket[] = [];
  const open = async (l: ThreadListen): Promise<Socket> => {
    const socketOptions: SocketOptionsWithReusePort = {
      type: l.family === 'IPv6' ? 'udp6' : 'udp4',
      ipv6Only: l.ipv6Only,
      reusePort: true,
      ...(init.receiveBufferBytes !== undefined ? { recvBufferSize: init.receiveBufferBytes } : {}),
      lookup: literalLookup,
    };
    const socket = createSocket(socketOptions);
    const policy = l.policy;
    socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
      clock.nowNtp(receiveTime);
      received++;
      pool.submit(msg, receiveTime, { socket, address: rinfo.address, port: rinfo.port }, policy);
    });
    try {
      await bindSocket(socket, l.port, l.host);
    } catch (error) {
      await closeSocket(socket);
      throw error;
    }
    socket.on('error', (error: unknown) => {
      socketErrors++;
      noteError('socketError', errorMessage(error));
    });
    return socket;
  };

  for (const l of init.listen) {
    try {
      sockets.push(await open(l));
    } catch (error) {
      await Promise.all(sockets.map(closeSocket));
      await pool.close();
      // Wait for the main thread to end this thread (it treats this as a start failure or a death).
      post({ kind: 'bindFailed', where: formatWhere(l.host, l.port, l.family), message: errorMessage(error) });
      return;
    }
  }
  const reportTimer = setInterval(report, init.reportIntervalMs);

  port.on('message', (msg: unknown) => {
    if (!isToReceiver(msg)) return;
    const m = msg;
    switch (m.kind) {
      case 'keyset':
        try {
          pool.setKeyset(m.bytes);
        } catch (error) {
          noteError('keysetRejected', errorMessage(error));
        }
        return;
      case 'serverFields':
        pool.setServerFields(m.fields);
        return;
      case 'stop':
        clearInterval(reportTimer);
        void Promise.all(sockets.map(closeSocket)).then(async () => {
          report();
          await pool.close();
          post({ kind: 'stopped' });
        });
        return;
      default: {
        const unreachable: never = m;
        return unreachable;
      }
    }
  });

  post({
    kind: 'ready',
    addresses: sockets.map((s) => {
      const a = s.address();
      return { address: a.address, port: a.port, family: a.family === 'IPv6' ? 'IPv6' : 'IPv4' };
    }),
  });
}

if (!isMainThread && isReceiverInit(workerData)) {
  runReceiverThread(workerData).catch((error: unknown) => {
    // A bug: rethrown outside the promise so the thread dies and the main thread replaces and counts it.
    setImmediate(() => {
      throw error;
    });
  });
}
