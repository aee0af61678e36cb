/**
 * A loopback probe for the served offset under batching, on a thread of its own (so its receive stamps
 * never wait for the server's event loop when the server answers inline on the main thread).
 *
 * Each round, with the server idle: send one probe request, then at once a burst of bulk requests from a
 * second socket, which is closed right after (its replies are dropped by the kernel, so this thread reads
 * nothing but the probe's reply; reading a burst of replies back to back would add the client's own read
 * time to every later one). The server reads the probe first and the bulk requests right behind it, so
 * the probe either opens a large batch (answered inline, it waits for the rest of the batch) or comes
 * back from its worker while the main thread is busy with the burst: both are delays after the transmit
 * timestamp was taken, the ones the compensation is for.
 *
 * The probe measures θ = ((T2 − T1) + (T3 − T4)) / 2 (RFC 5905 §8) with the server's WallClock (shared
 * anchor): the true offset is 0, so θ is the server's timestamping error plus path asymmetry. Both sockets
 * are connected, so a send leaves inside the send() call (no address lookup tick).
 */
import { createSocket, type Socket } from 'node:dgram';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { NTP_UNIX_OFFSET_S, WallClock } from '../../src/runtime/clock.js';

const ROLE = 'ntsd-test-burst-offset-client';
const TWO_POW_32 = 4_294_967_296;

/** Options of {@link runBurstProbe}. */
export interface BurstProbeOptions {
  /** The server's clock anchor (WallClock.shared). */
  readonly clockShared: SharedArrayBuffer;
  readonly port: number;
  /** Bulk requests, sent `burst` at a time and reused round-robin. */
  readonly bulk: readonly Uint8Array[];
  /** Probe requests, one per round; each has a distinct transmit timestamp. */
  readonly probes: readonly Uint8Array[];
  /** Bulk requests sent right behind each probe. */
  readonly burst: number;
  /** Pause after each round, milliseconds. */
  readonly gapMs: number;
}

interface ThreadInit {
  readonly role: typeof ROLE;
  readonly options: BurstProbeOptions;
}

/** One probe reply. */
export interface ProbeSample {
  /** Signed offset θ, microseconds. */
  readonly offsetUs: number;
  /** Request leg T2 − T1, microseconds. */
  readonly requestLegUs: number;
  /** Reply leg T4 − T3, microseconds. */
  readonly replyLegUs: number;
}

function isInit(data: unknown): data is ThreadInit {
  return typeof data === 'object' && data !== null && (data as { role?: unknown }).role === ROLE;
}

function isResult(msg: unknown): msg is { samples: ProbeSample[] } {
  return typeof msg === 'object' && msg !== null && Array.isArray((msg as { samples?: unknown }).samples);
}

/** NTP timestamp at `at` as Unix seconds (era 0). */
function ntpToUnixS(b: Uint8Array, at: number): number {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return view.getUint32(at) - NTP_UNIX_OFFSET_S + view.getUint32(at + 4) / TWO_POW_32;
}

function sameOrigin(reply: Uint8Array, request: Uint8Array): boolean {
  for (let i = 0; i < 8; i++) if (reply[24 + i] !== request[40 + i]) return false;
  return true;
}

/** Runs one round per probe on a new thread; resolves with the probe samples (lost probes are left out). */
export function runBurstProbe(options: BurstProbeOptions): Promise<ProbeSample[]> {
  const init: ThreadInit = { role: ROLE, options };
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: init });
    let done = false;
    worker.once('message', (msg: unknown) => {
      done = true;
      if (isResult(msg)) resolve(msg.samples);
      else reject(new Error('burst probe: unexpected message'));
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (!done) reject(new Error(`burst probe thread exited (${code})`));
    });
  });
}

async function openConnected(port: number): Promise<Socket> {
  const socket = createSocket({ type: 'udp4' });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  await new Promise<void>((resolve) => socket.connect(port, '127.0.0.1', () => resolve()));
  return socket;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function probeThread(o: BurstProbeOptions): Promise<void> {
  const clock = new WallClock(o.clockShared);
  const probe = await openConnected(o.port);
  let waiter: ((reply: Buffer, t4: number) => void) | undefined;
  probe.on('message', (msg: Buffer) => {
    const t4 = clock.nowUnixS();
    waiter?.(msg, t4);
  });
  const samples: ProbeSample[] = [];
  let next = 0;
  for (const packet of o.probes) {
    const bulk = await openConnected(o.port);
    const got = new Promise<{ reply: Buffer; t4: number } | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), 100);
      waiter = (reply, t4) => {
        if (!sameOrigin(reply, packet)) return; // a late reply of an earlier round
        clearTimeout(timer);
        resolve({ reply, t4 });
      };
    });
    const t1 = clock.nowUnixS();
    probe.send(packet);
    for (let k = 0; k < o.burst; k++) {
      const b = o.bulk[next++ % o.bulk.length];
      if (b !== undefined) bulk.send(b);
    }
    bulk.close();
    const r = await got;
    waiter = undefined;
    if (r !== undefined) {
      const t2 = ntpToUnixS(r.reply, 32);
      const t3 = ntpToUnixS(r.reply, 40);
      samples.push({ offsetUs: ((t2 - t1 + (t3 - r.t4)) / 2) * 1e6, requestLegUs: (t2 - t1) * 1e6, replyLegUs: (r.t4 - t3) * 1e6 });
    }
    await sleep(o.gapMs);
  }
  probe.close();
  parentPort?.postMessage({ samples });
}

if (!isMainThread && isInit(workerData)) {
  void probeThread(workerData.options);
}
