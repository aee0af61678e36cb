/**
 * The client-exchange sender of a generator thread (plain NTP only): many small clients instead of one
 * pool, so the server sees what a real client does from one exchange to the next. RFC 9769 interleaved
 * mode needs that: a request in interleaved form carries timestamps of the previous exchange of the same
 * client, so requests cannot be sealed or built ahead of time.
 *
 * Layout. Each socket is bound to its own source address (run.ts spreads them over 127.0.0.2 …
 * 127.0.0.254: ntsd keeps at most 4 interleave entries per client address) and carries `window` ≤ 4
 * clients. A client has at most one request outstanding; a new one goes out only after the previous
 * reply came or was declared lost. Stamps as in native-sender.ts: t1 = the kernel TX stamp of the request
 * datagram (OPT_ID), t4 = the kernel RX stamp of the reply.
 *
 * Request k+1 of a client (RFC 9769 §2 client rules, as chrony's client with `xleave` forms them,
 * ntp_core.c transmit_packet):
 *   basic form        origin 0, receive 0, transmit = a tag naming the client and its send;
 *   interleaved form  origin = the server's receive timestamp from reply k (T2_k as the server sent it),
 *                     receive = our T4_k (the kernel RX stamp of reply k as an NTP timestamp),
 *                     transmit = the tag (never equal to the receive field, so the server can tell).
 * The interleaved form is used when the client has a valid, stamped reply k; otherwise (its first request,
 * or after a loss: the server's entry for reply k may be gone, and a late reply must not match) the basic form.
 *
 * Reply to request k+1 (chrony's test 2):
 *   origin = our tag            basic reply: sample (T1_{k+1}, T2, T3, T4_{k+1}) of this exchange;
 *   origin = our receive field  interleaved reply: its transmit is the server's kernel TX stamp of reply
 *                               k, so the sample is exchange k's (T1_k, T2_k, T3 = this transmit, T4_k).
 *                               As in chrony (test A), no sample when exchange k already gave a basic one.
 * chrony's client may instead pair T1_{k+1}, T2_{k+1} with T3_k, T4_k when that interval is shorter (its
 * polling interval is long; here a client sends again right after a reply in closed loop); this sender
 * always takes exchange k's four, which on loopback (one clock) makes |θ| the server's stamping error.
 * A reply matching neither is counted `unmatched` (a late reply to a lost request whose client moved on),
 * one naming an earlier send of the client `stale`, one for a request already declared lost `late`.
 */
import { NTP_UNIX_OFFSET_S } from '../../src/runtime/clock.js';
import { META_WORDS, MetaWord, NativeLayout, RxFlag, type NativeUdpAddon } from '../../src/runtime/addon.js';
import { UsHistogram } from './histogram.js';
import { KernelStamps, Pacer, closeKernelSockets, openKernelSockets, runLoop, rxStampSeconds, type KernelSender, type KernelSocket, type KernelSocketSizes, type ReplyHandler } from './kernel-socket.js';
import { NTP_HEADER_BYTES, ORIGIN_OFFSET, RECEIVE_OFFSET, TRANSMIT_OFFSET, TWO_POW_32, readU32BE, writeU32BE } from './pool.js';
import { cheapReplyProblem } from './reply-check.js';
import type { GoMessage, UdpWorkerData, UdpWorkerResult } from './protocol.js';

/** A socket has at most 4 requests in flight (one per client): a small ring, short reads, a smaller buffer. */
const SIZES: KernelSocketSizes = { ring: 1 << 10, receiveBufferBytes: 1 << 20, recvRounds: 4, stampsPerRead: 64 };
/** LI 0, VN 4, mode 3. */
const CLIENT_LI_VN_MODE = (4 << 3) | 3;
/** Poll exponent written into requests (2^6 s, chrony's default minpoll); servers only echo it. */
const POLL = 6;
const NS_TO_FRACTION = TWO_POW_32 / 1e9;

/** A socket and the clients it carries. */
interface ClientQueue {
  /** First client of this socket; its clients are first .. first + window − 1. */
  readonly first: number;
  /** Clients of this socket with nothing outstanding, first in first out (so every client keeps its turn at a low rate). */
  readonly ready: Int32Array;
  readyHead: number;
  readyCount: number;
}
type ExchangeSocket = KernelSocket & ClientQueue;

/** Runs one client-exchange sender thread: opens its sockets, says ready, waits for `go`, loops, returns its result. */
export const runExchangeSender: KernelSender = async (addon, data, port, waitForGo, runTag) => {
  if (data.mode !== 'plain' || data.client === undefined) throw new Error('the client-exchange sender runs plain NTP only');
  const perSocket = data.window;
  const sockets = openKernelSockets(addon, data, SIZES, 'the client-exchange sender', (j): ClientQueue => {
    const ready = new Int32Array(perSocket);
    for (let k = 0; k < perSocket; k++) ready[k] = j * perSocket + k;
    return { first: j * perSocket, ready, readyHead: 0, readyCount: perSocket };
  });
  try {
    port.postMessage({ type: 'ready' });
    const go = await waitForGo();
    return loop(addon, data, sockets, perSocket, go, runTag);
  } finally {
    closeKernelSockets(addon, sockets);
  }
};

function loop(addon: NativeUdpAddon, data: UdpWorkerData, sockets: ExchangeSocket[], perSocket: number, go: GoMessage, runTag: number): UdpWorkerResult {
  const interleavedForm = data.client === 'interleaved';
  const clients = sockets.length * perSocket;
  // The transmit tag: (runTag, send number << clientBits | client), so a reply names its client and send.
  const clientBits = Math.max(1, Math.ceil(Math.log2(clients)));
  const clientSpan = 2 ** clientBits;
  const sendMask = 2 ** (32 - clientBits) - 1;

  // The outstanding request of each client.
  const inFlight = new Uint8Array(clients);
  const sends = new Float64Array(clients);
  const tag = new Uint32Array(clients);
  const sentRxSec = new Uint32Array(clients);
  const sentRxFrac = new Uint32Array(clients);
  const sentAt = new Float64Array(clients);
  const measured = new Uint8Array(clients);
  // Stamps are kept per client; a client never changes socket.
  const socketOfClient = new Uint16Array(clients);
  for (let c = 0; c < clients; c++) socketOfClient[c] = Math.floor(c / perSocket);
  const stamps = new KernelStamps(addon, sockets, clients, SIZES, inFlight, 1, socketOfClient);
  const { t1, t1Known } = stamps;
  const pace = new Pacer(data, go);
  // The previous exchange of each client (what an interleaved request carries and its reply completes).
  const prevValid = new Uint8Array(clients);
  const prevT1Known = new Uint8Array(clients);
  const prevSampled = new Uint8Array(clients);
  const prevT1 = new Float64Array(clients);
  const prevT2 = new Float64Array(clients);
  const prevT4 = new Float64Array(clients);
  const prevT2Sec = new Uint32Array(clients);
  const prevT2Frac = new Uint32Array(clients);
  const prevT4Sec = new Uint32Array(clients);
  const prevT4Frac = new Uint32Array(clients);

  const delay = new UsHistogram();
  const offset = new UsHistogram();
  const residence = new UsHistogram();
  const interleavedOffset = new UsHistogram();
  const basicOffset = new UsHistogram();
  const invalid: Record<string, number> = {};
  let offsetSumUs = 0;
  let sentTotal = 0;
  let sent = 0;
  let received = 0;
  let repliesTotal = 0;
  let unmatched = 0;
  let lost = 0;
  let stale = 0;
  let late = 0;
  let noRxStamp = 0;
  let noTxStamp = 0;
  let maxReplyBytes = 0;
  let outstanding = 0;
  let interleavedReplies = 0;
  let askedInterleaved = 0;
  let basicSamples = 0;
  let interleavedSamples = 0;
  let interleavedWithoutSample = 0;

  const batch = new Int32Array(NativeLayout.slots);
  /** Sends one request from each of `count` ready clients of socket s in one sendmmsg. */
  const sendReady = (s: ExchangeSocket, count: number, nowMono: number): void => {
    const meta = s.meta;
    const tx = s.tx;
    const isMeasured = nowMono >= pace.measureFrom;
    for (let k = 0; k < count; k++) {
      const c = s.ready[s.readyHead] ?? 0;
      s.readyHead = s.readyHead + 1 === perSocket ? 0 : s.readyHead + 1;
      s.readyCount--;
      batch[k] = c;
      const at = k * NativeLayout.slotBytes;
      tx.fill(0, at, at + NTP_HEADER_BYTES);
      tx[at] = CLIENT_LI_VN_MODE;
      tx[at + 2] = POLL;
      if (interleavedForm && prevValid[c] === 1) {
        writeU32BE(tx, at + ORIGIN_OFFSET, prevT2Sec[c] ?? 0);
        writeU32BE(tx, at + ORIGIN_OFFSET + 4, prevT2Frac[c] ?? 0);
        writeU32BE(tx, at + RECEIVE_OFFSET, prevT4Sec[c] ?? 0);
        writeU32BE(tx, at + RECEIVE_OFFSET + 4, prevT4Frac[c] ?? 0);
        sentRxSec[c] = prevT4Sec[c] ?? 0;
        sentRxFrac[c] = prevT4Frac[c] ?? 0;
        if (isMeasured) askedInterleaved++;
      } else {
        sentRxSec[c] = 0;
        sentRxFrac[c] = 0;
      }
      const n = (sends[c] ?? 0) + 1;
      sends[c] = n;
      const t = ((n & sendMask) * clientSpan + c) >>> 0;
      tag[c] = t;
      writeU32BE(tx, at + TRANSMIT_OFFSET, runTag);
      writeU32BE(tx, at + TRANSMIT_OFFSET + 4, t);
      meta[k * META_WORDS + MetaWord.txLength] = NTP_HEADER_BYTES;
    }
    stamps.send(s, batch, count);
    for (let k = 0; k < count; k++) {
      const c = batch[k] ?? 0;
      inFlight[c] = 1;
      outstanding++;
      sentAt[c] = nowMono;
      measured[c] = isMeasured ? 1 : 0;
      sentTotal++;
      if (isMeasured) sent++;
    }
  };

  /** The client's request is answered or lost: it may send again. */
  const release = (c: number): void => {
    inFlight[c] = 0;
    outstanding--;
    const s = sockets[Math.floor(c / perSocket)];
    if (s === undefined) return;
    s.ready[(s.readyHead + s.readyCount) % perSocket] = c;
    s.readyCount++;
  };

  const expire = (c: number): void => {
    if (measured[c] === 1) lost++;
    // The server's entry for the previous reply was spent by the lost request: start over in basic form,
    // so a late reply to the lost request matches nothing.
    prevValid[c] = 0;
    release(c);
  };

  const record = (a1: number, a2: number, a3: number, a4: number, interleavedSample: boolean): void => {
    const offsetUs = ((a2 - a1 + (a3 - a4)) / 2) * 1e6;
    offset.record(offsetUs);
    offsetSumUs += offsetUs;
    (interleavedSample ? interleavedOffset : basicOffset).record(offsetUs);
    delay.record((a4 - a1) * 1e6);
    residence.record((a3 - a2) * 1e6);
  };

  const handleReply: ReplyHandler<ExchangeSocket> = (s, base, at, flags, length) => {
    const meta = s.meta;
    const rx = s.rx;
    if ((flags & RxFlag.truncated) !== 0 || length < NTP_HEADER_BYTES) {
      unmatched++;
      return;
    }
    const oSec = readU32BE(rx, at + ORIGIN_OFFSET);
    const oFrac = readU32BE(rx, at + ORIGIN_OFFSET + 4);
    let c = -1;
    let interleaved = false;
    if (oSec === runTag) {
      const named = oFrac % clientSpan;
      if (named >= s.first && named < s.first + perSocket) {
        if (tag[named] !== oFrac) stale++;
        else if (inFlight[named] !== 1) late++;
        else c = named;
        if (c < 0) return;
      }
    }
    if (c < 0) {
      for (let k = s.first; k < s.first + perSocket; k++) {
        if (inFlight[k] === 1 && sentRxSec[k] === oSec && sentRxFrac[k] === oFrac && (oSec | oFrac) !== 0) {
          c = k;
          interleaved = true;
          break;
        }
      }
    }
    if (c < 0) {
      unmatched++;
      return;
    }
    if (stamps.stampPending(c)) stamps.drainTxStamps(s);
    repliesTotal++;
    if (length > maxReplyBytes) maxReplyBytes = length;
    release(c);
    const isMeasured = measured[c] === 1;
    let problem = cheapReplyProblem(rx, at, length, NTP_HEADER_BYTES, false);
    if (problem === undefined && readU32BE(rx, at + RECEIVE_OFFSET) === 0 && readU32BE(rx, at + RECEIVE_OFFSET + 4) === 0) problem = 'zero_receive_timestamp';
    if (problem === undefined && readU32BE(rx, at + TRANSMIT_OFFSET) === 0 && readU32BE(rx, at + TRANSMIT_OFFSET + 4) === 0) problem = 'zero_transmit_timestamp';
    if (problem !== undefined) {
      if (isMeasured) invalid[problem] = (invalid[problem] ?? 0) + 1;
      prevValid[c] = 0;
      return;
    }
    const rxStamped = (flags & RxFlag.kernelStamp) !== 0;
    const stampSeconds = rxStampSeconds(meta, base);
    const stampNs = meta[base + MetaWord.stampNanoseconds] ?? 0;
    const t4 = stampSeconds - stamps.baseUnixS + stampNs / 1e9;
    const t2 = stamps.serverTime(rx, at + RECEIVE_OFFSET);
    const t3 = stamps.serverTime(rx, at + TRANSMIT_OFFSET);
    const haveT1 = t1Known[c] === 1;
    let sampledBasic = false;
    if (isMeasured) {
      received++;
      if (!rxStamped) noRxStamp++;
      if (!haveT1) noTxStamp++;
    }
    if (interleaved) {
      if (isMeasured) interleavedReplies++;
      if (prevValid[c] === 1 && prevT1Known[c] === 1 && prevSampled[c] === 0) {
        if (isMeasured) {
          record(prevT1[c] ?? 0, prevT2[c] ?? 0, t3, prevT4[c] ?? 0, true);
          interleavedSamples++;
        }
      } else if (isMeasured) {
        interleavedWithoutSample++;
      }
    } else if (haveT1 && rxStamped) {
      sampledBasic = true;
      if (isMeasured) {
        record(t1[c] ?? 0, t2, t3, t4, false);
        basicSamples++;
      }
    }
    // This exchange becomes the previous one: its T2 and our T4 go into the next request.
    if (!rxStamped) {
      prevValid[c] = 0;
      return;
    }
    prevValid[c] = 1;
    prevT1Known[c] = haveT1 ? 1 : 0;
    prevSampled[c] = sampledBasic ? 1 : 0;
    prevT1[c] = t1[c] ?? 0;
    prevT2[c] = t2;
    prevT4[c] = t4;
    prevT2Sec[c] = readU32BE(rx, at + RECEIVE_OFFSET);
    prevT2Frac[c] = readU32BE(rx, at + RECEIVE_OFFSET + 4);
    prevT4Sec[c] = (stampSeconds + NTP_UNIX_OFFSET_S) % TWO_POW_32 >>> 0;
    // Never zero, never equal to the tag (whose seconds are runTag): the reply's origin must name it alone.
    prevT4Frac[c] = Math.floor(stampNs * NS_TO_FRACTION) >>> 0 || 1;
  };

  const sweep = (cutoff: number): void => {
    for (let c = 0; c < clients; c++) if (inFlight[c] === 1 && (sentAt[c] ?? 0) <= cutoff) expire(c);
  };

  let nextSocket = 0;
  const sendDue = (now: number): number => {
    let sentNow = 0;
    if (pace.closedLoop) {
      for (const s of sockets) {
        const c = Math.min(s.readyCount, data.maxRequests - sentTotal);
        if (c <= 0) continue;
        sendReady(s, c, now);
        sentNow += c;
      }
      return sentNow;
    }
    // Fixed rate: only ready clients can send; what none of them can send now stays as credit.
    let due = pace.due(now, data.maxRequests - sentTotal);
    for (let tried = 0; due > 0 && tried < sockets.length; tried++) {
      const s = sockets[nextSocket];
      nextSocket = nextSocket + 1 === sockets.length ? 0 : nextSocket + 1;
      if (s === undefined || s.readyCount === 0) continue;
      const c = Math.min(due, s.readyCount);
      sendReady(s, c, now);
      sentNow += c;
      due -= c;
      pace.credit -= c;
    }
    return sentNow;
  };

  runLoop(pace, data.maxRequests, {
    receive: () => stamps.receiveAll(handleReply),
    sweep,
    sentTotal: () => sentTotal,
    send: sendDue,
    outstanding: () => outstanding,
  });
  for (let c = 0; c < clients; c++) if (inFlight[c] === 1) expire(c);

  return {
    type: 'udp-result',
    sentTotal,
    sent,
    received,
    repliesTotal,
    unmatched,
    lost,
    invalid,
    verified: received,
    sendErrors: stamps.sendErrors,
    measuredS: pace.measuredS(),
    requestBytes: NTP_HEADER_BYTES,
    maxReplyBytes,
    delay: delay.snapshot(),
    offset: offset.snapshot(),
    offsetSumUs,
    loops: pace.loops,
    residence: residence.snapshot(),
    stamps: { samples: offset.count, stale, late, noRxStamp, noTxStamp, txStampOutsideSend: stamps.txOutside, txStampUnmatched: stamps.txUnmatched, rebuilt: 0 },
    exchanges: {
      replies: received,
      interleaved: interleavedReplies,
      askedInterleaved,
      basicSamples,
      interleavedSamples,
      interleavedWithoutSample,
      interleavedOffset: interleavedOffset.snapshot(),
      basicOffset: basicOffset.snapshot(),
    },
  };
}
