import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WallClock, monotonicS, startClockCalibrator, unixSToNtp, NTP_UNIX_OFFSET_S, type NtpTime } from '../../src/runtime/clock.js';
import { loadNativeUdp } from '../../src/runtime/addon.js';

test('unixSToNtp: Unix epoch is NTP era-0 second 2208988800 (RFC 5905 §6)', () => {
  const t: NtpTime = { seconds: 0, fraction: 0 };
  assert.deepEqual(unixSToNtp(0, t), { seconds: NTP_UNIX_OFFSET_S, fraction: 0 });
  assert.deepEqual(unixSToNtp(0.5, t), { seconds: NTP_UNIX_OFFSET_S, fraction: 0x80000000 });
});

test('unixSToNtp: seconds wrap into era 1 on 2036-02-07T06:28:16Z (RFC 5905 §6)', () => {
  const eraBoundaryUnixS = 4_294_967_296 - NTP_UNIX_OFFSET_S;
  const t: NtpTime = { seconds: 0, fraction: 0 };
  assert.deepEqual(unixSToNtp(eraBoundaryUnixS - 1, t), { seconds: 0xffffffff, fraction: 0 });
  assert.deepEqual(unixSToNtp(eraBoundaryUnixS + 1, t), { seconds: 1, fraction: 0 });
});

test('calibrated clock agrees with Date.now() to well under a millisecond', () => {
  const clock = new WallClock();
  // A calibration refuses samples taken while the thread was descheduled; on a busy machine retry a few times.
  let calibrated = false;
  for (let attempt = 0; attempt < 20 && !calibrated; attempt++) calibrated = clock.calibrate();
  assert.equal(calibrated, true);
  const { uncertaintyS } = clock.calibrationState();
  assert.ok(uncertaintyS <= 20e-6, `calibration uncertainty ${uncertaintyS}s`);
  for (let i = 0; i < 1000; i++) {
    const before = Date.now();
    const ours = clock.nowUnixS() * 1000;
    const after = Date.now();
    // Date.now() floors to the millisecond: ours must lie in [before, after + 1).
    assert.ok(ours >= before - 0.2 && ours < after + 1.2, `clock ${ours} outside [${before}, ${after + 1})`);
  }
});

/**
 * Simulated clocks for calibrate(): monotonic time advances 0.1 µs per read and realtime is monotonic + 0.25 s.
 * With `preemptions` > 0 the thread is "descheduled" for 300 µs right after a Date.now() read that still saw the
 * old millisecond with the edge less than 0.5 µs away: the edge passes while the thread is away.
 */
function simulatedClocks(preemptions: number): { readMs: () => number; readMonotonicS: () => number } {
  let t = 100.000_123;
  let left = preemptions;
  const realtimeOffsetS = 0.25;
  return {
    readMonotonicS: () => (t += 1e-7),
    readMs: () => {
      t += 1e-7;
      const ms = Math.floor((t + realtimeOffsetS) * 1000);
      const toEdgeS = (ms + 1) / 1000 - (t + realtimeOffsetS);
      if (left > 0 && toEdgeS < 0.5e-6) {
        left--;
        t += 300e-6;
      }
      return ms;
    },
  };
}

/** The clock's anchor (realtime − monotonic) is within `toleranceS` of `expectedS`, read between two monotonic reads. */
function assertAnchorNear(clock: WallClock, expectedS: number, toleranceS = 1e-6): void {
  const before = monotonicS();
  const now = clock.nowUnixS();
  const after = monotonicS();
  const low = now - after;
  const high = now - before;
  assert.ok(expectedS > low - toleranceS && expectedS < high + toleranceS, `anchor in [${low}, ${high}] s, expected ${expectedS} s`);
}

test('calibrate: a preemption just after the last old-millisecond read widens the sample, never shifts the anchor', () => {
  const clock = new WallClock();
  const once = simulatedClocks(1);
  assert.equal(clock.calibrate(5, once.readMs, once.readMonotonicS), true);
  // The anchor is realtime − monotonic of the simulation: 0.25 s. The preempted round brackets 300 µs and is
  // refused; the other rounds are narrow. (Bracketing from the read after the old one put this 0.3 ms off.)
  assertAnchorNear(clock, 0.25);
  assert.ok(clock.calibrationState().uncertaintyS < 1e-6);
  // Every round preempted: nothing narrow enough to trust, the anchor stays.
  const always = simulatedClocks(Number.POSITIVE_INFINITY);
  assert.equal(clock.calibrate(5, always.readMs, always.readMonotonicS), false);
  assertAnchorNear(clock, 0.25);
});

test('a clock built from the shared buffer reads the same anchor, and the calibrator thread updates it', async () => {
  const clock = new WallClock();
  const twin = new WallClock(clock.shared);
  assert.ok(Math.abs(clock.nowUnixS() - twin.nowUnixS()) < 0.001);
  const calibrator = startClockCalibrator(clock, 50);
  try {
    const start = clock.calibrationState().calibrations;
    const deadline = Date.now() + 5000;
    while (clock.calibrationState().calibrations < start + 2 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(twin.calibrationState().calibrations >= start + 2, 'calibrator thread did not recalibrate');
  } finally {
    await calibrator.stop();
  }
});

test('calibrateFromRealtime: the anchor follows a nanosecond realtime reader, and a wide sample is refused', () => {
  const clock = new WallClock();
  // A reader whose realtime is the monotonic clock plus a known offset: the anchor becomes that offset.
  const offsetS = 1_800_000_000.25;
  const reader = (out: Float64Array): void => {
    const t = monotonicS() + offsetS;
    out[0] = Math.floor(t);
    out[1] = (t - Math.floor(t)) * 1e9;
  };
  // Three rounds all preempted (each wider than 20 µs) refuse the calibration; on a loaded machine, retry.
  let calibrated = false;
  for (let attempt = 0; attempt < 20 && !calibrated; attempt++) calibrated = clock.calibrateFromRealtime(reader);
  assert.equal(calibrated, true);
  // The anchor is off by at most the kept sample's half-width (its uncertainty, ≤ 10 µs), plus the float
  // resolution of a 1.8e9 s value (0.24 µs).
  const { uncertaintyS } = clock.calibrationState();
  assert.ok(uncertaintyS <= 10e-6, `uncertainty ${uncertaintyS} s`);
  assertAnchorNear(clock, offsetS, uncertaintyS + 1e-6);
  // A reader that takes 1 ms: the interval is too wide to trust and the old anchor stays. (Compared as an
  // anchor, not as two clock reads: on a loaded machine the three 1 ms rounds may take much longer.)
  const slow = (out: Float64Array): void => {
    const end = performance.now() + 1;
    while (performance.now() < end);
    out[0] = 0;
    out[1] = 0;
  };
  assert.equal(clock.calibrateFromRealtime(slow), false);
  assertAnchorNear(clock, offsetS, uncertaintyS + 1e-6);
});

test('with the native addon, the calibrator is a timer on this thread that tracks CLOCK_REALTIME', { skip: !loadNativeUdp().ok && 'native addon not built' }, async () => {
  const loaded = loadNativeUdp();
  if (!loaded.ok) return;
  const clock = new WallClock();
  const calibrator = startClockCalibrator(clock, 20, (out) => loaded.addon.realtime(out));
  try {
    const start = clock.calibrationState().calibrations;
    assert.ok(start >= 1, 'calibrated at start');
    const deadline = Date.now() + 5000;
    while (clock.calibrationState().calibrations < start + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.ok(clock.calibrationState().calibrations >= start + 2, 'the timer recalibrated');
    // CLOCK_REALTIME read between two reads of ours (a preemption between reads only widens the bracket).
    const pair = new Float64Array(2);
    const oursBefore = clock.nowUnixS();
    loaded.addon.realtime(pair);
    const oursAfter = clock.nowUnixS();
    const real = (pair[0] ?? 0) + (pair[1] ?? 0) / 1e9;
    assert.ok(real > oursBefore - 50e-6 && real < oursAfter + 50e-6, `CLOCK_REALTIME ${real} vs clock [${oursBefore}, ${oursAfter}]`);
  } finally {
    await calibrator.stop();
  }
});
