/**
 * CONTRACT STUB — owned by the core-protocol helper, who replaces the bodies (keep the exported names).
 * NTS cookies (RFC 8915 §6): key id, nonce, AEAD_K(nonce, {AEAD id, C2S, S2C}).
 */
import type { FillRandom } from '../bytes.js';
import type { Keyset } from './keyset.js';

/** Why a cookie did not open. */
export type CookieOpenError = 'malformed' | 'unknown_key' | 'decrypt_failed';

/** Result of opening a cookie: a value, never an exception. */
export type CookieOpenResult =
  | { readonly ok: true; readonly aeadId: number; readonly c2s: Uint8Array; readonly s2c: Uint8Array; readonly keyAge: number }
  | { readonly ok: false; readonly error: CookieOpenError };

/** Length in octets of a cookie carrying keys for `aeadId` (a multiple of 4). */
export declare function cookieLength(aeadId: number): number;

/** Seals a cookie for (aeadId, c2s, s2c) under keyset.current into out[outOffset..]; returns the offset after it. */
export declare function sealCookie(
  keyset: Keyset,
  aeadId: number,
  c2s: Uint8Array,
  s2c: Uint8Array,
  fillRandom: FillRandom,
  out: Uint8Array,
  outOffset: number,
): number;

/** Opens a cookie under any key the keyset holds. */
export declare function openCookie(keyset: Keyset, cookie: Uint8Array): CookieOpenResult;
