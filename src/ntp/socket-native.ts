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
  addressBytes,
  errnoName,
  loadNativeUdp,
  peerWords,
  type NativeHandle,
  type NativeUdpAddon,
} from '../runtime/addon.js';
import { requestSizeClass } from './transmit-estimate.js';
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

  /** Answers everything waiting on `s`, up to MAX_ROUNDS_PER_WAKE batches. */
  const drain = (s: NativeSocket): void => {
    const meta = s.meta;
    const nowMs = performance.timeOrigin + performance.now();
    for (let round = 0; round < MAX_ROUNDS_PER_WAKE; round++) {
      const n = addon.recv(s.handle);
      if (n <= 0) return;
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
        if (sendEach) {
          addon.sendOne(s.handle, i);
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
      }
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
    const handle = addon.openUdp(address.family, address.bytes, l.port, l.ipv6Only ? 1 : 0, 1, init.receiveBufferBytes ?? 0, StampMode.receive, null, 0, block);
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
    };
    sockets.push(s);
    const started = addon.start(handle, () => drain(s));
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
