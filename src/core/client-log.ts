/**
 * The client log: who talks to this server, and how much. One entry per client key (an IPv4 address, or
 * an IPv6 /64: the rate limiter's default prefixes, so one site is one line) with its NTP requests (plain
 * and NTS), replies, drops by reason, NAKs and KoDs, its NTS-KE sessions by outcome class, when it was
 * first and last seen, and a mean interval between its requests. `ntsd clients` reads it (chrony's
 * `chronyc clients`); it is never a metric label, so Prometheus cardinality stays flat.
 *
 * Memory is fixed when the table is made (core/client-table.ts, clientLogBytes(size) octets, 120 per
 * entry): set-associative, 8 entries per bucket, and when a bucket is full its least recently seen
 * client is forgotten (chrony's clientlog.c makes the same choice). Backed by a SharedArrayBuffer, one log
 * serves every NTP and NTS-KE thread; every update runs under its bucket's lock.
 *
 * Mean interval, after chrony (clientlog.c update_record): the log2 of the interval between a client's
 * requests is averaged so that a client speeding up is believed slowly (the average falls by at most a
 * quarter of an octave per request, so one iburst does not make a client look like a flood) and a client
 * slowing down quickly (the average moves halfway to the new interval at once, or to 2.5 octaves below it
 * when it was further). chrony keeps that average as an 8-bit log2 in quarter steps; here it is a float,
 * with intervals under 1/32 s counted as 1/32 s as there.
 *
 * Pure: callers pass the time (`nowMs` on one clock every sharing thread reads alike, e.g.
 * performance.timeOrigin + performance.now(), which is also Unix milliseconds) and the addresses.
 */
import { ClientTable, ClientTableUser, clientTableBytes, type ClientTableCursor, type ClientTableLayout } from './client-table.js';
import { formatIpAddress, hashIpWords, parseIpAddress, type IpFamily } from './ip.js';
import type { KeSessionOutcomeLabel } from './ke-handler.js';
import { OUTCOME_METRICS } from './responder.js';

/** Bits of an IPv6 address that make a client key (one site's /64; an IPv4 client is its address). */
export const CLIENT_LOG_IPV6_PREFIX_BITS = 64;
/** Default `[observability] client-log-size`: chrony's default clientloglimit (512 KiB) holds 4096 clients too. */
export const DEFAULT_CLIENT_LOG_SIZE = 4096;

// Int32 values of an entry (counters wrap at 2^32).
const I_NTP = 0;
const I_NTS = 1;
const I_REPLIES = 2;
const I_DROP_RATE = 3;
const I_DROP_ACCESS = 4;
const I_DROP_OTHER = 5;
const I_NAK = 6;
const I_KOD = 7;
const I_KE0 = 8;
// Float64 values of an entry: times in ms (0 = never), interval averages as log2 s + LOG2_BIAS (0 = none yet).
const F_FIRST = 0;
/** Float 1 is the table's eviction order: the latest of the NTP and KE times. */
const F_LAST = 1;
const F_NTP_LAST = 2;
const F_KE_LAST = 3;
const F_NTP_LOG2 = 4;
const F_KE_LOG2 = 5;
/** Added to a stored log2 interval so that 0 can mean "no interval yet" (a log2 of seconds is never below -5). */
const LOG2_BIAS = 64;

/** How an NTS-KE connection ended, in the classes the log keeps (values index the KE counters). */
export const KeClass = {
  /** Cookies handed out. */
  ok: 0,
  /** Answered with an NTS-KE Error record: bad request, no common protocol or AEAD, internal error. */
  error: 1,
  /** TLS failed, or the client went away before its answer. */
  tls: 2,
  /** The deadline ran out, or the session was evicted for a newcomer before it finished. */
  timeout: 3,
  /** Refused before TLS: access list, rate limit, connection caps. */
  refused: 4,
} as const;
/** A value of KeClass. */
export type KeClassValue = (typeof KeClass)[keyof typeof KeClass];
/** KeClass names, indexed by value. */
export const KE_CLASS_NAMES = ['ok', 'error', 'tls', 'timeout', 'refused'] as const;

const LAYOUT: ClientTableLayout = { ints: I_KE0 + KE_CLASS_NAMES.length, floats: 6 };

/** The class of a KE session's outcome (the `outcome` label of ntsd_ke_sessions_total). */
export function keClassOf(outcome: KeSessionOutcomeLabel): KeClassValue {
  switch (outcome) {
    case 'success':
      return KeClass.ok;
    case 'bad_request':
    case 'no_common_protocol':
    case 'no_common_aead':
    case 'internal_error':
      return KeClass.error;
    case 'tls_error':
    case 'client_closed':
      return KeClass.tls;
    case 'timeout':
    case 'evicted':
      return KeClass.timeout;
    default: {
      const unreachable: never = outcome;
      return unreachable;
    }
  }
}

/**
 * Longest legacy-MAC plain NTP request, octets (48 + a 4-octet key id and a 20-octet SHA-1 digest). An
 * NTS request is longer (Unique Identifier, cookie and Authenticator fields: RFC 8915 §5.7), so a request
 * dropped before it was parsed is counted as NTS when it is longer than this.
 */
const PLAIN_NTP_MAX_LENGTH = 72;

/** Per responder outcome: 0 plain NTP, 1 NTS, 2 decide by length. */
const REQUEST_KIND = new Uint8Array(OUTCOME_METRICS.length);
/** Per responder outcome: 1 when a reply went out. */
const REPLIED = new Uint8Array(OUTCOME_METRICS.length);
/** Per responder outcome: the extra counter it bumps (drop reason, NAK, KoD), -1 none. */
const EXTRA = new Int8Array(OUTCOME_METRICS.length);
OUTCOME_METRICS.forEach((m, outcome) => {
  const response = m.response;
  REQUEST_KIND[outcome] = response === null ? 2 : response.protocol === 'nts' ? 1 : 0;
  REPLIED[outcome] = response === null ? 0 : 1;
  EXTRA[outcome] =
    response?.kind === 'nts_nak'
      ? I_NAK
      : response?.kind === 'kod'
        ? I_KOD
        : m.dropReason === 'rate_limited'
          ? I_DROP_RATE
          : m.dropReason === 'access_denied'
            ? I_DROP_ACCESS
            : m.dropReason !== null
              ? I_DROP_OTHER
              : -1;
});

/** Octets a client log of `size` entries occupies (120 per entry plus a small header). */
export function clientLogBytes(size: number): number {
  return clientTableBytes(size, LAYOUT);
}

/**
 * The next mean interval (log2 seconds) after a request `intervalMs` after the previous one, from the
 * mean so far (`previousLog2`; NaN when this is the first interval). See the module comment.
 */
export function nextIntervalLog2(previousLog2: number, intervalMs: number): number {
  const sample = Math.log2(Math.max(intervalMs, 1000 / 32) / 1000);
  if (Number.isNaN(previousLog2)) return sample;
  if (sample < previousLog2) return Math.max(sample, previousLog2 - 0.25);
  if (sample > previousLog2) return previousLog2 < sample - 2.5 ? sample - 2.5 : (previousLog2 + sample) / 2;
  return previousLog2;
}

/** One client as read from the log. Times are in the callers' clock (Unix ms); null = never. */
export interface ClientRecord {
  /** The key as text: "192.0.2.1", or "2001:db8:1:2::/64". */
  readonly address: string;
  readonly family: IpFamily;
  /** Plain NTP requests. */
  readonly ntpRequests: number;
  /** NTS requests. */
  readonly ntsRequests: number;
  /** Replies sent (time, NAK or KoD). */
  readonly replies: number;
  readonly dropsRateLimit: number;
  readonly dropsAccess: number;
  /** Malformed, policy (mode, version) and require-nts drops. */
  readonly dropsOther: number;
  readonly naks: number;
  readonly kods: number;
  /** NTS-KE connections by KeClass, indexed by value. */
  readonly ke: readonly number[];
  readonly firstSeenMs: number;
  readonly lastSeenMs: number;
  readonly ntpLastMs: number | null;
  readonly keLastMs: number | null;
  /** Mean interval between NTP requests, log2 seconds (null before the second request). */
  readonly ntpIntervalLog2: number | null;
  /** Mean interval between NTS-KE connections, log2 seconds. */
  readonly keIntervalLog2: number | null;
}

/** Aggregates for the metrics: no address in them. */
export interface ClientLogSummary {
  /** Entries in use. */
  readonly tracked: number;
  /** NTP requests (plain and NTS) over every tracked client. */
  readonly requests: number;
  /** NTP requests of the busiest tracked client. */
  readonly topRequests: number;
}

function familyOfKey(words: Uint32Array): IpFamily {
  return words[0] === 0 && words[1] === 0 && words[2] === 0xffff ? 4 : 6;
}

/** A client log over a (possibly shared) fixed table. */
export class ClientLog extends ClientTableUser {
  readonly #words = new Uint32Array(4);
  readonly #cursor: ClientTableCursor = { bucket: 0, slot: -1 };

  /** Lays out an empty log of `size` entries (≥ 1) in `buffer` (clientLogBytes(size) octets) with `seed` (32 random bits). */
  static create(buffer: ArrayBuffer | SharedArrayBuffer, size: number, seed: number): ClientLog {
    return new ClientLog(new ClientTable(buffer, { capacity: size, seed, layout: LAYOUT }));
  }

  /** Attaches to a log another thread created in `buffer`. */
  static attach(buffer: ArrayBuffer | SharedArrayBuffer): ClientLog {
    return new ClientLog(new ClientTable(buffer));
  }

  private constructor(table: ClientTable) {
    super(table);
  }

  /**
   * Counts one NTP request from `peer` (core/ip.ts words, left untouched; family 0 = unknown, not
   * counted) of `requestLength` octets that ended in responder `outcome`, at `nowMs`. No allocation.
   */
  noteNtp(peer: Uint32Array, family: IpFamily | 0, outcome: number, requestLength: number, nowMs: number): void {
    if (family === 0) return;
    const slot = this.#enter(peer, family, nowMs);
    const t = this.table;
    try {
      this.#noteInterval(slot, F_NTP_LAST, F_NTP_LOG2, nowMs);
      const kind = REQUEST_KIND[outcome] ?? 2;
      t.incrementInt(slot, kind === 1 || (kind === 2 && requestLength > PLAIN_NTP_MAX_LENGTH) ? I_NTS : I_NTP);
      if (REPLIED[outcome] === 1) t.incrementInt(slot, I_REPLIES);
      const extra = EXTRA[outcome] ?? I_DROP_OTHER;
      if (extra >= 0) t.incrementInt(slot, extra);
    } finally {
      t.unlock(this.#cursor);
    }
  }

  /** Counts one NTS-KE connection from `words` (a peer or a key, core/ip.ts form) that ended as `kind`, at `nowMs`. */
  noteKe(words: Uint32Array, kind: KeClassValue, nowMs: number): void {
    const slot = this.#enter(words, familyOfKey(words), nowMs);
    const t = this.table;
    try {
      this.#noteInterval(slot, F_KE_LAST, F_KE_LOG2, nowMs);
      t.incrementInt(slot, I_KE0 + kind);
    } finally {
      t.unlock(this.#cursor);
    }
  }

  /** Folds the gap since the slot's last request of one kind into its mean interval, and moves its last-seen time (slot locked). */
  #noteInterval(slot: number, lastField: number, log2Field: number, nowMs: number): void {
    const t = this.table;
    const last = t.float(slot, lastField);
    if (last > 0) {
      const stored = t.float(slot, log2Field);
      t.setFloat(slot, log2Field, nextIntervalLog2(stored === 0 ? NaN : stored - LOG2_BIAS, nowMs - last) + LOG2_BIAS);
    }
    if (nowMs > last) t.setFloat(slot, lastField, nowMs);
  }

  /** Like noteKe() for an address as node:net reports it; a string that is not an IP literal is not counted. */
  noteKeAddress(address: string, kind: KeClassValue, nowMs: number): void {
    const words = this.#words;
    if (parseIpAddress(address, words) === 0) return;
    this.noteKe(words, kind, nowMs);
  }

  /**
   * Masks `peer` to its key in scratch, locks its bucket, finds or claims its entry (evicting the least
   * recently seen one of a full bucket) and stamps first and last seen. The caller unlocks.
   */
  #enter(peer: Uint32Array, family: IpFamily, nowMs: number): number {
    const words = this.#words;
    // Four stores beat TypedArray.set for four words; an IPv6 key keeps its /64.
    words[0] = peer[0] ?? 0;
    words[1] = peer[1] ?? 0;
    words[2] = family === 6 ? 0 : (peer[2] ?? 0);
    words[3] = family === 6 ? 0 : (peer[3] ?? 0);
    const t = this.table;
    const cursor = this.#cursor;
    t.lock(hashIpWords(words, t.seed), cursor);
    let slot = t.find(words, cursor);
    if (slot < 0) {
      slot = t.claim(words, cursor, true);
      t.setFloat(slot, F_FIRST, nowMs);
    }
    if (nowMs > t.float(slot, F_LAST)) t.setFloat(slot, F_LAST, nowMs);
    return slot;
  }

  /** Every entry, read bucket by bucket under its lock (allocates: for the view, not the hot path). */
  read(): ClientRecord[] {
    const t = this.table;
    const cursor: ClientTableCursor = { bucket: 0, slot: -1 };
    const key = new Uint32Array(4);
    const out: ClientRecord[] = [];
    const count = (slot: number, k: number): number => t.int(slot, k) >>> 0;
    const time = (slot: number, k: number): number | null => {
      const v = t.float(slot, k);
      return v > 0 ? v : null;
    };
    const log2 = (slot: number, k: number): number | null => {
      const v = t.float(slot, k);
      return v === 0 ? null : v - LOG2_BIAS;
    };
    for (let b = 0; b < t.buckets; b++) {
      t.lockBucket(b, cursor);
      try {
        for (let s = b * t.ways; s < (b + 1) * t.ways; s++) {
          if (!t.isUsed(s)) continue;
          t.keyOf(s, key);
          const family = familyOfKey(key);
          out.push({
            address: family === 4 ? formatIpAddress(key, 4) : `${formatIpAddress(key, 6)}/${CLIENT_LOG_IPV6_PREFIX_BITS}`,
            family,
            ntpRequests: count(s, I_NTP),
            ntsRequests: count(s, I_NTS),
            replies: count(s, I_REPLIES),
            dropsRateLimit: count(s, I_DROP_RATE),
            dropsAccess: count(s, I_DROP_ACCESS),
            dropsOther: count(s, I_DROP_OTHER),
            naks: count(s, I_NAK),
            kods: count(s, I_KOD),
            ke: KE_CLASS_NAMES.map((_, k) => count(s, I_KE0 + k)),
            firstSeenMs: t.float(s, F_FIRST),
            lastSeenMs: t.float(s, F_LAST),
            ntpLastMs: time(s, F_NTP_LAST),
            keLastMs: time(s, F_KE_LAST),
            ntpIntervalLog2: log2(s, F_NTP_LOG2),
            keIntervalLog2: log2(s, F_KE_LOG2),
          });
        }
      } finally {
        t.unlock(cursor);
      }
    }
    return out;
  }

  /** Tracked clients and the request counts behind the busiest client's share (a scan without locks: for metrics). */
  summary(): ClientLogSummary {
    const t = this.table;
    let tracked = 0;
    let requests = 0;
    let topRequests = 0;
    for (let s = 0; s < t.capacity; s++) {
      if (!t.isUsed(s)) continue;
      tracked++;
      const n = (t.int(s, I_NTP) >>> 0) + (t.int(s, I_NTS) >>> 0);
      requests += n;
      if (n > topRequests) topRequests = n;
    }
    return { tracked, requests, topRequests };
  }
}

/** One client as `GET /clients` serves it (JSON) and `ntsd clients` prints it. Seconds are rounded to ms. */
export interface ClientView {
  /** "192.0.2.1", or "2001:db8:1:2::/64". */
  readonly address: string;
  readonly ntp: {
    /** Plain and NTS requests. */
    readonly requests: number;
    readonly plain: number;
    readonly nts: number;
    /** Replies sent (time, NAK or KoD). */
    readonly replies: number;
    /** Dropped without a reply, by reason. */
    readonly drops: { readonly rateLimit: number; readonly access: number; readonly other: number };
    readonly naks: number;
    readonly kods: number;
    /** Mean interval between requests, seconds (null before the second request). */
    readonly intervalS: number | null;
    /** Seconds since the last request (null: none). */
    readonly lastAgoS: number | null;
  };
  readonly ke: {
    /** Connections counted, every class. */
    readonly sessions: number;
    readonly ok: number;
    readonly error: number;
    readonly tls: number;
    readonly timeout: number;
    readonly refused: number;
    readonly intervalS: number | null;
    readonly lastAgoS: number | null;
  };
  /** Seconds since first seen (the entry's age: an evicted client starts again). */
  readonly firstAgoS: number;
  /** Seconds since last seen, NTP or NTS-KE. */
  readonly lastAgoS: number;
}

/** The document `GET /clients` serves. */
export interface ClientLogView {
  /** Entries the log can hold (`client-log-size`). */
  readonly capacity: number;
  /** Entries in use. */
  readonly tracked: number;
  readonly clients: readonly ClientView[];
}

function seconds(ms: number): number {
  return Math.round(Math.max(0, ms)) / 1000;
}

function intervalSeconds(log2: number | null): number | null {
  return log2 === null ? null : Math.round(2 ** log2 * 1000) / 1000;
}

/** Turns records into the served view at `nowMs` (same clock as the records), busiest first. */
export function clientLogView(records: readonly ClientRecord[], capacity: number, nowMs: number): ClientLogView {
  const clients = records.map((r): ClientView => {
    const ke = (k: KeClassValue): number => r.ke[k] ?? 0;
    return {
      address: r.address,
      ntp: {
        requests: r.ntpRequests + r.ntsRequests,
        plain: r.ntpRequests,
        nts: r.ntsRequests,
        replies: r.replies,
        drops: { rateLimit: r.dropsRateLimit, access: r.dropsAccess, other: r.dropsOther },
        naks: r.naks,
        kods: r.kods,
        intervalS: intervalSeconds(r.ntpIntervalLog2),
        lastAgoS: r.ntpLastMs === null ? null : seconds(nowMs - r.ntpLastMs),
      },
      ke: {
        sessions: r.ke.reduce((a, b) => a + b, 0),
        ok: ke(KeClass.ok),
        error: ke(KeClass.error),
        tls: ke(KeClass.tls),
        timeout: ke(KeClass.timeout),
        refused: ke(KeClass.refused),
        intervalS: intervalSeconds(r.keIntervalLog2),
        lastAgoS: r.keLastMs === null ? null : seconds(nowMs - r.keLastMs),
      },
      firstAgoS: seconds(nowMs - r.firstSeenMs),
      lastAgoS: seconds(nowMs - r.lastSeenMs),
    };
  });
  clients.sort((a, b) => b.ntp.requests - a.ntp.requests || b.ke.sessions - a.ke.sessions || a.lastAgoS - b.lastAgoS);
  return { capacity, tracked: clients.length, clients };
}
