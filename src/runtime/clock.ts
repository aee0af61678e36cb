/**
 * The system clock as the daemon serves it: wall-clock time with microsecond resolution.
 *
 * `Date.now()` has only millisecond resolution, which alone would put up to 1 ms of error into every
 * timestamp we serve. Instead we read the monotonic clock (`process.hrtime`, shared by every thread of the
 * process) and add an offset "realtime − monotonic" kept in a SharedArrayBuffer, so the main thread and every
 * worker read the same anchor without messages.
 *
 * The offset is first taken from `performance.timeOrigin` (microsecond realtime at process start) and then
 * re-measured periodically by a small calibrator thread: it spins on `Date.now()` until the millisecond
 * changes, which pins realtime to an exact millisecond edge within the few hundred nanoseconds one loop
 * iteration takes. Re-measuring follows the host daemon's slewing and steps of the realtime clock.
 * The calibrator runs on its own thread (src/runtime/clock-calibrator.ts) so its short spins never delay the thread
 * that stamps packets.
 */
import { Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';

/** Seconds from the NTP prime epoch (1900-01-01) to the Unix epoch (RFC 5905 §6). */
export const NTP_UNIX_OFFSET_S = 2_208_988_800;
const TWO_POW_32 = 4_294_967_296;

/** Slots of the shared anchor. */
const Slot = {
  /** realtime − monotonic, seconds. */
  offsetS: 0,
  /** Half-width of the last calibration's uncertainty interval, seconds. */
  uncertaintyS: 1,
  /** Number of completed calibrations. */
  calibrations: 2,
} as const;
const SLOT_COUNT = 3;
/**
 * Widest edge-bracketing interval a calibration accepts. A wider one means the thread was descheduled
 * between the two reads (a loaded machine); the old anchor is then better than the new sample.
 */
const MAX_CALIBRATION_WIDTH_S = 20e-6;

/** Reads the monotonic clock in seconds (process-wide: identical in every worker thread). */
export function monotonicS(): number {
  const t = process.hrtime();
  return t[0] + t[1] / 1e9;
}

/** An NTP 64-bit timestamp as two unsigned 32-bit halves (RFC 5905 §6). */
export interface NtpTime {
  seconds: number;
  fraction: number;
}

/** Wall clock anchored to the monotonic clock; cheap to read from any thread that holds its shared buffer. */
export class WallClock {
  /** Shared anchor storage; pass it to worker threads to construct an identical clock there. */
  readonly shared: SharedArrayBuffer;
  readonly #anchor: Float64Array;

  constructor(shared?: SharedArrayBuffer) {
    this.shared = shared ?? new SharedArrayBuffer(SLOT_COUNT * Float64Array.BYTES_PER_ELEMENT);
    this.#anchor = new Float64Array(this.shared);
    if (shared === undefined) {
      const mono = monotonicS();
      this.#anchor[Slot.offsetS] = (performance.timeOrigin + performance.now()) / 1000 - mono;
      this.#anchor[Slot.uncertaintyS] = 0.001;
    }
  }

  /** Current Unix time in seconds, with sub-microsecond resolution. */
  nowUnixS(): number {
    return monotonicS() + (this.#anchor[Slot.offsetS] ?? 0);
  }

  /** Current time as an NTP timestamp written into `target` (era-wrapped seconds, binary fraction). */
  nowNtp(target: NtpTime): NtpTime {
    return unixSToNtp(this.nowUnixS(), target);
  }

  /** Uncertainty of the last calibration (seconds) and how many calibrations have completed. */
  calibrationState(): { uncertaintyS: number; calibrations: number } {
    return { uncertaintyS: this.#anchor[Slot.uncertaintyS] ?? 0, calibrations: this.#anchor[Slot.calibrations] ?? 0 };
  }

  /**
   * Measures realtime − monotonic from a nanosecond CLOCK_REALTIME read (the native addon's `realtime()`)
   * between two monotonic reads: no millisecond edge to wait for, so it costs about a microsecond and can
   * run on whichever thread holds the clock. Keeps the narrowest of `rounds` samples; false (old anchor kept) when all were wide.
   */
  calibrateFromRealtime(read: RealtimeReader, rounds = 3): boolean {
    const pair = new Float64Array(2);
    let bestOffset = 0;
    let bestWidth = Number.POSITIVE_INFINITY;
    for (let round = 0; round < rounds; round++) {
      const before = monotonicS();
      read(pair);
      const after = monotonicS();
      const width = after - before;
      if (width < bestWidth) {
        bestWidth = width;
        bestOffset = (pair[0] ?? 0) - (before + after) / 2 + (pair[1] ?? 0) / 1e9;
      }
    }
    return this.#store(bestOffset, bestWidth);
  }

  /**
   * Measures realtime − monotonic by catching `Date.now()` at a millisecond edge. Spins for at most about
   * `rounds` milliseconds; keeps the sample with the narrowest interval. Returns false, keeping the old
   * anchor, when no edge was seen or every sample was too wide to trust. The two readers are parameters only
   * so a test can play a preemption at a chosen moment.
   */
  calibrate(rounds = 5, readMs: () => number = Date.now, readMonotonicS: () => number = monotonicS): boolean {
    let bestOffset = 0;
    let bestWidth = Number.POSITIVE_INFINITY;
    for (let round = 0; round < rounds; round++) {
      // Reads alternate monotonic m0, Date.now() d0, m1, d1, m2, ... When d(k) is the first read of the new
      // millisecond, the edge lies between d(k-1) and d(k), so inside [m(k-1), m(k+1)]. Starting the bracket
      // at m(k) instead would miss a preemption between d(k-1) and m(k) while the width still looked narrow.
      let older = readMonotonicS(); // m(k-1): the read before the last old-millisecond Date.now()
      const startMs = readMs();
      let newer = readMonotonicS(); // m(k)
      const giveUp = older + 0.005;
      let ms = startMs;
      let after = newer;
      while (ms === startMs && after <= giveUp) {
        ms = readMs();
        after = readMonotonicS(); // m(k+1)
        if (ms === startMs) {
          older = newer;
          newer = after;
        }
      }
      if (ms === startMs) continue;
      const width = after - older;
      if (width < bestWidth) {
        bestWidth = width;
        bestOffset = ms / 1000 - (older + after) / 2;
      }
    }
    return this.#store(bestOffset, bestWidth);
  }

  /** Publishes a calibration to every thread sharing the anchor, unless its interval is too wide to trust. */
  #store(offsetS: number, widthS: number): boolean {
    if (!(widthS <= MAX_CALIBRATION_WIDTH_S)) return false;
    this.#anchor[Slot.offsetS] = offsetS;
    this.#anchor[Slot.uncertaintyS] = widthS / 2;
    this.#anchor[Slot.calibrations] = (this.#anchor[Slot.calibrations] ?? 0) + 1;
    return true;
  }
}

/** Reads CLOCK_REALTIME as out[0] = Unix seconds, out[1] = nanoseconds (src/runtime/addon.ts `realtime`). */
export type RealtimeReader = (out: Float64Array) => void;

/** Converts Unix seconds to an NTP timestamp (era-wrapped modulo 2^32 seconds, RFC 5905 §6). */
export function unixSToNtp(unixS: number, target: NtpTime): NtpTime {
  const whole = Math.floor(unixS);
  let fraction = Math.floor((unixS - whole) * TWO_POW_32);
  if (fraction >= TWO_POW_32) fraction = TWO_POW_32 - 1;
  target.seconds = (whole + NTP_UNIX_OFFSET_S) >>> 0;
  target.fraction = fraction >>> 0;
  return target;
}

/** Handle on a running calibrator (a timer or a thread). */
export interface ClockCalibrator {
  /** Stops recalibrating. */
  stop(): Promise<void>;
}

/** Marker in workerData of the calibrator thread (src/runtime/clock-calibrator.ts). */
export const CALIBRATOR_ROLE = 'ntsd-clock-calibrator';

/** workerData of the calibrator thread. */
export interface CalibratorData {
  readonly role: typeof CALIBRATOR_ROLE;
  readonly shared: SharedArrayBuffer;
  readonly intervalMs: number;
}

/**
 * Recalibrates `clock` every `intervalMs`, so it follows the host's time daemon as it slews CLOCK_REALTIME
 * against the monotonic clock. With a nanosecond `realtime` reader (the native addon) that is a timer on
 * this thread, a microsecond per run; without one, `calibrate()` spins for a millisecond edge, so it runs
 * in a thread of its own (src/runtime/clock-calibrator.ts). Neither keeps the process alive.
 */
export function startClockCalibrator(clock: WallClock, intervalMs = 2000, realtime?: RealtimeReader): ClockCalibrator {
  if (realtime !== undefined) {
    clock.calibrateFromRealtime(realtime);
    const timer = setInterval(() => clock.calibrateFromRealtime(realtime), intervalMs);
    timer.unref();
    return {
      stop() {
        clearInterval(timer);
        return Promise.resolve();
      },
    };
  }
  clock.calibrate();
  const data: CalibratorData = { role: CALIBRATOR_ROLE, shared: clock.shared, intervalMs };
  const worker = new Worker(new URL('./clock-calibrator.js', import.meta.url), { workerData: data });
  worker.unref();
  return {
    async stop() {
      await worker.terminate();
    },
  };
}
