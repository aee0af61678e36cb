/**
 * Main-thread handle of an NTS-KE listener (RFC 8915 §4). The TLS work runs on its own worker thread
 * (nts-ke/thread-main.ts): a TLS 1.3 handshake costs about 0.7 ms of CPU, and running it on the thread that
 * timestamps NTP packets would add that much jitter. This handle spawns the thread, forwards keyset
 * snapshots, certificate reloads and rate-limit changes, relays the thread's log lines to pino and hands
 * its batched metric tallies to `onStats` listeners.
 *
 * The per-client limiter's table (core/limiter.ts) lives in a SharedArrayBuffer created here, so a
 * SIGHUP change of its limits is a write into shared memory that the KE thread sees at once.
 */
import { randomBytes } from 'node:crypto';
import { closeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { AccessConfig, ClientRateLimitConfig } from '../config/schema.js';
import { AccessList } from '../core/access-list.js';
import type { KePolicy } from '../core/ke-handler.js';
import { ConcurrencyLimiter, concurrencyTableBytes, type ConcurrencyLimits } from '../core/concurrency.js';
import { RateLimiter, rateLimiterBytes } from '../core/limiter.js';
import { encodeKeyset, type Keyset } from '../core/nts/keyset.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
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
  /** PEM certificate chain (leaf first). */
  readonly certificateChainPem: string;
  /** PEM private key of the leaf. */
  readonly privateKeyPem: string;
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
  /** KE answer policy (AEADs, Server/Port Negotiation). */
  readonly policy: KePolicy;
  /**
   * Access list (core/access-list.ts: most specific prefix wins); default: everyone allowed. `deny` and
   * `ignore` both close the connection before TLS (counted as access_denied / access_ignored).
   */
  readonly accessList?: AccessConfig;
  /** Initial keyset snapshot, or its `encodeKeyset` bytes (not modified). */
  readonly keyset: Keyset | Uint8Array;
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
   * NTS pools (README "Pools"): connections kept open for authenticated front ends, at most
   * `longlivedConnections` over all threads; undefined or 0 = never keep one.
   */
  readonly keepAlive?: { readonly longlivedConnections: number; readonly idleTimeoutMs: number; readonly maxAgeMs: number } | undefined;
  /** Called when a dead KE thread cannot be replaced (a bug). Default: log fatal and rethrow asynchronously. */
  readonly onFatal?: (error: Error) => void;
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

/**
 * True when this Node can bind several TCP listeners to one port with SO_REUSEPORT
 * (`net.Server.listen({ reusePort })`, Node ≥ 22.12 / ≥ 23.1). Node 20 ignores the option and refuses the
 * second bind with EADDRINUSE.
 */
export function tcpReusePortSupported(version: string = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

/** One KE thread as the handle sees it. */
interface KeThread {
  readonly index: number;
  worker: Worker;
  /** True once it listens. */
  started: boolean;
}

/** A certificate reload waiting for every thread's answer. */
interface PendingReload {
  waiting: number;
  error: string | undefined;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

/**
 * Main-thread handle of the NTS-KE listener; the TLS work happens on its own worker threads. With
 * `threads` > 1 (and SO_REUSEPORT: tcpReusePortSupported), each thread binds its own listener on the same
 * addresses and the kernel spreads connections over them; every limit stays global through the shared
 * tables (rate limiter, connection caps). Keyset snapshots, certificate reloads and access lists go to
 * every thread. A thread that dies is replaced (counted through onThreadRestart); its connections are gone
 * with it, so the connection counts are rebuilt from the survivors' open sessions.
 */
export class KeServer {
  readonly #options: KeServerOptions;
  readonly #logger: Logger;
  readonly #statsListeners: ((stats: KeStats) => void)[] = [];
  readonly #restartListeners: (() => void)[] = [];
  readonly #pendingReloads = new Map<number, PendingReload>();
  /** By index; undefined while a thread is being replaced. */
  readonly #threads: (KeThread | undefined)[] = [];
  #limiter: RateLimiter;
  #limiterTableSize: number;
  #concurrency: ConcurrencyLimiter;
  /** What a replacement thread starts from: the latest keyset bytes, certificate pair and access list. */
  #keysetBytes: Uint8Array;
  #chainPem: string;
  #keyPem: string;
  #accessList: AccessConfig;
  /** Addresses for threads after the first (the first's bound ports). */
  #boundListen: readonly KeListenAddress[] = [];
  #addresses: readonly KeBoundAddress[] = [];
  #threadCount = 1;
  /** Threads adopt listening sockets made here (openReusePortListener) instead of binding. */
  #adoptFds = false;
  #nextRequestId = 1;
  #stopping = false;
  #stoppedCount = 0;
  /** NTS pools: the shared count of kept connections (KeKeepAliveInit.table). */
  readonly #keepAliveTable = new SharedArrayBuffer(4);
  #stopped: (() => void) | undefined;

  /** Creates the listener; nothing is bound until start(). */
  constructor(options: KeServerOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#limiter = newSharedLimiter(options.clientRateLimit);
    this.#limiterTableSize = options.clientRateLimit.tableSize;
    this.#concurrency = newSharedConcurrency({
      globalMax: options.concurrentConnections,
      perSourceMax: options.concurrentConnectionsPerSource,
    });
    this.#keysetBytes = options.keyset instanceof Uint8Array ? new Uint8Array(options.keyset) : encodeKeyset(options.keyset);
    this.#chainPem = options.certificateChainPem;
    this.#keyPem = options.privateKeyPem;
    this.#accessList = copyAccessList(options.accessList ?? { entries: [], defaultAction: 'allow' });
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
   * one fails. `threads` > 1 on a Node without TCP SO_REUSEPORT runs one thread and logs a warning.
   * (Seam for such a Node: a listening fd made with SO_REUSEPORT elsewhere, e.g. by the native addon,
   * could be handed to each thread for `listen({ fd })` instead of the address.)
   */
  async start(): Promise<readonly KeBoundAddress[]> {
    if (this.#threads.length > 0) throw new Error('KeServer already started');
    const wanted = Math.max(1, Math.floor(this.#options.threads ?? 1));
    // Node 20: the same sharing through sockets the addon made (each thread adopts its own).
    this.#adoptFds = wanted > 1 && !tcpReusePortSupported() && this.#options.openReusePortListener !== undefined;
    const reusePort = wanted > 1 && (tcpReusePortSupported() || this.#adoptFds);
    if (wanted > 1 && !reusePort) {
      this.#logger.warn(
        { threads: wanted, node: process.versions.node },
        'NTS-KE threads > 1 need SO_REUSEPORT listeners (Node >= 22.12); running one KE thread',
      );
    }
    this.#threadCount = reusePort ? wanted : 1;
    const first = await this.#spawn(0, this.#options.listen, reusePort);
    this.#addresses = first;
    this.#boundListen = this.#options.listen.map((a, i) => ({ host: a.host, port: first[i]?.port ?? a.port }));
    try {
      for (let i = 1; i < this.#threadCount; i++) await this.#spawn(i, this.#boundListen, true);
    } catch (error: unknown) {
      await this.#terminateAll();
      throw error;
    }
    return first;
  }

  #init(listen: readonly KeListenAddress[], reusePort: boolean, index: number): KeWorkerInit {
    const o = this.#options;
    const limiterTable = this.#limiter.buffer;
    const concurrencyTable = this.#concurrency.buffer;
    if (!(limiterTable instanceof SharedArrayBuffer && concurrencyTable instanceof SharedArrayBuffer)) throw new Error('KE tables are not shared');
    return {
      role: KE_WORKER_ROLE,
      threadIndex: index,
      listen: listen.map((a) => ({ host: a.host, port: a.port })),
      reusePort,
      listenFds: this.#adoptFds ? this.#openListenFds(listen) : undefined,
      certificateChainPem: this.#chainPem,
      privateKeyPem: this.#keyPem,
      keyExchangeTimeoutMs: o.keyExchangeTimeoutMs,
      concurrencyTable,
      maxRequestBytes: o.maxRequestBytes,
      rateLimitTable: limiterTable,
      policy: { ...o.policy },
      accessList: copyAccessList(this.#accessList),
      keysetBytes: this.#keysetBytes,
      statsIntervalMs: o.statsIntervalMs ?? 1000,
      threadNiceness: o.threadNiceness ?? KE_THREAD_NICENESS,
      proxyTrustedSources: o.proxyTrustedSources === undefined ? undefined : [...o.proxyTrustedSources],
      keepAlive:
        o.keepAlive === undefined || o.keepAlive.longlivedConnections <= 0
          ? undefined
          : { table: this.#keepAliveTable, longlivedConnections: o.keepAlive.longlivedConnections, idleTimeoutMs: o.keepAlive.idleTimeoutMs, maxAgeMs: o.keepAlive.maxAgeMs },
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

  /** Starts thread `index` listening on `listen`; resolves with its bound addresses. */
  #spawn(index: number, listen: readonly KeListenAddress[], reusePort: boolean): Promise<readonly KeBoundAddress[]> {
    const worker = new Worker(new URL('./thread-main.js', import.meta.url), {
      workerData: this.#init(listen, reusePort, index),
      name: `ntsd-ke-${index}`,
    });
    const thread: KeThread = { index, worker, started: false };
    this.#threads[index] = thread;
    return new Promise<readonly KeBoundAddress[]>((resolve, reject) => {
      worker.on('message', (message: unknown) => {
        if (!hasType<FromKeThread>(message)) return;
        switch (message.type) {
          case 'ready':
            thread.started = true;
            resolve(message.addresses);
            return;
          case 'listenError':
            reject(
              new NtsdError(
                NtsdErrorCode.BIND_FAILED,
                `NTS-KE listener cannot bind ${message.host}:${message.port}: ${message.message}`,
                { details: [message.code] },
              ),
            );
            void worker.terminate();
            return;
          default:
            this.#onMessage(message);
        }
      });
      worker.on('error', (error: Error) => {
        if (!thread.started) {
          reject(new NtsdError(NtsdErrorCode.WORKER_FAILED, 'NTS-KE thread failed to start', { cause: error }));
          return;
        }
        this.#logger.error({ err: error, thread: index }, 'NTS-KE thread failed');
      });
      worker.on('exit', (code: number) => {
        if (this.#threads[index] === thread) this.#threads[index] = undefined;
        this.#failReloadsOf();
        if (!thread.started) {
          reject(new NtsdError(NtsdErrorCode.WORKER_FAILED, `NTS-KE thread exited with code ${code} before listening`));
          return;
        }
        if (this.#stopping) {
          this.#threadStopped();
          return;
        }
        this.#replace(index, code);
      });
    });
  }

  /** A thread died while serving: rebuild the connection counts, start a replacement, count it. */
  #replace(index: number, code: number): void {
    this.#logger.error({ thread: index, code }, 'NTS-KE thread exited unexpectedly; starting a replacement');
    // Its sessions died with it, but their slots are still counted: start a fresh table, into which the
    // surviving threads re-register their own open sessions.
    this.#concurrency = newSharedConcurrency(this.#concurrency.limits);
    const table = this.#concurrency.buffer;
    if (table instanceof SharedArrayBuffer) this.#post({ type: 'concurrencyTable', table });
    this.#spawn(index, this.#boundListen, this.#threadCount > 1).then(
      () => {
        for (const listener of this.#restartListeners) listener();
      },
      (error: unknown) => this.#fatal(error instanceof Error ? error : new Error(String(error))),
    );
  }

  #onMessage(message: FromKeThread): void {
    switch (message.type) {
      case 'stats':
        for (const listener of this.#statsListeners) listener(message.stats);
        return;
      case 'log':
        if (message.level === 'error') this.#logger.error(message.fields, message.msg);
        else if (message.level === 'warn') this.#logger.warn(message.fields, message.msg);
        else this.#logger.debug(message.fields, message.msg);
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
      case 'stopped':
        this.#threadStopped();
        return;
      case 'ready':
      case 'listenError':
        return;
    }
  }

  /** A thread's exit makes its answer to a pending reload moot: fail those reloads. */
  #failReloadsOf(): void {
    for (const [id, pending] of this.#pendingReloads) {
      this.#pendingReloads.delete(id);
      pending.reject(new Error('NTS-KE thread exited during a certificate reload'));
    }
  }

  #threadStopped(): void {
    this.#stoppedCount++;
    if (this.#stoppedCount >= this.#threadCount) this.#stopped?.();
  }

  #fatal(error: Error): void {
    if (this.#options.onFatal !== undefined) {
      this.#options.onFatal(error);
      return;
    }
    this.#logger.fatal({ err: error }, 'NTS-KE thread could not be replaced');
    setImmediate(() => {
      throw error;
    });
  }

  #live(): KeThread[] {
    return this.#threads.filter((t): t is KeThread => t !== undefined && t.started);
  }

  #post(message: ToKeThread): void {
    for (const t of this.#live()) t.worker.postMessage(message);
  }

  /**
   * Sends a new keyset snapshot (or its `encodeKeyset` bytes, not modified) to every KE thread; new
   * cookies are sealed under its current key. A snapshot that does not decode there is logged and ignored.
   */
  updateKeyset(keyset: Keyset | Uint8Array): void {
    const bytes = keyset instanceof Uint8Array ? new Uint8Array(keyset) : encodeKeyset(keyset);
    this.#keysetBytes.fill(0);
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
   * Swaps the certificate chain and key for new handshakes on every thread (open sessions are not
   * disturbed). Each thread builds the new context with minVersion TLSv1.3; rejects if any refuses it.
   */
  reloadCertificate(chainPem: string, keyPem: string): Promise<void> {
    const live = this.#live();
    if (live.length === 0) return Promise.reject(new Error('KeServer is not running'));
    const requestId = this.#nextRequestId++;
    return new Promise<void>((resolve, reject) => {
      this.#pendingReloads.set(requestId, {
        waiting: live.length,
        error: undefined,
        resolve: () => {
          this.#chainPem = chainPem;
          this.#keyPem = keyPem;
          resolve();
        },
        reject,
      });
      for (const t of live) t.worker.postMessage({ type: 'reloadCertificate', requestId, chainPem, keyPem } satisfies ToKeThread);
    });
  }

  /**
   * Fault injection for tests: terminates KE thread `index` as a crash would; the handle replaces it.
   * Resolves once the replacement listens.
   */
  async crashThreadForTest(index: number): Promise<void> {
    const thread = this.#threads[index];
    if (thread === undefined) throw new Error(`no KE thread ${index}`);
    const replaced = new Promise<void>((resolve) => this.#restartListeners.push(resolve));
    await thread.worker.terminate();
    await replaced;
  }

  async #terminateAll(): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#threads.filter((t): t is KeThread => t !== undefined).map((t) => t.worker.terminate()));
    this.#threads.length = 0;
  }

  /**
   * Stops accepting, lets open sessions finish within their deadline, delivers the last stats,
   * then ends the KE threads.
   */
  async stop(): Promise<void> {
    if (this.#threads.length === 0 || this.#stopping) return;
    this.#stopping = true;
    const done = new Promise<void>((resolve) => {
      this.#stopped = resolve;
    });
    const hardStopMs = this.#options.keyExchangeTimeoutMs + 2000;
    const timer = setTimeout(() => this.#stopped?.(), hardStopMs);
    this.#stoppedCount = this.#threadCount - this.#live().length;
    this.#post({ type: 'stop' });
    if (this.#stoppedCount >= this.#threadCount) this.#stopped?.();
    await done;
    clearTimeout(timer);
    this.#stopped = undefined;
    await this.#terminateAll();
    this.#keysetBytes.fill(0);
  }
}
