/**
 * NTS-KE side of the daemon: one KE thread (nts-ke/server.ts) and one certificate watcher
 * (nts-ke/cert-watcher.ts) per `[[nts-ke-server]]`, wired to the metrics. Kept out of io/ because it
 * composes two io modules, which io files may not do themselves.
 */
import type { Logger } from 'pino';
import { availableParallelism } from 'node:os';
import { keThreadCount, type Config, type KeRuntimeSettings, type NtsKeServerConfig } from '../config/schema.js';
import { NTP_PORT } from '../core/nts/ids.js';
import { CertWatcher, type CertificatePair } from './cert-watcher.js';
import { KeServer } from './server.js';
import type { Metrics } from '../obs/metrics.js';
import { addressBytes, loadNativeUdp } from '../runtime/addon.js';

/** What the daemon needs to start the KE listeners. */
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

export interface KeListenersOptions {
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** The NTP port to advertise when `ntp-port` is not set: server[0]'s bound port. */
  readonly ntpPortFallback: () => number;
  /** NTS pools: answered support / fixed key requests, for ntsd_ke_pool_requests_total. */
  readonly onPoolRequests?: (kind: string, outcome: string, count: number) => void;
}

/** The running KE listeners. */
export interface KeListeners {
  /** Binds every listener (after the UDP port is known) with the initial keyset snapshot. */
  start(keysetBytes: Uint8Array): Promise<void>;
  /** Bound addresses in `[[nts-ke-server]]` order. */
  addresses(): { address: string; port: number }[];
  /** NTP port advertised by the first listener. */
  advertisedNtpPort(): number;
  /** Sends a new keyset snapshot to every KE thread. */
  setKeyset(bytes: Uint8Array): void;
  /** Applies the runtime settings (keKeysAppliedAtRuntime) of each `[[nts-ke-server]]`, in order (SIGHUP). */
  updateLimits(configs: readonly KeRuntimeSettings[]): void;
  /** Re-reads every certificate pair (SIGHUP); returns one result per listener. */
  reloadCertificates(): Promise<string[]>;
  /** Stops accepting, lets open sessions finish within their deadline, stops the threads. */
  stop(): Promise<void>;
}

interface Listener {
  readonly config: NtsKeServerConfig;
  readonly watcher: CertWatcher;
  readonly initialPair: CertificatePair;
  server: KeServer | undefined;
  notAfterS: number;
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
    const earliest = Math.min(...listeners.map((l) => l.notAfterS));
    if (Number.isFinite(earliest)) metrics.keys.setCertificateExpiry(earliest);
  };

  for (const keConfig of config.ntsKeServers) {
    const holder: { listener?: Listener } = {};
    const watcher = new CertWatcher({
      chainPath: keConfig.certificateChainPath,
      keyPath: keConfig.privateKeyPath,
      intervalS: keConfig.certificateReloadIntervalS,
      logger,
      onReload: async (pair) => {
        const server = holder.listener?.server;
        if (server !== undefined) await server.reloadCertificate(pair.chainPem, pair.keyPem);
      },
      onResult: (result, pair) => {
        if (result === 'unchanged') return;
        metrics.keys.tlsReload(result);
        if (result === 'success' && pair !== undefined && holder.listener !== undefined) {
          holder.listener.notAfterS = pair.notAfterS;
          updateExpiry();
        }
      },
    });
    const initialPair = await watcher.load();
    const listener: Listener = { config: keConfig, watcher, initialPair, server: undefined, notAfterS: initialPair.notAfterS };
    holder.listener = listener;
    listeners.push(listener);
    logger.info(
      { listen: `${keConfig.listen.host}:${keConfig.listen.port}`, subject: initialPair.subject, notAfter: new Date(initialPair.notAfterS * 1000).toISOString() },
      'certificate loaded',
    );
  }
  updateExpiry();

  const advertisedPort = (c: NtsKeServerConfig): number => (c.ntpPortExplicit ? c.ntpPort : options.ntpPortFallback());

  return {
    async start(initialKeysetBytes) {
      keysetBytes ??= initialKeysetBytes;
      const reusePortListener = nativeReusePortListener();
      for (const listener of listeners) {
        const c = listener.config;
        const ntpPort = advertisedPort(c);
        const server = new KeServer({
          listen: [{ host: c.listen.host, port: c.listen.port }],
          certificateChainPem: listener.initialPair.chainPem,
          privateKeyPem: listener.initialPair.keyPem,
          keyExchangeTimeoutMs: c.keyExchangeTimeoutMs,
          concurrentConnections: c.concurrentConnections,
          concurrentConnectionsPerSource: c.concurrentConnectionsPerSource,
          threads: keThreadCount(c, config.workerPool, availableParallelism()),
          accessList: c.access,
          maxRequestBytes: c.maxRequestBytes,
          clientRateLimit: c.clientRateLimit,
          policy: {
            aeadIds: c.aeadAlgorithms,
            ...(c.ntpServer !== undefined ? { ntpServer: c.ntpServer } : {}),
            // RFC 8915 §4.1.8: without a Port Negotiation record the client uses 123.
            ...(ntpPort !== NTP_PORT ? { ntpPort } : {}),
            // NTS pools: the front ends' tokens (secret; the policy is never logged).
            ...(c.acceptedPoolAuthenticationTokens.length > 0 ? { poolAuthenticationTokens: c.acceptedPoolAuthenticationTokens } : {}),
          },
          keepAlive: { longlivedConnections: c.longlivedConnections, idleTimeoutMs: c.keepAliveIdleTimeoutS * 1000, maxAgeMs: c.keepAliveMaxAgeS * 1000 },
          keyset: keysetBytes,
          logger,
          threadNiceness: c.threadNiceness,
          ...(c.proxyProtocol ? { proxyTrustedSources: c.proxyTrustedSources } : {}),
          ...(reusePortListener !== undefined ? { openReusePortListener: reusePortListener } : {}),
        });
        server.onStats((stats) => {
          metrics.ke.addStats(stats);
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
      return listeners.flatMap((l) => (l.server?.addresses ?? []).map((a) => ({ address: a.address, port: a.port })));
    },
    advertisedNtpPort() {
      const first = listeners[0];
      return first === undefined ? NTP_PORT : advertisedPort(first.config);
    },
    setKeyset(bytes) {
      keysetBytes = bytes;
      for (const l of listeners) l.server?.updateKeyset(bytes);
    },
    updateLimits(configs) {
      listeners.forEach((l, i) => {
        const c = configs[i];
        if (c === undefined || l.server === undefined) return;
        l.server.updateRateLimit(c.clientRateLimit);
        l.server.updateConnectionLimits({ globalMax: c.concurrentConnections, perSourceMax: c.concurrentConnectionsPerSource });
        l.server.updateAccessList(c.access);
      });
    },
    async reloadCertificates() {
      return Promise.all(listeners.map((l) => l.watcher.reload(true)));
    },
    async stop() {
      for (const l of listeners) l.watcher.stop();
      await Promise.all(listeners.map((l) => l.server?.stop()));
    },
  };
}
