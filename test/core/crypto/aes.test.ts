import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { unsafe } from '@noble/ciphers/aes.js';
import { aesEncryptBlock, aesScheduleWords, expandAesKey } from '../../../src/core/crypto/aes.js';
import { FIPS197_VECTORS } from '../../vectors/fips197.js';
import { fromHex, toHex } from '../../vectors/hex.js';

describe('AES block cipher', () => {
  for (const v of FIPS197_VECTORS) {
    it(`${v.name}: known answer`, () => {
      const xk = expandAesKey(fromHex(v.key));
      assert.equal(toHex(aesEncryptBlock(xk, fromHex(v.plaintext))), v.ciphertext);
    });
  }

  it('key schedule equals noble expandKeyLE and blocks equal noble encryptBlock (random keys, all sizes)', () => {
    for (const len of [16, 24, 32]) {
      for (let i = 0; i < 200; i++) {
        const key = randomBytes(len);
        const xk = expandAesKey(key);
        assert.equal(xk.length, aesScheduleWords(len));
        assert.deepEqual(xk, unsafe.expandKeyLE(key));
        const block = new Uint8Array(randomBytes(16));
        assert.deepEqual(aesEncryptBlock(xk, block), unsafe.encryptBlock(unsafe.expandKeyLE(key), block.slice()));
      }
    }
  });

  it('rejects key lengths other than 16, 24, 32 and mis-sized schedule buffers', () => {
    for (const len of [0, 8, 15, 17, 31, 33, 48, 64]) assert.throws(() => expandAesKey(new Uint8Array(len)), RangeError);
    assert.throws(() => expandAesKey(new Uint8Array(16), new Uint32Array(43)), RangeError);
  });
});
