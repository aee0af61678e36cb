/**
 * The KE thread's TCP listeners and admission. Before any TLS work, an accepted connection must pass, in
 * order: the access list (core/access-list.ts; `access_denied`, `access_ignored`), the per-client token bucket
 * (core/limiter.ts; `rate_limited`), the per-source cap on open
 * connections (`source_limit`) and the global cap (core/concurrency.ts). Then it becomes a KeSession; on a
 * listener whose certificates need the client's server name (nts-ke/certificates.ts), only once its
 * ClientHello is in (nts-ke/client-hello.ts), within the session deadline and first in line for eviction.
 *
 * A full global cap does not turn the newcomer away: an open session without an answer is evicted to
 * make room (`evicted`); only when every open session has been answered is the newcomer refused
 * (`connection_limit`). So an attacker pays for a slot with a live connection that loses it to the next
 * arrival, instead of with one SYN per deadline. Which session goes, the first that exists of:
 *  1. one that finished TLS and then sent no complete request for WAITING_GRACE_MS, the longest silent
 *     first. It has had our handshake CPU and its chance: a real client sends its request in the same
 *     flight as its TLS Finished.
 *  2. one whose ClientHello we have not processed, oldest accept first: connections that never send a
 *     byte age out in order (the "least progress" ones).
 *  3. one that finished TLS less than WAITING_GRACE_MS ago (its request may be in the next segment).
 *  4. one whose ClientHello we answered and which owes us its Finished, oldest first.
 * So under a flood of idle connections a client that has spoken survives, and under a flood of clients
 * that finish TLS and fall silent, a client whose handshake is still queued for our CPU survives.
 *
 * The listener owns the open sessions, so it knows when a stop has drained them.
 */
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import type * as tls from 'node:tls';
import { matchCidr, type CidrPrefix } from '../core/cidr.js';
import type { AccessList } from '../core/access-list.js';
import { KeClass, keClassOf, type ClientLog } from '../core/client-log.js';
import type { ConcurrencyLimiter, SourceKey } from '../core/concurrency.js';
import type { RateLimiter } from '../core/limiter.js';
import { readClientHelloServerName } from './client-hello.js';
import { readProxyHeader } from './proxy.js';
import type { KeBoundAddress, KeListenAddress, KeTallies } from './messages.js';
import { KeSession, type KeSessionStage, type SessionContext } from './session.js';

/** What the listener needs from its thread. */
export interface ListenerContext {
  /** Global and per-source caps (shared by every KE thread of the listener; replaced when rebuilt). */
  concurrency(): ConcurrencyLimiter;
  /** Bind with SO_REUSEPORT (several threads listen on the same addresses). */
  readonly reusePort: boolean;
  /** Listening descriptors to adopt, one per address (KeWorkerInit.listenFds); absent = bind the addresses. */
  readonly listenFds?: readonly number[] | undefined;
  /** The current per-client limiter (replaced when the table is). */
  limiter(): RateLimiter;
  /** The current access list (replaced on SIGHUP). */
  accessList(): AccessList;
  /** Tallies of the current stats interval. */
  tallies(): KeTallies;
  /** The shared per-client log: each connection's outcome class is counted there; undefined = off. */
  readonly clientLog?: ClientLog | undefined;
  /** Everything sessions need; `closed`, `progressed` and `settled` are wrapped by the listener. */
  readonly session: Omit<SessionContext, 'closed' | 'progressed' | 'settled'> & {
    settled(outcome: Parameters<SessionContext['settled']>[1], durationS: number, cookiesIssued: number, detail: string | undefined): void;
  };
  /** Called after a session closed (e.g. to finish a stop). */
  sessionClosed(): void;
  /**
   * With several certificates whose names need different TLS contexts (nts-ke/certificates.ts): the context
   * for a ClientHello's server name, read before TLS starts; undefined = every connection gets
   * `session.secureContext()` at once.
   */
  chooseSecureContext?(): ((serverName: string | undefined) => tls.SecureContext) | undefined;
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

/**
 * Accept queue length asked of the kernel (Linux caps it at net.core.somaxconn, 4096 by default since 5.4).
 * Under a connection flood a short queue overflows and the kernel drops SYNs, an honest client's too,
 * which then waits a whole SYN retransmission (1 s) before admission and eviction ever see it.
 */
const LISTEN_BACKLOG = 4096;

/** A session silent this long after its TLS handshake is the first to be evicted (module comment, rule 1). */
const WAITING_GRACE_MS = 20;

/** Milliseconds on a clock every thread reads alike (the shared limiter table needs one time base). */
function sharedNowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** What a session holds in the shared caps, given back exactly once. */
interface Admission {
  readonly key: SourceKey;
  /** The table it is counted in, and whether per source. */
  limiter: ConcurrencyLimiter;
  tracked: boolean;
  released: boolean;
}

/** An admitted connection whose ClientHello is being read before its session starts (several certificates). */
interface HelloWait {
  readonly admission: Admission;
  readonly acceptedAtMs: number;
  readonly timer: NodeJS.Timeout;
  readonly cancel: () => void;
}

/** [::] alone is dual-stack; next to an IPv4 listener on the same port it must be IPv6-only. */
export function keIpv6Only(address: KeListenAddress, addresses: readonly KeListenAddress[]): boolean {
  return net.isIPv6(address.host) && address.port !== 0 && addresses.some((other) => net.isIPv4(other.host) && other.port === address.port);
}

/** Gives an admitted connection's place back to the concurrency limiter, once. */
function releaseAdmission(admission: Admission): void {
  if (admission.released) return;
  admission.released = true;
  admission.limiter.release(admission.key, admission.tracked);
}

/** The listeners of one KE thread and the sessions they accepted. */
export class KeListener {
  readonly #ctx: ListenerContext;
  readonly #sessionContext: SessionContext;
  /** Every open session and its admission. */
  readonly #sessions = new Map<KeSession, Admission>();
  /** Sessions without an outcome by stage; each Set in order of last progress (a Set keeps insertion order). */
  readonly #stages: Readonly<Record<KeSessionStage, Set<KeSession>>> = { idle: new Set(), hello: new Set(), waiting: new Set(), answering: new Set() };
  readonly #servers: net.Server[] = [];
  /** Connections waiting for their ClientHello (chooseSecureContext), in accept order. */
  readonly #hellos = new Map<net.Socket, HelloWait>();
  #stopping = false;

  /** Creates the listener; nothing is bound until listen(). */
  constructor(ctx: ListenerContext) {
    this.#ctx = ctx;
    this.#sessionContext = {
      ...ctx.session,
      settled: (session, outcome, durationS, cookiesIssued, detail) => {
        this.#forget(session);
        const key = this.#sessions.get(session)?.key;
        if (key !== undefined) ctx.clientLog?.noteKe(key, keClassOf(outcome), sharedNowMs());
        ctx.session.settled(outcome, durationS, cookiesIssued, detail);
      },
      progressed: (session) => {
        this.#forget(session);
        this.#stages[session.stage].add(session); // now the most recent of its stage
      },
      closed: (session) => {
        this.#forget(session);
        this.#release(session);
        this.#sessions.delete(session);
        ctx.sessionClosed();
      },
    };
  }

  /** Connections open now (PROXY headers still being read included). */
  get activeConnections(): number {
    return this.#sessions.size + this.#pendingHeaders + this.#hellos.size;
  }

  /** Binds every address in order; rejects with a ListenFailure naming the first that fails (all closed then). */
  async listen(addresses: readonly KeListenAddress[]): Promise<KeBoundAddress[]> {
    const bound: KeBoundAddress[] = [];
    try {
      for (const [index, address] of addresses.entries()) {
        const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.#onConnection(socket));
        this.#servers.push(server);
        const ipv6Only = keIpv6Only(address, addresses);
        const fd = this.#ctx.listenFds?.[index];
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
          if (fd !== undefined) {
            // A SO_REUSEPORT socket already bound and listening (made by the main thread).
            server.listen({ fd, backlog: LISTEN_BACKLOG });
            return;
          }
          // reusePort: Node >= 22.12 (missing from @types/node 20); each KE thread binds its own socket.
          const options: net.ListenOptions & { reusePort?: boolean } = { host: address.host, port: address.port, ipv6Only, backlog: LISTEN_BACKLOG };
          if (this.#ctx.reusePort) options.reusePort = true;
          server.listen(options);
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
    // Headers still being read hold no session slot yet, so they have a cap of their own (the global cap).
    if (proxy !== undefined && this.#pendingHeaders >= this.#ctx.concurrency().limits.globalMax) {
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
    const address = clientAddress;
    const access = this.#ctx.accessList().decide(address);
    if (access !== 'allow') {
      // KE has no refusal message before TLS: `deny` and `ignore` both close, counted apart.
      if (access === 'deny') tallies.rejected.access_denied++;
      else tallies.rejected.access_ignored++;
      this.#refuse(raw, address);
      return;
    }
    if (this.#ctx.limiter().take(address, sharedNowMs()) !== 'admit') {
      tallies.rejected.rate_limited++;
      this.#refuse(raw, address);
      return;
    }
    const concurrency = this.#ctx.concurrency();
    const key = concurrency.sourceKey(address);
    let decision = concurrency.acquire(key);
    // Full: make room by evicting the open session with the least recent progress, then try again
    // (another thread sharing the cap may have taken the freed slot; then the newcomer is refused).
    if (decision === 'global_limit' && this.#evictOne()) decision = concurrency.acquire(key);
    if (decision === 'source_limit' || decision === 'global_limit') {
      if (decision === 'source_limit') tallies.rejected.source_limit++;
      else tallies.rejected.connection_limit++;
      this.#refuse(raw, address);
      return;
    }
    tallies.accepted++;
    const admission: Admission = { key, limiter: concurrency, tracked: decision === 'admitted', released: false };
    const acceptedAtMs = performance.now();
    const choose = this.#ctx.chooseSecureContext?.();
    if (choose === undefined) {
      this.#startSession(raw, admission, acceptedAtMs, undefined);
      return;
    }
    // Several certificates: the ClientHello's server name picks the TLS context (within the session deadline).
    const cancel = readClientHelloServerName(raw, (result) => {
      const wait = this.#hellos.get(raw);
      if (wait === undefined) return;
      if (result.kind === 'closed') {
        this.#endBeforeSession(raw, wait, 'client_closed');
        return;
      }
      this.#stopWaiting(raw, wait);
      this.#startSession(raw, admission, acceptedAtMs, choose(result.serverName));
    });
    const timer = setTimeout(() => {
      const wait = this.#hellos.get(raw);
      if (wait !== undefined) this.#endBeforeSession(raw, wait, 'timeout');
    }, this.#ctx.session.keyExchangeTimeoutMs);
    this.#hellos.set(raw, { admission, acceptedAtMs, timer, cancel });
  }

  #startSession(raw: net.Socket, admission: Admission, acceptedAtMs: number, secureContext: tls.SecureContext | undefined): void {
    const session = new KeSession(raw, this.#sessionContext, acceptedAtMs, secureContext);
    this.#sessions.set(session, admission);
    this.#stages[session.stage].add(session);
  }

  /** Stops awaiting `raw`'s ClientHello: its deadline, its reader and its entry (each safe to repeat). */
  #stopWaiting(raw: net.Socket, wait: HelloWait): void {
    clearTimeout(wait.timer);
    wait.cancel();
    this.#hellos.delete(raw);
  }

  /** A connection that never got to TLS (closed, timed out or evicted while its ClientHello was awaited). */
  #endBeforeSession(raw: net.Socket, wait: HelloWait, outcome: 'client_closed' | 'timeout' | 'evicted'): void {
    this.#stopWaiting(raw, wait);
    raw.destroy();
    releaseAdmission(wait.admission);
    this.#ctx.clientLog?.noteKe(wait.admission.key, keClassOf(outcome), sharedNowMs());
    this.#ctx.session.settled(outcome, (performance.now() - wait.acceptedAtMs) / 1000, 0, undefined);
    this.#ctx.sessionClosed();
  }

  /** Closes a connection refused before TLS, counting it in the client log. */
  #refuse(raw: net.Socket, address: string): void {
    this.#ctx.clientLog?.noteKeAddress(address, KeClass.refused, sharedNowMs());
    raw.destroy();
  }

  #forget(session: KeSession): void {
    this.#stages.idle.delete(session);
    this.#stages.hello.delete(session);
    this.#stages.waiting.delete(session);
    this.#stages.answering.delete(session);
  }

  /**
   * Picks the session to evict (see the module comment); undefined when every open session has its answer
   * or is being answered (stage `answering`: its client did its part).
   */
  #victim(): KeSession | undefined {
    const waiting = this.#stages.waiting.values().next();
    if (waiting.done !== true && performance.now() - waiting.value.lastProgressMs >= WAITING_GRACE_MS) return waiting.value;
    const idle = this.#stages.idle.values().next();
    if (idle.done !== true) return idle.value;
    if (waiting.done !== true) return waiting.value;
    const hello = this.#stages.hello.values().next();
    return hello.done === true ? undefined : hello.value;
  }

  /** Evicts one session without an answer; false when there is none. */
  #evictOne(): boolean {
    // A connection whose ClientHello has not fully arrived has made the least progress of all (rule 2),
    // unless a session sits silent after TLS (rule 1).
    const waiting = this.#stages.waiting.values().next();
    const silent = waiting.done !== true && performance.now() - waiting.value.lastProgressMs >= WAITING_GRACE_MS;
    const hello = this.#hellos.entries().next();
    if (!silent && hello.done !== true) {
      const [raw, wait] = hello.value;
      this.#endBeforeSession(raw, wait, 'evicted');
      return true;
    }
    const session = this.#victim();
    if (session === undefined) return false;
    this.#forget(session);
    session.evict();
    this.#release(session); // now, not at 'close': the newcomer takes the slot
    return true;
  }

  #release(session: KeSession): void {
    const admission = this.#sessions.get(session);
    if (admission !== undefined) releaseAdmission(admission);
  }

  /** Counts this thread's open sessions in `next`, a fresh table that replaces the shared one (thread restart). */
  recount(next: ConcurrencyLimiter): void {
    for (const admission of [...this.#sessions.values(), ...[...this.#hellos.values()].map((w) => w.admission)]) {
      if (admission.released) continue;
      admission.tracked = next.register(admission.key);
      admission.limiter = next;
    }
  }
}
