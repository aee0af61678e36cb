/**
 * The KE thread's TCP listeners and admission: every accepted connection passes the connection cap and
 * the per-client token bucket (core/limiter.ts) before any TLS work, then becomes a KeSession. The
 * listener owns the set of open sessions, so it knows when a stop has drained them.
 */
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { matchCidr, type CidrPrefix } from '../../core/cidr.js';
import type { RateLimiter } from '../../core/limiter.js';
import { readProxyHeader } from './proxy.js';
import type { KeBoundAddress, KeListenAddress, KeTallies } from './messages.js';
import { KeSession, type SessionContext } from './session.js';

/** What the listener needs from its thread. */
export interface ListenerContext {
  readonly concurrentConnections: number;
  /** The current per-client limiter (replaced when the table is). */
  limiter(): RateLimiter;
  /** Tallies of the current stats interval. */
  tallies(): KeTallies;
  /** Everything sessions need; `closed` is wrapped by the listener. */
  readonly session: Omit<SessionContext, 'closed'>;
  /** Called after a session closed (e.g. to finish a stop). */
  sessionClosed(): void;
  /** PROXY protocol v2: the trusted balancers' prefixes; undefined = off (a port is proxied or not). */
  readonly proxyTrustedSources?: readonly CidrPrefix[] | undefined;
  /** PROXY header deadline, milliseconds (at least PROXY_HEADER_DEADLINE_MS is used). */
  readonly proxyHeaderDeadlineMs?: number;
}

/** A listen address that failed to bind, with the cause. */
export class ListenFailure extends Error {
  constructor(
    readonly host: string,
    readonly port: number,
    readonly error: unknown,
  ) {
    super(`listen ${host}:${port} failed`);
  }
}

/** Milliseconds on a clock every thread reads alike (the shared limiter table needs one time base). */
function sharedNowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** The listeners of one KE thread and the sessions they accepted. */
export class KeListener {
  readonly #ctx: ListenerContext;
  readonly #sessionContext: SessionContext;
  readonly #sessions = new Set<KeSession>();
  readonly #servers: net.Server[] = [];
  #stopping = false;

  /** Creates the listener; nothing is bound until listen(). */
  constructor(ctx: ListenerContext) {
    this.#ctx = ctx;
    this.#sessionContext = {
      ...ctx.session,
      closed: (session) => {
        this.#sessions.delete(session);
        ctx.sessionClosed();
      },
    };
  }

  /** Connections open now (PROXY headers still being read included). */
  get activeConnections(): number {
    return this.#sessions.size + this.#pendingHeaders;
  }

  /** Binds every address in order; rejects with a ListenFailure naming the first that fails (all closed then). */
  async listen(addresses: readonly KeListenAddress[]): Promise<KeBoundAddress[]> {
    const bound: KeBoundAddress[] = [];
    try {
      for (const address of addresses) {
        const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.#onConnection(socket));
        this.#servers.push(server);
        // [::] alone is dual-stack; next to an IPv4 listener on the same port it must be IPv6-only.
        const ipv6Only =
          net.isIPv6(address.host) &&
          address.port !== 0 &&
          addresses.some((other) => net.isIPv4(other.host) && other.port === address.port);
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
    } catch (failure: unknown) {
      this.close();
      throw failure instanceof ListenFailure ? failure : new ListenFailure('?', 0, failure);
    }
    return bound;
  }

  /** Stops accepting (open sessions go on until they end). */
  close(): void {
    this.#stopping = true;
    for (const server of this.#servers) server.close();
  }

  #onConnection(raw: net.Socket): void {
    raw.on('error', () => undefined);
    if (this.#stopping) {
      raw.destroy();
      return;
    }
    const tallies = this.#ctx.tallies();
    const trusted = this.#ctx.proxyTrustedSources;
    let proxy: CidrPrefix | undefined;
    if (trusted !== undefined) {
      proxy = matchCidr(trusted, raw.remoteAddress ?? '');
      if (proxy === undefined) {
        tallies.rejected.untrusted_proxy++;
        raw.destroy();
        return;
      }
    }
    if (this.#sessions.size + this.#pendingHeaders >= this.#ctx.concurrentConnections) {
      tallies.rejected.connection_limit++;
      raw.destroy();
      return;
    }
    if (proxy === undefined) {
      this.#admit(raw, raw.remoteAddress ?? '');
      return;
    }
    // Behind a balancer: the client's address comes from the PROXY v2 header, before TLS.
    const source = proxy.text;
    this.#pendingHeaders++;
    readProxyHeader(raw, this.#ctx.proxyHeaderDeadlineMs ?? 0, (result) => {
      this.#pendingHeaders--;
      const t = this.#ctx.tallies();
      if (result.kind === 'invalid' || this.#stopping) {
        t.rejected.proxy_header++;
        raw.destroy();
        this.#ctx.sessionClosed();
        return;
      }
      t.proxyConnections[source] = (t.proxyConnections[source] ?? 0) + 1;
      // LOCAL: the balancer's own connection (a health check); its own address is the client.
      this.#admit(raw, result.kind === 'proxy' ? result.clientAddress : (raw.remoteAddress ?? ''));
    });
  }

  /** Connections whose PROXY header is still being read (they hold a connection slot). */
  #pendingHeaders = 0;

  #admit(raw: net.Socket, clientAddress: string): void {
    const tallies = this.#ctx.tallies();
    if (this.#ctx.limiter().take(clientAddress, sharedNowMs()) !== 'admit') {
      tallies.rejected.rate_limited++;
      raw.destroy();
      return;
    }
    tallies.accepted++;
    this.#sessions.add(new KeSession(raw, this.#sessionContext, performance.now()));
  }
}
