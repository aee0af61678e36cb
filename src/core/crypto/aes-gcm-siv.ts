/**
 * AES-GCM-SIV (RFC 8452): AEAD_AES_128_GCM_SIV (IANA 30) and, unregistered here, AEAD_AES_256_GCM_SIV (31).
 *
 * Per message (RFC 8452 §4): derive a POLYVAL key and an encryption key from the key-generating key and the
 * 12-octet nonce; tag = AES(encKey, (POLYVAL(AD, P, lengths) xor nonce) with bit 127 cleared); C = AES-CTR over P
 * from the tag with bit 127 set and a 32-bit little-endian block counter; output C || tag.
 *
 * Only the key-generating key's schedule can be cached per key: the other two keys change with every nonce.
 * POLYVAL uses an 8-bit table of multiples of H (1,024 words), rebuilt per message: measured ~450 ns to build and
 * ~70 ns per block, against ~60 ns and ~130 ns for a 4-bit table, so it wins from about 7 blocks up, which covers
 * the NTS shapes (a request with a 100-octet cookie is 13 POLYVAL blocks).
 * Per-message state (derived keys, POLYVAL table) is module-level scratch shared by all instances: JavaScript runs
 * one thread per module instance and nothing here yields or re-enters. seal/open allocate nothing.
 */

import type { AeadAlgorithm, AeadCipher } from './aead.js';
import { aesEncryptWords, aesScheduleWords, expandAesKey, expandAesKeyWords, loadPartialBlock, readWordLE, xorKeystream } from './aes.js';

/** GCM-SIV tag length in octets (RFC 8452 §4). */
const GCM_SIV_TAG_LENGTH = 16;
/** GCM-SIV nonce length in octets; nothing else is valid (RFC 8452 §4, N_MIN = N_MAX = 12). */
const GCM_SIV_NONCE_LENGTH = 12;

/**
 * Reduction table for multiplying by x^-8 in POLYVAL's field GF(2)[x]/(x^128 + x^127 + x^126 + x^121 + 1):
 * m·x^-8 for every octet m. Each x^-k (k = 1..8) is 0xE1000000 >>> (k - 1) in the top word and zero elsewhere,
 * so the table holds only that word.
 */
const REDUCE8 = new Uint32Array(256);
for (let m = 0; m < 256; m++) {
  let r = 0;
  for (let i = 0; i < 8; i++) if (m & (1 << i)) r ^= 0xe1000000 >>> (7 - i);
  REDUCE8[m] = r >>> 0;
}

/**
 * POLYVAL state (RFC 8452 §3) over one key H. Field elements are little-endian: bit i of the 128-bit
 * little-endian integer is the coefficient of x^i, so the four little-endian words map directly.
 * dot(A, H) = A·H·x^-128 is evaluated octet by octet from the low end: Z = (Z xor A_j·H)·x^-8, 16 times.
 */
export class Polyval {
  /** Accumulator S (RFC 8452 §3), little-endian words. */
  readonly s = new Uint32Array(4);
  /** table[4b..4b+3] = b·H for every octet value b (b's bit i is x^i). */
  private readonly table = new Uint32Array(1024);
  private readonly block = new Uint32Array(4);

  /** Sets H from four little-endian words, rebuilds the table, and clears S. */
  setKeyWords(h0: number, h1: number, h2: number, h3: number): void {
    const t = this.table;
    // table[1 << i] = H·x^i, for i = 0..7.
    for (let i = 0; i < 8; i++) {
      const o = 4 << i;
      t[o] = h0;
      t[o + 1] = h1;
      t[o + 2] = h2;
      t[o + 3] = h3;
      // H := H·x; x^128 reduces to x^127 + x^126 + x^121 + 1 (branch-free in the secret top bit).
      const mask = -(h3 >>> 31);
      h3 = ((h3 << 1) | (h2 >>> 31)) ^ (0xc2000000 & mask);
      h2 = (h2 << 1) | (h1 >>> 31);
      h1 = (h1 << 1) | (h0 >>> 31);
      h0 = (h0 << 1) ^ (1 & mask);
    }
    t[0] = 0;
    t[1] = 0;
    t[2] = 0;
    t[3] = 0;
    // Every other entry b = 2^i + j (0 < j < 2^i) is table[2^i] xor table[j].
    for (let i = 1; i < 8; i++) {
      const top = 4 << i;
      const p0 = t[top]!;
      const p1 = t[top + 1]!;
      const p2 = t[top + 2]!;
      const p3 = t[top + 3]!;
      for (let j = 4; j < top; j += 4) {
        t[top + j] = p0 ^ t[j]!;
        t[top + j + 1] = p1 ^ t[j + 1]!;
        t[top + j + 2] = p2 ^ t[j + 2]!;
        t[top + j + 3] = p3 ^ t[j + 3]!;
      }
    }
    this.s.fill(0);
  }

  /** S := dot(S xor (a0, a1, a2, a3), H). */
  private mulBlock(a0: number, a1: number, a2: number, a3: number): void {
    const s = this.s;
    const t = this.table;
    const a = this.block;
    a[0] = s[0]! ^ a0;
    a[1] = s[1]! ^ a1;
    a[2] = s[2]! ^ a2;
    a[3] = s[3]! ^ a3;
    let z0 = 0;
    let z1 = 0;
    let z2 = 0;
    let z3 = 0;
    for (let w = 0; w < 4; w++) {
      let aw = a[w]!;
      for (let k = 0; k < 4; k++, aw >>>= 8) {
        const o = (aw & 0xff) << 2;
        z0 ^= t[o]!;
        z1 ^= t[o + 1]!;
        z2 ^= t[o + 2]!;
        z3 ^= t[o + 3]!;
        const m = z0 & 0xff;
        z0 = (z0 >>> 8) | (z1 << 24);
        z1 = (z1 >>> 8) | (z2 << 24);
        z2 = (z2 >>> 8) | (z3 << 24);
        z3 = (z3 >>> 8) ^ REDUCE8[m]!;
      }
    }
    s[0] = z0 >>> 0;
    s[1] = z1 >>> 0;
    s[2] = z2 >>> 0;
    s[3] = z3 >>> 0;
  }

  /** Absorbs `len` octets at `src[off..]`, zero-padding the final partial block (RFC 8452 §4 padding). */
  update(src: Uint8Array, off: number, len: number): void {
    const end = off + len;
    let o = off;
    for (; o + 16 <= end; o += 16) {
      this.mulBlock(readWordLE(src, o), readWordLE(src, o + 4), readWordLE(src, o + 8), readWordLE(src, o + 12));
    }
    if (o < end) {
      const b = this.block;
      loadPartialBlock(src, o, end - o, b);
      this.mulBlock(b[0]!, b[1]!, b[2]!, b[3]!);
    }
  }

  /** Absorbs the length block: 64-bit little-endian bit lengths of AD and plaintext (RFC 8452 §4). */
  updateLengths(adLength: number, ptLength: number): void {
    this.mulBlock((adLength * 8) >>> 0, Math.floor(adLength / 0x20000000), (ptLength * 8) >>> 0, Math.floor(ptLength / 0x20000000));
  }

  /** Overwrites key-dependent state with zeros. */
  wipe(): void {
    this.table.fill(0);
    this.s.fill(0);
    this.block.fill(0);
  }
}

/** Convenience for tests: POLYVAL(H, X_1..X_n) over `data` (a multiple of 16 octets) as 16 fresh octets. */
export function polyval(h: Uint8Array, data: Uint8Array): Uint8Array {
  if (h.length !== 16 || data.length % 16 !== 0) throw new RangeError('POLYVAL: H is 16 octets, data whole blocks');
  const p = new Polyval();
  p.setKeyWords(readWordLE(h, 0), readWordLE(h, 4), readWordLE(h, 8), readWordLE(h, 12));
  p.update(data, 0, data.length);
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = (p.s[i >>> 2]! >>> (8 * (i & 3))) & 0xff;
  return out;
}

/** Per-message scratch shared by all instances (see the module comment for why sharing is safe). */
const POLYVAL = new Polyval();
const ENC_SCHEDULE_128 = new Uint32Array(aesScheduleWords(16));
const ENC_SCHEDULE_256 = new Uint32Array(aesScheduleWords(32));
const ST = new Uint32Array(4);
const TAG = new Uint32Array(4);
const RECEIVED = new Uint32Array(4);
const KS = new Uint32Array(4);

/** A keyed AES-GCM-SIV instance (16-octet key: id 30; 32-octet key: id 31). */
export class AesGcmSiv implements AeadCipher {
  /** IANA AEAD id: 30 for AES-128, 31 for AES-256. */
  readonly aeadId: number;
  private readonly keyGenSchedule: Uint32Array;
  /** Per-message encryption-key schedule (shared scratch of the right size). */
  private readonly encSchedule: Uint32Array;
  private readonly encKeyWords: number;

  /** Expands the key-generating key (16 or 32 octets); throws RangeError on any other length. */
  constructor(key: Uint8Array) {
    if (key.length !== 16 && key.length !== 32) {
      throw new RangeError(`AES-GCM-SIV key must be 16 or 32 octets, got ${key.length}`);
    }
    this.aeadId = key.length === 16 ? 30 : 31;
    this.keyGenSchedule = expandAesKey(key);
    this.encSchedule = key.length === 16 ? ENC_SCHEDULE_128 : ENC_SCHEDULE_256;
    this.encKeyWords = key.length >>> 2;
  }

  /** Replaces the key in place with another of the same length (no allocation); throws RangeError otherwise. */
  rekey(key: Uint8Array): void {
    if (key.length !== 4 * this.encKeyWords) throw new RangeError('AES-GCM-SIV rekey: key length differs');
    expandAesKey(key, this.keyGenSchedule);
  }

  /**
   * RFC 8452 §4 key derivation: block i = AES(K, LE32(i) || nonce), keep its first 8 octets; blocks 0–1 give the
   * POLYVAL key, blocks 2–3 (2–5 for AES-256) the encryption key. Leaves POLYVAL keyed and the schedule expanded.
   */
  private deriveKeys(nonce: Uint8Array): void {
    const n0 = readWordLE(nonce, 0);
    const n1 = readWordLE(nonce, 4);
    const n2 = readWordLE(nonce, 8);
    const st = ST;
    const kg = this.keyGenSchedule;
    const ek = this.encSchedule;
    let h0 = 0;
    let h1 = 0;
    const blocks = 2 + (this.encKeyWords >>> 1);
    for (let i = 0; i < blocks; i++) {
      st[0] = i;
      st[1] = n0;
      st[2] = n1;
      st[3] = n2;
      aesEncryptWords(kg, st);
      if (i === 0) {
        h0 = st[0]!;
        h1 = st[1]!;
      } else if (i === 1) {
        POLYVAL.setKeyWords(h0, h1, st[0]!, st[1]!);
      } else {
        ek[2 * (i - 2)] = st[0]!;
        ek[2 * (i - 2) + 1] = st[1]!;
      }
    }
    expandAesKeyWords(ek, this.encKeyWords);
  }

  /** tag = AES(encKey, (S xor nonce) with the top bit of octet 15 cleared), into TAG. */
  private computeTag(nonce: Uint8Array): void {
    const s = POLYVAL.s;
    const t = TAG;
    t[0] = s[0]! ^ readWordLE(nonce, 0);
    t[1] = s[1]! ^ readWordLE(nonce, 4);
    t[2] = s[2]! ^ readWordLE(nonce, 8);
    t[3] = s[3]! & 0x7fffffff;
    aesEncryptWords(this.encSchedule, t);
  }

  /** AES-CTR from `tag` with octet 15's top bit set; the first 32 bits count blocks, little-endian, mod 2^32. */
  private ctr(tag: Uint32Array, src: Uint8Array, sOff: number, dst: Uint8Array, dOff: number, len: number): void {
    const xk = this.encSchedule;
    const ks = KS;
    let c0 = tag[0]!;
    const c1 = tag[1]!;
    const c2 = tag[2]!;
    const c3 = (tag[3]! | 0x80000000) >>> 0;
    for (let done = 0; done < len; done += 16) {
      ks[0] = c0;
      ks[1] = c1;
      ks[2] = c2;
      ks[3] = c3;
      aesEncryptWords(xk, ks);
      const n = len - done;
      xorKeystream(ks, src, sOff + done, dst, dOff + done, n < 16 ? n : 16);
      c0 = (c0 + 1) >>> 0;
    }
  }

  /** RFC 8452 §4 encryption: writes C || tag at out[outOffset..]; nonce must be 12 octets (else RangeError). */
  seal(nonce: Uint8Array, associatedData: Uint8Array, plaintext: Uint8Array, out: Uint8Array, outOffset: number): number {
    if (nonce.length !== GCM_SIV_NONCE_LENGTH) throw new RangeError('AES-GCM-SIV nonce must be 12 octets (RFC 8452 §4)');
    const ptLen = plaintext.length;
    const end = outOffset + ptLen + GCM_SIV_TAG_LENGTH;
    if (!(outOffset >= 0) || end > out.length) throw new RangeError('AES-GCM-SIV seal: output buffer too small');
    this.deriveKeys(nonce);
    const pv = POLYVAL;
    pv.update(associatedData, 0, associatedData.length);
    pv.update(plaintext, 0, ptLen);
    pv.updateLengths(associatedData.length, ptLen);
    this.computeTag(nonce);
    this.ctr(TAG, plaintext, 0, out, outOffset, ptLen);
    const t = TAG;
    for (let i = 0; i < 16; i++) out[outOffset + ptLen + i] = (t[i >>> 2]! >>> (8 * (i & 3))) & 0xff;
    return end;
  }

  /** RFC 8452 §5 decryption: returns the offset after the plaintext at out[outOffset..], or -1 (never throws). */
  open(nonce: Uint8Array, associatedData: Uint8Array, ciphertext: Uint8Array, out: Uint8Array, outOffset: number): number {
    const ptLen = ciphertext.length - GCM_SIV_TAG_LENGTH;
    if (nonce.length !== GCM_SIV_NONCE_LENGTH || ptLen < 0) return -1;
    if (!(outOffset >= 0) || outOffset + ptLen > out.length) return -1;
    const r = RECEIVED;
    r[0] = readWordLE(ciphertext, ptLen);
    r[1] = readWordLE(ciphertext, ptLen + 4);
    r[2] = readWordLE(ciphertext, ptLen + 8);
    r[3] = readWordLE(ciphertext, ptLen + 12);
    this.deriveKeys(nonce);
    this.ctr(r, ciphertext, 0, out, outOffset, ptLen);
    const pv = POLYVAL;
    pv.update(associatedData, 0, associatedData.length);
    pv.update(out, outOffset, ptLen);
    pv.updateLengths(associatedData.length, ptLen);
    this.computeTag(nonce);
    const t = TAG;
    const diff = (t[0]! ^ r[0]!) | (t[1]! ^ r[1]!) | (t[2]! ^ r[2]!) | (t[3]! ^ r[3]!);
    if (diff !== 0) {
      out.fill(0, outOffset, outOffset + ptLen);
      return -1;
    }
    return outOffset + ptLen;
  }

  /** Overwrites all key-derived state with zeros (best effort). */
  wipe(): void {
    this.keyGenSchedule.fill(0);
    POLYVAL.wipe();
    for (const a of [ENC_SCHEDULE_128, ENC_SCHEDULE_256, ST, TAG, RECEIVED, KS]) a.fill(0);
  }
}

/** AEAD_AES_128_GCM_SIV (RFC 8452 §4/§9, IANA 30): 16-octet key, nonce exactly 12, output C || tag. */
export const AEAD_AES_128_GCM_SIV: AeadAlgorithm = Object.freeze({
  aeadId: 30,
  name: 'AEAD_AES_128_GCM_SIV',
  keyLength: 16,
  nonceLength: GCM_SIV_NONCE_LENGTH,
  minNonceLength: GCM_SIV_NONCE_LENGTH,
  maxNonceLength: GCM_SIV_NONCE_LENGTH,
  tagLength: GCM_SIV_TAG_LENGTH,
  constantTime: false, // table-driven AES (aes.ts)
  newCipher(key: Uint8Array): AeadCipher {
    if (key.length !== 16) throw new RangeError(`AEAD_AES_128_GCM_SIV: key must be 16 octets, got ${key.length}`);
    return new AesGcmSiv(key);
  },
});
