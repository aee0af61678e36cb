/**
 * The `[pool-ke]` role's request handler: the NTS-KE front end of a pool (draft-ietf-ntp-nts-keyexchange-pool).
 * The KE listener (nts-ke: threads, PROXY v2, caps, access list, certificate reload, TLS 1.3 with ALPN
 * `ntske/1`, one deadline per session) hands it each client's complete request; per client it:
 *  1. validates the request (RFC 8915 §4); a client's pool records are refused with Error 1;
 *  2. picks a healthy source the client did not deny (NTP Server Deny), by weight;
 *  3. uses that source's cached capabilities (`capability-cache-s`), or asks for them;
 *  4. picks protocol and AEAD in the client's order, exports the client's keys from the client's TLS
 *     session at the length the source reported, and sends a fixed key request over a pooled keep-alive
 *     TLS connection to the source;
 *  5. relays the cookies with the source's Server record (its registered name when it sent none).
 * The upstream part has its own deadline (`upstream-timeout-ms`, at most 2.5 s). Sources that fail before
 * the client's keys were sent may be replaced by another; once the keys went out, never: a failure then is
 * Error 0xF003, so a client's keys reach one source only.
 *
 * Every KE thread of the listener loads this module by URL (core/ke-request-handler.ts) and keeps its own
 * upstream connections, capability cache and source health, and runs its own health checks (a capability
 * query per source every `health-check-interval-s`: T threads, T queries, a bounded cost). Lines go through
 * the thread's `log`, counts into the report its stats carry (nts-pool/service.ts records them).
 */
import { randomInt } from 'node:crypto';
import type { KeSessionOutcomeLabel } from '../core/ke-handler.js';
import type { KeHandlerAnswer, KeHandlerEnv, KeHandlerReport, KeHandlerSample, KeRequestHandler, KeyingMaterialExporter } from '../core/ke-request-handler.js';
import { KeErrorCode, PoolKeErrorCode } from '../core/nts/ids.js';
import { encodeKeErrorResponse, validateKeRequest, type KeRequest } from '../core/nts/ke-message.js';
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
import type { PoolKeSourceConfig } from '../config/schema.js';

/** How a client session at the front end ended (one per connection): a KE outcome, or one of its own errors 0xF000–0xF003. */
export type PoolKeOutcome = KeSessionOutcomeLabel | 'no_such_server' | 'could_not_connect' | 'could_not_get_capabilities' | 'could_not_get_cookies';
/** Kinds of upstream exchange, for metrics. */
export type PoolKeUpstreamKind = 'capabilities' | 'cookies' | 'health_check';
/** Results of an upstream exchange: ok, a transport failure, or an answer we could not use. */
export type PoolKeUpstreamResult = 'ok' | UpstreamFailure | 'bad_answer';

/**
 * Series of the samples in a front end's report (nts-pool/service.ts maps them onto obs/pool-metrics.ts):
 * counters `session` {outcome} and `upstream` {source, kind, result}; gauge `health` {source}, 1 or 0, sent
 * after the first check and when it changes.
 */
export type PoolKeSeries = 'session' | 'upstream' | 'health';

/** One source behind the front end, as `[[pool-ke.source]]` configures it (the token is secret). */
export type PoolKeSourceOptions = PoolKeSourceConfig;

/** The handler's options (KeHandlerSpec.options: plain data, cloned to each KE thread). */
export interface PoolFrontEndOptions {
  readonly upstreamTimeoutMs: number;
  readonly capabilityCacheS: number;
  readonly healthCheckIntervalS: number;
  readonly connectionsPerSource: number;
  /** PEM CAs for the sources' certificates; undefined = system CAs. */
  readonly upstreamCaPem: string | undefined;
  readonly sources: readonly PoolKeSourceOptions[];
  /** Tests: this number in [0, 1) for every weighted choice; default: node:crypto. */
  readonly fixedRandom?: number | undefined;
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

/** The KE thread's factory (core/ke-request-handler.ts KE_HANDLER_FACTORY_EXPORT). */
export function createKeRequestHandler(options: unknown, env: KeHandlerEnv): KeRequestHandler {
  return new PoolFrontEnd(options as PoolFrontEndOptions, env);
}

/** An answer; in ntsd_ke_sessions_total the front end's own errors (0xF000–0xF003) count as internal_error. */
function answer(response: Uint8Array, detail: PoolKeOutcome): KeHandlerAnswer {
  const outcome = detail === 'no_such_server' || detail.startsWith('could_not_') ? 'internal_error' : (detail as KeSessionOutcomeLabel);
  return { response, outcome, cookiesIssued: 0, detail };
}

/** A pool's NTS-KE front end on one KE thread. */
export class PoolFrontEnd implements KeRequestHandler {
  readonly #o: PoolFrontEndOptions;
  readonly #env: KeHandlerEnv;
  readonly #sources: SourceState[];
  readonly #healthTimer: NodeJS.Timeout;
  /** Counts since the last report, by sample key. */
  readonly #counts = new Map<string, KeHandlerSample>();
  /** Health values to report (changed since the last report). */
  readonly #health = new Map<string, boolean>();
  #closed = false;

  /** Creates the sources' state and starts the health checks (the first one at once). */
  constructor(options: PoolFrontEndOptions, env: KeHandlerEnv) {
    this.#o = options;
    this.#env = env;
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
    void this.#healthCheckAll();
    this.#healthTimer = setInterval(() => void this.#healthCheckAll(), options.healthCheckIntervalS * 1000);
    this.#healthTimer.unref();
  }

  /** Answers one client (see the module comment). */
  answer(request: Uint8Array, exportKeys: KeyingMaterialExporter): Promise<KeHandlerAnswer> {
    // The request is a view into the session's buffer: decode it now, before anything is awaited.
    const validation = validateKeRequest(request);
    if (!validation.ok) return Promise.resolve(answer(encodeKeErrorResponse(validation.errorCode), 'bad_request'));
    // A client is not a front end: pool records that ask for something are refused.
    if (validation.request.pool !== undefined) return Promise.resolve(answer(encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request'));
    return this.#serve(validation.request, exportKeys);
  }

  /** Counts the session once it has ended. */
  settled(outcome: KeSessionOutcomeLabel, detail: string | undefined): void {
    this.#count('session', { outcome: detail ?? outcome });
  }

  /** Counts and health changes since the last call. */
  takeReport(): KeHandlerReport | undefined {
    if (this.#counts.size === 0 && this.#health.size === 0) return undefined;
    const samples: KeHandlerSample[] = [...this.#counts.values()];
    for (const [source, healthy] of this.#health) samples.push({ series: 'health' satisfies PoolKeSeries, labels: { source }, value: healthy ? 1 : 0 });
    this.#counts.clear();
    this.#health.clear();
    return samples;
  }

  /** Stops the health checks and closes every upstream connection. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#healthTimer);
    for (const s of this.#sources) s.pool.close();
  }

  #count(series: PoolKeSeries, labels: Readonly<Record<string, string>>): void {
    const key = `${series}\u0000${Object.values(labels).join('\u0000')}`;
    const sample = this.#counts.get(key);
    this.#counts.set(key, { series, labels, value: (sample?.value ?? 0) + 1 });
  }

  #upstream(s: SourceState, kind: PoolKeUpstreamKind, result: PoolKeUpstreamResult): void {
    this.#count('upstream', { source: s.options.name, kind, result });
  }

  /** Runs one round of health checks now (also what the timer does). */
  async #healthCheckAll(): Promise<void> {
    await Promise.all(this.#sources.map((s) => this.#queryCapabilities(s, this.#o.upstreamTimeoutMs, 'health_check')));
  }

  #setHealth(s: SourceState, healthy: boolean): void {
    if (s.healthy === healthy && s.checked) return;
    s.healthy = healthy;
    s.checked = true;
    this.#health.set(s.options.name, healthy);
    if (!healthy) this.#env.log('warn', 'pool source failing: taken out', { source: s.options.name, thread: this.#env.threadIndex });
    else this.#env.log('info', 'pool source healthy', { source: s.options.name, thread: this.#env.threadIndex });
  }

  async #queryCapabilities(s: SourceState, timeoutMs: number, kind: PoolKeUpstreamKind): Promise<CapabilityResult> {
    if (this.#closed) return { ok: false, code: PoolKeErrorCode.couldNotConnect };
    const result = await s.pool.exchange(buildCapabilityQuery(s.token, true), timeoutMs);
    if (!result.ok) {
      this.#upstream(s, kind, result.failure);
      this.#setHealth(s, false);
      return { ok: false, code: result.failure === 'connect' ? PoolKeErrorCode.couldNotConnect : PoolKeErrorCode.couldNotGetCapabilities };
    }
    const parsed = parseCapabilityAnswer(result.answer);
    if (!parsed.ok) {
      this.#upstream(s, kind, 'bad_answer');
      this.#setHealth(s, false);
      return { ok: false, code: PoolKeErrorCode.couldNotGetCapabilities };
    }
    this.#upstream(s, kind, 'ok');
    s.capabilities = { value: parsed.capabilities, atMs: Date.now() };
    this.#setHealth(s, true);
    return { ok: true, capabilities: parsed.capabilities };
  }

  async #capabilities(s: SourceState, timeoutMs: number): Promise<CapabilityResult> {
    const cached = s.capabilities;
    if (cached !== undefined && Date.now() - cached.atMs < this.#o.capabilityCacheS * 1000) return { ok: true, capabilities: cached.value };
    return this.#queryCapabilities(s, timeoutMs, 'capabilities');
  }

  async #serve(req: KeRequest, exportKeys: KeyingMaterialExporter): Promise<KeHandlerAnswer> {
    const upstreamDeadlineMs = Date.now() + this.#o.upstreamTimeoutMs;
    const remaining = (): number => upstreamDeadlineMs - Date.now();
    const tried: number[] = [];
    let lastCode: number = PoolKeErrorCode.noSuchServer;
    let chosen: { source: SourceState; capabilities: SourceCapabilities } | undefined;
    // Before any key is sent, a failing source may be replaced by another.
    while (chosen === undefined && tried.length < MAX_SOURCES_TRIED && remaining() > 0) {
      const candidates = this.#sources.map((s) => ({ name: s.options.name, weight: s.options.weight, healthy: s.healthy }));
      const index = chooseSource(candidates, req.deniedServers, this.#o.fixedRandom ?? randomInt(0, 2 ** 32) / 2 ** 32, tried);
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
      return answer(encodeKeErrorResponse(code), outcomeOf(code));
    }
    const { source, capabilities } = chosen;
    const negotiated = negotiateAtSource(req, capabilities);
    if (!negotiated.ok) return answer(buildNoCommonAnswer(negotiated.reason), negotiated.reason);
    const { aeadId, keyLength } = negotiated;
    const echoCompliant = req.compliantGcmSivExporter && aeadId === 30;
    const contexts = ntpv4ExporterContexts(aeadId, echoCompliant);
    // RFC 8915 §4.3, §5.1: the client's keys, from the client's TLS session, at the source's key length.
    const c2s = exportKeys(keyLength, contexts.c2s);
    const s2c = exportKeys(keyLength, contexts.s2c);
    const fixedKey = buildFixedKeyRequest(source.token, c2s, s2c, aeadId, true);
    c2s.fill(0);
    s2c.fill(0);
    // From here on the keys are out: whatever happens, no other source is asked for this client.
    const result = await source.pool.exchange(fixedKey, Math.max(1, remaining()));
    fixedKey.fill(0);
    if (!result.ok) {
      this.#upstream(source, 'cookies', result.failure);
      if (result.failure === 'connect') this.#setHealth(source, false);
      const code = result.failure === 'connect' ? PoolKeErrorCode.couldNotConnect : PoolKeErrorCode.couldNotGetCookies;
      return answer(encodeKeErrorResponse(code), outcomeOf(code));
    }
    const parsed = parseFixedKeyAnswer(result.answer, aeadId);
    if (!parsed.ok) {
      this.#upstream(source, 'cookies', 'bad_answer');
      return answer(encodeKeErrorResponse(PoolKeErrorCode.couldNotGetCookies), 'could_not_get_cookies');
    }
    this.#upstream(source, 'cookies', 'ok');
    // The source minted these cookies (and counts them); the front end only relays them: cookiesIssued 0.
    return answer(buildClientAnswer(parsed, aeadId, echoCompliant, source.options.name), 'success');
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
