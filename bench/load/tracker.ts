/**
 * The request bookkeeping both UDP senders share (worker.ts with dgram sockets, native-sender.ts with the
 * addon's kernel-stamped sockets): which pooled request is in flight on which socket, matching a reply to
 * its request, declaring requests lost, checking replies, and the counters and histograms of the result.
 *
 * What differs between the senders stays with them: how they send and receive, and where t1 and t4 come
 * from (a clock read in user space, or the kernel's stamps). Send times kept here are on the sender's own
 * scheduling clock and are only compared with each other (timeouts), never used as t1.
 */
import type { AeadCipher } from '../../src/core/crypto/aead.js';
import { UsHistogram } from './histogram.js';
import { ALWAYS_VERIFY_FIRST, FREE, IN_FLIGHT, NTP_HEADER_BYTES, TAINTED, readU32BE, type PoolKey, type RequestPool } from './pool.js';
import type { StampCounts, UdpWorkerResult } from './protocol.js';
import { cheapReplyProblem, fullReplyProblem } from './reply-check.js';

/** How a sender's replies are matched and checked. */
export interface TrackerOptions {
  /** Sockets the sender spreads its requests over (indices 0 .. sockets − 1). */
  readonly sockets: number;
  /** Where a reply carries the request's transmit timestamp: the origin field (a server), or the transmit field (the echo server). */
  readonly matchOffset: number;
  /** Replies are NTP server replies to be checked (false in echo mode: they are the requests themselves). */
  readonly checkReplies: boolean;
  /** S2C cipher for the full check of sampled replies (nts mode), else undefined. */
  readonly s2cCipher: AeadCipher | undefined;
  /** Every n-th reply gets the full check (after the first ALWAYS_VERIFY_FIRST). */
  readonly verifyEvery: number;
}

/** What a sender adds to the tracker's figures in its result. */
export interface SenderFigures {
  readonly sendErrors: number;
  readonly measuredS: number;
  readonly loops: number;
  readonly stamps?: Omit<StampCounts, 'samples' | 'stale' | 'late' | 'rebuilt'>;
}

/** The pooled requests of one sender thread and what became of them. */
export class RequestTracker {
  readonly pool: RequestPool;
  /** FREE, IN_FLIGHT or TAINTED per request. */
  readonly state: Uint8Array;
  /** Socket each request was last sent on. */
  readonly socketOf: Uint16Array;
  /** 1 when the request was sent inside the measured window. */
  readonly measured: Uint8Array;
  /** Send time of each request on the sender's scheduling clock, seconds (for timeouts only). */
  readonly sentAt: Float64Array;
  /** Requests in flight per socket. */
  readonly inFlight: Int32Array;
  /** The current octets of each request (refreshed when a request is rebuilt). */
  readonly packets: Uint8Array[];
  readonly delay = new UsHistogram();
  readonly offset = new UsHistogram();
  readonly residence = new UsHistogram();
  readonly invalid: Record<string, number> = {};
  sentTotal = 0;
  sent = 0;
  received = 0;
  repliesTotal = 0;
  unmatched = 0;
  lost = 0;
  verified = 0;
  stale = 0;
  late = 0;
  maxReplyBytes = 0;
  offsetSumUs = 0;
  #checked = 0;
  #nextSeq = 0;
  #oldestSeq = 0;
  readonly #key: PoolKey = { index: 0, generation: 0 };
  readonly #options: TrackerOptions;

  constructor(pool: RequestPool, options: TrackerOptions) {
    const size = pool.size;
    this.pool = pool;
    this.#options = options;
    this.state = new Uint8Array(size);
    this.socketOf = new Uint16Array(size);
    this.measured = new Uint8Array(size);
    this.sentAt = new Float64Array(size);
    this.inFlight = new Int32Array(options.sockets);
    this.packets = Array.from({ length: size }, (_, i) => pool.packet(i));
  }

  /**
   * The request to send next, round robin over the pool. One still in flight there is declared lost; a
   * lost one is rebuilt with the next generation first, so a late reply to its old send is counted stale.
   */
  claim(): number {
    const idx = this.#nextSeq % this.pool.size;
    this.#nextSeq++;
    if (this.state[idx] === IN_FLIGHT) this.expire(idx);
    if (this.state[idx] === TAINTED) {
      this.pool.nextGeneration(idx);
      this.packets[idx] = this.pool.packet(idx);
      this.state[idx] = FREE;
    }
    return idx;
  }

  /** Records that request `idx` went out on `socket` at `atS` (scheduling clock), inside the measured window or not. */
  markSent(idx: number, socket: number, atS: number, measured: boolean): void {
    this.state[idx] = IN_FLIGHT;
    this.socketOf[idx] = socket;
    this.sentAt[idx] = atS;
    this.measured[idx] = measured ? 1 : 0;
    this.inFlight[socket] = (this.inFlight[socket] ?? 0) + 1;
    this.sentTotal++;
    if (measured) this.sent++;
  }

  /** Declares request `idx` lost (counted when it was measured); it is rebuilt before its next send. */
  expire(idx: number): void {
    this.state[idx] = TAINTED;
    const socket = this.socketOf[idx] ?? 0;
    this.inFlight[socket] = (this.inFlight[socket] ?? 0) - 1;
    if (this.measured[idx] === 1) this.lost++;
  }

  /**
   * The in-flight request that the reply at bytes[at, at + length), received on `socket`, answers; or −1,
   * counted as unmatched (foreign, too short, a duplicate), stale (an earlier generation) or late (already
   * declared lost). The request stays in flight until `complete`.
   */
  match(bytes: Uint8Array, at: number, length: number, socket: number): number {
    const key = this.#key;
    const m = this.#options.matchOffset;
    if (length < NTP_HEADER_BYTES || readU32BE(bytes, at + m) !== this.pool.runTag || !this.pool.decode(readU32BE(bytes, at + m + 4), key)) {
      this.unmatched++;
      return -1;
    }
    const idx = key.index;
    if (!this.pool.isCurrent(key)) {
      this.stale++;
      return -1;
    }
    if (this.state[idx] !== IN_FLIGHT || this.socketOf[idx] !== socket) {
      if (this.state[idx] === TAINTED) this.late++;
      else this.unmatched++;
      return -1;
    }
    return idx;
  }

  /** Frees a matched request whose reply was `length` octets. */
  complete(idx: number, length: number): void {
    this.state[idx] = FREE;
    const socket = this.socketOf[idx] ?? 0;
    this.inFlight[socket] = (this.inFlight[socket] ?? 0) - 1;
    this.repliesTotal++;
    if (length > this.maxReplyBytes) this.maxReplyBytes = length;
  }

  /**
   * Whether the reply to completed request `idx` counts as a received measured reply: the request was
   * measured and the reply passes the cheap check and, when sampled, the full one (reasons counted).
   */
  accept(bytes: Uint8Array, at: number, length: number, idx: number): boolean {
    if (this.measured[idx] !== 1) return false;
    const o = this.#options;
    if (o.checkReplies) {
      const problem = cheapReplyProblem(bytes, at, length, this.pool.lengths[idx] ?? 0, o.s2cCipher !== undefined);
      if (problem !== undefined) return this.#invalid(problem);
      this.#checked++;
      if (this.#checked <= ALWAYS_VERIFY_FIRST || this.#checked % o.verifyEvery === 0) {
        this.verified++;
        const full = fullReplyProblem(bytes, at, length, this.pool, idx, o.s2cCipher);
        if (full !== undefined) return this.#invalid(full);
      }
    }
    this.received++;
    return true;
  }

  /** Records one sample from the four timestamps (seconds on one base): offset θ, delay and residence. */
  recordSample(t1: number, t2: number, t3: number, t4: number): void {
    const offsetUs = ((t2 - t1 + (t3 - t4)) / 2) * 1e6;
    this.offset.record(offsetUs);
    this.offsetSumUs += offsetUs;
    this.delay.record((t4 - t1) * 1e6);
    this.residence.record((t3 - t2) * 1e6);
  }

  /** Declares every request sent before `cutoffS` (scheduling clock) and still in flight lost. */
  sweep(cutoffS: number): void {
    const size = this.pool.size;
    if (this.#oldestSeq < this.#nextSeq - size) this.#oldestSeq = this.#nextSeq - size;
    while (this.#oldestSeq < this.#nextSeq) {
      const idx = this.#oldestSeq % size;
      if (this.state[idx] === IN_FLIGHT) {
        if ((this.sentAt[idx] ?? 0) > cutoffS) break;
        this.expire(idx);
      }
      this.#oldestSeq++;
    }
  }

  /** Declares everything still in flight lost (the end of the drain). */
  expireAll(): void {
    for (let idx = 0; idx < this.pool.size; idx++) if (this.state[idx] === IN_FLIGHT) this.expire(idx);
  }

  /** Requests in flight over all sockets. */
  outstanding(): number {
    let n = 0;
    for (let j = 0; j < this.inFlight.length; j++) n += this.inFlight[j] ?? 0;
    return n;
  }

  /** The thread's result: the tracker's figures and the sender's. */
  result(figures: SenderFigures): UdpWorkerResult {
    const stamps = figures.stamps ?? { noRxStamp: 0, noTxStamp: 0, txStampOutsideSend: 0, txStampUnmatched: 0 };
    return {
      type: 'udp-result',
      sentTotal: this.sentTotal,
      sent: this.sent,
      received: this.received,
      repliesTotal: this.repliesTotal,
      unmatched: this.unmatched,
      lost: this.lost,
      invalid: this.invalid,
      verified: this.verified,
      sendErrors: figures.sendErrors,
      measuredS: figures.measuredS,
      requestBytes: this.pool.lengths[0] ?? 0,
      maxReplyBytes: this.maxReplyBytes,
      delay: this.delay.snapshot(),
      offset: this.offset.snapshot(),
      offsetSumUs: this.offsetSumUs,
      loops: figures.loops,
      residence: this.residence.snapshot(),
      stamps: { samples: this.offset.count, stale: this.stale, late: this.late, ...stamps, rebuilt: this.pool.rebuilt },
    };
  }

  #invalid(reason: string): false {
    this.invalid[reason] = (this.invalid[reason] ?? 0) + 1;
    return false;
  }
}
