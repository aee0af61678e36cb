/**
 * NTP time formats (RFC 5905 §6).
 *
 * - 64-bit timestamp: u32 seconds since the start of the current era, u32 fraction in units of 2^-32 s.
 *   Era 0 began 1900-01-01 00:00:00 UTC; era 1 begins 2036-02-07 06:28:16 UTC, when the seconds field wraps.
 *   The wire form carries no era number, so converting to absolute time needs a pivot known to lie within
 *   ±68 years of the answer (RFC 5905 §6, "the era can be determined from context").
 * - 32-bit short format (root delay, root dispersion): u16 seconds, u16 fraction.
 *
 * The core never reads a clock: the shell samples Unix time (seconds + fraction) and converts it here.
 */
import { readU32, writeU32 } from '../bytes.js';

/** A 64-bit NTP timestamp (RFC 5905 §6): both halves are unsigned 32-bit integers. */
export interface NtpTimestamp {
  /** Seconds since the start of the NTP era, 0 ≤ seconds < 2^32. */
  readonly seconds: number;
  /** Fraction of a second in units of 2^-32 s, 0 ≤ fraction < 2^32. */
  readonly fraction: number;
}

/** An absolute Unix time split like an NTP timestamp (integer seconds since 1970, u32 fraction). */
export interface UnixTime {
  /** Integer seconds since 1970-01-01 00:00:00 UTC (may be negative before 1970). */
  readonly seconds: number;
  /** Fraction of a second in units of 2^-32 s. */
  readonly fraction: number;
}

/** Seconds from the NTP prime epoch (1900-01-01, era 0) to the Unix epoch (1970-01-01), RFC 5905 §6 Figure 4. */
export const NTP_UNIX_OFFSET_S = 2_208_988_800;
/** Length of one NTP era in seconds: 2^32 (RFC 5905 §6). */
export const NTP_ERA_LENGTH_S = 0x1_0000_0000;
/** Units of the fraction field per second: 2^32 (RFC 5905 §6). */
export const NTP_FRACTION_PER_S = 0x1_0000_0000;
/** The all-zero timestamp: "unknown / not set" (RFC 5905 §6). */
export const NTP_TIMESTAMP_ZERO: NtpTimestamp = Object.freeze({ seconds: 0, fraction: 0 });
/**
 * Default pivot for era resolution: 2024-01-01 00:00:00 UTC (Unix seconds). With it, `ntpToUnix`
 * resolves timestamps in 1956–2092 correctly. Callers that know the current time should pass it instead.
 */
export const DEFAULT_ERA_PIVOT_UNIX_S = 1_704_067_200;

/** Floor modulo into [0, m). */
function mod(n: number, m: number): number {
  const r = n % m;
  return r < 0 ? r + m : r;
}

/**
 * Converts Unix time to an NTP timestamp (RFC 5905 §6); era-aware: after 2036-02-07 the seconds field
 * wraps into era 1 (and so on). `unixSeconds` must be an integer; `fraction` is in units of 2^-32 s.
 */
export function unixToNtp(unixSeconds: number, fraction: number): NtpTimestamp {
  return { seconds: mod(unixSeconds + NTP_UNIX_OFFSET_S, NTP_ERA_LENGTH_S), fraction: fraction >>> 0 };
}

/** The NTP era (RFC 5905 §6) that contains the given integer Unix second: 0 until 2036-02-07 06:28:16 UTC. */
export function ntpEraOfUnix(unixSeconds: number): number {
  return Math.floor((unixSeconds + NTP_UNIX_OFFSET_S) / NTP_ERA_LENGTH_S);
}

/**
 * Converts an NTP timestamp to Unix time, choosing the era that puts the result within ±2^31 s of
 * `pivotUnixS` (RFC 5905 §6). Pass the current Unix time as the pivot when it is known.
 */
export function ntpToUnix(ts: NtpTimestamp, pivotUnixS: number = DEFAULT_ERA_PIVOT_UNIX_S): UnixTime {
  const pivotNtp = pivotUnixS + NTP_UNIX_OFFSET_S;
  // Signed distance from the pivot's position within its era to the timestamp, in (-2^31, 2^31].
  let delta = mod(ts.seconds - pivotNtp, NTP_ERA_LENGTH_S);
  if (delta >= 0x8000_0000) delta -= NTP_ERA_LENGTH_S;
  return { seconds: pivotUnixS + delta, fraction: ts.fraction >>> 0 };
}

/** Converts nanoseconds within a second (0 ≤ ns < 1e9) to an NTP fraction, exact to within one unit (233 ps). */
export function nanosecondsToFraction(nanoseconds: number): number {
  const f = Math.floor((nanoseconds * NTP_FRACTION_PER_S) / 1e9);
  return f > 0xffff_ffff ? 0xffff_ffff : f < 0 ? 0 : f;
}

/** Converts an NTP fraction (units of 2^-32 s) to whole nanoseconds (rounded down). */
export function fractionToNanoseconds(fraction: number): number {
  return Math.floor(((fraction >>> 0) * 1e9) / NTP_FRACTION_PER_S);
}

/** Reads a 64-bit NTP timestamp at `offset` (RFC 5905 §6). The caller checks that 8 octets are present. */
export function readTimestamp(buf: Uint8Array, offset: number): NtpTimestamp {
  return { seconds: readU32(buf, offset), fraction: readU32(buf, offset + 4) };
}

/** Writes a 64-bit NTP timestamp at `offset`; returns the offset after it. */
export function writeTimestamp(buf: Uint8Array, offset: number, ts: NtpTimestamp): number {
  writeU32(buf, offset, ts.seconds);
  return writeU32(buf, offset + 4, ts.fraction);
}

/** True when a timestamp is the all-zero value (RFC 5905 §6: "time not known"). */
export function isZeroTimestamp(ts: NtpTimestamp): boolean {
  return ts.seconds === 0 && ts.fraction === 0;
}

/** Converts seconds (≥ 0) to the 32-bit NTP short format (RFC 5905 §6: 16.16 fixed point), saturating. */
export function secondsToNtpShort(seconds: number): number {
  if (!(seconds > 0)) return 0;
  const v = Math.round(seconds * 65536);
  return v > 0xffff_ffff ? 0xffff_ffff : v >>> 0;
}

/** Converts a 32-bit NTP short-format value (RFC 5905 §6) to seconds. */
export function ntpShortToSeconds(short: number): number {
  return (short >>> 0) / 65536;
}
