/**
 * AES block encryption (FIPS 197) for the SIV and GCM-SIV modes in this folder.
 *
 * Only the forward cipher is needed: CMAC, CTR and GCM-SIV never decrypt a block.
 * State and round keys are held as four little-endian 32-bit words per 16-octet block
 * (word j = octets 4j..4j+3, octet 4j in the low bits), the same layout noble's `unsafe`
 * AES helpers use, so the two can be cross-tested word for word.
 *
 * This is a table-driven implementation (four 256-entry round tables plus the S-box), like
 * noble's and most portable software AES. It was chosen over calling noble's `unsafe.encrypt`
 * because that returns a fresh object per block and measured ~127 ns/block against ~80 ns/block
 * here (AES-128, Node 20, this machine). Table lookups are indexed by secret data; JavaScript
 * offers no constant-time alternative at usable speed, and noble makes the same trade-off.
 */

/** AES block length in octets (FIPS 197 §3.1). */
export const AES_BLOCK_LENGTH = 16;

/** S-box (FIPS 197 §5.1.1), filled at module load. */
const SBOX = new Uint8Array(256);
/** Round tables: SubBytes + MixColumns for each of the four row positions, little-endian words. */
const TE0 = new Uint32Array(256);
const TE1 = new Uint32Array(256);
const TE2 = new Uint32Array(256);
const TE3 = new Uint32Array(256);

/** Multiplies by x in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1 (FIPS 197 §4.2.1). */
function xtime(b: number): number {
  return ((b << 1) ^ (b & 0x80 ? 0x11b : 0)) & 0xff;
}

function rotl8(b: number, n: number): number {
  return ((b << n) | (b >>> (8 - n))) & 0xff;
}

(function buildTables(): void {
  // exp/log tables over the generator 0x03, then S(b) = affine(b^-1) (FIPS 197 §5.1.1).
  const exp = new Uint8Array(256);
  const log = new Uint8Array(256);
  for (let i = 0, g = 1; i < 255; i++) {
    exp[i] = g;
    log[g] = i;
    g ^= xtime(g); // g * 3
  }
  for (let b = 0; b < 256; b++) {
    const inv = b === 0 ? 0 : exp[(255 - log[b]!) % 255]!;
    SBOX[b] = inv ^ rotl8(inv, 1) ^ rotl8(inv, 2) ^ rotl8(inv, 3) ^ rotl8(inv, 4) ^ 0x63;
  }
  for (let b = 0; b < 256; b++) {
    const s = SBOX[b]!;
    const s2 = xtime(s);
    const s3 = s2 ^ s;
    // MixColumns column (2s, s, s, 3s) as a little-endian word; the other tables are byte rotations.
    const w = (s2 | (s << 8) | (s << 16) | (s3 << 24)) >>> 0;
    TE0[b] = w;
    TE1[b] = ((w << 8) | (w >>> 24)) >>> 0;
    TE2[b] = ((w << 16) | (w >>> 16)) >>> 0;
    TE3[b] = ((w << 24) | (w >>> 8)) >>> 0;
  }
})();

/** Number of 32-bit round-key words for an AES key of `keyLength` octets (4 * (Nr + 1), FIPS 197 §5.2). */
export function aesScheduleWords(keyLength: number): number {
  return keyLength + 28;
}

/**
 * Expands a 16-, 24- or 32-octet AES key (FIPS 197 §5.2) into `out` (allocated when omitted) and returns it.
 * `out` must have exactly `aesScheduleWords(key.length)` words, because the round count is read from its length.
 * Throws RangeError on any other key length (a programming error, not peer input).
 */
export function expandAesKey(key: Uint8Array, out?: Uint32Array): Uint32Array {
  const len = key.length;
  if (len !== 16 && len !== 24 && len !== 32) throw new RangeError(`AES key must be 16, 24 or 32 octets, got ${len}`);
  const total = aesScheduleWords(len);
  const xk = out ?? new Uint32Array(total);
  if (xk.length !== total) throw new RangeError(`AES schedule buffer must hold ${total} words, got ${xk.length}`);
  const nk = len >>> 2;
  for (let i = 0; i < nk; i++) {
    const o = 4 * i;
    xk[i] = (key[o]! | (key[o + 1]! << 8) | (key[o + 2]! << 16) | (key[o + 3]! << 24)) >>> 0;
  }
  expandAesKeyWords(xk, nk);
  return xk;
}

/**
 * Completes a schedule in place: `xk[0..nk)` already hold the key as little-endian words (nk = 4, 6 or 8) and
 * `xk.length` must be `aesScheduleWords(4 * nk)`. Lets GCM-SIV expand its per-nonce key without allocating.
 */
export function expandAesKeyWords(xk: Uint32Array, nk: number): void {
  const total = xk.length;
  let rcon = 1;
  for (let i = nk; i < total; i++) {
    let t = xk[i - 1]!;
    if (i % nk === 0) {
      t = (t >>> 8) | (t << 24); // RotWord: octets (b1, b2, b3, b0)
      t = subWord(t) ^ rcon; // Rcon only touches the first octet, i.e. the low bits here
      rcon = xtime(rcon);
    } else if (nk > 6 && i % nk === 4) {
      t = subWord(t);
    }
    xk[i] = (xk[i - nk]! ^ t) >>> 0;
  }
}

function subWord(w: number): number {
  return (
    SBOX[w & 0xff]! | (SBOX[(w >>> 8) & 0xff]! << 8) | (SBOX[(w >>> 16) & 0xff]! << 16) | (SBOX[w >>> 24]! << 24)
  );
}

/**
 * Encrypts one block in place: `st[0..3]` (little-endian words) becomes E(K, st).
 * `xk` is a schedule from `expandAesKey`; its length selects AES-128/192/256.
 */
export function aesEncryptWords(xk: Uint32Array, st: Uint32Array): void {
  let s0 = st[0]! ^ xk[0]!;
  let s1 = st[1]! ^ xk[1]!;
  let s2 = st[2]! ^ xk[2]!;
  let s3 = st[3]! ^ xk[3]!;
  const last = xk.length - 4;
  let k = 4;
  for (; k < last; k += 4) {
    const t0 = TE0[s0 & 0xff]! ^ TE1[(s1 >>> 8) & 0xff]! ^ TE2[(s2 >>> 16) & 0xff]! ^ TE3[s3 >>> 24]! ^ xk[k]!;
    const t1 = TE0[s1 & 0xff]! ^ TE1[(s2 >>> 8) & 0xff]! ^ TE2[(s3 >>> 16) & 0xff]! ^ TE3[s0 >>> 24]! ^ xk[k + 1]!;
    const t2 = TE0[s2 & 0xff]! ^ TE1[(s3 >>> 8) & 0xff]! ^ TE2[(s0 >>> 16) & 0xff]! ^ TE3[s1 >>> 24]! ^ xk[k + 2]!;
    const t3 = TE0[s3 & 0xff]! ^ TE1[(s0 >>> 8) & 0xff]! ^ TE2[(s1 >>> 16) & 0xff]! ^ TE3[s2 >>> 24]! ^ xk[k + 3]!;
    s0 = t0;
    s1 = t1;
    s2 = t2;
    s3 = t3;
  }
  // Final round: SubBytes + ShiftRows + AddRoundKey, no MixColumns.
  st[0] =
    (SBOX[s0 & 0xff]! | (SBOX[(s1 >>> 8) & 0xff]! << 8) | (SBOX[(s2 >>> 16) & 0xff]! << 16) | (SBOX[s3 >>> 24]! << 24)) ^
    xk[k]!;
  st[1] =
    (SBOX[s1 & 0xff]! | (SBOX[(s2 >>> 8) & 0xff]! << 8) | (SBOX[(s3 >>> 16) & 0xff]! << 16) | (SBOX[s0 >>> 24]! << 24)) ^
    xk[k + 1]!;
  st[2] =
    (SBOX[s2 & 0xff]! | (SBOX[(s3 >>> 8) & 0xff]! << 8) | (SBOX[(s0 >>> 16) & 0xff]! << 16) | (SBOX[s1 >>> 24]! << 24)) ^
    xk[k + 2]!;
  st[3] =
    (SBOX[s3 & 0xff]! | (SBOX[(s0 >>> 8) & 0xff]! << 8) | (SBOX[(s1 >>> 16) & 0xff]! << 16) | (SBOX[s2 >>> 24]! << 24)) ^
    xk[k + 3]!;
}

/** Reads the little-endian 32-bit word at `src[off..off+3]` (callers guarantee the bounds). */
export function readWordLE(src: Uint8Array, off: number): number {
  return (src[off]! | (src[off + 1]! << 8) | (src[off + 2]! << 16) | (src[off + 3]! << 24)) >>> 0;
}

/** Loads `len` (0..16) octets at `src[off..]` into `w[0..3]` as little-endian words, zero-padding the rest. */
export function loadPartialBlock(src: Uint8Array, off: number, len: number, w: Uint32Array): void {
  w[0] = 0;
  w[1] = 0;
  w[2] = 0;
  w[3] = 0;
  for (let i = 0; i < len; i++) w[i >>> 2] = (w[i >>> 2]! | (src[off + i]! << (8 * (i & 3)))) >>> 0;
}

/** Writes the four little-endian words `w[0..3]` as 16 octets at `dst[off..]`. */
export function storeBlock(w: Uint32Array, dst: Uint8Array, off: number): void {
  for (let j = 0; j < 4; j++) {
    const v = w[j]!;
    const o = off + 4 * j;
    dst[o] = v & 0xff;
    dst[o + 1] = (v >>> 8) & 0xff;
    dst[o + 2] = (v >>> 16) & 0xff;
    dst[o + 3] = v >>> 24;
  }
}

/**
 * XORs the keystream block `ks[0..3]` into `len` (1..16) octets: dst[dOff+i] = src[sOff+i] ^ ks octet i.
 * Used by both CTR flavours (SIV's 128-bit big-endian counter and GCM-SIV's 32-bit little-endian one).
 */
export function xorKeystream(ks: Uint32Array, src: Uint8Array, sOff: number, dst: Uint8Array, dOff: number, len: number): void {
  if (len === 16) {
    const k0 = ks[0]!;
    const k1 = ks[1]!;
    const k2 = ks[2]!;
    const k3 = ks[3]!;
    dst[dOff] = src[sOff]! ^ (k0 & 0xff);
    dst[dOff + 1] = src[sOff + 1]! ^ ((k0 >>> 8) & 0xff);
    dst[dOff + 2] = src[sOff + 2]! ^ ((k0 >>> 16) & 0xff);
    dst[dOff + 3] = src[sOff + 3]! ^ (k0 >>> 24);
    dst[dOff + 4] = src[sOff + 4]! ^ (k1 & 0xff);
    dst[dOff + 5] = src[sOff + 5]! ^ ((k1 >>> 8) & 0xff);
    dst[dOff + 6] = src[sOff + 6]! ^ ((k1 >>> 16) & 0xff);
    dst[dOff + 7] = src[sOff + 7]! ^ (k1 >>> 24);
    dst[dOff + 8] = src[sOff + 8]! ^ (k2 & 0xff);
    dst[dOff + 9] = src[sOff + 9]! ^ ((k2 >>> 8) & 0xff);
    dst[dOff + 10] = src[sOff + 10]! ^ ((k2 >>> 16) & 0xff);
    dst[dOff + 11] = src[sOff + 11]! ^ (k2 >>> 24);
    dst[dOff + 12] = src[sOff + 12]! ^ (k3 & 0xff);
    dst[dOff + 13] = src[sOff + 13]! ^ ((k3 >>> 8) & 0xff);
    dst[dOff + 14] = src[sOff + 14]! ^ ((k3 >>> 16) & 0xff);
    dst[dOff + 15] = src[sOff + 15]! ^ (k3 >>> 24);
    return;
  }
  for (let i = 0; i < len; i++) dst[dOff + i] = src[sOff + i]! ^ ((ks[i >>> 2]! >>> (8 * (i & 3))) & 0xff);
}

/** Convenience for tests and one-off use: E(K, block) for a 16-octet block, allocating the result. */
export function aesEncryptBlock(xk: Uint32Array, block: Uint8Array): Uint8Array {
  if (block.length !== AES_BLOCK_LENGTH) throw new RangeError('AES block must be 16 octets');
  const w = new Uint32Array(4);
  loadPartialBlock(block, 0, 16, w);
  aesEncryptWords(xk, w);
  const out = new Uint8Array(16);
  storeBlock(w, out, 0);
  return out;
}
