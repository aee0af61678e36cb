/** AES-CMAC known answers from RFC 4493 §4 (AES-128, key 2b7e1516…; all four message lengths). */

/** One RFC 4493 §4 example: message and expected 128-bit tag, hex. */
export interface CmacVector {
  /** Which example of RFC 4493 §4 this is. */
  readonly name: string;
  /** Message, hex. */
  readonly message: string;
  /** Expected AES-CMAC output, hex. */
  readonly tag: string;
}

/** RFC 4493 §4: the AES-128 key used by every example. */
export const RFC4493_KEY = '2b7e151628aed2a6abf7158809cf4f3c';
/** RFC 4493 §4 "Subkey Generation": K1 and K2 for that key. */
export const RFC4493_SUBKEYS = { k1: 'fbeed618357133667c85e08f7236a8de', k2: 'f7ddac306ae266ccf90bc11ee46d513b' } as const;

const M64 =
  '6bc1bee22e409f96e93d7e117393172a' +
  'ae2d8a571e03ac9c9eb76fac45af8e51' +
  '30c81c46a35ce411e5fbc1191a0a52ef' +
  'f69f2445df4f9b17ad2b417be66c3710';

/** RFC 4493 §4 Examples 1–4 (message lengths 0, 16, 40, 64 octets). */
export const RFC4493_VECTORS: readonly CmacVector[] = [
  { name: 'RFC 4493 §4 Example 1 (len 0)', message: '', tag: 'bb1d6929e95937287fa37d129b756746' },
  { name: 'RFC 4493 §4 Example 2 (len 16)', message: M64.slice(0, 32), tag: '070a16b46b4d4144f79bdd9dd04a287c' },
  { name: 'RFC 4493 §4 Example 3 (len 40)', message: M64.slice(0, 80), tag: 'dfa66747de9ae63030ca32611497c827' },
  { name: 'RFC 4493 §4 Example 4 (len 64)', message: M64, tag: '51f0bebf7e3b9d92fc49741779363cfe' },
];
