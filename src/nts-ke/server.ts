/**
 * Main-thread handle of an NTS-KE listener (RFC 8915 §4). The TLS work runs on its own worker thread
 * (nts-ke/thread-main.ts): a TLS 1.3 handshake costs about 0.7 ms of CPU, and running it on the thread that
 * timestamps NTP packets would add that much jitter. This handle starts the threads (runtime/supervisor.ts),
 * forwards keyset snapshots, certificate reloads and rate-limit changes, relays the threads' log lines to
 * pino and hands their batched metric tallies to `onStats` listeners. It serves both KE roles: the
 * ordinary KE answer, or a listener's own request handler (`handler`: the `[pool-ke]` front end).
 *
 * The per-client limiter's table (core/limiter.ts) lives in a SharedArrayBuffer created here, so a
 * SIGHUP change of its limits is a write into shared memory that the KE thread sees at once.
 */
import { randomBytes } from 'node:crypto';
import { closeSync } from 'node:fs';
import type { Logger } from 'pino';
import type { AccessConfig, ClientRateLimitConfig } from '../config/schema.js';
import { AccessList } from '../core/access-list.js';
import type { KePolicy } from '../core/ke-handler.js';
import { ConcurrencyLimiter, concurrencyTableBytes, type ConcurrencyLimits } from '../core/concurrency.js';
import { RateLimiter, rateLimiterBytes } from '../core/limiter.js';
import { encodeKeyset, type Keyset } from '../core/nts/keyset.js';
import type { KeHandlerSpec } from '../core/ke-request-handler.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { reusePortWorks } from '../runtime/reuse-port.js';
import { ThreadSupervisor, type LifecycleMessage, type ThreadExit } from '../runtime/supervisor.js';
import type { KeCertificatePem } from './certificates.js';
import { keIpv6Only } from './listener.js';
import {
  hasType,
  KE_THREAD_NICENESS,
  KE_WORKER_ROLE,
  keRateLimitConfig,
  type FromKeThread,
  type KeBoundAddress,
  type KeListenAddress,
  type KeStats,
  type KeWorkerInit,
  type ToKeThread,
} from './messages.js';

export {
  KE_REJECT_REASONS,
  KE_SESSION_OUTCOMES,
  KE_THREAD_NICENESS,
  type KeBoundAddress,
  type KeListenAddress,
  type KeRejectReason,
  type KeSessionOutcome,
  type KeStats,
} from './messages.js';

/** Everything the KE listener needs; the daemon maps `[[nts-ke-server]]` config onto it. */
export interface KeServerOptions {
  /** Addresses to listen on (IPv4 and IPv6, several allowed). */
  readonly listen: readonly KeListenAddress[];
  /**
   * Makes a listening TCP socket with SO_REUSEPORT and returns its descriptor (or a negative -errno), for
   * Nodes whose net module cannot set SO_REUSEPORT (before 22.12): with it, several KE threads still
   * share each address, each adopting its own socket. nts-ke/service.ts passes the native addon's.
   */
  readonly openReusePortListener?: (host: string, port: number, ipv6Only: boolean) => number;
  /** PEM certificate chain (leaf first) of the first (default) certificate pair. */
  readonly certificateChainPem: string;
  /** PEM private key of that leaf. */
  readonly privateKeyPem: string;
  /**
   * Further pairs, served by the name a client asks for (SNI) and by its signature algorithms
   * (nts-ke/certificates.ts); pair indices 1, 2, ... in reloadCertificate.
   */
  readonly moreCertificates?: readonly KeCertificatePem[] | undefined;
  /** One deadline per session covering the TLS handshake and the request (RFC 8915 §4.1.3 timeout). */
  readonly keyExchangeTimeoutMs: number;
  /**
   * Cap on open connections. When it is full, the open session with the least recent progress is
   * evicted for a newcomer (nts-ke/listener.ts); only when none can be is the newcomer closed before TLS
   * (counted as `connection_limit`).
   */
  readonly concurrentConnections: number;
  /** Cap on open connections from one source (IPv4 address or IPv6 /64); beyond it `source_limit`. */
  readonly concurrentConnectionsPerSource: number;
  /** Request size cap (RFC 8915 §4: MUST accept at least 1024 octets). */
  readonly maxRequestBytes: number;
  /** Per-client token bucket; `intervalS` 0 turns it off. */
  readonly clientRateLimit: ClientRateLimitConfig;
  /** KE answer policy (AEADs, Server/Port Negotiation); required without `handler`. */
  readonly policy?: KePolicy;
  /**
   * Access list (core/access-list.ts: most specific prefix wins); default: everyone allowed. `deny` and
   * `ignore` both close the connection before TLS (counted as access_denied / access_ignored).
   */
  readonly accessList?: AccessConfig;
  /** Initial keyset snapshot, or its `encodeKeyset` bytes (not modified); required without `handler`. */
  readonly keyset?: Keyset | Uint8Array | undefined;
  /**
   * The listener's own request handler module, loaded on every KE thread (core/ke-request-handler.ts; the
   * `[pool-ke]` front end); undefined = the ordinary KE answer under `policy` and `keyset`.
   */
  readonly handler?: KeHandlerSpec | undefined;
  /** Logger for the KE thread's error reports (one line per problem, never per connection). */
  readonly logger: Logger;
  /** Interval between stats reports in ms (default 1000). */
  readonly statsIntervalMs?: number;
  /**
   * Nice value the KE thread gives itself on Linux (0..19, default `KE_THREAD_NICENESS`); it never
   * raises its priority above the daemon's own. 0 leaves it alone.
   */
  readonly threadNiceness?: number;
  /** PROXY protocol v2 on every listen address: the trusted balancers' CIDR prefixes; undefined = off. */
  readonly proxyTrustedSources?: readonly string[] | undefined;
  /** KE threads, each with its own SO_REUSEPORT listener (default 1; one where SO_REUSEPORT is unavailable). */
  readonly threads?: number;
  /**
   * NTS pools (docs/pools.md): connections kept open for authenticated front ends, at most
   * `longlivedConnections` over all threads; undefined or 0 = never keep one.
   */
  readonly keepAlive?: { readonly longlivedConnections: number; readonly idleTimeoutMs: number; readonly maxAgeMs: number } | undefined;
  /** The client log (core/client-log.ts) every KE thread counts its connections in; undefined = off. */
  readonly clientLog?: SharedArrayBuffer | undefined;
}

/** A limiter table in shared memory, seeded with fresh random bits. */
function newSharedLimiter(config: ClientRateLimitConfig): RateLimiter {
  const buffer = new SharedArrayBuffer(rateLimiterBytes(config.tableSize));
  return RateLimiter.create(buffer, config.tableSize, randomBytes(4).readInt32LE(0), keRateLimitConfig(config));
}

function copyAccessList(config: AccessConfig): AccessConfig {
  return { entries: config.entries.map((e) => ({ ...e })), defaultAction: config.defaultAction };
}

/** A concurrency table in shared memory, seeded with fresh random bits. */
function newSharedConcurrency(limits: ConcurrencyLimits): ConcurrencyLimiter {
  const buffer = new SharedArrayBuffer(concurrencyTableBytes(limits.globalMax));
  return ConcurrencyLimiter.create(buffer, limits, randomBytes(4).readInt32LE(0));
}

/** A certificate reload waiting for every thread's answer. */
interface PendingReload {
  waiting: number;
  error: string | undefined;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

/** Time a stopping KE thread gets beyond its session deadline to drain and report before it is ended. */
const STOP_MARGIN_MS = 2000;

/**
 * Main-thread handle of the NTS-KE listener; the TLS work happens on its own worker threads, started,
 * replaced and stopped by runtime/supervisor.ts. With `threads` > 1 (and SO_REUSEPORT: runtime/reuse-port.ts,
 * or the addon's sockets on Node 20), each thread binds its own listener on the same addresses and the
 * kernel spreads connections over them; every limit stays global through the shared tables (rate limiter,
 * connection caps). Keyset snapshots, certificate reloads and access lists go to every thread. A thread
 * that dies is replaced (counted through onThreadRestart); its connections are gone with it, so the
 * connection counts are rebuilt from the survivors' open sessions, and reloads waiting for it fail.
 */
export class KeServer {
  readonly #options: KeServerOptions;
  readonly #statsListeners: ((stats: KeStats) => void)[] = [];
  readonly #restartListeners: (() => void)[] = [];
  readonly #pendingReloads = new Map<number, PendingReload>();
  #supervisor: ThreadSupervisor<readonly KeBoundAddress[]> | undefined;
  #limiter: RateLimiter;
  #limiterTableSize: number;
  #concurrency: ConcurrencyLimiter;
  /** What a replacement thread starts from: the latest keyset bytes, certificate pair and access list. */
  #keysetBytes: Uint8Array | undefined;
  /** The certificate pairs in configured order (pair 0 = the default). */
  #certificates: KeCertificatePem[];
  #accessList: AccessConfig;
  /** Addresses a thread binds: the configured ones until the first thread is bound, then its bound ports. */
  #boundListen: readonly KeListenAddress[];
  #addresses: readonly KeBoundAddress[] = [];
  #threadCount = 1;
  #reusePort = false;
  /** Threads adopt listening sockets made here (openReusePortListener) instead of binding. */
  #adoptFds = false;
  #nextRequestId = 1;
  #stopping = false;
  /** NTS pools: the shared count of kept connections (KeKeepAliveInit.table). */
  readonly #keepAliveTable = new SharedArrayBuffer(4);

  /** Creates the listener; nothing is bound until start(). */
  constructor(options: KeServerOptions) {
    if (options.handler === undefined && (options.policy === undefined || options.keyset === undefined)) {
      throw new TypeError('KeServer: an ordinary KE listener needs a policy and a keyset');
    }
    this.#options = options;
    this.#limiter = newSharedLimiter(options.clientRateLimit);
    this.#limiterTableSize = options.clientRateLimit.tableSize;
    this.#concurrency = newSharedConcurrency({
      globalMax: options.concurrentConnections,
      perSourceMax: options.concurrentConnectionsPerSource,
    });
    const keyset = options.keyset;
    this.#keysetBytes = keyset === undefined ? undefined : keyset instanceof Uint8Array ? new Uint8Array(keyset) : encodeKeyset(keyset);
    this.#certificates = [
      { chainPem: options.certificateChainPem, keyPem: options.privateKeyPem },
      ...(options.moreCertificates ?? []).map((p) => ({ chainPem: p.chainPem, keyPem: p.keyPem })),
    ];
    this.#accessList = copyAccessList(options.accessList ?? { entries: [], defaultAction: 'allow' });
    this.#boundListen = options.listen;
  }

  /** Addresses actually bound (after start()). */
  get addresses(): readonly KeBoundAddress[] {
    return this.#addresses;
  }

  /** KE threads running (after start(): `threads`, or 1 where SO_REUSEPORT listeners are not available). */
  get threadCount(): number {
    return this.#threadCount;
  }

  /** Registers a listener for batched metric tallies (about once per statsIntervalMs per thread while anything changes). */
  onStats(listener: (stats: KeStats) => void): void {
    this.#statsListeners.push(listener);
  }

  /** Registers a listener called each time a dead KE thread has been replaced. */
  onThreadRestart(listener: () => void): void {
    this.#restartListeners.push(listener);
  }

  /**
   * Spawns the KE threads and binds every listen address on each; rejects with NtsdError BIND_FAILED if
   * one fails (WORKER_FAILED if a thread cannot start), leaving no thread running. `threads` > 1 without
   * SO_REUSEPORT listeners (Node 20 without the native addon) runs one thread and logs a warning.
   */
  async start(): Promise<readonly KeBoundAddress[]> {
    if (this.#supervisor !== undefined) throw new Error('KeServer already started');
    const wanted = Math.max(1, Math.floor(this.#options.threads ?? 1));
    const tcpReusePort = wanted > 1 && (await reusePortWorks('tcp'));
    // Node 20: the same sharing through sockets the addon made (each thread adopts its own).
    this.#adoptFds = wanted > 1 && !tcpReusePort && this.#options.openReusePortListener !== undefined;
    this.#reusePort = tcpReusePort || this.#adoptFds;
    if (wanted > 1 && !this.#reusePort) {
      this.#options.logger.warn(
        { threads: wanted, node: process.versions.node },
        'NTS-KE threads > 1 need SO_REUSEPORT listeners (Node >= 22.12); running one KE thread',
      );
    }
    this.#threadCount = this.#reusePort ? wanted : 1;
    const supervisor = new ThreadSupervisor<readonly KeBoundAddress[]>({
      name: 'ke',
      entry: new URL('./thread-main.js', import.meta.url),
      workerData: (index) => this.#init(index),
      classify: (message) => classify(message),
      onMessage: (_index, message) => {
        if (hasType<FromKeThread>(message)) this.#onMessage(message);
      },
      onExit: (exit) => this.#onThreadExit(exit),
      onReplaced: () => {
        for (const listener of this.#restartListeners) listener();
      },
      stopMessage: { type: 'stop' } satisfies ToKeThread,
      stopGraceMs: this.#options.keyExchangeTimeoutMs + STOP_MARGIN_MS,
    });
    this.#supervisor = supervisor;
    try {
      const first = await supervisor.start(0);
      this.#addresses = first;
      this.#boundListen = this.#options.listen.map((a, i) => ({ host: a.host, port: first[i]?.port ?? a.port }));
      for (let i = 1; i < this.#threadCount; i++) await supervisor.start(i);
    } catch (error: unknown) {
      this.#stopping = true;
      await supervisor.stop();
      throw error instanceof NtsdError ? error : new NtsdError(NtsdErrorCode.WORKER_FAILED, 'NTS-KE thread failed to start', { cause: error });
    }
    supervisor.supervise();
    return this.#addresses;
  }

  #init(index: number): KeWorkerInit {
    const o = this.#options;
    const listen = this.#boundListen;
    const limiterTable = this.#limiter.buffer;
    const concurrencyTable = this.#concurrency.buffer;
    if (!(limiterTable instanceof SharedArrayBuffer && concurrencyTable instanceof SharedArrayBuffer)) throw new Error('KE tables are not shared');
    return {
      role: KE_WORKER_ROLE,
      threadIndex: index,
      listen: listen.map((a) => ({ host: a.host, port: a.port })),
      reusePort: this.#reusePort,
      listenFds: this.#adoptFds ? this.#openListenFds(listen) : undefined,
      certificates: this.#certificates.map((p) => ({ chainPem: p.chainPem, keyPem: p.keyPem })),
      keyExchangeTimeoutMs: o.keyExchangeTimeoutMs,
      concurrencyTable,
      maxRequestBytes: o.maxRequestBytes,
      rateLimitTable: limiterTable,
      policy: { ...(o.policy ?? { aeadIds: [] }) },
      accessList: copyAccessList(this.#accessList),
      keysetBytes: this.#keysetBytes,
      handler: o.handler,
      statsIntervalMs: o.statsIntervalMs ?? 1000,
      threadNiceness: o.threadNiceness ?? KE_THREAD_NICENESS,
      proxyTrustedSources: o.proxyTrustedSources === undefined ? undefined : [...o.proxyTrustedSources],
      keepAlive:
        o.keepAlive === undefined || o.keepAlive.longlivedConnections <= 0
          ? undefined
          : { table: this.#keepAliveTable, longlivedConnections: o.keepAlive.longlivedConnections, idleTimeoutMs: o.keepAlive.idleTimeoutMs, maxAgeMs: o.keepAlive.maxAgeMs },
      clientLog: o.clientLog,
    };
  }

  /** One SO_REUSEPORT listening socket per address, made with openReusePortListener; BIND_FAILED if one fails. */
  #openListenFds(listen: readonly KeListenAddress[]): number[] {
    const open = this.#options.openReusePortListener;
    if (open === undefined) return [];
    const fds: number[] = [];
    for (const a of listen) {
      const fd = open(a.host, a.port, keIpv6Only(a, listen));
      if (fd < 0) {
        for (const f of fds) closeSync(f);
        throw new NtsdError(NtsdErrorCode.BIND_FAILED, `NTS-KE listener cannot bind ${a.host}:${a.port}: errno ${-fd}`);
      }
      fds.push(fd);
    }
    return fds;
  }

  /** A thread died while serving (the supervisor replaces it): rebuild the connection counts, fail reloads. */
  #onThreadExit(exit: ThreadExit): void {
    this.#options.logger.error({ thread: exit.index, code: exit.exitCode, restartInMs: exit.restartInMs }, 'NTS-KE thread exited unexpectedly; starting a replacement');
    // Its sessions died with it, but their slots are still counted: start a fresh table, into which the
    // surviving threads re-register their own open sessions (the replacement starts from it too).
    this.#concurrency = newSharedConcurrency(this.#concurrency.limits);
    const table = this.#concurrency.buffer;
    if (table instanceof SharedArrayBuffer) this.#post({ type: 'concurrencyTable', table });
    // Its answer to a pending reload will never come.
    for (const [id, pending] of this.#pendingReloads) {
      this.#pendingReloads.delete(id);
      pending.reject(new Error('NTS-KE thread exited during a certificate reload'));
    }
  }

  #onMessage(message: FromKeThread): void {
    switch (message.type) {
      case 'stats':
        for (const listener of this.#statsListeners) listener(message.stats);
        return;
      case 'log':
        this.#options.logger[message.level](message.fields, message.msg);
        return;
      case 'reloaded': {
        const pending = this.#pendingReloads.get(message.requestId);
        if (pending === undefined) return;
        if (!message.ok) pending.error ??= message.error;
        if (--pending.waiting > 0) return;
        this.#pendingReloads.delete(message.requestId);
        if (pending.error === undefined) pending.resolve();
        else pending.reject(new NtsdError(NtsdErrorCode.TLS_MATERIAL_INVALID, `certificate reload refused: ${pending.error}`));
        return;
      }
      case 'ready':
      case 'listenError':
      case 'startError':
      case 'stopped':
        return; // lifecycle: the supervisor's (classify)
    }
  }

  /** Sends `message` to every running thread; returns how many were sent it. */
  #post(message: ToKeThread): number {
    let sent = 0;
    for (let i = 0; i < this.#threadCount; i++) if (this.#supervisor?.post(i, message) === true) sent++;
    return sent;
  }

  /**
   * Sends a new keyset snapshot (or its `encodeKeyset` bytes, not modified) to every KE thread; new
   * cookies are sealed under its current key. A snapshot that does not decode there is logged and ignored.
   */
  updateKeyset(keyset: Keyset | Uint8Array): void {
    const bytes = keyset instanceof Uint8Array ? new Uint8Array(keyset) : encodeKeyset(keyset);
    this.#keysetBytes?.fill(0);
    this.#keysetBytes = bytes; // kept for a replacement thread
    this.#post({ type: 'keyset', bytes });
  }

  /**
   * Replaces the per-client rate limit (SIGHUP). New limits are written into the shared table; a new
   * table size starts a new, empty table (a bounded table cannot be resized in place).
   */
  updateRateLimit(config: ClientRateLimitConfig): void {
    if (config.tableSize === this.#limiterTableSize) {
      this.#limiter.configure(keRateLimitConfig(config));
      return;
    }
    this.#limiter = newSharedLimiter(config);
    this.#limiterTableSize = config.tableSize;
    const buffer = this.#limiter.buffer;
    if (buffer instanceof SharedArrayBuffer) this.#post({ type: 'rateLimitTable', table: buffer });
  }

  /**
   * Replaces the access list (SIGHUP) for the next connections on every thread. Throws RangeError on a
   * list that does not compile (the config schema never lets one through).
   */
  updateAccessList(config: AccessConfig): void {
    const compiled = AccessList.compile(config.entries, config.defaultAction);
    if (!compiled.ok) throw new RangeError(compiled.error);
    this.#accessList = copyAccessList(config);
    this.#post({ type: 'accessList', config: copyAccessList(config) });
  }

  /**
   * Replaces the connection caps (SIGHUP): a write into the shared table, effective for the next
   * connection. Open connections stay; a lower cap is reached as they end (or are evicted).
   */
  updateConnectionLimits(limits: ConcurrencyLimits): void {
    this.#concurrency.configure(limits);
  }

  /** Connections open now over every KE thread of this listener (from the shared table). */
  get openConnections(): number {
    return this.#concurrency.open;
  }

  /**
   * Swaps certificate pair `index` (0 = certificateChainPem/privateKeyPem, then moreCertificates) for new
   * handshakes on every thread; the other pairs and open sessions are not disturbed. Each thread builds the
   * new contexts with minVersion TLSv1.3; rejects if any refuses them.
   */
  reloadCertificate(chainPem: string, keyPem: string, index = 0): Promise<void> {
    if (this.#supervisor === undefined || this.#stopping) return Promise.reject(new Error('KeServer is not running'));
    if (!(index >= 0 && index < this.#certificates.length)) return Promise.reject(new RangeError(`no certificate pair ${index}`));
    const requestId = this.#nextRequestId++;
    return new Promise<void>((resolve, reject) => {
      const pending: PendingReload = {
        waiting: 0,
        error: undefined,
        resolve: () => {
          this.#certificates[index] = { chainPem, keyPem };
          resolve();
        },
        reject,
      };
      this.#pendingReloads.set(requestId, pending);
      pending.waiting = this.#post({ type: 'reloadCertificate', requestId, index, chainPem, keyPem });
      if (pending.waiting === 0) {
        this.#pendingReloads.delete(requestId);
        reject(new Error('KeServer has no running thread'));
      }
    });
  }

  /**
   * Fault injection for tests: terminates KE thread `index` as a crash would; the handle replaces it.
   * Resolves once the replacement listens.
   */
  async crashThreadForTest(index: number): Promise<void> {
    const replaced = new Promise<void>((resolve) => this.#restartListeners.push(resolve));
    if (this.#supervisor === undefined || !(await this.#supervisor.terminate(index))) throw new Error(`no KE thread ${index}`);
    await replaced;
  }

  /**
   * Stops accepting, lets open sessions finish within their deadline, delivers the last stats,
   * then ends the KE threads.
   */
  async stop(): Promise<void> {
    const supervisor = this.#supervisor;
    if (supervisor === undefined || this.#stopping) return;
    this.#stopping = true;
    await supervisor.stop();
    this.#keysetBytes?.fill(0);
  }
}

/** Sorts a KE thread's message into the supervisor's lifecycle (ready, failed, stopped) or ours. */
function classify(message: unknown): LifecycleMessage<readonly KeBoundAddress[]> {
  if (!hasType<FromKeThread>(message)) return undefined;
  switch (message.type) {
    case 'ready':
      return { kind: 'ready', value: message.addresses };
    case 'listenError':
      return {
        kind: 'failed',
        error: new NtsdError(NtsdErrorCode.BIND_FAILED, `NTS-KE listener cannot bind ${message.host}:${message.port}: ${message.message}`, {
          details: [message.code],
        }),
      };
    case 'startError':
      return { kind: 'failed', error: new NtsdError(NtsdErrorCode.WORKER_FAILED, `NTS-KE thread cannot start: ${message.message}`) };
    case 'stopped':
      return { kind: 'stopped' };
    default:
      return undefined;
  }
}
