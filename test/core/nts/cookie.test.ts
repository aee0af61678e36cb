import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { aessiv } from '@noble/ciphers/aes.js';
import {
  CookieStatus,
  cookieLength,
  createCookieOpenScratch,
  openCookie,
  openCookieInto,
  sealCookie,
} from '../../../src/core/nts/cookie.js';
import { createKeyset, rotateKeyset, type Keyset } from '../../../src/core/nts/keyset.js';
import { counting, deterministicRandom } from '../ntp/independent-nts-client.js';
import { toHex } from '../../vectors/hex.js';

const T0 = 1_700_000_000;
const KEY_LENGTHS: Record<number, number> = { 15: 32, 16: 48, 17: 64, 30: 16 };

function seal(ks: Keyset, aeadId: number, c2s: Uint8Array, s2c: Uint8Array, seed = 3): Uint8Array {
  const out = new Uint8Array(cookieLength(aeadId));
  assert.equal(sealCookie(ks, aeadId, c2s, s2c, deterministicRandom(seed), out, 0), out.length);
  return out;
}

describe('NTS cookies (RFC 8915 §6)', () => {
  it('lengths are 36 + 2k and multiples of 4: 100 (15), 132 (16), 164 (17), 68 (30)', () => {
    assert.deepEqual([15, 16, 17, 30].map(cookieLength), [100, 132, 164, 68]);
    assert.throws(() => cookieLength(99), RangeError);
  });

  it('seal then open returns the AEAD id and keys, for every AEAD', () => {
    const ks = createKeyset(T0, deterministicRandom(1), { staleKeyCount: 2 });
    for (const [id, k] of Object.entries(KEY_LENGTHS)) {
      const aeadId = Number(id);
      const c2s = counting(k, 1);
      const s2c = counting(k, 101);
      const r = openCookie(ks, seal(ks, aeadId, c2s, s2c));
      assert.ok(r.ok, `aead ${aeadId}`);
      assert.equal(r.aeadId, aeadId);
      assert.deepEqual(r.c2s, c2s);
      assert.deepEqual(r.s2c, s2c);
      assert.equal(r.keyAge, 0);
    }
  });

  it('RFC 8915 §6: the documented layout — key id, 12-octet nonce, AES-SIV over (version, reserved, aeadId, C2S, S2C) with the key id as AD', () => {
    const ks = createKeyset(T0, deterministicRandom(11), { staleKeyCount: 1 });
    const c2s = counting(32, 0);
    const s2c = counting(32, 0x80);
    const cookie = seal(ks, 15, c2s, s2c, 42);
    assert.equal(cookie.length, 100);
    assert.equal(toHex(cookie.subarray(0, 4)), ks.current.id.toString(16).padStart(8, '0'));
    // Independent check with noble's AES-SIV directly (RFC 5297: S2V over AD, then nonce).
    const plain = aessiv(ks.current.key, cookie.subarray(0, 4), cookie.subarray(4, 16)).decrypt(cookie.subarray(16));
    assert.equal(toHex(plain.subarray(0, 4)), '0100000f');
    assert.deepEqual(plain.subarray(4, 36), c2s);
    assert.deepEqual(plain.subarray(36, 68), s2c);
    // Pinned bytes (deterministic keyset and nonce): a change in the format shows here.
    assert.equal(toHex(cookie), PINNED_COOKIE);
  });

  it('cookies sealed under any key the keyset holds open, reporting its generation', () => {
    const rnd = deterministicRandom(4);
    let ks = createKeyset(T0, rnd, { staleKeyCount: 3 });
    const c2s = counting(32, 9);
    const s2c = counting(32, 77);
    const cookies: Uint8Array[] = [];
    for (let i = 0; i < 4; i++) {
      cookies.push(seal(ks, 15, c2s, s2c, i + 1));
      ks = rotateKeyset(ks, T0 + (i + 1) * 3600, rnd);
    }
    // cookies[3] was sealed under the now-stale-1 key, cookies[0] under stale-4 (dropped: 3 kept).
    assert.deepEqual(
      cookies.map((c) => {
        const r = openCookie(ks, c);
        return r.ok ? r.keyAge : r.error;
      }),
      ['unknown_key', 3, 2, 1],
    );
    // A peer that rotated first seals under our `next`: accepted, age -1 (RFC 8915 §6 key sync).
    const ahead = rotateKeyset(ks, T0 + 99_999, deterministicRandom(8));
    const r = openCookie(ks, seal(ahead, 15, c2s, s2c));
    assert.ok(r.ok);
    assert.equal(r.keyAge, -1);
  });

  it('opening is a value: malformed lengths, unknown key, bad tag', () => {
    const ks = createKeyset(T0, deterministicRandom(6), { staleKeyCount: 1 });
    const good = seal(ks, 15, counting(32), counting(32, 50));
    for (const n of [0, 4, 36, 37, 99, 101, 166, 200]) {
      const c = new Uint8Array(n);
      c.set(good.subarray(0, Math.min(n, good.length)));
      assert.deepEqual(openCookie(ks, c), { ok: false, error: 'malformed' }, `length ${n}`);
    }
    const otherKey = good.slice();
    otherKey[0]! ^= 0xff;
    assert.deepEqual(openCookie(ks, otherKey), { ok: false, error: 'unknown_key' });
    const tag = good.slice();
    tag[20]! ^= 1;
    assert.deepEqual(openCookie(ks, tag), { ok: false, error: 'decrypt_failed' });
    const padded = Uint8Array.from([...good, 0, 0, 0, 0]);
    assert.equal(openCookie(ks, padded).ok, false);
  });

  it('a flipped bit never opens', () => {
    const rnd = deterministicRandom(12);
    let ks = createKeyset(T0, rnd, { staleKeyCount: 2 });
    ks = rotateKeyset(ks, T0 + 1, rnd);
    const scratch = createCookieOpenScratch();
    fc.assert(
      fc.property(
        fc.constantFrom(15, 16, 17, 30),
        fc.nat(),
        fc.nat(),
        fc.integer({ min: 0, max: 7 }),
        (aeadId, seed, pos, bit) => {
          const k = KEY_LENGTHS[aeadId]!;
          const c = seal(ks, aeadId, counting(k, seed & 0xff), counting(k, seed >>> 8), seed);
          assert.equal(openCookieInto(ks, c, scratch), CookieStatus.ok);
          c[pos % c.length]! ^= 1 << bit;
          assert.notEqual(openCookieInto(ks, c, scratch), CookieStatus.ok);
        },
      ),
      { numRuns: 1500, interruptAfterTimeLimit: 5000 },
    );
  });

  it('never throws on random bytes', () => {
    const ks = createKeyset(T0, deterministicRandom(13), { staleKeyCount: 1 });
    const id = ks.current.id;
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (b, known) => {
        if (known && b.length >= 4) b.set([id >>> 24, (id >>> 16) & 0xff, (id >>> 8) & 0xff, id & 0xff]);
        assert.equal(openCookie(ks, b).ok, false);
      }),
      { numRuns: 2000, interruptAfterTimeLimit: 4000 },
    );
  });

  it('sealing refuses caller bugs: wrong key lengths, unknown AEAD, no room', () => {
    const ks = createKeyset(T0, deterministicRandom(14), { staleKeyCount: 1 });
    const rnd = deterministicRandom(1);
    assert.throws(() => sealCookie(ks, 15, new Uint8Array(16), new Uint8Array(32), rnd, new Uint8Array(100), 0), RangeError);
    assert.throws(() => sealCookie(ks, 99, new Uint8Array(32), new Uint8Array(32), rnd, new Uint8Array(100), 0), RangeError);
    assert.throws(() => sealCookie(ks, 15, new Uint8Array(32), new Uint8Array(32), rnd, new Uint8Array(100), 4), RangeError);
  });
});

/** Cookie v1 for AEAD 15 from deterministicRandom(11) keys and deterministicRandom(42) nonce: id | nonce | SIV tag | ciphertext. */
const PINNED_COOKIE =
  '6b0b6e33' +
  '28ac03c0c4b6d8ae9337da33' +
  'b4eccc2db90eaad25fe73a649de61ef6' +
  '07cbd713bf2e91367365022acbad89fbc0e2981f947cd944bccec5b40841021cf568627853f65f366e0a26e63f9ede98e7971769e964198209c115df3a6d7a5d97f15715';
