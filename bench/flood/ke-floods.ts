/**
 * The three NTS-KE connection floods of the abuse-resistance work, an honest client and an NTP probe,
 * all on loopback. The attacker's connections come from 127.0.0.2–127.0.0.254 (round robin) and the
 * honest client from 127.0.0.1, so per-source caps see 253 attacker sources and one honest one.
 *  - `idle-held`: keep N plain TCP connections open that never send a byte; reconnect whatever is closed.
 *  - `idle-churn`: N plain TCP connections that each stay idle 50–500 ms, close, and reconnect.
 *  - `tls-silent`: keep N connections that finish the TLS handshake (ALPN ntske/1) and then say nothing.
 * Every flood is bounded: it stops when its caller stops it, and every socket it opened is destroyed.
 * Used by bench/flood/main.ts (full size) and test/bench/ke-floods.test.ts (short).
 */
import { createSocket } from 'node:dgram';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import * as tls from 'node:tls';
import { Worker } from 'node:worker_threads';
import { performKeyExchange } from '../../src/cli/ke-client.js';

/** The flood kinds. */
export const KE_FLOOD_KINDS = ['idle-held', 'idle-churn', 'tls-silent'] as const;
/** One of KE_FLOOD_KINDS. */
export type KeFloodKind = (typeof KE_FLOOD_KINDS)[number];

/** What a flood did. */
export interface KeFloodStats {
  /** Connections the attacker opened (TCP connect completed). */
  readonly connected: number;
  /** TLS handshakes the attacker completed (tls-silent only). */
  readonly handshakes: number;
  /** Most attacker connections open at once. */
  readonly peakOpen: number;
  /** Connect attempts that failed (refused, reset). */
  readonly failed: number;
}

/** A running flood. */
export interface KeFlood {
  /** Attacker connections open now. */
  open(): number;
  /** Stops reconnecting, destroys every socket and reports. */
  stop(): KeFloodStats;
}

/** Options of a flood. */
export interface KeFloodOptions {
  readonly kind: KeFloodKind;
  readonly host: string;
  readonly port: number;
  /** Connections the attacker tries to hold at once. */
  readonly connections: number;
  /** Most connect attempts in flight at once (a SYN storm of thousands only fills the backlog). */
  readonly maxPending?: number;
  /** First and last attacker source, last octet of 127.0.0.x (default 2 and 254). */
  readonly firstSource?: number;
  readonly lastSource?: number;
  /**
   * Nice value of the attacker's thread (Linux), e.g. 19: on one shared machine the flood generator
   * competes with the server for CPU, which a remote attacker does not. Default: the caller's.
   */
  readonly attackerNice?: number;
}

/** Starts a flood; it runs until stop(). */
export function startKeFlood(options: KeFloodOptions): KeFlood {
  const first = options.firstSource ?? 2;
  const last = options.lastSource ?? 254;
  const maxPending = options.maxPending ?? 256;
  const sockets = new Set<net.Socket>();
  let next = first;
  let pending = 0;
  let stopped = false;
  let connected = 0;
  let handshakes = 0;
  let failed = 0;
  let peakOpen = 0;
  const timers = new Set<NodeJS.Timeout>();

  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  const fill = (): void => {
    while (!stopped && sockets.size < options.connections && pending < maxPending) openOne();
  };

  const openOne = (): void => {
    const localAddress = `127.0.0.${next}`;
    next = next >= last ? first : next + 1;
    pending++;
    let settled = false;
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      pending--;
      if (ok) connected++;
      else failed++;
    };
    let socket: net.Socket;
    if (options.kind === 'tls-silent') {
      const raw = net.connect({ host: options.host, port: options.port, localAddress });
      raw.on('error', () => undefined);
      raw.once('connect', () => done(true));
      const t = tls.connect({ socket: raw, ALPNProtocols: ['ntske/1'], rejectUnauthorized: false });
      t.once('secureConnect', () => handshakes++);
      t.resume(); // read (and drop) anything, so the server's close is seen
      socket = t;
    } else {
      socket = net.connect({ host: options.host, port: options.port, localAddress });
      socket.once('connect', () => {
        done(true);
        if (options.kind === 'idle-churn') later(50 + Math.floor(Math.random() * 450), () => socket.destroy());
      });
    }
    sockets.add(socket);
    peakOpen = Math.max(peakOpen, sockets.size);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      done(false);
      sockets.delete(socket);
      if (!stopped) setImmediate(fill);
    });
  };

  fill();
  return {
    open: () => sockets.size,
    stop: () => {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      return { connected, handshakes, peakOpen, failed };
    },
  };
}

/** A flood running on its own thread (bench/flood/flood-thread.ts). */
export interface KeFloodThread {
  open(): Promise<number>;
  stop(): Promise<KeFloodStats>;
}

/** Starts a flood on a worker thread: the attacker's event loop is then not the caller's. */
export function startKeFloodThread(options: KeFloodOptions): KeFloodThread {
  const worker = new Worker(new URL('./flood-thread.js', import.meta.url), { workerData: options });
  const ask = <T>(question: 'open' | 'stop', pick: (m: Record<string, unknown>) => T | undefined): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const onMessage = (m: unknown): void => {
        const value = typeof m === 'object' && m !== null ? pick(m as Record<string, unknown>) : undefined;
        if (value === undefined) return;
        worker.off('message', onMessage);
        resolve(value);
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
      worker.postMessage(question);
    });
  return {
    open: () => ask('open', (m) => (typeof m['open'] === 'number' ? m['open'] : undefined)),
    stop: async () => {
      const stats = await ask('stop', (m) => (typeof m['stats'] === 'object' && m['stats'] !== null ? (m['stats'] as KeFloodStats) : undefined));
      await worker.terminate();
      return stats;
    },
  };
}

/** One honest NTS-KE attempt from 127.0.0.1. */
export interface HonestAttempt {
  readonly ok: boolean;
  readonly ms: number;
  /** Failure kind and message when not ok. */
  readonly failure: string;
}

/** One NTS-KE exchange, one attempt only, with a deadline of `timeoutMs`. */
export async function honestKeyExchange(host: string, port: number, caPem: string, timeoutMs: number): Promise<HonestAttempt> {
  const started = performance.now();
  const outcome = await performKeyExchange({ host, port, ca: caPem, servername: 'localhost', timeoutMs });
  const ms = performance.now() - started;
  if (outcome.ok) return { ok: outcome.result.cookies.length > 0, ms, failure: outcome.result.cookies.length > 0 ? '' : 'no cookies' };
  return { ok: false, ms, failure: `${outcome.failure.kind}: ${outcome.failure.message}` };
}

/** Plain NTPv4 client requests (RFC 5905 mode 3) sent every `intervalMs`; counts the answers. */
export interface NtpProbe {
  /** Stops sending; waits `graceMs` for late answers; returns sent and answered counts. */
  stop(graceMs?: number): Promise<{ readonly sent: number; readonly answered: number }>;
}

/** Starts an NTP probe against host:port from 127.0.0.1. */
export function startNtpProbe(host: string, port: number, intervalMs: number): NtpProbe {
  const socket = createSocket('udp4');
  let sent = 0;
  const answered = new Set<number>();
  socket.on('message', (msg) => {
    // Our request's transmit timestamp carries the sequence number; the reply echoes it as origin (RFC 5905 §8).
    if (msg.length >= 48 && (msg[0] ?? 0) % 8 === 4) answered.add(msg.readUInt32BE(28));
  });
  socket.on('error', () => undefined);
  const timer = setInterval(() => {
    const request = Buffer.alloc(48);
    request[0] = (4 << 3) | 3; // VN 4, mode 3
    request.writeUInt32BE(0x80000000, 40);
    request.writeUInt32BE(++sent, 44);
    socket.send(request, port, host);
  }, intervalMs);
  return {
    stop: async (graceMs = 1000) => {
      clearInterval(timer);
      await new Promise((r) => setTimeout(r, graceMs));
      socket.close();
      return { sent, answered: answered.size };
    },
  };
}

/** Figures of one flood run with honest attempts. */
export interface KeFloodRun {
  readonly kind: KeFloodKind;
  readonly flood: KeFloodStats;
  /** Attacker connections open when the first honest attempt started. */
  readonly openAtFirstAttempt: number;
  readonly attempts: readonly HonestAttempt[];
  readonly ntp: { readonly sent: number; readonly answered: number };
}

/** Options of runKeFloodWithHonestClient. */
export interface KeFloodRunOptions extends KeFloodOptions {
  readonly caPem: string;
  readonly ntpPort: number;
  /** Time for the flood to build up before the first honest attempt. */
  readonly rampMs: number;
  /** Honest attempts, one after the other, `gapMs` apart. */
  readonly honestAttempts: number;
  readonly gapMs: number;
  /** Deadline of each honest attempt (the target: 1000 ms, first attempt). */
  readonly honestTimeoutMs: number;
  /** NTP probe interval. */
  readonly ntpIntervalMs: number;
}

/** Runs one flood, the honest attempts and the NTP probe; stops everything before returning. */
export async function runKeFloodWithHonestClient(o: KeFloodRunOptions): Promise<KeFloodRun> {
  const probe = startNtpProbe(o.host, o.ntpPort, o.ntpIntervalMs);
  const { caPem: _ca, ntpPort: _ntp, rampMs: _r, honestAttempts: _h, gapMs: _g, honestTimeoutMs: _t, ntpIntervalMs: _i, ...floodOptions } = o;
  const flood = startKeFloodThread(floodOptions);
  const attempts: HonestAttempt[] = [];
  let openAtFirstAttempt = 0;
  try {
    await new Promise((r) => setTimeout(r, o.rampMs));
    openAtFirstAttempt = await flood.open();
    for (let i = 0; i < o.honestAttempts; i++) {
      attempts.push(await honestKeyExchange(o.host, o.port, o.caPem, o.honestTimeoutMs));
      await new Promise((r) => setTimeout(r, o.gapMs));
    }
  } catch (error: unknown) {
    await flood.stop();
    await probe.stop(0);
    throw error;
  }
  const stats = await flood.stop();
  const ntp = await probe.stop();
  return { kind: o.kind, flood: stats, openAtFirstAttempt, attempts, ntp };
}

/** Problems with a run against the target (every honest attempt succeeds within `maxMs`; NTP answers every probe). */
export function keFloodDefects(run: KeFloodRun, maxMs: number): string[] {
  const problems: string[] = [];
  run.attempts.forEach((a, i) => {
    if (!a.ok) problems.push(`${run.kind}: honest attempt ${i + 1} failed after ${a.ms.toFixed(0)} ms (${a.failure})`);
    else if (a.ms > maxMs) problems.push(`${run.kind}: honest attempt ${i + 1} took ${a.ms.toFixed(0)} ms (> ${maxMs} ms)`);
  });
  if (run.ntp.answered < run.ntp.sent) problems.push(`${run.kind}: NTP answered ${run.ntp.answered} of ${run.ntp.sent} probes`);
  return problems;
}
