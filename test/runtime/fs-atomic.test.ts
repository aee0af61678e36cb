/** src/runtime/fs-atomic.ts: both forms write the whole content with the exact mode, replace atomically, leave no tmp file. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { removeAbandonedTmpFiles, writeFileAtomic, writeFileAtomicSync } from '../../src/runtime/fs-atomic.js';

function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-fs-atomic-'));
  return Promise.resolve(fn(dir)).finally(() => rmSync(dir, { recursive: true, force: true }));
}

const forms = [
  ['writeFileAtomic', (p: string, d: Uint8Array | string, m?: number) => writeFileAtomic(p, d, m)],
  ['writeFileAtomicSync', async (p: string, d: Uint8Array | string, m?: number) => writeFileAtomicSync(p, d, m)],
] as const;

for (const [name, write] of forms) {
  test(`${name}: content, exact mode despite the umask, replaces an existing file, no tmp left`, () =>
    withDir(async (dir) => {
      const path = join(dir, 'target');
      writeFileSync(path, 'old contents that are longer than the new ones');
      const oldMask = process.umask(0o077);
      try {
        await write(path, 'new', 0o644);
      } finally {
        process.umask(oldMask);
      }
      assert.equal(readFileSync(path, 'utf8'), 'new');
      assert.equal(statSync(path).mode & 0o777, 0o644, 'mode set exactly, not narrowed by the umask');
      const big = new Uint8Array(300_000).map((_, i) => i & 0xff);
      await write(path, big);
      assert.deepEqual(new Uint8Array(readFileSync(path)), big);
      assert.equal(statSync(path).mode & 0o777, 0o600, 'default mode is owner-only');
      assert.deepEqual(readdirSync(dir), ['target']);
    }));

  test(`${name}: a failed rename throws and removes its tmp file, the target stays`, () =>
    withDir(async (dir) => {
      const path = join(dir, 'occupied');
      mkdirSync(join(path, 'child'), { recursive: true }); // renaming a file over a non-empty directory fails
      await assert.rejects(write(path, 'data'));
      assert.deepEqual(readdirSync(dir), ['occupied']);
      assert.ok(statSync(path).isDirectory());
    }));
}

test('removeAbandonedTmpFiles: removes the tmp files of dead writers of this target only', () =>
  withDir(async (dir) => {
    const path = join(dir, 'ntsd.keys');
    writeFileSync(path, 'current');
    // A process that has exited: its pid names an abandoned write.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    assert.ok(dead !== undefined && dead > 0);
    const alive = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)'], { stdio: 'ignore' });
    try {
      assert.ok(alive.pid !== undefined);
      const abandoned = `.ntsd.keys.tmp-${dead}-0123456789ab`;
      const inProgress = `.ntsd.keys.tmp-${alive.pid}-0123456789ab`;
      const ownWrite = `.ntsd.keys.tmp-${process.pid}-0123456789ab`;
      const otherTarget = `.other.tmp-${dead}-0123456789ab`;
      const notOurPattern = `.ntsd.keys.tmp-${dead}-xyz`;
      for (const name of [abandoned, inProgress, ownWrite, otherTarget, notOurPattern]) writeFileSync(join(dir, name), 'partial');
      assert.deepEqual(await removeAbandonedTmpFiles(path), [abandoned]);
      assert.deepEqual(readdirSync(dir).sort(), [inProgress, ownWrite, otherTarget, notOurPattern, 'ntsd.keys'].sort());
      assert.equal(readFileSync(path, 'utf8'), 'current');
      assert.deepEqual(await removeAbandonedTmpFiles(join(dir, 'missing-dir', 'x')), []);
    } finally {
      alive.kill('SIGKILL');
    }
  }));
