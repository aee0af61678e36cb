import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hkdfSync } from 'node:crypto';
import { hkdfSha256 } from '../../../src/core/crypto/hkdf.js';

const hex = (text: string): Uint8Array => Uint8Array.from(Buffer.from(text.replace(/\s+/g, ''), 'hex'));

test('RFC 5869 A.1: HKDF-SHA-256 basic test case', () => {
  const okm = hkdfSha256(hex('0b'.repeat(22)), hex('000102030405060708090a0b0c'), hex('f0f1f2f3f4f5f6f7f8f9'), 42);
  assert.equal(
    Buffer.from(okm).toString('hex'),
    '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
  );
});

test('hkdfSha256 agrees with node:crypto hkdfSync on random inputs; refuses bad lengths', () => {
  for (let i = 0; i < 50; i++) {
    const ikm = Uint8Array.from({ length: 1 + ((i * 7) % 64) }, (_, j) => (j * 31 + i) & 0xff);
    const salt = Uint8Array.from({ length: i % 9 }, (_, j) => (j + i) & 0xff);
    const info = Uint8Array.from({ length: i % 17 }, (_, j) => (j * 3) & 0xff);
    const length = 1 + ((i * 13) % 80);
    assert.deepEqual(hkdfSha256(ikm, salt, info, length), new Uint8Array(hkdfSync('sha256', ikm, salt, info, length)));
  }
  assert.throws(() => hkdfSha256(new Uint8Array(32), new Uint8Array(0), new Uint8Array(0), 0), RangeError);
  assert.throws(() => hkdfSha256(new Uint8Array(32), new Uint8Array(0), new Uint8Array(0), 255 * 32 + 1), RangeError);
});
