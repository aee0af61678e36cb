/**
 * src/native/build.mjs, the `npm install` step that builds the addon: it must never fail an install.
 * Without a compiler (CC pointing nowhere, as on a machine without build-essential) or with the build
 * disabled it prints one line saying why and exits 0, leaving any existing build/ntsd_udp.node alone;
 * with the toolchain it builds an addon whose layout matches src/runtime/addon.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const script = join(repo, 'src', 'native', 'build.mjs');

function run(env: Record<string, string>, cwdScript = script): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cwdScript], { env: { ...process.env, ...env }, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('no C compiler: exit 0 and one line naming the missing compiler; an existing addon is left alone', () => {
  const addon = join(repo, 'build', 'ntsd_udp.node');
  const before = existsSync(addon) ? statSync(addon).mtimeMs : undefined;
  const r = run({ CC: '/nonexistent/cc' });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, r.stdout);
  assert.match(lines[0] ?? '', /^ntsd: native datapath not built: no C compiler \(\/nonexistent\/cc\); .*build-essential.*; ntsd will use the dgram datapath$/);
  assert.equal(existsSync(addon) ? statSync(addon).mtimeMs : undefined, before);
});

test('NTSD_NATIVE=0: exit 0 and one line saying the build is disabled', () => {
  const r = run({ NTSD_NATIVE: '0' });
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), 'ntsd: native datapath not built: NTSD_NATIVE=0; ntsd will use the dgram datapath');
});

test('a compiler error: exit 0, the first error line, and no half-written addon', (t) => {
  if (spawnSync('cc', ['--version']).status !== 0) return t.skip('no cc on this machine');
  // A copy of the tree with a broken C file, so the real build output is untouched.
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-native-build-'));
  try {
    mkdirSync(join(dir, 'src'), { recursive: true });
    cpSync(join(repo, 'src', 'native'), join(dir, 'src', 'native'), { recursive: true });
    writeFileSync(join(dir, 'src', 'native', 'udp_batch.c'), 'int broken( {\n');
    const r = run({}, join(dir, 'src', 'native', 'build.mjs'));
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^ntsd: native datapath not built: cc failed: .*error.*; ntsd will use the dgram datapath\n$/);
    assert.equal(existsSync(join(dir, 'build', 'ntsd_udp.node')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with the toolchain: the addon builds and exports the layout src/runtime/addon.ts expects', async (t) => {
  if (spawnSync('cc', ['--version']).status !== 0) return t.skip('no cc on this machine');
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-native-build-'));
  try {
    mkdirSync(join(dir, 'src'), { recursive: true });
    cpSync(join(repo, 'src', 'native'), join(dir, 'src', 'native'), { recursive: true });
    const r = run({}, join(dir, 'src', 'native', 'build.mjs'));
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^ntsd: native datapath built: build\/ntsd_udp\.node/);
    const { NativeLayout } = await import('../../src/runtime/addon.js');
    const probe = spawnSync(process.execPath, ['-e', `process.stdout.write(JSON.stringify(require(${JSON.stringify(join(dir, 'build', 'ntsd_udp.node'))}).layout))`], { encoding: 'utf8' });
    assert.equal(probe.status, 0, probe.stderr);
    assert.deepEqual(JSON.parse(probe.stdout), { ...NativeLayout });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
