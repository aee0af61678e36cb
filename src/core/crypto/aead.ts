/**
 * One interface for every AEAD that NTS negotiates (RFC 5116 semantics), selected by IANA id.
 * Implementations cache key-dependent state (AES key schedule, CMAC subkeys, POLYVAL key) in the
 * keyed `AeadCipher`, so a key that is used more than once is expanded once.
 *
 * CONTRACT (other modules rely on it):
 *  - `getAead(id)` returns undefined for ids we do not implement.
 *  - `newCipher(key)` throws only on a wrong key length (a bug, not peer input).
 *  - seal writes `plaintext.length + tagLength` bytes at out[outOffset..] and returns the offset after them.
 *  - open returns the offset after the plaintext written at out[outOffset..], or -1 when authentication fails
 *    or the ciphertext is shorter than the tag. It never throws on peer input.
 *  - `out` must not overlap the inputs.
 *
 * Backends: the built-in JavaScript AEADs below are always there; a shell may install another implementation
 * per id at start-up (`setAeadProvider`, e.g. OpenSSL through the native addon, src/runtime/aead-openssl.ts).
 * Core code keeps calling `getAead` and never learns which backend runs.
 */

import { AEAD_AES_128_GCM_SIV } from './aes-gcm-siv.js';
import { AEAD_AES_SIV_CMAC_256, AEAD_AES_SIV_CMAC_384, AEAD_AES_SIV_CMAC_512 } from './aes-siv.js';

/** A keyed AEAD instance (key material already expanded). */
export interface AeadCipher {
  /** IANA AEAD id. */
  readonly aeadId: number;
  /** Encrypts and authenticates `plaintext` with `associatedData`; returns the offset after the ciphertext. */
  seal(nonce: Uint8Array, associatedData: Uint8Array, plaintext: Uint8Array, out: Uint8Array, outOffset: number): number;
  /** Verifies and decrypts; returns the offset after the plaintext, or -1 on failure. */
  open(nonce: Uint8Array, associatedData: Uint8Array, ciphertext: Uint8Array, out: Uint8Array, outOffset: number): number;
}

/**
 * Optional capability of a keyed instance: take a new key of the same length in place, without allocating.
 * Every cipher returned by `getAead(id).newCipher` has it; useful where a fresh key arrives per request
 * (C2S/S2C from a cookie), so one instance per thread can be reused. Measured: rekey ~0.8 µs vs newCipher
 * ~1.3 µs for AEAD_AES_SIV_CMAC_256 on the dev machine.
 */
export interface RekeyableAeadCipher extends AeadCipher {
  /** Replaces the key; throws RangeError if its length differs from the current key's (a programming error). */
  rekey(key: Uint8Array): void;
}

/** True when `cipher` supports in-place rekeying (see RekeyableAeadCipher). */
export function isRekeyable(cipher: AeadCipher): cipher is RekeyableAeadCipher {
  return 'rekey' in cipher && typeof cipher.rekey === 'function';
}

/**
 * Optional capability of a keyed instance: seal and open with the nonce and the associated data given as regions
 * of one array and the input as a region of another, so that the hot path makes no subarray view per call
 * (about 30 ns each). Same results and errors as seal/open; a region outside its array throws RangeError (a
 * caller bug). Use it through `sealRegions` / `openRegions`, which fall back to seal/open with views.
 */
export interface RegionAeadCipher extends AeadCipher {
  /** seal(data[nonce], data[ad], input[in], out, outOffset). */
  sealRegions(data: Uint8Array, nonceOffset: number, nonceLength: number, adOffset: number, adLength: number, input: Uint8Array, inOffset: number, inLength: number, out: Uint8Array, outOffset: number): number;
  /** open(data[nonce], data[ad], input[in], out, outOffset). */
  openRegions(data: Uint8Array, nonceOffset: number, nonceLength: number, adOffset: number, adLength: number, input: Uint8Array, inOffset: number, inLength: number, out: Uint8Array, outOffset: number): number;
}

/** True when [offset, offset + length) lies inside `array`. */
export function regionInside(array: Uint8Array, offset: number, length: number): boolean {
  return offset >= 0 && length >= 0 && offset + length <= array.length;
}

function checkRegions(data: Uint8Array, nonceOffset: number, nonceLength: number, adOffset: number, adLength: number, input: Uint8Array, inOffset: number, inLength: number): void {
  if (!regionInside(data, nonceOffset, nonceLength) || !regionInside(data, adOffset, adLength) || !regionInside(input, inOffset, inLength)) {
    throw new RangeError('AEAD: a region lies outside its array');
  }
}

/** `cipher.seal` on regions (RegionAeadCipher when the backend has it, else views). */
export function sealRegions(cipher: AeadCipher, data: Uint8Array, nonceOffset: number, nonceLength: number, adOffset: number, adLength: number, input: Uint8Array, inOffset: number, inLength: number, out: Uint8Array, outOffset: number): number {
  if ('sealRegions' in cipher) return (cipher as RegionAeadCipher).sealRegions(data, nonceOffset, nonceLength, adOffset, adLength, input, inOffset, inLength, out, outOffset);
  checkRegions(data, nonceOffset, nonceLength, adOffset, adLength, input, inOffset, inLength);
  return cipher.seal(data.subarray(nonceOffset, nonceOffset + nonceLength), data.subarray(adOffset, adOffset + adLength), input.subarray(inOffset, inOffset + inLength), out, outOffset);
}

/** `cipher.open` on regions (RegionAeadCipher when the backend has it, else views). */
export function openRegions(cipher: AeadCipher, data: Uint8Array, nonceOffset: number, nonceLength: number, adOffset: number, adLength: number, input: Uint8Array, inOffset: number, inLength: number, out: Uint8Array, outOffset: number): number {
  if ('openRegions' in cipher) return (cipher as RegionAeadCipher).openRegions(data, nonceOffset, nonceLength, adOffset, adLength, input, inOffset, inLength, out, outOffset);
  checkRegions(data, nonceOffset, nonceLength, adOffset, adLength, input, inOffset, inLength);
  return cipher.open(data.subarray(nonceOffset, nonceOffset + nonceLength), data.subarray(adOffset, adOffset + adLength), input.subarray(inOffset, inOffset + inLength), out, outOffset);
}

/**
 * Optional capability of a keyed instance: release its key material now rather than at garbage collection
 * (OpenSSL: cleanse the addon's key copy and free the contexts; JavaScript: zero the key schedules, best effort).
 * The instance must not be used afterwards.
 */
export interface WipeableAeadCipher extends AeadCipher {
  /** Cleanses the key material; later seal/open calls are bugs. */
  wipe(): void;
}

/** Wipes `cipher`'s key material now when its backend can (WipeableAeadCipher); otherwise does nothing. */
export function wipeCipher(cipher: AeadCipher): void {
  if ('wipe' in cipher && typeof cipher.wipe === 'function') (cipher as WipeableAeadCipher).wipe();
}

/** Static description of an AEAD algorithm plus a keyed-instance factory. */
export interface AeadAlgorithm {
  /** IANA AEAD id. */
  readonly aeadId: number;
  /** Human name as in the IANA registry, e.g. "AEAD_AES_SIV_CMAC_256". */
  readonly name: string;
  /** Key length in octets; also the length of C2S/S2C exported for it (RFC 8915 §5.1). */
  readonly keyLength: number;
  /** Nonce length this implementation generates (16 for SIV-CMAC, 12 for GCM-SIV). */
  readonly nonceLength: number;
  /** Smallest nonce length accepted on open (1 for SIV-CMAC, 12 for GCM-SIV). */
  readonly minNonceLength: number;
  /** Largest nonce length accepted on open (RFC 5116 N_MAX). */
  readonly maxNonceLength: number;
  /** Ciphertext expansion in octets (16 for all NTS AEADs). */
  readonly tagLength: number;
  /**
   * True when the implementation's timing does not depend on its keys (OpenSSL's AES through the addon); false
   * for the table-driven JavaScript AES, whose memory accesses do. NTS-KE prefers constant-time AEADs (chooseAead).
   */
  readonly constantTime: boolean;
  /** Creates a keyed instance. */
  newCipher(key: Uint8Array): AeadCipher;
}

/** AEAD ids this build implements, ascending (IANA AEAD registry: 15–17 RFC 5297 §6, 30 RFC 8452 §9); preference is KE policy. */
export const SUPPORTED_AEAD_IDS: readonly number[] = Object.freeze([15, 16, 17, 30]);

/** The built-in JavaScript implementations (src/core/crypto), always present. */
const REGISTRY: ReadonlyMap<number, AeadAlgorithm> = new Map([
  [15, AEAD_AES_SIV_CMAC_256],
  [16, AEAD_AES_SIV_CMAC_384],
  [17, AEAD_AES_SIV_CMAC_512],
  [30, AEAD_AES_128_GCM_SIV],
]);

/**
 * Implementations a shell installed for this thread (setAeadProvider), e.g. OpenSSL through the native addon.
 * Module state is per thread (each worker has its own copy), so every thread installs its own at start-up.
 */
const PROVIDERS = new Map<number, AeadAlgorithm>();

/**
 * Makes `getAead(aeadId)` return `algorithm` in this thread from now on; `undefined` restores the built-in
 * JavaScript implementation. Throws RangeError when the id is not one we implement or the algorithm's
 * parameters differ from the built-in one's (a programming error). Call it before keysets are decoded:
 * a master key keeps the cipher it was made with.
 */
export function setAeadProvider(aeadId: number, algorithm: AeadAlgorithm | undefined): void {
  const builtIn = REGISTRY.get(aeadId);
  if (builtIn === undefined) throw new RangeError(`setAeadProvider: AEAD ${aeadId} is not implemented`);
  if (algorithm === undefined) {
    PROVIDERS.delete(aeadId);
    return;
  }
  const same =
    algorithm.aeadId === aeadId &&
    algorithm.keyLength === builtIn.keyLength &&
    algorithm.tagLength === builtIn.tagLength &&
    algorithm.nonceLength === builtIn.nonceLength &&
    algorithm.minNonceLength === builtIn.minNonceLength &&
    algorithm.maxNonceLength === builtIn.maxNonceLength;
  if (!same) throw new RangeError(`setAeadProvider: the provider for AEAD ${aeadId} does not match its parameters`);
  PROVIDERS.set(aeadId, algorithm);
}

/** Returns the implementation for an IANA AEAD id (an installed provider, else the built-in one), or undefined when we do not implement it. */
export function getAead(aeadId: number): AeadAlgorithm | undefined {
  return PROVIDERS.get(aeadId) ?? REGISTRY.get(aeadId);
}

/** Returns the built-in JavaScript implementation of an AEAD id, whatever provider is installed (fallback and cross-tests). */
export function getJavaScriptAead(aeadId: number): AeadAlgorithm | undefined {
  return REGISTRY.get(aeadId);
}
