/**
 * The `[pool-ke]` role: the NTS-KE front end of a pool (draft-ietf-ntp-nts-keyexchange-pool). It holds the
 * pool name's certificate and terminates each client's TLS 1.3 (ALPN `ntske/1`), then, per client:
 *  1. validates the request (RFC 8915 §4); a client's pool records are refused with Error 1;
 *  2. picks a healthy time source the client did not deny (NTP Server Deny), by weight;
 *  3. uses that source's cached capabilities (`capability-cache-s`), or asks for them;
 *  4. picks protocol and AEAD in the client's order, exports the client's keys from the client's TLS
 *     session at the length the source reported, and sends a fixed key request over a pooled keep-alive
 *     TLS connection to the source;
 *  5. relays the cookies with the source's Server record (its registered name when it sent none).
 * The upstream part has its own deadline (`upstream-timeout-ms`, at most 2.5 s). Sources that fail before
 * the client's keys were sent may be replaced by another; once the keys went out, never: a failure then is
 * Error 0xF003, so a client's keys reach one source only. Health checks (a capability query every
 * `health-check-interval-s`) take failing sources out and put them back when they answer.
 *
 * Runs on the main thread; a front end is a KE-only node in practice (no NTP to disturb).
 */
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import * as tls from 'node:tls';
import { KeErrorCode, NTS_EXPORTER_LABEL, NTSKE_ALPN, PoolKeErrorCode } from '../core/nts/ids.js';
import { encodeKeErrorResponse, validateKeRequest } from '../core/nts/ke-message.js';
import { scanKeMessage } from '../core/nts/ke-record.js';
import { ntpv4ExporterContexts } from '../core/nts/exporter.js';
import { encodeTokens } from '../core/pool/source.js';
import {
  buildCapabilityQuery,
  buildClientAnswer,
  buildFixedKeyRequest,
  buildNoCommonAnswer,
  chooseSource,
  negotiateAtSource,
  parseCapabilityAnswer,
  parseFixedKeyAnswer,
  type SourceCapabilities,
} from '../core/pool/front-end.js';
import { UpstreamPool, type UpstreamFailure } from './upstream.js';

/** How a client session at the front end ended; exactly one per connection. */
export const POOL_KE_OUTCOMES = [
  'success',
  'bad_request',
  'no_common_protocol',
  'no_common_aead',
  'no_such_server',
  'could_not_connect',
  'could_not_get_capabilities',
  'could_not_get_cookies',
  'timeout',
  'tls_error',
  'internal_error',
] as const;
/** One of POOL_KE_OUTCOMES. */
export type PoolKeOutcome = (typeof POOL_KE_OUTCOMES)[number];

/** Kinds of upstream exchange, for metrics. */
export const POOL_KE_UPSTREAM_KINDS = ['capabilities', 'cookies', 'health_check'] as const;
/** One of POOL_KE_UPSTREAM_KINDS. */
export type PoolKeUpstreamKind = (typeof POOL_KE_UPSTREAM_KINDS)[number];
/** Results of an upstream exchange: ok, a transport failure, or an answer we could not use. */
export type PoolKeUpstreamResult = 'ok' | UpstreamFailure | 'bad_answer';

/** One time source behind the front end. */
export interface PoolKeSourceOptions {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly tlsName: string;
  /** The pool's token for this source (secret). */
  readonly authenticationToken: string;
  readonly weight: number;
}

/** Everything the front end needs; the daemon maps `[pool-ke]` onto it. */
export interface PoolKeFrontEndOptions {
  readonly listen: { readonly host: string; readonly port: number };
  readonly certificateChainPem: string;
  readonly privateKeyPem: string;
  readonly keyExchangeTimeoutMs: number;
  readonly upstreamTimeoutMs: number;
  readonly concurrentConnections: number;
  readonly maxRequestBytes: number;
  readonly capabilityCacheS: number;
  readonly healthCheckIntervalS: number;
  readonly connectionsPerSource: number;
  /** PEM CAs for the sources' certificates; undefined = system CAs. */
  readonly upstreamCaPem: string | undefined;
  readonly sources: readonly PoolKeSourceOptions[];
  readonly logger: Logger;
  /** Called once per client session. */
  readonly onOutcome?: (outcome: PoolKeOutcome, durationS: number) => void;
  /** Called once per upstream exchange. */
  readonly onUpstream?: (source: string, kind: PoolKeUpstreamKind, result: PoolKeUpstreamResult) => void;
  /** Called when a source's health changes (and once at the first check). */
  readonly onHealth?: (source: string, healthy: boolean) => void;
  /** Uniform numbers in [0, 1) for the weighted choice (tests pin it); default: node:crypto. */
  readonly random?: () => number;
}

/** Sources tried per client before keys are sent (connect or capability failures only). */
const MAX_SOURCES_TRIED = 3;
/** Idle kept-alive connections to a source are closed after this long (below the source's ≤ 300 s timeout). */
const UPSTREAM_IDLE_MS = 60_000;

interface SourceState {
  readonly options: PoolKeSourceOptions;
  readonly token: Uint8Array;
  readonly pool: UpstreamPool;
  healthy: boolean;
  checked: boolean;
  capabilities: { readonly value: SourceCapabilities; readonly atMs: number } | undefined;
}

type CapabilityResult = { readonly ok: true; readonly capabilities: SourceCapabilities } | { readonly ok: false; readonly code: number };

function bufferView(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A pool's NTS-KE front end. */
export class PoolKeFrontEnd {
  readonly #o: PoolKeFrontEndOptions;
  readonly #sources: SourceState[];
  readonly #server: tls.Server;
  readonly #sockets = new Set<tls.TLSSocket>();
  #healthTimer: NodeJS.Timeout | undefined;
  #address: { address: string; port: number } | undefined;
  #stopped = false;

  /** Creates the front end; nothing is bound until start(). */
  constructor(options: PoolKeFrontEndOptions) {
    this.#o = options;
    const tokens = encodeTokens(options.sources.map((s) => s.authenticationToken));
    this.#sources = options.sources.map((s, i) => ({
      options: s,
      token: tokens[i] ?? new Uint8Array(0),
      pool: new UpstreamPool({
        host: s.host,
        port: s.port,
        tlsName: s.tlsName,
        caPem: options.upstreamCaPem,
        maxIdle: options.connectionsPerSource,
        idleMs: UPSTREAM_IDLE_MS,
      }),
      healthy: true,
      checked: false,
      capabilities: undefined,
    }));
    this.#server = tls.createServer({
      cert: options.certificateChainPem,
      key: options.privateKeyPem,
      minVersion: 'TLSv1.3',
      ALPNProtocols: [NTSKE_ALPN],
      handshakeTimeout: options.keyExchangeTimeoutMs,
      allowHalfOpen: true,
    });
    this.#server.maxConnections = options.concurrentConnections;
    this.#server.on('secureConnection', (socket) => this.#onClient(socket));
    this.#server.on('tlsClientError', () => this.#o.onOutcome?.('tls_error', 0));
  }

  /** The bound address (after start). */
  get address(): { address: string; port: number } | undefined {
    return this.#address;
  }

  /** Names and health of the sources, in configuration order. */
  health(): { readonly name: string; readonly healthy: boolean }[] {
    return this.#sources.map((s) => ({ name: s.options.name, healthy: s.healthy }));
  }

  /** Binds the listener and starts the health checks (the first one at once). */
  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.#server.once('error', onError);
      this.#server.listen(this.#o.listen.port, this.#o.listen.host, () => {
        this.#server.removeListener('error', onError);
        resolve();
      });
    });
    this.#server.on('error', (error) => this.#o.logger.error({ err: error }, 'pool front end listener error'));
    const a = this.#server.address();
    if (a !== null && typeof a === 'object') this.#address = { address: a.address, port: a.port };
    void this.#healthCheckAll();
    this.#healthTimer = setInterval(() => void this.#healthCheckAll(), this.#o.healthCheckIntervalS * 1000);
    this.#healthTimer.unref();
  }

  /** Stops accepting, closes client and upstream connections. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#healthTimer !== undefined) clearInterval(this.#healthTimer);
    for (const s of this.#sources) s.pool.close();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const socket of this.#sockets) socket.destroy();
    await closed;
  }

  /** Runs one round of health checks now (also what the timer does). */
  async #healthCheckAll(): Promise<void> {
    await Promise.all(this.#sources.map((s) => this.#queryCapabilities(s, this.#o.upstreamTimeoutMs, 'health_check')));
  }

  #setHealth(s: SourceState, healthy: boolean): void {
    if (s.healthy !== healthy || !s.checked) {
      s.healthy = healthy;
      s.checked = true;
      this.#o.onHealth?.(s.options.name, healthy);
      if (!healthy) this.#o.logger.warn({ source: s.options.name }, 'pool time source failing: taken out');
      else this.#o.logger.info({ source: s.options.name }, 'pool time source healthy');
    }
  }

  async #queryCapabilities(s: SourceState, timeoutMs: number, kind: PoolKeUpstreamKind): Promise<CapabilityResult> {
    if (this.#stopped) return { ok: false, code: PoolKeErrorCode.couldNotConnect };
    const result = await s.pool.exchange(buildCapabilityQuery(s.token, true), timeoutMs);
    if (!result.ok) {
      this.#o.onUpstream?.(s.options.name, kind, result.failure);
      this.#setHealth(s, false);
      return { ok: false, code: result.failure === 'connect' ? PoolKeErrorCode.couldNotConnect : PoolKeErrorCode.couldNotGetCapabilities };
    }
    const parsed = parseCapabilityAnswer(result.answer);
    if (!parsed.ok) {
      this.#o.onUpstream?.(s.options.name, kind, 'bad_answer');
      this.#setHealth(s, false);
      return { ok: false, code: PoolKeErrorCode.couldNotGetCapabilities };
    }
    this.#o.onUpstream?.(s.options.name, kind, 'ok');
    s.capabilities = { value: parsed.capabilities, atMs: Date.now() };
    this.#setHealth(s, true);
    return { ok: true, capabilities: parsed.capabilities };
  }

  async #capabilities(s: SourceState, timeoutMs: number): Promise<CapabilityResult> {
    const cached = s.capabilities;
    if (cached !== undefined && Date.now() - cached.atMs < this.#o.capabilityCacheS * 1000) return { ok: true, capabilities: cached.value };
    return this.#queryCapabilities(s, timeoutMs, 'capabilities');
  }

  #onClient(socket: tls.TLSSocket): void {
    const startedMs = Date.now();
    this.#sockets.add(socket);
    let settled = false;
    const settle = (outcome: PoolKeOutcome): void => {
      if (settled) return;
      settled = true;
      this.#o.onOutcome?.(outcome, (Date.now() - startedMs) / 1000);
    };
    const respond = (bytes: Uint8Array, outcome: PoolKeOutcome): void => {
      settle(outcome);
      clearTimeout(deadline);
      if (socket.writable) {
        socket.write(bytes);
        socket.end();
      }
    };
    const deadline = setTimeout(() => {
      if (!settled && socket.writable) respond(encodeKeErrorResponse(KeErrorCode.badRequest), 'timeout');
      setTimeout(() => socket.destroy(), 250).unref();
    }, this.#o.keyExchangeTimeoutMs);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(deadline);
      this.#sockets.delete(socket);
      settle('tls_error');
    });
    // RFC 8915 §3: ALPN ntske/1 is mandatory; Node completes a handshake without ALPN, so check.
    if (socket.alpnProtocol !== NTSKE_ALPN) {
      settle('tls_error');
      socket.destroy();
      return;
    }
    const max = this.#o.maxRequestBytes;
    let buffer: Buffer = Buffer.alloc(0);
    let resume = 0;
    let answered = false;
    socket.on('data', (chunk: Buffer) => {
      if (answered) return;
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      const view = buffer.length > max ? buffer.subarray(0, max) : buffer;
      const scan = scanKeMessage(view, { fromOffset: resume, maxLength: max });
      if (scan.status === 'incomplete') {
        resume = scan.resumeOffset;
        if (buffer.length >= max) {
          answered = true;
          respond(encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request');
        }
        return;
      }
      answered = true;
      if (scan.status === 'malformed') {
        respond(encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request');
        return;
      }
      // Everything received, so octets after End of Message are refused (RFC 8915 §4.1.1).
      void this.#serve(socket, new Uint8Array(buffer), respond).catch((error: unknown) => {
        this.#o.logger.error({ err: error }, 'pool front end: internal error');
        respond(encodeKeErrorResponse(KeErrorCode.internalServerError), 'internal_error');
      });
    });
    socket.on('end', () => {
      if (!answered) {
        answered = true;
        respond(encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request');
      }
    });
  }

  async #serve(socket: tls.TLSSocket, request: Uint8Array, respond: (bytes: Uint8Array, outcome: PoolKeOutcome) => void): Promise<void> {
    const validation = validateKeRequest(request);
    if (!validation.ok) {
      respond(encodeKeErrorResponse(validation.errorCode), 'bad_request');
      return;
    }
    const req = validation.request;
    // A client is not a front end: pool records that ask for something are refused.
    if (req.pool !== undefined) {
      respond(encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request');
      return;
    }
    const upstreamDeadlineMs = Date.now() + this.#o.upstreamTimeoutMs;
    const remaining = (): number => upstreamDeadlineMs - Date.now();
    const tried: number[] = [];
    let lastCode: number = PoolKeErrorCode.noSuchServer;
    let chosen: { source: SourceState; capabilities: SourceCapabilities } | undefined;
    // Before any key is sent, a failing source may be replaced by another.
    while (chosen === undefined && tried.length < MAX_SOURCES_TRIED && remaining() > 0) {
      const candidates = this.#sources.map((s) => ({ name: s.options.name, weight: s.options.weight, healthy: s.healthy }));
      const index = chooseSource(candidates, req.deniedServers, this.#o.random?.() ?? randomInt(0, 2 ** 32) / 2 ** 32, tried);
      if (index === undefined) break;
      tried.push(index);
      const source = this.#sources[index];
      if (source === undefined) break;
      const caps = await this.#capabilities(source, remaining());
      if (caps.ok) chosen = { source, capabilities: caps.capabilities };
      else lastCode = caps.code;
    }
    if (chosen === undefined) {
      const code = tried.length === 0 ? PoolKeErrorCode.noSuchServer : lastCode;
      respond(encodeKeErrorResponse(code), outcomeOf(code));
      return;
    }
    const { source, capabilities } = chosen;
    const negotiated = negotiateAtSource(req, capabilities);
    if (!negotiated.ok) {
      respond(buildNoCommonAnswer(negotiated.reason), negotiated.reason);
      return;
    }
    const { aeadId, keyLength } = negotiated;
    const echoCompliant = req.compliantGcmSivExporter && aeadId === 30;
    const contexts = ntpv4ExporterContexts(aeadId, echoCompliant);
    // RFC 8915 §4.3, §5.1: the client's keys, from the client's TLS session, at the source's key length.
    const c2s = socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, bufferView(contexts.c2s));
    const s2c = socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, bufferView(contexts.s2c));
    const fixedKey = buildFixedKeyRequest(source.token, c2s, s2c, aeadId, true);
    c2s.fill(0);
    s2c.fill(0);
    // From here on the keys are out: whatever happens, no other source is asked for this client.
    const result = await source.pool.exchange(fixedKey, Math.max(1, remaining()));
    fixedKey.fill(0);
    if (!result.ok) {
      this.#o.onUpstream?.(source.options.name, 'cookies', result.failure);
      if (result.failure === 'connect') this.#setHealth(source, false);
      const code = result.failure === 'connect' ? PoolKeErrorCode.couldNotConnect : PoolKeErrorCode.couldNotGetCookies;
      respond(encodeKeErrorResponse(code), outcomeOf(code));
      return;
    }
    const answer = parseFixedKeyAnswer(result.answer, aeadId);
    if (!answer.ok) {
      this.#o.onUpstream?.(source.options.name, 'cookies', 'bad_answer');
      respond(encodeKeErrorResponse(PoolKeErrorCode.couldNotGetCookies), 'could_not_get_cookies');
      return;
    }
    this.#o.onUpstream?.(source.options.name, 'cookies', 'ok');
    respond(buildClientAnswer(answer, aeadId, echoCompliant, source.options.name), 'success');
  }
}

function outcomeOf(code: number): PoolKeOutcome {
  switch (code) {
    case PoolKeErrorCode.noSuchServer:
      return 'no_such_server';
    case PoolKeErrorCode.couldNotConnect:
      return 'could_not_connect';
    case PoolKeErrorCode.couldNotGetCapabilities:
      return 'could_not_get_capabilities';
    case PoolKeErrorCode.couldNotGetCookies:
      return 'could_not_get_cookies';
    default:
      return 'internal_error';
  }
}
