/**
 * The NTP service: one start path. Every NTP thread owns its sockets and answers inline (ntp/threads.ts);
 * `[worker-pool] datapath` picks the socket backend of all of them:
 *  - `native` (and `auto` when build/ntsd_udp.node loads): the addon's SO_REUSEPORT sockets with kernel
 *    receive timestamps and recvmmsg batches (ntp/socket-native.ts);
 *  - `dgram` (and `auto` without the addon): Node's dgram (ntp/socket-dgram.ts). Several threads share a
 *    port through dgram `reusePort` (Node ≥ 22.12); where Node lacks it, one thread and one warning.
 * `datapath = "native"` when the addon is unavailable is a configuration error (exit 78).
 */
import type { Logger } from 'pino';
import type { WallClock } from '../runtime/clock.js';
import { randomInt } from 'node:crypto';
import type { Config, NtpServerConfig } from '../config/schema.js';
import type { AdmissionSpec } from '../core/admission.js';
import { InterleaveTable, interleaveTableBytes } from '../core/interleave.js';
import { RateLimiter, rateLimiterBytes, type RateLimitConfig } from '../core/limiter.js';
import type { ServerFields } from '../core/responder.js';
import { NTP_DURATION_BUCKETS_S, type Metrics } from '../obs/metrics.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { loadNativeUdp, type NativeLoad } from '../runtime/addon.js';
import { reusePortWorks } from '../runtime/reuse-port.js';
import { startNtpThreads, type NtpThreadsStats } from './threads.js';
import type { ThreadBackend } from './messages.js';

/** The warning logged when several dgram threads were asked for but Node cannot share a port between them. */
export const DGRAM_ONE_THREAD_WARNING = 'worker-pool.threads: dgram reusePort needs Node >= 22.12; running one NTP thread';

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
  /** Feature test for dgram reusePort (default runtime/reuse-port.ts; tests may force the fallback). */
  readonly probeReusePort?: () => Promise<boolean>;
  /** How often counters are folded into the metrics, milliseconds (default 1000). */
  readonly statsIntervalMs?: number;
  /** Loads the native addon (default runtime/addon.ts loadNativeUdp; tests may force it unavailable). */
  readonly loadNative?: () => NativeLoad;
  /** The shared client log (core/client-log.ts) the threads count requests in; absent = off. */
  readonly clientLog?: SharedArrayBuffer;
}

/** The running NTP listeners. */
export interface NtpListeners {
  /** The backend that runs: `native` (addon sockets, kernel timestamps) or `dgram`. */
  readonly datapath: ThreadBackend;
  /** Bound addresses in `[[server]]` order (one per address, shared by the threads). */
  readonly addresses: readonly { address: string; port: number; family: 'IPv4' | 'IPv6' }[];
  /** NTP threads running (each owns a socket per address). */
  readonly threads: number;
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
  /** Ends NTP thread `index` as if it had crashed (tests); false when there is none. */
  terminateThread(index: number): Promise<boolean>;
  /** Closes the sockets and threads, then folds the last counters. */
  close(): Promise<void>;
}

/** Starts the NTP threads the configuration asks for; throws NtsdError BIND_FAILED when a bind fails. */
export async function startNtpListeners(config: Config, options: NtpListenersOptions): Promise<NtpListeners> {
  const { logger, metrics } = options;
  const pool = config.workerPool;
  const native = pool.datapath === 'dgram' ? undefined : (options.loadNative ?? loadNativeUdp)();
  if (pool.datapath === 'native' && native?.ok !== true) {
    throw new NtsdError(
      NtsdErrorCode.CONFIG_INVALID,
      `worker-pool.datapath: "native" is unavailable: ${native?.ok === false ? native.reason : 'not loaded'}`,
    );
  }
  const backend: ThreadBackend = native?.ok === true ? 'native' : 'dgram';
  if (pool.datapath === 'auto' && native?.ok === false) logger.info({ reason: native.reason }, 'native datapath not used; running the dgram datapath');
  let threads = pool.threads;
  if (backend === 'dgram' && threads > 1 && !(await (options.probeReusePort ?? (() => reusePortWorks('udp')))())) {
    logger.warn({ threads, node: process.versions.node }, DGRAM_ONE_THREAD_WARNING);
    threads = 1;
  }
  const admission = new AdmissionState(config.servers);
  // RFC 9769 needs kernel TX stamps: only the native backend serves interleaved mode. One shared table per
  // `[[server]]` that has it on, sized once.
  const interleaveTables = config.servers.map((s) =>
    backend === 'native' && s.interleave.enabled
      ? InterleaveTable.create(new SharedArrayBuffer(interleaveTableBytes(s.interleave.tableSize)), s.interleave.tableSize, randomInt(0, 2 ** 32))
      : undefined,
  );
  if (backend === 'dgram' && config.servers.some((s) => s.interleave.enabled)) {
    logger.info('interleaved mode (RFC 9769) needs the native datapath; the dgram datapath answers in basic mode');
  }
  const running = await startNtpThreads({
    threads,
    backend,
    admissions: admission.specs,
    interleaveTables: interleaveTables.map((t) => (t === undefined ? undefined : (t.buffer as SharedArrayBuffer))),
    sendMode: pool.sendMode,
    ...(options.clientLog === undefined ? {} : { clientLog: options.clientLog }),
    ...(pool.receiveBufferBytes > 0 ? { receiveBufferBytes: pool.receiveBufferBytes } : {}),
    listen: config.servers.map((s, i) => ({ ...s.listen, policy: i })),
    keysetBytes: options.keysetBytes,
    serverFields: options.serverFields,
    policies: config.servers.map((s) => ({ requireNts: s.requireNts, acceptNtpVersions: s.acceptNtpVersions })),
    clock: options.clock,
    durationBucketsS: NTP_DURATION_BUCKETS_S,
    onEvent: (event) => {
      switch (event.kind) {
        case 'threadExit':
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
  const timestamps = backend === 'native' ? 'kernel' : 'user';
  metrics.ntp.setDatapath(backend, timestamps);
  logger.info({ datapath: backend, timestamps, threads }, 'NTP datapath');
  const foldStats = createStatsFolder(metrics, running.stats, interleaveTables);
  const timer = setInterval(foldStats, options.statsIntervalMs ?? STATS_INTERVAL_MS);
  timer.unref();
  return {
    datapath: backend,
    addresses: running.addresses,
    threads,
    setKeyset: (bytes) => running.setKeyset(bytes),
    setServerFields: (fields) => running.setServerFields(fields),
    setAdmission: (servers) => running.setAdmissions(admission.update(servers)),
    foldStats,
    terminateThread: (index) => running.terminateThread(index),
    async close() {
      clearInterval(timer);
      await running.close();
      foldStats();
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

/** Folds the threads' cumulative counters (and the interleave tables' eviction counts) into the registry as deltas. */
function createStatsFolder(metrics: Metrics, stats: () => NtpThreadsStats, tables: readonly (InterleaveTable | undefined)[]): () => void {
  let last: NtpThreadsStats | undefined;
  const evictions = tables.map((t) => t?.evictions ?? 0);
  return () => {
    const now = stats();
    metrics.ntp.addInterleavedResponses(now.interleavedReplies - (last?.interleavedReplies ?? 0));
    metrics.ntp.addTransmitTimestamps('captured', now.txStampsCaptured - (last?.txStampsCaptured ?? 0));
    metrics.ntp.addTransmitTimestamps('missing', now.txStampsMissing - (last?.txStampsMissing ?? 0));
    metrics.ntp.addTransmitTimestamps('late', now.txStampsLate - (last?.txStampsLate ?? 0));
    tables.forEach((t, i) => {
      if (t === undefined) return;
      const e = t.evictions;
      metrics.ntp.addInterleaveEvictions((e - (evictions[i] ?? 0)) >>> 0); // a u32 count that wraps
      evictions[i] = e;
    });
    metrics.ntp.addReceived(now.received - (last?.received ?? 0));
    metrics.ntp.addOutcomeCounts(now.outcomes.map((v, i) => v - (last?.outcomes[i] ?? 0)));
    metrics.ntp.addCookieDecodeCounts(now.keyAges.map((v, i) => v - (last?.keyAges[i] ?? 0)));
    metrics.ntp.addCookiesIssued('ntp', now.cookiesIssued - (last?.cookiesIssued ?? 0));
    metrics.ntp.addDropped('truncated', now.truncated - (last?.truncated ?? 0));
    metrics.ntp.addRequestDurations(
      now.durationCounts.map((v, i) => v - (last?.durationCounts[i] ?? 0)),
      now.durationSumS - (last?.durationSumS ?? 0),
    );
    metrics.ntpThreads.addRestarts(now.restarts - (last?.restarts ?? 0));
    // The mean compensation over the stamps since the last fold (unchanged when there were none).
    const stamps = now.transmitStamps - (last?.transmitStamps ?? 0);
    if (stamps > 0) metrics.ntp.setTransmitCompensationS((now.transmitCompensationSumS - (last?.transmitCompensationSumS ?? 0)) / stamps);
    last = now;
  };
}
