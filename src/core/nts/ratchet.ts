/**
 * The master-key ratchet (RFC 8915 §6: "each new master key is derived from the previous one with HKDF"),
 * so that nodes holding the same secret seed compute the same keys with no link between them.
 *
 * Definitions (all integers big-endian; "||" concatenates; HKDF = HKDF-SHA-256, RFC 5869):
 *
 *   interval     the rotation interval in seconds (`key-rotation-interval-s`, 60..31536000)
 *   n            the epoch: floor(unix seconds / interval)
 *   T            key-id tag, one octet: HKDF(IKM = seed, salt = "" (empty), info = "ntsd-ratchet-v1 tag", L = 1)
 *   id(n)        the u32 key id:  T << 24 | (n mod 2^24)         (top octet: seed tag; low 24 bits: epoch)
 *   s            the segment of epoch n: floor(n / 1024); first(s) = 1024 · s
 *   A(s)         segment anchor: HKDF(IKM = seed, salt = u32(s), info = "ntsd-ratchet-v1 anchor" || u32(interval), L = 32)
 *   K(first(s))  = HKDF(IKM = A(s), salt = u32(id(first(s))), info = "ntsd-ratchet-v1 key", L = 32)
 *   K(n + 1)     = HKDF(IKM = K(n),  salt = u32(id(n + 1)),    info = "ntsd-ratchet-v1 key", L = 32)
 *                  while n + 1 is in the same segment as n
 *
 * Why segments: a chain from one anchor grows by one step per interval, and a node that starts late must
 * walk it. One step costs about 12 µs here, so a 60 s interval since 1970 would be ~29 million steps
 * (~6 minutes). Re-anchoring every 1024 epochs from the seed bounds a start to at most 1023 steps per
 * segment (~12 ms). Trade-off: a leaked master key K(n) exposes every later key of its segment (at most
 * 1023 intervals), not the earlier ones, and not the next segment; the seed itself exposes every key.
 *
 * The interval is part of the anchor's info, so nodes configured with different intervals never share
 * keys (their cookies fail to open: NTS NAK) instead of half-agreeing. The tag keeps the key ids of two
 * seeds apart while a fleet is reseeded (both accepted for a while); two seeds with the same tag cannot be
 * used together (1 in 256: make another seed).
 *
 * Pure: no clock, no files. The caller passes the time and the seed bytes.
 */
import { hkdfSha256 } from '../crypto/hkdf.js';
import { assembleKeyset, MASTER_KEY_LENGTH, MAX_STALE_KEY_COUNT, type KeyMaterial, type Keyset } from './keyset.js';

/** Smallest seed accepted, octets (a 256-bit secret, as `head -c 32 /dev/urandom` writes). */
export const RATCHET_MIN_SEED_LENGTH = 32;
/** Largest seed accepted, octets (the whole file is the seed; a larger file is a mistake). */
export const RATCHET_MAX_SEED_LENGTH = 4096;
/** Epochs per segment: a chain is re-anchored from the seed every this many intervals. */
export const RATCHET_SEGMENT_EPOCHS = 1024;
/** Epochs wrap in the 24 low bits of a key id. */
const EPOCH_MASK = 0xff_ffff;

const encoder = new TextEncoder();
/** HKDF info of the key-id tag. */
export const RATCHET_TAG_INFO: Uint8Array = encoder.encode('ntsd-ratchet-v1 tag');
/** HKDF info prefix of a segment anchor (followed by u32(interval)). */
export const RATCHET_ANCHOR_INFO: Uint8Array = encoder.encode('ntsd-ratchet-v1 anchor');
/** HKDF info of every chain step. */
export const RATCHET_KEY_INFO: Uint8Array = encoder.encode('ntsd-ratchet-v1 key');

function u32(value: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, value >>> 0);
  return b;
}

function checkInterval(intervalS: number): void {
  if (!Number.isInteger(intervalS) || intervalS < 1 || intervalS > 0xffff_ffff) throw new RangeError('ratchet: interval must be a positive integer of seconds');
}

/** The epoch n = floor(unixS / intervalS). */
export function ratchetEpoch(unixS: number, intervalS: number): number {
  checkInterval(intervalS);
  if (!Number.isFinite(unixS) || unixS < 0) throw new RangeError('ratchet: time must be a non-negative number of seconds');
  return Math.floor(unixS / intervalS);
}

/** The seed's key-id tag T (0..255). */
export function ratchetSeedTag(seed: Uint8Array): number {
  return hkdfSha256(seed, new Uint8Array(0), RATCHET_TAG_INFO, 1)[0] ?? 0;
}

/** id(n) = T << 24 | (n mod 2^24). */
export function ratchetKeyId(tag: number, epoch: number): number {
  return ((tag & 0xff) * 0x100_0000 + (epoch & EPOCH_MASK)) >>> 0;
}

/** A(s): the anchor of segment `segment`. */
export function ratchetAnchor(seed: Uint8Array, segment: number, intervalS: number): Uint8Array {
  checkInterval(intervalS);
  const info = new Uint8Array(RATCHET_ANCHOR_INFO.length + 4);
  info.set(RATCHET_ANCHOR_INFO, 0);
  info.set(u32(intervalS), RATCHET_ANCHOR_INFO.length);
  return hkdfSha256(seed, u32(segment), info, MASTER_KEY_LENGTH);
}

/** One chain step: HKDF(IKM = previous, salt = u32(id), info = RATCHET_KEY_INFO). Also derives K(first(s)) from A(s). */
export function ratchetStep(previous: Uint8Array, id: number): Uint8Array {
  return hkdfSha256(previous, u32(id), RATCHET_KEY_INFO, MASTER_KEY_LENGTH);
}

/** One derived key with its epoch. */
export interface RatchetKey extends KeyMaterial {
  readonly epoch: number;
}

/** Why a seed was refused. */
export type RatchetSeedError = 'seed_too_short' | 'seed_too_long';

/** Checks a seed's length; undefined when usable. */
export function checkRatchetSeed(seed: Uint8Array): RatchetSeedError | undefined {
  if (seed.length < RATCHET_MIN_SEED_LENGTH) return 'seed_too_short';
  if (seed.length > RATCHET_MAX_SEED_LENGTH) return 'seed_too_long';
  return undefined;
}

/**
 * Keys of epochs `fromEpoch..toEpoch` (inclusive, ascending), walking each segment from its anchor.
 * Intermediate keys outside the range are wiped (best effort). Cost: at most 1023 + (toEpoch − fromEpoch + 1)
 * steps per segment touched.
 */
export function deriveRatchetKeys(seed: Uint8Array, intervalS: number, fromEpoch: number, toEpoch: number): RatchetKey[] {
  checkInterval(intervalS);
  if (!Number.isSafeInteger(fromEpoch) || !Number.isSafeInteger(toEpoch) || fromEpoch < 0 || toEpoch < fromEpoch) {
    throw new RangeError('ratchet: bad epoch range');
  }
  const tag = ratchetSeedTag(seed);
  const out: RatchetKey[] = [];
  for (let segment = Math.floor(fromEpoch / RATCHET_SEGMENT_EPOCHS); segment <= Math.floor(toEpoch / RATCHET_SEGMENT_EPOCHS); segment++) {
    const first = segment * RATCHET_SEGMENT_EPOCHS;
    const last = Math.min(toEpoch, first + RATCHET_SEGMENT_EPOCHS - 1);
    let key = ratchetAnchor(seed, segment, intervalS);
    for (let n = first; n <= last; n++) {
      const nextKey = ratchetStep(key, ratchetKeyId(tag, n));
      // The previous link is needed no more unless it is a key of the range (the anchor never is).
      if (!(n - 1 >= fromEpoch && n > first)) key.fill(0);
      key = nextKey;
      if (n >= fromEpoch) out.push({ epoch: n, id: ratchetKeyId(tag, n), key, createdAtS: n * intervalS });
    }
  }
  return out;
}

/** Inputs of {@link ratchetKeyset}. */
export interface RatchetKeysetOptions {
  /** The seed whose keys seal new cookies. */
  readonly seed: Uint8Array;
  /** A second seed whose keys are accepted but never seal (reseeding overlap), or undefined. */
  readonly acceptSeed?: Uint8Array | undefined;
  readonly intervalS: number;
  /** Stale keys accepted behind the current one (1..1000 from the configuration). */
  readonly staleKeyCount: number;
  /** Unix seconds; the epoch of this time is current. */
  readonly nowS: number;
}

/**
 * The keyset at `nowS`: current = K(n), next = K(n + 1), stale = K(n − 1) … K(n − staleKeyCount), newest
 * first (fewer near epoch 0). With `acceptSeed`, that seed's current, next and stale keys follow as extra
 * stale keys (never sealing), as many as fit in MAX_STALE_KEY_COUNT. Throws RangeError when both seeds
 * have the same tag (their ids would collide).
 */
export function ratchetKeyset(options: RatchetKeysetOptions): Keyset {
  const { seed, acceptSeed, intervalS, staleKeyCount } = options;
  const n = ratchetEpoch(options.nowS, intervalS);
  const from = Math.max(0, n - staleKeyCount);
  const ordered = (keys: RatchetKey[]): RatchetKey[] => {
    const cur = keys.find((k) => k.epoch === n);
    const nxt = keys.find((k) => k.epoch === n + 1);
    if (cur === undefined || nxt === undefined) throw new Error('ratchet: derivation lost a key');
    return [cur, nxt, ...keys.filter((k) => k.epoch < n).reverse()];
  };
  const own = ordered(deriveRatchetKeys(seed, intervalS, from, n + 1));
  let all: RatchetKey[] = own;
  if (acceptSeed !== undefined) {
    if (ratchetSeedTag(acceptSeed) === ratchetSeedTag(seed)) throw new RangeError('ratchet: the two seeds have the same key-id tag');
    const other = ordered(deriveRatchetKeys(acceptSeed, intervalS, from, n + 1));
    const room = 2 + MAX_STALE_KEY_COUNT - own.length;
    for (const k of other.slice(room)) k.key.fill(0);
    all = [...own, ...other.slice(0, room)];
  }
  return assembleKeyset(all, all.length - 2, n * intervalS);
}
