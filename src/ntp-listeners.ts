/**
 * NTP side of the daemon: chooses how UDP requests are received and wires that to the metrics. Kept out of
 * io/ because it composes io/udp-server.ts and io/udp-receiver.ts, which io files may not do themselves.
 *
 * - `[worker-pool] receive-threads = 0` (default): the main thread owns the sockets and stamps receive
 *   times; the worker pool answers (io/udp-server.ts + pool/).
 * - `receive-threads = N > 0` and dgram `reusePort` works (feature-tested, Node ≥ 22.12): N receiver
 *   threads, each with its own SO_REUSEPORT socket per `[[server]]`, answer inline (io/udp-receiver.ts);
 *   no pool is created.
 * - `receive-threads > 0` without reusePort (Node 20): one warning naming the key, then the default design.
 *   Starting never fails because of it.
 */
import type { Logger } from 'pino';
import type { WallClock } from './clock.js';
import type { Config } from './config/schema.js';
import type { ServerFields } from './core/responder.js';
import { startUdpReceivers, type UdpReceivers, type UdpReceiversStats } from './io/udp-receiver.js';
import { probeReusePort, startUdpServer, type ReplyTarget, type UdpServer } from './io/udp-server.js';
import { NTP_DURATION_BUCKETS_S, type Metrics } from './obs/metrics.js';
import { createPool, type Pool, type PoolStats } from './pool/pool.js';

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
}

/** The running NTP listeners. */
export interface NtpListeners {
  /** Bound addresses in `[[server]]` order (with receive threads: one per address, shared by the threads). */
  readonly addresses: readonly { address: string; port: number; family: 'IPv4' | 'IPv6' }[];
  /** Receiver threads in use; 0 = the main thread receives (also after the Node 20 fallback). */
  readonly receiveThreads: number;
  /** Pool worker threads in use (0 with receiver threads, or when the pool answers inline). */
  readonly poolThreads: number;
  /** Whether several sockets share each port (receiver threads, or udp-server's sockets per listen). */
  readonly reusePort: boolean;
  /** Broadcasts a keyset snapshot; throws RangeError if it does not decode. */
  setKeyset(bytes: Uint8Array): void;
  /** Broadcasts new server fields. */
  setServerFields(fields: ServerFields): void;
  /** Folds the counters gathered since the previous fold into the metrics (also runs on a timer). */
  foldStats(): void;
  /** Closes the sockets and threads, then folds the last counters. */
  close(): Promise<void>;
}

/** Starts the NTP listeners the configuration asks for; throws NtsdError BIND_FAILED when a bind fails. */
export async function startNtpListeners(config: Config, options: NtpListenersOptions): Promise<NtpListeners> {
  const { logger, metrics } = options;
  const wanted = config.workerPool.receiveThreads;
  let listeners: NtpListeners;
  if (wanted > 0 && (await (options.probeReusePort ?? probeReusePort)())) {
    listeners = await startReceiverThreads(config, options, wanted);
  } else {
    if (wanted > 0) logger.warn({ receiveThreads: wanted, node: process.versions.node }, RECEIVE_THREADS_FALLBACK_WARNING);
    listeners = await startMainThreadReceiver(config, options);
  }
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

/** One responder policy per `[[server]]`, indexed like the listen addresses. */
function responderPolicies(config: Config): { requireNts: boolean; acceptNtpVersions: readonly number[] }[] {
  return config.servers.map((s) => ({ requireNts: s.requireNts, acceptNtpVersions: s.acceptNtpVersions }));
}

/** The default design: main-thread sockets, worker pool. */
async function startMainThreadReceiver(config: Config, options: NtpListenersOptions): Promise<NtpListeners> {
  const { logger, metrics, clock } = options;
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
      onError: (error, where) => logger.debug({ err: error, where }, 'udp error'),
      onReplySent: (durationS) => metrics.ntp.observeRequestDurationS(durationS),
    });
  } catch (error) {
    await pool.close();
    throw error;
  }
  const foldStats = createPoolStatsFolder(metrics, pool, udp);
  return {
    addresses: udp.addresses,
    receiveThreads: 0,
    poolThreads: config.workerPool.threads,
    reusePort: udp.reusePort,
    setKeyset: (bytes) => pool.setKeyset(bytes),
    setServerFields: (fields) => pool.setServerFields(fields),
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
  return () => {
    const now = pool.stats();
    const received = udp.stats().received;
    metrics.ntp.addReceived(received - lastReceived);
    lastReceived = received;
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

/** `receive-threads = N`: N threads with SO_REUSEPORT sockets, answering inline. */
async function startReceiverThreads(config: Config, options: NtpListenersOptions, threads: number): Promise<NtpListeners> {
  const { logger, metrics } = options;
  const receivers: UdpReceivers = await startUdpReceivers({
    threads,
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
          logger.error({ receiver: event.index, exitCode: event.exitCode, restartInMs: event.restartInMs, err: event.error }, 'receiver thread exited; replacing it');
          break;
        case 'respondError':
          logger.error({ receiver: event.index, reason: event.message }, 'responder bug: packet dropped');
          break;
        case 'keysetRejected':
          logger.error({ receiver: event.index, reason: event.reason }, 'receiver thread refused a keyset snapshot');
          break;
        case 'udpError':
          logger.debug({ receiver: event.index, where: event.where, reason: event.message }, 'udp error');
          break;
      }
    },
  });
  const foldStats = createReceiverStatsFolder(metrics, receivers);
  return {
    addresses: receivers.addresses,
    receiveThreads: threads,
    poolThreads: 0,
    reusePort: true,
    setKeyset: (bytes) => receivers.setKeyset(bytes),
    setServerFields: (fields) => receivers.setServerFields(fields),
    foldStats,
    async close() {
      await receivers.close();
      foldStats();
    },
  };
}

/** Folds the receiver threads' cumulative counters into the registry as deltas (the same series as the pool's). */
function createReceiverStatsFolder(metrics: Metrics, receivers: UdpReceivers): () => void {
  let last: UdpReceiversStats | undefined;
  return () => {
    const now = receivers.stats();
    metrics.ntp.addReceived(now.received - (last?.received ?? 0));
    metrics.ntp.addOutcomeCounts(now.outcomes.map((v, i) => v - (last?.outcomes[i] ?? 0)));
    metrics.ntp.addCookieDecodeCounts(now.keyAges.map((v, i) => v - (last?.keyAges[i] ?? 0)));
    metrics.ntp.addCookiesIssued('ntp', now.cookiesIssued - (last?.cookiesIssued ?? 0));
    const rejected = now.queueRejected - (last?.queueRejected ?? 0);
    metrics.pool.addQueueRejected(rejected);
    metrics.ntp.addDropped('queue_full', rejected);
    metrics.pool.setQueueDepth(now.queueDepth);
    metrics.ntp.addRequestDurations(
      now.durationCounts.map((v, i) => v - (last?.durationCounts[i] ?? 0)),
      now.durationSumS - (last?.durationSumS ?? 0),
    );
    foldTransmitCompensation(metrics, now, last);
    last = now;
  };
}
