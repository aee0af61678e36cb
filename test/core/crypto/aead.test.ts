import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { getAead, isRekeyable, SUPPORTED_AEAD_IDS } from '../../../src/core/crypto/aead.js';
import { AeadId } from '../../../src/core/nts/ids.js';
import { RFC8452_C1_VECTORS } from '../../vectors/rfc8452.js';
import { getNobleAead } from './noble-aead.js';
import { fromHex, toHex } from '../../vectors/hex.js';

describe('AEAD registry', () => {
  it('exposes 15, 16, 17 and 30 with the RFC key/nonce/tag lengths', () => {
    assert.deepEqual([...SUPPORTED_AEAD_IDS], [15, 16, 17, 30]);
    const expect: Record<number, [number, number, number, number]> = {
      [AeadId.AES_SIV_CMAC_256]: [32, 16, 1, 16],
      [AeadId.AES_SIV_CMAC_384]: [48, 16, 1, 16],
      [AeadId.AES_SIV_CMAC_512]: [64, 16, 1, 16],
      [AeadId.AES_128_GCM_SIV]: [16, 12, 12, 16],
    };
    for (const id of SUPPORTED_AEAD_IDS) {
      const alg = getAead(id);
      assert.ok(alg, `aead ${id}`);
      assert.equal(alg.aeadId, id);
      assert.deepEqual([alg.keyLength, alg.nonceLength, alg.minNonceLength, alg.tagLength], expect[id]);
      assert.ok(alg.maxNonceLength >= alg.nonceLength);
    }
  });

  it('returns undefined for ids it does not implement (RFC 8915 §4.1.5 open registry)', () => {
    for (const id of [0, 1, 14, 18, 29, 31, 0xffff, -1, 1.5]) assert.equal(getAead(id), undefined);
  });

  it('newCipher throws on a wrong key length (programming error)', () => {
    for (const id of SUPPORTED_AEAD_IDS) {
      const alg = getAead(id);
      assert.ok(alg);
      assert.throws(() => alg.newCipher(new Uint8Array(alg.keyLength + 1)), RangeError);
      assert.throws(() => alg.newCipher(new Uint8Array(0)), RangeError);
    }
  });
});

describe('AEAD_AES_128_GCM_SIV (30) known answers', () => {
  for (const v of RFC8452_C1_VECTORS) {
    it(`RFC 8452 Appendix ${v.name}: seal and open`, () => {
      const alg = getAead(AeadId.AES_128_GCM_SIV);
      assert.ok(alg);
      const c = alg.newCipher(fromHex(v.key));
      const pt = fromHex(v.plaintext);
      const out = new Uint8Array(pt.length + 16 + 3);
      const end = c.seal(fromHex(v.nonce), fromHex(v.aad), pt, out, 3);
      assert.equal(end, 3 + pt.length + 16);
      assert.equal(toHex(out.subarray(3, end)), v.result);
      const back = new Uint8Array(pt.length + 5);
      const pend = c.open(fromHex(v.nonce), fromHex(v.aad), fromHex(v.result), back, 5);
      assert.equal(pend, 5 + pt.length);
      assert.equal(toHex(back.subarray(5, pend)), v.plaintext);
    });
  }
});

describe('every registered AEAD against the noble reference backend (RFC 5116 interface contract)', () => {
  for (const id of SUPPORTED_AEAD_IDS) {
    it(`aead ${id}: same bytes as noble-aead at arbitrary output offsets, open round-trips, tag length 16`, () => {
      const fast = getAead(id);
      const ref = getNobleAead(id);
      assert.ok(fast && ref);
      fc.assert(
        fc.property(
          fc.uint8Array({ minLength: fast.keyLength, maxLength: fast.keyLength }),
          fc.uint8Array({ minLength: fast.nonceLength, maxLength: fast.nonceLength }),
          fc.uint8Array({ maxLength: 200, size: 'max' }),
          fc.uint8Array({ maxLength: 200, size: 'max' }),
          fc.nat({ max: 9 }),
          (key, nonce, ad, pt, off) => {
            const a = new Uint8Array(off + pt.length + fast.tagLength);
            const b = new Uint8Array(off + pt.length + ref.tagLength);
            assert.equal(fast.newCipher(key).seal(nonce, ad, pt, a, off), a.length);
            assert.equal(ref.newCipher(key).seal(nonce, ad, pt, b, off), b.length);
            assert.deepEqual(a, b);
            const back = new Uint8Array(off + pt.length);
            assert.equal(fast.newCipher(key).open(nonce, ad, a.subarray(off), back, off), back.length);
            assert.deepEqual(back.subarray(off), pt);
          },
        ),
        { numRuns: 400, plugins: [fc.interruptAfterTimeLimit(1500)] },
      );
    });
  }
});

describe('instances share per-call scratch safely', () => {
  it('interleaving operations of several instances (all AEADs, different keys) equals running each alone', () => {
    const algs = SUPPORTED_AEAD_IDS.map((id) => getAead(id)).filter((a) => a !== undefined);
    const ciphers = algs.flatMap((alg) =>
      [1, 2].map((k) => ({ alg, key: new Uint8Array(alg.keyLength).fill(k * 17 + alg.aeadId) })),
    ).map((x) => ({ ...x, shared: x.alg.newCipher(x.key) }));
    for (let n = 0; n < 60; n++) {
      for (const { alg, key, shared } of ciphers) {
        const nonce = new Uint8Array(alg.nonceLength).fill(n);
        const ad = new Uint8Array((n * 7) % 100).fill(n + alg.aeadId);
        const pt = new Uint8Array((n * 11) % 90).fill(n ^ 0x33);
        const a = new Uint8Array(pt.length + 16);
        const b = new Uint8Array(pt.length + 16);
        shared.seal(nonce, ad, pt, a, 0);
        alg.newCipher(key).seal(nonce, ad, pt, b, 0);
        assert.deepEqual(a, b, `aead ${alg.aeadId} message ${n}`);
        const back = new Uint8Array(pt.length);
        assert.equal(shared.open(nonce, ad, a, back, 0), pt.length);
        assert.deepEqual(back, pt);
      }
    }
  });
});

describe('rekey (RekeyableAeadCipher)', () => {
  it('every registered cipher rekeys in place to exactly what a fresh instance does, and rejects other lengths', () => {
    for (const id of SUPPORTED_AEAD_IDS) {
      const alg = getAead(id);
      assert.ok(alg);
      const c = alg.newCipher(new Uint8Array(alg.keyLength).fill(1));
      assert.ok(isRekeyable(c), `aead ${id}`);
      for (let k = 2; k < 12; k++) {
        const key = new Uint8Array(alg.keyLength).map((_, i) => i * k + id);
        c.rekey(key);
        const nonce = new Uint8Array(alg.nonceLength).fill(k);
        const ad = new Uint8Array(20 + k);
        const pt = new Uint8Array(3 * k).fill(k);
        const a = new Uint8Array(pt.length + 16);
        const b = new Uint8Array(pt.length + 16);
        c.seal(nonce, ad, pt, a, 0);
        alg.newCipher(key).seal(nonce, ad, pt, b, 0);
        assert.deepEqual(a, b);
      }
      assert.throws(() => c.rekey(new Uint8Array(alg.keyLength + 16)), RangeError);
    }
  });
});
