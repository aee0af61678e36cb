/**
 * TLS connections from a pool front end to one source's NTS-KE server (RFC 8915 §4 with the pool
 * records of draft-ietf-ntp-nts-keyexchange-pool): connect with ALPN `ntske/1`, check the source's
 * certificate for its configured TLS name, send one request, read one answer up to End of Message.
 * An answer with Keep Alive leaves the connection open; up to `maxIdle` such connections wait for the
 * next request (a pooled keep-alive connection), each closed here after `idleMs` without use, before the
 * source's own idle timeout (at most 300 s) can race a request.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { NTSKE_ALPN } from '../core/nts/ids.js';
import { decodeKeMessage, scanKeMessage, type KeRecord } from '../core/nts/ke-record.js';
import { grantsKeepAlive } from '../core/pool/front-end.js';

/** Largest answer read from a source (RFC 8915 §4: a client SHOULD accept at least 65536 octets). */
const MAX_ANSWER_BYTES = 65_536;

/** How an exchange with a source failed. */
export type UpstreamFailure =
  /** TCP or TLS did not come up (refused, unreachable, certificate, ALPN). */
  | 'connect'
  /** The deadline passed. */
  | 'timeout'
  /** The source closed or reset before a complete answer. */
  | 'closed'
  /** The answer could not be framed (too long, or not a KE message). */
  | 'malformed';

/** The result of one request/answer exchange. */
export type UpstreamResult =
  | { readonly ok: true; readonly answer: Uint8Array; readonly records: readonly KeRecord[]; readonly reused: boolean }
  | { readonly ok: false; readonly failure: UpstreamFailure; readonly reused: boolean; readonly detail: string };

/** Where and how to reach one source. */
export interface UpstreamOptions {
  readonly host: string;
  readonly port: number;
  /** Name the source's certificate must be valid for (DNS name or IP literal). */
  readonly tlsName: string;
  /** PEM CAs to trust; undefined = Node's default (system) CAs. */
  readonly caPem: string | undefined;
  /** Idle kept-alive connections to hold, at most. */
  readonly maxIdle: number;
  /** An idle connection is closed after this long. */
  readonly idleMs: number;
}

interface Idle {
  readonly socket: tls.TLSSocket;
  readonly timer: NodeJS.Timeout;
}

/** A small pool of TLS connections to one source. */
export class UpstreamPool {
  readonly #options: UpstreamOptions;
  #idle: Idle[] = [];
  readonly #open = new Set<tls.TLSSocket>();
  #closed = false;
  /** Connections opened so far (for tests and metrics). */
  connectionsOpened = 0;

  /** Creates the pool; nothing connects until the first exchange. */
  constructor(options: UpstreamOptions) {
    this.#options = options;
  }

  /**
   * Sends `request` and reads one answer within `timeoutMs` (connecting included), on an idle kept-alive
   * connection when one is open, else on a new one. Never rejects.
   */
  async exchange(request: Uint8Array, timeoutMs: number): Promise<UpstreamResult> {
    let socket: tls.TLSSocket | undefined;
    let reused = false;
    while (this.#idle.length > 0) {
      const idle = this.#idle.pop();
      if (idle === undefined) break;
      clearTimeout(idle.timer);
      if (!idle.socket.destroyed && idle.socket.writable) {
        socket = idle.socket;
        reused = true;
        break;
      }
      idle.socket.destroy();
    }
    const started = Date.now();
    if (socket === undefined) {
      const connected = await this.#connect(timeoutMs);
      if (!connected.ok) return { ok: false, failure: connected.failure, reused: false, detail: connected.detail };
      socket = connected.socket;
    }
    const remaining = Math.max(1, timeoutMs - (Date.now() - started));
    const result = await this.#roundTrip(socket, request, remaining, reused);
    if (result.ok && grantsKeepAlive(result.records) && !this.#closed && this.#idle.length < this.#options.maxIdle) {
      this.#park(socket);
    } else {
      socket.destroy();
    }
    return result;
  }

  /** Closes every connection, and keeps none from later exchanges. */
  close(): void {
    this.#closed = true;
    for (const idle of this.#idle) {
      clearTimeout(idle.timer);
      idle.socket.destroy();
    }
    this.#idle = [];
    for (const s of this.#open) s.destroy();
    this.#open.clear();
  }

  #park(socket: tls.TLSSocket): void {
    const timer = setTimeout(() => {
      this.#idle = this.#idle.filter((i) => i.socket !== socket);
      socket.destroy();
    }, this.#options.idleMs);
    timer.unref();
    this.#idle.push({ socket, timer });
  }

  #connect(timeoutMs: number): Promise<{ ok: true; socket: tls.TLSSocket } | { ok: false; failure: UpstreamFailure; detail: string }> {
    const o = this.#options;
    return new Promise((resolve) => {
      const isIp = net.isIP(o.tlsName) !== 0;
      const socket = tls.connect({
        host: o.host,
        port: o.port,
        ...(isIp ? {} : { servername: o.tlsName }),
        ALPNProtocols: [NTSKE_ALPN],
        minVersion: 'TLSv1.3',
        ...(o.caPem !== undefined ? { ca: o.caPem } : {}),
        checkServerIdentity: (_host, cert) => tls.checkServerIdentity(o.tlsName, cert),
      });
      this.connectionsOpened++;
      this.#open.add(socket);
      socket.once('close', () => this.#open.delete(socket));
      let done = false;
      const finish = (r: { ok: true; socket: tls.TLSSocket } | { ok: false; failure: UpstreamFailure; detail: string }): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.removeListener('error', onError);
        if (!r.ok) socket.destroy();
        resolve(r);
      };
      const timer = setTimeout(() => finish({ ok: false, failure: 'timeout', detail: 'TLS handshake with the source timed out' }), timeoutMs);
      const onError = (error: Error): void => finish({ ok: false, failure: 'connect', detail: error.message });
      socket.on('error', onError);
      socket.once('secureConnect', () => {
        if (socket.alpnProtocol !== NTSKE_ALPN) {
          finish({ ok: false, failure: 'connect', detail: 'the source did not select ALPN ntske/1' });
          return;
        }
        socket.setNoDelay(true);
        // Errors between exchanges (a reset while parked) must not go unhandled; each exchange listens itself.
        socket.on('error', () => undefined);
        finish({ ok: true, socket });
      });
    });
  }

  #roundTrip(socket: tls.TLSSocket, request: Uint8Array, timeoutMs: number, reused: boolean): Promise<UpstreamResult> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let length = 0;
      let resume = 0;
      let done = false;
      const finish = (r: UpstreamResult): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.removeListener('data', onData);
        socket.removeListener('error', onError);
        socket.removeListener('close', onClose);
        socket.removeListener('end', onClose);
        resolve(r);
      };
      const timer = setTimeout(() => finish({ ok: false, failure: 'timeout', reused, detail: 'the source did not answer in time' }), timeoutMs);
      const onData = (chunk: Buffer): void => {
        chunks.push(chunk);
        length += chunk.length;
        const buf = chunks.length === 1 ? chunk : Buffer.concat(chunks, length);
        if (chunks.length > 1) chunks.splice(0, chunks.length, buf);
        const scan = scanKeMessage(buf, { fromOffset: resume, maxLength: MAX_ANSWER_BYTES });
        if (scan.status === 'incomplete') {
          resume = scan.resumeOffset;
          return;
        }
        if (scan.status === 'malformed' || scan.length !== buf.length) {
          finish({ ok: false, failure: 'malformed', reused, detail: 'the answer is not one KE message' });
          return;
        }
        const answer = new Uint8Array(buf.subarray(0, scan.length));
        const decoded = decodeKeMessage(answer);
        if (!decoded.ok) {
          finish({ ok: false, failure: 'malformed', reused, detail: `the answer does not decode (${decoded.error})` });
          return;
        }
        finish({ ok: true, answer, records: decoded.records, reused });
      };
      const onError = (error: Error): void => finish({ ok: false, failure: 'closed', reused, detail: error.message });
      const onClose = (): void => finish({ ok: false, failure: 'closed', reused, detail: 'the source closed the connection' });
      socket.on('data', onData);
      socket.on('error', onError);
      socket.on('close', onClose);
      socket.on('end', onClose);
      socket.write(request);
    });
  }
}
