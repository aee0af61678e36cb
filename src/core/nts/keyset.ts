/**
 * Master-key set for cookie sealing (RFC 8915 §6, "Suggested Format for NTS Cookies").
 *
 * A keyset is an immutable snapshot: `current` seals new cookies; `next` is already made, persisted and
 * accepted before it becomes current (so a peer that rotated first, e.g. the KE thread, is understood);
 * `stale` holds older keys, newest first, still accepted so slow pollers keep working. Rotation returns
 * a new snapshot and never edits the old one, except that the key dropped off the end is wiped.
 *
 * Key ids (RFC 8915 §6 "I") are random u32s, unique within a keyset. Master keys are AES-SIV-CMAC-256
 * (AEAD 15) keys; each MasterKey caches its keyed cipher so no key schedule is expanded per cookie.
 *
 * Binary encoding (the key file, and the form sent to worker threads), format version 1, big-endian:
 *
 *   offset  size  field
 *   0       8     magic "NTSDKEYS" (ASCII)
 *   8       2     format version = 1
 *   10      2     staleKeyCount (how many stale keys to keep, 0..1024)
 *   12      2     n = number of key records (2 + number of stale keys; ≤ 2 + staleKeyCount)
 *   14      2     reserved, 0
 *   16      8     currentSinceS: Unix seconds when `current` became current (u64)
 *   24      48·n  key records in order current, next, stale newest-first; each:
 *                   id u32 | createdAtS u64 | aeadId u16 (= 15) | keyLength u16 (= 32) | key (32)
 *   24+48n  4     CRC-32 (IEEE 802.3, reflected, as in zlib) of octets [0, 24+48n)
 *
 * The total length must match n exactly. CRC-32 detects every error confined to 32 consecutive bits,
 * so any single corrupted octet (or any truncation / extension, via the length rule) is refused; the
 * whole file is then rejected. The checksum guards against corruption, not against an attacker who
 * can write the file (that attacker already owns the keys).
 *
 * Wiping: a key dropped by rotation, or no longer in the snapshot that replaces its own in a thread
 * (`retireMasterKeys`, which the responder context calls when its keyset is swapped), is overwritten with
 * zeros (`fill(0)`) and its cached cipher wiped at once: OpenSSL cleanses its key copy and frees its contexts
 * (OPENSSL_cleanse), the JavaScript AEAD zeroes its key schedules. For the JavaScript copies this is best
 * effort: the engine may have copied the bytes.
 */
import { readU16, readU32, writeU16, writeU32, type FillRandom } from '../bytes.js';
import { getAead, wipeCipher, type AeadCipher } from '../crypto/aead.js';
import { AeadId } from './ids.js';

/** One master key. `cipher` is the cached keyed AEAD instance (never serialised). */
export interface MasterKey {
  /** Public key identifier I (u32), unique within a keyset. */
  readonly id: number;
  /** Secret key K (AES-SIV-CMAC-256, 32 octets). */
  readonly key: Uint8Array;
  /** Creation time, Unix seconds. */
  readonly createdAtS: number;
  /** Keyed AEAD instance for `key`. */
  readonly cipher: AeadCipher;
}

/** Immutable keyset snapshot. */
export interface Keyset {
  /** Key that seals new cookies. */
  readonly current: MasterKey;
  /** Key that becomes current at the next rotation; already persisted, already accepted. */
  readonly next: MasterKey;
  /** Older keys still accepted, newest first, at most `staleKeyCount`. */
  readonly stale: readonly MasterKey[];
  /** How many stale keys are kept. */
  readonly staleKeyCount: number;
  /** Unix seconds when `current` became current (its creation time for a fresh keyset). */
  readonly currentSinceS: number;
  /** Looks a key up by id: age 0 = current, 1..n = stale generations, -1 = next. */
  find(id: number): { readonly key: MasterKey; readonly age: number } | undefined;
}

/** Options for creating a keyset. */
export interface KeysetOptions {
  readonly staleKeyCount: number;
}

/** AEAD used to seal cookies under master keys: AES-SIV-CMAC-256 (RFC 5297; RFC 8915 §6 asks for a misuse-resistant AEAD). */
export const MASTER_KEY_AEAD_ID = AeadId.AES_SIV_CMAC_256;
/** Master key length in octets (AEAD 15 key, RFC 5297 §6.1). */
export const MASTER_KEY_LENGTH = 32;
/** Largest accepted staleKeyCount. */
export const MAX_STALE_KEY_COUNT = 1024;
/** Magic header of the keyset encoding: "NTSDKEYS". */
export const KEYSET_MAGIC: readonly number[] = Object.freeze([0x4e, 0x54, 0x53, 0x44, 0x4b, 0x45, 0x59, 0x53]);
/** Current keyset encoding version. */
export const KEYSET_FORMAT_VERSION = 1;
/** Length of the fixed header before the key records. */
export const KEYSET_HEADER_LENGTH = 24;
/** Length of one encoded key record. */
export const KEYSET_RECORD_LENGTH = 4 + 8 + 2 + 2 + MASTER_KEY_LENGTH;
/** Length of the trailing CRC-32. */
export const KEYSET_CHECKSUM_LENGTH = 4;

/** Why an encoded keyset was refused. */
export type KeysetDecodeError =
  | 'too_short'
  | 'bad_magic'
  | 'unsupported_version'
  | 'bad_length'
  | 'bad_checksum'
  | 'bad_reserved'
  | 'bad_key_count'
  | 'bad_stale_key_count'
  | 'bad_key_algorithm'
  | 'duplicate_key_id'
  | 'bad_timestamp';

/** Result of decoding a keyset: a value, never an exception. */
export type KeysetDecodeResult =
  | { readonly ok: true; readonly keyset: Keyset }
  | { readonly ok: false; readonly error: KeysetDecodeError };

const REDACTED = '[REDACTED]';
const INSPECT = Symbol.for('nodejs.util.inspect.custom');

function hexId(id: number): string {
  return id.toString(16).padStart(8, '0');
}

function masterKeyCipher(key: Uint8Array): AeadCipher {
  const aead = getAead(MASTER_KEY_AEAD_ID);
  if (aead === undefined) throw new Error('keyset: AEAD_AES_SIV_CMAC_256 is not available');
  return aead.newCipher(key);
}

/** Builds a frozen MasterKey with redacting toJSON/inspect. `key` is owned by the result (not copied). */
function makeMasterKey(id: number, key: Uint8Array, createdAtS: number): MasterKey {
  if (key.length !== MASTER_KEY_LENGTH) throw new RangeError('keyset: master key must be 32 octets');
  const mk = {
    id: id >>> 0,
    key,
    createdAtS,
    cipher: masterKeyCipher(key),
    toJSON(): unknown {
      return { id: hexId(mk.id), createdAtS: mk.createdAtS, key: REDACTED };
    },
    [INSPECT](): string {
      return `MasterKey { id: ${hexId(mk.id)}, createdAtS: ${mk.createdAtS}, key: ${REDACTED} }`;
    },
  };
  return Object.freeze(mk);
}

interface KeyEntry {
  readonly key: MasterKey;
  readonly age: number;
}

/** Builds a frozen Keyset; lookup entries are precomputed so `find` never allocates. */
function makeKeyset(
  current: MasterKey,
  next: MasterKey,
  stale: readonly MasterKey[],
  staleKeyCount: number,
  currentSinceS: number,
): Keyset {
  const entries: KeyEntry[] = [Object.freeze({ key: current, age: 0 }), Object.freeze({ key: next, age: -1 })];
  for (let i = 0; i < stale.length; i++) {
    const key = stale[i];
    if (key !== undefined) entries.push(Object.freeze({ key, age: i + 1 }));
  }
  const frozenStale = Object.freeze(stale.slice());
  const ks = {
    current,
    next,
    stale: frozenStale,
    staleKeyCount,
    currentSinceS,
    find(id: number): KeyEntry | undefined {
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i];
        if (e !== undefined && e.key.id === id) return e;
      }
      return undefined;
    },
    toJSON(): unknown {
      return {
        current: current.id,
        next: next.id,
        stale: frozenStale.map((k) => k.id),
        staleKeyCount,
        currentSinceS,
        keys: REDACTED,
      };
    },
    [INSPECT](): string {
      return `Keyset { current: ${hexId(current.id)}, next: ${hexId(next.id)}, stale: [${frozenStale
        .map((k) => hexId(k.id))
        .join(', ')}], staleKeyCount: ${staleKeyCount}, keys: ${REDACTED} }`;
    },
  };
  return Object.freeze(ks);
}

function checkStaleKeyCount(n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > MAX_STALE_KEY_COUNT) {
    throw new RangeError(`keyset: staleKeyCount must be an integer in 0..${MAX_STALE_KEY_COUNT}`);
  }
}

function wholeSeconds(nowS: number): number {
  if (!Number.isFinite(nowS) || nowS < 0) throw new RangeError('keyset: time must be a non-negative number of seconds');
  return Math.floor(nowS);
}

/** Draws a random u32 id not in `taken`; throws if the random source keeps repeating itself (a broken RNG). */
function freshId(fillRandom: FillRandom, taken: readonly MasterKey[]): number {
  const b = new Uint8Array(4);
  for (let attempt = 0; attempt < 64; attempt++) {
    fillRandom(b);
    const id = readU32(b, 0);
    let clash = false;
    for (const k of taken) if (k.id === id) clash = true;
    if (!clash) return id;
  }
  throw new Error('keyset: random source produced no unused key id in 64 attempts');
}

function freshKey(fillRandom: FillRandom, taken: readonly MasterKey[], nowS: number): MasterKey {
  const id = freshId(fillRandom, taken);
  const key = new Uint8Array(MASTER_KEY_LENGTH);
  fillRandom(key);
  return makeMasterKey(id, key, nowS);
}

/** Creates a fresh keyset (current + next) at `nowS`. */
export function createKeyset(nowS: number, fillRandom: FillRandom, options: KeysetOptions): Keyset {
  checkStaleKeyCount(options.staleKeyCount);
  const t = wholeSeconds(nowS);
  const current = freshKey(fillRandom, [], t);
  const next = freshKey(fillRandom, [current], t);
  return makeKeyset(current, next, [], options.staleKeyCount, t);
}

/**
 * Rotates (RFC 8915 §6): `next` becomes current, a fresh `next` is made, the old current becomes the
 * newest stale key, and stale keys beyond `staleKeyCount` are dropped and wiped (their bytes and cached cipher).
 * Returns a new snapshot. The input snapshot must not be used (or persisted) afterwards: its dropped
 * key has been zeroed.
 */
export function rotateKeyset(ks: Keyset, nowS: number, fillRandom: FillRandom): Keyset {
  const t = wholeSeconds(nowS);
  const all = [ks.current, ks.next, ...ks.stale];
  const stale = [ks.current, ...ks.stale];
  const dropped = stale.splice(ks.staleKeyCount);
  const next = freshKey(fillRandom, all, t);
  const rotated = makeKeyset(ks.next, next, stale, ks.staleKeyCount, t);
  for (const k of dropped) wipeMasterKey(k);
  return rotated;
}

/**
 * Returns a snapshot with a different staleKeyCount (e.g. after a configuration change). Stale keys
 * beyond the new count are dropped and wiped, as in rotateKeyset; the input must not be used afterwards.
 */
export function resizeKeyset(ks: Keyset, staleKeyCount: number): Keyset {
  checkStaleKeyCount(staleKeyCount);
  const stale = ks.stale.slice();
  const dropped = stale.splice(staleKeyCount);
  const resized = makeKeyset(ks.current, ks.next, stale, staleKeyCount, ks.currentSinceS);
  for (const k of dropped) wipeMasterKey(k);
  return resized;
}

/** One key for {@link assembleKeyset}: id, secret and creation time (Unix seconds). */
export interface KeyMaterial {
  readonly id: number;
  readonly key: Uint8Array;
  readonly createdAtS: number;
}

/**
 * Builds a snapshot from keys made elsewhere (the ratchet derives them): `keys` in encoding order (current,
 * next, stale newest-first). The key buffers are owned by the result. Throws RangeError on fewer than two
 * keys, more stale keys than `staleKeyCount`, or a repeated id: the caller's derivation is broken.
 */
export function assembleKeyset(keys: readonly KeyMaterial[], staleKeyCount: number, currentSinceS: number): Keyset {
  checkStaleKeyCount(staleKeyCount);
  if (keys.length < 2 || keys.length - 2 > staleKeyCount) throw new RangeError('assembleKeyset: need current, next and at most staleKeyCount stale keys');
  const ids = new Set(keys.map((k) => k.id >>> 0));
  if (ids.size !== keys.length) throw new RangeError('assembleKeyset: key ids must be unique');
  const [current, next, ...stale] = keys.map((k) => makeMasterKey(k.id, k.key, wholeSeconds(k.createdAtS)));
  if (current === undefined || next === undefined) throw new RangeError('assembleKeyset: need current and next');
  return makeKeyset(current, next, stale, staleKeyCount, wholeSeconds(currentSinceS));
}

/** Zeroes a master key's bytes and wipes its cached cipher now (it must not be used afterwards). */
function wipeMasterKey(k: MasterKey): void {
  k.key.fill(0);
  wipeCipher(k.cipher);
}

/**
 * Call when `next` replaces `previous` in a thread: wipes (key bytes and cached cipher, see above) every master
 * key object of `previous` that `next` does not hold itself. Keys `next` shares with `previous` (rotateKeyset
 * and resizeKeyset share them) stay usable; a decoded snapshot holds its own copies, so all of `previous` goes.
 * `previous` must not be used afterwards. Nothing happens when both are the same snapshot.
 */
export function retireMasterKeys(previous: Keyset, next: Keyset): void {
  if (previous === next) return;
  const kept = keysetKeys(next);
  for (const k of keysetKeys(previous)) if (!kept.includes(k)) wipeMasterKey(k);
}

/** Wipes every master key of a snapshot that was decoded only to be checked (it must not be used afterwards). */
export function wipeKeyset(keyset: Keyset): void {
  for (const k of keysetKeys(keyset)) wipeMasterKey(k);
}

/** All keys of a snapshot in encoding order: current, next, stale newest-first. */
export function keysetKeys(ks: Keyset): readonly MasterKey[] {
  return [ks.current, ks.next, ...ks.stale];
}

// CRC-32 (IEEE 802.3 polynomial, reflected 0xEDB88320, init and final xor 0xFFFFFFFF), table-driven.
const CRC_TABLE = ((): Uint32Array => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE 802.3, as used by zlib and PNG) of `data`. */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = (CRC_TABLE[(c ^ (data[i] ?? 0)) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function writeU64(buf: Uint8Array, offset: number, value: number): void {
  writeU32(buf, offset, Math.floor(value / 0x1_0000_0000));
  writeU32(buf, offset + 4, value >>> 0);
}

function readU64(buf: Uint8Array, offset: number): number {
  return readU32(buf, offset) * 0x1_0000_0000 + readU32(buf, offset + 4);
}

function isAllZero(b: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < b.length; i++) acc |= b[i] ?? 0;
  return acc === 0;
}

/** Length in octets of the encoding of a keyset with `staleKeys` stale keys. */
export function encodedKeysetLength(staleKeys: number): number {
  return KEYSET_HEADER_LENGTH + (2 + staleKeys) * KEYSET_RECORD_LENGTH + KEYSET_CHECKSUM_LENGTH;
}

/**
 * Encodes a keyset (secret material included) in the versioned format above; the result may be
 * written to the key file or sent to a worker. Throws if a key has been wiped: encoding a retired
 * snapshot is a bug that would persist zero keys.
 */
export function encodeKeyset(ks: Keyset): Uint8Array {
  const keys = keysetKeys(ks);
  const out = new Uint8Array(encodedKeysetLength(ks.stale.length));
  out.set(KEYSET_MAGIC, 0);
  writeU16(out, 8, KEYSET_FORMAT_VERSION);
  writeU16(out, 10, ks.staleKeyCount);
  writeU16(out, 12, keys.length);
  writeU16(out, 14, 0);
  writeU64(out, 16, ks.currentSinceS);
  let at = KEYSET_HEADER_LENGTH;
  for (const k of keys) {
    if (isAllZero(k.key)) throw new Error('encodeKeyset: key has been wiped (encoding a retired snapshot)');
    writeU32(out, at, k.id);
    writeU64(out, at + 4, k.createdAtS);
    writeU16(out, at + 12, MASTER_KEY_AEAD_ID);
    writeU16(out, at + 14, MASTER_KEY_LENGTH);
    out.set(k.key, at + 16);
    at += KEYSET_RECORD_LENGTH;
  }
  writeU32(out, at, crc32(out.subarray(0, at)));
  return out;
}

/** Decodes an encoded keyset; any corruption refuses the whole input. Key bytes are copied. Never throws on bad input. */
export function decodeKeyset(bytes: Uint8Array): KeysetDecodeResult {
  if (bytes.length < KEYSET_HEADER_LENGTH + KEYSET_CHECKSUM_LENGTH) return { ok: false, error: 'too_short' };
  for (let i = 0; i < KEYSET_MAGIC.length; i++) {
    if (bytes[i] !== KEYSET_MAGIC[i]) return { ok: false, error: 'bad_magic' };
  }
  if (readU16(bytes, 8) !== KEYSET_FORMAT_VERSION) return { ok: false, error: 'unsupported_version' };
  const count = readU16(bytes, 12);
  const bodyEnd = KEYSET_HEADER_LENGTH + count * KEYSET_RECORD_LENGTH;
  if (bytes.length !== bodyEnd + KEYSET_CHECKSUM_LENGTH) return { ok: false, error: 'bad_length' };
  if (crc32(bytes.subarray(0, bodyEnd)) !== readU32(bytes, bodyEnd)) return { ok: false, error: 'bad_checksum' };
  if (readU16(bytes, 14) !== 0) return { ok: false, error: 'bad_reserved' };
  const staleKeyCount = readU16(bytes, 10);
  if (staleKeyCount > MAX_STALE_KEY_COUNT) return { ok: false, error: 'bad_stale_key_count' };
  if (count < 2 || count - 2 > staleKeyCount) return { ok: false, error: 'bad_key_count' };
  const currentSinceS = readU64(bytes, 16);
  if (!Number.isSafeInteger(currentSinceS)) return { ok: false, error: 'bad_timestamp' };
  const ids = new Set<number>();
  const parsed: { id: number; createdAtS: number; offset: number }[] = [];
  for (let i = 0, at = KEYSET_HEADER_LENGTH; i < count; i++, at += KEYSET_RECORD_LENGTH) {
    const id = readU32(bytes, at);
    const createdAtS = readU64(bytes, at + 4);
    if (readU16(bytes, at + 12) !== MASTER_KEY_AEAD_ID || readU16(bytes, at + 14) !== MASTER_KEY_LENGTH) {
      return { ok: false, error: 'bad_key_algorithm' };
    }
    if (!Number.isSafeInteger(createdAtS)) return { ok: false, error: 'bad_timestamp' };
    if (ids.has(id)) return { ok: false, error: 'duplicate_key_id' };
    ids.add(id);
    parsed.push({ id, createdAtS, offset: at + 16 });
  }
  // A copy of each key (never a view: a caller's Buffer.slice would share memory, and wiping a key would
  // then zero the caller's bytes).
  const keys = parsed.map((p) => makeMasterKey(p.id, new Uint8Array(bytes.subarray(p.offset, p.offset + MASTER_KEY_LENGTH)), p.createdAtS));
  const [current, next, ...stale] = keys;
  if (current === undefined || next === undefined) return { ok: false, error: 'bad_key_count' };
  return { ok: true, keyset: makeKeyset(current, next, stale, staleKeyCount, currentSinceS) };
}
