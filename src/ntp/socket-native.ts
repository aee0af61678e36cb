/**
 * Native backend of an NTP thread: the packet walk of the native datapath, start to end.
 *
 *   kernel ── recvmmsg (≤ 64 datagrams, each with its SO_TIMESTAMPNS receive time) ──▶ shared block
 *   for each datagram: respond(request, T2 = kernel stamp, ctx, transmit slot)   (src/core/responder.ts)
 *                      T3 is read inside respond() just before the final seal
 *   send-mode "each":  sendmsg of that reply at once            send-mode "batch": one sendmmsg at the end
 *
 * One socket per `[[server]]` address in this thread, joined with the other threads' sockets into a
 * SO_REUSEPORT group (the kernel hashes each client's 4-tuple to one of them). A socket's shared block
 * is allocated once; nothing is allocated per packet but the subarray views respond() is handed.
 *
 * T2 is the kernel's CLOCK_REALTIME stamp, so time a datagram waits in the socket buffer is residence
 * time (T3 − T2), which the client subtracts, not served-time error. T3 is CLOCK_REALTIME read through the
 * addon as well, so both stamps come from one clock. What remains between the T3 read and the reply's
 * departure is estimated by measurement and added to T3, as chrony does for its authentication delay
 * (ntp/batch-worker.ts TransmitEstimator, the same model the pool uses):
 *  - "each": the seal after the read (per request size class) plus half a sendmsg;
 *  - "batch": also the rest of the batch still to be answered, and the reply's place in the sendmmsg.
 */
import { performance } from 'node:perf_hooks';
import { randomFillSync } from 'node:crypto';
import { NTP_UNIX_OFFSET_S, type NtpTime } from '../runtime/clock.js';
import { decodeKeyset } from '../core/nts/keyset.js';
import { admit, createAdmissions } from '../core/admission.js';
import {
  KEY_AGE_NONE,
  Outcome,
  createPooledFillRandom,
  createResponderContext,
  respond,
  respondRefused,
  type RefusedResult,
  type ResponderContext,
  type ServerFields,
} from '../core/responder.js';
import { Tally, keyAgeBucket } from './tally.js';
import { CostEwma, MAX_PACKET_COST_SAMPLE_S, TransmitEstimator, requestSizeClass } from './batch-worker.js';
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
import { formatWhere, type ThreadInit } from './messages.js';
import type { ThreadBackendStart, ThreadCounters } from './thread-main.js';

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
  const decoded = decodeKeyset(init.keysetBytes);
  if (!decoded.ok) return { ok: false, where: 'keyset', message: decoded.error };
  const defaultPolicy = init.policies[0];
  if (defaultPolicy === undefined) return { ok: false, where: 'policies', message: 'no responder policy' };
  const sendEach = init.sendMode === 'each';

  // T3: CLOCK_REALTIME plus the planned compensation, read when respond() asks for it.
  const realtime = new Float64Array(2);
  const transmitTime: NtpTime = { seconds: 0, fraction: 0 };
  const estimator = new TransmitEstimator();
  /** Kernel time per reply sent: one sendmsg ("each"), or a sendmmsg's time over its replies ("batch"). */
  const sendCost = new CostEwma(MAX_PACKET_COST_SAMPLE_S);
  let compensationNs = 0;
  let stampedAtMs = -1;
  const ctx: ResponderContext = createResponderContext({
    keyset: decoded.keyset,
    serverFields: init.serverFields,
    now: () => {
      addon.realtime(realtime);
      stampedAtMs = performance.now();
      let seconds = realtime[0] ?? 0;
      let ns = (realtime[1] ?? 0) + compensationNs;
      if (ns >= 1e9) {
        ns -= 1e9;
        seconds += 1;
      }
      transmitTime.seconds = (seconds + NTP_UNIX_OFFSET_S) >>> 0;
      transmitTime.fraction = Math.floor(ns * FRACTION_PER_NS) >>> 0;
      return transmitTime;
    },
    // One randomFillSync per 4 KiB instead of one per cookie and nonce.
    fillRandom: createPooledFillRandom((b) => randomFillSync(b)),
    requireNts: defaultPolicy.requireNts,
    acceptNtpVersions: defaultPolicy.acceptNtpVersions,
  });
  const receiveTime: NtpTime = { seconds: 0, fraction: 0 };
  const tally = counters.tally;
  // Access lists and the shared rate-limit tables, per policy; replaced on SIGHUP.
  let admissions = createAdmissions(init.admissions, init.policies.length);
  const peer = new Uint32Array(4);
  const peerScratch = new Uint32Array(4);
  const refused: RefusedResult = { outcome: Outcome.dropAccess, length: 0 };
  const slotBytes = NativeLayout.slotBytes;

  /** Answers everything waiting on `s`, up to MAX_ROUNDS_PER_WAKE batches. */
  const drain = (s: NativeSocket): void => {
    const policy = init.policies[s.policy] ?? defaultPolicy;
    ctx.requireNts = policy.requireNts;
    ctx.acceptNtpVersions = policy.acceptNtpVersions;
    const admission = admissions[s.policy];
    const checks = admission !== undefined && (admission.access !== undefined || admission.limiter !== undefined);
    const refusal = { requireNts: policy.requireNts, acceptNtpVersions: policy.acceptNtpVersions, precision: ctx.serverFields.precision };
    const nowMs = checks ? performance.timeOrigin + performance.now() : 0;
    const meta = s.meta;
    for (let round = 0; round < MAX_ROUNDS_PER_WAKE; round++) {
      const n = addon.recv(s.handle);
      if (n <= 0) return;
      if (!sendEach) {
        // Plan the batch: every reply leaves with the sendmmsg after the last one is sealed.
        estimator.beginBatch(0, sendCost.valueS);
        for (let i = 0; i < n; i++) estimator.addToBatch(requestSizeClass(meta[i * META_WORDS + MetaWord.rxLength] ?? 0));
      }
      let packetStartMs = performance.now();
      for (let i = 0; i < n; i++) {
        const base = i * META_WORDS;
        const flags = meta[base + MetaWord.rxFlags] ?? 0;
        if ((flags & RxFlag.truncated) !== 0) continue; // counted by the addon
        const length = meta[base + MetaWord.rxLength] ?? 0;
        // T2 (RFC 5905 §8): Unix seconds modulo 2^32 map onto NTP era seconds modulo 2^32 alike.
        receiveTime.seconds = ((meta[base + MetaWord.stampSecondsLow] ?? 0) + NTP_UNIX_OFFSET_S) >>> 0;
        receiveTime.fraction = Math.floor((meta[base + MetaWord.stampNanoseconds] ?? 0) * FRACTION_PER_NS) >>> 0;
        const offset = i * slotBytes;
        if (checks) {
          // Access list and rate limit first, before any work is done for the request.
          const decision = admit(admission, peer, peerWords(s.metaBytes, meta, base, peer), nowMs, peerScratch);
          if (decision !== 'admit') {
            let outcome: number = Outcome.dropRateLimited;
            if (decision !== 'limit') {
              const r = respondRefused(s.rx.subarray(offset, offset + length), receiveTime, decision, refusal, s.tx.subarray(offset, offset + length), refused);
              outcome = r.outcome;
              meta[base + MetaWord.txLength] = r.length;
              if (r.length > 0 && sendEach) addon.sendOne(s.handle, i);
            }
            tally[Tally.outcomes + outcome] = (tally[Tally.outcomes + outcome] ?? 0) + 1;
            continue;
          }
        }
        const sizeClass = requestSizeClass(length);
        const plannedS = sendEach ? estimator.lone(sizeClass, sendCost.valueS) : estimator.next(sizeClass);
        compensationNs = plannedS * 1e9;
        stampedAtMs = -1;
        let replyLength = 0;
        try {
          const result = respond(s.rx.subarray(offset, offset + length), receiveTime, ctx, s.tx.subarray(offset, offset + length));
          tally[Tally.outcomes + result.outcome] = (tally[Tally.outcomes + result.outcome] ?? 0) + 1;
          if (result.keyAge !== KEY_AGE_NONE) {
            const b = Tally.keyAges + keyAgeBucket(result.keyAge);
            tally[b] = (tally[b] ?? 0) + 1;
          }
          tally[Tally.cookiesIssued] = (tally[Tally.cookiesIssued] ?? 0) + result.cookiesIssued;
          if (result.length > 0 && result.length <= length) replyLength = result.length;
        } catch (error) {
          // A bug in respond() must not let one crafted packet kill the thread over and over.
          tally[Tally.respondErrors] = (tally[Tally.respondErrors] ?? 0) + 1;
          counters.noteError('respondError', error instanceof Error ? `${error.name}: ${error.message}` : String(error));
        }
        meta[base + MetaWord.txLength] = replyLength;
        const doneMs = performance.now();
        // The whole packet's cost (for the rest-of-batch term) and, when stamped, the part after the T3 read.
        estimator.observe(sizeClass, (doneMs - packetStartMs) / 1000, stampedAtMs >= 0 ? (doneMs - stampedAtMs) / 1000 : -1);
        packetStartMs = doneMs;
        if (replyLength === 0) continue;
        if (stampedAtMs >= 0) {
          counters.transmitStamps++;
          counters.transmitCompensationSumS += plannedS;
        }
        if (sendEach) {
          addon.sendOne(s.handle, i);
          const afterSendMs = performance.now();
          sendCost.observe((afterSendMs - doneMs) / 1000);
          packetStartMs = afterSendMs;
          // Receive (kernel) to send: T3's clock read minus T2, plus what followed the read.
          if (counters.measuresDurations && stampedAtMs >= 0) counters.observeDurationS(durationS(realtime, meta, base) + (afterSendMs - stampedAtMs) / 1000);
        } else if (stampedAtMs >= 0 && counters.measuresDurations) {
          counters.observeDurationS(durationS(realtime, meta, base));
        }
      }
      if (!sendEach) {
        const beforeSendMs = performance.now();
        const replies = addon.sendBatch(s.handle, n);
        if (replies > 0) sendCost.observe((performance.now() - beforeSendMs) / 1000 / replies);
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
      setKeyset(bytes) {
        const next = decodeKeyset(bytes);
        if (!next.ok) return next.error;
        ctx.keyset = next.keyset;
        return undefined;
      },
      setServerFields(fields: ServerFields) {
        ctx.serverFields = fields;
      },
      setAdmissions(specs) {
        admissions = createAdmissions(specs, init.policies.length);
      },
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
