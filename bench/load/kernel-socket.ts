/**
 * The socket half of the two kernel-stamped senders (native-sender.ts sends from a request pool,
 * exchange-sender.ts from small clients): written once here, used by both.
 *
 * - openKernelSockets: one connected UDP socket per slot of `socketsPerThread`, opened through the native
 *   addon with receive and transmit stamping, each from its source address when the thread was given one.
 * - KernelStamps: the thread's realtime base (stamps and server timestamps become doubles of seconds since
 *   a whole second, so they keep sub-ns resolution), the send call with its counter bookkeeping, and the
 *   OPT_ID ring of every socket that credits a transmit stamp read from the error queue to its owner.
 *   The owner is whatever a sender tracks per datagram: a pool request, or a client.
 * - Pacer and runLoop: the synchronous poll loop both senders drive (replies, sweep, stop, send, idle sleep).
 *
 * The per-packet paths (send, drainTxStamps, receiveAll) only read and write preallocated typed arrays;
 * the reply handler and the loop steps are made once per run by the sender.
 */
import type { MessagePort } from 'node:worker_threads';
import { NTP_UNIX_OFFSET_S, monotonicS } from '../../src/runtime/clock.js';
import {
  META_WORDS,
  MetaWord,
  NATIVE_COUNTERS,
  NativeCounter,
  NativeLayout,
  StampMode,
  addressBytes,
  errnoName,
  type NativeHandle,
  type NativeUdpAddon,
} from '../../src/runtime/addon.js';
import { TWO_POW_32, readU32BE } from './pool.js';
import type { GoMessage, UdpWorkerData, UdpWorkerResult } from './protocol.js';

/** Longest idle sleep of the poll loop, ms: short enough that the sweep and the stop time are not missed. */
const MAX_SLEEP_MS = 2;

/**
 * A kernel-stamped sender thread's entry (worker.ts picks one): it opens its sockets, says ready on `port`,
 * waits for `go` with `waitForGo`, runs, and resolves with its result. `runTag` marks this run's requests.
 */
export type KernelSender = (
  addon: NativeUdpAddon,
  data: UdpWorkerData,
  port: MessagePort,
  waitForGo: () => Promise<GoMessage>,
  runTag: number,
) => Promise<UdpWorkerResult>;

/** How big a sender wants its sockets and batches. */
export interface KernelSocketSizes {
  /** OPT_ID ring slots per socket; more than the socket ever has in flight. */
  readonly ring: number;
  /** SO_RCVBUF asked for (the kernel caps it at net.core.rmem_max). */
  readonly receiveBufferBytes: number;
  /** recvmmsg batches read from one socket per loop iteration at most. */
  readonly recvRounds: number;
  /** (id, seconds, nanoseconds) triples taken per readTxStamps call. */
  readonly stampsPerRead: number;
}

/** A connected, kernel-stamping client socket and its views of the block it shares with the addon. */
export interface KernelSocket {
  readonly index: number;
  readonly handle: NativeHandle;
  readonly meta: Uint32Array;
  readonly counters: Float64Array;
  readonly rx: Uint8Array;
  readonly tx: Uint8Array;
  /** The OPT_ID the kernel gives the next datagram this socket sends. */
  nextTxId: number;
  /** The addon's sent and send-error counters as they stood after the previous send call. */
  sentSeen: number;
  errorsSeen: number;
  /** ring slot (id mod ring) → the id registered there (−1: none) and the owner of that datagram. */
  readonly ringId: Float64Array;
  readonly ringOwner: Int32Array;
}

/**
 * Opens the thread's sockets, each with the fields `extra(j)` adds for the sender; if one fails, closes
 * those already open and throws with the errno name. `sender` names the sender in the messages.
 */
export function openKernelSockets<X extends object>(
  addon: NativeUdpAddon,
  data: UdpWorkerData,
  sizes: KernelSocketSizes,
  sender: string,
  extra: (j: number) => X,
): (KernelSocket & X)[] {
  const peer = addressBytes(data.targetAddress);
  if (peer === undefined) throw new Error(`${sender} needs an IP literal target, got "${data.targetAddress}"`);
  const sockets: (KernelSocket & X)[] = [];
  for (let j = 0; j < data.socketsPerThread; j++) {
    const source = data.sourceAddresses[j] ?? '';
    let local: Uint8Array = peer.family === 4 ? new Uint8Array(4) : new Uint8Array(16);
    if (source !== '') {
      const parsed = addressBytes(source);
      if (parsed === undefined || parsed.family !== peer.family) throw new Error(`source address "${source}" does not fit target ${data.targetAddress}`);
      local = parsed.bytes;
    }
    const block = new ArrayBuffer(NativeLayout.blockBytes);
    const handle = addon.openUdp(peer.family, local, 0, 0, 0, sizes.receiveBufferBytes, StampMode.receiveTransmit, peer.bytes, data.target.port, block);
    if (typeof handle === 'number') {
      closeKernelSockets(addon, sockets);
      // A thread without a source list binds every socket to the wildcard and says nothing about it.
      const from = data.sourceAddresses.length === 0 ? '' : ` from ${source === '' ? 'any address' : source}`;
      throw new Error(`cannot open a kernel-stamping UDP socket${from} to ${data.targetAddress}:${data.target.port}: ${errnoName(handle)}`);
    }
    const base: KernelSocket = {
      index: j,
      handle,
      meta: new Uint32Array(block, NativeLayout.metaOffset, NativeLayout.slots * META_WORDS),
      counters: new Float64Array(block, 0, NATIVE_COUNTERS),
      rx: new Uint8Array(block, NativeLayout.rxOffset, NativeLayout.slots * NativeLayout.slotBytes),
      tx: new Uint8Array(block, NativeLayout.txOffset, NativeLayout.slots * NativeLayout.slotBytes),
      nextTxId: 0,
      sentSeen: 0,
      errorsSeen: 0,
      ringId: new Float64Array(sizes.ring).fill(-1),
      ringOwner: new Int32Array(sizes.ring),
    };
    sockets.push({ ...base, ...extra(j) });
  }
  return sockets;
}

export function closeKernelSockets(addon: NativeUdpAddon, sockets: readonly KernelSocket[]): void {
  for (const s of sockets) addon.close(s.handle);
}

/**
 * The kernel stamps of one thread's datagrams, per owner (0 .. owners − 1): the OPT_ID of its latest
 * datagram (−1 when the send call could not say which id it got), the clock reads around that send call,
 * and its TX stamp once read. A TX stamp counts only when its ring slot still holds its id, its owner is
 * in flight (`live[owner] === liveValue`) on that same socket (`socketOf`) with that id, and it lies
 * between the two clock reads (which catches any slip of the id numbering); otherwise it is counted
 * unmatched or outside.
 */
export class KernelStamps<S extends KernelSocket> {
  /** Realtime whole seconds at the start of the run (Unix, and NTP era-folded). */
  readonly baseUnixS: number;
  readonly baseNtpS: number;
  /** Per owner: the OPT_ID of its datagram, its TX stamp, and whether that stamp has been read. */
  readonly txId: Float64Array;
  readonly t1: Float64Array;
  readonly t1Known: Uint8Array;
  sendErrors = 0;
  txOutside = 0;
  txUnmatched = 0;
  private readonly sendLo: Float64Array;
  private readonly sendHi: Float64Array;
  private readonly clockOut = new Float64Array(2);
  private readonly stampsOut: Float64Array;
  private readonly ring: number;
  private readonly stampsPerRead: number;
  private readonly recvRounds: number;

  constructor(
    private readonly addon: NativeUdpAddon,
    readonly sockets: readonly S[],
    owners: number,
    sizes: KernelSocketSizes,
    private readonly live: Uint8Array,
    private readonly liveValue: number,
    private readonly socketOf: Uint16Array,
  ) {
    addon.realtime(this.clockOut);
    this.baseUnixS = this.clockOut[0] ?? 0;
    this.baseNtpS = (this.baseUnixS + NTP_UNIX_OFFSET_S) >>> 0;
    this.txId = new Float64Array(owners).fill(-1);
    this.t1 = new Float64Array(owners);
    this.t1Known = new Uint8Array(owners);
    this.sendLo = new Float64Array(owners);
    this.sendHi = new Float64Array(owners);
    this.stampsOut = new Float64Array(sizes.stampsPerRead * 3);
    this.ring = sizes.ring;
    this.stampsPerRead = sizes.stampsPerRead;
    this.recvRounds = sizes.recvRounds;
  }

  /** Realtime (the clock of the kernel's stamps) in seconds since baseUnixS. */
  realNow(): number {
    this.addon.realtime(this.clockOut);
    return (this.clockOut[0] ?? 0) - this.baseUnixS + (this.clockOut[1] ?? 0) / 1e9;
  }

  /** The NTP timestamp at b[at] in seconds since baseUnixS. */
  serverTime(b: Uint8Array, at: number): number {
    return ((readU32BE(b, at) - this.baseNtpS) | 0) + readU32BE(b, at + 4) / TWO_POW_32;
  }

  /** The kernel RX stamp of receive slot i (meta word base i · META_WORDS) in seconds since baseUnixS. */
  rxTime(meta: Uint32Array, base: number): number {
    return rxStampSeconds(meta, base) - this.baseUnixS + (meta[base + MetaWord.stampNanoseconds] ?? 0) / 1e9;
  }

  /**
   * Sends transmit slots 0 .. count − 1 of socket s in one sendmmsg; slot k carries a datagram of
   * owners[k]. When the kernel took all of them and refused none, owner k's datagram has OPT_ID
   * nextTxId + k; otherwise which one failed is unknown, so none of them gets an id (and no stamp).
   */
  send(s: S, owners: Int32Array, count: number): void {
    const lo = this.realNow();
    this.addon.sendBatch(s.handle, count);
    const hi = this.realNow();
    const sentNow = s.counters[NativeCounter.sent] ?? 0;
    const errorsNow = s.counters[NativeCounter.sendErrors] ?? 0;
    const sentDelta = sentNow - s.sentSeen;
    const errorDelta = errorsNow - s.errorsSeen;
    s.sentSeen = sentNow;
    s.errorsSeen = errorsNow;
    const clean = errorDelta === 0 && sentDelta === count;
    if (!clean) this.sendErrors += errorDelta;
    for (let k = 0; k < count; k++) {
      const o = owners[k] ?? 0;
      this.t1Known[o] = 0;
      this.sendLo[o] = lo;
      this.sendHi[o] = hi;
      if (clean) {
        const id = s.nextTxId + k;
        this.txId[o] = id;
        const slot = id % this.ring;
        s.ringId[slot] = id;
        s.ringOwner[slot] = o;
      } else {
        this.txId[o] = -1;
      }
    }
    // Refused datagrams take no id: the kernel's numbering goes on from what it did send.
    s.nextTxId += sentDelta;
  }

  /** Whether the owner's datagram has an id but its stamp has not been read yet. */
  stampPending(owner: number): boolean {
    return this.t1Known[owner] !== 1 && this.txId[owner] !== -1;
  }

  /** Reads every queued TX stamp of socket s and credits each to its owner. */
  drainTxStamps(s: S): void {
    const out = this.stampsOut;
    for (;;) {
      const k = this.addon.readTxStamps(s.handle, out);
      for (let j = 0; j < k; j++) {
        const id = out[j * 3] ?? -1;
        const at = (out[j * 3 + 1] ?? 0) - this.baseUnixS + (out[j * 3 + 2] ?? 0) / 1e9;
        const slot = id % this.ring;
        if (s.ringId[slot] !== id) {
          this.txUnmatched++;
          continue;
        }
        const o = s.ringOwner[slot] ?? -1;
        s.ringId[slot] = -1;
        if (o < 0 || this.live[o] !== this.liveValue || this.txId[o] !== id || this.socketOf[o] !== s.index) {
          this.txUnmatched++;
          continue;
        }
        if (at < (this.sendLo[o] ?? 0) || at > (this.sendHi[o] ?? 0)) {
          this.txOutside++;
          continue;
        }
        this.t1[o] = at;
        this.t1Known[o] = 1;
      }
      if (k < this.stampsPerRead) return;
    }
  }

  /**
   * Reads up to recvRounds batches from every socket and hands each datagram to onReply: its socket, where
   * its meta words (`base`, in s.meta) and bytes (`at`, in s.rx) start, its flags and its length. The count read.
   */
  receiveAll(onReply: ReplyHandler<S>): number {
    let got = 0;
    for (const s of this.sockets) {
      const meta = s.meta;
      for (let round = 0; round < this.recvRounds; round++) {
        const n = this.addon.recv(s.handle);
        if (n <= 0) break;
        for (let i = 0; i < n; i++) {
          const base = i * META_WORDS;
          onReply(s, base, i * NativeLayout.slotBytes, meta[base + MetaWord.rxFlags] ?? 0, meta[base + MetaWord.rxLength] ?? 0);
        }
        got += n;
        if (n < NativeLayout.slots) break;
      }
    }
    return got;
  }
}

/** Takes one received datagram (KernelStamps.receiveAll). */
export type ReplyHandler<S extends KernelSocket> = (s: S, base: number, at: number, flags: number, length: number) => void;

/** The whole seconds (Unix) of the kernel RX stamp in the receive meta words from `base`. */
export function rxStampSeconds(meta: Uint32Array, base: number): number {
  return (meta[base + MetaWord.stampSecondsHigh] ?? 0) * TWO_POW_32 + (meta[base + MetaWord.stampSecondsLow] ?? 0);
}

/**
 * The run's clocks and pacing, on the process-wide monotonic clock in seconds: when sending stops, the
 * token bucket of a fixed rate, and the idle sleep.
 */
export class Pacer {
  readonly startMono = monotonicS();
  readonly measureFrom: number;
  readonly stopAt: number;
  readonly closedLoop: boolean;
  readonly ratePerS: number;
  readonly timeoutS: number;
  readonly tickMs: number;
  readonly spin: boolean;
  /**
   * Bucket size: two ticks, or up to 2 ms (at most 128 requests) for wake-ups that come late on a busy
   * machine. A sender that overslept does not catch up in one large burst (which would overflow the
   * server's socket); the achieved rate shows what it could send.
   */
  readonly creditCap: number;
  /** Requests the fixed rate allows now; a sender takes off what it sends. */
  credit = 0;
  loops = 0;
  sending = true;
  endSend: number;
  private lastCredit: number;
  private readonly sleepCell = new Int32Array(new SharedArrayBuffer(4));

  constructor(data: UdpWorkerData, go: GoMessage) {
    this.measureFrom = go.measureFromMonoS;
    this.stopAt = go.stopMonoS;
    this.closedLoop = data.ratePerS === undefined;
    this.ratePerS = data.ratePerS ?? 0;
    this.timeoutS = data.timeoutMs / 1000;
    this.tickMs = data.tickUs / 1000;
    this.spin = data.pacing === 'spin';
    this.creditCap = Math.max(2, (this.ratePerS * this.tickMs * 2) / 1000, Math.min(this.ratePerS * 0.002, 128));
    this.lastCredit = this.startMono;
    this.endSend = this.startMono;
  }

  /** Tops the bucket up for the time since the last call; the whole requests in it, at most `limit`. */
  due(now: number, limit: number): number {
    this.credit = Math.min(this.credit + (now - this.lastCredit) * this.ratePerS, this.creditCap);
    this.lastCredit = now;
    return Math.min(Math.floor(this.credit), limit);
  }

  /** Sending time that counted: from the later of start and warm-up end to the stop. */
  measuredS(): number {
    return Math.max(0, this.endSend - Math.max(this.startMono, this.measureFrom));
  }

  /** Idle: a tick (half of one in closed loop, so a fast server does not wait long), or until the next packet is due. */
  idle(): void {
    let waitMs = this.closedLoop ? this.tickMs / 2 : this.tickMs;
    if (this.sending && !this.closedLoop && this.ratePerS > 0) waitMs = Math.max(waitMs, ((1 - this.credit) / this.ratePerS) * 1000);
    const ms = Math.min(waitMs, MAX_SLEEP_MS);
    if (ms > 0.005) Atomics.wait(this.sleepCell, 0, 0, ms);
  }
}

/** What a sender plugs into runLoop. */
export interface LoopSteps {
  /** Reads and handles every waiting reply: how many. */
  receive(): number;
  /** Declares lost what was sent at or before `cutoff`. */
  sweep(cutoff: number): void;
  /** Requests sent so far, warm-up included. */
  sentTotal(): number;
  /** Sends what is due now (closed loop: what the window allows; fixed rate: pacer.due): how many. */
  send(now: number): number;
  /** Requests still waiting for a reply. */
  outstanding(): number;
}

/**
 * The poll loop: replies first (their stamps stay where the kernel put them however late they are read),
 * a sweep every 5 ms, then sending until the stop time or maxRequests, then waiting out the last replies
 * (at most one timeout). Sleeps with Atomics.wait when a round did nothing, unless pacing spins.
 */
export function runLoop(pace: Pacer, maxRequests: number, steps: LoopSteps): void {
  let lastSweep = pace.startMono;
  for (;;) {
    pace.loops++;
    const got = steps.receive();
    const now = monotonicS();
    if (now - lastSweep >= 0.005) {
      steps.sweep(now - pace.timeoutS); // (a pool request is rebuilt before its slot is reused)
      lastSweep = now;
    }
    if (pace.sending && (steps.sentTotal() >= maxRequests || now >= pace.stopAt)) {
      pace.sending = false;
      pace.endSend = now;
    }
    let sentNow = 0;
    if (pace.sending) sentNow = steps.send(now);
    else if (steps.outstanding() <= 0 || now >= pace.endSend + pace.timeoutS) break;
    if (got > 0 || sentNow > 0 || pace.spin) continue;
    pace.idle();
  }
}
