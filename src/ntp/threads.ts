/**
 * NTP threads, main-thread role: starts N threads (src/ntp/thread-main.ts) through runtime/supervisor.ts,
 * each owning one socket per `[[server]]` address and answering inline, with the native addon's sockets
 * or dgram's.
 *
 *  - The first thread binds the configured ports; the others join the ports it got (port 0 in tests).
 *  - Keyset snapshots, server fields and admission specs are broadcast to every thread; a replacement
 *    starts from the latest ones.
 *  - The threads' periodic reports (ntp/counters.ts) are added up here for the metrics.
 *  - A thread that dies is replaced by the supervisor (with back-off when it keeps dying young) and counted.
 * Threads never log; they count, and report the first error message of each report interval.
 */
import type { WallClock } from '../runtime/clock.js';
import { ThreadSupervisor, type LifecycleMessage } from '../runtime/supervisor.js';
import type { AdmissionSpec } from '../core/admission.js';
import { decodeKeyset, wipeKeyset } from '../core/nts/keyset.js';
import { OUTCOME_COUNT, type ServerFields } from '../core/responder.js';
import type { ResponderPolicy } from '../core/serve.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { KEY_AGE_BUCKETS, PacketCounts, TALLY_WORDS, Tally, type PacketCountValues } from './counters.js';
import {
  NTP_THREAD_ROLE,
  errorMessage,
  isFromThread,
  type FromThread,
  type ThreadBackend,
  type ThreadBoundAddress,
  type ThreadInit,
  type ThreadListen,
  type ThreadReport,
  type ToThread,
} from './messages.js';

/** One address to listen on. */
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
  /** NTP threads (≥ 1). */
  readonly threads: number;
  readonly listen: readonly NtpThreadListenOptions[];
  /** Encoded keyset (src/core/nts/keyset.ts), e.g. KeysetStore.bytes. */
  readonly keysetBytes: Uint8Array;
  readonly serverFields: ServerFields;
  /** Responder policies indexed by a listener's `policy` (index 0 must exist). */
  readonly policies: readonly ResponderPolicy[];
  /** Clock for dgram receive and transmit timestamps; its shared anchor is passed to the threads. */
  readonly clock: WallClock;
  /** SO_RCVBUF in octets (default: the OS default). */
  readonly receiveBufferBytes?: number;
  /** Socket backend of every thread: the native addon, or Node's dgram (default "dgram"). */
  readonly backend?: ThreadBackend;
  /** Access list and shared rate-limit table per policy index (default: admit everything). */
  readonly admissions?: readonly AdmissionSpec[];
  /** Native backend: shared RFC 9769 interleave table per policy index (default: basic mode only). */
  readonly interleaveTables?: readonly (SharedArrayBuffer | undefined)[];
  /** Native backend: sendmsg per reply ("each", default) or sendmmsg per batch ("batch"). */
  readonly sendMode?: 'each' | 'batch';
  /** The shared client log (core/client-log.ts) every thread counts each request in; absent = off. */
  readonly clientLog?: SharedArrayBuffer;
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

/** Cumulative counters of every NTP thread since start (for metrics collected as deltas; the scalar counts are counters.ts PacketCounts). */
export interface NtpThreadsStats extends PacketCountValues {
  /** NTP threads configured. */
  readonly threads: number;
  /** NTP threads running and bound. */
  readonly threadsAlive: number;
  /** Threads replaced after exiting (`ntsd_worker_restarts_total`). */
  readonly restarts: number;
  /** Datagrams received (`ntsd_ntp_packets_received_total`). */
  readonly received: number;
  /** Datagrams received per thread index (replacements continue their index's count). */
  readonly receivedPerThread: readonly number[];
  /** Counts per responder Outcome value (index = Outcome). */
  readonly outcomes: readonly number[];
  /** Cookie decodes per key-age bucket (counters.ts keyAgeBucket). */
  readonly keyAges: readonly number[];
  /** Cookies issued in NTS replies. */
  readonly cookiesIssued: number;
  /** Packets dropped because the responder threw (a bug). */
  readonly respondErrors: number;
  /** Receive-to-send durations per `durationBucketsS` bucket, +Inf last (empty when not measured). */
  readonly durationCounts: readonly number[];
  /** Sum of those durations, seconds. */
  readonly durationSumS: number;
}

/** Running NTP threads. */
export interface NtpThreads {
  /** Bound addresses, one per listen address (every thread shares them), in listen order. */
  readonly addresses: readonly ThreadBoundAddress[];
  /** Broadcasts a new keyset (encoded) to every thread; throws RangeError if it does not decode. */
  setKeyset(bytes: Uint8Array): void;
  /** Broadcasts new server fields to every thread. */
  setServerFields(fields: ServerFields): void;
  /** Broadcasts new access lists / limiter tables to every thread (SIGHUP). */
  setAdmissions(specs: readonly AdmissionSpec[]): void;
  /** The counters summed over every report so far. */
  stats(): NtpThreadsStats;
  /** Terminates thread `index` as if it had crashed (tests). Resolves false if there is none. */
  terminateThread(index: number): Promise<boolean>;
  /** Closes every socket and stops the threads, after collecting their last reports. */
  close(): Promise<void>;
}

/** The thread entry module. */
const THREAD_ENTRY = new URL('./thread-main.js', import.meta.url);
const DEFAULT_REPORT_INTERVAL_MS = 250;

/** Sorts a thread's message into the supervisor's lifecycle, or leaves it to onMessage. */
function classify(msg: unknown): LifecycleMessage<readonly ThreadBoundAddress[]> {
  if (!isFromThread(msg)) return undefined;
  switch (msg.kind) {
    case 'ready':
      return { kind: 'ready', value: msg.addresses };
    case 'bindFailed':
      return { kind: 'failed', error: new NtsdError(NtsdErrorCode.BIND_FAILED, `cannot bind UDP ${msg.where}: ${msg.message}`) };
    case 'stopped':
      return { kind: 'stopped' };
    default:
      return undefined;
  }
}

/** A start failure as an NtsdError (bind failures already are one). */
function startError(index: number, error: unknown): NtsdError {
  return error instanceof NtsdError ? error : new NtsdError(NtsdErrorCode.WORKER_FAILED, `cannot start NTP thread ${index}: ${errorMessage(error)}`, { cause: error });
}

/** Sums the threads' reports. */
class StatsSum extends PacketCounts {
  readonly tally = new Float64Array(TALLY_WORDS);
  readonly receivedPerThread: Float64Array;
  readonly durationCounts: Float64Array;
  durationSumS = 0;

  constructor(threads: number, buckets: number) {
    super();
    this.receivedPerThread = new Float64Array(threads);
    this.durationCounts = new Float64Array(buckets);
  }

  add(index: number, r: ThreadReport): void {
    for (let j = 0; j < TALLY_WORDS; j++) this.tally[j] = (this.tally[j] ?? 0) + (r.tally[j] ?? 0);
    this.receivedPerThread[index] = (this.receivedPerThread[index] ?? 0) + r.received;
    for (let i = 0; i < this.durationCounts.length; i++) this.durationCounts[i] = (this.durationCounts[i] ?? 0) + (r.durationCounts[i] ?? 0);
    this.durationSumS += r.durationSumS;
    this.addCounts(r);
  }
}

/**
 * Starts `threads` NTP threads and resolves once every one is bound. Throws NtsdError BIND_FAILED when a
 * bind fails (for example a second dgram thread where Node has no reusePort), WORKER_FAILED when a thread
 * cannot start; no thread is left running then.
 */
export async function startNtpThreads(options: NtpThreadsOptions): Promise<NtpThreads> {
  if (!Number.isInteger(options.threads) || options.threads < 1) throw new RangeError('ntp threads: threads must be an integer ≥ 1');
  if (options.policies.length === 0) throw new RangeError('ntp threads: policies must not be empty');
  const initial = decodeKeyset(options.keysetBytes);
  if (!initial.ok) throw new RangeError(`ntp threads: keyset does not decode (${initial.error})`);
  wipeKeyset(initial.keyset); // checked here; every thread decodes its own copy

  const threads = options.threads;
  const onEvent = options.onEvent;
  const sum = new StatsSum(threads, options.durationBucketsS === undefined ? 0 : options.durationBucketsS.length + 1);
  let keysetBytes = new Uint8Array(options.keysetBytes); // a copy, also when given a Buffer
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

  const onMessage = (index: number, msg: FromThread): void => {
    switch (msg.kind) {
      case 'report':
        sum.add(index, msg.report);
        return;
      case 'event':
        switch (msg.event) {
          case 'respondError':
            onEvent?.({ kind: 'respondError', index, message: msg.message });
            return;
          case 'keysetRejected':
            onEvent?.({ kind: 'keysetRejected', index, reason: msg.message });
            return;
          case 'socketError':
          case 'sendError':
            onEvent?.({ kind: 'udpError', index, where: msg.event === 'socketError' ? 'socket' : 'send', message: msg.message });
            return;
          default: {
            const unreachable: never = msg.event;
            return unreachable;
          }
        }
      default:
        return; // lifecycle messages are the supervisor's
    }
  };

  const supervisor = new ThreadSupervisor<readonly ThreadBoundAddress[]>({
    name: 'ntp',
    entry: THREAD_ENTRY,
    workerData: (index): ThreadInit => ({
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
      interleaveTables: options.interleaveTables ?? [],
      clientLog: options.clientLog,
      clockShared: options.clock.shared,
      reportIntervalMs: options.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS,
      durationBucketsS: options.durationBucketsS,
    }),
    classify,
    onMessage: (index, msg) => {
      if (isFromThread(msg)) onMessage(index, msg);
    },
    onExit: (exit) => onEvent?.({ kind: 'threadExit', ...exit }),
    stopMessage: { kind: 'stop' } satisfies ToThread,
  });

  // Start-up: the first thread binds the configured ports; the others join the ports it actually got.
  let addresses: readonly ThreadBoundAddress[];
  try {
    addresses = await supervisor.start(0).catch((error: unknown) => Promise.reject(startError(0, error)));
    listen = listen.map((l, i) => ({ ...l, port: addresses[i]?.port ?? l.port }));
    const rest = Array.from({ length: threads - 1 }, (_, i) => supervisor.start(i + 1).catch((error: unknown) => Promise.reject(startError(i + 1, error))));
    const failed = (await Promise.allSettled(rest)).find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  } catch (error) {
    await supervisor.stop();
    throw error;
  }
  supervisor.supervise();

  return {
    addresses,
    setKeyset(bytes) {
      const decoded = decodeKeyset(bytes);
      if (!decoded.ok) throw new RangeError(`ntp threads: keyset does not decode (${decoded.error})`);
      wipeKeyset(decoded.keyset);
      keysetBytes = new Uint8Array(bytes);
      supervisor.broadcast({ kind: 'keyset', bytes: keysetBytes } satisfies ToThread);
    },
    setServerFields(fields) {
      serverFields = fields;
      supervisor.broadcast({ kind: 'serverFields', fields } satisfies ToThread);
    },
    setAdmissions(specs) {
      admissions = specs;
      supervisor.broadcast({ kind: 'admissions', specs } satisfies ToThread);
    },
    stats() {
      const t = sum.tally;
      return {
        threads,
        threadsAlive: supervisor.alive,
        restarts: supervisor.restarts,
        received: sum.receivedPerThread.reduce((a, b) => a + b, 0),
        receivedPerThread: Array.from(sum.receivedPerThread),
        ...sum.countValues(),
        outcomes: Array.from(t.subarray(Tally.outcomes, Tally.outcomes + OUTCOME_COUNT)),
        keyAges: Array.from(t.subarray(Tally.keyAges, Tally.keyAges + KEY_AGE_BUCKETS)),
        cookiesIssued: t[Tally.cookiesIssued] ?? 0,
        respondErrors: t[Tally.respondErrors] ?? 0,
        durationCounts: Array.from(sum.durationCounts),
        durationSumS: sum.durationSumS,
      };
    },
    terminateThread: (index) => supervisor.terminate(index),
    close: () => supervisor.stop(),
  };
}
