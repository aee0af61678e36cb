/** AES known answers from FIPS 197 Appendix C (example vectors, plaintext 00112233…eeff). */

/** One FIPS 197 Appendix C example, hex. */
export interface AesVector {
  /** Which appendix section. */
  readonly name: string;
  /** Cipher key, hex. */
  readonly key: string;
  /** Plaintext block, hex. */
  readonly plaintext: string;
  /** Ciphertext block, hex. */
  readonly ciphertext: string;
}

/** FIPS 197 Appendix C.1 (AES-128), C.2 (AES-192), C.3 (AES-256). */
export const FIPS197_VECTORS: readonly AesVector[] = [
  { name: 'FIPS 197 Appendix C.1 (AES-128)', key: '000102030405060708090a0b0c0d0e0f',
    plaintext: '00112233445566778899aabbccddeeff', ciphertext: '69c4e0d86a7b0430d8cdb78070b4c55a' },
  { name: 'FIPS 197 Appendix C.2 (AES-192)', key: '000102030405060708090a0b0c0d0e0f1011121314151617',
    plaintext: '00112233445566778899aabbccddeeff', ciphertext: 'dda97ca4864cdfe06eaf70a0ec0d7191' },
  { name: 'FIPS 197 Appendix C.3 (AES-256)', key: '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f',
    plaintext: '00112233445566778899aabbccddeeff', ciphertext: '8ea2b7ca516745bfeafc49904b496089' },
];
