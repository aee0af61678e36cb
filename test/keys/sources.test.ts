/**
 * `[keyset] mode = "follow"` and `mode = "ratchet"` (src/keys/store.ts): real files in a temp dir.
 * Follow: a newer file is swapped in, a corrupt, older or conflicting one is refused once and the old keys
 * keep serving, and the follower never writes. Ratchet: the seed is checked (naming the TOML key), the
 * store's keyset is the pure derivation's, and it moves at the epoch boundary.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { randomFillSync } from 'node:crypto';
import { pino, type Logger } from 'pino';
import { createKeyset, encodeKeyset, keysetKeys, rotateKeyset } from '../../src/core/nts/keyset.js';
import { ratchetKeyset, ratchetSeedTag } from '../../src/core/nts/ratchet.js';
import { openFollowKeysetStore, openRatchetKeysetStore } from '../../src/keys/sources.js';

type KeysetRotationResult = 'success' | 'failure';
import { NtsdError } from '../../src/errors.js';

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [k: string]: unknown;
}

function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const text of chunk.toString('utf8').split('\n')) if (text.trim() !== '') lines.push(JSON.parse(text) as LogLine);
      cb();
    },
  });
  return { logger: pino({ level: 'trace' }, stream), lines };
}

const fill = (b: Uint8Array): void => {
  randomFillSync(b);
};

function withDir(): { dir: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-keyset-modes-'));
  return { dir, done: () => rmSync(dir, { recursive: true, force: true }) };
}

test('follow: refuses to start without a valid file, naming keyset.key-storage-path', async () => {
  const { dir, done } = withDir();
  try {
    const { logger } = captureLogger();
    const path = join(dir, 'keyset');
    await assert.rejects(openFollowKeysetStore({ path, pollIntervalS: 1, rotationIntervalS: 60, logger }), (e: unknown) => {
      assert.ok(e instanceof NtsdError && e.code === 'KEYSET_UNREADABLE' && e.message.startsWith('keyset.key-storage-path:'), String(e));
      return true;
    });
    writeFileSync(path, 'not a keyset', { mode: 0o600 });
    await assert.rejects(openFollowKeysetStore({ path, pollIntervalS: 1, rotationIntervalS: 60, logger }), /not a valid keyset \(too_short\)/);
  } finally {
    done();
  }
});

test('follow: a newer file swaps in; corrupt, older and conflicting files are refused once; never writes', async () => {
  const { dir, done } = withDir();
  try {
    const { logger, lines } = captureLogger();
    const path = join(dir, 'keyset');
    const t0 = Math.floor(Date.now() / 1000);
    const writerV1 = createKeyset(t0, fill, { staleKeyCount: 2 });
    const v1 = encodeKeyset(writerV1);
    writeFileSync(path, v1, { mode: 0o600 });
    const v1Ids = keysetKeys(writerV1).map((k) => k.id);
    const snapshots: number[] = [];
    const results: KeysetRotationResult[] = [];
    const store = await openFollowKeysetStore({
      path,
      pollIntervalS: 3600,
      rotationIntervalS: 3600,
      logger,
      onSnapshot: (ks) => snapshots.push(ks.current.id),
      onRotation: (r) => results.push(r),
    });
    assert.deepEqual(keysetKeys(store.keyset).map((k) => k.id), v1Ids);
    assert.deepEqual(snapshots, [writerV1.current.id]);

    // The writer rotates: its old next key becomes current.
    const writerV2 = rotateKeyset(createKeysetCopy(v1), t0 + 3600, fill);
    const v2 = encodeKeyset(writerV2);
    writeFileSync(path, v2);
    await store.reload();
    assert.equal(store.keyset.current.id, v1Ids[1]);
    assert.deepEqual(results, ['success']);

    // Corrupt: refused, counted and logged once however often it is seen.
    const corrupt = v2.slice();
    corrupt[40] = (corrupt[40] ?? 0) ^ 0xff;
    writeFileSync(path, corrupt);
    await store.reload();
    await store.reload();
    assert.equal(store.keyset.current.id, v1Ids[1], 'old keys keep serving');
    assert.deepEqual(results, ['success', 'failure']);
    assert.equal(lines.filter((l) => l.reason === 'corrupt').length, 1);

    // Older: the v1 file again.
    writeFileSync(path, v1);
    await store.reload();
    assert.equal(store.keyset.current.id, v1Ids[1]);
    assert.equal(lines.filter((l) => l.reason === 'older').length, 1);

    // Conflicting: the same time, another current key (a second writer).
    const other = createKeyset(t0 + 3600, fill, { staleKeyCount: 2 });
    writeFileSync(path, encodeKeyset(other));
    await store.reload();
    assert.equal(lines.filter((l) => l.reason === 'conflicting').length, 1);
    assert.equal(store.keyset.current.id, v1Ids[1]);

    // Gone: refused; then the good file comes back and nothing changes (same bytes as published).
    rmSync(path);
    await store.reload();
    assert.equal(lines.filter((l) => l.reason === 'unreadable').length, 1);
    writeFileSync(path, v2, { mode: 0o600 });
    const before = statSync(path).mtimeMs;
    await store.reload();
    assert.deepEqual(results, ['success', 'failure', 'failure', 'failure', 'failure']);
    await store.persist();
    await store.close();
    assert.equal(statSync(path).mtimeMs, before, 'a follower never writes the file');
    assert.deepEqual(readdirSync(dir), ['keyset'], 'no temporary or moved-aside files');
    assert.deepEqual(readFileSync(path), Buffer.from(v2));
    assert.ok(lines.every((l) => !JSON.stringify(l).includes(Buffer.from(writerV2.current.key).toString('hex'))), 'no key bytes in logs');
  } finally {
    done();
  }
});

test('follow: the poll timer picks up a new file by itself', async () => {
  const { dir, done } = withDir();
  try {
    const { logger } = captureLogger();
    const path = join(dir, 'keyset');
    const t0 = Math.floor(Date.now() / 1000);
    const v1 = encodeKeyset(createKeyset(t0, fill, { staleKeyCount: 1 }));
    writeFileSync(path, v1, { mode: 0o600 });
    const store = await openFollowKeysetStore({ path, pollIntervalS: 1, rotationIntervalS: 60, logger });
    store.start();
    const next = rotateKeyset(createKeysetCopy(v1), t0 + 60, fill);
    writeFileSync(path, encodeKeyset(next));
    const deadline = Date.now() + 10_000;
    while (store.keyset.current.id !== next.current.id && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal(store.keyset.current.id, next.current.id);
    await store.close();
  } finally {
    done();
  }
});

function createKeysetCopy(bytes: Uint8Array): ReturnType<typeof createKeyset> {
  // decode through the follower-independent path: the writer's own copy of its snapshot
  return decodeOrThrow(bytes);
}

import { decodeKeyset } from '../../src/core/nts/keyset.js';
function decodeOrThrow(bytes: Uint8Array): ReturnType<typeof createKeyset> {
  const d = decodeKeyset(bytes);
  if (!d.ok) throw new Error(d.error);
  return d.keyset;
}

test('ratchet: seed file problems name the TOML key; a group-readable seed is warned about', async () => {
  const { dir, done } = withDir();
  try {
    const { logger, lines } = captureLogger();
    const seedPath = join(dir, 'seed');
    const open = (): Promise<unknown> => openRatchetKeysetStore({ seedPath, rotationIntervalS: 60, staleKeyCount: 1, logger });
    await assert.rejects(open(), /^NtsdError: keyset\.shared-secret-path: the seed file .* does not exist/);
    writeFileSync(seedPath, new Uint8Array(31), { mode: 0o600 });
    await assert.rejects(open(), /keyset\.shared-secret-path: the seed file .* holds 31 octets; it must hold 32 to 4096/);
    writeFileSync(seedPath, Uint8Array.from({ length: 32 }, (_, i) => i));
    chmodSync(seedPath, 0o640);
    const store = (await open()) as Awaited<ReturnType<typeof openRatchetKeysetStore>>;
    assert.ok(lines.some((l) => l.level === 40 && /readable or writable by group or others/.test(l.msg)));
    await store.close();
    // A second seed with the same tag as the first is refused at start.
    const acceptSeedPath = join(dir, 'accept');
    const tag = ratchetSeedTag(Uint8Array.from({ length: 32 }, (_, i) => i));
    let same: Uint8Array | undefined;
    for (let i = 1; same === undefined; i++) {
      const c = new Uint8Array(32);
      new DataView(c.buffer).setUint32(0, i);
      if (ratchetSeedTag(c) === tag) same = c;
    }
    writeFileSync(acceptSeedPath, same, { mode: 0o600 });
    await assert.rejects(
      openRatchetKeysetStore({ seedPath, acceptSeedPath, rotationIntervalS: 60, staleKeyCount: 1, logger }),
      /keyset\.accept-shared-secret-path: .*same key-id tag/,
    );
  } finally {
    done();
  }
});

test('ratchet: the store publishes the pure derivation and moves at the epoch boundary, wiping what left', async () => {
  const { dir, done } = withDir();
  try {
    const { logger } = captureLogger();
    const seedPath = join(dir, 'seed');
    const seed = Uint8Array.from({ length: 32 }, (_, i) => 0xa0 ^ i);
    writeFileSync(seedPath, seed, { mode: 0o600 });
    let now = 1_800_000_000 + 59.5;
    const results: KeysetRotationResult[] = [];
    const published: string[] = [];
    const store = await openRatchetKeysetStore({
      seedPath,
      rotationIntervalS: 60,
      staleKeyCount: 2,
      logger,
      nowS: () => now,
      onSnapshot: (ks) => published.push(ks.current.id.toString(16)),
      onRotation: (r) => results.push(r),
    });
    const expected = ratchetKeyset({ seed, intervalS: 60, staleKeyCount: 2, nowS: now });
    assert.deepEqual(keysetKeys(store.keyset).map((k) => Buffer.from(k.key).toString('hex')), keysetKeys(expected).map((k) => Buffer.from(k.key).toString('hex')));
    const first = store.keyset;
    const oldest = first.stale[first.stale.length - 1];
    assert.ok(oldest !== undefined);
    assert.equal(store.nextRotationS, 1_800_000_040 + 20);
    await store.reload(); // same epoch: nothing changes
    assert.equal(store.keyset, first);
    now += 1;
    await store.reload();
    assert.equal(store.keyset.current.id, first.next.id);
    assert.deepEqual(results, ['success']);
    assert.equal(published.length, 2);
    assert.ok(oldest.key.every((b) => b === 0), 'the key that left the window was wiped');
    await store.close();
  } finally {
    done();
  }
});

test('ratchet: the boundary timer advances a store on the real clock', { timeout: 30_000 }, async () => {
  const { dir, done } = withDir();
  try {
    const { logger } = captureLogger();
    const seedPath = join(dir, 'seed');
    writeFileSync(seedPath, Uint8Array.from({ length: 32 }, (_, i) => i * 5), { mode: 0o600 });
    // A clock 58.5 s into its epoch that runs at real speed: the boundary comes in 1.5 s.
    const offsetS = 1_800_000_058.5 - Date.now() / 1000;
    const store = await openRatchetKeysetStore({ seedPath, rotationIntervalS: 60, staleKeyCount: 1, logger, nowS: () => Date.now() / 1000 + offsetS });
    const startId = store.keyset.current.id;
    store.start();
    const deadline = Date.now() + 15_000;
    while (store.keyset.current.id === startId && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal(store.keyset.current.id, (startId + 1) >>> 0);
    await store.close();
  } finally {
    done();
  }
});
