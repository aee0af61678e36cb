/**
 * One NTS-KE connection on a KE thread, from the accepted TCP socket to its single outcome
 * (RFC 8915 §4): TLS 1.3 with ALPN `ntske/1` → read records up to `maxRequestBytes` → the answer → one
 * write → close_notify. One deadline covers the handshake, the request and the answer. The session never
 * logs per connection; it reports its outcome.
 *
 * The answer is handleKeRequest's, called synchronously (no promise on that path), or with a `handler`
 * (the `[pool-ke]` front end, core/ke-request-handler.ts) that handler's promise, awaited in stage `answering`.
 */
import type * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import * as tls from 'node:tls';
import type { FillRandom } from '../core/bytes.js';
import { handleKeRequest, type KeOutcome, type KePolicy, type KeRequestKind } from '../core/ke-handler.js';
import type { ExportKeys } from '../core/nts/exporter.js';
import { KeErrorCode, NTS_EXPORTER_LABEL, NTSKE_ALPN } from '../core/nts/ids.js';
import { encodeKeErrorResponse } from '../core/nts/ke-message.js';
import { scanKeMessage } from '../core/nts/ke-record.js';
import type { Keyset } from '../core/nts/keyset.js';
import type { KeHandlerAnswer, KeLogLevel, KeRequestHandler } from '../core/ke-request-handler.js';
import { errorText, type KeSessionOutcome } from './messages.js';

/**
 * NTS pools (docs/pools.md): the keep-alive settings and the long-lived slots shared by every KE thread
 * of the listener (`longlived-connections`).
 */
export interface KeepAliveSlots {
  readonly idleTimeoutMs: number;
  readonly maxAgeMs: number;
  /** Takes a slot if one is free. */
  tryAcquire(): boolean;
  /** Gives a slot back. */
  release(): void;
}

/** What a session needs from its thread: settings, the current TLS context and keyset, and where to report. */
export interface SessionContext {
  /** NTS pools: keep-alive for authenticated front ends; undefined = never keep a connection. */
  readonly keepAlive?: KeepAliveSlots | undefined;
  /**
   * NTS pools: a support or fixed key request was answered. `extraCookies` counts cookies not reported
   * through `settled` (answers after the first on a kept connection).
   */
  poolAnswered?(kind: Exclude<KeRequestKind, 'ordinary'>, outcome: KeSessionOutcome, extraCookies: number): void;
  /** A response agreed on this AEAD (an ordinary session's or a pool's fixed key request). */
  negotiated?(aeadId: number): void;
  /** The listener's own request handler (docs/pools.md: the front end); undefined = the ordinary KE answer. */
  readonly handler?: KeRequestHandler | undefined;
  readonly keyExchangeTimeoutMs: number;
  readonly maxRequestBytes: number;
  readonly policy: KePolicy;
  readonly fillRandom: FillRandom;
  /** The TLS context for new handshakes (swapped on a certificate reload). */
  secureContext(): tls.SecureContext;
  /** The keyset snapshot to seal cookies under; undefined when none decoded. */
  keyset(): Keyset | undefined;
  log(level: KeLogLevel, msg: string, fields?: Readonly<Record<string, string | number>>): void;
  /** The session's single outcome, its duration (accept → outcome), and the handler's `detail` when its answer settled it. */
  settled(session: KeSession, outcome: KeSessionOutcome, durationS: number, cookiesIssued: number, detail: string | undefined): void;
  /** The session moved forward (ClientHello processed, handshake done, request bytes): see `stage`. */
  progressed(session: KeSession): void;
  /** The socket has closed: the session's slot is free. */
  closed(session: KeSession): void;
}

/** After a deadline-triggered Error 1, time allowed for it to flush before the socket is destroyed. */
const DEADLINE_LINGER_MS = 250;

/** Socket error codes that mean the peer went away (not a TLS failure). */
const PEER_GONE_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ETIMEDOUT']);

/**
 * How far a session without an outcome has got, for eviction (nts-ke/listener.ts): `idle` = accepted, no
 * ClientHello processed yet; `hello` = ClientHello processed, our flight sent, waiting for the client's
 * Finished; `waiting` = TLS done, waiting for (the rest of) the request; `answering` = the request is
 * complete and the handler is working on it (never evicted: the client did its part).
 */
export type KeSessionStage = 'idle' | 'hello' | 'waiting' | 'answering';

/** A Buffer over the same memory (no copy). */
function bufferView(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
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

/** One accepted connection; construct it after admission, it runs by itself until `closed`. */
export class KeSession {
  readonly tlsSocket: tls.TLSSocket;
  /** performance.now() at accept. */
  readonly acceptedAtMs: number;
  /** True once the TLS handshake completed. */
  secure = false;
  /** See KeSessionStage. */
  stage: KeSessionStage = 'idle';
  /** performance.now() of the last progress (accept, ClientHello, handshake done, request octets). */
  lastProgressMs: number;
  /** Set exactly once. */
  outcome: KeSessionOutcome | undefined;
  readonly #ctx: SessionContext;
  #deadline: NodeJS.Timeout | undefined;
  #buffer: Uint8Array | undefined;
  #length = 0;
  #scanOffset = 0;
  #discarded = 0;
  #tlsFailed = false;
  /** NTS pools: an answer carried Keep Alive; this session holds a long-lived slot until it closes. */
  #kept = false;
  /** This session holds one of the listener's long-lived slots (given back on close). */
  #holdsSlot = false;
  /** Idle (and maximum age) timer of a kept connection. */
  #idleTimer: NodeJS.Timeout | undefined;
  /** A handler is working on the request: the data and end events wait for it. */
  #answering = false;
  /** The handler's own outcome of the answer that settled the session, for `settled`. */
  #detail: string | undefined;

  /**
   * Wraps the accepted socket in TLS and starts the session deadline (counted from `acceptedAtMs`).
   * `secureContext` overrides ctx.secureContext() (a listener with several certificates picked it by name).
   */
  constructor(raw: net.Socket, ctx: SessionContext, acceptedAtMs: number, secureContext?: tls.SecureContext) {
    this.#ctx = ctx;
    this.acceptedAtMs = acceptedAtMs;
    this.lastProgressMs = acceptedAtMs;
    raw.setNoDelay(true);
    // We wrap the accepted socket ourselves instead of using tls.Server: tls.Server hides the TLSSocket
    // until the handshake ends, and the session deadline must be able to destroy a stalled handshake.
    // Consequences: handshake completion is the TLSSocket's 'secure' event (what tls.Server itself
    // listens to), and a certificate reload swaps the context (always built with minVersion TLSv1.3)
    // for new connections instead of calling server.setSecureContext.
    // allowHalfOpen (a net.Socket option TLSSocket passes on, missing from its typings): a client that
    // half-closes after a partial request still gets its Error record.
    //
    // ALPN through ALPNCallback rather than ALPNProtocols: OpenSSL calls it while it processes the
    // ClientHello, which is how the session learns that the client has spoken (stage `hello`). A client
    // that offers ALPN without ntske/1 gets the no_application_protocol alert (RFC 7301 §3.2), as before.
    const tlsOptions: tls.TLSSocketOptions & { readonly allowHalfOpen: boolean } = {
      isServer: true,
      secureContext: secureContext ?? ctx.secureContext(),
      ALPNCallback: ({ protocols }) => {
        this.#advance('hello');
        return protocols.includes(NTSKE_ALPN) ? NTSKE_ALPN : undefined;
      },
      requestCert: false,
      allowHalfOpen: true,
    };
    const socket = new tls.TLSSocket(raw, tlsOptions);
    this.tlsSocket = socket;
    this.#deadline = setTimeout(() => this.#onDeadline(), Math.max(1, ctx.keyExchangeTimeoutMs - (performance.now() - acceptedAtMs)));
    // Handshake and transport errors end in 'close'; remember whether TLS itself failed.
    socket.on('error', (error: Error & { code?: unknown }) => {
      if (!PEER_GONE_CODES.has(String(error.code))) this.#tlsFailed = true;
    });
    socket.on('secure', () => this.#onSecure());
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#onEnd());
    socket.on('close', () => this.#onClose());
  }

  /**
   * Closes the session at once to make room for a newcomer (the listener picks the session that has gone
   * longest without progress). Counted as `evicted`.
   */
  evict(): void {
    this.#settle('evicted', 0);
    this.tlsSocket.destroy();
  }

  #onSecure(): void {
    this.secure = true;
    this.#advance('waiting');
    // RFC 8915 §3/§4: the client MUST offer ntske/1. Node completes a handshake without ALPN, so check.
    if (this.tlsSocket.alpnProtocol !== NTSKE_ALPN) {
      this.#settle('tls_error', 0);
      this.tlsSocket.end();
    }
  }

  #onData(chunk: Buffer): void {
    const max = this.#ctx.maxRequestBytes;
    if (this.#kept) this.#armIdle(); // a kept connection is busy again: its idle clock restarts
    if ((this.outcome !== undefined && !this.#kept) || this.#answering) {
      // Anything after the request is ignored; a peer that keeps streaming is cut off.
      this.#discarded += chunk.length;
      if (this.#discarded > max) this.tlsSocket.destroy();
      return;
    }
    this.#advance('waiting');
    if (this.#length === 0) {
      // Usual case: the whole request is in the first TLS record. Parse it in place, no buffer or copy.
      const view = chunk.length > max ? chunk.subarray(0, max) : chunk;
      const first = scanKeMessage(view, { fromOffset: 0, maxLength: max });
      if (first.status === 'complete') {
        this.#answer(view.subarray(0, first.length));
        return;
      }
      // Otherwise the buffered path below rescans it (cheap) and decides.
    }
    const buffer = (this.#buffer ??= new Uint8Array(max));
    const take = Math.min(max - this.#length, chunk.length);
    buffer.set(chunk.subarray(0, take), this.#length);
    this.#length += take;
    const scan = scanKeMessage(buffer.subarray(0, this.#length), { fromOffset: this.#scanOffset, maxLength: max });
    switch (scan.status) {
      case 'incomplete':
        this.#scanOffset = scan.resumeOffset;
        if (this.#length >= max) this.#respond(encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request', 0);
        return;
      case 'malformed':
        // RFC 8915 §4.1.3: a request we will not accept (here: over the size cap) is a Bad Request.
        this.#respond(encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request', 0);
        return;
      case 'complete':
        this.#answer(buffer.subarray(0, scan.length));
        return;
    }
  }

  #answer(request: Uint8Array): void {
    if (this.#ctx.handler !== undefined) {
      this.#answerByHandler(this.#ctx.handler, request);
      return;
    }
    const keyset = this.#ctx.keyset();
    if (keyset === undefined) {
      this.#ctx.log('error', 'no keyset available for NTS-KE');
      this.#respond(encodeKeErrorResponse(KeErrorCode.internalServerError), 'internal_error', 0);
      return;
    }
    const socket = this.tlsSocket;
    const exported: Uint8Array[] = [];
    // RFC 8915 §4.3, §5.1: one exporter call per direction, each with its own 5-octet context.
    const exportKeys: ExportKeys = (c2sContext, s2cContext, keyLength) => {
      const c2s = socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, bufferView(c2sContext));
      const s2c = socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, bufferView(s2cContext));
      exported.push(c2s, s2c);
      return { c2s, s2c };
    };
    // NTS pools: a fresh connection reserves a long-lived slot for the handler to grant (given back unless
    // granted); a kept one may stay kept until its maximum age.
    const slots = this.#ctx.keepAlive;
    const kept = this.#kept;
    const reserved = !kept && slots !== undefined && slots.tryAcquire();
    const keepAliveAvailable = kept ? slots !== undefined && performance.now() - this.acceptedAtMs < slots.maxAgeMs : reserved;
    try {
      const result = handleKeRequest(request, exportKeys, keyset, this.#ctx.policy, this.#ctx.fillRandom, { kept, keepAliveAvailable });
      if (reserved && !result.keepAlive) slots.release();
      if (result.outcome === 'internal_error') {
        this.#ctx.log('error', 'NTS-KE internal error', { error: errorText(result.internalError) });
      }
      const outcome = sessionOutcome(result.outcome);
      if (result.aeadId !== undefined && result.outcome === 'success') this.#ctx.negotiated?.(result.aeadId);
      if (result.requestKind !== 'ordinary') this.#ctx.poolAnswered?.(result.requestKind, outcome, kept ? result.cookiesIssued : 0);
      if (result.keepAlive) {
        this.#keep(result.response, outcome, result.cookiesIssued);
        return;
      }
      this.#respond(result.response, outcome, result.cookiesIssued);
    } catch (error: unknown) {
      if (reserved) slots.release();
      this.#ctx.log('error', 'NTS-KE handler threw', { error: errorText(error) });
      this.#respond(encodeKeErrorResponse(KeErrorCode.internalServerError), 'internal_error', 0);
    } finally {
      for (const key of exported) key.fill(0); // best effort: the cookies now carry the keys
    }
  }

  /** The listener's handler answers (asynchronously); the session deadline still applies meanwhile. */
  #answerByHandler(handler: KeRequestHandler, request: Uint8Array): void {
    this.#advance('answering');
    this.#answering = true;
    const exported: Uint8Array[] = [];
    const exportKeys = (length: number, context: Uint8Array): Uint8Array => {
      const key = this.tlsSocket.exportKeyingMaterial(length, NTS_EXPORTER_LABEL, bufferView(context));
      exported.push(key);
      return key;
    };
    const done = (answer: KeHandlerAnswer): void => {
      for (const key of exported) key.fill(0); // best effort, as on the ordinary path
      this.#answering = false;
      if (this.outcome !== undefined) return; // the deadline (or the client) ended the session first
      this.#detail = answer.detail;
      this.#respond(answer.response, answer.outcome, answer.cookiesIssued);
    };
    const failed = (error: unknown): void => {
      this.#ctx.log('error', 'NTS-KE request handler failed', { error: errorText(error) });
      done({ response: encodeKeErrorResponse(KeErrorCode.internalServerError), outcome: 'internal_error', cookiesIssued: 0, detail: 'internal_error' });
    };
    try {
      handler.answer(request, exportKeys).then(done, failed);
    } catch (error: unknown) {
      failed(error);
    }
  }

  /**
   * NTS pools: writes an answer that carries Keep Alive and keeps the connection for the next request
   * (the first answer settles the session; later ones are counted by poolAnswered).
   */
  #keep(response: Uint8Array, outcome: KeSessionOutcome, cookiesIssued: number): void {
    this.#settle(outcome, cookiesIssued);
    this.#kept = true;
    this.#holdsSlot = true;
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    this.#deadline = undefined;
    this.#length = 0;
    this.#scanOffset = 0;
    const socket = this.tlsSocket;
    if (!socket.writable) return;
    socket.write(response);
    this.#armIdle();
  }

  /** (Re)starts the kept connection's timer: the idle timeout, cut short by the maximum age. */
  #armIdle(): void {
    const slots = this.#ctx.keepAlive;
    if (slots === undefined) return;
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    const ageLeftMs = slots.maxAgeMs - (performance.now() - this.acceptedAtMs);
    this.#idleTimer = setTimeout(() => this.#onIdle(), Math.max(1, Math.min(slots.idleTimeoutMs, ageLeftMs)));
  }

  #onIdle(): void {
    this.#idleTimer = undefined;
    const socket = this.tlsSocket;
    // A request half sent when the timer runs out is incomplete (RFC 8915 §4.1.3: Bad Request).
    if (this.#length > 0 && socket.writable) socket.write(encodeKeErrorResponse(KeErrorCode.badRequest));
    this.#kept = false;
    if (socket.writable) socket.end();
    this.#deadline = setTimeout(() => socket.destroy(), DEADLINE_LINGER_MS);
  }

  /** Writes one message (the whole response) and sends close_notify. */
  #respond(response: Uint8Array, outcome: KeSessionOutcome, cookiesIssued: number): void {
    this.#kept = false; // a final answer, also on a kept connection
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    this.#settle(outcome, cookiesIssued);
    const socket = this.tlsSocket;
    if (!socket.writable) return;
    socket.write(response);
    socket.end();
  }

  #advance(stage: KeSessionStage): void {
    this.stage = stage;
    this.lastProgressMs = performance.now();
    if (this.outcome === undefined) this.#ctx.progressed(this);
  }

  #settle(outcome: KeSessionOutcome, cookiesIssued: number): void {
    if (this.outcome !== undefined) return;
    this.outcome = outcome;
    this.#ctx.settled(this, outcome, (performance.now() - this.acceptedAtMs) / 1000, cookiesIssued, this.#detail);
  }

  #onEnd(): void {
    if (this.#answering) return; // a client that half-closes after its request still gets the answer
    if (!this.secure) {
      // The peer closed before TLS finished: nothing to answer, free the slot now (a half-open socket
      // would otherwise sit in CLOSE-WAIT until the deadline, holding a slot).
      this.#settle('client_closed', 0);
      this.tlsSocket.destroy();
      return;
    }
    if (this.outcome === undefined || (this.#kept && this.#length > 0)) {
      // The client finished sending without completing a request (RFC 8915 §4.1.3: incomplete → Bad Request).
      this.#kept = false;
      this.#respond(encodeKeErrorResponse(KeErrorCode.badRequest), 'bad_request', 0);
    } else if (this.tlsSocket.writable) {
      this.tlsSocket.end();
    }
  }

  #onDeadline(): void {
    this.#deadline = undefined;
    const socket = this.tlsSocket;
    if (this.outcome === undefined && this.secure && socket.writable) {
      // RFC 8915 §4.1.3: Bad Request also covers the server's timeout before a complete request.
      this.#respond(encodeKeErrorResponse(KeErrorCode.badRequest), 'timeout', 0);
      this.#deadline = setTimeout(() => socket.destroy(), DEADLINE_LINGER_MS);
      return;
    }
    this.#settle('timeout', 0);
    socket.destroy();
  }

  #onClose(): void {
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    this.#deadline = undefined;
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    if (this.#holdsSlot) this.#ctx.keepAlive?.release();
    this.#kept = false;
    this.#holdsSlot = false;
    // No outcome yet: a handshake or transport failure, or a peer that reset before TLS finished.
    this.#settle(this.secure || this.#tlsFailed ? 'tls_error' : 'client_closed', 0);
    this.#buffer = undefined;
    this.#ctx.closed(this);
  }
}
