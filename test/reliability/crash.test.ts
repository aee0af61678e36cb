/**
 * The crash battery's short version (bench/reliability/crash.ts, 1,000 cycles there): 20 kill -9 cycles of
 * the real daemon on one key file rotating every 10 s. Every restart must load the file (no new keyset, no
 * corrupt or tmp file left, no key lost) and cookies from before each crash must still authenticate.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_CRASH_OPTIONS, formatCrashReport, runCrash } from '../../bench/reliability/crash.js';
import { defaultSeed } from '../../bench/reliability/common.js';

test('crash battery: 20 kill -9 cycles across key rotations lose no key and no cookie', { timeout: 240_000 }, async () => {
  const report = await runCrash({ ...DEFAULT_CRASH_OPTIONS, cycles: 20, maxDurationS: 180, seed: defaultSeed(), rotationKillShare: 0.08 });
  const text = formatCrashReport(report);
  assert.equal(report.defectCount, 0, text);
  assert.equal(report.cycles, 20, text);
  // The moments that matter were hit: during start-up, around a scheduled rotation, after serving.
  assert.ok(report.kills.start >= 3, text);
  assert.ok(report.kills.rotation + report.kills['before-due'] >= 1, text);
  assert.ok(report.kills.running >= 1, text);
  assert.ok(report.rotationsLogged >= 1, text);
  // Cookies from before the crashes were checked, and every one authenticated (the window spans the run).
  assert.ok(report.oldCookiesChecked >= 10, text);
  assert.equal(report.oldCookiesAuthenticated, report.oldCookiesChecked, text);
  assert.equal(report.freshCookiesChecked, report.startsCompleted, text);
});
