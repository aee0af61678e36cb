/**
 * NTS cookies (RFC 8915 §6, "Suggested Format for NTS Cookies"): the server's per-client state,
 * sealed under a master key so the server itself keeps none.
 *
 * Layout, cookie format version 1 (all integers big-endian):
 *
 *   offset  size     field
 *   0       4        key id I of the master key that sealed it (public; RFC 8915 §6)
 *   4       12       nonce N (fresh random per cookie)
 *   16      16+4+2k  AEAD_AES_SIV_CMAC_256(K, nonce = N, AD = octets 0..3 (the key id), plaintext P)
 *                    as the SIV tag (16) followed by the encrypted P, where P is:
 *                      version u8 (= 1) | reserved u8 (= 0) | aeadId u16 | C2S (k) | S2C (k)
 *                    and k is the key length of aeadId (32 for AEAD 15, 48 for 16, 64 for 17, 16 for 30).
 *
 * Total length = 36 + 2k: 100 octets for AEAD 15, 132 for 16, 164 for 17, 68 for 30. Every one is a
 * multiple of 4, so a client returns the cookie unpadded (the NTS Cookie EF has no inner length field,
 * RFC 8915 §5.4) and the cookie length alone is enough to check the layout before any crypto runs.
 * Binding the key id as associated data means a cookie cannot be replayed under a different id.
 *
 * Opening is a value, never an exception: 'malformed' (impossible length, or a sealed plaintext that
 * does not parse — e.g. a future cookie version), 'unknown_key' (no key with that id in the keyset),
 * 'decrypt_failed' (the SIV tag does not verify). On success `keyAge` tells which generation opened it
 * (0 current, 1..n stale, -1 next; see Keyset.find).
 */
import { readU16, readU32, writeU16, writeU32, type FillRandom } from '../bytes.js';
import { SUPPORTED_AEAD_IDS, getAead, openRegions, sealRegions } from '../crypto/aead.js';
import type { Keyset } from './keyset.js';

/** Why a cookie did not open. */
export type CookieOpenError = 'malformed' | 'unknown_key' | 'decrypt_failed';

/** Result of opening a cookie: a value, never an exception. */
export type CookieOpenResult =
  | { readonly ok: true; readonly aeadId: number; readonly c2s: Uint8Array; readonly s2c: Uint8Array; readonly keyAge: number }
  | { readonly ok: false; readonly error: CookieOpenError };

/** Cookie format version carried inside the sealed plaintext. */
export const COOKIE_FORMAT_VERSION = 1;
/** Length of the public key id prefix. */
export const COOKIE_KEY_ID_LENGTH = 4;
/** Length of the cookie nonce. */
export const COOKIE_NONCE_LENGTH = 12;
/** Tag length of the master-key AEAD (AES-SIV, RFC 5297 §2.6). */
export const COOKIE_TAG_LENGTH = 16;
/** Length of the plaintext header: version, reserved, aeadId. */
export const COOKIE_PLAINTEXT_HEADER_LENGTH = 4;
/** Fixed overhead of a cookie beyond C2S and S2C: 4 + 12 + 16 + 4 = 36 octets. */
export const COOKIE_OVERHEAD = COOKIE_KEY_ID_LENGTH + COOKIE_NONCE_LENGTH + COOKIE_TAG_LENGTH + COOKIE_PLAINTEXT_HEADER_LENGTH;
/** Largest C2S/S2C length any supported AEAD has (AEAD 17: 64 octets). */
export const COOKIE_MAX_KEY_LENGTH = 64;
/** Largest cookie this format produces: 36 + 2·64 = 164 octets. */
export const COOKIE_MAX_LENGTH = COOKIE_OVERHEAD + 2 * COOKIE_MAX_KEY_LENGTH;
/** Largest sealed plaintext: 4 + 2·64 = 132 octets. */
export const COOKIE_MAX_PLAINTEXT_LENGTH = COOKIE_PLAINTEXT_HEADER_LENGTH + 2 * COOKIE_MAX_KEY_LENGTH;

const CIPHERTEXT_OFFSET = COOKIE_KEY_ID_LENGTH + COOKIE_NONCE_LENGTH;

/** Numeric cookie-open status for the allocation-free path (`openCookieInto`). */
export const CookieStatus = {
  ok: 0,
  malformed: 1,
  unknownKey: 2,
  decryptFailed: 3,
} as const;
/** A value of `CookieStatus`. */
export type CookieStatusValue = (typeof CookieStatus)[keyof typeof CookieStatus];

/**
 * Reusable state for `openCookieInto`. After an `ok` open, C2S is plaintext[4, 4+keyLength) and S2C is
 * plaintext[4+keyLength, 4+2·keyLength). Wipe it (`wipeCookieOpenScratch`) once the keys are used.
 */
export interface CookieOpenScratch {
  /** Decrypted plaintext (secret while it holds keys). */
  readonly plaintext: Uint8Array;
  /** AEAD id recovered from the cookie. */
  aeadId: number;
  /** C2S/S2C length in octets. */
  keyLength: number;
  /** Key generation that opened the cookie (see Keyset.find). */
  keyAge: number;
}

/** Creates a scratch object for `openCookieInto`. */
export function createCookieOpenScratch(): CookieOpenScratch {
  return { plaintext: new Uint8Array(COOKIE_MAX_PLAINTEXT_LENGTH), aeadId: 0, keyLength: 0, keyAge: 0 };
}

/** Zeroes the secret part of a scratch object. */
export function wipeCookieOpenScratch(scratch: CookieOpenScratch): void {
  scratch.plaintext.fill(0);
  scratch.keyLength = 0;
}

/** Length of C2S/S2C for an AEAD id we implement, or 0 when we implement no such AEAD (or its keys are too long). */
function keyLengthOf(aeadId: number): number {
  const aead = getAead(aeadId);
  if (aead === undefined || aead.keyLength > COOKIE_MAX_KEY_LENGTH || aead.keyLength <= 0) return 0;
  return aead.keyLength;
}

/** Length in octets of a cookie carrying keys for `aeadId` (a multiple of 4). Throws RangeError for an AEAD we do not implement. */
export function cookieLength(aeadId: number): number {
  const k = keyLengthOf(aeadId);
  if (k === 0) throw new RangeError(`cookieLength: unsupported AEAD id ${aeadId}`);
  return COOKIE_OVERHEAD + 2 * k;
}

/** Cookie lengths this format can produce for the AEADs we implement (36 + 2k each). */
const VALID_COOKIE_LENGTHS: ReadonlySet<number> = new Set(
  SUPPORTED_AEAD_IDS.map(keyLengthOf)
    .filter((k) => k > 0)
    .map((k) => COOKIE_OVERHEAD + 2 * k),
);

// Private plaintext buffer for sealCookie; every call is synchronous and wipes it before returning.
const sealPlaintext = new Uint8Array(COOKIE_MAX_PLAINTEXT_LENGTH);

/**
 * Seals a cookie for (aeadId, c2s, s2c) under keyset.current into out[outOffset..]; returns the offset
 * after it. Throws RangeError on caller bugs (unsupported AEAD, wrong key lengths, no room in `out`).
 */
export function sealCookie(
  keyset: Keyset,
  aeadId: number,
  c2s: Uint8Array,
  s2c: Uint8Array,
  fillRandom: FillRandom,
  out: Uint8Array,
  outOffset: number,
): number {
  const k = keyLengthOf(aeadId);
  if (k === 0) throw new RangeError(`sealCookie: unsupported AEAD id ${aeadId}`);
  if (c2s.length !== k || s2c.length !== k) throw new RangeError('sealCookie: C2S/S2C length does not match the AEAD');
  const total = COOKIE_OVERHEAD + 2 * k;
  if (outOffset < 0 || outOffset + total > out.length) throw new RangeError('sealCookie: output buffer too small');
  const master = keyset.current;
  writeU32(out, outOffset, master.id);
  fillRandom(out.subarray(outOffset + COOKIE_KEY_ID_LENGTH, outOffset + CIPHERTEXT_OFFSET));
  const p = sealPlaintext;
  p[0] = COOKIE_FORMAT_VERSION;
  p[1] = 0;
  writeU16(p, 2, aeadId);
  p.set(c2s, COOKIE_PLAINTEXT_HEADER_LENGTH);
  p.set(s2c, COOKIE_PLAINTEXT_HEADER_LENGTH + k);
  const plainLength = COOKIE_PLAINTEXT_HEADER_LENGTH + 2 * k;
  const end = sealRegions(master.cipher, out, outOffset + COOKIE_KEY_ID_LENGTH, COOKIE_NONCE_LENGTH, outOffset, COOKIE_KEY_ID_LENGTH, p, 0, plainLength, out, outOffset + CIPHERTEXT_OFFSET);
  p.fill(0, 0, plainLength);
  return end;
}

/**
 * Opens a cookie under any key the keyset holds, writing the plaintext into `scratch` (no allocation
 * beyond small views). Returns a CookieStatus; on `ok`, scratch.aeadId/keyLength/keyAge are set.
 */
export function openCookieInto(keyset: Keyset, cookie: Uint8Array, scratch: CookieOpenScratch): CookieStatusValue {
  const len = cookie.length;
  // Layout check before any lookup or crypto: the length must be 36 + 2k for an AEAD we implement.
  if (!VALID_COOKIE_LENGTHS.has(len)) return CookieStatus.malformed;
  const found = keyset.find(readU32(cookie, 0));
  if (found === undefined) return CookieStatus.unknownKey;
  const plainEnd = openRegions(found.key.cipher, cookie, COOKIE_KEY_ID_LENGTH, COOKIE_NONCE_LENGTH, 0, COOKIE_KEY_ID_LENGTH, cookie, CIPHERTEXT_OFFSET, len - CIPHERTEXT_OFFSET, scratch.plaintext, 0);
  if (plainEnd < 0) return CookieStatus.decryptFailed;
  const p = scratch.plaintext;
  const aeadId = readU16(p, 2);
  const k = keyLengthOf(aeadId);
  if (p[0] !== COOKIE_FORMAT_VERSION || p[1] !== 0 || k === 0 || plainEnd !== COOKIE_PLAINTEXT_HEADER_LENGTH + 2 * k) {
    p.fill(0);
    return CookieStatus.malformed;
  }
  scratch.aeadId = aeadId;
  scratch.keyLength = k;
  scratch.keyAge = found.age;
  return CookieStatus.ok;
}

const COOKIE_ERRORS: readonly CookieOpenError[] = ['malformed', 'malformed', 'unknown_key', 'decrypt_failed'];

/** Opens a cookie under any key the keyset holds. The returned C2S/S2C are fresh copies. */
export function openCookie(keyset: Keyset, cookie: Uint8Array): CookieOpenResult {
  const scratch = createCookieOpenScratch();
  const status = openCookieInto(keyset, cookie, scratch);
  if (status !== CookieStatus.ok) return { ok: false, error: COOKIE_ERRORS[status] ?? 'malformed' };
  const k = scratch.keyLength;
  const result: CookieOpenResult = {
    ok: true,
    aeadId: scratch.aeadId,
    c2s: scratch.plaintext.slice(COOKIE_PLAINTEXT_HEADER_LENGTH, COOKIE_PLAINTEXT_HEADER_LENGTH + k),
    s2c: scratch.plaintext.slice(COOKIE_PLAINTEXT_HEADER_LENGTH + k, COOKIE_PLAINTEXT_HEADER_LENGTH + 2 * k),
    keyAge: scratch.keyAge,
  };
  wipeCookieOpenScratch(scratch);
  return result;
}
