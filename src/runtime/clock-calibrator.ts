/**
 * Entry of the clock calibrator thread (started by clock.ts startClockCalibrator): re-measures the shared
 * realtime − monotonic anchor every `intervalMs`, so every thread's WallClock follows the host daemon's
 * slewing and steps. Its short spins run here, never on a thread that stamps packets.
 */
import { isMainThread, workerData } from 'node:worker_threads';
import { CALIBRATOR_ROLE, WallClock, type CalibratorData } from './clock.js';

function isCalibratorData(data: unknown): data is CalibratorData {
  return typeof data === 'object' && data !== null && (data as { role?: unknown }).role === CALIBRATOR_ROLE;
}

if (!isMainThread && isCalibratorData(workerData)) {
  const clock = new WallClock(workerData.shared);
  setInterval(() => clock.calibrate(), workerData.intervalMs);
}
