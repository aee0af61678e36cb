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
  assert.equal(clock.calibrateFromRealtime(reader), true);
  const error = clock.nowUnixS() - (monotonicS() + offsetS);
  // The anchor is off by at most the kept sample's half-width (its uncertainty, ≤ 10 µs: a preempted round
  // on a loaded machine widens it), plus the moment between the two reads above.
  const { uncertaintyS } = clock.calibrationState();
  assert.ok(uncertaintyS <= 10e-6, `uncertainty ${uncertaintyS} s`);
  assert.ok(Math.abs(error) < uncertaintyS + 5e-6, `error ${error} s, uncertainty ${uncertaintyS} s`);
  // A reader that takes 1 ms: the interval is too wide to trust and the old anchor stays.
  const before = clock.nowUnixS();
  const slow = (out: Float64Array): void => {
    const end = performance.now() + 1;
    while (performance.now() < end);
    out[0] = 0;
    out[1] = 0;
  };
  assert.equal(clock.calibrateFromRealtime(slow), false);
  assert.ok(Math.abs(clock.nowUnixS() - before) < 0.01, 'the anchor did not move');
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
    const pair = new Float64Array(2);
    const ours = clock.nowUnixS();
    loaded.addon.realtime(pair);
    const real = (pair[0] ?? 0) + (pair[1] ?? 0) / 1e9;
    assert.ok(Math.abs(real - ours) < 50e-6, `clock ${ours} vs CLOCK_REALTIME ${real}`);
  } finally {
    await calibrator.stop();
  }
});
