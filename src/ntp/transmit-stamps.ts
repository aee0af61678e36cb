/**
 * Kernel transmit stamps of one native socket, matched to the replies that asked for them (RFC 9769
 * interleaved mode, ntp/socket-native.ts). A reply to a client that looks interleaved leaves with a
 * SO_TIMESTAMPING request; the addon tells which OPT_ID its stamp will carry, and the reply is noted here
 * under that id with its client address and receive timestamp (the interleave table's key). When the
 * stamp is read from the error queue it goes into the shared table (InterleaveTable.setTransmit), where
 * the client's next request, on whichever thread, finds it.
 *
 * Nothing here waits: a stamp that never comes is counted `missing` when its note is older than
 * MAX_PENDING_MS (or its ring slot is needed again); one that comes after the table entry was used or
 * dropped is counted `late`. If stamps keep carrying ids we never handed out (the kernel numbered a send
 * the addon saw fail), `needsReset` asks the socket to restart the numbering (addon resetTxIds).
 * No allocation per packet: a fixed ring of typed arrays.
 */
import type { InterleaveTable } from '../core/interleave.js';
import { NTP_UNIX_OFFSET_S, type NtpTime } from '../runtime/clock.js';

/** Notes kept at once per socket (a power of two); more stamped replies than this between reads count as missing. */
export const PENDING_SLOTS = 1024;
/** A stamp not read within this long is counted missing. */
export const MAX_PENDING_MS = 1000;
/** Stamps in a row with ids no reply was given before the numbering is restarted. */
export const MISMATCHES_BEFORE_RESET = 4;

const MASK = PENDING_SLOTS - 1;
const FRACTION_PER_NS = 4.294967296;

/** Cumulative counts of one socket. */
export interface TransmitStampCounts {
  captured: number;
  missing: number;
  late: number;
}

/** The replies of one socket waiting for their kernel transmit stamp. */
export class PendingTransmitStamps {
  readonly counts: TransmitStampCounts = { captured: 0, missing: 0, late: 0 };
  readonly #table: InterleaveTable;
  readonly #ids = new Uint32Array(PENDING_SLOTS).fill(0xffffffff);
  readonly #live = new Uint8Array(PENDING_SLOTS);
  readonly #peers = new Uint32Array(PENDING_SLOTS * 4);
  readonly #keys = new Uint32Array(PENDING_SLOTS * 2);
  readonly #sentMs = new Float64Array(PENDING_SLOTS);
  readonly #peer = new Uint32Array(4);
  readonly #tx: NtpTime = { seconds: 0, fraction: 0 };
  #liveCount = 0;
  #mismatches = 0;

  constructor(table: InterleaveTable) {
    this.#table = table;
  }

  /** Replies whose stamp has not been read yet. */
  get live(): number {
    return this.#liveCount;
  }

  /** Whether the kernel's numbering and ours disagree: call the addon's resetTxIds, then clear(). */
  get needsReset(): boolean {
    return this.#mismatches >= MISMATCHES_BEFORE_RESET;
  }

  /** Notes a reply sent with a stamp request whose stamp will carry `id`. */
  add(id: number, peer: Uint32Array, key: NtpTime, nowMs: number): void {
    const slot = id & MASK;
    if (this.#live[slot] === 1) this.counts.missing++;
    else this.#liveCount++;
    this.#live[slot] = 1;
    this.#ids[slot] = id;
    this.#peers.set(peer, slot * 4);
    this.#keys[slot * 2] = key.seconds;
    this.#keys[slot * 2 + 1] = key.fraction;
    this.#sentMs[slot] = nowMs;
  }

  /** Handles `n` stamps read by the addon as (id, Unix seconds, nanoseconds) triples. */
  match(stamps: Float64Array, n: number): void {
    for (let i = 0; i < n; i++) {
      const id = (stamps[i * 3] ?? 0) >>> 0;
      const slot = id & MASK;
      if (this.#ids[slot] !== id) {
        // Not an id we handed out lately: the numbering may have slipped.
        this.counts.late++;
        this.#mismatches++;
        continue;
      }
      this.#mismatches = 0;
      if (this.#live[slot] !== 1) {
        this.counts.late++; // already counted missing
        continue;
      }
      this.#live[slot] = 0;
      this.#liveCount--;
      const tx = this.#tx;
      tx.seconds = ((stamps[i * 3 + 1] ?? 0) + NTP_UNIX_OFFSET_S) >>> 0;
      tx.fraction = Math.floor((stamps[i * 3 + 2] ?? 0) * FRACTION_PER_NS) >>> 0;
      const peer = this.#peer;
      for (let w = 0; w < 4; w++) peer[w] = this.#peers[slot * 4 + w] ?? 0;
      if (this.#table.setTransmit(peer, this.#keys[slot * 2] ?? 0, this.#keys[slot * 2 + 1] ?? 0, tx)) this.counts.captured++;
      else this.counts.late++;
    }
  }

  /** Counts notes older than MAX_PENDING_MS as missing (their stamp is given up). */
  expire(nowMs: number): void {
    if (this.#liveCount === 0) return;
    for (let slot = 0; slot < PENDING_SLOTS; slot++) {
      if (this.#live[slot] !== 1 || nowMs - (this.#sentMs[slot] ?? 0) <= MAX_PENDING_MS) continue;
      this.#live[slot] = 0;
      this.#liveCount--;
      this.counts.missing++;
    }
  }

  /** After the numbering restarted: every note is given up (missing) and forgotten. */
  clear(): void {
    this.counts.missing += this.#liveCount;
    this.#liveCount = 0;
    this.#mismatches = 0;
    this.#live.fill(0);
    // Ids the kernel may still report under the old numbering must not match new notes by accident.
    this.#ids.fill(0xffffffff);
  }
}
