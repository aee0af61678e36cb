/**
 * One load-generator thread. A UDP thread owns its sockets and a pool of precomputed requests (pool.ts:
 * NTS-sealed with C2S, each with its own Unique Identifier and a transmit timestamp naming the request
 * and its generation; cookies reused round-robin since the server is stateless); it sends at a fixed rate
 * or keeps a window outstanding, matches replies by the echoed origin timestamp, checks every reply
 * cheaply and a sample fully, and records delay, |offset| and the server's residence time. A KE thread
 * runs several NTS-KE sessions back to back. All stop by themselves and post one result message.
 *
 * Two UDP senders: the kernel-stamped one (native-sender.ts, the addon's client mode; t1 and t4 are the
 * kernel's stamps of the datagrams themselves), used whenever the addon loads, and the dgram one here
 * (Node sockets; t1 read just before the send, t4 when the message callback runs, so the generator's own
 * queueing shows up in every figure), kept for machines without the addon and labelled "user-space".
 */
import { isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { createSocket, type Socket } from 'node:dgram';
import { randomFillSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { WallClock, monotonicS, NTP_UNIX_OFFSET_S } from '../../src/runtime/clock.js';
import { getAead } from '../../src/core/crypto/aead.js';
import { performKeyExchange } from '../../src/cli/ke-client.js';
import { loadNativeUdp } from '../../src/runtime/addon.js';
import { UsHistogram } from './histogram.js';
import { runExchangeSender } from './exchange-sender.js';
import { runNativeSender } from './native-sender.js';
import { ORIGIN_OFFSET, RECEIVE_OFFSET, TRANSMIT_OFFSET, TWO_POW_32, RequestPool } from './pool.js';
import { RequestTracker } from './tracker.js';
import type { GoMessage, KeWorkerData, KeWorkerResult, LoadWorkerData, UdpWorkerData, WorkerMessage } from './protocol.js';

/** Most packets a tick-paced sender sends in one go (so replies keep being read while it catches up). */
const MAX_BURST = 2048;

function isLoadWorkerData(value: unknown): value is LoadWorkerData {
  if (typeof value !== 'object' || value === null) return false;
  const role: unknown = (value as { role?: unknown }).role;
  return role === 'udp' || role === 'ke';
}

function isGoMessage(value: unknown): value is GoMessage {
  return typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'go';
}

function post(port: MessagePort, message: WorkerMessage): void {
  port.postMessage(message);
}

function waitForGo(port: MessagePort): Promise<GoMessage> {
  return new Promise((resolve) => {
    const onMessage = (message: unknown): void => {
      if (!isGoMessage(message)) return;
      port.off('message', onMessage);
      resolve(message);
    };
    port.on('message', onMessage);
  });
}

function randomU32(): number {
  const b = new Uint8Array(4);
  randomFillSync(b);
  return ((b[0] ?? 0) * 0x1000000 + ((b[1] ?? 0) << 16) + ((b[2] ?? 0) << 8) + (b[3] ?? 0)) >>> 0;
}


/** The dgram sender (user-space stamps): Node sockets, t1 read before the send, t4 in the message callback. */
function runUdp(data: UdpWorkerData, port: MessagePort): void {
  const clock = new WallClock(data.clockShared);
  const pool = new RequestPool(data.mode, data.poolSize, randomU32(), data.session, data.placeholders);
  const echo = data.mode === 'echo';
  const nts = data.mode === 'nts';
  const tracker = new RequestTracker(pool, {
    sockets: data.socketsPerThread,
    matchOffset: echo ? TRANSMIT_OFFSET : ORIGIN_OFFSET,
    checkReplies: !echo,
    s2cCipher: nts && data.session !== undefined ? getAead(data.session.aeadId)?.newCipher(data.session.s2c) : undefined,
    verifyEvery: data.verifyEvery,
  });

  // Times are Unix seconds minus a whole-second base, so float64 keeps sub-nanosecond resolution.
  const baseUnixS = Math.floor(clock.nowUnixS());
  const baseNtpS = (baseUnixS + NTP_UNIX_OFFSET_S) >>> 0;
  const now = (): number => clock.nowUnixS() - baseUnixS;
  const serverTime = (msg: Buffer, offset: number): number =>
    ((msg.readUInt32BE(offset) - baseNtpS) | 0) + msg.readUInt32BE(offset + 4) / TWO_POW_32;

  const sockets: Socket[] = [];
  let sendErrors = 0;
  let loops = 0;
  let sending = false;
  let finished = false;
  let startRel = 0;
  let measureFromRel = 0;
  let stopRel = 0;
  let endSendRel = 0;
  let nextSocket = 0;
  const closedLoop = data.ratePerS === undefined;
  const ratePerS = data.ratePerS ?? 0;
  const timeoutS = data.timeoutMs / 1000;

  // t1 is read just before the send, on the same base as t4: the dgram sender has no kernel stamps.
  const sendOne = (j: number): void => {
    const idx = tracker.claim();
    const t1 = now();
    tracker.markSent(idx, j, t1, t1 >= measureFromRel);
    const socket = sockets[j];
    if (socket !== undefined) socket.send(tracker.packets[idx] ?? new Uint8Array(0));
  };

  const mayStillSend = (): boolean => {
    if (!sending) return false;
    if (tracker.sentTotal >= data.maxRequests || now() >= stopRel) {
      stopSending();
      return false;
    }
    return true;
  };

  const refill = (j: number): void => {
    while ((tracker.inFlight[j] ?? 0) < data.window && mayStillSend()) sendOne(j);
  };

  const onMessage = (j: number, msg: Buffer): void => {
    const t4 = now();
    if (finished) return;
    const bytes = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
    const idx = tracker.match(bytes, 0, bytes.length, j);
    if (idx < 0) return;
    tracker.complete(idx, bytes.length);
    if (tracker.accept(bytes, 0, bytes.length, idx)) {
      const t1 = tracker.sentAt[idx] ?? 0;
      if (echo) tracker.delay.record((t4 - t1) * 1e6);
      else tracker.recordSample(t1, serverTime(msg, RECEIVE_OFFSET), serverTime(msg, TRANSMIT_OFFSET), t4);
    }
    if (closedLoop) refill(j);
  };

  /** Declares requests older than the timeout lost; in closed loop, replaces them. */
  const sweep = (): void => {
    tracker.sweep(now() - timeoutS);
    if (closedLoop) for (let j = 0; j < sockets.length; j++) refill(j);
    else mayStillSend();
  };

  let sweepTimer: NodeJS.Timeout | undefined;
  let paceTimer: NodeJS.Timeout | undefined;

  const finish = (): void => {
    if (finished) return;
    finished = true;
    clearInterval(sweepTimer);
    tracker.expireAll();
    let closed = 0;
    const done = (): void => {
      closed++;
      if (closed < sockets.length) return;
      const measuredS = Math.max(0, endSendRel - Math.max(startRel, measureFromRel));
      post(port, tracker.result({ sendErrors, measuredS, loops }));
    };
    for (const socket of sockets) socket.close(done);
  };

  function stopSending(): void {
    if (!sending) return;
    sending = false;
    endSendRel = now();
    clearTimeout(paceTimer);
    // Drain: wait for the last replies, at most one timeout.
    const drainUntil = endSendRel + timeoutS;
    const drain = (): void => {
      if (tracker.outstanding() <= 0 || now() >= drainUntil) finish();
      else setTimeout(drain, 2);
    };
    setTimeout(drain, 1);
  }

  const tick = (): void => {
    loops++;
    if (!mayStillSend()) return;
    const due = Math.min(Math.floor((now() - startRel) * ratePerS), data.maxRequests);
    let burst = Math.min(due - tracker.sentTotal, MAX_BURST);
    while (burst > 0) {
      sendOne(nextSocket);
      nextSocket = nextSocket + 1 === sockets.length ? 0 : nextSocket + 1;
      burst--;
    }
    if (data.pacing === 'spin') setImmediate(tick);
    else paceTimer = setTimeout(tick, 1);
  };

  const open = (j: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const socket = createSocket(data.target.host.includes(':') ? 'udp6' : 'udp4');
      sockets[j] = socket;
      socket.once('error', reject);
      socket.on('message', (msg: Buffer) => onMessage(j, msg));
      socket.connect(data.target.port, data.target.host, () => {
        socket.off('error', reject);
        socket.on('error', () => {
          sendErrors++;
        });
        // Large buffers so a burst is not dropped by the generator's own socket.
        try {
          socket.setRecvBufferSize(4 * 1024 * 1024);
          socket.setSendBufferSize(4 * 1024 * 1024);
        } catch {
          // The kernel may cap these; the defaults still work.
        }
        resolve();
      });
    });

  void (async () => {
    for (let j = 0; j < data.socketsPerThread; j++) await open(j);
    post(port, { type: 'ready' });
    const go = await waitForGo(port);
    const toRel = (monoS: number): number => monoS - monotonicS() + now();
    startRel = now();
    measureFromRel = toRel(go.measureFromMonoS);
    stopRel = toRel(go.stopMonoS);
    sending = true;
    sweepTimer = setInterval(sweep, 5);
    if (closedLoop) {
      for (let j = 0; j < sockets.length; j++) refill(j);
    } else {
      tick();
    }
  })().catch((err: unknown) => {
    post(port, { type: 'failed', message: err instanceof Error ? err.message : String(err) });
  });
}

/**
 * The kernel-stamped senders (native-sender.ts, or exchange-sender.ts for client exchanges); the main
 * thread only asks for them when the addon loads.
 */
function runKernelStamped(data: UdpWorkerData, port: MessagePort): void {
  const loaded = loadNativeUdp();
  if (!loaded.ok) throw new Error(`kernel timestamps unavailable: ${loaded.reason}`);
  const sender = data.client === undefined ? runNativeSender : runExchangeSender;
  sender(loaded.addon, data, port, () => waitForGo(port), randomU32()).then(
    (result) => post(port, result),
    (err: unknown) => post(port, { type: 'failed', message: err instanceof Error ? err.message : String(err) }),
  );
}

function runKe(data: KeWorkerData, port: MessagePort): void {
  const duration = new UsHistogram();
  const failed: Record<string, number> = {};
  let succeeded = 0;
  let succeededTotal = 0;
  let firstFailure: string | undefined;
  post(port, { type: 'ready' });
  void waitForGo(port).then(async (go) => {
    const startS = monotonicS();
    let endS = startS;
    const lane = async (): Promise<void> => {
      while (monotonicS() < go.stopMonoS) {
        const t0 = performance.now();
        const measured = monotonicS() >= go.measureFromMonoS;
        const outcome = await performKeyExchange({
          host: data.ke.host,
          port: data.ke.port,
          ca: data.caPem,
          ...(data.servername === undefined ? {} : { servername: data.servername }),
          ...(data.aeadIds === undefined ? {} : { aeadIds: data.aeadIds }),
          timeoutMs: data.timeoutMs,
        });
        const ms = performance.now() - t0;
        if (outcome.ok) succeededTotal++;
        if (!measured) continue;
        if (outcome.ok) {
          succeeded++;
          duration.record(ms * 1000);
        } else {
          failed[outcome.failure.kind] = (failed[outcome.failure.kind] ?? 0) + 1;
          firstFailure ??= outcome.failure.message;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
      endS = Math.max(endS, monotonicS());
    };
    await Promise.all(Array.from({ length: data.lanes }, () => lane()));
    const result: KeWorkerResult = {
      type: 'ke-result',
      succeeded,
      succeededTotal,
      failed,
      measuredS: Math.max(0, Math.min(endS, go.stopMonoS) - Math.max(startS, go.measureFromMonoS)),
      duration: duration.snapshot(),
      firstFailure,
    };
    post(port, result);
  });
}

if (!isMainThread && parentPort !== null && isLoadWorkerData(workerData)) {
  const port = parentPort;
  const data = workerData;
  try {
    if (data.role === 'udp' && data.kernelStamps) runKernelStamped(data, port);
    else if (data.role === 'udp') runUdp(data, port);
    else runKe(data, port);
  } catch (err) {
    post(port, { type: 'failed', message: err instanceof Error ? err.message : String(err) });
  }
}
