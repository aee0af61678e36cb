/**
 * The kernel-stamped sender of a generator thread: the native addon's client mode (src/native), so the
 * generator measures the server and not itself.
 *
 *   t1 = the kernel's software TX stamp of that very datagram (SO_TIMESTAMPING, read from the error queue;
 *        OPT_ID numbers the datagrams of a socket 0, 1, 2, ... in send order, failed sends take no number);
 *   t4 = the kernel's software RX stamp of its reply (taken when loopback hands the reply to the stack);
 *   t2, t3 = the server's receive and transmit timestamps from the reply.
 * On loopback both ends read one clock, so θ = ((t2 − t1) + (t3 − t4)) / 2 is the server's error alone:
 * however late this thread reads its sockets, the stamps stay where the kernel put them.
 *
 * Matching: a reply names its request and the request's generation in its origin timestamp (pool.ts),
 * and a transmit stamp names its datagram by OPT_ID. A reply to an earlier generation (a resend after a
 * loss) is counted stale; a reply to a request already declared lost is counted late; neither becomes a
 * sample. A transmit stamp must also lie between the clock reads taken around its send call, which
 * catches any slip of the id-to-request mapping. A send batch in which the kernel refused a datagram
 * cannot say which one it was: its requests get no transmit stamp (counted), and the id count continues
 * from what the kernel did send.
 *
 * The loop is synchronous: it polls every socket (TX stamps first, then recvmmsg batches), sends what is
 * due with sendmmsg from the shared block, and sleeps up to `tickUs` with Atomics.wait when idle. The
 * addon's uv_poll mode is not used: a pending error-queue entry (every TX stamp) reads as POLLERR, which
 * libuv's poll handle treats as an error and stops on.
 */
import type { MessagePort } from 'node:worker_threads';
import { NTP_UNIX_OFFSET_S, monotonicS } from '../../src/runtime/clock.js';
import { getAead } from '../../src/core/crypto/aead.js';
import {
  META_WORDS,
  MetaWord,
  NATIVE_COUNTERS,
  NativeCounter,
  NativeLayout,
  RxFlag,
  StampMode,
  addressBytes,
  errnoName,
  type NativeHandle,
  type NativeUdpAddon,
} from '../../src/runtime/addon.js';
import { IN_FLIGHT, ORIGIN_OFFSET, RECEIVE_OFFSET, TRANSMIT_OFFSET, TWO_POW_32, RequestPool, readU32BE } from './pool.js';
import { RequestTracker } from './tracker.js';
import type { GoMessage, UdpWorkerData, UdpWorkerResult } from './protocol.js';

/** Per-socket ring mapping OPT_ID → request; larger than anything a socket keeps in flight. */
const TX_RING = 1 << 15;
/** recvmmsg batches per socket per loop iteration. */
const MAX_RECV_ROUNDS = 16;
/** Receive buffer of each client socket (the kernel caps it at net.core.rmem_max). */
const RECEIVE_BUFFER_BYTES = 4 << 20;
/** Longest idle sleep, ms. */
const MAX_SLEEP_MS = 2;
/** TX stamp triples read per readTxStamps call. */
const TX_STAMPS_PER_READ = 256;

/** One connected client socket and its views of the shared block. */
interface ClientSocket {
  readonly index: number;
  readonly handle: NativeHandle;
  readonly meta: Uint32Array;
  readonly counters: Float64Array;
  readonly rx: Uint8Array;
  readonly tx: Uint8Array;
  /** OPT_ID the next datagram sent on this socket gets. */
  nextTxId: number;
  /** Counter values after the last send call. */
  sentSeen: number;
  errorsSeen: number;
  readonly ringRequest: Int32Array;
  readonly ringId: Float64Array;
}

/** Opens `count` connected kernel-stamping sockets to the target; throws with the errno name on failure. */
function openSockets(addon: NativeUdpAddon, data: UdpWorkerData, count: number): ClientSocket[] {
  const peer = addressBytes(data.targetAddress);
  if (peer === undefined) throw new Error(`kernel-stamped sender needs an IP literal target, got "${data.targetAddress}"`);
  const local = peer.family === 4 ? new Uint8Array(4) : new Uint8Array(16);
  const sockets: ClientSocket[] = [];
  for (let j = 0; j < count; j++) {
    const block = new ArrayBuffer(NativeLayout.blockBytes);
    const handle = addon.openUdp(peer.family, local, 0, 0, 0, RECEIVE_BUFFER_BYTES, StampMode.receiveTransmit, peer.bytes, data.target.port, block);
    if (typeof handle === 'number') {
      for (const s of sockets) addon.close(s.handle);
      throw new Error(`cannot open a kernel-stamping UDP socket to ${data.targetAddress}:${data.target.port}: ${errnoName(handle)}`);
    }
    sockets.push({
      index: j,
      handle,
      meta: new Uint32Array(block, NativeLayout.metaOffset, NativeLayout.slots * META_WORDS),
      counters: new Float64Array(block, 0, NATIVE_COUNTERS),
      rx: new Uint8Array(block, NativeLayout.rxOffset, NativeLayout.slots * NativeLayout.slotBytes),
      tx: new Uint8Array(block, NativeLayout.txOffset, NativeLayout.slots * NativeLayout.slotBytes),
      nextTxId: 0,
      sentSeen: 0,
      errorsSeen: 0,
      ringRequest: new Int32Array(TX_RING),
      ringId: new Float64Array(TX_RING).fill(-1),
    });
  }
  return sockets;
}

/**
 * Runs one kernel-stamped UDP sender thread: opens its sockets, builds its pool, says ready, waits for
 * `go`, then loops until the run ends and posts its result. `waitForGo` is the thread's message wait.
 */
export async function runNativeSender(
  addon: NativeUdpAddon,
  data: UdpWorkerData,
  port: MessagePort,
  waitForGo: () => Promise<GoMessage>,
  runTag: number,
): Promise<UdpWorkerResult> {
  // Sockets first: a socket's first replies after SO_TIMESTAMPING is switched on may come unstamped
  // (the kernel enables stamping asynchronously), and building the pool gives it time.
  const sockets = openSockets(addon, data, data.socketsPerThread);
  try {
    const nts = data.mode === 'nts';
    const pool = new RequestPool(nts ? 'nts' : 'plain', data.poolSize, runTag, data.session, data.placeholders);
    const tracker = new RequestTracker(pool, {
      sockets: sockets.length,
      matchOffset: ORIGIN_OFFSET,
      checkReplies: true,
      s2cCipher: nts && data.session !== undefined ? getAead(data.session.aeadId)?.newCipher(data.session.s2c) : undefined,
      verifyEvery: data.verifyEvery,
    });
    port.postMessage({ type: 'ready' });
    const go = await waitForGo();
    return loop(addon, data, sockets, tracker, go);
  } finally {
    for (const s of sockets) addon.close(s.handle);
  }
}

function loop(addon: NativeUdpAddon, data: UdpWorkerData, sockets: ClientSocket[], tracker: RequestTracker, go: GoMessage): UdpWorkerResult {
  const size = tracker.pool.size;
  const { state, socketOf, inFlight } = tracker;

  // Realtime (kernel stamps' clock) as seconds since a whole-second base, so doubles keep sub-ns resolution.
  const clockOut = new Float64Array(2);
  addon.realtime(clockOut);
  const baseUnixS = clockOut[0] ?? 0;
  const baseNtpS = (baseUnixS + NTP_UNIX_OFFSET_S) >>> 0;
  const realNow = (): number => {
    addon.realtime(clockOut);
    return (clockOut[0] ?? 0) - baseUnixS + (clockOut[1] ?? 0) / 1e9;
  };
  const serverTime = (b: Uint8Array, at: number): number => ((readU32BE(b, at) - baseNtpS) | 0) + readU32BE(b, at + 4) / TWO_POW_32;
  // Scheduling (timeouts, pacing, the run's bounds) uses the process-wide monotonic clock, in seconds.
  const mono = monotonicS;

  // Per request: the OPT_ID of its datagram, its kernel TX stamp, and the clock reads around its send call.
  const txIdOf = new Float64Array(size).fill(-1);
  const t1 = new Float64Array(size);
  const t1Known = new Uint8Array(size);
  const sendLo = new Float64Array(size);
  const sendHi = new Float64Array(size);

  let sendErrors = 0;
  let loops = 0;
  let noRxStamp = 0;
  let noTxStamp = 0;
  let txOutside = 0;
  let txUnmatched = 0;
  let nextSocket = 0;

  const startMono = mono();
  const measureFrom = go.measureFromMonoS;
  const stopAt = go.stopMonoS;
  const closedLoop = data.ratePerS === undefined;
  const refillAtLeast = Math.max(1, data.window >> 2);
  const ratePerS = data.ratePerS ?? 0;
  const timeoutS = data.timeoutMs / 1000;
  const tickMs = data.tickUs / 1000;
  const spin = data.pacing === 'spin';
  const sleepCell = new Int32Array(new SharedArrayBuffer(4));
  const sleepMs = (ms: number): void => {
    if (ms > 0.005) Atomics.wait(sleepCell, 0, 0, ms);
  };

  const stampsOut = new Float64Array(TX_STAMPS_PER_READ * 3);
  const drainTxStamps = (s: ClientSocket): void => {
    for (;;) {
      const k = addon.readTxStamps(s.handle, stampsOut);
      for (let j = 0; j < k; j++) {
        const id = stampsOut[j * 3] ?? -1;
        const at = (stampsOut[j * 3 + 1] ?? 0) - baseUnixS + (stampsOut[j * 3 + 2] ?? 0) / 1e9;
        const slot = id % TX_RING;
        if (s.ringId[slot] !== id) {
          txUnmatched++;
          continue;
        }
        const idx = s.ringRequest[slot] ?? -1;
        s.ringId[slot] = -1;
        if (idx < 0 || state[idx] !== IN_FLIGHT || txIdOf[idx] !== id || socketOf[idx] !== s.index) {
          txUnmatched++;
          continue;
        }
        if (at < (sendLo[idx] ?? 0) || at > (sendHi[idx] ?? 0)) {
          txOutside++;
          continue;
        }
        t1[idx] = at;
        t1Known[idx] = 1;
      }
      if (k < TX_STAMPS_PER_READ) return;
    }
  };

  /** Sends `count` (≤ slots) new requests on socket s in one sendmmsg. */
  const sendBatch = (s: ClientSocket, count: number, nowMono: number): void => {
    const meta = s.meta;
    const batch = batchIdx;
    for (let k = 0; k < count; k++) {
      const idx = tracker.claim();
      const packet = tracker.packets[idx] ?? new Uint8Array(0);
      s.tx.set(packet, k * NativeLayout.slotBytes);
      meta[k * META_WORDS + MetaWord.txLength] = packet.length;
      batch[k] = idx;
    }
    const lo = realNow();
    addon.sendBatch(s.handle, count);
    const hi = realNow();
    const sentNow = s.counters[NativeCounter.sent] ?? 0;
    const errorsNow = s.counters[NativeCounter.sendErrors] ?? 0;
    const sentDelta = sentNow - s.sentSeen;
    const errorDelta = errorsNow - s.errorsSeen;
    s.sentSeen = sentNow;
    s.errorsSeen = errorsNow;
    const clean = errorDelta === 0 && sentDelta === count;
    if (!clean) sendErrors += errorDelta;
    const measured = nowMono >= measureFrom;
    for (let k = 0; k < count; k++) {
      const idx = batch[k] ?? 0;
      tracker.markSent(idx, s.index, nowMono, measured);
      t1Known[idx] = 0;
      sendLo[idx] = lo;
      sendHi[idx] = hi;
      if (clean) {
        const id = s.nextTxId + k;
        txIdOf[idx] = id;
        const slot = id % TX_RING;
        s.ringId[slot] = id;
        s.ringRequest[slot] = idx;
      } else {
        txIdOf[idx] = -1;
      }
    }
    s.nextTxId += sentDelta;
  };
  const batchIdx = new Int32Array(NativeLayout.slots);

  const handleReply = (s: ClientSocket, i: number): void => {
    const meta = s.meta;
    const base = i * META_WORDS;
    const flags = meta[base + MetaWord.rxFlags] ?? 0;
    const length = meta[base + MetaWord.rxLength] ?? 0;
    const at = i * NativeLayout.slotBytes;
    const rx = s.rx;
    if ((flags & RxFlag.truncated) !== 0) {
      tracker.unmatched++;
      return;
    }
    const idx = tracker.match(rx, at, length, s.index);
    if (idx < 0) return;
    // The request's TX stamp is on the error queue by now (loopback stamps it inside the send call);
    // stamps are read lazily, many per drain, while their requests are still in flight.
    if (t1Known[idx] !== 1 && txIdOf[idx] !== -1) drainTxStamps(s);
    tracker.complete(idx, length);
    if (!tracker.accept(rx, at, length, idx)) return;
    if ((flags & RxFlag.kernelStamp) === 0) {
      noRxStamp++;
      return;
    }
    if (t1Known[idx] !== 1) {
      noTxStamp++;
      return;
    }
    const t4 = (meta[base + MetaWord.stampSecondsHigh] ?? 0) * TWO_POW_32 + (meta[base + MetaWord.stampSecondsLow] ?? 0) - baseUnixS + (meta[base + MetaWord.stampNanoseconds] ?? 0) / 1e9;
    tracker.recordSample(t1[idx] ?? 0, serverTime(rx, at + RECEIVE_OFFSET), serverTime(rx, at + TRANSMIT_OFFSET), t4);
  };

  /** Reads every socket's replies (each reply's TX stamp was queued before the reply could exist). */
  const receiveAll = (): number => {
    let got = 0;
    for (const s of sockets) {
      for (let round = 0; round < MAX_RECV_ROUNDS; round++) {
        const n = addon.recv(s.handle);
        if (n <= 0) break;
        for (let i = 0; i < n; i++) handleReply(s, i);
        got += n;
        if (n < NativeLayout.slots) break;
      }
    }
    return got;
  };

  // Bucket size: two ticks, or up to 2 ms (at most 128 requests) for wake-ups that come late on a busy machine.
  const creditCap = Math.max(2, (ratePerS * tickMs * 2) / 1000, Math.min(ratePerS * 0.002, 128));
  let credit = 0;
  let lastCredit = startMono;
  let sending = true;
  let endSend = startMono;
  let lastSweep = startMono;
  const stopSending = (nowMono: number): void => {
    if (!sending) return;
    sending = false;
    endSend = nowMono;
  };

  for (;;) {
    loops++;
    const got = receiveAll();
    let now = mono();
    if (now - lastSweep >= 0.005) {
      tracker.sweep(now - timeoutS); // the lost are rebuilt before their slot is reused
      lastSweep = now;
    }
    if (sending && (tracker.sentTotal >= data.maxRequests || now >= stopAt)) stopSending(now);
    let sentNow = 0;
    if (sending) {
      if (closedLoop) {
        for (const s of sockets) {
          // Refill in batches of at least a quarter window: fewer, fuller sendmmsg calls.
          const mine = inFlight[s.index] ?? 0;
          let room = Math.min(data.window - mine, data.maxRequests - tracker.sentTotal);
          if (room < refillAtLeast && mine > 0) continue;
          while (room > 0) {
            const c = Math.min(room, NativeLayout.slots);
            sendBatch(s, c, now);
            sentNow += c;
            room -= c;
          }
        }
      } else {
        // Token bucket (creditCap): a sender that overslept does not catch up with one large burst
        // (which would overflow the server's socket); the achieved rate shows what it could send.
        credit = Math.min(credit + (now - lastCredit) * ratePerS, creditCap);
        lastCredit = now;
        let due = Math.min(Math.floor(credit), data.maxRequests - tracker.sentTotal);
        credit -= due;
        while (due > 0) {
          const s = sockets[nextSocket];
          nextSocket = nextSocket + 1 === sockets.length ? 0 : nextSocket + 1;
          if (s === undefined) break;
          const c = Math.min(due, NativeLayout.slots);
          sendBatch(s, c, now);
          sentNow += c;
          due -= c;
        }
      }
    } else if (tracker.outstanding() <= 0 || now >= endSend + timeoutS) {
      break;
    }
    if (got > 0 || sentNow > 0 || spin) continue;
    // Idle: sleep a tick, or until the next packet is due when that is later (at most MAX_SLEEP_MS, so the
    // sweep and the stop time are seen). Replies keep their kernel stamps meanwhile.
    now = mono();
    // Closed loop: half a tick, so a fast server does not wait long for its next batch.
    let waitMs = closedLoop ? tickMs / 2 : tickMs;
    if (sending && !closedLoop && ratePerS > 0) waitMs = Math.max(waitMs, ((1 - credit) / ratePerS) * 1000);
    sleepMs(Math.min(waitMs, MAX_SLEEP_MS));
  }

  tracker.expireAll();
  return tracker.result({
    sendErrors,
    measuredS: Math.max(0, endSend - Math.max(startMono, measureFrom)),
    loops,
    stamps: { noRxStamp, noTxStamp, txStampOutsideSend: txOutside, txStampUnmatched: txUnmatched },
  });
}
