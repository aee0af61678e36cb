/**
 * Main-thread handle of an NTS-KE listener (RFC 8915 §4). The TLS work runs on its own worker thread
 * (io/ke/thread.ts): a TLS 1.3 handshake costs about 0.7 ms of CPU, and running it on the thread that
 * timestamps NTP packets would add that much jitter. This handle spawns the thread, forwards keyset
 * snapshots, certificate reloads and rate-limit changes, relays the thread's log lines to pino and hands
 * its batched metric tallies to `onStats` listeners.
 *
 * The per-client limiter's table (core/limiter.ts) lives in a SharedArrayBuffer created here, so a
 * SIGHUP change of its limits is a write into shared memory that the KE thread sees at once.
 */
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { AccessConfig, ClientRateLimitConfig } from '../../config/schema.js';
import { AccessList } from '../../core/access-list.js';
import type { KePolicy } from '../../core/ke-handler.js';
import { ConcurrencyLimiter, concurrencyTableBytes, type ConcurrencyLimits } from '../../core/concurrency.js';
import { RateLimiter, rateLimiterBytes } from '../../core/limiter.js';
import { encodeKeyset, type Keyset } from '../../core/nts/keyset.js';
import { NtsdError, NtsdErrorCode } from '../../errors.js';
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
  /** PEM certificate chain (leaf first). */
  readonly certificateChainPem: string;
  /** PEM private key of the leaf. */
  readonly privateKeyPem: string;
  /** One deadline per session covering the TLS handshake and the request (RFC 8915 §4.1.3 timeout). */
  readonly keyExchangeTimeoutMs: number;
  /**
   * Cap on open connections. When it is full, the open session with the least recent progress is
   * evicted for a newcomer (io/ke/listener.ts); only when none can be is the newcomer closed before TLS
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
  /** Called when the KE thread dies unexpectedly (a bug). Default: log fatal and rethrow asynchronously. */
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

/** Main-thread handle of the NTS-KE listener; the TLS work happens on its own worker thread. */
export class KeServer {
  readonly #options: KeServerOptions;
  readonly #logger: Logger;
  readonly #statsListeners: ((stats: KeStats) => void)[] = [];
  readonly #pendingReloads = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  #limiter: RateLimiter;
  #limiterTableSize: number;
  readonly #concurrency: ConcurrencyLimiter;
  #worker: Worker | undefined;
  #addresses: readonly KeBoundAddress[] = [];
  #nextRequestId = 1;
  #stopping = false;
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
  }

  /** Addresses actually bound (after start()). */
  get addresses(): readonly KeBoundAddress[] {
    return this.#addresses;
  }

  /** Registers a listener for batched metric tallies (about once per statsIntervalMs while anything changes). */
  onStats(listener: (stats: KeStats) => void): void {
    this.#statsListeners.push(listener);
  }

  /** Spawns the KE thread and binds every listen address; rejects with NtsdError BIND_FAILED if one fails. */
  async start(): Promise<readonly KeBoundAddress[]> {
    if (this.#worker !== undefined) throw new Error('KeServer already started');
    const o = this.#options;
    const ownBytes = !(o.keyset instanceof Uint8Array);
    const keysetBytes = o.keyset instanceof Uint8Array ? o.keyset : encodeKeyset(o.keyset);
    const buffer = this.#limiter.buffer;
    const concurrencyTable = this.#concurrency.buffer;
    if (!(buffer instanceof SharedArrayBuffer && concurrencyTable instanceof SharedArrayBuffer)) throw new Error('KE tables are not shared');
    const init: KeWorkerInit = {
      role: KE_WORKER_ROLE,
      listen: o.listen.map((a) => ({ host: a.host, port: a.port })),
      certificateChainPem: o.certificateChainPem,
      privateKeyPem: o.privateKeyPem,
      keyExchangeTimeoutMs: o.keyExchangeTimeoutMs,
      concurrencyTable,
      maxRequestBytes: o.maxRequestBytes,
      rateLimitTable: buffer,
      policy: { ...o.policy },
      accessList: copyAccessList(o.accessList ?? { entries: [], defaultAction: 'allow' }),
      keysetBytes,
      statsIntervalMs: o.statsIntervalMs ?? 1000,
      threadNiceness: o.threadNiceness ?? KE_THREAD_NICENESS,
      proxyTrustedSources: o.proxyTrustedSources === undefined ? undefined : [...o.proxyTrustedSources],
    };
    const worker = new Worker(new URL('./thread.js', import.meta.url), { workerData: init, name: 'ntsd-ke' });
    if (ownBytes) keysetBytes.fill(0); // the worker got its own copy
    this.#worker = worker;
    return new Promise<readonly KeBoundAddress[]>((resolve, reject) => {
      let started = false;
      worker.on('message', (message: unknown) => {
        if (!hasType<FromKeThread>(message)) return;
        switch (message.type) {
          case 'ready':
            started = true;
            this.#addresses = message.addresses;
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
        if (!started) {
          reject(new NtsdError(NtsdErrorCode.WORKER_FAILED, 'NTS-KE thread failed to start', { cause: error }));
          return;
        }
        this.#fatal(error);
      });
      worker.on('exit', (code: number) => {
        this.#worker = undefined;
        for (const pending of this.#pendingReloads.values()) pending.reject(new Error('NTS-KE thread exited'));
        this.#pendingReloads.clear();
        this.#stopped?.();
        if (!started) {
          reject(new NtsdError(NtsdErrorCode.WORKER_FAILED, `NTS-KE thread exited with code ${code} before listening`));
        } else if (!this.#stopping) {
          this.#fatal(new Error(`NTS-KE thread exited unexpectedly with code ${code}`));
        }
      });
    });
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
        this.#pendingReloads.delete(message.requestId);
        if (message.ok) pending?.resolve();
        else pending?.reject(new NtsdError(NtsdErrorCode.TLS_MATERIAL_INVALID, `certificate reload refused: ${message.error}`));
        return;
      }
      case 'stopped':
        this.#stopped?.();
        return;
      case 'ready':
      case 'listenError':
        return;
    }
  }

  #fatal(error: Error): void {
    if (this.#options.onFatal !== undefined) {
      this.#options.onFatal(error);
      return;
    }
    this.#logger.fatal({ err: error }, 'NTS-KE thread died');
    setImmediate(() => {
      throw error;
    });
  }

  #post(message: ToKeThread): void {
    this.#worker?.postMessage(message);
  }

  /**
   * Sends a new keyset snapshot (or its `encodeKeyset` bytes, not modified) to the KE thread; new
   * cookies are sealed under its current key. A snapshot that does not decode there is logged and ignored.
   */
  updateKeyset(keyset: Keyset | Uint8Array): void {
    if (keyset instanceof Uint8Array) {
      this.#post({ type: 'keyset', bytes: keyset });
      return;
    }
    const bytes = encodeKeyset(keyset);
    this.#post({ type: 'keyset', bytes });
    bytes.fill(0); // postMessage cloned it
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
   * Replaces the access list (SIGHUP) for the next connections. Throws RangeError on a list that does
   * not compile (the config schema never lets one through).
   */
  updateAccessList(config: AccessConfig): void {
    const compiled = AccessList.compile(config.entries, config.defaultAction);
    if (!compiled.ok) throw new RangeError(compiled.error);
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
   * Swaps the certificate chain and key for new handshakes (open sessions are not disturbed).
   * The KE thread builds the new context with minVersion TLSv1.3; rejects (old pair kept) if it fails.
   */
  reloadCertificate(chainPem: string, keyPem: string): Promise<void> {
    const worker = this.#worker;
    if (worker === undefined) return Promise.reject(new Error('KeServer is not running'));
    const requestId = this.#nextRequestId++;
    return new Promise<void>((resolve, reject) => {
      this.#pendingReloads.set(requestId, { resolve, reject });
      this.#post({ type: 'reloadCertificate', requestId, chainPem, keyPem });
    });
  }

  /**
   * Stops accepting, lets open sessions finish within their deadline, delivers the last stats,
   * then ends the KE thread.
   */
  async stop(): Promise<void> {
    const worker = this.#worker;
    if (worker === undefined || this.#stopping) return;
    this.#stopping = true;
    const done = new Promise<void>((resolve) => {
      this.#stopped = resolve;
    });
    const hardStopMs = this.#options.keyExchangeTimeoutMs + 2000;
    const timer = setTimeout(() => this.#stopped?.(), hardStopMs);
    this.#post({ type: 'stop' });
    await done;
    clearTimeout(timer);
    this.#stopped = undefined;
    await worker.terminate();
    this.#worker = undefined;
  }
}
