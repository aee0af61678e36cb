/**
 * Native backend of an NTP thread: the packet walk of the native datapath, start to end.
 *
 *   kernel ── recvmmsg (≤ 64 datagrams, each with its SO_TIMESTAMPNS receive time) ──▶ shared block
 *   for each datagram: serve(request, T2 = kernel stamp, peer, transmit slot)     (src/core/serve.ts)
 *                      T3 is read inside respond() just before the final seal
 *   send-mode "each":  sendmsg of that reply at once            send-mode "batch": one sendmmsg at the end
 *
 * One socket per `[[server]]` address in this thread, joined with the other threads' sockets into a
 * SO_REUSEPORT group (the kernel hashes each client's 4-tuple to one of them). A socket's shared block
 * is allocated once; nothing is allocated per packet but the subarray views serve() is handed.
 *
 * T2 is the kernel's CLOCK_REALTIME stamp, so time a datagram waits in the socket buffer is residence
 * time (T3 − T2), which the client subtracts, not served-time error. T3 is CLOCK_REALTIME read through the
 * addon as well, so both stamps come from one clock. What remains between the T3 read and the reply's
 * departure is estimated by measurement and added to T3, as chrony does for its authentication delay
 * (ntp/transmit-estimate.ts, the same model the dgram backend uses):
 *  - "each": the seal after the read (per request size class) plus half a sendmsg;
 *  - "batch": also the rest of the batch still to be answered, and the reply's place in the sendmmsg.
 *
 * RFC 9769 interleaved mode (a `[[server]]` with `interleaved` on): its sockets take SO_TIMESTAMPING, and a
 * reply that serve() saved for an interleaving client asks for its kernel transmit stamp on its own
 * sendmsg (the slot's txStamp word). The stamps are read from the error queue in one batched call after
 * the round that sent them (and on the POLLERR wake-up of stamps that come later), and stored in the shared
 * interleave table for the client's next request (ntp/transmit-stamps.ts). Replies to basic-mode clients
 * cost nothing more.
 */
import { performance } from 'node:perf_hooks';
import { NTP_UNIX_OFFSET_S, type NtpTime } from '../runtime/clock.js';
import {
  META_WORDS,
  MetaWord,
  NATIVE_COUNTERS,
  NativeCounter,
  NativeLayout,
  RxFlag,
  StampMode,
  TxStampFlag,
  addressBytes,
  errnoName,
  loadNativeUdp,
  peerWords,
  type NativeHandle,
  type NativeUdpAddon,
} from '../runtime/addon.js';
import { InterleaveTable } from '../core/interleave.js';
import { requestSizeClass } from './transmit-estimate.js';
import { PendingTransmitStamps, type TransmitStampCounts } from './transmit-stamps.js';
import { ThreadResponder } from './thread-responder.js';
import type { ThreadCounters } from './counters.js';
import { formatWhere, type ThreadInit } from './messages.js';
import type { ThreadBackendStart } from './thread-main.js';

/** recvmmsg rounds per wake-up before yielding to the event loop (keyset messages, reports). */
const MAX_ROUNDS_PER_WAKE = 8;
/** NTP fraction units per nanosecond (2^32 / 1e9). */
const FRACTION_PER_NS = 4.294967296;

/** One bound native socket and its views of the shared block. */
interface NativeSocket {
  readonly handle: NativeHandle;
  readonly policy: number;
  readonly block: ArrayBuffer;
  readonly meta: Uint32Array;
  /** The same metadata as octets (peer addresses). */
  readonly metaBytes: Uint8Array;
  readonly counters: Float64Array;
  /** Counter values at the last collect(), to report deltas. */
  readonly reported: Float64Array;
  readonly rx: Uint8Array;
  readonly tx: Uint8Array;
  /** Interleaved mode: replies waiting for their kernel TX stamp (undefined = this socket asks for none). */
  readonly stamps: PendingTransmitStamps | undefined;
  /** Batch send mode: each slot's table key (receive timestamp: seconds, fraction) until the sendmmsg. */
  readonly slotKeys: Uint32Array;
  /** Stamp counts at the last collect(). */
  readonly reportedStamps: TransmitStampCounts;
}

/** Opens the sockets of this thread and starts answering; fails with the address that did not bind. */
export async function startNativeBackend(init: ThreadInit, counters: ThreadCounters): Promise<ThreadBackendStart> {
  const loaded = loadNativeUdp();
  if (!loaded.ok) return { ok: false, where: 'native datapath', message: loaded.reason };
  const addon: NativeUdpAddon = loaded.addon;
  const sendEach = init.sendMode === 'each';
  // T3: CLOCK_REALTIME through the addon, the same clock as the kernel's receive stamps.
  const realtime = new Float64Array(2);
  const responder = ThreadResponder.create(init, counters, (out: NtpTime) => {
    addon.realtime(realtime);
    out.seconds = ((realtime[0] ?? 0) + NTP_UNIX_OFFSET_S) >>> 0;
    out.fraction = Math.floor((realtime[1] ?? 0) * FRACTION_PER_NS) >>> 0;
  });
  if (typeof responder === 'string') return { ok: false, where: 'responder', message: responder };
  const estimator = responder.estimator;
  const receiveTime: NtpTime = { seconds: 0, fraction: 0 };
  const peer = new Uint32Array(4);
  const slotBytes = NativeLayout.slotBytes;
  // (id, seconds, nanoseconds) per stamp, one error-queue batch.
  const stampTriples = new Float64Array(3 * NativeLayout.slots);

  /** Reads every queued TX stamp of `s` (batches of up to 64) and stores them; restarts the numbering if it slipped. */
  const readStamps = (s: NativeSocket, pending: PendingTransmitStamps): void => {
    for (;;) {
      const n = addon.readTxStamps(s.handle, stampTriples);
      pending.match(stampTriples, n);
      if (pending.needsReset) {
        addon.resetTxIds(s.handle);
        pending.clear();
        return;
      }
      if (n < NativeLayout.slots) return;
    }
  };

  /** After slot `i` of `s` was sent: notes its stamp request, if the addon made one, under the slot's key. */
  const slotKey: NtpTime = { seconds: 0, fraction: 0 };
  const noteSent = (s: NativeSocket, pending: PendingTransmitStamps, i: number, nowMs: number): boolean => {
    const base = i * META_WORDS;
    if (s.meta[base + MetaWord.txStamp] !== TxStampFlag.asked) return false;
    peerWords(s.metaBytes, s.meta, base, peer);
    slotKey.seconds = s.slotKeys[i * 2] ?? 0;
    slotKey.fraction = s.slotKeys[i * 2 + 1] ?? 0;
    pending.add(s.meta[base + MetaWord.txId] ?? 0, peer, slotKey, nowMs);
    return true;
  };

  /** Answers everything waiting on `s`, up to MAX_ROUNDS_PER_WAKE batches. */
  const drain = (s: NativeSocket, errorQueue: boolean): void => {
    const meta = s.meta;
    const nowMs = performance.timeOrigin + performance.now();
    const pending = s.stamps;
    // A wake-up may be for stamps alone (POLLERR): read what came since the last round. The queue must be
    // emptied on POLLERR, or the poll reports it again at once.
    if (pending !== undefined && (errorQueue || pending.live > 0)) readStamps(s, pending);
    for (let round = 0; round < MAX_ROUNDS_PER_WAKE; round++) {
      const n = addon.recv(s.handle);
      if (n <= 0) return;
      let stampsAsked = false;
      if (!sendEach) {
        // Plan the batch: every reply leaves with the sendmmsg after the last one is sealed.
        estimator.beginBatch(responder.sendCost.valueS);
        for (let i = 0; i < n; i++) estimator.addToBatch(requestSizeClass(meta[i * META_WORDS + MetaWord.rxLength] ?? 0));
      }
      responder.markMs = performance.now();
      for (let i = 0; i < n; i++) {
        const base = i * META_WORDS;
        const flags = meta[base + MetaWord.rxFlags] ?? 0;
        if ((flags & RxFlag.truncated) !== 0) continue; // counted by the addon
        const length = meta[base + MetaWord.rxLength] ?? 0;
        // T2 (RFC 5905 §8): Unix seconds modulo 2^32 map onto NTP era seconds modulo 2^32 alike.
        receiveTime.seconds = ((meta[base + MetaWord.stampSecondsLow] ?? 0) + NTP_UNIX_OFFSET_S) >>> 0;
        receiveTime.fraction = Math.floor((meta[base + MetaWord.stampNanoseconds] ?? 0) * FRACTION_PER_NS) >>> 0;
        const offset = i * slotBytes;
        const family = peerWords(s.metaBytes, meta, base, peer);
        const replyLength = responder.answer(s.policy, s.rx.subarray(offset, offset + length), receiveTime, peer, family, nowMs, s.tx.subarray(offset, offset + length), !sendEach);
        meta[base + MetaWord.txLength] = replyLength;
        if (replyLength === 0) continue;
        const stamped = responder.stampedAtMs >= 0;
        if (pending !== undefined && responder.transmitStampWanted) {
          meta[base + MetaWord.txStamp] = TxStampFlag.wanted;
          s.slotKeys[i * 2] = responder.stampKey.seconds;
          s.slotKeys[i * 2 + 1] = responder.stampKey.fraction;
        }
        if (sendEach) {
          addon.sendOne(s.handle, i);
          if (pending !== undefined && noteSent(s, pending, i, nowMs)) stampsAsked = true;
          const afterSendMs = responder.sent();
          // Receive (kernel) to send: T3's clock read minus T2, plus what followed the read.
          if (counters.measuresDurations && stamped) counters.observeDurationS(durationS(realtime, meta, base) + (afterSendMs - responder.stampedAtMs) / 1000);
        } else if (stamped && counters.measuresDurations) {
          counters.observeDurationS(durationS(realtime, meta, base));
        }
      }
      if (!sendEach) {
        const beforeSendMs = performance.now();
        const replies = addon.sendBatch(s.handle, n);
        if (replies > 0) responder.sendCost.observe((performance.now() - beforeSendMs) / 1000 / replies);
        if (pending !== undefined) {
          for (let i = 0; i < n; i++) if (noteSent(s, pending, i, nowMs)) stampsAsked = true;
        }
      }
      // One error-queue read for the round's stamps (software stamps are usually queued by now).
      if (pending !== undefined && stampsAsked) readStamps(s, pending);
      if (n < NativeLayout.slots) return;
    }
  };

  const sockets: NativeSocket[] = [];
  const closeAll = (): void => {
    for (const s of sockets) addon.close(s.handle);
  };
  for (const l of init.listen) {
    const where = formatWhere(l.host, l.port, l.family);
    const address = addressBytes(l.host);
    if (address === undefined) {
      closeAll();
      return { ok: false, where, message: 'not an IP literal' };
    }
    const block = new ArrayBuffer(NativeLayout.blockBytes);
    const interleaveBuffer = init.interleaveTables[l.policy];
    const stampMode = interleaveBuffer === undefined ? StampMode.receive : StampMode.receiveTransmitOnRequest;
    const handle = addon.openUdp(address.family, address.bytes, l.port, l.ipv6Only ? 1 : 0, 1, init.receiveBufferBytes ?? 0, stampMode, null, 0, block);
    if (typeof handle === 'number') {
      closeAll();
      return { ok: false, where, message: errnoName(handle) };
    }
    const s: NativeSocket = {
      handle,
      policy: l.policy,
      block,
      meta: new Uint32Array(block, NativeLayout.metaOffset, NativeLayout.slots * META_WORDS),
      metaBytes: new Uint8Array(block, NativeLayout.metaOffset, NativeLayout.slots * NativeLayout.metaBytes),
      counters: new Float64Array(block, 0, NATIVE_COUNTERS),
      reported: new Float64Array(NATIVE_COUNTERS),
      rx: new Uint8Array(block, NativeLayout.rxOffset, NativeLayout.slots * slotBytes),
      tx: new Uint8Array(block, NativeLayout.txOffset, NativeLayout.slots * slotBytes),
      stamps: interleaveBuffer === undefined ? undefined : new PendingTransmitStamps(InterleaveTable.attach(interleaveBuffer)),
      slotKeys: new Uint32Array(NativeLayout.slots * 2),
      reportedStamps: { captured: 0, missing: 0, late: 0 },
    };
    sockets.push(s);
    const started = addon.start(handle, (errorQueue) => drain(s, errorQueue));
    if (started !== 0) {
      closeAll();
      return { ok: false, where, message: `uv_poll_start failed (${started})` };
    }
  }

  const delta = (s: NativeSocket, c: number): number => {
    const now = s.counters[c] ?? 0;
    const d = now - (s.reported[c] ?? 0);
    s.reported[c] = now;
    return d;
  };
  const collect = (): void => {
    for (const s of sockets) {
      counters.received += delta(s, NativeCounter.received);
      counters.truncated += delta(s, NativeCounter.truncated);
      counters.socketErrors += delta(s, NativeCounter.recvErrors);
      counters.sent += delta(s, NativeCounter.sent);
      counters.sendErrors += delta(s, NativeCounter.sendErrors);
      counters.unstamped += delta(s, NativeCounter.noStamp);
      const pending = s.stamps;
      if (pending !== undefined) {
        pending.expire(performance.timeOrigin + performance.now());
        const c = pending.counts;
        const r = s.reportedStamps;
        counters.txStampsCaptured += c.captured - r.captured;
        counters.txStampsMissing += c.missing - r.missing;
        counters.txStampsLate += c.late - r.late;
        r.captured = c.captured;
        r.missing = c.missing;
        r.late = c.late;
      }
    }
  };

  return {
    ok: true,
    handle: {
      addresses: init.listen.map((l, i) => {
        const s = sockets[i];
        return { address: l.host, port: s === undefined ? l.port : addon.localPort(s.handle), family: l.family };
      }),
      responder,
      collect,
      close() {
        collect();
        closeAll();
        return Promise.resolve();
      },
    },
  };
}

/** T3's clock read (the `realtime` pair) minus the slot's kernel receive stamp, seconds. */
function durationS(realtime: Float64Array, meta: Uint32Array, base: number): number {
  const rxSeconds = (meta[base + MetaWord.stampSecondsHigh] ?? 0) * 4_294_967_296 + (meta[base + MetaWord.stampSecondsLow] ?? 0);
  return (realtime[0] ?? 0) - rxSeconds + ((realtime[1] ?? 0) - (meta[base + MetaWord.stampNanoseconds] ?? 0)) / 1e9;
}
