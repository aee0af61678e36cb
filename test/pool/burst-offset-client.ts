/**
 * A loopback load for measuring the served offset under batching, on two threads of its own:
 *  - the bulk thread sends, each round, a burst of requests, lets the probe go, then a second burst, and
 *    drains the replies;
 *  - the probe thread is otherwise idle: each round it sends one request between the two bursts and
 *    measures the signed offset θ = ((T2 − T1) + (T3 − T4)) / 2 of its reply (RFC 5905 §8).
 * While the server works on the first burst, the probe and the second burst queue up behind it, so the
 * probe tends to open a large batch: the worst place for an uncompensated transmit timestamp. The probe
 * reads nothing but its own replies, so its T4 is not delayed behind the bulk replies (a client reading a
 * burst of replies back to back adds its own read time to every later one). Both threads read the
 * server's WallClock (shared anchor): the true offset is 0, and θ is the server's timestamping error
 * plus path asymmetry.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { NTP_UNIX_OFFSET_S, WallClock } from '../../src/clock.js';

const ROLE = 'ntsd-test-burst-offset-client';
const TWO_POW_32 = 4_294_967_296;
/** Int32 slots of the shared handshake. */
const READY = 0;
const GO = 1;
const SENT = 2;

/** Options of {@link runBurstProbe}. */
export interface BurstProbeOptions {
  /** The server's clock anchor (WallClock.shared). */
  readonly clockShared: SharedArrayBuffer;
  readonly port: number;
  /** Bulk requests, sent `burst` at a time and reused round-robin. */
  readonly bulk: readonly Uint8Array[];
  /** Probe requests, one per round; each has a distinct transmit timestamp. */
  readonly probes: readonly Uint8Array[];
  /** Bulk requests in each of the two bursts of a round. */
  readonly burst: number;
  /** Pause after each round, milliseconds. */
  readonly gapMs: number;
}

interface ThreadInit {
  readonly role: typeof ROLE;
  readonly kind: 'bulk' | 'probe';
  readonly options: BurstProbeOptions;
  readonly handshake: SharedArrayBuffer;
}

/** One probe reply. */
export interface ProbeSample {
  /** Signed offset θ, microseconds. */
  readonly offsetUs: number;
  /** Round-trip delay δ = (T4 − T1) − (T3 − T2), microseconds. */
  readonly delayUs: number;
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

function start(init: ThreadInit): Promise<ProbeSample[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: init });
    let done = false;
    worker.once('message', (msg: unknown) => {
      done = true;
      if (isResult(msg)) resolve(msg.samples);
      else reject(new Error('burst client: unexpected message'));
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (!done) reject(new Error(`burst client thread exited (${code})`));
    });
  });
}

/** Runs one round per probe; resolves with the probe samples (lost probes are left out). */
export async function runBurstProbe(options: BurstProbeOptions): Promise<ProbeSample[]> {
  const handshake = new SharedArrayBuffer(12);
  const [, samples] = await Promise.all([
    start({ role: ROLE, kind: 'bulk', options, handshake }),
    start({ role: ROLE, kind: 'probe', options, handshake }),
  ]);
  return samples;
}

async function openSocket(): Promise<Socket> {
  const socket = createSocket({ type: 'udp4', recvBufferSize: 1 << 20 });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  return socket;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function bulkThread(o: BurstProbeOptions, sync: Int32Array): Promise<void> {
  const socket = await openSocket();
  let outstanding = 0;
  let wake: (() => void) | undefined;
  socket.on('message', () => {
    if (--outstanding <= 0) wake?.();
  });
  let next = 0;
  // dgram sends to an address string leave a tick later; resolves once the burst is out.
  const sendBurst = (): Promise<void> =>
    new Promise((resolve) => {
      for (let k = 0; k < o.burst; k++) {
        const packet = o.bulk[next++ % o.bulk.length];
        if (packet !== undefined) socket.send(packet, o.port, '127.0.0.1', k === o.burst - 1 ? () => resolve() : undefined);
      }
    });
  for (let round = 1; round <= o.probes.length; round++) {
    // Wait (at most 200 ms) until the probe thread is parked for this round.
    const deadline = Date.now() + 200;
    while (Atomics.load(sync, READY) < round && Date.now() < deadline) Atomics.wait(sync, READY, round - 1, 20);
    outstanding = 2 * o.burst;
    const replies = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 100);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    await sendBurst();
    // Release the probe and wait (blocking, at most 5 ms) until it is out, then the second burst.
    Atomics.store(sync, GO, round);
    Atomics.notify(sync, GO);
    Atomics.wait(sync, SENT, round - 1, 5);
    await sendBurst();
    await replies;
    wake = undefined;
    await sleep(o.gapMs);
  }
  // Release a probe thread still parked on a round that will not come.
  Atomics.store(sync, GO, o.probes.length + 1);
  Atomics.notify(sync, GO);
  socket.close();
  parentPort?.postMessage({ samples: [] });
}

async function probeThread(o: BurstProbeOptions, sync: Int32Array, clock: WallClock): Promise<void> {
  const socket = await openSocket();
  let waiter: ((reply: Buffer, t4: number) => void) | undefined;
  socket.on('message', (msg: Buffer) => {
    const t4 = clock.nowUnixS();
    waiter?.(msg, t4);
  });
  const samples: ProbeSample[] = [];
  for (let round = 1; round <= o.probes.length; round++) {
    const packet = o.probes[round - 1];
    if (packet === undefined) break;
    const got = new Promise<{ reply: Buffer; t4: number } | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), 100);
      waiter = (reply, t4) => {
        if (!sameOrigin(reply, packet)) return; // a late reply of an earlier round
        clearTimeout(timer);
        resolve({ reply, t4 });
      };
    });
    Atomics.store(sync, READY, round);
    Atomics.notify(sync, READY);
    // Parked until the bulk thread starts this round's burst (blocking: this thread has nothing else to do).
    Atomics.wait(sync, GO, round - 1, 200);
    const t1 = clock.nowUnixS();
    socket.send(packet, o.port, '127.0.0.1', () => {
      Atomics.store(sync, SENT, round);
      Atomics.notify(sync, SENT);
    });
    const r = await got;
    waiter = undefined;
    if (r === undefined) continue;
    const t2 = ntpToUnixS(r.reply, 32);
    const t3 = ntpToUnixS(r.reply, 40);
    samples.push({ offsetUs: ((t2 - t1 + (t3 - r.t4)) / 2) * 1e6, delayUs: (r.t4 - t1 - (t3 - t2)) * 1e6 });
  }
  socket.close();
  parentPort?.postMessage({ samples });
}

if (!isMainThread && isInit(workerData)) {
  const init = workerData;
  const sync = new Int32Array(init.handshake);
  if (init.kind === 'bulk') void bulkThread(init.options, sync);
  else void probeThread(init.options, sync, new WallClock(init.options.clockShared));
}
