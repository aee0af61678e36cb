/**
 * The NTP datapath, behind one interface (`NtpListeners`) with two backends. Kept out of io/ because it
 * composes ntp/udp-server.ts, the pool and src/ntp/, which io files may not do themselves.
 *
 * `[worker-pool] datapath` picks the backend:
 *  - `native` (and `auto` when build/ntsd_udp.node loads): `threads` NTP threads (src/ntp/threads.ts),
 *    each owning one SO_REUSEPORT socket per `[[server]]` made by the native addon, with kernel receive
 *    timestamps and recvmmsg batches, answering inline (src/ntp/socket-native.ts). A packet's walk:
 *    kernel → recvmmsg → respond() → sendmsg, all on one thread.
 *  - `dgram` (and `auto` without the addon, or with `threads = 0`): Node's dgram, as before the addon:
 *    - `receive-threads = 0` (default): the main thread owns the sockets and stamps receive times; the
 *      worker pool answers (ntp/udp-server.ts + pool/);
 *    - `receive-threads = N > 0` and dgram `reusePort` works (Node ≥ 22.12): N threads each with their own
 *      dgram socket per `[[server]]`, answering inline (src/ntp/socket-dgram.ts); without reusePort
 *      (Node 20) one warning naming the key, then the main-thread design.
 * `datapath = "native"` when the addon is unavailable is a configuration error (exit 78).
 */
import type { Logger } from 'pino';
import type { WallClock } from '../runtime/clock.js';
import { randomInt } from 'node:crypto';
import type { Config, NtpServerConfig } from '../config/schema.js';
import { createAdmissions, type Admission, type AdmissionSpec } from '../core/admission.js';
import { RateLimiter, rateLimiterBytes, type RateLimitConfig } from '../core/limiter.js';
import type { ServerFields } from '../core/responder.js';
import { probeReusePort, startUdpServer, type ReplyTarget, type UdpServer } from './udp-server.js';
import { NTP_DURATION_BUCKETS_S, type Metrics } from '../obs/metrics.js';
import { createPool, type Pool, type PoolStats } from './batch-pool.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { loadNativeUdp, type NativeLoad } from '../runtime/addon.js';
import { startNtpThreads, type NtpThreads, type NtpThreadsStats } from './threads.js';
import type { ThreadBackend } from './messages.js';

/** The warning logged when receive-threads is set but dgram reusePort is unavailable. */
export const RECEIVE_THREADS_FALLBACK_WARNING =
  'worker-pool.receive-threads: dgram reusePort needs Node >= 22.12; receiving on the main thread';

/** How often counters are folded into the metrics registry. */
const STATS_INTERVAL_MS = 1000;

/** What the daemon needs to start the NTP listeners. */
export interface NtpListenersOptions {
  readonly clock: WallClock;
  /** Encoded keyset snapshot (KeysetStore.bytes). */
  readonly keysetBytes: Uint8Array;
  readonly serverFields: ServerFields;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Feature test for dgram reusePort (default: udp-server.ts probeReusePort; tests may force the fallback). */
  readonly probeReusePort?: () => Promise<boolean>;
  /** How often counters are folded into the metrics, milliseconds (default 1000). */
  readonly statsIntervalMs?: number;
  /** Loads the native addon (default runtime/addon.ts loadNativeUdp; tests may force it unavailable). */
  readonly loadNative?: () => NativeLoad;
}

/** The running NTP listeners. */
export interface NtpListeners {
  /** The backend that runs: `native` (addon sockets, kernel timestamps) or `dgram`. */
  readonly datapath: 'native' | 'dgram';
  /** Bound addresses in `[[server]]` order (with receive threads: one per address, shared by the threads). */
  readonly addresses: readonly { address: string; port: number; family: 'IPv4' | 'IPv6' }[];
  /** NTP threads that own sockets (native threads or dgram receive threads); 0 = the main thread receives. */
  readonly receiveThreads: number;
  /** Pool worker threads in use (0 with receiver threads, or when the pool answers inline). */
  readonly poolThreads: number;
  /** Whether several sockets share each port (receiver threads, or udp-server's sockets per listen). */
  readonly reusePort: boolean;
  /** Broadcasts a keyset snapshot; throws RangeError if it does not decode. */
  setKeyset(bytes: Uint8Array): void;
  /** Broadcasts new server fields. */
  setServerFields(fields: ServerFields): void;
  /**
   * Applies `[[server]]` access lists and rate limits (SIGHUP) on every thread. The limiter tables keep
   * their size (client-rate-limit-table-size needs a restart); everything else applies at once.
   */
  setAdmission(servers: readonly NtpServerConfig[]): void;
  /** Folds the counters gathered since the previous fold into the metrics (also runs on a timer). */
  foldStats(): void;
  /** Closes the sockets and threads, then folds the last counters. */
  close(): Promise<void>;
}

/** Starts the NTP listeners the configuration asks for; throws NtsdError BIND_FAILED when a bind fails. */
export async function startNtpListeners(config: Config, options: NtpListenersOptions): Promise<NtpListeners> {
  const { logger, metrics } = options;
  const pool = config.workerPool;
  const admission = new AdmissionState(config.servers);
  let listeners: NtpListeners;
  const native = pool.datapath === 'dgram' ? undefined : (options.loadNative ?? loadNativeUdp)();
  if (pool.datapath === 'native' && native?.ok !== true) {
    throw new NtsdError(
      NtsdErrorCode.CONFIG_INVALID,
      `worker-pool.datapath: "native" is unavailable: ${native?.ok === false ? native.reason : 'not loaded'}`,
    );
  }
  if (native?.ok === true && pool.threads > 0) {
    listeners = await startThreads(config, options, pool.threads, 'native', admission);
  } else {
    if (pool.datapath === 'auto') {
      const why = native?.ok === false ? native.reason : 'worker-pool.threads = 0 answers inline on the main thread';
      logger.info({ reason: why }, 'native datapath not used; running the dgram datapath');
    }
    const wanted = pool.receiveThreads;
    if (wanted > 0 && (await (options.probeReusePort ?? probeReusePort)())) {
      listeners = await startThreads(config, options, wanted, 'dgram', admission);
    } else {
      if (wanted > 0) logger.warn({ receiveThreads: wanted, node: process.versions.node }, RECEIVE_THREADS_FALLBACK_WARNING);
      listeners = await startMainThreadReceiver(config, options, admission);
    }
  }
  metrics.ntp.setDatapath(listeners.datapath, listeners.datapath === 'native' ? 'kernel' : 'user');
  logger.info(
    { datapath: listeners.datapath, timestamps: listeners.datapath === 'native' ? 'kernel' : 'user', threads: listeners.receiveThreads, poolThreads: listeners.poolThreads },
    'NTP datapath',
  );
  const timer = setInterval(() => listeners.foldStats(), options.statsIntervalMs ?? STATS_INTERVAL_MS);
  timer.unref();
  return {
    ...listeners,
    async close() {
      clearInterval(timer);
      await listeners.close();
    },
  };
}

/** The limiter configuration of one `[[server]]`. */
function limiterConfig(s: NtpServerConfig): RateLimitConfig {
  const r = s.rateLimit;
  return { intervalMs: r.intervalMs, burst: r.burst, leak: r.leak, ipv4PrefixBits: r.ipv4PrefixBits, ipv6PrefixBits: r.ipv6PrefixBits };
}

/**
 * Admission state of the NTP side: one shared rate-limit table per `[[server]]` (made even while the limit
 * is off, so a SIGHUP can turn it on), and the specs every thread builds its checks from.
 */
class AdmissionState {
  readonly #buffers: SharedArrayBuffer[];
  readonly #limiters: RateLimiter[];
  #specs: AdmissionSpec[];

  constructor(servers: readonly NtpServerConfig[]) {
    this.#buffers = servers.map((s) => new SharedArrayBuffer(rateLimiterBytes(s.rateLimit.tableSize)));
    this.#limiters = servers.map((s, i) => RateLimiter.create(this.#buffers[i] ?? new SharedArrayBuffer(0), s.rateLimit.tableSize, randomInt(0, 2 ** 32), limiterConfig(s)));
    this.#specs = this.#makeSpecs(servers);
  }

  #makeSpecs(servers: readonly NtpServerConfig[]): AdmissionSpec[] {
    return servers.map((s, i) => ({ accessEntries: s.access.entries, accessDefault: s.access.defaultAction, limiterBuffer: this.#buffers[i] }));
  }

  get specs(): readonly AdmissionSpec[] {
    return this.#specs;
  }

  /** Reconfigures the shared tables in place and returns the new specs (for the access lists). */
  update(servers: readonly NtpServerConfig[]): readonly AdmissionSpec[] {
    servers.forEach((s, i) => this.#limiters[i]?.configure(limiterConfig(s)));
    this.#specs = this.#makeSpecs(servers);
    return this.#specs;
  }
}

/** One responder policy per `[[server]]`, indexed like the listen addresses. */
function responderPolicies(config: Config): { requireNts: boolean; acceptNtpVersions: readonly number[] }[] {
  return config.servers.map((s) => ({ requireNts: s.requireNts, acceptNtpVersions: s.acceptNtpVersions }));
}

/** The default design: main-thread sockets, worker pool. */
async function startMainThreadReceiver(config: Config, options: NtpListenersOptions, admission: AdmissionState): Promise<NtpListeners> {
  const { logger, metrics, clock } = options;
  let serverFields = options.serverFields;
  let admissions: readonly Admission[] = createAdmissions(admission.specs, config.servers.length);
  const pool: Pool<ReplyTarget> = createPool<ReplyTarget>({
    threads: config.workerPool.threads,
    batchSize: config.workerPool.batchSize,
    flushIntervalUs: config.workerPool.flushIntervalUs,
    queueLimit: config.workerPool.queueLimit,
    keysetBytes: options.keysetBytes,
    serverFields: options.serverFields,
    policies: responderPolicies(config),
    clock,
    onEvent: (event) => {
      switch (event.kind) {
        case 'workerExit':
          metrics.pool.workerRestarted();
          logger.error({ worker: event.index, exitCode: event.exitCode, lostPackets: event.lostPackets, err: event.error }, 'worker exited; replacing it');
          break;
        case 'respondError':
          logger.error({ reason: event.message }, 'responder bug: packet dropped');
          break;
        case 'replyCallbackError':
          logger.error({ err: event.error }, 'reply callback failed');
          break;
        case 'keysetRejected':
          logger.error({ reason: event.reason }, 'worker refused a keyset snapshot');
          break;
      }
    },
  });
  let udp: UdpServer;
  try {
    udp = await startUdpServer({
      listen: config.servers.map((s, i) => ({ ...s.listen, policy: i })),
      pool,
      clock,
      admissions: () => admissions,
      refusalPolicy: (i) => {
        const s = config.servers[i] ?? config.servers[0];
        return { requireNts: s?.requireNts ?? false, acceptNtpVersions: s?.acceptNtpVersions ?? [], precision: serverFields.precision };
      },
      onError: (error, where) => logger.debug({ err: error, where }, 'udp error'),
      onReplySent: (durationS) => metrics.ntp.observeRequestDurationS(durationS),
    });
  } catch (error) {
    await pool.close();
    throw error;
  }
  const foldStats = createPoolStatsFolder(metrics, pool, udp);
  return {
    datapath: 'dgram',
    addresses: udp.addresses,
    receiveThreads: 0,
    poolThreads: config.workerPool.threads,
    reusePort: udp.reusePort,
    setKeyset: (bytes) => pool.setKeyset(bytes),
    setServerFields: (fields) => {
      serverFields = fields;
      pool.setServerFields(fields);
    },
    setAdmission: (servers) => {
      admissions = createAdmissions(admission.update(servers), servers.length);
    },
    foldStats,
    async close() {
      await udp.close();
      await pool.close();
      foldStats();
    },
  };
}

/** Folds cumulative pool/UDP counters into the registry as deltas. */
function createPoolStatsFolder(metrics: Metrics, pool: Pool<ReplyTarget>, udp: UdpServer): () => void {
  let last: PoolStats | undefined;
  let lastReceived = 0;
  let lastRefused: readonly number[] = [];
  return () => {
    const now = pool.stats();
    const udpStats = udp.stats();
    const received = udpStats.received;
    metrics.ntp.addReceived(received - lastReceived);
    lastReceived = received;
    metrics.ntp.addOutcomeCounts(udpStats.refusedOutcomes.map((v, i) => v - (lastRefused[i] ?? 0)));
    lastRefused = udpStats.refusedOutcomes;
    metrics.ntp.addOutcomeCounts(now.outcomes.map((v, i) => v - (last?.outcomes[i] ?? 0)));
    metrics.ntp.addCookieDecodeCounts(now.keyAges.map((v, i) => v - (last?.keyAges[i] ?? 0)));
    metrics.ntp.addCookiesIssued('ntp', now.cookiesIssued - (last?.cookiesIssued ?? 0));
    const rejected = now.queueRejected - (last?.queueRejected ?? 0);
    metrics.pool.addQueueRejected(rejected);
    metrics.ntp.addDropped('queue_full', rejected);
    metrics.pool.setQueueDepth(now.queueDepth);
    foldTransmitCompensation(metrics, now, last);
    last = now;
  };
}

/** Sets the compensation gauge to the mean over the stamps since `last` (unchanged when there were none). */
function foldTransmitCompensation(
  metrics: Metrics,
  now: { readonly transmitStamps: number; readonly transmitCompensationSumS: number },
  last: { readonly transmitStamps: number; readonly transmitCompensationSumS: number } | undefined,
): void {
  const stamps = now.transmitStamps - (last?.transmitStamps ?? 0);
  if (stamps > 0) metrics.ntp.setTransmitCompensationS((now.transmitCompensationSumS - (last?.transmitCompensationSumS ?? 0)) / stamps);
}

/** N threads with SO_REUSEPORT sockets of `backend`, answering inline. */
async function startThreads(config: Config, options: NtpListenersOptions, threads: number, backend: ThreadBackend, admission: AdmissionState): Promise<NtpListeners> {
  const { logger, metrics } = options;
  const receivers: NtpThreads = await startNtpThreads({
    threads,
    backend,
    admissions: admission.specs,
    sendMode: config.workerPool.sendMode,
    ...(config.workerPool.receiveBufferBytes > 0 ? { receiveBufferBytes: config.workerPool.receiveBufferBytes } : {}),
    listen: config.servers.map((s, i) => ({ ...s.listen, policy: i })),
    keysetBytes: options.keysetBytes,
    serverFields: options.serverFields,
    policies: responderPolicies(config),
    clock: options.clock,
    batchSize: config.workerPool.batchSize,
    flushIntervalUs: config.workerPool.flushIntervalUs,
    queueLimit: config.workerPool.queueLimit,
    durationBucketsS: NTP_DURATION_BUCKETS_S,
    onEvent: (event) => {
      switch (event.kind) {
        case 'threadExit':
          metrics.pool.workerRestarted();
          logger.error({ thread: event.index, datapath: backend, exitCode: event.exitCode, restartInMs: event.restartInMs, err: event.error }, 'NTP thread exited; replacing it');
          break;
        case 'respondError':
          logger.error({ thread: event.index, reason: event.message }, 'responder bug: packet dropped');
          break;
        case 'keysetRejected':
          logger.error({ thread: event.index, reason: event.reason }, 'NTP thread refused a keyset snapshot');
          break;
        case 'udpError':
          logger.debug({ thread: event.index, where: event.where, reason: event.message }, 'udp error');
          break;
      }
    },
  });
  const foldStats = createReceiverStatsFolder(metrics, receivers);
  return {
    datapath: backend,
    addresses: receivers.addresses,
    receiveThreads: threads,
    poolThreads: 0,
    reusePort: true,
    setKeyset: (bytes) => receivers.setKeyset(bytes),
    setServerFields: (fields) => receivers.setServerFields(fields),
    setAdmission: (servers) => receivers.setAdmissions(admission.update(servers)),
    foldStats,
    async close() {
      await receivers.close();
      foldStats();
    },
  };
}

/** Folds the receiver threads' cumulative counters into the registry as deltas (the same series as the pool's). */
function createReceiverStatsFolder(metrics: Metrics, receivers: NtpThreads): () => void {
  let last: NtpThreadsStats | undefined;
  return () => {
    const now = receivers.stats();
    metrics.ntp.addReceived(now.received - (last?.received ?? 0));
    metrics.ntp.addOutcomeCounts(now.outcomes.map((v, i) => v - (last?.outcomes[i] ?? 0)));
    metrics.ntp.addCookieDecodeCounts(now.keyAges.map((v, i) => v - (last?.keyAges[i] ?? 0)));
    metrics.ntp.addCookiesIssued('ntp', now.cookiesIssued - (last?.cookiesIssued ?? 0));
    const rejected = now.queueRejected - (last?.queueRejected ?? 0);
    metrics.pool.addQueueRejected(rejected);
    metrics.ntp.addDropped('queue_full', rejected);
    metrics.ntp.addDropped('truncated', now.truncated - (last?.truncated ?? 0));
    metrics.pool.setQueueDepth(now.queueDepth);
    metrics.ntp.addRequestDurations(
      now.durationCounts.map((v, i) => v - (last?.durationCounts[i] ?? 0)),
      now.durationSumS - (last?.durationSumS ?? 0),
    );
    foldTransmitCompensation(metrics, now, last);
    last = now;
  };
}
