/** AEAD_AES_128_GCM_SIV known answers from RFC 8452 Appendix C.1 (output is C || tag). */

/** One RFC 8452 Appendix C.1 example, hex. */
export interface GcmSivVector {
  /** Short description (which C.1 entry). */
  readonly name: string;
  /** 128-bit key-generating key, hex. */
  readonly key: string;
  /** 96-bit nonce, hex. */
  readonly nonce: string;
  /** Associated data, hex. */
  readonly aad: string;
  /** Plaintext, hex. */
  readonly plaintext: string;
  /** Expected "Record authentication key" (POLYVAL key), hex. */
  readonly authKey: string;
  /** Expected "Record encryption key", hex. */
  readonly encKey: string;
  /** Expected "Result" (ciphertext || tag), hex. */
  readonly result: string;
}

const K1 = '01000000000000000000000000000000';
const N1 = '030000000000000000000000';
const AK1 = 'd9b360279694941ac5dbc6987ada7377';
const EK1 = '4004a0dcd862f2a57360219d2d44ef6c';

/** Selected RFC 8452 Appendix C.1 (AEAD_AES_128_GCM_SIV) vectors: empty, no-AAD, with-AAD, partial blocks, random keys. */
export const RFC8452_C1_VECTORS: readonly GcmSivVector[] = [
  { name: 'C.1 pt 0, aad 0', key: K1, nonce: N1, aad: '', plaintext: '', authKey: AK1, encKey: EK1,
    result: 'dc20e2d83f25705bb49e439eca56de25' },
  { name: 'C.1 pt 8, aad 0', key: K1, nonce: N1, aad: '', plaintext: '0100000000000000', authKey: AK1, encKey: EK1,
    result: 'b5d839330ac7b786578782fff6013b815b287c22493a364c' },
  { name: 'C.1 pt 16, aad 0', key: K1, nonce: N1, aad: '', plaintext: '01000000000000000000000000000000',
    authKey: AK1, encKey: EK1, result: '743f7c8077ab25f8624e2e948579cf77303aaf90f6fe21199c6068577437a0c4' },
  { name: 'C.1 pt 64, aad 0', key: K1, nonce: N1, aad: '',
    plaintext: '01000000000000000000000000000000020000000000000000000000000000000300000000000000000000000000000004000000000000000000000000000000',
    authKey: AK1, encKey: EK1,
    result: '2433668f1058190f6d43e360f4f35cd8e475127cfca7028ea8ab5c20f7ab2af02516a2bdcbc08d521be37ff28c152bba36697f25b4cd169c6590d1dd39566d3f8a263dd317aa88d56bdf3936dba75bb8' },
  { name: 'C.1 pt 8, aad 1', key: K1, nonce: N1, aad: '01', plaintext: '0200000000000000', authKey: AK1, encKey: EK1,
    result: '1e6daba35669f4273b0a1a2560969cdf790d99759abd1508' },
  { name: 'C.1 pt 48, aad 1', key: K1, nonce: N1, aad: '01',
    plaintext: '020000000000000000000000000000000300000000000000000000000000000004000000000000000000000000000000',
    authKey: AK1, encKey: EK1,
    result: '50c8303ea93925d64090d07bd109dfd9515a5a33431019c17d93465999a8b0053201d723120a8562b838cdff25bf9d1e6a8cc3865f76897c2e4b245cf31c51f2' },
  { name: 'C.1 pt 4, aad 12', key: K1, nonce: N1, aad: '010000000000000000000000', plaintext: '02000000',
    authKey: AK1, encKey: EK1, result: 'a8fe3e8707eb1f84fb28f8cb73de8e99e2f48a14' },
  { name: 'C.1 pt 18, aad 20', key: K1, nonce: N1, aad: '0100000000000000000000000000000002000000',
    plaintext: '030000000000000000000000000000000400', authKey: AK1, encKey: EK1,
    result: '44d0aaf6fb2f1f34add5e8064e83e12a2adabff9b2ef00fb47920cc72a0c0f13b9fd' },
  { name: 'C.1 random key, pt 0, aad 0', key: 'e66021d5eb8e4f4066d4adb9c33560e4', nonce: 'f46e44bb3da0015c94f70887',
    aad: '', plaintext: '', authKey: '036ee1fe2d7926af68898095e54e7b3c', encKey: '5e46482396008223b5c1d25173d87539',
    result: 'a4194b79071b01a87d65f706e3949578' },
  { name: 'C.1 random key, pt 3, aad 5', key: '36864200e0eaf5284d884a0e77d31646', nonce: 'bae8e37fc83441b16034566b',
    aad: '46bb91c3c5', plaintext: '7a806c', authKey: '3e28de1120b2981a0155795ca2812af6',
    encKey: '6d4b78b31a4c9c03d8db0f42f7507fae', result: 'af60eb711bd85bc1e4d3e0a462e074eea428a8' },
  { name: 'C.1 random key, pt 12, aad 20', key: 'b3fed1473c528b8426a582995929a149', nonce: '9e9ad8780c8d63d0ab4149c0',
    aad: 'c9882e5386fd9f92ec489c8fde2be2cf97e74e93', plaintext: '9f572c614b4745914474e7c7',
    authKey: '22f50707a95dd416df069d670cb775e8', encKey: 'f674a5584ee21fe97b4cebc468ab61e4',
    result: 'f54673c5ddf710c745641c8bc1dc2f871fb7561da1286e655e24b7b0' },
  { name: 'C.1 random key, pt 21, aad 35', key: 'f901cfe8a69615a93fdf7a98cad48179', nonce: '6245709fb18853f68d833640',
    aad: '7576f7028ec6eb5ea7e298342a94d4b202b370ef9768ec6561c4fe6b7e7296fa859c21',
    plaintext: 'e42a3c02c25b64869e146d7b233987bddfc240871d', authKey: '3724f55f1d22ac0ab830da0b6a995d74',
    encKey: '75ac87b70c05db287de779006105a344',
    result: '391cc328d484a4f46406181bcd62efd9b3ee197d052d15506c84a9edd65e13e9d24a2a6e70' },
];

/** RFC 8452 Appendix A: POLYVAL(H, X_1, X_2) worked example. */
export const RFC8452_POLYVAL_VECTOR = {
  h: '25629347589242761d31f826ba4b757b',
  x: '4f4f95668c83dfb6401762bb2d01a262' + 'd1a24ddd2721d006bbe45f20d3c9f362',
  result: 'f7a3b47b846119fae5b7866cf5e5b77e',
} as const;
