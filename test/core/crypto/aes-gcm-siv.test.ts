import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { gcmsiv } from '@noble/ciphers/aes.js';
import { AEAD_AES_128_GCM_SIV, AesGcmSiv, polyval } from '../../../src/core/crypto/aes-gcm-siv.js';
import { RFC8452_C1_VECTORS, RFC8452_POLYVAL_VECTOR } from '../../vectors/rfc8452.js';
import { fromHex, toHex } from '../../vectors/hex.js';

describe('POLYVAL (RFC 8452 §3)', () => {
  it('RFC 8452 Appendix A: POLYVAL(H, X_1, X_2) worked example', () => {
    const v = RFC8452_POLYVAL_VECTOR;
    assert.equal(toHex(polyval(fromHex(v.h), fromHex(v.x))), v.result);
  });

  it('RFC 8452 Appendix C.1: POLYVAL over the record authentication key gives the listed POLYVAL result', () => {
    // C.1 "Plaintext (8 bytes)" entry: POLYVAL input = 01 00.. || length block; result eb93b774…ec74.
    const input = fromHex('01000000000000000000000000000000' + '00000000000000004000000000000000');
    assert.equal(toHex(polyval(fromHex('d9b360279694941ac5dbc6987ada7377'), input)), 'eb93b7740962c5e49d2a90a7dc5cec74');
  });
});

describe('AEAD_AES_128_GCM_SIV (RFC 8452, IANA 30)', () => {
  for (const v of RFC8452_C1_VECTORS) {
    it(`RFC 8452 Appendix ${v.name}: C || tag exactly, and open`, () => {
      const c = AEAD_AES_128_GCM_SIV.newCipher(fromHex(v.key));
      const pt = fromHex(v.plaintext);
      const out = new Uint8Array(pt.length + 16 + 2).fill(0xee);
      const end = c.seal(fromHex(v.nonce), fromHex(v.aad), pt, out, 1);
      assert.equal(end, 1 + pt.length + 16);
      assert.equal(toHex(out.subarray(1, end)), v.result);
      assert.equal(out[0], 0xee);
      assert.equal(out[end], 0xee);
      const back = new Uint8Array(pt.length);
      assert.equal(c.open(fromHex(v.nonce), fromHex(v.aad), fromHex(v.result), back, 0), pt.length);
      assert.equal(toHex(back), v.plaintext);
    });
  }

  it('RFC 8452 Appendix C.1: every flipped bit of C || tag fails to open and leaves no plaintext', () => {
    const v = RFC8452_C1_VECTORS[7];
    assert.ok(v);
    const c = AEAD_AES_128_GCM_SIV.newCipher(fromHex(v.key));
    const ct = fromHex(v.result);
    const back = new Uint8Array(ct.length - 16);
    for (let bit = 0; bit < ct.length * 8; bit++) {
      const bad = ct.slice();
      bad[bit >>> 3] = (bad[bit >>> 3] ?? 0) ^ (1 << (bit & 7));
      assert.equal(c.open(fromHex(v.nonce), fromHex(v.aad), bad, back, 0), -1);
      assert.ok(back.every((b) => b === 0));
    }
  });

  it('cross-test against noble gcmsiv, both directions, plus tampering (random key, AD 0..300, plaintext 0..300)', () => {
    let runs = 0;
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.uint8Array({ minLength: 12, maxLength: 12 }),
        fc.uint8Array({ maxLength: 300, size: 'max' }),
        fc.uint8Array({ maxLength: 300, size: 'max' }),
        fc.nat(),
        (key, nonce, ad, pt, pick) => {
          runs++;
          const c = AEAD_AES_128_GCM_SIV.newCipher(key);
          const ours = new Uint8Array(pt.length + 16);
          assert.equal(c.seal(nonce, ad, pt, ours, 0), ours.length);
          assert.deepEqual(gcmsiv(key, nonce, ad).decrypt(ours), pt, 'noble opens ours');
          const theirs = gcmsiv(key, nonce, ad).encrypt(pt);
          assert.deepEqual(theirs, ours);
          const back = new Uint8Array(pt.length);
          assert.equal(c.open(nonce, ad, theirs, back, 0), pt.length, 'we open noble');
          assert.deepEqual(back, pt);
          const bit = pick % (theirs.length * 8);
          const badCt = theirs.slice();
          badCt[bit >>> 3] = (badCt[bit >>> 3] ?? 0) ^ (1 << (bit & 7));
          assert.equal(c.open(nonce, ad, badCt, back, 0), -1);
          if (ad.length > 0) {
            const badAd = ad.slice();
            const i = pick % ad.length;
            badAd[i] = (badAd[i] ?? 0) ^ (1 << (pick & 7));
            assert.equal(c.open(nonce, badAd, theirs, back, 0), -1);
          }
          const badNonce = nonce.slice();
          badNonce[pick % 12] = (badNonce[pick % 12] ?? 0) ^ 1;
          assert.equal(c.open(badNonce, ad, theirs, back, 0), -1);
        },
      ),
      { numRuns: 3000, plugins: [fc.interruptAfterTimeLimit(3000)] },
    );
    assert.ok(runs >= 300, `only ${runs} runs in the time budget`);
  });

  it('the AES-256 key-generating key (id 31, not registered) also matches noble gcmsiv', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 12, maxLength: 12 }),
        fc.uint8Array({ maxLength: 100, size: 'max' }),
        fc.uint8Array({ maxLength: 100, size: 'max' }),
        (key, nonce, ad, pt) => {
          const c = new AesGcmSiv(key);
          assert.equal(c.aeadId, 31);
          const ours = new Uint8Array(pt.length + 16);
          c.seal(nonce, ad, pt, ours, 0);
          assert.equal(toHex(ours), toHex(gcmsiv(key, nonce, ad).encrypt(pt)));
        },
      ),
      { numRuns: 300, plugins: [fc.interruptAfterTimeLimit(1000)] },
    );
  });

  it('one keyed instance reused for many messages equals fresh instances (scratch reuse)', () => {
    const key = new Uint8Array(16).map((_, i) => i * 11 + 5);
    const shared = AEAD_AES_128_GCM_SIV.newCipher(key);
    for (let n = 0; n < 200; n++) {
      const nonce = new Uint8Array(12).fill(n);
      const ad = new Uint8Array((n * 13) % 190).fill(n ^ 0x5a);
      const pt = new Uint8Array((n * 31) % 140).map((_, i) => i ^ n);
      const a = new Uint8Array(pt.length + 16);
      const b = new Uint8Array(pt.length + 16);
      shared.seal(nonce, ad, pt, a, 0);
      AEAD_AES_128_GCM_SIV.newCipher(key).seal(nonce, ad, pt, b, 0);
      assert.deepEqual(a, b);
      const back = new Uint8Array(pt.length);
      if (n % 3 === 0) assert.equal(shared.open(nonce, new Uint8Array(ad.length + 1), a, back, 0), -1);
      assert.equal(shared.open(nonce, ad, a, back, 0), pt.length);
      assert.deepEqual(back, pt);
    }
  });

  it('peer-controlled input never throws: wrong nonce lengths, short ciphertexts, random bytes, small output', () => {
    const c = AEAD_AES_128_GCM_SIV.newCipher(new Uint8Array(16).fill(9));
    const out = new Uint8Array(64);
    for (const n of [0, 1, 11, 13, 16]) assert.equal(c.open(new Uint8Array(n), new Uint8Array(0), new Uint8Array(32), out, 0), -1);
    for (let len = 0; len < 16; len++) assert.equal(c.open(new Uint8Array(12), new Uint8Array(0), new Uint8Array(len), out, 0), -1);
    assert.equal(c.open(new Uint8Array(12), new Uint8Array(0), new Uint8Array(100), out, 0), -1, 'output too small');
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 20 }), fc.uint8Array({ maxLength: 80 }), fc.uint8Array({ maxLength: 80 }), (n, ad, ct) => {
        assert.equal(c.open(n, ad, ct, new Uint8Array(80), 0), -1);
      }),
      { numRuns: 500, plugins: [fc.interruptAfterTimeLimit(1500)] },
    );
  });

  it('seal with a nonce that is not 12 octets, or a too-small output, is a programming error (throws)', () => {
    const c = AEAD_AES_128_GCM_SIV.newCipher(new Uint8Array(16));
    assert.throws(() => c.seal(new Uint8Array(16), new Uint8Array(0), new Uint8Array(0), new Uint8Array(16), 0), RangeError);
    assert.throws(() => c.seal(new Uint8Array(12), new Uint8Array(0), new Uint8Array(1), new Uint8Array(16), 0), RangeError);
    assert.throws(() => AEAD_AES_128_GCM_SIV.newCipher(new Uint8Array(32)), RangeError);
  });
});
