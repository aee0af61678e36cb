/**
 * The master-key ratchet (src/core/nts/ratchet.ts). The pinned vectors below were computed once by this
 * implementation and are re-derived here by an independent HKDF (node:crypto) from the written definition,
 * so the documentation, the vectors and the code cannot drift apart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hkdfSync } from 'node:crypto';
import {
  deriveRatchetKeys,
  ratchetAnchor,
  ratchetEpoch,
  ratchetKeyId,
  ratchetKeyset,
  ratchetSeedTag,
  checkRatchetSeed,
  RATCHET_SEGMENT_EPOCHS,
} from '../../../src/core/nts/ratchet.js';
import { decodeKeyset, encodeKeyset, keysetKeys } from '../../../src/core/nts/keyset.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/** Seed of the vectors: octets 0x00, 0x01, …, 0x1f. */
const SEED = Uint8Array.from({ length: 32 }, (_, i) => i);
const INTERVAL_S = 3600;

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

/** The definition in docs/fleet.md, written again with node:crypto. */
function independentKey(seed: Uint8Array, intervalS: number, epoch: number): Uint8Array {
  const tag = Buffer.from(hkdfSync('sha256', seed, Buffer.alloc(0), 'ntsd-ratchet-v1 tag', 1))[0] ?? 0;
  const id = (n: number): number => ((tag << 24) | (n & 0xffffff)) >>> 0;
  const segment = Math.floor(epoch / 1024);
  let key = Buffer.from(hkdfSync('sha256', seed, u32(segment), Buffer.concat([Buffer.from('ntsd-ratchet-v1 anchor'), u32(intervalS)]), 32));
  for (let n = segment * 1024; n <= epoch; n++) key = Buffer.from(hkdfSync('sha256', key, u32(id(n)), 'ntsd-ratchet-v1 key', 32));
  return new Uint8Array(key);
}

test('ratchet test vectors (seed 00..1f, interval 3600 s) are pinned', () => {
  assert.equal(ratchetSeedTag(SEED), 0xcf);
  assert.equal(hex(ratchetAnchor(SEED, 0, INTERVAL_S)), '04e51466bdea93e55d5ee118057029ae93a0680938d1d3ef4c76c1cc72b4b514');
  const first = deriveRatchetKeys(SEED, INTERVAL_S, 0, 1);
  assert.deepEqual(
    first.map((k) => [k.epoch, k.id.toString(16), hex(k.key)]),
    [
      [0, 'cf000000', '51baa76b65eff476cfd1de3f8f999f478aafb73b7af272a261f1f998def18e49'],
      [1, 'cf000001', '79ae6d8484e0a3bf94e74f9e605ce7e3aab014323466fa04e4c21645c8a75c19'],
    ],
  );
  // 2027-01-15T08:00:00Z = 1800000000 s: epoch 500000, segment 488.
  const n = ratchetEpoch(1_800_000_000, INTERVAL_S);
  assert.equal(n, 500_000);
  assert.deepEqual(
    deriveRatchetKeys(SEED, INTERVAL_S, n - 1, n + 1).map((k) => [k.epoch, k.id.toString(16), hex(k.key)]),
    [
      [499_999, 'cf07a11f', 'c60e6345eff56c1ae810139d6b6dc3c10a0018e3d7e9294e12c2d15ef7c2d1e0'],
      [500_000, 'cf07a120', 'd8542ef7942d3b3e56dc6acfee605f7b9e4bf06e3d383ab4207431c5c3060dcc'],
      [500_001, 'cf07a121', 'ca767563c1c54e0c8b913fa44072acf9ceae4f1e51cec246dab479040dc81075'],
    ],
  );
});

test('the derivation matches its written definition (independent HKDF), across a segment boundary', () => {
  const boundary = 5 * RATCHET_SEGMENT_EPOCHS;
  const keys = deriveRatchetKeys(SEED, 60, boundary - 3, boundary + 2);
  assert.deepEqual(keys.map((k) => k.epoch), [boundary - 3, boundary - 2, boundary - 1, boundary, boundary + 1, boundary + 2]);
  for (const k of keys) {
    assert.deepEqual(k.key, independentKey(SEED, 60, k.epoch), `epoch ${k.epoch}`);
    assert.equal(k.id, ratchetKeyId(0xcf, k.epoch));
    assert.equal(k.createdAtS, k.epoch * 60);
  }
  assert.deepEqual(deriveRatchetKeys(SEED, INTERVAL_S, 500_000, 500_000)[0]?.key, independentKey(SEED, INTERVAL_S, 500_000));
});

test('a late-starting node derives the same keyset as one that has run all along', () => {
  const nowS = 1_800_000_000 + 1234;
  const early = ratchetKeyset({ seed: SEED, intervalS: INTERVAL_S, staleKeyCount: 3, nowS: nowS - INTERVAL_S });
  const late = ratchetKeyset({ seed: SEED, intervalS: INTERVAL_S, staleKeyCount: 3, nowS });
  // The early node's next key is the late node's current key; its current is the late node's newest stale key.
  assert.deepEqual(late.current.key, early.next.key);
  assert.equal(late.current.id, early.next.id);
  assert.deepEqual(late.stale[0]?.key, early.current.key);
  assert.equal(late.currentSinceS, 500_000 * INTERVAL_S);
  assert.deepEqual(keysetKeys(late).map((k) => k.id & 0xffffff), [500_000, 500_001, 499_999, 499_998, 499_997]);
  // The snapshot survives the binary encoding the pool and KE thread receive.
  const decoded = decodeKeyset(encodeKeyset(late));
  assert.ok(decoded.ok);
  assert.deepEqual(keysetKeys(decoded.keyset).map((k) => hex(k.key)), keysetKeys(late).map((k) => hex(k.key)));
});

test('clocks off by less than one interval still share a key; near epoch 0 fewer stale keys exist', () => {
  const t = 1_800_000_000;
  const behind = ratchetKeyset({ seed: SEED, intervalS: 60, staleKeyCount: 1, nowS: t - 59 });
  const ahead = ratchetKeyset({ seed: SEED, intervalS: 60, staleKeyCount: 1, nowS: t + 30 });
  // ahead seals with its current key; behind accepts it as its next key, and the reverse as a stale key.
  assert.equal(behind.find(ahead.current.id)?.age, -1);
  assert.equal(ahead.find(behind.current.id)?.age, 1);
  const start = ratchetKeyset({ seed: SEED, intervalS: 60, staleKeyCount: 5, nowS: 61 });
  assert.deepEqual(keysetKeys(start).map((k) => k.id & 0xffffff), [1, 2, 0]);
});

test('an accepted second seed adds its keys as stale (never sealing); equal tags are refused', () => {
  const other = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
  assert.notEqual(ratchetSeedTag(other), ratchetSeedTag(SEED));
  const ks = ratchetKeyset({ seed: SEED, acceptSeed: other, intervalS: 60, staleKeyCount: 2, nowS: 1_800_000_000 });
  const alone = ratchetKeyset({ seed: other, intervalS: 60, staleKeyCount: 2, nowS: 1_800_000_000 });
  assert.equal(ks.current.id >>> 24, ratchetSeedTag(SEED));
  for (const k of keysetKeys(alone)) assert.ok((ks.find(k.id)?.age ?? 0) > 2, `other seed's key ${k.id.toString(16)} accepted as stale`);
  assert.equal(keysetKeys(ks).length, 8);
  let sameTag: Uint8Array | undefined;
  for (let i = 0; sameTag === undefined; i++) {
    const candidate = new Uint8Array(32);
    new DataView(candidate.buffer).setUint32(0, i + 1);
    if (ratchetSeedTag(candidate) === ratchetSeedTag(SEED) && hex(candidate) !== hex(SEED)) sameTag = candidate;
  }
  assert.throws(() => ratchetKeyset({ seed: SEED, acceptSeed: sameTag, intervalS: 60, staleKeyCount: 2, nowS: 1e9 }), /same key-id tag/);
});

test('another seed gives other keys under the same ids; seeds shorter than 32 octets are refused', () => {
  const other = Uint8Array.from({ length: 32 }, (_, i) => i ^ 0x55);
  const a = deriveRatchetKeys(SEED, 60, 100, 100)[0];
  const b = deriveRatchetKeys(other, 60, 100, 100)[0];
  assert.notEqual(hex(a?.key ?? new Uint8Array()), hex(b?.key ?? new Uint8Array()));
  // Another interval: other keys too.
  assert.notEqual(hex(deriveRatchetKeys(SEED, 120, 100, 100)[0]?.key ?? new Uint8Array()), hex(a?.key ?? new Uint8Array()));
  assert.equal(checkRatchetSeed(new Uint8Array(31)), 'seed_too_short');
  assert.equal(checkRatchetSeed(new Uint8Array(32)), undefined);
  assert.equal(checkRatchetSeed(new Uint8Array(4097)), 'seed_too_long');
});

test('deriving today at the shortest interval costs at most one segment walk (bounded time)', () => {
  const n = ratchetEpoch(Date.now() / 1000, 60);
  const started = performance.now();
  const keys = deriveRatchetKeys(SEED, 60, n - 1000, n + 1);
  const elapsedMs = performance.now() - started;
  assert.equal(keys.length, 1002);
  // ≤ 2 segments · 1024 steps; generous for a loaded 2-core machine (≈ 25 ms when idle).
  assert.ok(elapsedMs < 5000, `took ${elapsedMs} ms`);
});
