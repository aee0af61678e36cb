/**
 * NTS-KE side of the daemon: one KE listener (nts-ke/server.ts, its threads) per `[[nts-ke-server]]` with
 * one certificate watcher (nts-ke/cert-watcher.ts) per certificate pair, each pair validated and reloaded
 * on its own, and the same for the `[pool-ke]` front end when the
 * daemon passes its request handler (`frontEnd`), all wired to the KE metrics. The front end feeds the
 * same ntsd_ke_* series as the ordinary listeners (they have no role label); its own outcomes go to the
 * pool metrics through `frontEnd.onReport`.
 */
import type { Logger } from 'pino';
import { availableParallelism } from 'node:os';
import {
  keThreadCount,
  type CertificatePairConfig,
  type Config,
  type KeListenerConfig,
  type KeRuntimeSettings,
  type NtsKeServerConfig,
} from '../config/schema.js';
import type { KeHandlerReport, KeHandlerSpec } from '../core/ke-request-handler.js';
import { NTP_PORT } from '../core/nts/ids.js';
import { CertWatcher, type CertificatePair } from './cert-watcher.js';
import { KeServer } from './server.js';
import type { Metrics } from '../obs/metrics.js';
import { addressBytes, loadNativeUdp } from '../runtime/addon.js';

/** Listen backlog of sockets made by the native addon (the KE listener's own value). */
const NATIVE_LISTEN_BACKLOG = 511;

/**
 * SO_REUSEPORT TCP listeners from the native addon, so several KE threads can share a port on Nodes
 * whose net module cannot (before 22.12); undefined without the addon (then one KE thread and a warning).
 */
function nativeReusePortListener(): ((host: string, port: number, ipv6Only: boolean) => number) | undefined {
  const native = loadNativeUdp();
  if (!native.ok) return undefined;
  const addon = native.addon;
  return (host, port, ipv6Only) => {
    const address = addressBytes(host);
    return address === undefined ? -22 /* EINVAL */ : addon.openTcpListener(address.family, address.bytes, port, ipv6Only ? 1 : 0, NATIVE_LISTEN_BACKLOG);
  };
}

/** What the daemon needs to start the KE listeners. */
export interface KeListenersOptions {
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** The NTP port to advertise when `ntp-port` is not set: server[0]'s bound port. */
  readonly ntpPortFallback: () => number;
  /** NTS pools: answered support / fixed key requests, for ntsd_ke_pool_requests_total. */
  readonly onPoolRequests?: (kind: string, outcome: string, count: number) => void;
  /** The client log (core/client-log.ts) shared with the NTP threads; absent = off. */
  readonly clientLog?: SharedArrayBuffer;
  /** The `[pool-ke]` front end: a KE listener that answers with `handler` (docs/pools.md). */
  readonly frontEnd?: {
    readonly config: KeListenerConfig;
    readonly handler: KeHandlerSpec;
    /** A KE thread's front-end samples (nts-pool/service.ts records them). */
    onReport(report: KeHandlerReport): void;
  };
}

/** The running KE listeners. */
export interface KeListeners {
  /** Binds every listener (after the UDP port is known) with the initial keyset snapshot (none on a front end alone). */
  start(keysetBytes: Uint8Array | undefined): Promise<void>;
  /** Bound addresses in `[[nts-ke-server]]` order. */
  addresses(): { address: string; port: number }[];
  /** Bound address of the `[pool-ke]` front end, when there is one. */
  frontEndAddress(): { address: string; port: number } | undefined;
  /** NTP port advertised by the first listener. */
  advertisedNtpPort(): number;
  /** Sends a new keyset snapshot to every KE thread. */
  setKeyset(bytes: Uint8Array): void;
  /** Applies the runtime settings of each `[[nts-ke-server]]`, in order, and of the front end (SIGHUP). */
  updateLimits(configs: readonly KeRuntimeSettings[], frontEnd?: KeRuntimeSettings): void;
  /** Re-reads every certificate pair (SIGHUP); returns one result per pair, listener by listener. */
  reloadCertificates(): Promise<string[]>;
  /** Stops accepting, lets open sessions finish within their deadline, stops the threads. */
  stop(): Promise<void>;
}

/** One configured certificate pair and its watcher (which holds the pair installed now). */
interface Pair {
  readonly config: CertificatePairConfig;
  readonly watcher: CertWatcher;
}

/** The pair installed now: the watcher's, loaded before the Pair was made. */
function installed(p: Pair): CertificatePair {
  const current = p.watcher.current;
  if (current === undefined) throw new Error('certificate watcher used before load()');
  return current;
}

interface Listener {
  readonly config: KeListenerConfig;
  /** The ordinary listener's own settings; undefined for the front end. */
  readonly ke: NtsKeServerConfig | undefined;
  /** In configured order; pair 0 is the default (KeServer's certificateChainPem). */
  readonly pairs: readonly Pair[];
  server: KeServer | undefined;
}

/**
 * The `name` label of a pair's ntsd_tls_certificate_expiry_timestamp_seconds series: the configured
 * `name`, else the certificate's primary name.
 */
function certificateMetricName(config: CertificatePairConfig, pair: CertificatePair): string {
  return config.name ?? (pair.primaryName === '' ? config.certificateChainPath : pair.primaryName);
}

/** Earliest notAfter per label over `pairs` (pairs that share a name report the one that expires first). */
function certificateExpiries(pairs: readonly Pair[]): Map<string, number> {
  const byName = new Map<string, number>();
  for (const p of pairs) {
    const current = installed(p);
    const name = certificateMetricName(p.config, current);
    byName.set(name, Math.min(byName.get(name) ?? Infinity, current.notAfterS));
  }
  return byName;
}

/**
 * Loads and validates every certificate pair (throwing NtsdError TLS_MATERIAL_INVALID, exit 78, for an
 * unusable one) but binds nothing until start().
 */
export async function startKeListeners(config: Config, options: KeListenersOptions): Promise<KeListeners> {
  const { logger, metrics } = options;
  let keysetBytes: Uint8Array | undefined;
  const listeners: Listener[] = [];
  const updateExpiry = (): void => {
    metrics.keys.setCertificateExpiries(certificateExpiries(listeners.flatMap((l) => l.pairs)));
  };

  const frontEnd = options.frontEnd;
  const tables: { config: KeListenerConfig; ke: NtsKeServerConfig | undefined }[] = config.ntsKeServers.map((ke) => ({ config: ke, ke }));
  if (frontEnd !== undefined) tables.push({ config: frontEnd.config, ke: undefined });
  for (const { config: keConfig, ke } of tables) {
    const holder: { listener?: Listener } = {};
    const pairs: Pair[] = [];
    for (const [index, pairConfig] of keConfig.certificates.entries()) {
      const watcher = new CertWatcher({
        chainPath: pairConfig.certificateChainPath,
        keyPath: pairConfig.privateKeyPath,
        intervalS: keConfig.certificateReloadIntervalS,
        logger,
        onReload: async (pair) => {
          const server = holder.listener?.server;
          if (server !== undefined) await server.reloadCertificate(pair.chainPem, pair.keyPem, index);
        },
        onResult: (result) => {
          if (result === 'unchanged') return;
          metrics.keys.tlsReload(result);
          if (result === 'success') updateExpiry();
        },
      });
      const initial = await watcher.load();
      pairs.push({ config: pairConfig, watcher });
      logger.info(
        {
          listen: `${keConfig.listen.host}:${keConfig.listen.port}`,
          pair: index,
          name: certificateMetricName(pairConfig, initial),
          keyType: initial.keyType,
          subject: initial.subject,
          notAfter: new Date(initial.notAfterS * 1000).toISOString(),
        },
        'certificate loaded',
      );
    }
    const listener: Listener = { config: keConfig, ke, pairs, server: undefined };
    holder.listener = listener;
    listeners.push(listener);
  }
  updateExpiry();

  const advertisedPort = (c: NtsKeServerConfig): number => (c.ntpPortExplicit ? c.ntpPort : options.ntpPortFallback());
  // The gauge ntsd_ke_active_connections is the sum over the listeners; each reports its own count.
  const activeByListener = listeners.map(() => 0);

  return {
    async start(initialKeysetBytes) {
      keysetBytes ??= initialKeysetBytes;
      const reusePortListener = nativeReusePortListener();
      for (const [index, listener] of listeners.entries()) {
        const c = listener.config;
        const ke = listener.ke;
        const ntpPort = ke === undefined ? NTP_PORT : advertisedPort(ke);
        const [first, ...more] = listener.pairs;
        if (first === undefined) throw new Error('a KE listener without a certificate pair');
        const server = new KeServer({
          listen: [{ host: c.listen.host, port: c.listen.port }],
          certificateChainPem: installed(first).chainPem,
          privateKeyPem: installed(first).keyPem,
          moreCertificates: more.map((p) => ({ chainPem: installed(p).chainPem, keyPem: installed(p).keyPem })),
          keyExchangeTimeoutMs: c.keyExchangeTimeoutMs,
          concurrentConnections: c.concurrentConnections,
          concurrentConnectionsPerSource: c.concurrentConnectionsPerSource,
          threads: keThreadCount(c, config.workerPool, availableParallelism()),
          accessList: c.access,
          maxRequestBytes: c.maxRequestBytes,
          clientRateLimit: c.clientRateLimit,
          // The ordinary answer, or the front end's handler.
          ...(ke === undefined
            ? { handler: frontEnd?.handler }
            : {
                policy: {
                  aeadIds: ke.aeadAlgorithms,
                  ...(ke.ntpServer !== undefined ? { ntpServer: ke.ntpServer } : {}),
                  // RFC 8915 §4.1.8: without a Port Negotiation record the client uses 123.
                  ...(ntpPort !== NTP_PORT ? { ntpPort } : {}),
                  // NTS pools: the front ends' tokens (secret; the policy is never logged).
                  ...(ke.acceptedPoolAuthenticationTokens.length > 0 ? { poolAuthenticationTokens: ke.acceptedPoolAuthenticationTokens } : {}),
                },
                keepAlive: { longlivedConnections: ke.longlivedConnections, idleTimeoutMs: ke.keepAliveIdleTimeoutS * 1000, maxAgeMs: ke.keepAliveMaxAgeS * 1000 },
                keyset: keysetBytes,
              }),
          logger,
          threadNiceness: c.threadNiceness,
          clientLog: options.clientLog,
          ...(c.proxyProtocol ? { proxyTrustedSources: c.proxyTrustedSources } : {}),
          ...(reusePortListener !== undefined ? { openReusePortListener: reusePortListener } : {}),
        });
        server.onStats((stats) => {
          activeByListener[index] = stats.activeConnections;
          metrics.ke.addStats({ ...stats, activeConnections: activeByListener.reduce((a, b) => a + b, 0) });
          if (stats.handlerReport !== undefined) frontEnd?.onReport(stats.handlerReport);
          for (const [key, count] of Object.entries(stats.poolRequests)) {
            const [kind = '', outcome = ''] = key.split('/');
            options.onPoolRequests?.(kind, outcome, count);
          }
        });
        server.onThreadRestart(() => metrics.ke.threadRestarted());
        listener.server = server;
        await server.start();
      }
    },
    addresses() {
      return listeners.flatMap((l) => (l.ke === undefined ? [] : (l.server?.addresses ?? []).map((a) => ({ address: a.address, port: a.port }))));
    },
    frontEndAddress() {
      const a = listeners.find((l) => l.ke === undefined)?.server?.addresses[0];
      return a === undefined ? undefined : { address: a.address, port: a.port };
    },
    advertisedNtpPort() {
      const first = listeners[0]?.ke;
      return first === undefined ? NTP_PORT : advertisedPort(first);
    },
    setKeyset(bytes) {
      keysetBytes = bytes;
      for (const l of listeners) if (l.ke !== undefined) l.server?.updateKeyset(bytes);
    },
    updateLimits(configs, frontEndSettings) {
      listeners.forEach((l, i) => {
        const c = l.ke === undefined ? frontEndSettings : configs[i];
        if (c === undefined || l.server === undefined) return;
        l.server.updateRateLimit(c.clientRateLimit);
        l.server.updateConnectionLimits({ globalMax: c.concurrentConnections, perSourceMax: c.concurrentConnectionsPerSource });
        l.server.updateAccessList(c.access);
      });
    },
    async reloadCertificates() {
      return Promise.all(listeners.flatMap((l) => l.pairs.map((p) => p.watcher.reload(true))));
    },
    async stop() {
      for (const l of listeners) for (const p of l.pairs) p.watcher.stop();
      await Promise.all(listeners.map((l) => l.server?.stop()));
    },
  };
}
