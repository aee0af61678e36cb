/**
 * RFC 9769 interleaved client/server mode, server side: which requests may be answered in interleaved
 * mode, and the bounded table that remembers, per client, the kernel transmit stamp of the last reply.
 *
 * The exchange (RFC 9769 §2). A reply in interleaved mode carries, as its transmit timestamp, when the
 * *previous* reply to that client really left (the kernel's stamp, known only after sending), instead of
 * the estimate read before sending. A client asks for it by putting, as the origin timestamp of its next
 * request, the receive timestamp of our last reply; the interleaved reply then has
 *   origin   = the request's receive timestamp (the client's own value, so it can tell the modes apart),
 *   receive  = when this request arrived (as in basic mode),
 *   transmit = the kernel TX stamp of the reply that carried the receive timestamp the client echoed.
 * Anything else gets a basic reply (origin = the request's transmit timestamp, transmit = now).
 *
 * Detection without saving every receive timestamp (chrony's trick): with interleaving on, every reply's
 * receive timestamp has the lowest fraction bit set and its transmit timestamp has it clear (≤ 0.24 ns).
 * A request whose origin has that bit set probably echoes one of our receive timestamps; only such
 * requests (and only NTPv4 ones whose receive and transmit fields differ, so the client can tell which
 * field we echoed) are looked up, and only their replies are saved and get a kernel TX stamp. Basic-mode
 * clients echo our transmit timestamp (bit clear) or send zeros, and cost nothing.
 *
 * The table (on core/client-table.ts, so a SharedArrayBuffer serves every NTP thread: a chrony client
 * sends each request from a new source port, which SO_REUSEPORT may hand to another thread) keys each
 * entry by the client address *and* the receive timestamp of the reply, and by whether the reply was NTS:
 *  - a request can only ever get a transmit stamp of a reply sent to its own source address, whatever
 *    origin it makes up, and a plain NTP request never consumes an NTS client's entry;
 *  - an entry is used once (a replayed request gets a basic reply);
 *  - a client address owns at most INTERLEAVE_ENTRIES_PER_ADDRESS entries (its oldest goes first), and
 *    when a bucket is full its least recently saved entry goes; the size is fixed when the table is made.
 * The stamp itself is stored as its offset from the receive timestamp (like chrony), and only when it
 * is within MAX_TRANSMIT_DELAY_S of it.
 */
import { readU32 } from './bytes.js';
import { ClientTable, ClientTableUser, clientTableBytes, type ClientTableCursor } from './client-table.js';
import { hashIpWords } from './ip.js';
import { NtpHeaderOffset } from './ntp/header.js';
import type { NtpTimestamp } from './ntp/timestamp.js';

/** Entries one client address may hold at once (of a bucket's 8 slots); more clients behind one NAT share them. */
export const INTERLEAVE_ENTRIES_PER_ADDRESS = 4;

/** A transmit stamp more than this far from its reply's receive timestamp is refused (a clock step in between). */
export const MAX_TRANSMIT_DELAY_S = 1;

const FRACTION_PER_S = 4_294_967_296;
const MAX_DELTA = MAX_TRANSMIT_DELAY_S * FRACTION_PER_S;

/** Slot values: int 0, 1 = receive timestamp (seconds, fraction); int 2 = flags; float 0 = TX − RX (fraction units); float 1 = saved at (ms, eviction order). */
const I_RX_SECONDS = 0;
const I_RX_FRACTION = 1;
const I_FLAGS = 2;
const F_TX_DELTA = 0;
const F_SAVED_MS = 1;
const FLAG_NTS = 1;
const FLAG_TX = 2;

/** Header user word counting entries dropped before use (eviction or the per-address budget), u32 wrapping. */
const U_EVICTIONS = 0;

/** Octets an interleave table of `capacity` entries occupies (48 per entry plus a small header). */
export function interleaveTableBytes(capacity: number): number {
  return clientTableBytes(capacity);
}

/** What a lookup found: `hit` (the stamp is in `out`), `pending` (the reply was saved but its stamp never came in time), `absent`. */
export type InterleaveLookup = 'hit' | 'pending' | 'absent';

/** A timestamp the table writes into (the responder's reused scratch). */
export interface MutableNtpTimestamp {
  seconds: number;
  fraction: number;
}

/** The receive timestamp as an interleaving server sends it: lowest fraction bit set (RFC 9769 §2 detection). */
export function markReceiveFraction(fraction: number): number {
  return (fraction | 1) >>> 0;
}

/** The transmit timestamp as an interleaving server sends it: lowest fraction bit clear. */
export function markTransmitFraction(fraction: number): number {
  return (fraction & 0xfffffffe) >>> 0;
}

/**
 * Whether a request (at least 48 octets) may be in interleaved mode (RFC 9769 §2): NTPv4, its origin
 * timestamp has the marker bit of our receive timestamps, and its receive and transmit fields differ
 * (otherwise the client could not tell an interleaved reply from a basic one).
 */
export function looksInterleaved(request: Uint8Array): boolean {
  if ((((request[0] ?? 0) >>> 3) & 7) !== 4) return false;
  if ((readU32(request, NtpHeaderOffset.originTime + 4) & 1) === 0) return false;
  for (let i = 0; i < 8; i++) {
    if (request[NtpHeaderOffset.receiveTime + i] !== request[NtpHeaderOffset.transmitTime + i]) return true;
  }
  return false;
}

/** The origin timestamp of a request, seconds half. */
export function originSeconds(request: Uint8Array): number {
  return readU32(request, NtpHeaderOffset.originTime);
}

/** The origin timestamp of a request, fraction half. */
export function originFraction(request: Uint8Array): number {
  return readU32(request, NtpHeaderOffset.originTime + 4);
}

/** What InterleaveTable.exchange found (the lookup) and did (whether it saved the new entry); reused per call. */
export interface InterleaveExchange {
  lookup: InterleaveLookup;
  saved: boolean;
}

/** The bounded, possibly shared table of replies waiting for (or holding) their kernel transmit stamp. */
export class InterleaveTable extends ClientTableUser {
  readonly #cursor: ClientTableCursor = { bucket: 0, slot: -1 };

  /** Lays out an empty table of at most `capacity` entries in `buffer` (interleaveTableBytes(capacity) octets), hashed under `seed`. */
  static create(buffer: ArrayBuffer | SharedArrayBuffer, capacity: number, seed: number): InterleaveTable {
    return new InterleaveTable(new ClientTable(buffer, { capacity, seed }));
  }

  /** Attaches to a table another thread created in `buffer`. */
  static attach(buffer: ArrayBuffer | SharedArrayBuffer): InterleaveTable {
    return new InterleaveTable(new ClientTable(buffer));
  }

  private constructor(table: ClientTable) {
    super(table);
  }

  /** Entries dropped before use so far, by any thread (u32, wraps). */
  get evictions(): number {
    return this.table.userWord(U_EVICTIONS) >>> 0;
  }

  /** Finds the entry (peer, rx, nts) in the locked bucket: its slot or -1. */
  #find(peer: Uint32Array, rxSeconds: number, rxFraction: number, nts: number): number {
    const t = this.table;
    const first = t.firstSlot(this.#cursor);
    for (let s = first; s < first + t.ways; s++) {
      if (
        t.holds(s, peer) &&
        t.int(s, I_RX_SECONDS) === (rxSeconds | 0) &&
        t.int(s, I_RX_FRACTION) === (rxFraction | 0) &&
        (nts < 0 || (t.int(s, I_FLAGS) & FLAG_NTS) === nts)
      ) {
        return s;
      }
    }
    return -1;
  }

  /**
   * Looks up the reply to `peer` (core/ip.ts words) whose receive timestamp the request echoes as its
   * origin, for an NTS request or not, and uses it up (one reply per entry). On `hit`, `out` holds that
   * reply's kernel transmit stamp.
   */
  take(peer: Uint32Array, origin: NtpTimestamp, nts: boolean, out: MutableNtpTimestamp): InterleaveLookup {
    const t = this.table;
    t.lock(hashIpWords(peer, t.seed), this.#cursor);
    try {
      return this.#take(peer, origin, nts, out);
    } finally {
      t.unlock(this.#cursor);
    }
  }

  /**
   * take(peer, origin, nts, out) and then save(peer, rx, nts, nowMs) under one lock of the peer's bucket (one
   * hash), as a reply to a request that looks interleaved needs both. Returns the lookup; `saved` is save's answer.
   */
  exchange(peer: Uint32Array, origin: NtpTimestamp, rx: NtpTimestamp, nts: boolean, nowMs: number, out: MutableNtpTimestamp, result: InterleaveExchange): InterleaveExchange {
    const t = this.table;
    t.lock(hashIpWords(peer, t.seed), this.#cursor);
    try {
      result.lookup = this.#take(peer, origin, nts, out);
      result.saved = this.#save(peer, rx, nts, nowMs);
      return result;
    } finally {
      t.unlock(this.#cursor);
    }
  }

  /** take() with the peer's bucket locked. */
  #take(peer: Uint32Array, origin: NtpTimestamp, nts: boolean, out: MutableNtpTimestamp): InterleaveLookup {
    const t = this.table;
    const s = this.#find(peer, origin.seconds, origin.fraction, nts ? FLAG_NTS : 0);
    if (s < 0) return 'absent';
    const flags = t.int(s, I_FLAGS);
    const delta = t.float(s, F_TX_DELTA);
    t.releaseSlot(s);
    if ((flags & FLAG_TX) === 0) return 'pending';
    const total = origin.fraction + delta;
    const carry = Math.floor(total / FRACTION_PER_S);
    out.seconds = (origin.seconds + carry) >>> 0;
    out.fraction = (total - carry * FRACTION_PER_S) >>> 0;
    return 'hit';
  }

  /**
   * Remembers a reply to `peer` whose receive timestamp (as sent, marked) is `rx`, until its transmit stamp
   * comes (setTransmit) and the client's next request uses it (take). `nowMs` orders evictions. Returns
   * false when an entry with this key already exists: both are then ambiguous and dropped (the caller asks
   * for no stamp).
   */
  save(peer: Uint32Array, rx: NtpTimestamp, nts: boolean, nowMs: number): boolean {
    const t = this.table;
    t.lock(hashIpWords(peer, t.seed), this.#cursor);
    try {
      return this.#save(peer, rx, nts, nowMs);
    } finally {
      t.unlock(this.#cursor);
    }
  }

  /** save() with the peer's bucket locked. */
  #save(peer: Uint32Array, rx: NtpTimestamp, nts: boolean, nowMs: number): boolean {
    const t = this.table;
    const cursor = this.#cursor;
    const existing = this.#find(peer, rx.seconds, rx.fraction, -1);
    if (existing >= 0) {
      t.releaseSlot(existing);
      return false;
    }
    const first = t.firstSlot(cursor);
    let free = -1;
    let own = 0;
    let ownOldest = -1;
    let oldest = -1;
    for (let s = first; s < first + t.ways; s++) {
      if (!t.isUsed(s)) {
        if (free < 0) free = s;
        continue;
      }
      const savedMs = t.float(s, F_SAVED_MS);
      if (oldest < 0 || savedMs < t.float(oldest, F_SAVED_MS)) oldest = s;
      if (t.holds(s, peer)) {
        own++;
        if (ownOldest < 0 || savedMs < t.float(ownOldest, F_SAVED_MS)) ownOldest = s;
      }
    }
    let slot: number;
    if (own >= INTERLEAVE_ENTRIES_PER_ADDRESS && ownOldest >= 0) {
      slot = ownOldest;
    } else if (free >= 0) {
      slot = free;
    } else {
      slot = oldest;
    }
    if (slot !== free) t.addUserWord(U_EVICTIONS, 1);
    t.claimSlot(peer, cursor, slot);
    t.setInt(slot, I_RX_SECONDS, rx.seconds | 0);
    t.setInt(slot, I_RX_FRACTION, rx.fraction | 0);
    t.setInt(slot, I_FLAGS, nts ? FLAG_NTS : 0);
    t.setFloat(slot, F_SAVED_MS, nowMs);
    return true;
  }

  /**
   * Stores the kernel transmit stamp `tx` of the reply saved as (peer, rx). Returns false when that entry
   * is gone (used, evicted) or the stamp is more than MAX_TRANSMIT_DELAY_S from rx: a late stamp.
   */
  setTransmit(peer: Uint32Array, rxSeconds: number, rxFraction: number, tx: NtpTimestamp): boolean {
    const secondsDelta = ((tx.seconds - rxSeconds) | 0) * FRACTION_PER_S;
    const delta = secondsDelta + (tx.fraction - rxFraction);
    if (delta > MAX_DELTA || delta < -MAX_DELTA) return false;
    const t = this.table;
    const cursor = this.#cursor;
    t.lock(hashIpWords(peer, t.seed), cursor);
    try {
      const s = this.#find(peer, rxSeconds, rxFraction, -1);
      if (s < 0) return false;
      t.setFloat(s, F_TX_DELTA, delta);
      t.setInt(s, I_FLAGS, t.int(s, I_FLAGS) | FLAG_TX);
      return true;
    } finally {
      t.unlock(cursor);
    }
  }
}
