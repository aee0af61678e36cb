/**
 * The soak's short version (bench/reliability/soak.ts runs 10 minutes by default, 60 for the hour): the real
 * daemon for 20 s at half of its measured NTS maximum. Every reply of the verified sample must be valid, no
 * thread may restart, and RSS is sampled (its slope is reported by the bench, not judged over 20 s).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_SOAK_OPTIONS, formatSoakReport, runSoak, slope } from '../../bench/reliability/soak.js';

test('soak slope: least squares over (s, MB) gives MB per second', () => {
  assert.equal(slope([]), 0);
  assert.equal(slope([{ x: 1, y: 5 }]), 0);
  assert.ok(Math.abs(slope([{ x: 0, y: 100 }, { x: 10, y: 101 }, { x: 20, y: 102 }]) - 0.1) < 1e-12);
  assert.ok(Math.abs(slope([{ x: 0, y: 3 }, { x: 1, y: 1 }, { x: 2, y: 3 }, { x: 3, y: 1 }]) - -0.4) < 1e-12);
});

test('soak (20 s at 50 % of the maximum): zero invalid replies in the verified sample, zero thread restarts', { timeout: 120_000 }, async () => {
  const report = await runSoak({ ...DEFAULT_SOAK_OPTIONS, durationS: 20, maxProbeS: 2, sampleEveryS: 1 });
  const text = formatSoakReport(report);
  assert.equal(report.defectCount, 0, text);
  assert.equal(report.invalid, 0, text);
  assert.equal(report.workerRestarts, 0, text);
  assert.ok(report.maxRatePerS > 0 && report.offeredRatePerS > 0, text);
  assert.ok(report.verified >= 100, text);
  assert.ok(report.received >= report.sent * 0.5, text);
  assert.ok(report.rss.length >= 10, text);
});
