/**
 * A bounded table of per-client entries in caller-supplied memory (ArrayBuffer, or SharedArrayBuffer so
 * that several threads share one table). It never grows: the memory is `clientTableBytes(capacity)`.
 *
 * Layout: a header (16 int32 words: magic, ways, buckets, hash seed, slot size, then 11 words for the
 * table's user, e.g. a limiter's configuration), one lock word per bucket, then the slots. The table is
 * set-associative: a key hashes (seeded, so a peer cannot aim collisions at a victim without the seed)
 * to one bucket of `ways` slots and lives in one of them. Each slot holds a used flag, the key (four
 * words, core/ip.ts form), then the user's values: int32s, then float64s. How many of each is the
 * table's layout (default three and two: the limiter's and the concurrency caps' 48-octet slots; the
 * client log, core/client-log.ts, keeps more).
 *
 * Threads: every read or write of a bucket's slots happens between lock and unlock. The lock is an
 * Atomics word: a few tries spinning (the critical sections are a few dozen operations), then
 * Atomics.wait until the holder's notify (a waiter marks the word first, so an uncontended unlock makes
 * no notify call: Drepper's "Futexes are tricky" mutex), so a thread whose lock holder was preempted sleeps instead of
 * burning the CPU the holder needs (on an oversubscribed box, where the holder is often preempted, a pure
 * spin lock cost two KE threads up to half their handshakes per CPU-second). The Atomics operations order the plain accesses in between
 * (ECMAScript memory model). A lock still held after WAIT_LIMIT waits (about a second) is taken over: a
 * thread terminated inside a critical section must not wedge its bucket forever, and the worst case of a
 * takeover is one entry's counters being off by one.
 */

/** Int32 words in the header. */
const HEADER_WORDS = 16;
/** Header words the table's user may keep its own values in (indexes USER_WORD0 .. HEADER_WORDS-1). */
export const CLIENT_TABLE_USER_WORDS = 11;
const USER_WORD0 = HEADER_WORDS - CLIENT_TABLE_USER_WORDS;
/** Header word holding the slot layout: int32 words per slot (low 16 bits), float64 values per slot (high 16). */
const H_SLOT_LAYOUT = 4;
/** Int32 words of a slot before the user's values: the used flag and the four key words. */
const SLOT_KEY_WORDS = 5;
/** "NTST" in ASCII: marks an initialised table. */
const MAGIC = 0x4e545354;
/** Slots per bucket when the capacity allows. */
const DEFAULT_WAYS = 8;
/** Tries spinning before waiting for a held bucket lock. */
const SPIN_TRIES = 64;
/** Waits of up to WAIT_MS before a held bucket lock is taken over (see the module comment). */
const WAIT_LIMIT = 1000;
const WAIT_MS = 1;

/** User values per slot: `ints` int32 and `floats` float64 (at least 2: float 1 is the eviction order). */
export interface ClientTableLayout {
  readonly ints: number;
  readonly floats: number;
}

/** The layout of the limiter's and the concurrency caps' tables: 3 int32, 2 float64 (48-octet slots). */
const DEFAULT_CLIENT_TABLE_LAYOUT: ClientTableLayout = Object.freeze({ ints: 3, floats: 2 });

/** Int32 words per slot for `layout` (the int32 part padded to keep the float64s 8-octet aligned). */
function slotWords(layout: ClientTableLayout): number {
  if (!Number.isInteger(layout.ints) || layout.ints < 0 || !Number.isInteger(layout.floats) || layout.floats < 2 || layout.ints + layout.floats > 64) {
    throw new RangeError(`client table layout out of range: ${layout.ints} int32, ${layout.floats} float64`);
  }
  const ints = SLOT_KEY_WORDS + layout.ints;
  return ints + (ints & 1) + 2 * layout.floats;
}

/** Geometry of a table of `capacity` slots: ways per bucket and bucket count (ways × buckets ≤ capacity). */
function geometry(capacity: number): { ways: number; buckets: number } {
  const c = Math.max(1, Math.floor(capacity));
  const ways = Math.min(DEFAULT_WAYS, c);
  return { ways, buckets: Math.floor(c / ways) };
}

function lockWordsRounded(buckets: number): number {
  return buckets + (buckets & 1); // keep the slots 8-octet aligned
}

/** Octets of memory a table of at most `capacity` entries needs (state this in docs: it is all it uses). */
export function clientTableBytes(capacity: number, layout: ClientTableLayout = DEFAULT_CLIENT_TABLE_LAYOUT): number {
  const { ways, buckets } = geometry(capacity);
  return HEADER_WORDS * 4 + lockWordsRounded(buckets) * 4 + ways * buckets * slotWords(layout) * 4;
}

/** Where a key lives: its bucket and, once found or claimed, its slot. */
export interface ClientTableCursor {
  bucket: number;
  slot: number;
}

/** A view of a table in shared or private memory; several views (one per thread) may share one buffer. */
export class ClientTable {
  /** The memory, to hand to another thread (postMessage a SharedArrayBuffer, then `new ClientTable(buffer)` there). */
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  /** Slots per bucket. */
  readonly ways: number;
  /** Buckets. */
  readonly buckets: number;
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;
  readonly #locksAt: number;
  readonly #slotsI32At: number;
  readonly #slotsF64At: number;
  /** Int32 words per slot, and where a slot's float64s start (in float64 units from the slot's start). */
  readonly #slotI32: number;
  readonly #floatsAt: number;
  readonly #seed: number;
  /** Atomics.wait needs shared memory; a private table is never contended. */
  readonly #shared: boolean;

  /**
   * Attaches to `buffer`. With `init` it first lays out an empty table of at most `init.capacity`
   * entries of `init.layout` (default DEFAULT_CLIENT_TABLE_LAYOUT) hashed under `init.seed` (32 random
   * bits from the caller); without it the buffer must already hold a table (another thread's). Throws on
   * a buffer of the wrong size or content: a bug.
   */
  constructor(buffer: ArrayBuffer | SharedArrayBuffer, init?: { readonly capacity: number; readonly seed: number; readonly layout?: ClientTableLayout }) {
    this.buffer = buffer;
    this.#shared = typeof SharedArrayBuffer !== 'undefined' && buffer instanceof SharedArrayBuffer;
    this.#i32 = new Int32Array(buffer);
    this.#f64 = new Float64Array(buffer, 0, Math.floor(buffer.byteLength / 8));
    if (init !== undefined) {
      const layout = init.layout ?? DEFAULT_CLIENT_TABLE_LAYOUT;
      const { ways, buckets } = geometry(init.capacity);
      if (buffer.byteLength < clientTableBytes(init.capacity, layout)) throw new RangeError('client table buffer too small');
      this.#i32.fill(0);
      this.#i32[1] = ways;
      this.#i32[2] = buckets;
      this.#i32[3] = init.seed | 0;
      this.#i32[H_SLOT_LAYOUT] = slotWords(layout) | (layout.floats << 16);
      Atomics.store(this.#i32, 0, MAGIC);
    }
    if (Atomics.load(this.#i32, 0) !== MAGIC) throw new RangeError('buffer does not hold a client table');
    this.ways = this.#i32[1] ?? 0;
    this.buckets = this.#i32[2] ?? 0;
    this.#seed = this.#i32[3] ?? 0;
    const packed = this.#i32[H_SLOT_LAYOUT] ?? 0;
    this.#slotI32 = packed & 0xffff;
    const floats = packed >>> 16;
    if ((this.#slotI32 & 1) !== 0 || floats < 2 || this.#slotI32 < SLOT_KEY_WORDS + 1 + 2 * floats) throw new RangeError('client table header has a bad slot layout');
    // A slot's float64s are its last 8 × floats octets.
    this.#floatsAt = this.#slotI32 / 2 - floats;
    this.#locksAt = HEADER_WORDS;
    this.#slotsI32At = HEADER_WORDS + lockWordsRounded(this.buckets);
    this.#slotsF64At = this.#slotsI32At / 2;
    if (buffer.byteLength < (this.#slotsI32At + this.ways * this.buckets * this.#slotI32) * 4) {
      throw new RangeError('client table buffer too small for its header');
    }
  }

  /** Entries the table can hold. */
  get capacity(): number {
    return this.ways * this.buckets;
  }

  /** The hash seed, to derive further keyed hashes (e.g. a second table with the same spread). */
  get seed(): number {
    return this.#seed;
  }

  /** Reads user header word `i` (0 .. CLIENT_TABLE_USER_WORDS-1), atomically. */
  userWord(i: number): number {
    return Atomics.load(this.#i32, USER_WORD0 + i);
  }

  /** Writes user header word `i`, atomically (every thread sees it on its next read). */
  setUserWord(i: number, value: number): void {
    Atomics.store(this.#i32, USER_WORD0 + i, value);
  }

  /** Compare-and-swap on user header word `i`; returns the value found (== `expected` when it swapped). */
  compareExchangeUserWord(i: number, expected: number, value: number): number {
    return Atomics.compareExchange(this.#i32, USER_WORD0 + i, expected, value);
  }

  /** Adds `delta` to user header word `i` atomically; returns the previous value. */
  addUserWord(i: number, delta: number): number {
    return Atomics.add(this.#i32, USER_WORD0 + i, delta);
  }

  /** Locks the bucket of a key whose hash (hashIpWords under `seed`) is `hash`; the cursor's slot is -1 until find/claim. */
  lock(hash: number, cursor: ClientTableCursor): void {
    const bucket = (hash >>> 0) % this.buckets;
    const at = this.#locksAt + bucket;
    const i32 = this.#i32;
    // Lock word: 0 free, 1 held, 2 held with a sleeper to wake (so an uncontended unlock skips the notify).
    let c = Atomics.compareExchange(i32, at, 0, 1);
    for (let tries = 0; c !== 0 && tries < SPIN_TRIES; tries++) c = Atomics.compareExchange(i32, at, 0, 1);
    // Private memory has no other thread to wait for. Shared: sleep until the holder's notify (or WAIT_MS),
    // marking the word 2 first; after WAIT_LIMIT waits take over a lock abandoned by a dead thread.
    if (c !== 0 && this.#shared) {
      if (c !== 2) c = Atomics.exchange(i32, at, 2);
      for (let waits = 0; c !== 0 && waits < WAIT_LIMIT; waits++) {
        Atomics.wait(i32, at, 2, WAIT_MS);
        c = Atomics.exchange(i32, at, 2);
      }
    }
    cursor.bucket = bucket;
    cursor.slot = -1;
  }

  /** Releases the cursor's bucket. */
  unlock(cursor: ClientTableCursor): void {
    const at = this.#locksAt + cursor.bucket;
    if (Atomics.exchange(this.#i32, at, 0) === 2 && this.#shared) Atomics.notify(this.#i32, at, 1);
  }

  /** Finds `words` in the (locked) bucket; sets and returns cursor.slot, -1 when absent. */
  find(words: Uint32Array, cursor: ClientTableCursor): number {
    const first = cursor.bucket * this.ways;
    for (let s = first; s < first + this.ways; s++) {
      if (this.holds(s, words)) {
        cursor.slot = s;
        return s;
      }
    }
    cursor.slot = -1;
    return -1;
  }

  /**
   * Takes a slot for `words` in the (locked) bucket: a free one, else (when `evict`) the one whose float64
   * user value 1 is smallest (callers keep "last seen" there, so the least recently seen client goes).
   * The slot's user values are zeroed. Returns the slot, or -1 when the bucket is full and `evict` is false.
   */
  claim(words: Uint32Array, cursor: ClientTableCursor, evict: boolean): number {
    const first = cursor.bucket * this.ways;
    let victim = -1;
    let victimSeen = Infinity;
    for (let s = first; s < first + this.ways; s++) {
      const at = this.#slotsI32At + s * this.#slotI32;
      if (this.#i32[at] !== 1) {
        victim = s;
        break;
      }
      const seen = this.#f64[this.#slotsF64At + s * (this.#slotI32 >> 1) + this.#floatsAt + 1] ?? 0;
      if (evict && seen < victimSeen) {
        victim = s;
        victimSeen = seen;
      }
    }
    cursor.slot = victim;
    if (victim < 0) return -1;
    return this.claimSlot(words, cursor, victim);
  }

  /**
   * Takes slot `slot` of the (locked) bucket for `words`, whatever it held, with its user values zeroed
   * (for users that choose their own victim). Returns the slot; throws RangeError outside the bucket (a bug).
   */
  claimSlot(words: Uint32Array, cursor: ClientTableCursor, slot: number): number {
    const first = cursor.bucket * this.ways;
    if (slot < first || slot >= first + this.ways) throw new RangeError('client table: slot outside the locked bucket');
    cursor.slot = slot;
    const at = this.#slotsI32At + slot * this.#slotI32;
    this.#i32[at] = 1;
    for (let w = 0; w < 4; w++) this.#i32[at + 1 + w] = (words[w] ?? 0) | 0;
    this.#i32.fill(0, at + SLOT_KEY_WORDS, at + this.#slotI32); // the user's int32s, padding and float64s
    return slot;
  }

  /** First slot of the cursor's (locked) bucket; its slots are [firstSlot, firstSlot + ways). */
  firstSlot(cursor: ClientTableCursor): number {
    return cursor.bucket * this.ways;
  }

  /** Whether `slot` (in a locked bucket) is in use with key `words`. */
  holds(slot: number, words: Uint32Array): boolean {
    const at = this.#slotsI32At + slot * this.#slotI32;
    const i32 = this.#i32;
    return (
      i32[at] === 1 &&
      i32[at + 1] === ((words[0] ?? 0) | 0) &&
      i32[at + 2] === ((words[1] ?? 0) | 0) &&
      i32[at + 3] === ((words[2] ?? 0) | 0) &&
      i32[at + 4] === ((words[3] ?? 0) | 0)
    );
  }

  /** Frees `slot` (its bucket must be locked). */
  releaseSlot(slot: number): void {
    this.#i32[this.#slotsI32At + slot * this.#slotI32] = 0;
  }

  /** Frees the cursor's slot (its bucket must be locked). */
  release(cursor: ClientTableCursor): void {
    if (cursor.slot >= 0) this.releaseSlot(cursor.slot);
  }

  /** Int32 user value `k` (0 .. layout.ints-1) of `slot`. */
  int(slot: number, k: number): number {
    return this.#i32[this.#slotsI32At + slot * this.#slotI32 + SLOT_KEY_WORDS + k] ?? 0;
  }

  /** Sets int32 user value `k` of `slot`. */
  setInt(slot: number, k: number, value: number): void {
    this.#i32[this.#slotsI32At + slot * this.#slotI32 + SLOT_KEY_WORDS + k] = value;
  }

  /** Adds 1 to int32 user value `k` of `slot` (wrapping at 2^32: read it with `>>> 0`). */
  incrementInt(slot: number, k: number): void {
    const at = this.#slotsI32At + slot * this.#slotI32 + SLOT_KEY_WORDS + k;
    this.#i32[at] = ((this.#i32[at] ?? 0) + 1) | 0;
  }

  /** Float64 user value `k` (0 .. layout.floats-1) of `slot`; value 1 is the eviction order (smallest goes first). */
  float(slot: number, k: number): number {
    return this.#f64[this.#slotsF64At + slot * (this.#slotI32 >> 1) + this.#floatsAt + k] ?? 0;
  }

  /** Sets float64 user value `k` of `slot`. */
  setFloat(slot: number, k: number, value: number): void {
    this.#f64[this.#slotsF64At + slot * (this.#slotI32 >> 1) + this.#floatsAt + k] = value;
  }

  /** Locks bucket `bucket` (0 .. buckets-1) itself, to walk its slots (ways × bucket .. ways × bucket + ways-1). */
  lockBucket(bucket: number, cursor: ClientTableCursor): void {
    this.lock(bucket, cursor); // bucket < buckets: the modulo keeps it
  }

  /** Whether `slot` holds a key (read under its bucket's lock for a consistent answer). */
  isUsed(slot: number): boolean {
    return this.#i32[this.#slotsI32At + slot * this.#slotI32] === 1;
  }

  /** Copies the key of `slot` into `out` (four words). */
  keyOf(slot: number, out: Uint32Array): void {
    const at = this.#slotsI32At + slot * this.#slotI32 + 1;
    for (let w = 0; w < 4; w++) out[w] = (this.#i32[at + w] ?? 0) >>> 0;
  }

  /** Entries in use (a scan of every slot without locks: exact when no thread writes meanwhile). */
  countUsed(): number {
    let n = 0;
    for (let s = 0; s < this.capacity; s++) if (Atomics.load(this.#i32, this.#slotsI32At + s * this.#slotI32) === 1) n++;
    return n;
  }
}

/**
 * Base of the tables kept in a ClientTable (the rate limiter, the interleave table, the client log): the shared
 * memory to hand to other threads and its size. A subclass adds its own reads and writes of the slots.
 */
export abstract class ClientTableUser {
  /** The table every thread's view shares. */
  protected readonly table: ClientTable;

  protected constructor(table: ClientTable) {
    this.table = table;
  }

  /** The memory, to hand to other threads. */
  get buffer(): ArrayBuffer | SharedArrayBuffer {
    return this.table.buffer;
  }

  /** Most entries held at once. */
  get capacity(): number {
    return this.table.capacity;
  }

  /** Entries held now (a scan of every slot: exact when no thread writes meanwhile). */
  get size(): number {
    return this.table.countUsed();
  }
}
