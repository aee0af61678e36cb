/**
 * NTS-KE listener (RFC 8915 §4) on its own worker thread.
 *
 * A TLS 1.3 handshake costs about 0.7 ms of CPU; running handshakes on the thread that timestamps NTP
 * packets would add that much jitter. So this module has two roles:
 *  - main thread: `KeServer` spawns a worker from this same file, forwards keyset snapshots,
 *    certificate reloads and rate-limit changes, relays the worker's log lines to pino and hands
 *    batched metric tallies to `onStats` listeners;
 *  - KE thread (loaded with `workerData.role === 'ke'`): the sockets. Per connection:
 *    connection cap and per-client token bucket (before any TLS work) → TLS 1.3 with ALPN `ntske/1`
 *    → read records up to `maxRequestBytes` → `handleKeRequest` with `exportKeys` bound to the session's
 *    exporter → one write → close_notify. One deadline covers the handshake and the request.
 *
 * The KE thread never logs per connection; it counts. Its rare error reports go to main as messages.
 *
 * Isolation (RFC 8915 §8.3: a KE flood should not hurt clients that already have cookies): on Linux the
 * KE thread raises its own nice value (`threadNiceness`, default 10) so that, when the CPUs are busy, the
 * threads that receive, timestamp and answer NTP packets win over handshakes.
 *
 * Per-handshake cost (profiled under a KE flood, see bench/README.md): most of it is OpenSSL (X25519,
 * ECDSA P-256 signature, key schedule), TCP set-up/teardown in the kernel and Node's socket/stream
 * objects. What this file trims: stateful (tiny) TLS session tickets instead of encrypted ones, a
 * SHA-256 cipher suite when the client allows it, one randomFillSync per ~30 sessions instead of one per
 * cookie, and no copy of a request that arrives in one TLS record.
 */
import { constants as cryptoConstants, randomFillSync } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import * as net from 'node:net';
import { getPriority, setPriority } from 'node:os';
import { performance } from 'node:perf_hooks';
import * as tls from 'node:tls';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { ClientRateLimitConfig } from '../config/schema.js';
import { handleKeRequest, type KeOutcome, type KePolicy } from '../core/ke-handler.js';
import type { FillRandom } from '../core/bytes.js';
import { createPooledFillRandom } from '../core/responder.js';
import type { ExportKeys } from '../core/nts/exporter.js';
import { KeErrorCode, NTS_EXPORTER_LABEL, NTSKE_ALPN } from '../core/nts/ids.js';
import { encodeKeErrorResponse } from '../core/nts/ke-message.js';
import { scanKeMessage } from '../core/nts/ke-record.js';
import { decodeKeyset, encodeKeyset, keysetKeys, type Keyset } from '../core/nts/keyset.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import {
  KE_REJECT_REASONS,
  KE_SESSION_OUTCOMES,
  type KeRejectReasonLabel,
  type KeSessionOutcomeLabel,
} from '../obs/metrics.js';

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/** Why a TCP connection was refused before TLS: the metric's label set (ntsd_ke_connections_rejected_total). */
export type KeRejectReason = KeRejectReasonLabel;

/**
 * How an accepted connection ended (label values of ntsd_ke_sessions_total); exactly one per connection.
 * `tls_error` covers handshake failures, a missing/wrong ALPN and peers that vanish mid-session;
 * `bad_request` covers Error 1 and Error 0 (unrecognized critical record) answers.
 */
export type KeSessionOutcome = KeSessionOutcomeLabel;
export { KE_REJECT_REASONS, KE_SESSION_OUTCOMES };

/** Metric deltas since the previous report (counters), plus the current gauge. */
export interface KeStats {
  /** Connections accepted (passed the cap and the rate limit). */
  readonly accepted: number;
  /** Connections refused before TLS, by reason. */
  readonly rejected: Readonly<Record<KeRejectReason, number>>;
  /** Sessions ended, by outcome. */
  readonly sessions: Readonly<Record<KeSessionOutcome, number>>;
  /** Duration of each session that ended (accept → outcome), in seconds. */
  readonly sessionDurationsS: readonly number[];
  /** New Cookie records sent (ntsd_nts_cookies_issued_total{via="ke"}). */
  readonly cookiesIssued: number;
  /** Connections open right now (gauge ntsd_ke_active_connections). */
  readonly activeConnections: number;
}

/** An address to listen on (IP literal without brackets; port 0 = any free port). */
export interface KeListenAddress {
  readonly host: string;
  readonly port: number;
}

/** A bound listener as reported by the KE thread. */
export interface KeBoundAddress {
  readonly address: string;
  readonly family: string;
  readonly port: number;
}

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
  /** Connection cap; connections beyond it are closed before TLS (counted as `limit`). */
  readonly concurrentConnections: number;
  /** Request size cap (RFC 8915 §4: MUST accept at least 1024 octets). */
  readonly maxRequestBytes: number;
  /** Per-client token bucket; `intervalS` 0 turns it off. */
  readonly clientRateLimit: ClientRateLimitConfig;
  /** KE answer policy (AEADs, Server/Port Negotiation). */
  readonly policy: KePolicy;
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
  /** Called when the KE thread dies unexpectedly (a bug). Default: log fatal and rethrow asynchronously. */
  readonly onFatal?: (error: Error) => void;
}

/**
 * Default nice value of the KE thread (Linux): weight 110 against 1024 for the nice-0 NTP threads, so
 * under CPU contention handshakes get about a tenth of a contended core and NTP keeps the rest
 * (RFC 8915 §8.3). Config: `[[nts-ke-server]] thread-niceness`.
 */
export const KE_THREAD_NICENESS = 10;

/** What `lowerThreadPriority` did, for one debug line. */
export type ThreadPriorityResult =
  | { readonly ok: true; readonly tid: number; readonly niceness: number; readonly previous: number }
  | { readonly ok: false; readonly reason: string };

/**
 * Raises the nice value of the calling thread to `niceness` (Linux only: the thread finds its own TID
 * through /proc/thread-self; elsewhere the nice value is per process and nothing is done). Never lowers a
 * nice value, so a daemon started with `nice -n 15` keeps its KE thread at 15. Best effort: every failure is
 * returned, not thrown.
 */
export function lowerThreadPriority(niceness: number): ThreadPriorityResult {
  if (process.platform !== 'linux') return { ok: false, reason: `per-thread nice values are Linux-only (${process.platform})` };
  if (!Number.isInteger(niceness) || niceness < 0 || niceness > 19) return { ok: false, reason: `niceness out of range: ${niceness}` };
  try {
    const link = readlinkSync('/proc/thread-self'); // "PID/task/TID"
    const tid = Number(link.slice(link.lastIndexOf('/') + 1));
    if (!Number.isInteger(tid) || tid <= 0) return { ok: false, reason: `unexpected /proc/thread-self target "${link}"` };
    const previous = getPriority(tid);
    if (previous >= niceness) return { ok: true, tid, niceness: previous, previous };
    setPriority(tid, niceness);
    return { ok: true, tid, niceness: getPriority(tid), previous };
  } catch (error: unknown) {
    return { ok: false, reason: errorText(error) };
  }
}

// ---------------------------------------------------------------------------------------------
// Per-client token bucket (shared by both roles only as code; it runs on the KE thread)
// ---------------------------------------------------------------------------------------------

function ipv6Groups(address: string): number[] | undefined {
  const zoneFree = address.split('%')[0] ?? '';
  let text = zoneFree;
  let extra: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const q = tail.split('.').map((s) => Number.parseInt(s, 10));
    extra = [(((q[0] ?? 0) << 8) | (q[1] ?? 0)) & 0xffff, (((q[2] ?? 0) << 8) | (q[3] ?? 0)) & 0xffff];
    text = text.slice(0, lastColon);
    if (text.endsWith(':') && !text.endsWith('::')) text = text.slice(0, -1);
  }
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => Number.parseInt(g, 16)));
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const head = parse(halves[0] ?? '');
  const rest = halves.length === 2 ? parse(halves[1] ?? '') : undefined;
  const groups =
    rest === undefined
      ? [...head, ...extra]
      : [...head, ...new Array<number>(Math.max(0, 8 - head.length - rest.length - extra.length)).fill(0), ...rest, ...extra];
  if (groups.length !== 8 || groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) return undefined;
  return groups;
}

/**
 * Rate-limit key of a client address: the IPv4 address itself (also when IPv4-mapped), or the /64
 * prefix of an IPv6 address (one site's hosts usually share a /64).
 */
export function clientRateKey(address: string): string {
  const family = net.isIP(address.split('%')[0] ?? '');
  if (family === 4) return address;
  if (family !== 6) return address;
  const groups = ipv6Groups(address);
  if (groups === undefined) return address;
  const isV4Mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (isV4Mapped) {
    const a = groups[6] ?? 0;
    const b = groups[7] ?? 0;
    return `${a >>> 8}.${a & 0xff}.${b >>> 8}.${b & 0xff}`;
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
}

interface Bucket {
  tokens: number;
  lastMs: number;
}

/** Token bucket per client in a bounded table; the least recently seen client is evicted when full. */
export class ClientRateLimiter {
  #config: ClientRateLimitConfig;
  readonly #table = new Map<string, Bucket>();

  /** Creates a limiter; `intervalS` 0 admits everything. */
  constructor(config: ClientRateLimitConfig) {
    this.#config = config;
  }

  /** Replaces the limits (SIGHUP); existing buckets are kept and capped at the new burst. */
  configure(config: ClientRateLimitConfig): void {
    this.#config = config;
    while (this.#table.size > Math.max(0, config.tableSize)) this.#evictOldest();
  }

  /** Number of clients tracked. */
  get size(): number {
    return this.#table.size;
  }

  /** Takes one token for `address` at `nowMs`; false when the client is over its limit. */
  take(address: string, nowMs: number): boolean {
    const { intervalS, burst, tableSize } = this.#config;
    if (intervalS <= 0 || tableSize <= 0) return true;
    const key = clientRateKey(address);
    let bucket = this.#table.get(key);
    if (bucket === undefined) {
      if (this.#table.size >= tableSize) this.#evictOldest();
      bucket = { tokens: burst, lastMs: nowMs };
    } else {
      this.#table.delete(key); // re-insert below: Map order doubles as recency order
      const earned = Math.max(0, nowMs - bucket.lastMs) / (intervalS * 1000);
      bucket.tokens = Math.min(burst, bucket.tokens + earned);
      bucket.lastMs = nowMs;
    }
    this.#table.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return true;
    }
    return false;
  }

  #evictOldest(): void {
    const oldest = this.#table.keys().next();
    if (oldest.done !== true) this.#table.delete(oldest.value);
  }
}

// ---------------------------------------------------------------------------------------------
// Messages between the threads
// ---------------------------------------------------------------------------------------------

const WORKER_ROLE = 'ke';

interface KeWorkerInit {
  readonly role: typeof WORKER_ROLE;
  readonly listen: readonly KeListenAddress[];
  readonly certificateChainPem: string;
  readonly privateKeyPem: string;
  readonly keyExchangeTimeoutMs: number;
  readonly concurrentConnections: number;
  readonly maxRequestBytes: number;
  readonly clientRateLimit: ClientRateLimitConfig;
  readonly policy: KePolicy;
  readonly keysetBytes: Uint8Array;
  readonly statsIntervalMs: number;
  readonly threadNiceness: number;
}

type ToWorker =
  | { readonly type: 'keyset'; readonly bytes: Uint8Array }
  | { readonly type: 'reloadCertificate'; readonly requestId: number; readonly chainPem: string; readonly keyPem: string }
  | { readonly type: 'rateLimit'; readonly config: ClientRateLimitConfig }
  | { readonly type: 'stop' };

type LogLevel = 'debug' | 'warn' | 'error';

type FromWorker =
  | { readonly type: 'ready'; readonly addresses: readonly KeBoundAddress[] }
  | { readonly type: 'listenError'; readonly host: string; readonly port: number; readonly code: string; readonly message: string }
  | { readonly type: 'stats'; readonly stats: KeStats }
  | { readonly type: 'log'; readonly level: LogLevel; readonly msg: string; readonly fields: Readonly<Record<string, string | number>> }
  | { readonly type: 'reloaded'; readonly requestId: number; readonly ok: boolean; readonly error: string }
  | { readonly type: 'stopped' };

function hasType<T extends { readonly type: string }>(value: unknown): value is T {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------------------------
// Main-thread role
// ---------------------------------------------------------------------------------------------

/** Main-thread handle of the NTS-KE listener; the TLS work happens on its own worker thread. */
export class KeServer {
  readonly #options: KeServerOptions;
  readonly #logger: Logger;
  readonly #statsListeners: ((stats: KeStats) => void)[] = [];
  readonly #pendingReloads = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  #worker: Worker | undefined;
  #addresses: readonly KeBoundAddress[] = [];
  #nextRequestId = 1;
  #stopping = false;
  #stopped: (() => void) | undefined;

  /** Creates the listener; nothing is bound until start(). */
  constructor(options: KeServerOptions) {
    this.#options = options;
    this.#logger = options.logger;
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
    const init: KeWorkerInit = {
      role: WORKER_ROLE,
      listen: o.listen.map((a) => ({ host: a.host, port: a.port })),
      certificateChainPem: o.certificateChainPem,
      privateKeyPem: o.privateKeyPem,
      keyExchangeTimeoutMs: o.keyExchangeTimeoutMs,
      concurrentConnections: o.concurrentConnections,
      maxRequestBytes: o.maxRequestBytes,
      clientRateLimit: { ...o.clientRateLimit },
      policy: { ...o.policy },
      keysetBytes,
      statsIntervalMs: o.statsIntervalMs ?? 1000,
      threadNiceness: o.threadNiceness ?? KE_THREAD_NICENESS,
    };
    const worker = new Worker(new URL(import.meta.url), { workerData: init, name: 'ntsd-ke' });
    if (ownBytes) keysetBytes.fill(0); // the worker got its own copy
    this.#worker = worker;
    return new Promise<readonly KeBoundAddress[]>((resolve, reject) => {
      let started = false;
      worker.on('message', (message: unknown) => {
        if (!hasType<FromWorker>(message)) return;
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

  #onMessage(message: FromWorker): void {
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

  #post(message: ToWorker): void {
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

  /** Replaces the per-client rate limit (SIGHUP). */
  updateRateLimit(config: ClientRateLimitConfig): void {
    this.#post({ type: 'rateLimit', config: { ...config } });
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

// ---------------------------------------------------------------------------------------------
// KE-thread role
// ---------------------------------------------------------------------------------------------

function newStats(): {
  accepted: number;
  rejected: Record<KeRejectReason, number>;
  sessions: Record<KeSessionOutcome, number>;
  sessionDurationsS: number[];
  cookiesIssued: number;
} {
  return {
    accepted: 0,
    rejected: { connection_limit: 0, rate_limited: 0 },
    sessions: {
      success: 0,
      tls_error: 0,
      timeout: 0,
      bad_request: 0,
      no_common_protocol: 0,
      no_common_aead: 0,
      internal_error: 0,
    },
    sessionDurationsS: [],
    cookiesIssued: 0,
  };
}

/** Maps the handler's outcome to the metric label set of OPERATIONS.md. */
function sessionOutcome(outcome: KeOutcome): KeSessionOutcome {
  switch (outcome) {
    case 'success':
    case 'bad_request':
    case 'no_common_protocol':
    case 'no_common_aead':
    case 'internal_error':
      return outcome;
    case 'unrecognized_critical':
      return 'bad_request';
  }
}

/** Most durations kept per stats interval (memory bound under a connection flood). */
const MAX_DURATIONS_PER_REPORT = 65_536;
/** Most log lines per stats interval; the rest are summarised. */
const MAX_LOGS_PER_REPORT = 20;
/** After a deadline-triggered Error 1, time allowed for it to flush before the socket is destroyed. */
const DEADLINE_LINGER_MS = 250;
/** TLS 1.3 cipher suites in the server's order of preference (see secureContextOptions). */
const KE_TLS13_CIPHER_SUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';
/** Octets of randomness fetched per randomFillSync call for cookie nonces (one call per ~30 sessions). */
const RANDOM_POOL_BYTES = 4096;

/** A Buffer over the same memory (no copy). */
function bufferView(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

interface Session {
  readonly tlsSocket: tls.TLSSocket;
  readonly acceptedAtMs: number;
  deadline: NodeJS.Timeout | undefined;
  secure: boolean;
  outcome: KeSessionOutcome | undefined;
  buffer: Uint8Array | undefined;
  length: number;
  scanOffset: number;
  discarded: number;
}

function runKeThread(init: KeWorkerInit): void {
  const port = parentPort;
  if (port === null) return;
  const post = (message: FromWorker): void => port.postMessage(message);

  // Cookie nonces (8 per session) come from a pool refilled 4 KiB at a time: one randomFillSync call per
  // ~30 sessions instead of 8 per session. Nonces are public; every pooled octet is handed out once.
  const fillRandom: FillRandom = createPooledFillRandom((target) => {
    randomFillSync(target);
  }, RANDOM_POOL_BYTES);
  const secureContextOptions = (chainPem: string, keyPem: string): tls.SecureContextOptions => ({
    cert: chainPem,
    key: keyPem,
    // RFC 8915 §3: TLS 1.3 or newer only. Every context we build carries this, reloads included.
    minVersion: 'TLSv1.3',
    // A TLS 1.3 server sends two NewSessionTicket messages after every handshake, and Node offers no
    // way to send none (SSL_CTX_set_num_tickets). NTS clients never resume (RFC 8915 §4: one request per
    // connection; the cookies are what they keep). With SSL_OP_NO_TICKET, OpenSSL 3 sends "stateful"
    // tickets: a bare session ID instead of the whole session serialized, encrypted and MACed. Node's
    // session cache mode stores nothing (SSL_SESS_CACHE_NO_INTERNAL), so such a ticket can never resume
    // and costs no memory. Measured: ~350 fewer octets and ~5 % less KE-thread CPU per handshake.
    //
    // Cipher suite: our order, AES-128-GCM-SHA256 first. Its key schedule runs on SHA-256 (SHA-NI on
    // current x86 and ARM) instead of SHA-384: ~4 % less KE-thread CPU. Every TLS 1.3 client implements
    // it (RFC 8446 §9.1), X25519/P-256 already cap the channel at 128-bit security, and the exported NTS
    // keys keep the AEAD's full length (RFC 8915 §5.1). A client that lists ChaCha20 first keeps it
    // (SSL_OP_PRIORITIZE_CHACHA: it likely lacks AES hardware).
    ciphers: KE_TLS13_CIPHER_SUITES,
    secureOptions:
      cryptoConstants.SSL_OP_NO_TICKET | cryptoConstants.SSL_OP_CIPHER_SERVER_PREFERENCE | cryptoConstants.SSL_OP_PRIORITIZE_CHACHA,
  });
  let secureContext = tls.createSecureContext(secureContextOptions(init.certificateChainPem, init.privateKeyPem));

  let keyset: Keyset | undefined;
  const decoded = decodeKeyset(init.keysetBytes);
  init.keysetBytes.fill(0);
  let stats = newStats();
  let logsThisReport = 0;
  let logsSuppressed = 0;
  const log = (level: LogLevel, msg: string, fields: Readonly<Record<string, string | number>> = {}): void => {
    if (logsThisReport >= MAX_LOGS_PER_REPORT) {
      logsSuppressed++;
      return;
    }
    logsThisReport++;
    post({ type: 'log', level, msg, fields });
  };
  if (decoded.ok) keyset = decoded.keyset;
  else log('error', 'initial keyset snapshot did not decode', { error: decoded.error });
  if (init.threadNiceness > 0) {
    const priority = lowerThreadPriority(init.threadNiceness);
    if (priority.ok) log('debug', 'NTS-KE thread nice value set', { tid: priority.tid, niceness: priority.niceness, previous: priority.previous });
    else log('debug', 'NTS-KE thread nice value left unchanged', { reason: priority.reason });
  }

  const limiter = new ClientRateLimiter(init.clientRateLimit);
  const sessions = new Set<Session>();
  const servers: net.Server[] = [];
  let stopping = false;
  let lastReportedActive = -1;

  const flushStats = (): void => {
    const s = stats;
    const quiet =
      s.accepted === 0 &&
      s.cookiesIssued === 0 &&
      s.sessionDurationsS.length === 0 &&
      s.rejected.connection_limit === 0 &&
      s.rejected.rate_limited === 0 &&
      sessions.size === lastReportedActive;
    if (logsSuppressed > 0) {
      post({ type: 'log', level: 'warn', msg: 'NTS-KE thread suppressed log lines', fields: { suppressed: logsSuppressed } });
      logsSuppressed = 0;
    }
    logsThisReport = 0;
    if (quiet) return;
    stats = newStats();
    lastReportedActive = sessions.size;
    post({ type: 'stats', stats: { ...s, activeConnections: sessions.size } });
  };
  const statsTimer = setInterval(flushStats, init.statsIntervalMs);

  const maybeFinishStop = (): void => {
    if (!stopping || sessions.size > 0) return;
    clearInterval(statsTimer);
    flushStats();
    post({ type: 'stopped' });
  };

  const settle = (session: Session, outcome: KeSessionOutcome): void => {
    if (session.outcome !== undefined) return;
    session.outcome = outcome;
    stats.sessions[outcome]++;
    if (stats.sessionDurationsS.length < MAX_DURATIONS_PER_REPORT) {
      stats.sessionDurationsS.push((performance.now() - session.acceptedAtMs) / 1000);
    }
  };

  /** Writes one message (the whole response) and sends close_notify. */
  const respond = (session: Session, response: Uint8Array, outcome: KeSessionOutcome): void => {
    settle(session, outcome);
    const socket = session.tlsSocket;
    if (!socket.writable) return;
    socket.write(response);
    socket.end();
  };

  const answer = (session: Session, request: Uint8Array): void => {
    if (keyset === undefined) {
      log('error', 'no keyset available for NTS-KE');
      respond(session, encodeKeErrorResponse(KeErrorCode.internalServerError), 'internal_error');
      return;
    }
    const socket = session.tlsSocket;
    const exported: Uint8Array[] = [];
    // RFC 8915 §4.3, §5.1: one exporter call per direction, each with its own 5-octet context.
    const exportKeys: ExportKeys = (c2sContext, s2cContext, keyLength) => {
      const c2s = socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, bufferView(c2sContext));
      const s2c = socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, bufferView(s2cContext));
      exported.push(c2s, s2c);
      return { c2s, s2c };
    };
    try {
      const result = handleKeRequest(request, exportKeys, keyset, init.policy, fillRandom);
      if (result.outcome === 'internal_error') {
        log('error', 'NTS-KE internal error', { error: errorText(result.internalError) });
      }
      stats.cookiesIssued += result.cookiesIssued;
      respond(session, result.response, sessionOutcome(result.outcome));
    } catch (error: unknown) {
      log('error', 'NTS-KE handler threw', { error: errorText(error) });
      respond(session, encodeKeErrorResponse(KeErrorCode.internalServerError), 'internal_error');
    } finally {
      for (const key of exported) key.fill(0); // best effort: the cookies now carry the keys
    }
  };

  const onData = (session: Session, chunk: Buffer): void => {
    if (session.outcome !== undefined) {
      // Anything after the request is ignored; a peer that keeps streaming is cut off.
      session.discarded += chunk.length;
      if (session.discarded > init.maxRequestBytes) session.tlsSocket.destroy();
      return;
    }
    const max = init.maxRequestBytes;
    if (session.length === 0) {
      // Usual case: the whole request is in the first TLS record. Parse it in place, no buffer or copy.
      const view = chunk.length > max ? chunk.subarray(0, max) : chunk;
      const first = scanKeMessage(view, { fromOffset: 0, maxLength: max });
      if (first.status === 'complete') {
        answer(session, view.subarray(0, first.length));
        return;
      }
      // Otherwise the buffered path below rescans it (cheap) and decides.
    }
    session.buffer ??= new Uint8Array(max);
    const take = Math.min(max - session.length, chunk.length);
    session.buffer.set(chunk.subarray(0, take), session.length);
    session.length += take;
    const scan = scanKeMessage(session.buffer.subarray(0, session.length), {
      fromOffset: session.scanOffset,
      maxLength: max,
    });
    switch (scan.status) {
      case 'incomplete':
        session.scanOffset = scan.resumeOffset;
        if (session.length >= max) respond(session, encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request');
        return;
      case 'malformed':
        // RFC 8915 §4.1.3: a request we will not accept (here: over the size cap) is a Bad Request.
        respond(session, encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request');
        return;
      case 'complete':
        answer(session, session.buffer.subarray(0, scan.length));
        return;
    }
  };

  const onDeadline = (session: Session): void => {
    session.deadline = undefined;
    const socket = session.tlsSocket;
    if (session.outcome === undefined && session.secure && socket.writable) {
      // RFC 8915 §4.1.3: Bad Request also covers the server's timeout before a complete request.
      respond(session, encodeKeErrorResponse(KeErrorCode.badRequest), 'timeout');
      session.deadline = setTimeout(() => socket.destroy(), DEADLINE_LINGER_MS);
      return;
    }
    settle(session, 'timeout');
    socket.destroy();
  };

  const onConnection = (raw: net.Socket): void => {
    raw.on('error', () => undefined);
    if (stopping) {
      raw.destroy();
      return;
    }
    if (sessions.size >= init.concurrentConnections) {
      stats.rejected.connection_limit++;
      raw.destroy();
      return;
    }
    const nowMs = performance.now();
    if (!limiter.take(raw.remoteAddress ?? '', nowMs)) {
      stats.rejected.rate_limited++;
      raw.destroy();
      return;
    }
    stats.accepted++;
    raw.setNoDelay(true);
    // We wrap the accepted socket ourselves instead of using tls.Server: tls.Server hides the TLSSocket
    // until the handshake ends, and the session deadline must be able to destroy a stalled handshake.
    // Consequences: handshake completion is the TLSSocket's 'secure' event (what tls.Server itself
    // listens to), and a certificate reload swaps `secureContext` (always built with minVersion
    // TLSv1.3) for new connections instead of calling server.setSecureContext.
    // allowHalfOpen (a net.Socket option TLSSocket passes on, missing from its typings): a client that
    // half-closes after a partial request still gets its Error record.
    const tlsOptions: tls.TLSSocketOptions & { readonly allowHalfOpen: boolean } = {
      isServer: true,
      secureContext,
      ALPNProtocols: [NTSKE_ALPN],
      requestCert: false,
      allowHalfOpen: true,
    };
    const tlsSocket = new tls.TLSSocket(raw, tlsOptions);
    const session: Session = {
      tlsSocket,
      acceptedAtMs: nowMs,
      deadline: undefined,
      secure: false,
      outcome: undefined,
      buffer: undefined,
      length: 0,
      scanOffset: 0,
      discarded: 0,
    };
    sessions.add(session);
    session.deadline = setTimeout(() => onDeadline(session), init.keyExchangeTimeoutMs);
    tlsSocket.on('error', () => undefined); // handshake and transport errors end in 'close'
    tlsSocket.on('secure', () => {
      session.secure = true;
      // RFC 8915 §3/§4: the client MUST offer ntske/1. Node completes a handshake without ALPN, so check.
      if (tlsSocket.alpnProtocol !== NTSKE_ALPN) {
        settle(session, 'tls_error');
        tlsSocket.end();
      }
    });
    tlsSocket.on('data', (chunk: Buffer) => onData(session, chunk));
    tlsSocket.on('end', () => {
      if (session.outcome === undefined) {
        // The client finished sending without completing a request (RFC 8915 §4.1.3: incomplete → Bad Request).
        respond(session, encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request');
      } else if (tlsSocket.writable) {
        tlsSocket.end();
      }
    });
    tlsSocket.on('close', () => {
      if (session.deadline !== undefined) clearTimeout(session.deadline);
      session.deadline = undefined;
      settle(session, 'tls_error');
      session.buffer = undefined;
      sessions.delete(session);
      maybeFinishStop();
    });
  };

  port.on('message', (message: unknown) => {
    if (!hasType<ToWorker>(message)) return;
    switch (message.type) {
      case 'keyset': {
        const next = decodeKeyset(message.bytes);
        message.bytes.fill(0);
        if (!next.ok) {
          log('error', 'keyset snapshot did not decode; keeping the previous one', { error: next.error });
          return;
        }
        const previous = keyset;
        keyset = next.keyset;
        if (previous !== undefined) for (const k of keysetKeys(previous)) k.key.fill(0); // thread-private copies
        return;
      }
      case 'reloadCertificate': {
        try {
          secureContext = tls.createSecureContext(secureContextOptions(message.chainPem, message.keyPem));
          post({ type: 'reloaded', requestId: message.requestId, ok: true, error: '' });
        } catch (error: unknown) {
          post({ type: 'reloaded', requestId: message.requestId, ok: false, error: errorText(error) });
        }
        return;
      }
      case 'rateLimit':
        limiter.configure(message.config);
        return;
      case 'stop':
        stopping = true;
        for (const server of servers) server.close();
        maybeFinishStop();
        return;
    }
  });

  void listenAll(init, onConnection, servers).then(
    (addresses) => post({ type: 'ready', addresses }),
    (failure: unknown) => {
      for (const server of servers) server.close();
      clearInterval(statsTimer);
      const f = failure instanceof ListenFailure ? failure : new ListenFailure('?', 0, failure);
      const cause = f.error;
      const code = typeof cause === 'object' && cause !== null && 'code' in cause ? String(cause.code) : 'UNKNOWN';
      post({ type: 'listenError', host: f.host, port: f.port, code, message: errorText(cause) });
    },
  );
}

class ListenFailure extends Error {
  constructor(
    readonly host: string,
    readonly port: number,
    readonly error: unknown,
  ) {
    super(`listen ${host}:${port} failed`);
  }
}

async function listenAll(
  init: KeWorkerInit,
  onConnection: (socket: net.Socket) => void,
  servers: net.Server[],
): Promise<KeBoundAddress[]> {
  const bound: KeBoundAddress[] = [];
  for (const address of init.listen) {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
    servers.push(server);
    // [::] alone is dual-stack; next to an IPv4 listener on the same port it must be IPv6-only.
    const ipv6Only =
      net.isIPv6(address.host) &&
      address.port !== 0 &&
      init.listen.some((other) => net.isIPv4(other.host) && other.port === address.port);
    const error = await new Promise<unknown>((resolve) => {
      const onError = (e: unknown): void => {
        server.off('listening', onListening);
        resolve(e);
      };
      const onListening = (): void => {
        server.off('error', onError);
        resolve(undefined);
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen({ host: address.host, port: address.port, ipv6Only, backlog: 511 });
    });
    if (error !== undefined) throw new ListenFailure(address.host, address.port, error);
    server.on('error', () => undefined);
    const info = server.address();
    if (info !== null && typeof info === 'object') bound.push({ address: info.address, family: info.family, port: info.port });
  }
  return bound;
}

function isKeWorkerInit(value: unknown): value is KeWorkerInit {
  return typeof value === 'object' && value !== null && (value as { role?: unknown }).role === WORKER_ROLE;
}

if (!isMainThread && isKeWorkerInit(workerData)) runKeThread(workerData);
