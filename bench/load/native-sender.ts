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
 * The sockets, the OPT_ID ring, the stamp reads and the poll loop are kernel-socket.ts's (shared with
 * exchange-sender.ts). The loop is synchronous: it polls every socket (recvmmsg batches, TX stamps read
 * when a reply needs one), sends what is due with sendmmsg from the shared block, and sleeps up to
 * `tickUs` with Atomics.wait when idle. The addon's uv_poll mode is not used: a pending error-queue entry
 * (every TX stamp) reads as POLLERR, which libuv's poll handle treats as an error and stops on.
 */
import { getAead } from '../../src/core/crypto/aead.js';
import { META_WORDS, MetaWord, NativeLayout, RxFlag, type NativeUdpAddon } from '../../src/runtime/addon.js';
import { KernelStamps, Pacer, closeKernelSockets, openKernelSockets, runLoop, type KernelSender, type KernelSocket, type KernelSocketSizes, type ReplyHandler } from './kernel-socket.js';
import { IN_FLIGHT, ORIGIN_OFFSET, RECEIVE_OFFSET, TRANSMIT_OFFSET, RequestPool } from './pool.js';
import { RequestTracker } from './tracker.js';
import type { GoMessage, UdpWorkerData, UdpWorkerResult } from './protocol.js';

/** A socket keeps up to a window in flight, refilled a batch at a time: a large ring, deep reads, a large buffer. */
const SIZES: KernelSocketSizes = { ring: 1 << 15, receiveBufferBytes: 4 << 20, recvRounds: 16, stampsPerRead: 256 };

/**
 * Runs one kernel-stamped UDP sender thread: opens its sockets, builds its pool, says ready, waits for
 * `go`, then loops until the run ends and posts its result. `waitForGo` is the thread's message wait.
 */
export const runNativeSender: KernelSender = async (addon, data, port, waitForGo, runTag) => {
  // Sockets first: a socket's first replies after SO_TIMESTAMPING is switched on may come unstamped
  // (the kernel enables stamping asynchronously), and building the pool gives it time.
  const sockets = openKernelSockets(addon, data, SIZES, 'kernel-stamped sender', () => ({}));
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
    closeKernelSockets(addon, sockets);
  }
};

function loop(addon: NativeUdpAddon, data: UdpWorkerData, sockets: KernelSocket[], tracker: RequestTracker, go: GoMessage): UdpWorkerResult {
  const { state, socketOf, inFlight } = tracker;
  // Stamps are kept per pool request; one is live while the request is in flight on its socket.
  const stamps = new KernelStamps(addon, sockets, tracker.pool.size, SIZES, state, IN_FLIGHT, socketOf);
  const { t1, t1Known } = stamps;
  const pace = new Pacer(data, go);

  let noRxStamp = 0;
  let noTxStamp = 0;
  let nextSocket = 0;
  const refillAtLeast = Math.max(1, data.window >> 2);

  const batchIdx = new Int32Array(NativeLayout.slots);
  /** Sends `count` (≤ slots) new requests on socket s in one sendmmsg. */
  const sendBatch = (s: KernelSocket, count: number, nowMono: number): void => {
    const meta = s.meta;
    const batch = batchIdx;
    for (let k = 0; k < count; k++) {
      const idx = tracker.claim();
      const packet = tracker.packets[idx] ?? new Uint8Array(0);
      s.tx.set(packet, k * NativeLayout.slotBytes);
      meta[k * META_WORDS + MetaWord.txLength] = packet.length;
      batch[k] = idx;
    }
    stamps.send(s, batch, count);
    const measured = nowMono >= pace.measureFrom;
    for (let k = 0; k < count; k++) tracker.markSent(batch[k] ?? 0, s.index, nowMono, measured);
  };

  const handleReply: ReplyHandler<KernelSocket> = (s, base, at, flags, length) => {
    const rx = s.rx;
    if ((flags & RxFlag.truncated) !== 0) {
      tracker.unmatched++;
      return;
    }
    const idx = tracker.match(rx, at, length, s.index);
    if (idx < 0) return;
    // The request's TX stamp is on the error queue by now (loopback stamps it inside the send call);
    // stamps are read lazily, many per drain, while their requests are still in flight.
    if (stamps.stampPending(idx)) stamps.drainTxStamps(s);
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
    tracker.recordSample(t1[idx] ?? 0, stamps.serverTime(rx, at + RECEIVE_OFFSET), stamps.serverTime(rx, at + TRANSMIT_OFFSET), stamps.rxTime(s.meta, base));
  };

  const sendDue = (now: number): number => {
    let sentNow = 0;
    if (pace.closedLoop) {
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
      return sentNow;
    }
    // Fixed rate: the whole credit is spent now, spread over the sockets in turn.
    let due = pace.due(now, data.maxRequests - tracker.sentTotal);
    pace.credit -= due;
    while (due > 0) {
      const s = sockets[nextSocket];
      nextSocket = nextSocket + 1 === sockets.length ? 0 : nextSocket + 1;
      if (s === undefined) break;
      const c = Math.min(due, NativeLayout.slots);
      sendBatch(s, c, now);
      sentNow += c;
      due -= c;
    }
    return sentNow;
  };

  runLoop(pace, data.maxRequests, {
    receive: () => stamps.receiveAll(handleReply),
    sweep: (cutoff) => tracker.sweep(cutoff),
    sentTotal: () => tracker.sentTotal,
    send: sendDue,
    outstanding: () => tracker.outstanding(),
  });

  tracker.expireAll();
  return tracker.result({
    sendErrors: stamps.sendErrors,
    measuredS: pace.measuredS(),
    loops: pace.loops,
    stamps: { noRxStamp, noTxStamp, txStampOutsideSend: stamps.txOutside, txStampUnmatched: stamps.txUnmatched },
  });
}
