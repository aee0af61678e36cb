import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { inspect } from 'node:util';
import fc from 'fast-check';
import {
  KEYSET_HEADER_LENGTH,
  KEYSET_RECORD_LENGTH,
  createKeyset,
  crc32,
  decodeKeyset,
  encodeKeyset,
  encodedKeysetLength,
  keysetKeys,
  resizeKeyset,
  rotateKeyset,
  wipeKeyset,
  type Keyset,
} from '../../../src/core/nts/keyset.js';
import { deterministicRandom } from '../ntp/independent-nts-client.js';
import { toHex } from '../../vectors/hex.js';

const T0 = 1_700_000_000;

function rotated(times: number, staleKeyCount = 3, seed = 7): Keyset {
  const rnd = deterministicRandom(seed);
  let ks = createKeyset(T0, rnd, { staleKeyCount });
  for (let i = 1; i <= times; i++) ks = rotateKeyset(ks, T0 + i * 86_400, rnd);
  return ks;
}

describe('keyset (RFC 8915 §6 master keys)', () => {
  it('createKeyset makes a current and a next key with distinct random ids', () => {
    const ks = createKeyset(T0 + 0.9, deterministicRandom(1), { staleKeyCount: 7 });
    assert.notEqual(ks.current.id, ks.next.id);
    assert.equal(ks.current.key.length, 32);
    assert.notDeepEqual(ks.current.key, ks.next.key);
    assert.equal(ks.current.createdAtS, T0);
    assert.equal(ks.currentSinceS, T0);
    assert.deepEqual(ks.stale, []);
    assert.equal(ks.staleKeyCount, 7);
    assert.ok(Object.isFrozen(ks) && Object.isFrozen(ks.current) && Object.isFrozen(ks.stale));
  });

  it('RFC 8915 §6: rotation promotes next, keeps old keys newest-first, drops and wipes the oldest', () => {
    const rnd = deterministicRandom(2);
    let ks = createKeyset(T0, rnd, { staleKeyCount: 2 });
    const seen = [ks.current, ks.next];
    for (let i = 1; i <= 4; i++) {
      const before = ks;
      ks = rotateKeyset(ks, T0 + i * 100, rnd);
      assert.equal(ks.current, before.next, 'next becomes current');
      assert.equal(ks.stale[0], before.current, 'old current is the newest stale key');
      assert.equal(ks.currentSinceS, T0 + i * 100);
      assert.equal(ks.next.createdAtS, T0 + i * 100);
      assert.ok(ks.stale.length <= 2);
      seen.push(ks.next);
    }
    // Generations: seen[0] was current at T0, seen[1] after rotation 1, ... seen[4] after rotation 4.
    assert.deepEqual(ks.stale.map((k) => k.id), [seen[3]!.id, seen[2]!.id]);
    for (const gone of [seen[0]!, seen[1]!]) {
      assert.equal(ks.find(gone.id), undefined);
      assert.ok(gone.key.every((b) => b === 0), 'dropped key wiped');
    }
    const ids = keysetKeys(ks).map((k) => k.id);
    assert.equal(new Set(ids).size, ids.length, 'ids unique');
  });

  it('find reports the generation: 0 current, 1..n stale, -1 next', () => {
    const ks = rotated(3);
    assert.equal(ks.find(ks.current.id)?.age, 0);
    assert.equal(ks.find(ks.next.id)?.age, -1);
    ks.stale.forEach((k, i) => assert.equal(ks.find(k.id)?.age, i + 1));
    assert.equal(ks.find(ks.current.id)?.key, ks.current);
    const unused = [0, 1, 0xffffffff].find((id) => !keysetKeys(ks).some((k) => k.id === id));
    assert.equal(ks.find(unused!), undefined);
  });

  it('a random source that repeats ids is retried, and a stuck one is a loud bug', () => {
    let calls = 0;
    const repeating = (b: Uint8Array): void => {
      calls++;
      // First key: id 1; second key: id 1 again (collision), then 2.
      b.fill(0);
      if (b.length === 4) b[3] = calls < 4 ? 1 : 2;
      else b.fill(calls);
    };
    const ks = createKeyset(T0, repeating, { staleKeyCount: 1 });
    assert.deepEqual([ks.current.id, ks.next.id], [1, 2]);
    assert.throws(() => createKeyset(T0, (b) => b.fill(3), { staleKeyCount: 1 }), /no unused key id/);
  });

  it('resizeKeyset trims and wipes stale keys beyond the new count', () => {
    const ks = rotated(4, 4);
    const dropped = ks.stale.slice(1);
    const small = resizeKeyset(ks, 1);
    assert.equal(small.stale.length, 1);
    assert.equal(small.staleKeyCount, 1);
    for (const k of dropped) assert.ok(k.key.every((b) => b === 0));
  });

  it('refuses bad options (caller bugs)', () => {
    assert.throws(() => createKeyset(T0, deterministicRandom(1), { staleKeyCount: -1 }), RangeError);
    assert.throws(() => createKeyset(T0, deterministicRandom(1), { staleKeyCount: 1.5 }), RangeError);
    assert.throws(() => createKeyset(Number.NaN, deterministicRandom(1), { staleKeyCount: 1 }), RangeError);
  });

  it('key material is redacted in JSON and util.inspect', () => {
    const ks = rotated(1);
    const keyHex = toHex(ks.current.key);
    const json = JSON.stringify({ ks, key: ks.current });
    const shown = inspect({ ks, key: ks.current }, { depth: 5 });
    for (const text of [json, shown]) {
      assert.ok(!text.includes(keyHex.slice(0, 16)), 'no key bytes');
      assert.match(text, /REDACTED/);
    }
    const listed = inspect(ks.current.key);
    assert.match(listed, /Uint8Array/); // the raw buffer itself is not hidden, only the wrappers
  });

  it('CRC-32 matches the IEEE check value', () => {
    assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
    assert.equal(crc32(new Uint8Array(0)), 0);
  });
});

describe('keyset encoding', () => {
  it('has the documented layout: magic, version, counts, records, CRC-32', () => {
    const ks = rotated(2, 3, 9);
    const bytes = encodeKeyset(ks);
    assert.equal(bytes.length, encodedKeysetLength(2));
    assert.equal(bytes.length, KEYSET_HEADER_LENGTH + 4 * KEYSET_RECORD_LENGTH + 4);
    assert.equal(new TextDecoder().decode(bytes.subarray(0, 8)), 'NTSDKEYS');
    assert.equal(toHex(bytes.subarray(8, 16)), '0001' + '0003' + '0004' + '0000');
    const firstId = toHex(bytes.subarray(24, 28));
    assert.equal(firstId, ks.current.id.toString(16).padStart(8, '0'));
    assert.equal(toHex(bytes.subarray(36, 40)), '000f0020'); // AEAD 15, 32-octet key
    assert.deepEqual(bytes.subarray(40, 72), ks.current.key);
  });

  it('decode ∘ encode round-trips (ids, times, keys, order, working ciphers)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 5 }), fc.nat(), (rotations, stale, seed) => {
        const ks = rotated(rotations, stale, seed + 1);
        const r = decodeKeyset(encodeKeyset(ks));
        assert.ok(r.ok);
        const a = keysetKeys(ks);
        const b = keysetKeys(r.keyset);
        assert.deepEqual(
          b.map((k) => [k.id, k.createdAtS, toHex(k.key)]),
          a.map((k) => [k.id, k.createdAtS, toHex(k.key)]),
        );
        assert.equal(r.keyset.staleKeyCount, ks.staleKeyCount);
        assert.equal(r.keyset.currentSinceS, ks.currentSinceS);
        assert.deepEqual(encodeKeyset(r.keyset), encodeKeyset(ks));
        assert.notEqual(b[0]!.key.buffer, a[0]!.key.buffer, 'decoded keys are copies');
      }),
      { numRuns: 100, interruptAfterTimeLimit: 4000 },
    );
  });

  it('every single corrupted octet anywhere is refused (each bit, and random values)', () => {
    const bytes = encodeKeyset(rotated(3, 3));
    for (let i = 0; i < bytes.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = bytes.slice();
        bad[i]! ^= 1 << bit;
        assert.equal(decodeKeyset(bad).ok, false, `offset ${i} bit ${bit}`);
      }
    }
    fc.assert(
      fc.property(fc.nat({ max: bytes.length - 1 }), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const bad = bytes.slice();
        bad[i]! ^= x;
        assert.equal(decodeKeyset(bad).ok, false);
      }),
      { numRuns: 2000 },
    );
  });

  it('truncated, extended, or wrong-version input is refused with a reason', () => {
    const bytes = encodeKeyset(rotated(1));
    for (let n = 0; n < bytes.length; n++) assert.equal(decodeKeyset(bytes.subarray(0, n)).ok, false);
    assert.deepEqual(decodeKeyset(Uint8Array.from([...bytes, 0])), { ok: false, error: 'bad_length' });
    const v2 = bytes.slice();
    v2[9] = 2;
    assert.deepEqual(decodeKeyset(v2), { ok: false, error: 'unsupported_version' });
    const magic = bytes.slice();
    magic[0] = 0x6e;
    assert.deepEqual(decodeKeyset(magic), { ok: false, error: 'bad_magic' });
  });

  it('structurally wrong files with a valid checksum are refused (duplicate id, too many keys)', () => {
    const reseal = (b: Uint8Array): Uint8Array => {
      const end = b.length - 4;
      const c = crc32(b.subarray(0, end));
      b.set([c >>> 24, (c >>> 16) & 0xff, (c >>> 8) & 0xff, c & 0xff], end);
      return b;
    };
    const dup = encodeKeyset(rotated(1));
    dup.copyWithin(24 + KEYSET_RECORD_LENGTH, 24, 28); // next gets current's id
    assert.deepEqual(decodeKeyset(reseal(dup)), { ok: false, error: 'duplicate_key_id' });
    const many = encodeKeyset(rotated(2, 2));
    many[11] = 1; // staleKeyCount 1 but 2 stale keys
    assert.deepEqual(decodeKeyset(reseal(many)), { ok: false, error: 'bad_key_count' });
    const alg = encodeKeyset(rotated(0));
    alg[24 + 13] = 16;
    assert.deepEqual(decodeKeyset(reseal(alg)), { ok: false, error: 'bad_key_algorithm' });
  });

  it('never throws on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (b) => {
        assert.equal(decodeKeyset(b).ok, false);
        const framed = Uint8Array.from([0x4e, 0x54, 0x53, 0x44, 0x4b, 0x45, 0x59, 0x53, 0, 1, ...b]);
        decodeKeyset(framed);
      }),
      { numRuns: 2000, interruptAfterTimeLimit: 3000 },
    );
  });

  it('encoding a retired snapshot (with a wiped key) is refused loudly', () => {
    const rnd = deterministicRandom(5);
    const old = createKeyset(T0, rnd, { staleKeyCount: 0 });
    rotateKeyset(old, T0 + 1, rnd); // drops and wipes old.current
    assert.throws(() => encodeKeyset(old), /wiped/);
  });
});

it('decodeKeyset copies each key, also from a Buffer: wiping the decoded keys leaves the input bytes intact', () => {
  const ks = createKeyset(1_700_000_000, deterministicRandom(3), { staleKeyCount: 2 });
  const encoded = Buffer.from(encodeKeyset(ks));
  const before = Buffer.from(encoded);
  const decoded = decodeKeyset(encoded);
  assert.ok(decoded.ok);
  wipeKeyset(decoded.keyset);
  assert.deepEqual(encoded, before, 'the input Buffer is unchanged');
  assert.ok(decodeKeyset(encoded).ok, 'and still decodes');
});
