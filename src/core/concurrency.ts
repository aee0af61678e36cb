/**
 * Concurrent-connection caps for the NTS-KE listeners: one global cap and one per source (an IPv4
 * address, or an IPv6 /64: one site's hosts, and the prefix an attacker gets for the price of one address).
 * Both live in a ClientTable (core/client-table.ts) that may sit in a SharedArrayBuffer, so the KE threads
 * of one listener share them exactly: a source landing on N threads still gets one cap.
 *
 * A slot holds a source's open-connection count and is freed when the count returns to 0, so the table
 * holds at most as many entries as there are open connections (sized by concurrencyTableBytes with room
 * to spare). Should a source's bucket be full of live entries anyway, the source is admitted untracked:
 * the global cap still bounds it, and refusing would let collisions lock out an honest client.
 */
import { ClientTable, clientTableBytes, type ClientTableCursor } from './client-table.js';
import { hashIpWords, maskIpPrefix, parseIpAddress } from './ip.js';

/** Result of acquire(): admitted (tracked or not), or refused by which cap. */
export type ConcurrencyDecision = 'admitted' | 'untracked' | 'source_limit' | 'global_limit';

const CFG_GLOBAL_MAX = 0;
const CFG_SOURCE_MAX = 1;
const STATE_OPEN = 2;
const I_COUNT = 0;
/** Table slots per connection the global cap allows (free slots keep buckets from filling up). */
const SLOTS_PER_CONNECTION = 4;
const MIN_SLOTS = 64;

function slotsFor(globalMax: number): number {
  return Math.max(MIN_SLOTS, SLOTS_PER_CONNECTION * globalMax);
}

/** Octets of memory a concurrency table for `globalMax` connections needs. */
export function concurrencyTableBytes(globalMax: number): number {
  return clientTableBytes(slotsFor(globalMax));
}

/** The two caps. */
export interface ConcurrencyLimits {
  /** Connections open at once over every sharing thread, at least 1. */
  readonly globalMax: number;
  /** Connections open at once from one source (IPv4 address or IPv6 /64), at least 1. */
  readonly perSourceMax: number;
}

/** A source's key, kept by the caller between acquire and release. */
export type SourceKey = Uint32Array;

/** Global and per-source open-connection counts over a (possibly shared) table. */
export class ConcurrencyLimiter {
  readonly #table: ClientTable;
  readonly #cursor: ClientTableCursor = { bucket: 0, slot: -1 };

  /** Lays out a table in `buffer` (concurrencyTableBytes(limits.globalMax) octets) with `seed` (32 random bits). */
  static create(buffer: ArrayBuffer | SharedArrayBuffer, limits: ConcurrencyLimits, seed: number): ConcurrencyLimiter {
    const c = new ConcurrencyLimiter(new ClientTable(buffer, { capacity: slotsFor(limits.globalMax), seed }));
    c.configure(limits);
    return c;
  }

  /** Attaches to a table another thread created. */
  static attach(buffer: ArrayBuffer | SharedArrayBuffer): ConcurrencyLimiter {
    return new ConcurrencyLimiter(new ClientTable(buffer));
  }

  private constructor(table: ClientTable) {
    this.#table = table;
  }

  /** The memory to hand to other threads. */
  get buffer(): ArrayBuffer | SharedArrayBuffer {
    return this.#table.buffer;
  }

  /** Connections open over every thread. */
  get open(): number {
    return this.#table.userWord(STATE_OPEN);
  }

  /** The caps now in force. */
  get limits(): ConcurrencyLimits {
    return { globalMax: this.#table.userWord(CFG_GLOBAL_MAX), perSourceMax: this.#table.userWord(CFG_SOURCE_MAX) };
  }

  /**
   * Replaces the caps (SIGHUP); open connections are not closed, new ones wait for the counts to fall.
   * A global cap beyond what the table was sized for still works: more sources may go untracked.
   */
  configure(limits: ConcurrencyLimits): void {
    if (!Number.isInteger(limits.globalMax) || limits.globalMax < 1) throw new RangeError(`globalMax out of range: ${limits.globalMax}`);
    if (!Number.isInteger(limits.perSourceMax) || limits.perSourceMax < 1) throw new RangeError(`perSourceMax out of range: ${limits.perSourceMax}`);
    this.#table.setUserWord(CFG_GLOBAL_MAX, limits.globalMax);
    this.#table.setUserWord(CFG_SOURCE_MAX, limits.perSourceMax);
  }

  /**
   * The source key of `address` (IPv4 /32, IPv6 /64; IPv4-mapped = IPv4). A non-address string keys as the
   * unspecified address.
   */
  sourceKey(address: string): SourceKey {
    const words = new Uint32Array(4);
    const family = parseIpAddress(address, words);
    if (family === 0) words.fill(0);
    else maskIpPrefix(words, family, family === 4 ? 32 : 64);
    return words;
  }

  /** Open connections from `key` (0 when untracked or unknown). */
  count(key: SourceKey): number {
    const t = this.#table;
    const cursor = this.#cursor;
    t.lock(hashIpWords(key, t.seed), cursor);
    try {
      return t.find(key, cursor) < 0 ? 0 : t.int(cursor.slot, I_COUNT);
    } finally {
      t.unlock(cursor);
    }
  }

  /**
   * Counts one more connection from `key` if the source is under its cap (else `source_limit`) and the
   * global count under its cap (else `global_limit`, nothing counted: the caller may make room with
   * release() and try again). `untracked`: admitted and counted globally only (see the module comment);
   * release it with `tracked` false.
   */
  acquire(key: SourceKey): ConcurrencyDecision {
    const t = this.#table;
    const cursor = this.#cursor;
    const perSourceMax = t.userWord(CFG_SOURCE_MAX);
    t.lock(hashIpWords(key, t.seed), cursor);
    try {
      let slot = t.find(key, cursor);
      const current = slot < 0 ? 0 : t.int(slot, I_COUNT);
      if (current >= perSourceMax) return 'source_limit';
      if (!this.#takeGlobal()) return 'global_limit';
      if (slot < 0) slot = t.claim(key, cursor, false);
      if (slot < 0) return 'untracked';
      t.setInt(slot, I_COUNT, current + 1);
      return 'admitted';
    } finally {
      t.unlock(cursor);
    }
  }

  /**
   * Counts one connection from `key` whatever the caps (to rebuild a table from connections already
   * open). Returns whether it is tracked per source (release it with that flag).
   */
  register(key: SourceKey): boolean {
    const t = this.#table;
    const cursor = this.#cursor;
    t.addUserWord(STATE_OPEN, 1);
    t.lock(hashIpWords(key, t.seed), cursor);
    try {
      let slot = t.find(key, cursor);
      if (slot < 0) slot = t.claim(key, cursor, false);
      if (slot < 0) return false;
      t.setInt(slot, I_COUNT, t.int(slot, I_COUNT) + 1);
      return true;
    } finally {
      t.unlock(cursor);
    }
  }

  /** Undoes one acquire() of `key`; `tracked` false for an `untracked` admission. */
  release(key: SourceKey, tracked: boolean): void {
    const t = this.#table;
    this.#releaseGlobal();
    if (!tracked) return;
    const cursor = this.#cursor;
    t.lock(hashIpWords(key, t.seed), cursor);
    try {
      if (t.find(key, cursor) < 0) return;
      const left = t.int(cursor.slot, I_COUNT) - 1;
      if (left <= 0) t.release(cursor);
      else t.setInt(cursor.slot, I_COUNT, left);
    } finally {
      t.unlock(cursor);
    }
  }

  #takeGlobal(): boolean {
    const t = this.#table;
    const max = t.userWord(CFG_GLOBAL_MAX);
    for (;;) {
      const open = t.userWord(STATE_OPEN);
      if (open >= max) return false;
      if (t.compareExchangeUserWord(STATE_OPEN, open, open + 1) === open) return true;
    }
  }

  #releaseGlobal(): void {
    this.#table.addUserWord(STATE_OPEN, -1);
  }
}
