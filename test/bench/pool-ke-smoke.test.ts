/**
 * Smoke test of bench/pool-ke (docs/pools.md capacity): a 1-second run of each phase against three real
 * ntsd sources and an ntsd front end; every session through the front end is a valid NTS-KE answer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BENCH = fileURLToPath(new URL('../../bench/pool-ke/main.js', import.meta.url));

interface Phase {
  readonly kePerS: number;
  readonly sessions: number;
  readonly invalid: number;
  readonly p50Us: number;
  readonly p99Us: number;
}

test('bench/pool-ke: sessions through the front end succeed and are counted, direct and through it', { timeout: 150_000 }, () => {
  const r = spawnSync(process.execPath, [BENCH, '--duration-s', '1', '--concurrency', '4', '--json'], { encoding: 'utf8', timeout: 140_000 });
  assert.equal(r.status, 0, `exit ${String(r.status)}\n${r.stdout}\n${r.stderr}`);
  const phases = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, Phase | null>;
  const names = Object.keys(phases);
  assert.equal(names.length, 4, names.join(', '));
  for (const name of names) {
    const p = phases[name];
    assert.ok(p !== null && p !== undefined, name);
    assert.ok(p.sessions > 0 && p.kePerS > 0, `${name}: ${JSON.stringify(p)}`);
    assert.equal(p.invalid, 0, `${name}: invalid answers`);
    assert.ok(p.p99Us >= p.p50Us && p.p50Us > 0, name);
  }
});
