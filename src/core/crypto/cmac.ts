/**
 * AES-CMAC (RFC 4493) with the key schedule and both subkeys computed once per key, and the doubling
 * operation dbl() of RFC 5297 §2.1, which S2V shares with CMAC subkey generation.
 *
 * The work is done by plain functions over caller-owned arrays (`cmacAbsorb`, `cmacFinish`) so AES-SIV can keep
 * its per-key material in one allocation and its per-call scratch in module-level buffers. `AesCmac` is a small
 * keyed wrapper for tests and one-off use. All words are little-endian (see aes.ts).
 */

import { aesEncryptWords, expandAesKey, loadPartialBlock, readWordLE, storeBlock } from './aes.js';

function bswap32(x: number): number {
  return ((x << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
}

/**
 * dbl(S) in place (RFC 5297 §2.1, RFC 4493 §2.3): shift the 128-bit big-endian string left by one bit and,
 * if a bit fell off, XOR 0x87 into the last octet. Branch-free in the secret bit.
 */
export function dblWords(w: Uint32Array): void {
  // Octet 0 is the most significant; convert the little-endian words to big-endian to shift across them.
  const b0 = bswap32(w[0]!);
  const b1 = bswap32(w[1]!);
  const b2 = bswap32(w[2]!);
  const b3 = bswap32(w[3]!);
  const carry = b0 >>> 31;
  w[0] = bswap32((b0 << 1) | (b1 >>> 31));
  w[1] = bswap32((b1 << 1) | (b2 >>> 31));
  w[2] = bswap32((b2 << 1) | (b3 >>> 31));
  w[3] = bswap32((b3 << 1) ^ (0x87 & -carry));
}

/** Module scratch (JavaScript is single-threaded and every function here is synchronous, so sharing is safe). */
const scratch = new Uint32Array(4);

/**
 * Derives the CMAC subkeys (RFC 4493 §2.3) for schedule `xk` into `subkeys[0..7]` (K1 then K2):
 * L = AES(K, 0^128), K1 = dbl(L), K2 = dbl(K1).
 */
export function cmacSubkeys(xk: Uint32Array, subkeys: Uint32Array): void {
  const w = scratch;
  w.fill(0);
  aesEncryptWords(xk, w);
  dblWords(w);
  subkeys.set(w, 0);
  dblWords(w);
  subkeys.set(w, 4);
  w.fill(0);
}

/** Absorbs `blocks` complete blocks at `src[off..]` into chaining value `st` (none of them the message's last). */
export function cmacAbsorb(xk: Uint32Array, st: Uint32Array, src: Uint8Array, off: number, blocks: number): void {
  for (let b = 0, o = off; b < blocks; b++, o += 16) {
    st[0] = st[0]! ^ readWordLE(src, o);
    st[1] = st[1]! ^ readWordLE(src, o + 4);
    st[2] = st[2]! ^ readWordLE(src, o + 8);
    st[3] = st[3]! ^ readWordLE(src, o + 12);
    aesEncryptWords(xk, st);
  }
}

/**
 * Absorbs the message's last block of `len` octets (0..16) at `src[off..]`, leaving the tag in `st`
 * (RFC 4493 §2.4 steps 4 and 7): a complete block is XORed with K1, a short one is padded 10* and XORed with K2.
 * `subkeys[0..7]` is K1 || K2 as produced by `cmacSubkeys` (words after those eight are ignored).
 */
export function cmacFinish(
  xk: Uint32Array,
  subkeys: Uint32Array,
  st: Uint32Array,
  src: Uint8Array,
  off: number,
  len: number,
): void {
  const m = scratch;
  let k: number;
  if (len === 16) {
    m[0] = readWordLE(src, off);
    m[1] = readWordLE(src, off + 4);
    m[2] = readWordLE(src, off + 8);
    m[3] = readWordLE(src, off + 12);
    k = 0;
  } else {
    loadPartialBlock(src, off, len, m);
    m[len >>> 2] = (m[len >>> 2]! | (0x80 << (8 * (len & 3)))) >>> 0;
    k = 4;
  }
  st[0] = st[0]! ^ m[0]! ^ subkeys[k]!;
  st[1] = st[1]! ^ m[1]! ^ subkeys[k + 1]!;
  st[2] = st[2]! ^ m[2]! ^ subkeys[k + 2]!;
  st[3] = st[3]! ^ m[3]! ^ subkeys[k + 3]!;
  aesEncryptWords(xk, st);
}

/** Computes AES-CMAC(K, src[off..off+len)) into `st` (which is reset first). */
export function cmacInto(
  xk: Uint32Array,
  subkeys: Uint32Array,
  st: Uint32Array,
  src: Uint8Array,
  off: number,
  len: number,
): void {
  st[0] = 0;
  st[1] = 0;
  st[2] = 0;
  st[3] = 0;
  // All blocks but the last go through absorb; the last one (1..16 octets, or the empty message) through finish.
  const full = len === 0 ? 0 : (len - 1) >>> 4;
  cmacAbsorb(xk, st, src, off, full);
  cmacFinish(xk, subkeys, st, src, off + 16 * full, len - 16 * full);
}

/** A keyed AES-CMAC (RFC 4493) instance, for tests and one-off use. */
export class AesCmac {
  /** Expanded AES key (FIPS 197 §5.2). */
  readonly schedule: Uint32Array;
  /** K1 || K2 (RFC 4493 §2.3). */
  readonly subkeys = new Uint32Array(8);
  /** The tag of the last `macInto` call, little-endian words. */
  readonly state = new Uint32Array(4);

  /** Expands `key` (16, 24 or 32 octets) and derives the subkeys; throws RangeError on a bad length. */
  constructor(key: Uint8Array) {
    this.schedule = expandAesKey(key);
    cmacSubkeys(this.schedule, this.subkeys);
  }

  /** Computes CMAC over `src[off..off+len)` into `state`. */
  macInto(src: Uint8Array, off: number, len: number): void {
    cmacInto(this.schedule, this.subkeys, this.state, src, off, len);
  }

  /** Returns a fresh 16-octet AES-CMAC tag of `message` (allocates; not for the hot path). */
  mac(message: Uint8Array): Uint8Array {
    this.macInto(message, 0, message.length);
    const out = new Uint8Array(16);
    storeBlock(this.state, out, 0);
    return out;
  }
}
