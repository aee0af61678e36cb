/** runtime/version.ts: the package version, and Node 20 past end of life while 22 and 24 are not. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nodeEndOfLife, ntsdVersion } from '../../src/runtime/version.js';

test('Node 20 is past its end of life (2026-04-30) and the advice names Node 24', () => {
  assert.deepEqual(nodeEndOfLife('20.20.2'), { major: 20, endOfLife: '2026-04-30', moveTo: 'Node.js 24 LTS' });
  assert.deepEqual(nodeEndOfLife('v20.19.0')?.major, 20);
});

test('Node 22 and 24 still get security fixes', () => {
  assert.equal(nodeEndOfLife('22.12.0'), undefined);
  assert.equal(nodeEndOfLife('24.11.1'), undefined);
});

test("ntsdVersion reads package.json's version", async () => {
  const { readFileSync } = await import('node:fs');
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.match(pkg.version, /^\d+\.\d+\.\d+/);
  assert.equal(ntsdVersion(), pkg.version);
});
