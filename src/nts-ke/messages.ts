/**
 * What the main thread and the NTS-KE threads tell each other (nts-ke/server.ts ↔ nts-ke/thread-main.ts), and
 * the public types of the KE listener. Nothing here runs; both sides import it.
 */
import type { AccessConfig, ClientRateLimitConfig } from '../config/schema.js';
import type { KePolicy } from '../core/ke-handler.js';
import type { KeHandlerReport, KeHandlerSpec, KeLogLevel } from '../core/ke-request-handler.js';
import type { KeCertificatePem } from './certificates.js';
import {
  KE_REJECT_REASONS,
  KE_SESSION_OUTCOMES,
  type KeRejectReasonLabel,
  type KeSessionOutcomeLabel,
} from '../core/ke-handler.js';

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
  /** Responses that agreed on an AEAD, by AEAD id (ntsd_ke_aead_negotiated_total). */
  readonly aeads: Readonly<Record<number, number>>;
  /** Valid PROXY v2 headers, by the `proxy-trusted-sources` entry their balancer matched. */
  readonly proxyConnections: Readonly<Record<string, number>>;
  /** Connections open right now over every thread of the listener (gauge ntsd_ke_active_connections). */
  readonly activeConnections: number;
  /** Index of the KE thread that reports. */
  readonly thread: number;
  /** NTS pools: answered support and fixed key requests, by `kind/outcome` (ntsd_ke_pool_requests_total). */
  readonly poolRequests: Readonly<Record<string, number>>;
  /** The listener's request handler's samples since the previous report (a listener with a handler only). */
  readonly handlerReport?: KeHandlerReport | undefined;
}

/** Mutable tallies a KE thread keeps between two reports. */
export interface KeTallies {
  accepted: number;
  rejected: Record<KeRejectReason, number>;
  sessions: Record<KeSessionOutcome, number>;
  sessionDurationsS: number[];
  cookiesIssued: number;
  aeads: Record<number, number>;
  proxyConnections: Record<string, number>;
  poolRequests: Record<string, number>;
}

/** Empty tallies. */
export function newKeTallies(): KeTallies {
  return {
    accepted: 0,
    rejected: Object.fromEntries(KE_REJECT_REASONS.map((r) => [r, 0])) as Record<KeRejectReason, number>,
    sessions: Object.fromEntries(KE_SESSION_OUTCOMES.map((o) => [o, 0])) as Record<KeSessionOutcome, number>,
    sessionDurationsS: [],
    cookiesIssued: 0,
    aeads: {},
    proxyConnections: {},
    poolRequests: {},
  };
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

/**
 * Default nice value of the KE thread (Linux): weight 110 against 1024 for the nice-0 NTP threads, so
 * under CPU contention handshakes get about a tenth of a contended core and NTP keeps the rest
 * (RFC 8915 §8.3). Config: `[[nts-ke-server]] thread-niceness`.
 */
export const KE_THREAD_NICENESS = 10;

/** `workerData.role` of a KE thread. */
export const KE_WORKER_ROLE = 'ke';

/** The KE thread's start-up data (workerData). */
export interface KeWorkerInit {
  readonly role: typeof KE_WORKER_ROLE;
  /** 0 .. threads-1. */
  readonly threadIndex: number;
  readonly listen: readonly KeListenAddress[];
  /** Bind with SO_REUSEPORT (several KE threads share the addresses). */
  readonly reusePort: boolean;
  /**
   * Listening sockets made on the main thread with SO_REUSEPORT (the native addon's, for a Node whose
   * net module cannot set it), one per `listen` entry: listen({ fd }) instead of binding the address.
   */
  readonly listenFds?: readonly number[] | undefined;
  /** The listener's certificate pairs in configured order (nts-ke/certificates.ts picks among them per connection). */
  readonly certificates: readonly KeCertificatePem[];
  readonly keyExchangeTimeoutMs: number;
  /** Global and per-source connection caps (core/concurrency.ts), shared with the main thread. */
  readonly concurrencyTable: SharedArrayBuffer;
  readonly maxRequestBytes: number;
  /** The per-client limiter's table (core/limiter.ts), shared with the main thread. */
  readonly rateLimitTable: SharedArrayBuffer;
  readonly policy: KePolicy;
  /** Allow/deny lists (validated by the config schema; compiled on the thread). */
  readonly accessList: AccessConfig;
  /** The keyset snapshot to seal cookies under; absent on a listener with a `handler` (it seals none). */
  readonly keysetBytes?: Uint8Array | undefined;
  /** The request handler module the thread loads instead of answering as an ordinary KE server. */
  readonly handler?: KeHandlerSpec | undefined;
  readonly statsIntervalMs: number;
  readonly threadNiceness: number;
  /** PROXY protocol v2: CIDR texts of the trusted balancers; undefined = off. */
  readonly proxyTrustedSources?: readonly string[] | undefined;
  /** NTS pools: keep-alive for authenticated front ends; undefined = never keep a connection. */
  readonly keepAlive?: KeKeepAliveInit | undefined;
  /** The client log shared with the NTP threads (core/client-log.ts); undefined = off. */
  readonly clientLog?: SharedArrayBuffer | undefined;
}

/**
 * NTS pools: keep-alive settings of a listener. `table` is an Int32Array of one element, the number of
 * connections kept right now over all its threads (Atomics), below `longlivedConnections`.
 */
export interface KeKeepAliveInit {
  readonly table: SharedArrayBuffer;
  readonly longlivedConnections: number;
  readonly idleTimeoutMs: number;
  readonly maxAgeMs: number;
}

/** The long-lived slots over a KeKeepAliveInit table (one shared count, compare-and-swap below the cap). */
export function keepAliveSlots(init: KeKeepAliveInit): { idleTimeoutMs: number; maxAgeMs: number; tryAcquire(): boolean; release(): void } {
  const count = new Int32Array(init.table);
  return {
    idleTimeoutMs: init.idleTimeoutMs,
    maxAgeMs: init.maxAgeMs,
    tryAcquire(): boolean {
      for (;;) {
        const now = Atomics.load(count, 0);
        if (now >= init.longlivedConnections) return false;
        if (Atomics.compareExchange(count, 0, now, now + 1) === now) return true;
      }
    },
    release(): void {
      Atomics.sub(count, 0, 1);
    },
  };
}

/** Main → KE thread. */
export type ToKeThread =
  | { readonly type: 'keyset'; readonly bytes: Uint8Array }
  /** Replaces pair `index` of the listener's certificate pairs (the others stay). */
  | { readonly type: 'reloadCertificate'; readonly requestId: number; readonly index: number; readonly chainPem: string; readonly keyPem: string }
  | { readonly type: 'rateLimitTable'; readonly table: SharedArrayBuffer }
  | { readonly type: 'accessList'; readonly config: AccessConfig }
  | { readonly type: 'concurrencyTable'; readonly table: SharedArrayBuffer }
  | { readonly type: 'stop' };


/** KE thread → main. */
export type FromKeThread =
  | { readonly type: 'ready'; readonly addresses: readonly KeBoundAddress[] }
  | { readonly type: 'listenError'; readonly host: string; readonly port: number; readonly code: string; readonly message: string }
  | { readonly type: 'startError'; readonly message: string }
  | { readonly type: 'stats'; readonly stats: KeStats }
  | { readonly type: 'log'; readonly level: KeLogLevel; readonly msg: string; readonly fields: Readonly<Record<string, string | number>> }
  | { readonly type: 'reloaded'; readonly requestId: number; readonly ok: boolean; readonly error: string }
  | { readonly type: 'stopped' };

/** True for an object with a string `type` (a message of ours; the switch on `type` does the rest). */
export function hasType<T extends { readonly type: string }>(value: unknown): value is T {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}

/** An error's message, for a log field. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Maps the config's per-client KE bucket onto the limiter's configuration (IPv4 address, IPv6 /64, no leak). */
export function keRateLimitConfig(config: ClientRateLimitConfig): {
  readonly intervalMs: number;
  readonly burst: number;
  readonly leak: number;
  readonly ipv4PrefixBits: number;
  readonly ipv6PrefixBits: number;
} {
  return { intervalMs: Math.round(config.intervalS * 1000), burst: config.burst, leak: 0, ipv4PrefixBits: 32, ipv6PrefixBits: 64 };
}
