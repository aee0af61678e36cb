/**
 * Reference AEAD backend: thin adapters over noble's high-level `aessiv` and `gcmsiv`.
 * It re-expands the key on every call and allocates per call, so it is NOT the production path;
 * it exists as an independent second implementation for cross-tests and as a benchmark baseline.
 */
import { aessiv, gcmsiv } from '@noble/ciphers/aes.js';
import type { AeadAlgorithm, AeadCipher } from '../../../src/core/crypto/aead.js';

/** Tag (SIV / GCM-SIV authentication tag) length in octets, RFC 5297 §2.6 and RFC 8452 §4. */
const TAG_LENGTH = 16;

function checkKey(name: string, expected: number, key: Uint8Array): void {
  if (key.length !== expected) throw new RangeError(`${name}: key must be ${expected} octets, got ${key.length}`);
}

/** RFC 5297 §6 AEAD_AES_SIV_CMAC_* over noble: S2V components (A, N, P), output V || C. */
function nobleSiv(aeadId: number, name: string, keyLength: number): AeadAlgorithm {
  return {
    aeadId,
    name,
    keyLength,
    nonceLength: 16,
    minNonceLength: 1,
    maxNonceLength: 0xffff,
    tagLength: TAG_LENGTH,
    constantTime: false, // a test reference: claim nothing
    newCipher(keyIn: Uint8Array): AeadCipher {
      checkKey(name, keyLength, keyIn);
      const key = keyIn.slice();
      return {
        aeadId,
        seal(nonce, associatedData, plaintext, out, outOffset) {
          if (nonce.length < 1) throw new RangeError(`${name}: nonce must be at least 1 octet`);
          const sealed = aessiv(key, associatedData, nonce).encrypt(plaintext);
          out.set(sealed, outOffset);
          return outOffset + sealed.length;
        },
        open(nonce, associatedData, ciphertext, out, outOffset) {
          if (nonce.length < 1 || ciphertext.length < TAG_LENGTH) return -1;
          try {
            const plain = aessiv(key, associatedData, nonce).decrypt(ciphertext);
            out.set(plain, outOffset);
            return outOffset + plain.length;
          } catch {
            return -1;
          }
        },
      };
    },
  };
}

/** RFC 8452 AEAD_AES_128_GCM_SIV over noble: nonce exactly 12 octets, output C || tag. */
function nobleGcmSiv(aeadId: number, name: string, keyLength: number): AeadAlgorithm {
  return {
    aeadId,
    name,
    keyLength,
    nonceLength: 12,
    minNonceLength: 12,
    maxNonceLength: 12,
    tagLength: TAG_LENGTH,
    constantTime: false, // a test reference: claim nothing
    newCipher(keyIn: Uint8Array): AeadCipher {
      checkKey(name, keyLength, keyIn);
      const key = keyIn.slice();
      return {
        aeadId,
        seal(nonce, associatedData, plaintext, out, outOffset) {
          if (nonce.length !== 12) throw new RangeError(`${name}: nonce must be 12 octets`);
          const sealed = gcmsiv(key, nonce, associatedData).encrypt(plaintext);
          out.set(sealed, outOffset);
          return outOffset + sealed.length;
        },
        open(nonce, associatedData, ciphertext, out, outOffset) {
          if (nonce.length !== 12 || ciphertext.length < TAG_LENGTH) return -1;
          try {
            const plain = gcmsiv(key, nonce, associatedData).decrypt(ciphertext);
            out.set(plain, outOffset);
            return outOffset + plain.length;
          } catch {
            return -1;
          }
        },
      };
    },
  };
}

const NOBLE_AEADS: ReadonlyMap<number, AeadAlgorithm> = new Map([
  [15, nobleSiv(15, 'AEAD_AES_SIV_CMAC_256', 32)],
  [16, nobleSiv(16, 'AEAD_AES_SIV_CMAC_384', 48)],
  [17, nobleSiv(17, 'AEAD_AES_SIV_CMAC_512', 64)],
  [30, nobleGcmSiv(30, 'AEAD_AES_128_GCM_SIV', 16)],
]);

/** Returns the noble-backed reference implementation for an AEAD id, or undefined. */
export function getNobleAead(aeadId: number): AeadAlgorithm | undefined {
  return NOBLE_AEADS.get(aeadId);
}
