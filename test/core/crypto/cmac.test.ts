import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { cmac } from '@noble/ciphers/aes.js';
import { AesCmac, dblWords } from '../../../src/core/crypto/cmac.js';
import { RFC4493_KEY, RFC4493_SUBKEYS, RFC4493_VECTORS } from '../../vectors/rfc4493.js';
import { fromHex, toHex } from '../../vectors/hex.js';

function dblBytes(hex: string): string {
  const b = fromHex(hex);
  const w = new Uint32Array(b.buffer.slice(0));
  dblWords(w);
  return toHex(new Uint8Array(w.buffer));
}

describe('AES-CMAC (RFC 4493)', () => {
  it('RFC 4493 §4 Subkey Generation: K1 = dbl(L), K2 = dbl(K1)', () => {
    // L = AES-128(K, 0^128) = 7df76b0c1ab899b33e42f047b91b546f (RFC 4493 §4).
    assert.equal(dblBytes('7df76b0c1ab899b33e42f047b91b546f'), RFC4493_SUBKEYS.k1);
    assert.equal(dblBytes(RFC4493_SUBKEYS.k1), RFC4493_SUBKEYS.k2);
  });

  for (const v of RFC4493_VECTORS) {
    it(`${v.name}`, () => {
      const mac = new AesCmac(fromHex(RFC4493_KEY));
      assert.equal(toHex(mac.mac(fromHex(v.message))), v.tag);
    });
  }

  it('one keyed instance gives the RFC 4493 §4 answers in any order (no state leaks between messages)', () => {
    const mac = new AesCmac(fromHex(RFC4493_KEY));
    for (const v of [...RFC4493_VECTORS, ...[...RFC4493_VECTORS].reverse()]) {
      assert.equal(toHex(mac.mac(fromHex(v.message))), v.tag);
    }
  });

  it('macInto reads only its window of a larger buffer', () => {
    const mac = new AesCmac(fromHex(RFC4493_KEY));
    const v = RFC4493_VECTORS[2];
    assert.ok(v);
    const msg = fromHex(v.message);
    const big = new Uint8Array(msg.length + 7).fill(0xa5);
    big.set(msg, 3);
    mac.macInto(big, 3, msg.length);
    assert.equal(toHex(new Uint8Array(Uint32Array.from(mac.state).buffer)), v.tag);
  });

  it('matches noble cmac on random keys (16/24/32) and messages 0..100 octets', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(16, 24, 32).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
        fc.uint8Array({ minLength: 0, maxLength: 100 }),
        (key, msg) => {
          assert.equal(toHex(new AesCmac(key).mac(msg)), toHex(cmac(msg, key)));
        },
      ),
      { numRuns: 1500, plugins: [fc.interruptAfterTimeLimit(3000)] },
    );
  });
});
