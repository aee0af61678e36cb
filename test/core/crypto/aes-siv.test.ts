import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { aessiv } from '@noble/ciphers/aes.js';
import { AesSiv, AEAD_AES_SIV_CMAC_256, AEAD_AES_SIV_CMAC_384, AEAD_AES_SIV_CMAC_512, SIV_MAX_COMPONENTS } from '../../../src/core/crypto/aes-siv.js';
import { RFC5297_VECTORS } from '../../vectors/rfc5297.js';
import { fromHex, toHex } from '../../vectors/hex.js';

const SIV_ALGORITHMS = [AEAD_AES_SIV_CMAC_256, AEAD_AES_SIV_CMAC_384, AEAD_AES_SIV_CMAC_512] as const;

describe('AES-SIV with arbitrary associated-data components (RFC 5297 §2.6/§2.7)', () => {
  for (const v of RFC5297_VECTORS) {
    it(`${v.name}: seal gives V || C exactly, open recovers the plaintext`, () => {
      const siv = new AesSiv(fromHex(v.key));
      const components = v.components.map(fromHex);
      const pt = fromHex(v.plaintext);
      const out = new Uint8Array(pt.length + 16 + 4).fill(0xee);
      const end = siv.sealComponents(components, pt, out, 2);
      assert.equal(end, 2 + 16 + pt.length);
      assert.equal(toHex(out.subarray(2, 18)), v.iv);
      assert.equal(toHex(out.subarray(2, end)), v.output);
      assert.equal(out[0], 0xee, 'wrote before outOffset');
      assert.equal(out[end], 0xee, 'wrote past the end');
      const back = new Uint8Array(pt.length);
      assert.equal(siv.openComponents(components, fromHex(v.output), back, 0), pt.length);
      assert.equal(toHex(back), v.plaintext);
    });

    it(`${v.name}: a flipped bit anywhere in V || C, or in any component, fails to open and leaves no plaintext`, () => {
      const siv = new AesSiv(fromHex(v.key));
      const components = v.components.map(fromHex);
      const ct = fromHex(v.output);
      const back = new Uint8Array(ct.length - 16);
      for (let bit = 0; bit < ct.length * 8; bit += 5) {
        const bad = ct.slice();
        bad[bit >>> 3] = (bad[bit >>> 3] ?? 0) ^ (1 << (bit & 7));
        assert.equal(siv.openComponents(components, bad, back, 0), -1);
        assert.ok(back.every((b) => b === 0), 'plaintext wiped after failure');
      }
      for (let c = 0; c < components.length; c++) {
        const changed = components.map((x, i) => (i === c ? Uint8Array.from(x, (b, j) => (j === 0 ? b ^ 0x80 : b)) : x));
        assert.equal(siv.openComponents(changed, ct, back, 0), -1);
      }
      assert.equal(siv.openComponents(components.slice(1), ct, back, 0), -1, 'dropping a component');
    });
  }

  it('matches noble aessiv for 0..4 components of random lengths and all key sizes', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(32, 48, 64).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
        fc.array(fc.uint8Array({ maxLength: 40, size: 'max' }), { maxLength: 4, size: 'max' }),
        fc.uint8Array({ maxLength: 70, size: 'max' }),
        (key, components, pt) => {
          const siv = new AesSiv(key);
          const out = new Uint8Array(pt.length + 16);
          siv.sealComponents(components, pt, out, 0);
          assert.equal(toHex(out), toHex(aessiv(key, ...components).encrypt(pt)));
          const back = new Uint8Array(pt.length);
          assert.equal(siv.openComponents(components, out, back, 0), pt.length);
          assert.deepEqual(back, pt);
        },
      ),
      { numRuns: 800, plugins: [fc.interruptAfterTimeLimit(2500)] },
    );
  });

  it(`more than ${SIV_MAX_COMPONENTS} components is a programming error (RFC 5297 §7)`, () => {
    const siv = new AesSiv(new Uint8Array(32));
    const many = Array.from({ length: SIV_MAX_COMPONENTS + 1 }, () => new Uint8Array(1));
    assert.throws(() => siv.sealComponents(many, new Uint8Array(1), new Uint8Array(17), 0), RangeError);
    assert.equal(siv.sealComponents(many.slice(1), new Uint8Array(1), new Uint8Array(17), 0), 17);
  });
});

describe('AEAD_AES_SIV_CMAC_256/384/512 (RFC 5297 §6; S2V over AD, nonce, plaintext)', () => {
  it('RFC 5116 shape equals SIV with components [AD, nonce] (RFC 5297 §3), checked on the A.2 inputs', () => {
    const v = RFC5297_VECTORS[1];
    assert.ok(v);
    const key = fromHex(v.key);
    const [ad, , nonce] = v.components.map(fromHex);
    assert.ok(ad && nonce);
    const pt = fromHex(v.plaintext);
    const a = new Uint8Array(pt.length + 16);
    const b = new Uint8Array(pt.length + 16);
    AEAD_AES_SIV_CMAC_256.newCipher(key).seal(nonce, ad, pt, a, 0);
    new AesSiv(key).sealComponents([ad, nonce], pt, b, 0);
    assert.deepEqual(a, b);
    assert.equal(toHex(a), toHex(aessiv(key, ad, nonce).encrypt(pt)));
  });

  for (const alg of SIV_ALGORITHMS) {
    it(`${alg.name}: cross-test against noble aessiv(key, AD, nonce), both directions, plus tampering`, () => {
      let runs = 0;
      fc.assert(
        fc.property(
          fc.uint8Array({ minLength: alg.keyLength, maxLength: alg.keyLength }),
          fc.uint8Array({ minLength: 1, maxLength: 32, size: 'max' }),
          fc.uint8Array({ maxLength: 300, size: 'max' }),
          fc.uint8Array({ maxLength: 300, size: 'max' }),
          fc.nat(),
          (key, nonce, ad, pt, pick) => {
            runs++;
            const c = alg.newCipher(key);
            const ours = new Uint8Array(pt.length + 16);
            assert.equal(c.seal(nonce, ad, pt, ours, 0), ours.length);
            const noble = aessiv(key, ad, nonce);
            assert.deepEqual(noble.decrypt(ours), pt, 'noble opens ours');
            const theirs = aessiv(key, ad, nonce).encrypt(pt);
            assert.deepEqual(theirs, ours, 'same bytes');
            const back = new Uint8Array(pt.length);
            assert.equal(c.open(nonce, ad, theirs, back, 0), pt.length, 'we open noble');
            assert.deepEqual(back, pt);
            // One flipped bit in the tag/ciphertext, the AD or the nonce must fail.
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
            badNonce[pick % nonce.length] = (badNonce[pick % nonce.length] ?? 0) ^ 1;
            assert.equal(c.open(badNonce, ad, theirs, back, 0), -1);
          },
        ),
        { numRuns: 3000, plugins: [fc.interruptAfterTimeLimit(3000)] },
      );
      assert.ok(runs >= 300, `only ${runs} runs in the time budget`);
    });
  }

  it('one keyed instance reused for many messages equals fresh instances (scratch reuse)', () => {
    const key = new Uint8Array(64).map((_, i) => i * 7 + 1);
    for (const alg of SIV_ALGORITHMS) {
      const k = key.subarray(0, alg.keyLength);
      const shared = alg.newCipher(k);
      for (let n = 0; n < 200; n++) {
        const nonce = new Uint8Array(1 + (n % 20)).fill(n);
        const ad = new Uint8Array((n * 13) % 190).fill(n ^ 0x5a);
        const pt = new Uint8Array((n * 31) % 140).map((_, i) => i ^ n);
        const a = new Uint8Array(pt.length + 16);
        const b = new Uint8Array(pt.length + 16);
        shared.seal(nonce, ad, pt, a, 0);
        alg.newCipher(k).seal(nonce, ad, pt, b, 0);
        assert.deepEqual(a, b);
        const back = new Uint8Array(pt.length);
        // Interleave failing opens: they must not disturb the next operation.
        if (n % 3 === 0) assert.equal(shared.open(nonce, new Uint8Array(ad.length + 1), a, back, 0), -1);
        assert.equal(shared.open(nonce, ad, a, back, 0), pt.length);
        assert.deepEqual(back, pt);
      }
    }
  });

  it('peer-controlled input never throws: short ciphertexts, empty nonce, random bytes, small output', () => {
    const c = AEAD_AES_SIV_CMAC_256.newCipher(new Uint8Array(32).fill(3));
    const out = new Uint8Array(64);
    for (let len = 0; len < 16; len++) assert.equal(c.open(new Uint8Array(16), new Uint8Array(0), new Uint8Array(len), out, 0), -1);
    assert.equal(c.open(new Uint8Array(0), new Uint8Array(0), new Uint8Array(32), out, 0), -1, 'empty nonce');
    assert.equal(c.open(new Uint8Array(16), new Uint8Array(0), new Uint8Array(100), out, 0), -1, 'output too small');
    assert.equal(c.open(new Uint8Array(16), new Uint8Array(0), new Uint8Array(32), out, 60), -1, 'offset too far');
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ maxLength: 80 }), fc.uint8Array({ maxLength: 80 }), (n, ad, ct) => {
        assert.equal(c.open(n, ad, ct, new Uint8Array(80), 0), -1);
      }),
      { numRuns: 500, plugins: [fc.interruptAfterTimeLimit(1500)] },
    );
  });

  it('seal with an empty nonce or a too-small output buffer is a programming error (throws)', () => {
    const c = AEAD_AES_SIV_CMAC_256.newCipher(new Uint8Array(32));
    assert.throws(() => c.seal(new Uint8Array(0), new Uint8Array(0), new Uint8Array(0), new Uint8Array(16), 0), RangeError);
    assert.throws(() => c.seal(new Uint8Array(16), new Uint8Array(0), new Uint8Array(4), new Uint8Array(19), 0), RangeError);
    assert.throws(() => AEAD_AES_SIV_CMAC_384.newCipher(new Uint8Array(32)), RangeError);
  });
});
