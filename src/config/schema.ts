/**
 * Configuration schema: types, defaults and validation of an already-parsed TOML document.
 * No file access and no TOML parsing here (load.ts does that), so the rules can be tested as pure functions.
 *
 * Keys are kebab-case and follow ntpd-rs where ntpd-rs has the same knob (OPERATIONS.md "Configuration").
 * Validation never stops at the first problem: it returns every problem, each prefixed with its TOML key
 * path (`server[0].listen: ...`), and an unknown key anywhere is an error.
 * Relative paths (certificates, key storage, log file) resolve against `baseDir`, which load.ts sets to the
 * directory that holds the configuration file.
 */
import { isAbsolute, resolve } from 'node:path';
import { parseCidr } from '../core/cidr.js';
import { AccessList, type AccessAction, type AccessEntry } from '../core/access-list.js';
import { defaultLonglivedConnections, POOL_KEEP_ALIVE_MAX_AGE_S, POOL_KEEP_ALIVE_MAX_IDLE_S } from '../core/pool/source.js';

/** IP family of a listen address. */
export type AddressFamily = 'IPv4' | 'IPv6';

/** A parsed `"IP:port"` or `"[IPv6]:port"` string. */
export interface ListenAddress {
  /** IP literal without brackets, as node:dgram / node:net expect it. */
  readonly host: string;
  /** Port 0..65535; 0 asks the OS for a free port (tests). */
  readonly port: number;
  readonly family: AddressFamily;
}

/** One `[[server]]` table: a UDP NTP/NTS listener. */
export interface NtpServerConfig {
  readonly listen: ListenAddress;
  /** When true, plain (unauthenticated) NTP requests are dropped. */
  readonly requireNts: boolean;
  /** NTP versions answered (RFC 5905 §7.3 VN field). */
  readonly acceptNtpVersions: readonly number[];
  /** Per-client NTP rate limit (chrony `ratelimit`); `intervalMs` 0 = off. */
  readonly rateLimit: NtpRateLimitConfig;
  /** `allow` / `deny` / `ignore` prefixes and the action for addresses none of them matches. */
  readonly access: AccessConfig;
  /** RFC 9769 interleaved client/server mode (`interleaved`, `interleaved-table-size`). */
  readonly interleave: NtpInterleaveConfig;
}

/**
 * `[[server]] interleaved*`: RFC 9769 interleaved mode, in which a reply carries the kernel transmit stamp
 * of the previous reply to that client. Needs kernel TX stamps: the native datapath only; the dgram
 * datapath answers in basic mode whatever this says.
 */
export interface NtpInterleaveConfig {
  /** Answer clients that ask (chrony `xleave`) in interleaved mode. */
  readonly enabled: boolean;
  /** Replies remembered at once for interleaving clients (48 octets each, shared by every NTP thread). */
  readonly tableSize: number;
}

/** `[[server]] client-rate-limit-*`: one token bucket per client address (IPv4) or prefix (IPv6 /64). */
export interface NtpRateLimitConfig {
  /** Milliseconds to earn one request; 0 = no limit (the default, like chrony). */
  readonly intervalMs: number;
  /** Requests a client may send back to back. */
  readonly burst: number;
  /** One in 2^leak requests over the limit still gets an answer (a KoD RATE for plain NTP); 0 = none. */
  readonly leak: number;
  /** Clients tracked at once (48 octets each, shared by every NTP thread). */
  readonly tableSize: number;
  readonly ipv4PrefixBits: number;
  readonly ipv6PrefixBits: number;
}

/** An access list as configured (`allow`, `deny`, `ignore` prefix lists and `access-default`). */
export interface AccessConfig {
  readonly entries: readonly AccessEntry[];
  readonly defaultAction: AccessAction;
}

/** Per-client NTS-KE token bucket (chrony's `ntsratelimit` idea). */
export interface ClientRateLimitConfig {
  /** Seconds to earn one token; 0 turns per-client limiting off. */
  readonly intervalS: number;
  /** Bucket size: connections a client may open back to back. */
  readonly burst: number;
  /** Maximum number of client addresses tracked (the table is bounded; the oldest entries are evicted). */
  readonly tableSize: number;
}

/**
 * One certificate chain and private key of a KE listener: the table's own `certificate-chain-path` and
 * `private-key-path`, or one `[[nts-ke-server.certificate]]` / `[[pool-ke.certificate]]` table.
 */
export interface CertificatePairConfig {
  /** Absolute path of the PEM certificate chain (leaf first). */
  readonly certificateChainPath: string;
  /** Absolute path of the PEM private key. */
  readonly privateKeyPath: string;
  /**
   * The pair's label in metrics, logs and `ntsd status` (`name` of a certificate table); undefined = the
   * certificate's primary name (its first DNS name).
   */
  readonly name: string | undefined;
}

/** One `[[nts-ke-server]]` table: a TLS 1.3 NTS-KE listener. */
export interface NtsKeServerConfig {
  readonly listen: ListenAddress;
  /**
   * Certificate pairs in configured order, at least one. The first serves clients that send no server name
   * (SNI) or one no certificate lists; the others by the name they ask for (docs/install.md "Several certificates on one listener").
   */
  readonly certificates: readonly CertificatePairConfig[];
  /** Deadline for a whole session, TLS handshake included. */
  readonly keyExchangeTimeoutMs: number;
  /** Open-connection cap; when full, the session with the least recent progress is evicted for a newcomer. */
  readonly concurrentConnections: number;
  /** Open-connection cap per source (IPv4 address or IPv6 /64), checked at accept. */
  readonly concurrentConnectionsPerSource: number;
  /** KE threads, each with its own SO_REUSEPORT listener; 0 = one per CPU beyond the NTP threads (keThreadCount). */
  readonly threads: number;
  /** Largest request accepted (RFC 8915 §4: at least 1024 octets MUST be accepted). */
  readonly maxRequestBytes: number;
  /** Value of the NTPv4 Server Negotiation record (RFC 8915 §4.1.7); undefined = no record. */
  readonly ntpServer: string | undefined;
  /**
   * NTP port to advertise (RFC 8915 §4.1.8; a record is needed whenever it is not 123).
   * When `ntpPortExplicit` is false it was copied from `server[0].listen.port`; the daemon should then
   * advertise server[0]'s actually bound port (they differ only when that listen port is 0).
   */
  readonly ntpPort: number;
  /** True when `ntp-port` was set in the file. */
  readonly ntpPortExplicit: boolean;
  /** AEAD ids offered (RFC 8915 §5.1; 15 is mandatory to implement). */
  readonly aeadAlgorithms: readonly number[];
  /** Seconds between checks of the certificate files for changes; 0 = reload on SIGHUP only. */
  readonly certificateReloadIntervalS: number;
  readonly clientRateLimit: ClientRateLimitConfig;
  /**
   * Nice value of the KE thread (Linux, 0..19; never below the daemon's own): under CPU contention the
   * NTP threads win over handshakes (RFC 8915 §8.3). 0 = leave it at the daemon's.
   */
  readonly threadNiceness: number;
  /**
   * PROXY protocol v2 (HAProxy `send-proxy-v2`) on this listener: every connection must come from
   * `proxyTrustedSources` and start with a valid v2 header, whose client address the per-client limit and
   * logs then use. A port is either proxied or not; nothing is guessed.
   */
  readonly proxyProtocol: boolean;
  /** CIDR prefixes (or bare addresses) of the balancers allowed to connect when `proxyProtocol` is on. */
  readonly proxyTrustedSources: readonly string[];
  /**
   * NTS pools: tokens a pool's KE front end may authenticate with (secret; never logged). Empty = this
   * server answers no support or fixed key request (docs/pools.md).
   */
  readonly acceptedPoolAuthenticationTokens: readonly string[];
  /** NTS pools: cap on connections kept open for front ends (Keep Alive); 0 = never keep one. */
  readonly longlivedConnections: number;
  /** NTS pools: a kept connection idle this long is closed (at most 300 s). */
  readonly keepAliveIdleTimeoutS: number;
  /** NTS pools: a kept connection is closed at this age, after its current request (at most 3600 s). */
  readonly keepAliveMaxAgeS: number;
  /**
   * Access list (`allow`, `deny`, `ignore`, `access-default`; most specific prefix wins). `deny` and
   * `ignore` both close a KE connection before TLS; with `proxyProtocol`, the header's client address counts.
   */
  readonly access: AccessConfig;
}

/** The keys of a KE listener (nts-ke/ serves both roles): `[pool-ke]` has them as `[[nts-ke-server]]` does. */
export type KeListenerConfig = Pick<NtsKeServerConfig, 'listen' | 'certificates' | 'keyExchangeTimeoutMs' | 'concurrentConnections'
  | 'concurrentConnectionsPerSource' | 'threads' | 'maxRequestBytes' | 'certificateReloadIntervalS' | 'clientRateLimit' | 'threadNiceness' | 'proxyProtocol'
  | 'proxyTrustedSources' | 'access'>;

/** One `[[pool-ke.source]]`: a source behind this pool front end. */
export interface PoolKeSourceConfig {
  /** The source's NTP server name, sent to clients in the Server record when the source sends none; also what NTP Server Deny names. */
  readonly name: string;
  /** Where its NTS-KE server listens: host (DNS name or IP) and TCP port. */
  readonly host: string;
  readonly port: number;
  /** Name its TLS certificate must be valid for (default: `name`). */
  readonly tlsName: string;
  /** The token the pool issued to the source's operator (secret; never logged). */
  readonly authenticationToken: string;
  /** Relative share of clients (default 1). */
  readonly weight: number;
}

/** `[pool-ke]`: this node is a pool's KE front end (docs/pools.md); the certificate is the pool name's. */
export interface PoolKeConfig extends KeListenerConfig {
  /** Deadline for the upstream part (capabilities and cookies from a source); at most 2500 ms. */
  readonly upstreamTimeoutMs: number;
  /** How long a source's capability answer is reused. */
  readonly capabilityCacheS: number;
  /** Seconds between health checks (a capability query) of each source. */
  readonly healthCheckIntervalS: number;
  /** Kept-alive TLS connections per source, at most. */
  readonly connectionsPerSource: number;
  /** PEM file of CAs trusted for the sources' certificates; undefined = the system's CAs. */
  readonly upstreamCaPath: string | undefined;
  readonly sources: readonly PoolKeSourceConfig[];
}

/** Values of `[keyset] mode`: where the cookie master keys come from (docs/fleet.md). */
export const KEYSET_MODES = ['local', 'follow', 'ratchet'] as const;
/** One of KEYSET_MODES. */
export type KeysetMode = (typeof KEYSET_MODES)[number];

/** `[keyset]`: master keys for cookies (RFC 8915 §6). */
export interface KeysetConfig {
  /**
   * `local`: random keys, rotated and written to `keyStoragePath` by this node. `follow`: the key file
   * another ntsd writes is read (never written) and re-read when it changes. `ratchet`: keys derived from
   * the shared seed at `sharedSecretPath` and the wall-clock epoch (core/nts/ratchet.ts); nothing is stored.
   */
  readonly mode: KeysetMode;
  /** Absolute path of the key file (written in `local` mode, read in `follow` mode, unused by `ratchet`). */
  readonly keyStoragePath: string;
  /** Seconds between rotations (`ratchet`: the epoch length; `follow`: the writer's, to notice a stale copy). */
  readonly keyRotationIntervalS: number;
  /** Old keys still accepted after rotation (`follow`: taken from the file instead). */
  readonly staleKeyCount: number;
  /** `follow`: seconds between checks of the key file for a new version (SIGHUP checks at once). */
  readonly followPollIntervalS: number;
  /** `ratchet`: absolute path of the shared seed file (at least 32 octets, mode 0600). */
  readonly sharedSecretPath: string | undefined;
  /** `ratchet`: a second seed whose keys are accepted but never seal (the overlap while reseeding). */
  readonly acceptSharedSecretPath: string | undefined;
}

/** pino level names accepted by `log-level`. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** One of LOG_LEVELS. */
export type LogLevel = (typeof LOG_LEVELS)[number];
/** Values accepted by `log-format` ("auto": pretty on a terminal, JSON otherwise). */
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
/** One of LOG_FORMATS. */
export type LogFormat = (typeof LOG_FORMATS)[number];

/** `[observability]`. */
export interface ObservabilityConfig {
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  /** Absolute path of a log file (reopened on SIGHUP); undefined = standard output. */
  readonly logFile: string | undefined;
  /** Prometheus listener; undefined = metrics endpoint off (`metrics-listen = ""`). */
  readonly metricsListen: ListenAddress | undefined;
  /**
   * Clients the client log keeps (`ntsd clients`, core/client-log.ts): 120 octets each, fixed at start;
   * the least recently seen client goes first. 0 = no client log.
   */
  readonly clientLogSize: number;
}

/** `[worker-pool]`: the NTP threads. */
export interface WorkerPoolConfig {
  /** NTP threads (≥ 1), each owning one socket per `[[server]]` and answering inline. */
  readonly threads: number;
  /**
   * Socket backend of the NTP threads: `native` (the addon in src/native: SO_REUSEPORT sockets, kernel
   * receive timestamps, recvmmsg batches), `dgram` (Node's dgram; several threads only where Node has
   * `reusePort`, ≥ 22.12), or `auto` (native when the addon is built and loads).
   */
  readonly datapath: Datapath;
  /** Native datapath: one sendmsg per reply, right after its seal (`each`), or one sendmmsg per batch (`batch`). */
  readonly sendMode: SendMode;
  /** SO_RCVBUF of every NTP socket in octets; 0 = the OS default. */
  readonly receiveBufferBytes: number;
  /**
   * AEAD implementation: `openssl` (the native addon's OpenSSL EVP calls: constant-time AES; refuses to start
   * without it), `javascript` (the built-in table-driven AES), or `auto` (OpenSSL per AEAD where available).
   */
  readonly aeadBackend: AeadBackend;
}

/** `[worker-pool] datapath` values. */
export const DATAPATHS = ['auto', 'native', 'dgram'] as const;
/** A `[worker-pool] datapath` value. */
export type Datapath = (typeof DATAPATHS)[number];
/** `[worker-pool] aead-backend` values. */
export const AEAD_BACKENDS = ['auto', 'openssl', 'javascript'] as const;
/** A `[worker-pool] aead-backend` value. */
export type AeadBackend = (typeof AEAD_BACKENDS)[number];
/** `[worker-pool] send-mode` values. */
export const SEND_MODES = ['each', 'batch'] as const;
/** A `[worker-pool] send-mode` value. */
export type SendMode = (typeof SEND_MODES)[number];

/** `[time-source] mode = "static"`: server fields fixed by the operator. */
export interface StaticTimeSourceConfig {
  readonly mode: 'static';
  /** Stratum to claim, 1..15; 16 = always answer "unsynchronised" (LI = 3). */
  readonly localStratum: number;
  /** Reference ID as the 32-bit wire value (RFC 5905 §7.3). */
  readonly referenceId: number;
  /** The reference ID as written in the file (for logs). */
  readonly referenceIdText: string;
}

/** `[time-source] mode = "follow"`: copy the host time daemon's state over loopback NTP. */
export interface FollowTimeSourceConfig {
  readonly mode: 'follow';
  /** Host time daemon's NTP address (normally 127.0.0.1:123). */
  readonly address: ListenAddress;
  /** Seconds between queries. */
  readonly pollIntervalS: number;
}

/** Where the stratum/leap/root-delay/root-dispersion/refid of replies come from. */
export type TimeSourceConfig = StaticTimeSourceConfig | FollowTimeSourceConfig;

/** The validated, fully defaulted configuration. */
export interface Config {
  /** `[[server]]` tables, in file order; empty on a KE-only node. */
  readonly servers: readonly NtpServerConfig[];
  /** `[[nts-ke-server]]` tables, in file order; empty on an NTP-only node (never both empty). */
  readonly ntsKeServers: readonly NtsKeServerConfig[];
  readonly keyset: KeysetConfig;
  readonly observability: ObservabilityConfig;
  readonly workerPool: WorkerPoolConfig;
  readonly timeSource: TimeSourceConfig;
  /** `[pool-ke]`: the pool front-end role; undefined when absent. */
  readonly poolKe: PoolKeConfig | undefined;
}

/** Result of validation: the config, or every problem found. */
export type ConfigResult = { ok: true; config: Config } | { ok: false; errors: string[] };

/** Facts about the host that defaults depend on (kept out of this module so it stays pure). */
export interface ValidateOptions {
  /** Directory that relative paths resolve against (the config file's directory). */
  readonly baseDir: string;
  /** Usable CPUs; `worker-pool.threads` defaults to cpuCount − 1, at least 1. */
  readonly cpuCount: number;
}

/** AEAD ids we implement (IANA AEAD registry): AES-SIV-CMAC-256/384/512 (RFC 5297), AES-128-GCM-SIV (RFC 8452). */
export const SUPPORTED_AEAD_IDS = [15, 16, 17, 30] as const;
/** AEAD_AES_SIV_CMAC_256: mandatory to implement (RFC 8915 §5.1), so it can never be removed. */
export const MANDATORY_AEAD_ID = 15;

/** Every default, in one place (docs/configuration.md documents each; test/docs.test.ts checks the keys). */
export const DEFAULTS = {
  server: {
    requireNts: false,
    acceptNtpVersions: [3, 4],
    clientRateLimitIntervalS: 0,
    clientRateLimitBurst: 8,
    clientRateLimitLeak: 2,
    clientRateLimitTableSize: 65536,
    clientRateLimitIpv4PrefixLength: 32,
    clientRateLimitIpv6PrefixLength: 64,
    accessDefault: 'allow',
    interleaved: true,
    interleavedTableSize: 65536,
  },
  ntsKeServer: {
    keyExchangeTimeoutMs: 2000,
    concurrentConnections: 512,
    concurrentConnectionsPerSource: 16,
    maxRequestBytes: 4096,
    aeadAlgorithms: [15, 16, 17, 30],
    certificateReloadIntervalS: 60,
    threadNiceness: 10,
    clientRateLimitIntervalS: 64,
    clientRateLimitBurst: 8,
    clientRateLimitTableSize: 65536,
    keepAliveIdleTimeoutS: 300,
    keepAliveMaxAgeS: 3600,
  },
  poolKe: {
    keyExchangeTimeoutMs: 5000,
    upstreamTimeoutMs: 2500,
    capabilityCacheS: 300,
    healthCheckIntervalS: 30,
    connectionsPerSource: 2,
    sourceWeight: 1,
  },
  keyset: { mode: 'local', keyStoragePath: '/var/lib/ntsd/keyset', keyRotationIntervalS: 86400, staleKeyCount: 7, followPollIntervalS: 10 },
  // client-log-size: chrony's default clientloglimit (512 KiB) holds 4096 clients; so do ours (480 KiB).
  observability: { logLevel: 'info', logFormat: 'auto', metricsListen: '127.0.0.1:9975', clientLogSize: 4096 },
  workerPool: { datapath: 'auto', sendMode: 'each', receiveBufferBytes: 0, aeadBackend: 'auto' },
  timeSource: { mode: 'follow', address: '127.0.0.1:123', pollIntervalS: 16, referenceId: 'LOCL' },
} as const;

// ---------------------------------------------------------------------------------------------------------
// Small parsers shared with other modules.

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** True for a dotted-quad IPv4 literal without leading zeros. */
export function isIPv4Literal(text: string): boolean {
  return IPV4_RE.test(text);
}

/** True for an RFC 4291 IPv6 literal (no brackets, no zone id). */
export function isIPv6Literal(text: string): boolean {
  if (!/^[0-9A-Fa-f:.]+$/.test(text) || !text.includes(':')) return false;
  try {
    // The WHATWG URL parser implements the full IPv6 grammar (including embedded IPv4); pure computation.
    return new URL(`http://[${text}]/`).hostname.length > 2;
  } catch {
    return false;
  }
}

/** Parses `"1.2.3.4:123"` or `"[::1]:123"`; returns undefined when the text is neither. */
export function parseListenAddress(text: string): ListenAddress | undefined {
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return undefined;
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!isIPv6Literal(host)) return undefined;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return undefined;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (!isIPv4Literal(host)) return undefined;
  }
  if (!/^\d{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  if (port > 65535) return undefined;
  return { host, port, family: host.includes(':') ? 'IPv6' : 'IPv4' };
}

/** Formats a listen address back to `"host:port"` / `"[v6]:port"`. */
export function formatListenAddress(address: ListenAddress): string {
  return address.family === 'IPv6' ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/**
 * Parses a reference ID (RFC 5905 §7.3): a dotted-quad IPv4 address, or 1–4 printable ASCII characters
 * left-justified and NUL-padded (e.g. "GPS", "LOCL"). Returns the 32-bit wire value, or undefined.
 */
export function parseReferenceId(text: string): number | undefined {
  if (isIPv4Literal(text)) {
    return text.split('.').reduce((acc, part) => acc * 256 + Number(part), 0) >>> 0;
  }
  if (!/^[\x21-\x7e]{1,4}$/.test(text)) return undefined;
  let value = 0;
  for (let i = 0; i < 4; i++) value = value * 256 + (i < text.length ? text.charCodeAt(i) : 0);
  return value >>> 0;
}

/** A DNS name usable in a Server Negotiation record (RFC 8915 §4.1.7: FQDN, A-labels). */
function isHostname(text: string): boolean {
  if (text.length === 0 || text.length > 253) return false;
  const labels = (text.endsWith('.') ? text.slice(0, -1) : text).split('.');
  return labels.every((l) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l));
}

// ---------------------------------------------------------------------------------------------------------
// Validation machinery.

type Table = Record<string, unknown>;

function isTable(value: unknown): value is Table {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

/** Short rendering of a value for error messages. */
function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Date) return 'a date';
  if (isTable(value)) return 'a table';
  return typeof value;
}

/** Reads keys of one TOML table, remembering which were consumed so the rest can be reported as unknown. */
class TableReader {
  readonly #table: Table;
  readonly #path: string;
  readonly #errors: string[];
  readonly #seen = new Set<string>();

  constructor(table: Table, path: string, errors: string[]) {
    this.#table = table;
    this.#path = path;
    this.#errors = errors;
  }

  /** Key path for messages: `section.key` or just `key` at top level. */
  pathOf(key: string): string {
    return this.#path === '' ? key : `${this.#path}.${key}`;
  }

  error(key: string, message: string): void {
    this.#errors.push(`${this.pathOf(key)}: ${message}`);
  }

  has(key: string): boolean {
    return Object.hasOwn(this.#table, key);
  }

  raw(key: string): unknown {
    this.#seen.add(key);
    return this.#table[key];
  }

  /** Marks `key` as known but reports it as misplaced when present. */
  reject(key: string, message: string): void {
    if (this.has(key)) {
      this.#seen.add(key);
      this.error(key, message);
    }
  }

  integer(key: string, min: number, max: number, fallback: number): number {
    if (!this.has(key)) return fallback;
    const v = this.raw(key);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.error(key, `must be an integer between ${min} and ${max}, got ${show(v)}`);
      return fallback;
    }
    return v;
  }

  boolean(key: string, fallback: boolean): boolean {
    if (!this.has(key)) return fallback;
    const v = this.raw(key);
    if (typeof v !== 'boolean') {
      this.error(key, `must be true or false, got ${show(v)}`);
      return fallback;
    }
    return v;
  }

  string(key: string): string | undefined {
    if (!this.has(key)) return undefined;
    const v = this.raw(key);
    if (typeof v !== 'string') {
      this.error(key, `must be a string, got ${show(v)}`);
      return undefined;
    }
    return v;
  }

  oneOf<const T extends readonly string[]>(key: string, allowed: T, fallback: T[number]): T[number] {
    const v = this.string(key);
    if (v === undefined) return fallback;
    const hit = allowed.find((a) => a === v);
    if (hit === undefined) {
      this.error(key, `must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${show(v)}`);
      return fallback;
    }
    return hit;
  }

  listen(key: string, required: boolean, fallback?: string): ListenAddress | undefined {
    const v = this.has(key) ? this.string(key) : fallback;
    if (v === undefined) {
      if (required && !this.has(key)) this.error(key, 'required key is missing (e.g. "127.0.0.1:123" or "[::]:123")');
      return undefined;
    }
    const parsed = parseListenAddress(v);
    if (parsed === undefined) this.error(key, `expected "host:port" (IPv4) or "[host]:port" (IPv6), got ${show(v)}`);
    return parsed;
  }

  path(key: string, baseDir: string, required: boolean, fallback?: string): string | undefined {
    const v = this.has(key) ? this.string(key) : fallback;
    if (v === undefined) {
      if (required && !this.has(key)) this.error(key, 'required key is missing');
      return undefined;
    }
    if (v.length === 0 || v.includes('\0')) {
      this.error(key, `must be a non-empty file path, got ${show(v)}`);
      return undefined;
    }
    return isAbsolute(v) ? resolve(v) : resolve(baseDir, v);
  }

  /** A number (integer or not) in [min, max]. */
  number(key: string, min: number, max: number, fallback: number): number {
    if (!this.has(key)) return fallback;
    const v = this.raw(key);
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      this.error(key, `must be a number between ${min} and ${max}, got ${show(v)}`);
      return fallback;
    }
    return v;
  }

  /** An array of strings (possibly empty); absent = empty. */
  stringList(key: string): readonly string[] {
    if (!this.has(key)) return [];
    const v = this.raw(key);
    if (!Array.isArray(v) || !v.every((item): item is string => typeof item === 'string')) {
      this.error(key, `must be an array of strings, got ${show(v)}`);
      return [];
    }
    return v;
  }

  /**
   * `allow`, `deny` and `ignore` prefix lists plus `access-default`, compiled once to report a bad prefix
   * or a prefix listed under two actions, naming the key and the element (`deny[2]`).
   */
  accessList(): AccessConfig {
    const entries: AccessEntry[] = [];
    const elements: string[] = [];
    for (const action of ['allow', 'deny', 'ignore'] as const) {
      this.stringList(action).forEach((prefix, i) => {
        entries.push({ prefix, action });
        elements.push(`${this.pathOf(action)}[${i}]`);
      });
    }
    const defaultAction = this.oneOf('access-default', ['allow', 'deny', 'ignore'] as const, DEFAULTS.server.accessDefault);
    const compiled = AccessList.compile(entries, defaultAction);
    if (!compiled.ok) {
      this.#errors.push(`${elements[compiled.index] ?? this.pathOf('allow')}: ${compiled.error}`);
      return { entries: [], defaultAction };
    }
    return { entries, defaultAction };
  }

  /** An array of distinct integers, each accepted by `allowed`. */
  intList(key: string, allowed: readonly number[], fallback: readonly number[]): readonly number[] {
    if (!this.has(key)) return fallback;
    const v = this.raw(key);
    if (!Array.isArray(v) || v.length === 0) {
      this.error(key, `must be a non-empty array of integers from {${allowed.join(', ')}}, got ${show(v)}`);
      return fallback;
    }
    const out: number[] = [];
    let bad = false;
    v.forEach((item: unknown, i) => {
      if (typeof item !== 'number' || !allowed.includes(item)) {
        this.#errors.push(`${this.pathOf(key)}[${i}]: must be one of {${allowed.join(', ')}}, got ${show(item)}`);
        bad = true;
      } else if (out.includes(item)) {
        this.#errors.push(`${this.pathOf(key)}[${i}]: duplicate value ${item}`);
        bad = true;
      } else {
        out.push(item);
      }
    });
    return bad ? fallback : out;
  }

  /** A sub-table (`[section]`); absent = empty. */
  table(key: string): Table {
    if (!this.has(key)) return {};
    const v = this.raw(key);
    if (!isTable(v)) {
      this.error(key, `must be a table ([${key}]), got ${show(v)}`);
      return {};
    }
    return v;
  }

  /** An array of tables (`[[section]]`); absent = empty. */
  tables(key: string): Table[] {
    if (!this.has(key)) return [];
    const v = this.raw(key);
    if (!Array.isArray(v)) {
      this.error(key, `must be an array of tables ([[${key}]]), got ${show(v)}`);
      return [];
    }
    const out: Table[] = [];
    v.forEach((item: unknown, i) => {
      if (isTable(item)) out.push(item);
      else this.#errors.push(`${this.pathOf(key)}[${i}]: must be a table, got ${show(item)}`);
    });
    return out;
  }

  /** Reports every key that was never read. Call last. */
  finish(): void {
    for (const key of Object.keys(this.#table)) {
      if (!this.#seen.has(key)) this.error(key, 'unknown key');
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Sections.

function readServer(table: Table, path: string, errors: string[]): NtpServerConfig | undefined {
  const r = new TableReader(table, path, errors);
  const listen = r.listen('listen', true);
  const requireNts = r.boolean('require-nts', DEFAULTS.server.requireNts);
  const acceptNtpVersions = r.intList('accept-ntp-versions', [1, 2, 3, 4], DEFAULTS.server.acceptNtpVersions);
  // RFC 8915 §5: NTS extension fields exist only in NTPv4, so an NTS-only server must answer version 4.
  if (requireNts && !acceptNtpVersions.includes(4)) {
    r.error('accept-ntp-versions', 'must include 4 when require-nts = true (NTS is NTPv4 only, RFC 8915 §5)');
  }
  const d = DEFAULTS.server;
  const rateLimit: NtpRateLimitConfig = {
    intervalMs: Math.round(r.number('client-rate-limit-interval-s', 0, 86_400, d.clientRateLimitIntervalS) * 1000),
    burst: r.integer('client-rate-limit-burst', 1, 10_000, d.clientRateLimitBurst),
    leak: r.integer('client-rate-limit-leak', 0, 16, d.clientRateLimitLeak),
    tableSize: r.integer('client-rate-limit-table-size', 16, 16_777_216, d.clientRateLimitTableSize),
    ipv4PrefixBits: r.integer('client-rate-limit-ipv4-prefix-length', 0, 32, d.clientRateLimitIpv4PrefixLength),
    ipv6PrefixBits: r.integer('client-rate-limit-ipv6-prefix-length', 0, 128, d.clientRateLimitIpv6PrefixLength),
  };
  const access = r.accessList();
  const interleave: NtpInterleaveConfig = {
    enabled: r.boolean('interleaved', d.interleaved),
    tableSize: r.integer('interleaved-table-size', 16, 16_777_216, d.interleavedTableSize),
  };
  r.finish();
  return listen === undefined ? undefined : { listen, requireNts, acceptNtpVersions, rateLimit, access, interleave };
}

function readNtsKeServer(
  table: Table,
  path: string,
  errors: string[],
  options: ValidateOptions,
  firstServerPort: number | undefined,
  keOnly: boolean,
): NtsKeServerConfig | undefined {
  const d = DEFAULTS.ntsKeServer;
  const r = new TableReader(table, path, errors);
  const listener = readKeListener(r, errors, options, 100, d.keyExchangeTimeoutMs);
  const concurrentConnections = listener?.concurrentConnections ?? d.concurrentConnections;
  let ntpServer = r.string('ntp-server');
  if (ntpServer !== undefined && !(isIPv4Literal(ntpServer) || isIPv6Literal(ntpServer) || isHostname(ntpServer))) {
    r.error('ntp-server', `must be an IPv4 address, an IPv6 address without brackets, or a DNS name, got ${show(ntpServer)}`);
    ntpServer = undefined;
  }
  const ntpPortExplicit = r.has('ntp-port');
  // A KE-only node serves no NTP itself, so it must tell clients where NTP is (RFC 8915 §4.1.7, §4.1.8).
  if (keOnly && !r.has('ntp-server')) {
    r.error('ntp-server', 'required on a KE-only node (no [[server]] table): the NTP node\'s DNS name or IP address, sent as the Server Negotiation record (RFC 8915 §4.1.7)');
  }
  if (keOnly && !ntpPortExplicit) {
    r.error('ntp-port', 'required on a KE-only node (no [[server]] table): the NTP node\'s UDP port, sent as the Port Negotiation record when not 123 (RFC 8915 §4.1.8)');
  }
  const ntpPort = r.integer('ntp-port', 1, 65535, firstServerPort ?? 0);
  // RFC 8915 §5.1: AEAD_AES_SIV_CMAC_256 is mandatory to implement; we never stop offering it.
  const aeadAlgorithms = r.intList('aead-algorithms', SUPPORTED_AEAD_IDS, d.aeadAlgorithms);
  if (!aeadAlgorithms.includes(MANDATORY_AEAD_ID)) {
    r.error('aead-algorithms', `must include ${MANDATORY_AEAD_ID} (AEAD_AES_SIV_CMAC_256, mandatory per RFC 8915 §5.1)`);
  }
  const acceptedPoolAuthenticationTokens = readTokenList(r, 'accepted-pool-authentication-tokens', errors);
  const longlivedConnections = r.integer('longlived-connections', 0, concurrentConnections, defaultLonglivedConnections(concurrentConnections));
  const keepAliveIdleTimeoutS = r.integer('keep-alive-idle-timeout-s', 1, POOL_KEEP_ALIVE_MAX_IDLE_S, d.keepAliveIdleTimeoutS);
  const keepAliveMaxAgeS = r.integer('keep-alive-max-age-s', 1, POOL_KEEP_ALIVE_MAX_AGE_S, d.keepAliveMaxAgeS);
  r.finish();
  if (listener === undefined) return undefined;
  return {
    ...listener,
    ntpServer,
    ntpPort,
    ntpPortExplicit,
    aeadAlgorithms,
    acceptedPoolAuthenticationTokens,
    longlivedConnections,
    keepAliveIdleTimeoutS,
    keepAliveMaxAgeS,
  };
}

/** Longest `name` of a certificate table (a metric label value). */
const MAX_CERTIFICATE_NAME_LENGTH = 253;

/** One `[[…certificate]]` table. */
function readCertificateTable(table: Table, path: string, errors: string[], options: ValidateOptions): CertificatePairConfig | undefined {
  const r = new TableReader(table, path, errors);
  const certificateChainPath = r.path('certificate-chain-path', options.baseDir, true);
  const privateKeyPath = r.path('private-key-path', options.baseDir, true);
  const name = r.string('name');
  // eslint-disable-next-line no-control-regex
  if (name !== undefined && (name.length === 0 || name.length > MAX_CERTIFICATE_NAME_LENGTH || /[\u0000-\u001f\u007f]/.test(name))) {
    r.error('name', `must be 1 to ${MAX_CERTIFICATE_NAME_LENGTH} printable characters, got ${show(name)}`);
  }
  r.finish();
  if (certificateChainPath === undefined || privateKeyPath === undefined) return undefined;
  return { certificateChainPath, privateKeyPath, name };
}

/**
 * A KE listener's certificate pairs: its own `certificate-chain-path` + `private-key-path` (the first pair,
 * when present), then each `[[<table>.certificate]]`. At least one pair in total; undefined (errors
 * recorded) when one is unusable or there is none.
 */
function readCertificatePairs(r: TableReader, errors: string[], options: ValidateOptions): readonly CertificatePairConfig[] | undefined {
  const tables = r.tables('certificate');
  const single = r.has('certificate-chain-path') || r.has('private-key-path') || tables.length === 0;
  const pairs: CertificatePairConfig[] = [];
  let bad = false;
  if (single) {
    const hint = tables.length === 0 ? ' (or list the pairs as [[…certificate]] tables)' : '';
    const chain = r.has('certificate-chain-path') ? r.path('certificate-chain-path', options.baseDir, true) : undefined;
    if (!r.has('certificate-chain-path')) r.error('certificate-chain-path', `required key is missing${hint}`);
    const key = r.has('private-key-path') ? r.path('private-key-path', options.baseDir, true) : undefined;
    if (!r.has('private-key-path')) r.error('private-key-path', `required key is missing${hint}`);
    if (chain === undefined || key === undefined) bad = true;
    else pairs.push({ certificateChainPath: chain, privateKeyPath: key, name: undefined });
  }
  tables.forEach((t, i) => {
    const path = `${r.pathOf('certificate')}[${i}]`;
    const pair = readCertificateTable(t, path, errors, options);
    if (pair === undefined) {
      bad = true;
      return;
    }
    if (pairs.some((p) => p.certificateChainPath === pair.certificateChainPath)) {
      errors.push(`${path}.certificate-chain-path: the same file is already a certificate pair of this listener`);
      bad = true;
    }
    pairs.push(pair);
  });
  return bad || pairs.length === 0 ? undefined : pairs;
}

/**
 * The keys every KE listener has (KeListenerConfig), read alike for `[[nts-ke-server]]` and `[pool-ke]`;
 * undefined (errors recorded) without a usable listen address or certificate pairs.
 */
function readKeListener(r: TableReader, errors: string[], options: ValidateOptions, minTimeoutMs: number, timeoutMs: number): KeListenerConfig | undefined {
  const d = DEFAULTS.ntsKeServer;
  const listen = r.listen('listen', true);
  const certificates = readCertificatePairs(r, errors, options);
  const keyExchangeTimeoutMs = r.integer('key-exchange-timeout-ms', minTimeoutMs, 60_000, timeoutMs);
  const concurrentConnections = r.integer('concurrent-connections', 1, 1_000_000, d.concurrentConnections);
  const threads = r.integer('threads', 0, 256, 0);
  const concurrentConnectionsPerSource = r.integer('concurrent-connections-per-source', 1, 1_000_000, d.concurrentConnectionsPerSource);
  // RFC 8915 §4: a server MUST accept requests of at least 1024 octets.
  const maxRequestBytes = r.integer('max-request-bytes', 1024, 65_536, d.maxRequestBytes);
  const certificateReloadIntervalS = r.integer('certificate-reload-interval-s', 0, 86_400, d.certificateReloadIntervalS);
  const threadNiceness = r.integer('thread-niceness', 0, 19, d.threadNiceness);
  const proxyProtocol = r.boolean('proxy-protocol', false);
  let proxyTrustedSources: string[] = [];
  if (!proxyProtocol) {
    r.reject('proxy-trusted-sources', 'only valid with proxy-protocol = true');
  } else if (!r.has('proxy-trusted-sources')) {
    r.error('proxy-trusted-sources', 'required when proxy-protocol = true: the balancers\' addresses as CIDR prefixes, e.g. ["10.0.0.0/24", "2001:db8::5"]');
  } else {
    const v = r.raw('proxy-trusted-sources');
    if (!Array.isArray(v) || v.length === 0) {
      r.error('proxy-trusted-sources', `must be a non-empty array of CIDR prefixes, got ${show(v)}`);
    } else {
      v.forEach((item: unknown, i) => {
        if (typeof item === 'string' && parseCidr(item) !== undefined) proxyTrustedSources.push(item);
        else errors.push(`${r.pathOf('proxy-trusted-sources')}[${i}]: must be an IP address or CIDR prefix ("192.0.2.0/24", "2001:db8::/32"), got ${show(item)}`);
      });
      if (proxyTrustedSources.length !== v.length) proxyTrustedSources = [];
    }
  }
  const access = r.accessList();
  const clientRateLimit: ClientRateLimitConfig = {
    intervalS: r.integer('client-rate-limit-interval-s', 0, 86_400, d.clientRateLimitIntervalS),
    burst: r.integer('client-rate-limit-burst', 1, 10_000, d.clientRateLimitBurst),
    tableSize: r.integer('client-rate-limit-table-size', 16, 16_777_216, d.clientRateLimitTableSize),
  };
  if (listen === undefined || certificates === undefined) return undefined;
  return {
    listen,
    certificates,
    keyExchangeTimeoutMs,
    concurrentConnections,
    concurrentConnectionsPerSource,
    threads,
    maxRequestBytes,
    certificateReloadIntervalS,
    clientRateLimit,
    threadNiceness,
    proxyProtocol,
    proxyTrustedSources,
    access,
  };
}

/** Longest pool authentication token accepted, in UTF-8 octets (a KE record body is at most 65535). */
const MAX_POOL_TOKEN_BYTES = 1024;

/** Why a token string is unusable, or undefined. Never includes the token itself: tokens are secret. */
function tokenProblem(token: string): string | undefined {
  const bytes = new TextEncoder().encode(token).length;
  if (bytes === 0) return 'must not be empty';
  if (bytes > MAX_POOL_TOKEN_BYTES) return `must be at most ${MAX_POOL_TOKEN_BYTES} UTF-8 octets, got ${bytes}`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(token)) return 'must not contain control characters';
  return undefined;
}

/** A list of secret tokens; messages name the key and the index, never a value. */
function readTokenList(r: TableReader, key: string, errors: string[]): readonly string[] {
  if (!r.has(key)) return [];
  const v = r.raw(key);
  if (!Array.isArray(v)) {
    r.error(key, 'must be an array of strings (the tokens your pool issued)');
    return [];
  }
  const out: string[] = [];
  let bad = false;
  v.forEach((item: unknown, i) => {
    const problem = typeof item === 'string' ? tokenProblem(item) : 'must be a string';
    if (problem !== undefined) {
      errors.push(`${r.pathOf(key)}[${i}]: ${problem}`);
      bad = true;
    } else if (typeof item === 'string') {
      out.push(item);
    }
  });
  return bad ? [] : out;
}

/** "host:port" where host is a DNS name, an IPv4 literal or a bracketed IPv6 literal. */
function parseHostPort(text: string): { host: string; port: number } | undefined {
  const ip = parseListenAddress(text);
  if (ip !== undefined) return { host: ip.host, port: ip.port };
  const colon = text.lastIndexOf(':');
  if (colon <= 0) return undefined;
  const host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  if (!isHostname(host) || !/^\d{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  return port >= 1 && port <= 65535 ? { host, port } : undefined;
}

function readPoolKeSource(table: Table, path: string, errors: string[]): PoolKeSourceConfig | undefined {
  const r = new TableReader(table, path, errors);
  const name = r.string('name');
  if (name === undefined && !r.has('name')) r.error('name', 'required key is missing: the source\'s NTP server name (sent in the Server record)');
  if (name !== undefined && !(isIPv4Literal(name) || isIPv6Literal(name) || isHostname(name))) {
    r.error('name', `must be a DNS name or an IP address, got ${show(name)}`);
  }
  const addressText = r.string('address');
  let address: { host: string; port: number } | undefined;
  if (addressText === undefined) {
    if (!r.has('address')) r.error('address', 'required key is missing: the source\'s NTS-KE address, e.g. "ts1.example.net:4460"');
  } else {
    address = parseHostPort(addressText);
    if (address === undefined) r.error('address', `expected "host:port" (DNS name, IPv4, or [IPv6]), got ${show(addressText)}`);
  }
  const tlsName = r.string('tls-name');
  if (tlsName !== undefined && !(isHostname(tlsName) || isIPv4Literal(tlsName) || isIPv6Literal(tlsName))) {
    r.error('tls-name', `must be a DNS name or an IP address, got ${show(tlsName)}`);
  }
  let authenticationToken: string | undefined;
  if (!r.has('authentication-token')) {
    r.error('authentication-token', 'required key is missing: the token the pool issued for this source');
  } else {
    const v = r.raw('authentication-token');
    const problem = typeof v === 'string' ? tokenProblem(v) : 'must be a string';
    if (problem !== undefined) r.error('authentication-token', problem);
    else if (typeof v === 'string') authenticationToken = v;
  }
  const weight = r.integer('weight', 1, 1000, DEFAULTS.poolKe.sourceWeight);
  r.finish();
  if (name === undefined || address === undefined || authenticationToken === undefined) return undefined;
  return { name, host: address.host, port: address.port, tlsName: tlsName ?? name, authenticationToken, weight };
}

function readPoolKe(table: Table, errors: string[], options: ValidateOptions): PoolKeConfig | undefined {
  const d = DEFAULTS.poolKe;
  const r = new TableReader(table, 'pool-ke', errors);
  const listener = readKeListener(r, errors, options, 1000, d.keyExchangeTimeoutMs);
  const keyExchangeTimeoutMs = listener?.keyExchangeTimeoutMs ?? d.keyExchangeTimeoutMs;
  const upstreamTimeoutMs = r.integer('upstream-timeout-ms', 100, 2500, d.upstreamTimeoutMs);
  if (upstreamTimeoutMs >= keyExchangeTimeoutMs) r.error('upstream-timeout-ms', `must be below key-exchange-timeout-ms (${keyExchangeTimeoutMs})`);
  const capabilityCacheS = r.integer('capability-cache-s', 1, 3600, d.capabilityCacheS);
  const healthCheckIntervalS = r.integer('health-check-interval-s', 1, 3600, d.healthCheckIntervalS);
  const connectionsPerSource = r.integer('connections-per-source', 1, 64, d.connectionsPerSource);
  const upstreamCaPath = r.path('upstream-ca-path', options.baseDir, false);
  const sources: PoolKeSourceConfig[] = [];
  const tables = r.tables('source');
  if (tables.length === 0 && !errors.some((e) => e.startsWith('pool-ke.source'))) {
    r.error('source', 'at least one [[pool-ke.source]] table (name, address, authentication-token) is required');
  }
  tables.forEach((t, i) => {
    const src = readPoolKeSource(t, `pool-ke.source[${i}]`, errors);
    if (src === undefined) return;
    const j = sources.findIndex((o) => o.name.toLowerCase() === src.name.toLowerCase());
    if (j >= 0) errors.push(`pool-ke.source[${i}].name: same name as pool-ke.source[${j}].name`);
    sources.push(src);
  });
  r.finish();
  if (listener === undefined) return undefined;
  return {
    ...listener,
    upstreamTimeoutMs,
    capabilityCacheS,
    healthCheckIntervalS,
    connectionsPerSource,
    upstreamCaPath,
    sources,
  };
}

const RATCHET_ONLY = ['shared-secret-path', 'accept-shared-secret-path'] as const;

/** Shortest `[keyset] key-rotation-interval-s` with mode = "local", seconds. */
export const MIN_LOCAL_KEY_ROTATION_INTERVAL_S = 10;
/** Shortest `[keyset] key-rotation-interval-s` with mode = "ratchet" or "follow", seconds. */
export const MIN_SHARED_KEY_ROTATION_INTERVAL_S = 60;

function readKeyset(table: Table, errors: string[], options: ValidateOptions): KeysetConfig {
  const d = DEFAULTS.keyset;
  const r = new TableReader(table, 'keyset', errors);
  const mode = r.oneOf('mode', KEYSET_MODES, d.mode);
  if (mode !== 'ratchet') for (const key of RATCHET_ONLY) r.reject(key, 'only valid with mode = "ratchet"');
  if (mode !== 'follow') r.reject('follow-poll-interval-s', 'only valid with mode = "follow"');
  if (mode === 'ratchet') r.reject('key-storage-path', 'not used with mode = "ratchet" (keys are derived from shared-secret-path, never stored)');
  if (mode === 'follow') r.reject('stale-key-count', 'not used with mode = "follow" (the followed key file carries it; set it on the node that writes the file)');
  const keyStoragePath =
    (mode === 'ratchet' ? undefined : r.path('key-storage-path', options.baseDir, false, d.keyStoragePath)) ?? resolve(d.keyStoragePath);
  // A local keyset may rotate every 10 s (the crash battery uses it); ratchet epochs and the follow staleness
  // warning are designed around at least a minute, so those modes keep 60.
  const minRotationIntervalS = mode === 'local' ? MIN_LOCAL_KEY_ROTATION_INTERVAL_S : MIN_SHARED_KEY_ROTATION_INTERVAL_S;
  const keyRotationIntervalS = r.integer('key-rotation-interval-s', minRotationIntervalS, 31_536_000, d.keyRotationIntervalS);
  const staleKeyCount = mode === 'follow' ? d.staleKeyCount : r.integer('stale-key-count', 1, 1000, d.staleKeyCount);
  const followPollIntervalS = mode === 'follow' ? r.integer('follow-poll-interval-s', 1, 3600, d.followPollIntervalS) : d.followPollIntervalS;
  let sharedSecretPath: string | undefined;
  let acceptSharedSecretPath: string | undefined;
  if (mode === 'ratchet') {
    if (!r.has('shared-secret-path')) {
      r.error('shared-secret-path', 'required when mode = "ratchet" (a file of at least 32 random octets, e.g. `head -c 32 /dev/urandom`, mode 0600)');
    }
    sharedSecretPath = r.path('shared-secret-path', options.baseDir, false);
    acceptSharedSecretPath = r.path('accept-shared-secret-path', options.baseDir, false);
    if (sharedSecretPath !== undefined && sharedSecretPath === acceptSharedSecretPath) {
      r.error('accept-shared-secret-path', 'must name a different file than shared-secret-path');
    }
  }
  r.finish();
  return { mode, keyStoragePath, keyRotationIntervalS, staleKeyCount, followPollIntervalS, sharedSecretPath, acceptSharedSecretPath };
}

function readObservability(table: Table, errors: string[], options: ValidateOptions): ObservabilityConfig {
  const d = DEFAULTS.observability;
  const r = new TableReader(table, 'observability', errors);
  const logLevel = r.oneOf('log-level', LOG_LEVELS, d.logLevel);
  const logFormat = r.oneOf('log-format', LOG_FORMATS, d.logFormat);
  const logFile = r.path('log-file', options.baseDir, false);
  let metricsListen: ListenAddress | undefined;
  // An empty string turns the endpoint off; absent means the default loopback listener.
  if (!(r.has('metrics-listen') && r.raw('metrics-listen') === '')) {
    metricsListen = r.listen('metrics-listen', false, d.metricsListen);
  }
  const clientLogSize = r.integer('client-log-size', 0, 16_777_216, d.clientLogSize);
  r.finish();
  return { logLevel, logFormat, logFile, metricsListen, clientLogSize };
}

/** `[worker-pool]` keys of the retired worker-pool design, and what to do instead. */
const RETIRED_WORKER_POOL_KEYS = [
  ['receive-threads', 'every NTP thread now owns its sockets: set worker-pool.threads'],
  ['batch-size', 'NTP threads answer each packet inline; there are no batches to size'],
  ['flush-interval-us', 'NTP threads answer each packet inline; there is nothing to flush'],
  ['queue-limit', 'NTP threads answer each packet inline; the socket receive buffer (receive-buffer-bytes) is the only queue'],
] as const;

function readWorkerPool(table: Table, errors: string[], options: ValidateOptions): WorkerPoolConfig {
  const d = DEFAULTS.workerPool;
  const r = new TableReader(table, 'worker-pool', errors);
  for (const [key, instead] of RETIRED_WORKER_POOL_KEYS) r.reject(key, `removed; ${instead}`);
  if (r.has('threads') && r.raw('threads') === 0) r.error('threads', 'must be at least 1: 0 (answer inline on the main thread) is gone; every NTP thread owns its sockets');
  const threads = r.integer('threads', 0, 256, Math.max(1, Math.floor(options.cpuCount) - 1));
  const datapath = r.oneOf('datapath', DATAPATHS, d.datapath);
  const sendMode = r.oneOf('send-mode', SEND_MODES, d.sendMode);
  const receiveBufferBytes = r.integer('receive-buffer-bytes', 0, 1 << 30, d.receiveBufferBytes);
  const aeadBackend = r.oneOf('aead-backend', AEAD_BACKENDS, d.aeadBackend);
  r.finish();
  return { threads, datapath, sendMode, receiveBufferBytes, aeadBackend };
}

const STATIC_ONLY = ['local-stratum', 'reference-id'] as const;
const FOLLOW_ONLY = ['address', 'poll-interval-s'] as const;

function readTimeSource(table: Table, errors: string[]): TimeSourceConfig {
  const d = DEFAULTS.timeSource;
  const r = new TableReader(table, 'time-source', errors);
  const mode = r.oneOf('mode', ['static', 'follow'] as const, d.mode);
  let result: TimeSourceConfig;
  if (mode === 'static') {
    for (const key of FOLLOW_ONLY) r.reject(key, 'only valid with mode = "follow"');
    // No default: claiming a stratum is a statement the operator must make deliberately.
    if (!r.has('local-stratum')) r.error('local-stratum', 'required when mode = "static" (1..15, or 16 = unsynchronised)');
    const localStratum = r.integer('local-stratum', 1, 16, 16);
    const referenceIdText = r.string('reference-id') ?? d.referenceId;
    let referenceId = parseReferenceId(referenceIdText);
    if (referenceId === undefined) {
      r.error('reference-id', `must be 1-4 printable ASCII characters (e.g. "LOCL", "GPS") or an IPv4 address, got ${show(referenceIdText)}`);
      referenceId = 0;
    }
    result = { mode, localStratum, referenceId, referenceIdText };
  } else {
    for (const key of STATIC_ONLY) r.reject(key, 'only valid with mode = "static"');
    const address = r.listen('address', false, d.address) ?? { host: '127.0.0.1', port: 123, family: 'IPv4' as const };
    if (address.port === 0) r.error('address', 'port must not be 0');
    const pollIntervalS = r.integer('poll-interval-s', 1, 1024, d.pollIntervalS);
    result = { mode, address, pollIntervalS };
  }
  r.finish();
  return result;
}

const sameAddress = (a: ListenAddress, b: ListenAddress): boolean =>
  a.port !== 0 && a.port === b.port && a.host === b.host;

/**
 * Validates a parsed TOML document (plain objects/arrays as smol-toml returns them) and fills in defaults.
 * Returns every problem found, each starting with its key path.
 */
export function validateConfig(raw: unknown, options: ValidateOptions): ConfigResult {
  const errors: string[] = [];
  if (!isTable(raw)) return { ok: false, errors: ['(top level): expected a table'] };
  const top = new TableReader(raw, '', errors);

  // Roles (docs/fleet.md): no [[server]] = a KE-only node, no [[nts-ke-server]] = an NTP-only node.
  const serverTables = top.tables('server');
  const keTables = top.tables('nts-ke-server');
  const serverIsArray = !top.has('server') || Array.isArray(raw['server']);
  const keIsArray = !top.has('nts-ke-server') || Array.isArray(raw['nts-ke-server']);
  const hasPoolKe = top.has('pool-ke');
  if (serverTables.length === 0 && keTables.length === 0 && serverIsArray && keIsArray && !hasPoolKe) {
    errors.push('server: at least one [[server]] (NTP), [[nts-ke-server]] (NTS-KE) or [pool-ke] (pool front end) table is required');
  }
  const keOnly = serverTables.length === 0 && serverIsArray;
  const servers: NtpServerConfig[] = [];
  serverTables.forEach((t, i) => {
    const s = readServer(t, `server[${i}]`, errors);
    if (s !== undefined) servers.push(s);
  });

  const firstServerPort = serverTables.length > 0 && servers.length === serverTables.length ? servers[0]?.listen.port : undefined;
  const ntsKeServers: NtsKeServerConfig[] = [];
  keTables.forEach((t, i) => {
    const k = readNtsKeServer(t, `nts-ke-server[${i}]`, errors, options, firstServerPort, keOnly);
    if (k !== undefined) ntsKeServers.push(k);
  });

  const keyset = readKeyset(top.table('keyset'), errors, options);
  const observability = readObservability(top.table('observability'), errors, options);
  const workerPool = readWorkerPool(top.table('worker-pool'), errors, options);
  const timeSource = readTimeSource(top.table('time-source'), errors);
  const poolKe = hasPoolKe ? readPoolKe(top.table('pool-ke'), errors, options) : undefined;
  top.finish();

  // Cross-checks between sections (only meaningful once each listen parsed).
  if (errors.length === 0) {
    servers.forEach((s, i) => {
      const j = servers.findIndex((o) => sameAddress(o.listen, s.listen));
      if (j >= 0 && j < i) errors.push(`server[${i}].listen: same address as server[${j}].listen`);
    });
    ntsKeServers.forEach((k, i) => {
      const j = ntsKeServers.findIndex((o) => sameAddress(o.listen, k.listen));
      if (j >= 0 && j < i) errors.push(`nts-ke-server[${i}].listen: same address as nts-ke-server[${j}].listen`);
    });
    const m = observability.metricsListen;
    if (m !== undefined) {
      const j = ntsKeServers.findIndex((k) => sameAddress(k.listen, m));
      if (j >= 0) errors.push(`observability.metrics-listen: same TCP address as nts-ke-server[${j}].listen`);
      if (poolKe !== undefined && sameAddress(poolKe.listen, m)) errors.push('observability.metrics-listen: same TCP address as pool-ke.listen');
    }
    if (poolKe !== undefined) {
      const j = ntsKeServers.findIndex((k) => sameAddress(k.listen, poolKe.listen));
      if (j >= 0) errors.push(`pool-ke.listen: same address as nts-ke-server[${j}].listen`);
    }
  }

  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, config: { servers, ntsKeServers, keyset, observability, workerPool, timeSource, poolKe } };
}

/**
 * KE threads for one `[[nts-ke-server]]`: its `threads`, or when 0 one per CPU beyond the NTP threads
 * (`[worker-pool] threads`), at least 1.
 */
export function keThreadCount(ke: Pick<NtsKeServerConfig, 'threads'>, workerPool: Pick<WorkerPoolConfig, 'threads'>, cpuCount: number): number {
  if (ke.threads > 0) return ke.threads;
  return Math.max(1, Math.floor(cpuCount) - workerPool.threads);
}

/** The settings of a KE listener (`[[nts-ke-server]]`, `[pool-ke]`) a SIGHUP applies without a restart (config/reload.ts). */
export type KeRuntimeSettings = Pick<KeListenerConfig, 'clientRateLimit' | 'concurrentConnections' | 'concurrentConnectionsPerSource' | 'access'>;

/** What a node does (docs/fleet.md): both services, NTS-KE only (no `[[server]]`), or NTP only (no `[[nts-ke-server]]`). */
export type NodeRole = 'combined' | 'ke-only' | 'ntp-only';

/** The role a validated configuration gives this node. */
export function nodeRole(config: Config): NodeRole {
  if (config.servers.length === 0) return 'ke-only';
  if (config.ntsKeServers.length === 0) return 'ntp-only';
  return 'combined';
}
