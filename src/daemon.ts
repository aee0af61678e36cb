/**
 * Composition root: configuration → logger → metrics → clock → keyset store → time source → NTP listeners
 * (NTP threads: ntp/service.ts) and NTS-KE listeners → metrics
 * endpoint; then signals.
 *
 * Nothing here parses packets or touches keys: it wires the shells together and owns the lifecycle.
 * - SIGHUP reloads the certificates (validated first), the log level and reopens the log file.
 * - SIGTERM/SIGINT stop accepting, let KE sessions finish, persist the keyset and resolve with exit 0
 *   (forced after STOP_DEADLINE_MS so a stuck peer cannot keep the daemon alive).
 */
import type { Logger } from 'pino';
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { WallClock, startClockCalibrator, type ClockCalibrator } from './runtime/clock.js';
import type { Config } from './config/schema.js';
import { nodeRole } from './config/schema.js';
import { keRuntimeSettings, reloadConfig } from './config/reload.js';
import { keysetKeys } from './core/nts/keyset.js';
import { ClientLog, clientLogBytes, clientLogView } from './core/client-log.js';
import type { KeHandlerReport } from './core/ke-request-handler.js';
import { ExitCode, NtsdError, NtsdErrorCode } from './errors.js';
import { openKeysetSource } from './keys/open.js';
import type { KeysetSource } from './keys/sources.js';
import { createTimeSource, type TimeSource } from './ntp/server-fields.js';
import { createLogDestination, createLogger, type LogDestination } from './obs/log.js';
import { createMetrics, type Metrics } from './obs/metrics.js';
import { startMetricsServer, type MetricsServer } from './obs/metrics-http.js';
import { startKeListeners, type KeListeners } from './nts-ke/service.js';
import { startNtpListeners, type NtpListeners } from './ntp/service.js';
import { loadNativeUdp } from './runtime/addon.js';
import { nodeEndOfLife, ntsdVersion } from './runtime/version.js';
import { createPoolKeMetrics } from './obs/pool-metrics.js';
import { poolKeHandlerSpec, recordPoolKeReport } from './nts-pool/service.js';
import { installAeadBackend, missingOpenSslAeads } from './runtime/aead-openssl.js';

/** Longest a graceful stop may take before the daemon exits anyway. */
const STOP_DEADLINE_MS = 5000;

/** Options for starting the daemon. */
export interface DaemonOptions {
  /** True when running the embedded development configuration (prints a `check` hint). */
  readonly usingDefaultConfig?: boolean;
  /** The configuration file, re-read on SIGHUP (undefined: the embedded default, nothing to re-read). */
  readonly configPath?: string;
  /** Log destination (tests); default: standard output or `log-file`. */
  readonly logDestination?: LogDestination;
}

/** A running daemon. */
export interface Daemon {
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Bound NTP addresses, in `[[server]]` order. */
  readonly ntpAddresses: readonly { address: string; port: number }[];
  /** Bound NTS-KE addresses, in `[[nts-ke-server]]` order. */
  readonly keAddresses: readonly { address: string; port: number }[];
  /** Bound address of the `[pool-ke]` front end, when configured. */
  readonly poolKeAddress: { address: string; port: number } | undefined;
  /** Reloads certificates and reopens the log (what SIGHUP does). */
  reload(): Promise<void>;
  /** Graceful stop; resolves when everything is closed and the keyset persisted. */
  stop(): Promise<void>;
}

/** True for a listen host on loopback (no remote peer can time it). */
function isLoopbackHost(host: string): boolean {
  return /^127\./.test(host) || host === '::1' || host === 'localhost';
}

/**
 * The client log every NTP and KE thread counts into (`[observability] client-log-size`; 0 = none): made
 * once here, so a SIGHUP never resets it, and handed to the threads as shared memory.
 */
function createClientLog(config: Config, metrics: Metrics): ClientLog | undefined {
  const size = config.observability.clientLogSize;
  if (size <= 0) return undefined;
  const log = ClientLog.create(new SharedArrayBuffer(clientLogBytes(size)), size, randomInt(0, 2 ** 32));
  metrics.clients.setSource(log.capacity, () => log.summary());
  return log;
}

/**
 * Installs `[worker-pool] aead-backend` in this thread (threads started later follow it), logs the backend
 * per AEAD, sets ntsd_aead_backend_info, and warns when a non-loopback listener runs on the JavaScript AES.
 * `openssl` that OpenSSL cannot serve for an AEAD this node uses is a config error (exit 78).
 */
function installAead(config: Config, logger: Logger, metrics: Metrics): void {
  const request = config.workerPool.aeadBackend;
  const selection = installAeadBackend(request);
  if (request === 'openssl') {
    // The master-key AEAD (15) always; the offered ones; a node without KE opens cookies of any AEAD.
    const offered = config.ntsKeServers.length === 0 ? selection.entries.map((e) => e.aeadId) : config.ntsKeServers.flatMap((k) => k.aeadAlgorithms);
    const missing = missingOpenSslAeads(selection, [15, ...offered]);
    if (missing.length > 0) {
      throw new NtsdError(
        NtsdErrorCode.CONFIG_INVALID,
        `worker-pool.aead-backend: "openssl" is unavailable for ${missing.map((m) => `${m.name} (${m.reason ?? 'unavailable'})`).join('; ')}`,
      );
    }
  }
  metrics.aead.setBackends(selection.entries.map((e) => ({ aead: e.name, backend: e.backend })));
  logger.info(
    {
      request,
      aeads: selection.entries.map((e) => ({ aead: e.name, backend: e.backend, constantTime: e.constantTime, ...(e.reason === undefined ? {} : { reason: e.reason }) })),
    },
    'AEAD backends',
  );
  const slow = selection.entries.filter((e) => e.backend === 'javascript');
  if (slow.length > 0 && slow.length < selection.entries.length && config.ntsKeServers.length > 0) {
    logger.info(
      { aeads: slow.map((e) => e.name) },
      'NTS-KE chooses these AEADs only for clients that offer none on OpenSSL (they run on the JavaScript AES here; chrony offers AEAD 30 first by default)',
    );
  }
  const exposed = [...config.servers.map((s) => s.listen.host), ...config.ntsKeServers.map((k) => k.listen.host)].filter((h) => !isLoopbackHost(h));
  if (slow.length > 0 && exposed.length > 0) {
    logger.warn(
      { aeads: slow.map((e) => e.name), listeners: exposed },
      'AEADs run on the table-driven JavaScript AES, whose timing depends on the keys, on a non-loopback listener; build the native addon (OpenSSL) to close this channel',
    );
  }
}

/** Starts every component; throws NtsdError for operational failures (config, TLS material, bind). */
export async function startDaemon(config: Config, options: DaemonOptions = {}): Promise<Daemon> {
  const version = ntsdVersion();
  const destination = options.logDestination ?? createLogDestination(config.observability.logFile);
  const logger = createLogger({ level: config.observability.logLevel, format: config.observability.logFormat, destination });
  const metrics = createMetrics({ version });
  const eol = nodeEndOfLife(process.versions.node);
  if (eol !== undefined) {
    logger.warn(
      { node: process.versions.node, endOfLife: eol.endOfLife, moveTo: eol.moveTo },
      'this Node.js line is past its end of life and gets no security fixes; move to a supported line',
    );
  }
  const cleanups: (() => Promise<void> | void)[] = [];
  const cleanup = async (): Promise<void> => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (error) {
        logger.error({ err: error }, 'error while stopping');
      }
    }
  };

  try {
    // The AEAD backend first: every keyset decoded from here on (and every thread started later) uses it.
    installAead(config, logger, metrics);
    const clock = new WallClock();
    // With the native addon the wall clock is recalibrated from CLOCK_REALTIME on this thread (no thread of
    // its own, about 1 µs per run); without it a calibrator thread waits for millisecond edges.
    const native = loadNativeUdp();
    const calibrator: ClockCalibrator = startClockCalibrator(clock, undefined, native.ok ? (out) => native.addon.realtime(out) : undefined);
    cleanups.push(() => calibrator.stop());
    const clientLog = createClientLog(config, metrics);
    const clientLogBuffer = clientLog?.buffer instanceof SharedArrayBuffer ? { clientLog: clientLog.buffer } : {};

    // TLS material is validated before anything is created or bound: a bad pair is a config error (exit 78).
    let ntp: NtpListeners | undefined;
    const poolKeMetrics = createPoolKeMetrics(metrics.registry);
    // The [pool-ke] front end is a KE listener with its own request handler (nts-pool), loaded by its threads.
    const poolKe = config.poolKe;
    const frontEnd =
      poolKe === undefined
        ? undefined
        : { config: poolKe, handler: poolKeHandlerSpec(poolKe), onReport: (report: KeHandlerReport) => recordPoolKeReport(report, poolKeMetrics) };
    const ke: KeListeners = await startKeListeners(config, {
      onPoolRequests: (kind, outcome, count) => poolKeMetrics.sourceRequests(kind, outcome, count),
      ...(frontEnd !== undefined ? { frontEnd } : {}),
      logger: logger.child({ component: 'nts-ke' }),
      metrics,
      ...clientLogBuffer,
      ntpPortFallback: () => ntp?.addresses[0]?.port ?? config.servers[0]?.listen.port ?? 123,
    });
    cleanups.push(() => ke.stop());

    // Then the key set: the NTP and KE listeners both start from its snapshot. A pool front end alone
    // ([pool-ke] without [[server]] or [[nts-ke-server]]) seals no cookies and holds no keys.
    const needsKeys = config.servers.length > 0 || config.ntsKeServers.length > 0;
    const store: KeysetSource | undefined = needsKeys
      ? await openKeysetSource(config.keyset, logger.child({ component: 'keyset' }), metrics, (keyset, bytes) => {
          ntp?.setKeyset(bytes);
          ke.setKeyset(bytes);
          metrics.keys.setKeyset(keyset.currentSinceS, keysetKeys(keyset).length, keyset.current.id);
        })
      : undefined;
    if (store !== undefined) {
      cleanups.push(async () => {
        await store.close();
        await store.persist();
      });
      metrics.keys.setMode(config.keyset.mode);
      metrics.keys.setKeyset(store.keyset.currentSinceS, keysetKeys(store.keyset).length, store.keyset.current.id);
    }

    // A KE-only node (no [[server]]) answers no NTP: no time source, no pool, no UDP sockets.
    let ntpListeners: NtpListeners | undefined;
    if (config.servers.length > 0 && store !== undefined) {
      const timeSource: TimeSource = createTimeSource(config.timeSource, { clock, logger: logger.child({ component: 'time-source' }) });
      cleanups.push(() => timeSource.close());
      await timeSource.ready;
      metrics.timeSource.set(timeSource.current());

      // NTP threads, each owning its sockets (native addon or dgram: ntp/service.ts).
      ntp = await startNtpListeners(config, {
        clock,
        keysetBytes: store.bytes,
        serverFields: timeSource.current(),
        logger: logger.child({ component: 'ntp' }),
        metrics,
        ...clientLogBuffer,
      });
      const started = ntp;
      ntpListeners = started;
      cleanups.push(() => started.close());
      const unsubscribe = timeSource.onChange((fields) => {
        started.setServerFields(fields);
        metrics.timeSource.set(fields);
      });
      cleanups.push(unsubscribe);
    }

    let metricsServer: MetricsServer | undefined;
    const metricsListen = config.observability.metricsListen;
    if (metricsListen !== undefined) {
      // Client addresses are personal data: the per-client view is served on a loopback listener only.
      const viewable = clientLog !== undefined && isLoopbackHost(metricsListen.host);
      if (clientLog !== undefined && !viewable) {
        logger.info({ metricsListen: metricsListen.host }, 'client log view (GET /clients, ntsd clients) is off: metrics-listen is not a loopback address');
      }
      metricsServer = await startMetricsServer(
        metrics.registry,
        metricsListen.host,
        metricsListen.port,
        viewable ? { clients: () => clientLogView(clientLog.read(), clientLog.capacity, performance.timeOrigin + performance.now()) } : {},
      );
      const server = metricsServer;
      cleanups.push(() => server.close());
    }

    await ke.start(store?.bytes);
    store?.start();
    const poolKeAddress = ke.frontEndAddress();

    const ntpAddresses = (ntpListeners?.addresses ?? []).map((a) => ({ address: a.address, port: a.port }));
    const keAddresses = ke.addresses();
    logger.info(
      {
        version,
        node: process.versions.node,
        ntp: ntpAddresses.map((a) => `${a.address}:${a.port}`),
        ntsKe: keAddresses.map((a) => `${a.address}:${a.port}`),
        poolKe: poolKeAddress === undefined ? null : `${poolKeAddress.address}:${poolKeAddress.port}`,
        ntpPortAdvertised: ke.advertisedNtpPort(),
        metrics: metricsServer === undefined || metricsListen === undefined ? null : `${metricsListen.host}:${metricsServer.port}`,
        role: nodeRole(config),
        ntpThreads: ntpListeners?.threads ?? 0,
        datapath: ntpListeners?.datapath ?? null,
        keysetMode: config.keyset.mode,
        keyStorage: config.keyset.mode === 'ratchet' ? null : config.keyset.keyStoragePath,
        timeSource: config.timeSource.mode,
      },
      'ntsd started',
    );
    if (options.usingDefaultConfig === true) {
      const first = keAddresses[0];
      if (first !== undefined) {
        logger.info(
          { hint: `npx ntsd check localhost:${first.port} --ca certs/unsafe-dev-ca.pem` },
          'running the embedded development configuration (loopback only)',
        );
      }
    }

    let stopping: Promise<void> | undefined;
    let running = config;
    return {
      logger,
      metrics,
      ntpAddresses,
      keAddresses,
      poolKeAddress,
      async reload() {
        destination.reopen();
        if (options.configPath !== undefined) running = applyReloadedConfig(options.configPath, running, logger, ke, ntp);
        await store?.reload();
        const results = await ke.reloadCertificates();
        logger.info({ certificates: results, logLevel: logger.level }, 'reload');
      },
      stop() {
        stopping ??= (async () => {
          logger.info('stopping');
          await cleanup();
          logger.info('stopped');
          destination.flushSync();
        })();
        return stopping;
      },
    };
  } catch (error) {
    await cleanup();
    destination.flushSync();
    throw error;
  }
}

/**
 * SIGHUP: re-reads the configuration file and applies what can change at runtime (config/reload.ts says
 * what that is). An invalid file changes nothing; changes that need a restart are logged, not applied.
 * Returns the configuration now in force.
 */
function applyReloadedConfig(path: string, running: Config, logger: Logger, ke: KeListeners, ntp: NtpListeners | undefined): Config {
  const reloaded = reloadConfig(path, running);
  if (!reloaded.ok) {
    logger.error({ path, problems: reloaded.problems }, 'reload: configuration invalid; keeping the running configuration');
    return running;
  }
  const applied = reloaded.applied;
  ntp?.setAdmission(applied.servers);
  logger.level = applied.observability.logLevel;
  ke.updateLimits(applied.ntsKeServers, applied.poolKe === undefined ? undefined : keRuntimeSettings(applied.poolKe));
  if (reloaded.notApplied.length > 0) {
    logger.warn(
      { path, settings: reloaded.notApplied },
      'reload: some changes need a restart and were not applied (log-level, client rate limits, KE connection caps and access lists apply at runtime)',
    );
  }
  return applied;
}

/** Runs the daemon until SIGTERM/SIGINT; resolves with the exit code. */
export async function runDaemon(config: Config, options: DaemonOptions = {}): Promise<number> {
  const daemon = await startDaemon(config, options);
  const { logger } = daemon;
  process.on('uncaughtException', (error) => {
    logger.fatal({ err: error }, 'uncaught exception: exiting');
    process.exit(ExitCode.internal);
  });
  process.on('unhandledRejection', (reason) => {
    logger.fatal({ err: reason }, 'unhandled rejection: exiting');
    process.exit(ExitCode.internal);
  });
  process.on('SIGHUP', () => {
    daemon.reload().catch((error: unknown) => logger.error({ err: error }, 'reload failed'));
  });
  return new Promise<number>((resolve) => {
    const onStop = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'signal received');
      const force = setTimeout(() => {
        logger.error({ deadlineMs: STOP_DEADLINE_MS }, 'graceful stop took too long: exiting');
        resolve(ExitCode.ok);
      }, STOP_DEADLINE_MS);
      force.unref();
      daemon.stop().then(
        () => {
          clearTimeout(force);
          resolve(ExitCode.ok);
        },
        (error: unknown) => {
          logger.error({ err: error }, 'error while stopping');
          resolve(ExitCode.internal);
        },
      );
    };
    process.once('SIGTERM', onStop);
    process.once('SIGINT', onStop);
  });
}

