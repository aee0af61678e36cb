/**
 * HKDF with SHA-256 (RFC 5869), over `@noble/hashes`. The only key-derivation function in ntsd; it lives
 * in core/crypto because that is the one place cipher and hash packages may be imported.
 */
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';

/** HKDF-SHA-256 output limit: 255 · HashLen octets (RFC 5869 §2.3). */
export const HKDF_SHA256_MAX_LENGTH = 255 * 32;

/** HKDF-SHA-256(IKM, salt, info) → `length` octets (RFC 5869 §2.2 extract, §2.3 expand). */
export function hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  if (!Number.isInteger(length) || length < 1 || length > HKDF_SHA256_MAX_LENGTH) {
    throw new RangeError(`hkdfSha256: length must be 1..${HKDF_SHA256_MAX_LENGTH}`);
  }
  return hkdf(sha256, ikm, salt, info, length);
}
