import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WallClock, startClockCalibrator, unixSToNtp, NTP_UNIX_OFFSET_S, type NtpTime } from '../src/clock.js';

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
