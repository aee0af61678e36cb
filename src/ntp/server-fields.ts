/**
 * Where the server fields of every reply come from (leap, stratum, precision, root delay, root dispersion,
 * reference id, reference time; RFC 5905 §7.3). OPERATIONS.md: a public server must never claim to be
 * synchronised when it is not.
 *
 * - `static`: the operator states stratum and reference id. Leap is 0 (3 when `local-stratum = 16`), root
 *   delay and root dispersion are 0, and the reference time is refreshed every 64 s so it stays recent
 *   and never lies in the future of a transmit timestamp.
 * - `follow`: a small NTP client (RFC 5905 mode 3) asks the host's time daemon (chronyd, ntpd, ntpd-rs on
 *   127.0.0.1:123) every `poll-interval-s` seconds and copies its state:
 *     leap            upstream leap;
 *     stratum         upstream stratum + 1 (one more hop: ntsd relays the host clock);
 *     root delay      upstream root delay + the measured loopback round trip;
 *     root dispersion upstream root dispersion + our precision + PHI · (loopback round trip + age of the
 *                     sample + one poll interval of look-ahead), PHI = 15 µs/s (RFC 5905 §7.2, §11.2.1);
 *     reference id    the upstream's own reference id, passed through (see below);
 *     reference time  the upstream's reference time (ntsd serves the same kernel clock, last set then).
 *   Reference id: RFC 5905 §7.3 makes a secondary server's refid the address of its upstream, so that a
 *   server can notice it is being fed its own time. Our upstream is always on loopback, so "127.0.0.1"
 *   would be identical for every ntsd and detect nothing. Passing the host daemon's refid through keeps
 *   the loop check meaningful: a client that is itself the host daemon's upstream still sees its address.
 *   The answer becomes "unsynchronised" (LI 3, stratum 16, refid 0, reference time 0, root dispersion
 *   16 s) when the daemon says so (LI 3, stratum 0 or ≥ 15), when it does not answer, or when the last
 *   good sample is older than four poll intervals.
 *
 * Fields handed out are frozen objects; the look-ahead term means a snapshot stays truthful until the
 * next scheduled update, so consumers may cache it until `onChange` fires (at every poll).
 */
import { randomFillSync } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import type { Logger } from 'pino';
import { monotonicS } from '../runtime/clock.js';
import type { FollowTimeSourceConfig, StaticTimeSourceConfig, TimeSourceConfig } from '../config/schema.js';
import { LeapIndicator, NTP_HEADER_LENGTH, NtpHeaderOffset, NtpMode, UNSYNCHRONIZED_STRATUM, decodeHeader, packLiVnMode } from '../core/ntp/header.js';
import {
  NTP_TIMESTAMP_ZERO,
  ntpShortToSeconds,
  secondsToNtpShort,
  unixToNtp,
  type NtpTimestamp,
} from '../core/ntp/timestamp.js';
import type { ServerFields } from '../core/responder.js';

/** Frequency tolerance PHI: dispersion grows 15 µs per second of age (RFC 5905 §7.2). */
export const PHI_S_PER_S = 15e-6;
/** Maximum dispersion, 16 s: the value reported when unsynchronised (RFC 5905 §7.2 MAXDISP). */
export const MAX_DISPERSION_S = 16;
/** A follow-mode sample older than this many poll intervals is stale (answers become unsynchronised). */
export const STALE_AFTER_POLLS = 4;
/** Static mode refreshes its reference time this often (seconds). */
export const STATIC_REFRESH_S = 64;

/** A clock the time source can read (src/runtime/clock.ts WallClock satisfies it). */
export interface UnixClock {
  /** Current Unix time in seconds (fractional). */
  nowUnixS(): number;
}

/** Supplies server fields to the responder. */
export interface TimeSource {
  /** The fields to put in replies now (a frozen object). */
  current(): ServerFields;
  /** Calls `listener` with new fields after every update; returns a function that unsubscribes. */
  onChange(listener: (fields: ServerFields) => void): () => void;
  /** Resolves once the first update is known (follow mode: the first poll answered or timed out). */
  readonly ready: Promise<void>;
  /** Stops timers and closes the socket. */
  close(): Promise<void>;
}

/** Options shared by both modes. */
export interface TimeSourceOptions {
  /** Wall clock; tests inject one. */
  readonly clock: UnixClock;
  /** Precision exponent to report (log2 s); measured from `clock` when omitted. */
  readonly precision?: number;
  /** Logs transitions between synchronised and unsynchronised (never per poll above debug). */
  readonly logger?: Logger;
  /** Follow mode: how long to wait for an answer, ms (default min(1000, poll interval / 2)). */
  readonly queryTimeoutMs?: number;
}

/**
 * Measures the clock's precision as RFC 5905 §7.3 defines it (log2 s, the resolution/cost of reading it):
 * the smallest positive step between consecutive reads, rounded up to a power of two, in [-30, -6].
 */
export function measurePrecision(clock: UnixClock): number {
  let smallest = Number.POSITIVE_INFINITY;
  let previous = clock.nowUnixS();
  // A couple of thousand reads; keep going (up to 100k) while no step has been seen at all.
  for (let i = 0; i < 100_000 && (i < 2000 || smallest === Number.POSITIVE_INFINITY); i++) {
    const t = clock.nowUnixS();
    const step = t - previous;
    if (step > 0 && step < smallest) smallest = step;
    previous = t;
  }
  if (!Number.isFinite(smallest)) return -6;
  return Math.min(-6, Math.max(-30, Math.ceil(Math.log2(smallest))));
}

/** The fields of an unsynchronised server (RFC 5905 §7.3: LI 3, stratum 16; §7.2 MAXDISP). */
export function unsynchronisedFields(precision: number): ServerFields {
  return Object.freeze({
    leap: LeapIndicator.unsynchronized,
    stratum: UNSYNCHRONIZED_STRATUM,
    precision,
    rootDelay: 0,
    rootDispersion: secondsToNtpShort(MAX_DISPERSION_S),
    referenceId: 0,
    referenceTime: NTP_TIMESTAMP_ZERO,
  });
}

/** Unix seconds (fractional) → NTP timestamp. */
function toNtp(unixS: number): NtpTimestamp {
  const whole = Math.floor(unixS);
  return Object.freeze(unixToNtp(whole, Math.min(0xffff_ffff, Math.floor((unixS - whole) * 0x1_0000_0000))));
}

/** t2 − t1 for two NTP timestamps less than 68 years apart, in seconds. */
function ntpDiffS(later: NtpTimestamp, earlier: NtpTimestamp): number {
  let seconds = later.seconds - earlier.seconds;
  if (seconds > 0x7fff_ffff) seconds -= 0x1_0000_0000;
  if (seconds < -0x8000_0000) seconds += 0x1_0000_0000;
  return seconds + (later.fraction - earlier.fraction) / 0x1_0000_0000;
}

/** Small listener list shared by both modes. */
class Listeners {
  readonly #set = new Set<(fields: ServerFields) => void>();

  add(listener: (fields: ServerFields) => void): () => void {
    this.#set.add(listener);
    return () => {
      this.#set.delete(listener);
    };
  }

  emit(fields: ServerFields): void {
    for (const listener of this.#set) listener(fields);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Static mode.

/** Server fields fixed by configuration; only the reference time moves (every 64 s). */
export function createStaticTimeSource(config: StaticTimeSourceConfig, options: TimeSourceOptions): TimeSource {
  const precision = options.precision ?? measurePrecision(options.clock);
  const listeners = new Listeners();
  const unsynchronised = config.localStratum >= UNSYNCHRONIZED_STRATUM;
  const make = (): ServerFields =>
    unsynchronised
      ? unsynchronisedFields(precision)
      : Object.freeze({
          leap: LeapIndicator.noWarning,
          stratum: config.localStratum,
          precision,
          rootDelay: 0,
          rootDispersion: 0,
          referenceId: config.referenceId,
          referenceTime: toNtp(Math.floor(options.clock.nowUnixS())),
        });
  let fields = make();
  const timer = setInterval(() => {
    fields = make();
    listeners.emit(fields);
  }, STATIC_REFRESH_S * 1000);
  timer.unref();
  options.logger?.info(
    { stratum: config.localStratum, referenceId: config.referenceIdText, synchronised: !unsynchronised },
    'time source: static server fields',
  );
  return {
    current: () => fields,
    onChange: (listener) => listeners.add(listener),
    ready: Promise.resolve(),
    close: () => {
      clearInterval(timer);
      return Promise.resolve();
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Follow mode.

/** One usable answer from the host daemon, already converted to our view (stratum + 1). */
export interface DaemonSample {
  readonly leap: number;
  readonly stratum: number;
  readonly rootDelayS: number;
  readonly rootDispersionS: number;
  readonly referenceId: number;
  readonly referenceTime: NtpTimestamp;
  /** Loopback round trip minus the daemon's processing time, seconds. */
  readonly delayS: number;
  /** When the answer arrived (clock.nowUnixS()). */
  readonly atUnixS: number;
}

/** Why an answer from the host daemon is unusable. */
export type DaemonReplyRejectReason = 'short' | 'not_server_mode' | 'origin_mismatch' | 'unsynchronised' | 'kiss_of_death' | 'stratum_too_high';

/** Interprets a reply to our mode-3 request; pure, exported for tests. */
export function interpretDaemonReply(
  reply: Uint8Array,
  sentTransmit: Uint8Array,
  roundTripS: number,
  atUnixS: number,
): { ok: true; sample: DaemonSample } | { ok: false; reason: DaemonReplyRejectReason } {
  const decoded = decodeHeader(reply);
  if (!decoded.ok) return { ok: false, reason: 'short' };
  const h = decoded.header;
  if (h.mode !== NtpMode.server) return { ok: false, reason: 'not_server_mode' };
  // RFC 5905 §8: the origin timestamp must echo our transmit timestamp (here: 8 random octets).
  for (let i = 0; i < 8; i++) {
    if (reply[NtpHeaderOffset.originTime + i] !== sentTransmit[i]) return { ok: false, reason: 'origin_mismatch' };
  }
  if (h.stratum === 0) return { ok: false, reason: 'kiss_of_death' };
  if (h.leap === LeapIndicator.unsynchronized) return { ok: false, reason: 'unsynchronised' };
  // Our stratum is one more; 16 would mean unsynchronised (RFC 5905 §7.3).
  if (h.stratum + 1 >= UNSYNCHRONIZED_STRATUM) return { ok: false, reason: 'stratum_too_high' };
  const rootDispersionS = ntpShortToSeconds(h.rootDispersion);
  if (rootDispersionS >= MAX_DISPERSION_S) return { ok: false, reason: 'unsynchronised' };
  const processingS = Math.max(0, ntpDiffS(h.transmitTime, h.receiveTime));
  return {
    ok: true,
    sample: {
      leap: h.leap,
      stratum: h.stratum + 1,
      rootDelayS: ntpShortToSeconds(h.rootDelay),
      rootDispersionS,
      referenceId: h.referenceId,
      referenceTime: h.referenceTime,
      delayS: Math.max(0, roundTripS - processingS),
      atUnixS,
    },
  };
}

/** Follows the host's time daemon over loopback NTP (see the module comment). */
export function createFollowTimeSource(config: FollowTimeSourceConfig, options: TimeSourceOptions): TimeSource {
  const clock = options.clock;
  const log = options.logger;
  const precision = options.precision ?? measurePrecision(clock);
  const precisionS = 2 ** precision;
  const pollS = config.pollIntervalS;
  const timeoutMs = options.queryTimeoutMs ?? Math.min(1000, (pollS * 1000) / 2);
  const listeners = new Listeners();
  const unsynchronised = unsynchronisedFields(precision);
  const request = new Uint8Array(NTP_HEADER_LENGTH);
  const sentTransmit = new Uint8Array(8);

  let sample: DaemonSample | undefined;
  let fields: ServerFields = unsynchronised;
  let synchronised = false;
  let pending: { sentMonoS: number; timer: NodeJS.Timeout } | undefined;
  let closed = false;
  let resolveReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => {
    resolveReady = r;
  });

  const compute = (nowUnixS: number): ServerFields => {
    if (sample === undefined) return unsynchronised;
    const ageS = Math.max(0, nowUnixS - sample.atUnixS);
    if (ageS > STALE_AFTER_POLLS * pollS) return unsynchronised;
    return Object.freeze({
      leap: sample.leap,
      stratum: sample.stratum,
      precision,
      rootDelay: secondsToNtpShort(sample.rootDelayS + sample.delayS),
      rootDispersion: secondsToNtpShort(
        sample.rootDispersionS + precisionS + PHI_S_PER_S * (sample.delayS + ageS + pollS),
      ),
      referenceId: sample.referenceId,
      referenceTime: sample.referenceTime,
    });
  };

  const publish = (): void => {
    fields = compute(clock.nowUnixS());
    const nowSynchronised = fields !== unsynchronised;
    if (nowSynchronised !== synchronised) {
      synchronised = nowSynchronised;
      if (synchronised) log?.info({ stratum: fields.stratum, address: config.address.host, port: config.address.port }, 'time source: following host time daemon');
      else log?.warn({ address: config.address.host, port: config.address.port }, 'time source: host time daemon unsynchronised or unreachable; answering unsynchronised');
    }
    listeners.emit(fields);
    resolveReady();
  };

  const socket: Socket = createSocket({ type: config.address.family === 'IPv6' ? 'udp6' : 'udp4' });
  socket.unref();
  socket.on('error', (error) => {
    log?.debug({ err: error }, 'time source: socket error');
  });
  socket.on('message', (msg, rinfo) => {
    if (pending === undefined) return;
    if (rinfo.port !== config.address.port) return;
    const roundTripS = monotonicS() - pending.sentMonoS;
    const result = interpretDaemonReply(msg, sentTransmit, roundTripS, clock.nowUnixS());
    if (!result.ok && result.reason === 'origin_mismatch') return; // a late or foreign packet: keep waiting
    clearTimeout(pending.timer);
    pending = undefined;
    if (result.ok) {
      sample = result.sample;
    } else {
      log?.debug({ reason: result.reason }, 'time source: unusable answer from host time daemon');
      sample = undefined;
    }
    publish();
  });

  const poll = (): void => {
    if (closed) return;
    if (pending !== undefined) return;
    request.fill(0);
    request[0] = packLiVnMode(LeapIndicator.noWarning, 4, NtpMode.client);
    // Random transmit timestamp (as chrony does): the origin check then also defeats off-path spoofing.
    randomFillSync(sentTransmit);
    request.set(sentTransmit, NtpHeaderOffset.transmitTime);
    const sentMonoS = monotonicS();
    const timer = setTimeout(() => {
      pending = undefined;
      log?.debug({ timeoutMs }, 'time source: no answer from host time daemon');
      publish();
    }, timeoutMs);
    // Left referenced: at most one bounded timer, so `await ready` works even before any listener exists.
    pending = { sentMonoS, timer };
    socket.send(request, config.address.port, config.address.host, (error) => {
      if (error !== null && error !== undefined) log?.debug({ err: error }, 'time source: send failed');
    });
  };

  const interval = setInterval(poll, pollS * 1000);
  interval.unref();
  poll();

  return {
    current: () => fields,
    onChange: (listener) => listeners.add(listener),
    ready,
    close: () => {
      closed = true;
      clearInterval(interval);
      if (pending !== undefined) clearTimeout(pending.timer);
      pending = undefined;
      resolveReady();
      return new Promise<void>((done) => {
        try {
          socket.close(() => done());
        } catch {
          done();
        }
      });
    },
  };
}

/** Creates the time source the configuration asks for. */
export function createTimeSource(config: TimeSourceConfig, options: TimeSourceOptions): TimeSource {
  switch (config.mode) {
    case 'static':
      return createStaticTimeSource(config, options);
    case 'follow':
      return createFollowTimeSource(config, options);
  }
}
