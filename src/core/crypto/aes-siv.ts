/**
 * AES-SIV (RFC 5297) and the RFC 5116 AEADs built on it: AEAD_AES_SIV_CMAC_256/384/512 (RFC 5297 §6.1–§6.3,
 * IANA AEAD ids 15/16/17).
 *
 * Layout (RFC 5297 §2.6): the key is K1 || K2 with K1 (first half) for S2V/CMAC and K2 for CTR; the output is
 * V || C where V is the 16-octet synthetic IV (it doubles as the tag). As an RFC 5116 AEAD (RFC 5297 §3) the S2V
 * components are (associated data, nonce, plaintext).
 *
 * Performance: the AES schedules, the CMAC subkeys and dbl(CMAC(K1, 0^128)) are computed once per key in the
 * constructor (three allocations in all); seal/open allocate nothing. Per-call scratch is module-level and shared
 * by every instance: JavaScript runs one thread per module instance (each worker has its own copy) and no
 * function here yields or re-enters, so a call always finishes with the scratch before another can start.
 */

import type { AeadAlgorithm, AeadCipher } from './aead.js';
import { aesEncryptWords, aesScheduleWords, expandAesKey, readWordLE, xorKeystream } from './aes.js';
import { cmacAbsorb, cmacFinish, cmacInto, cmacSubkeys, dblWords } from './cmac.js';

/** SIV tag (synthetic IV) length in octets (RFC 5297 §2.6). */
const SIV_TAG_LENGTH = 16;
/** At most 126 associated-data components, since S2V is limited to 127 inputs with the plaintext (RFC 5297 §2.6, §7). */
export const SIV_MAX_COMPONENTS = 126;

function bswap32(x: number): number {
  return ((x << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
}

/** Maps an SIV key length (octets) to its IANA AEAD id (RFC 5297 §6). */
function sivAeadId(keyLength: number): number {
  switch (keyLength) {
    case 32:
      return 15;
    case 48:
      return 16;
    case 64:
      return 17;
    default:
      throw new RangeError(`AES-SIV key must be 32, 48 or 64 octets, got ${keyLength}`);
  }
}

/** Per-call scratch shared by all instances (see the module comment for why sharing is safe). */
const D = new Uint32Array(4);
const V = new Uint32Array(4);
const RECEIVED = new Uint32Array(4);
const KS = new Uint32Array(4);
const MAC = new Uint32Array(4);
const TAIL = new Uint8Array(32);
const ZERO_BLOCK = new Uint8Array(16);

/** Offsets into an instance's `material` words: CMAC subkeys K1 || K2, then CMAC(0^128), then its double. */
const M_ZERO = 8;
const M_DBL_ZERO = 12;

/**
 * A keyed AES-SIV instance. Implements the RFC 5116 `AeadCipher` (components AD, nonce) and, for tests and other
 * callers, SIV over an arbitrary list of associated-data components (`sealComponents` / `openComponents`).
 */
export class AesSiv implements AeadCipher {
  /** IANA AEAD id for this key length (15, 16 or 17). */
  readonly aeadId: number;
  /** AES schedule of K1 (S2V / CMAC). */
  private readonly macSchedule: Uint32Array;
  /** AES schedule of K2 (CTR). */
  private readonly ctrSchedule: Uint32Array;
  /** K1 || K2 CMAC subkeys (words 0–7), CMAC(K1, 0^128) (8–11), dbl of it (12–15). */
  private readonly material = new Uint32Array(16);

  /** Expands K1 and K2 from a 32-, 48- or 64-octet key; throws RangeError on any other length. */
  constructor(key: Uint8Array) {
    this.aeadId = sivAeadId(key.length);
    const words = aesScheduleWords(key.length >>> 1);
    // One allocation for both schedules: the views have exactly the schedule length the AES code expects.
    const schedules = new Uint32Array(2 * words);
    this.macSchedule = schedules.subarray(0, words);
    this.ctrSchedule = schedules.subarray(words);
    this.rekey(key);
  }

  /**
   * Replaces the key in place with another of the same length, reusing every buffer (no allocation): lets a
   * caller that handles a fresh key per request (C2S/S2C) keep one instance per thread. Throws RangeError if the
   * length differs from the constructor key.
   */
  rekey(key: Uint8Array): void {
    if (sivAeadId(key.length) !== this.aeadId) throw new RangeError('AES-SIV rekey: key length differs');
    const half = key.length >>> 1;
    expandAesKey(key.subarray(0, half), this.macSchedule);
    expandAesKey(key.subarray(half), this.ctrSchedule);
    const m = this.material;
    cmacSubkeys(this.macSchedule, m);
    cmacInto(this.macSchedule, m, MAC, ZERO_BLOCK, 0, 16);
    m.set(MAC, M_ZERO);
    dblWords(MAC);
    m.set(MAC, M_DBL_ZERO);
  }

  /** S2V, first of several components: D = dbl(CMAC(0^128)) xor CMAC(S1). */
  private s2vFirst(src: Uint8Array, off: number, len: number): void {
    const z = this.material;
    cmacInto(this.macSchedule, z, MAC, src, off, len);
    D[0] = z[M_DBL_ZERO]! ^ MAC[0]!;
    D[1] = z[M_DBL_ZERO + 1]! ^ MAC[1]!;
    D[2] = z[M_DBL_ZERO + 2]! ^ MAC[2]!;
    D[3] = z[M_DBL_ZERO + 3]! ^ MAC[3]!;
  }

  /** S2V, a middle component: D = dbl(D) xor CMAC(Si). */
  private s2vNext(src: Uint8Array, off: number, len: number): void {
    dblWords(D);
    cmacInto(this.macSchedule, this.material, MAC, src, off, len);
    D[0] = D[0]! ^ MAC[0]!;
    D[1] = D[1]! ^ MAC[1]!;
    D[2] = D[2]! ^ MAC[2]!;
    D[3] = D[3]! ^ MAC[3]!;
  }

  /** S2V, last component Sn (RFC 5297 §2.4): V = CMAC(Sn xorend D) or CMAC(dbl(D) xor pad(Sn)), into V. */
  private s2vLast(src: Uint8Array, off: number, len: number): void {
    const t = TAIL;
    const xk = this.macSchedule;
    const sub = this.material;
    V.fill(0);
    if (len >= 16) {
      // Blocks before the last 16..31 octets are fed straight from the source; the rest is copied to TAIL
      // where the rightmost 16 octets get D xored in, so the caller's bytes are never modified.
      const direct = (len - 16) >>> 4;
      const r = len - 16 * direct;
      cmacAbsorb(xk, V, src, off, direct);
      const from = off + 16 * direct;
      for (let i = 0; i < r; i++) t[i] = src[from + i]!;
      const x = r - 16;
      for (let j = 0; j < 4; j++) {
        const w = D[j]!;
        const o = x + 4 * j;
        t[o] = t[o]! ^ (w & 0xff);
        t[o + 1] = t[o + 1]! ^ ((w >>> 8) & 0xff);
        t[o + 2] = t[o + 2]! ^ ((w >>> 16) & 0xff);
        t[o + 3] = t[o + 3]! ^ (w >>> 24);
      }
      if (r === 16) {
        cmacFinish(xk, sub, V, t, 0, 16);
      } else {
        cmacAbsorb(xk, V, t, 0, 1);
        cmacFinish(xk, sub, V, t, 16, r - 16);
      }
    } else {
      // T = dbl(D) xor pad(Sn), a single complete block.
      dblWords(D);
      for (let j = 0; j < 4; j++) {
        const w = D[j]!;
        t[4 * j] = w & 0xff;
        t[4 * j + 1] = (w >>> 8) & 0xff;
        t[4 * j + 2] = (w >>> 16) & 0xff;
        t[4 * j + 3] = w >>> 24;
      }
      for (let i = 0; i < len; i++) t[i] = t[i]! ^ src[off + i]!;
      t[len] = t[len]! ^ 0x80;
      cmacFinish(xk, sub, V, t, 0, 16);
    }
  }

  /**
   * CTR with Q = IV and its bits 31 and 63 (from the right) cleared, 128-bit big-endian increment (RFC 5297 §2.5):
   * dst[dOff..+len) = src[sOff..+len) xor keystream.
   */
  private ctr(iv: Uint32Array, src: Uint8Array, sOff: number, dst: Uint8Array, dOff: number, len: number): void {
    const xk = this.ctrSchedule;
    const ks = KS;
    // Octets 8 and 12 are the low octets of words 2 and 3; their top bits are the cleared ones.
    let q0 = iv[0]!;
    let q1 = iv[1]!;
    let q2 = iv[2]! & 0xffffff7f;
    let q3 = iv[3]! & 0xffffff7f;
    for (let done = 0; done < len; done += 16) {
      ks[0] = q0;
      ks[1] = q1;
      ks[2] = q2;
      ks[3] = q3;
      aesEncryptWords(xk, ks);
      const n = len - done;
      xorKeystream(ks, src, sOff + done, dst, dOff + done, n < 16 ? n : 16);
      // Increment the 128-bit big-endian counter (octet 15 least significant).
      const b3 = (bswap32(q3) + 1) >>> 0;
      q3 = bswap32(b3);
      if (b3 === 0) {
        const b2 = (bswap32(q2) + 1) >>> 0;
        q2 = bswap32(b2);
        if (b2 === 0) {
          const b1 = (bswap32(q1) + 1) >>> 0;
          q1 = bswap32(b1);
          if (b1 === 0) q0 = bswap32((bswap32(q0) + 1) >>> 0);
        }
      }
    }
  }

  private writeV(out: Uint8Array, off: number): void {
    const v = V;
    for (let j = 0; j < 4; j++) {
      const w = v[j]!;
      const o = off + 4 * j;
      out[o] = w & 0xff;
      out[o + 1] = (w >>> 8) & 0xff;
      out[o + 2] = (w >>> 16) & 0xff;
      out[o + 3] = w >>> 24;
    }
  }

  /** Constant-time comparison of the computed V against the received one. */
  private tagMatches(): boolean {
    const a = V;
    const b = RECEIVED;
    const diff = (a[0]! ^ b[0]!) | (a[1]! ^ b[1]!) | (a[2]! ^ b[2]!) | (a[3]! ^ b[3]!);
    return diff === 0;
  }

  /** RFC 5116 seal (RFC 5297 §3): S2V over (associatedData, nonce, plaintext); writes V || C at out[outOffset..]. */
  seal(nonce: Uint8Array, associatedData: Uint8Array, plaintext: Uint8Array, out: Uint8Array, outOffset: number): number {
    if (nonce.length < 1) throw new RangeError('AES-SIV nonce must be at least 1 octet (RFC 5297 §6.1 N_MIN)');
    const end = outOffset + SIV_TAG_LENGTH + plaintext.length;
    if (!(outOffset >= 0) || end > out.length) throw new RangeError('AES-SIV seal: output buffer too small');
    this.s2vFirst(associatedData, 0, associatedData.length);
    this.s2vNext(nonce, 0, nonce.length);
    this.s2vLast(plaintext, 0, plaintext.length);
    this.writeV(out, outOffset);
    this.ctr(V, plaintext, 0, out, outOffset + SIV_TAG_LENGTH, plaintext.length);
    return end;
  }

  /** RFC 5116 open: returns the offset after the plaintext written at out[outOffset..], or -1 (never throws). */
  open(nonce: Uint8Array, associatedData: Uint8Array, ciphertext: Uint8Array, out: Uint8Array, outOffset: number): number {
    if (nonce.length < 1) return -1;
    const ptLen = this.beginOpen(ciphertext, out, outOffset);
    if (ptLen < 0) return -1;
    this.s2vFirst(associatedData, 0, associatedData.length);
    this.s2vNext(nonce, 0, nonce.length);
    return this.endOpen(out, outOffset, ptLen);
  }

  /** Checks lengths, reads the received V and CTR-decrypts into out; returns the plaintext length or -1. */
  private beginOpen(ciphertext: Uint8Array, out: Uint8Array, outOffset: number): number {
    const ptLen = ciphertext.length - SIV_TAG_LENGTH;
    if (ptLen < 0 || !(outOffset >= 0) || outOffset + ptLen > out.length) return -1;
    const r = RECEIVED;
    r[0] = readWordLE(ciphertext, 0);
    r[1] = readWordLE(ciphertext, 4);
    r[2] = readWordLE(ciphertext, 8);
    r[3] = readWordLE(ciphertext, 12);
    this.ctr(r, ciphertext, SIV_TAG_LENGTH, out, outOffset, ptLen);
    return ptLen;
  }

  /** Finishes S2V over the decrypted plaintext and compares; wipes the plaintext on mismatch. */
  private endOpen(out: Uint8Array, outOffset: number, ptLen: number): number {
    this.s2vLast(out, outOffset, ptLen);
    if (!this.tagMatches()) {
      out.fill(0, outOffset, outOffset + ptLen);
      return -1;
    }
    return outOffset + ptLen;
  }

  private s2vComponents(components: readonly Uint8Array[]): void {
    if (components.length > SIV_MAX_COMPONENTS) {
      throw new RangeError(`AES-SIV takes at most ${SIV_MAX_COMPONENTS} associated-data components (RFC 5297 §7)`);
    }
    if (components.length === 0) {
      // Only the plaintext: D stays CMAC(0^128).
      for (let j = 0; j < 4; j++) D[j] = this.material[M_ZERO + j]!;
      return;
    }
    for (let i = 0; i < components.length; i++) {
      const c = components[i]!;
      if (i === 0) this.s2vFirst(c, 0, c.length);
      else this.s2vNext(c, 0, c.length);
    }
  }

  /**
   * SIV-encrypt (RFC 5297 §2.6) with an arbitrary vector of associated-data components (a nonce, when there is one, is
   * simply one of them, conventionally the last). Writes V || C at out[outOffset..]; returns the end offset.
   */
  sealComponents(components: readonly Uint8Array[], plaintext: Uint8Array, out: Uint8Array, outOffset: number): number {
    const end = outOffset + SIV_TAG_LENGTH + plaintext.length;
    if (!(outOffset >= 0) || end > out.length) throw new RangeError('AES-SIV seal: output buffer too small');
    this.s2vComponents(components);
    this.s2vLast(plaintext, 0, plaintext.length);
    this.writeV(out, outOffset);
    this.ctr(V, plaintext, 0, out, outOffset + SIV_TAG_LENGTH, plaintext.length);
    return end;
  }

  /** SIV-decrypt (RFC 5297 §2.7) counterpart of `sealComponents`; returns the end offset or -1. */
  openComponents(components: readonly Uint8Array[], ciphertext: Uint8Array, out: Uint8Array, outOffset: number): number {
    const ptLen = this.beginOpen(ciphertext, out, outOffset);
    if (ptLen < 0) return -1;
    this.s2vComponents(components);
    return this.endOpen(out, outOffset, ptLen);
  }

  /** Overwrites all key-derived state with zeros (best effort; see ARCHITECTURE.md "Secrets"). */
  wipe(): void {
    this.macSchedule.fill(0);
    this.ctrSchedule.fill(0);
    this.material.fill(0);
    for (const a of [D, V, RECEIVED, KS, MAC]) a.fill(0);
    TAIL.fill(0);
  }
}

function sivAlgorithm(aeadId: number, name: string, keyLength: number): AeadAlgorithm {
  return Object.freeze({
    aeadId,
    name,
    keyLength,
    nonceLength: 16,
    minNonceLength: 1,
    maxNonceLength: 0xffff,
    tagLength: SIV_TAG_LENGTH,
    constantTime: false, // table-driven AES (aes.ts)
    newCipher(key: Uint8Array): AeadCipher {
      if (key.length !== keyLength) throw new RangeError(`${name}: key must be ${keyLength} octets, got ${key.length}`);
      return new AesSiv(key);
    },
  });
}

/** AEAD_AES_SIV_CMAC_256 (RFC 5297 §6.1, IANA 15): 32-octet key, AES-128; mandatory for NTS servers (RFC 8915 §5.1). */
export const AEAD_AES_SIV_CMAC_256: AeadAlgorithm = sivAlgorithm(15, 'AEAD_AES_SIV_CMAC_256', 32);
/** AEAD_AES_SIV_CMAC_384 (RFC 5297 §6.2, IANA 16): 48-octet key, AES-192. */
export const AEAD_AES_SIV_CMAC_384: AeadAlgorithm = sivAlgorithm(16, 'AEAD_AES_SIV_CMAC_384', 48);
/** AEAD_AES_SIV_CMAC_512 (RFC 5297 §6.3, IANA 17): 64-octet key, AES-256. */
export const AEAD_AES_SIV_CMAC_512: AeadAlgorithm = sivAlgorithm(17, 'AEAD_AES_SIV_CMAC_512', 64);
