/**
 * Key file storage (OPERATIONS.md "Key storage"; RFC 8915 §6 key rotation): real files in a temp dir.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino, type Logger } from 'pino';
import { openCookie, sealCookie, cookieLength } from '../../src/core/nts/cookie.js';
import { decodeKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { openKeysetStore, type KeysetRotationResult, type KeysetStoreOptions } from '../../src/keys/store.js';
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
      for (const text of chunk.toString('utf8').split('\n')) {
        if (text.trim() !== '') lines.push(JSON.parse(text) as LogLine);
      }
      cb();
    },
  });
  return { logger: pino({ level: 'trace' }, stream), lines };
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'ntsd-keyset-store-'));
}

const fill = (b: Uint8Array): void => {
  randomFillSync(b);
};

function sealTestCookie(ks: Keyset): Uint8Array {
  const c2s = new Uint8Array(32).fill(0x11);
  const s2c = new Uint8Array(32).fill(0x22);
  const out = new Uint8Array(cookieLength(15));
  sealCookie(ks, 15, c2s, s2c, fill, out, 0);
  return out;
}

function baseOptions(path: string, logger: Logger, extra: Partial<KeysetStoreOptions> = {}): KeysetStoreOptions {
  return { path, rotationIntervalS: 86400, staleKeyCount: 7, logger, ...extra };
}

test('creates a keyset at once: file 0600 in a new 0700 dir; a restart reads the same keys back', async () => {
  const dir = tempDir();
  try {
    const path = join(dir, 'state', 'ntsd.keys');
    const { logger } = captureLogger();
    const published: Uint8Array[] = [];
    const first = await openKeysetStore(baseOptions(path, logger, { onSnapshot: (_ks, b) => published.push(b) }));
    assert.equal(published.length, 1, 'the first snapshot is published on open');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'state')).mode & 0o777, 0o700);
    assert.deepEqual(new Uint8Array(readFileSync(path)), first.bytes);
    const cookie = sealTestCookie(first.keyset);
    await first.close();

    const second = await openKeysetStore(baseOptions(path, logger));
    assert.equal(second.keyset.current.id, first.keyset.current.id);
    const opened = openCookie(second.keyset, cookie);
    assert.ok(opened.ok, 'a cookie sealed before the restart opens after it');
    assert.equal(opened.keyAge, 0);
    assert.deepEqual(opened.c2s, new Uint8Array(32).fill(0x11));
    await second.close();
    // No tmp files are left behind.
    assert.deepEqual(readdirSync(join(dir, 'state')), ['ntsd.keys']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('rotation persists the new snapshot (with its new next key) before publishing it', async () => {
  const dir = tempDir();
  try {
    const path = join(dir, 'ntsd.keys');
    const { logger } = captureLogger();
    const seenOnDisk: boolean[] = [];
    const results: KeysetRotationResult[] = [];
    const store = await openKeysetStore(
      baseOptions(path, logger, {
        onSnapshot: (ks, bytes) => {
          const disk = new Uint8Array(readFileSync(path));
          const decoded = decodeKeyset(disk);
          seenOnDisk.push(decoded.ok && decoded.keyset.next.id === ks.next.id && Buffer.compare(disk, bytes) === 0);
        },
        onRotation: (r) => results.push(r),
      }),
    );
    const before = store.keyset;
    const cookie = sealTestCookie(before);
    const oldNextId = before.next.id;
    assert.equal(await store.rotateNow(), 'success');
    assert.deepEqual(results, ['success']);
    assert.deepEqual(seenOnDisk, [true, true], 'every published snapshot was already on disk');
    assert.equal(store.keyset.current.id, oldNextId, 'the old next key became current');
    assert.notEqual(store.keyset.next.id, oldNextId);
    const opened = openCookie(store.keyset, cookie);
    assert.ok(opened.ok && opened.keyAge === 1, 'a cookie under the previous key opens as age 1');
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a corrupt key file is moved aside with its bytes intact, logged at error level, and replaced', async () => {
  const dir = tempDir();
  try {
    const path = join(dir, 'ntsd.keys');
    const garbage = Buffer.from('NTSDKEYS but not really a keyset file\n');
    writeFileSync(path, garbage, { mode: 0o600 });
    const { logger, lines } = captureLogger();
    const store = await openKeysetStore(baseOptions(path, logger));
    const aside = readdirSync(dir).filter((n) => n.startsWith('ntsd.keys.corrupt-'));
    assert.equal(aside.length, 1, 'exactly one aside file');
    assert.deepEqual(readFileSync(join(dir, aside[0] ?? '')), garbage, 'original bytes preserved');
    assert.ok(decodeKeyset(new Uint8Array(readFileSync(path))).ok, 'a fresh, valid keyset replaced it');
    const errors = lines.filter((l) => l.level >= 50);
    assert.equal(errors.length, 1);
    assert.match(errors[0]?.msg ?? '', /corrupt/);
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a key file readable by group or others is used but warned about', async () => {
  const dir = tempDir();
  try {
    const path = join(dir, 'ntsd.keys');
    const { logger } = captureLogger();
    const first = await openKeysetStore(baseOptions(path, logger));
    await first.close();
    chmodSync(path, 0o644);
    const capture = captureLogger();
    const second = await openKeysetStore(baseOptions(path, capture.logger));
    assert.equal(second.keyset.current.id, first.keyset.current.id);
    const warnings = capture.lines.filter((l) => l.level === 40);
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]?.['mode'], '644');
    await second.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('after downtime of three intervals the store catches up with three rotations on the old schedule', async () => {
  const dir = tempDir();
  try {
    const path = join(dir, 'ntsd.keys');
    const { logger } = captureLogger();
    const t0 = 1_750_000_000;
    const first = await openKeysetStore(baseOptions(path, logger, { nowS: () => t0, rotationIntervalS: 3600 }));
    const cookie = sealTestCookie(first.keyset);
    await first.close();
    const results: KeysetRotationResult[] = [];
    const later = await openKeysetStore(
      baseOptions(path, logger, { nowS: () => t0 + 3 * 3600 + 100, rotationIntervalS: 3600, onRotation: (r) => results.push(r) }),
    );
    assert.deepEqual(results, ['success', 'success', 'success']);
    assert.equal(later.keyset.currentSinceS, t0 + 3 * 3600, 'schedule kept: stamped at the due time');
    assert.equal(later.nextRotationS, t0 + 4 * 3600);
    const opened = openCookie(later.keyset, cookie);
    assert.ok(opened.ok && opened.keyAge === 3);
    const onDisk = decodeKeyset(new Uint8Array(readFileSync(path)));
    assert.ok(onDisk.ok && onDisk.keyset.current.id === later.keyset.current.id, 'catch-up was persisted');
    await later.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the timer rotates when due (interval 1 s)', async () => {
  const dir = tempDir();
  try {
    const path = join(dir, 'ntsd.keys');
    const { logger } = captureLogger();
    let resolve: (r: KeysetRotationResult) => void = () => undefined;
    const rotated = new Promise<KeysetRotationResult>((r) => {
      resolve = r;
    });
    const store = await openKeysetStore(baseOptions(path, logger, { rotationIntervalS: 1, onRotation: (r) => resolve(r) }));
    const firstId = store.keyset.current.id;
    store.start();
    // The timer is unref'd; keep the loop alive while waiting.
    const guard = setTimeout(() => undefined, 3000);
    const result = await rotated;
    clearTimeout(guard);
    assert.equal(result, 'success');
    assert.notEqual(store.keyset.current.id, firstId);
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a failed persist keeps the published keyset and is reported', async () => {
  const dir = tempDir();
  try {
    const path = join(dir, 'sub', 'ntsd.keys');
    const { logger } = captureLogger();
    const failures: unknown[] = [];
    const results: KeysetRotationResult[] = [];
    const store = await openKeysetStore(
      baseOptions(path, logger, { onPersistFailure: (e) => failures.push(e), onRotation: (r) => results.push(r) }),
    );
    const before = store.keyset;
    const cookie = sealTestCookie(before);
    // Replace the directory by a plain file: every write into it now fails (ENOTDIR), even for root.
    rmSync(join(dir, 'sub'), { recursive: true });
    writeFileSync(join(dir, 'sub'), 'not a directory');
    assert.equal(await store.rotateNow(), 'failure');
    assert.deepEqual(results, ['failure']);
    assert.equal(store.keyset, before, 'not published');
    assert.ok(openCookie(store.keyset, cookie).ok, 'the kept keyset is intact (rotation worked on a copy)');
    await assert.rejects(store.persist(), (e: unknown) => e instanceof NtsdError && e.code === 'KEYSET_PERSIST_FAILED');
    assert.equal(failures.length, 2);
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a key file the daemon may not read refuses to start with KEYSET_UNREADABLE', async () => {
  const dir = tempDir();
  try {
    chmodSync(dir, 0o755);
    const path = join(dir, 'ntsd.keys');
    const { logger } = captureLogger();
    const store = await openKeysetStore(baseOptions(path, logger));
    await store.close();
    if (process.getuid?.() !== 0) {
      // Not root: removing our own read permission is enough.
      chmodSync(path, 0o000);
      await assert.rejects(
        openKeysetStore(baseOptions(path, logger)),
        (e: unknown) => e instanceof NtsdError && e.code === 'KEYSET_UNREADABLE',
      );
      return;
    }
    // Root reads everything: run the store in a child as "nobody", which cannot read the root-owned 0600 file.
    // The compiled sources are copied into the (0755) temp dir first, so the child can load them even when
    // the checkout sits under a directory "nobody" may not enter (e.g. /root).
    const srcCopy = join(dir, 'src');
    cpSync(fileURLToPath(new URL('../../src/', import.meta.url)), srcCopy, { recursive: true });
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
    const moduleUrl = pathToFileURL(join(srcCopy, 'keys', 'store.js')).href;
    const script = `
      import { openKeysetStore } from ${JSON.stringify(moduleUrl)};
      const logger = { warn() {}, error() {}, info() {} };
      try { await openKeysetStore({ path: ${JSON.stringify(path)}, rotationIntervalS: 86400, staleKeyCount: 7, logger }); console.log('OPENED'); }
      catch (e) { console.log(e.name + ':' + e.code); }
    `;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      uid: 65534,
      gid: 65534,
      encoding: 'utf8',
      cwd: dir,
    });
    assert.equal(child.error, undefined, `could not run ${process.execPath} as uid 65534: ${String(child.error)}`);
    assert.equal(child.stdout.trim(), 'NtsdError:KEYSET_UNREADABLE', child.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tmp files of a key file write interrupted by a crash are removed on open, with a warning', async () => {
  const dir = tempDir();
  try {
    const path = join(dir, 'ntsd.keys');
    const { logger } = captureLogger();
    const first = await openKeysetStore(baseOptions(path, logger));
    const id = first.keyset.current.id;
    await first.close();
    // What a SIGKILL between creating the tmp file and the rename leaves: a partial file named for a dead pid.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid ?? 0;
    const leftover = `.ntsd.keys.tmp-${dead}-00ff00ff00ff`;
    writeFileSync(join(dir, leftover), Buffer.from('NTSDKEYS partial'), { mode: 0o600 });
    const { logger: logger2, lines } = captureLogger();
    const second = await openKeysetStore(baseOptions(path, logger2));
    assert.equal(second.keyset.current.id, id, 'the key file itself is loaded as it was');
    assert.deepEqual(readdirSync(dir), ['ntsd.keys']);
    const warning = lines.find((l) => l.level === 40 && /interrupted by a crash/.test(l.msg));
    assert.ok(warning !== undefined, 'the removal is logged');
    assert.deepEqual(warning['removed'], [leftover]);
    await second.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
