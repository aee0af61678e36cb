/**
 * Per-client rate limiter with chrony's `ratelimit` semantics, for NTS-KE connections and NTP requests.
 *
 * Each client (an IPv4 address, or an IPv6 prefix, /64 by default; both prefix lengths configurable) has a
 * token bucket: it holds at most `burst` tokens and earns one every `intervalMs`. A request that finds a
 * token takes it and is admitted. One that finds none is over the limit: it is refused, except that one
 * in 2^`leak` refused requests is marked `leak`, so a caller can send an occasional answer (plain NTP: a
 * KoD RATE) and a client whose address an attacker spoofs is never silenced completely (chrony's leak).
 * The leak is counted per client, not drawn at random, so this stays pure and testable.
 *
 * The buckets live in a ClientTable (core/client-table.ts): bounded memory, set-associative, and when a
 * bucket is full the least recently seen client in it is forgotten (it starts again with a full bucket).
 * Backed by a SharedArrayBuffer, one table serves every thread, so a client that lands on N threads
 * (SO_REUSEPORT spreads by 4-tuple) still gets one budget. The configuration lives in the table's header,
 * so a change made through any view reaches every thread at its next request.
 *
 * Time: callers pass `nowMs` from one clock that every sharing thread reads the same way
 * (e.g. performance.timeOrigin + performance.now()); a step backwards earns nothing and takes nothing away.
 */
import { ClientTable, ClientTableUser, clientTableBytes, type ClientTableCursor } from './client-table.js';
import { hashIpWords, maskIpPrefix, parseIpAddress, type IpFamily } from './ip.js';

/** Limits of one limiter; `intervalMs` 0 turns it off (every request admitted, the table untouched). */
export interface RateLimitConfig {
  /** Milliseconds to earn one token (chrony `interval`, there as log2 seconds). 0 = off. */
  readonly intervalMs: number;
  /** Bucket size: requests a client may make back to back (chrony `burst`), at least 1. */
  readonly burst: number;
  /** One in 2^leak refused requests is marked `leak` (chrony `leak`); 0 = never. 0..16. */
  readonly leak: number;
  /** Bits of an IPv4 address that make its key (32 = one address). */
  readonly ipv4PrefixBits: number;
  /** Bits of an IPv6 address that make its key (64 = one site's /64). */
  readonly ipv6PrefixBits: number;
}

/** What a request gets: `admit`; `limit` (over the limit: drop, or close before TLS); `leak` (over the limit, but answer sparingly). */
export type RateDecision = 'admit' | 'limit' | 'leak';

const CFG_INTERVAL_MS = 0;
const CFG_BURST = 1;
const CFG_LEAK = 2;
const CFG_V4_BITS = 3;
const CFG_V6_BITS = 4;

/** Slot values: float 0 = tokens, float 1 = last seen (ms, also the eviction order), int 0 = refusals. */
const F_TOKENS = 0;
const F_LAST_MS = 1;
const I_REFUSED = 0;

/** Octets a limiter table of `tableSize` clients occupies (48 per client plus a small header). */
export function rateLimiterBytes(tableSize: number): number {
  return clientTableBytes(tableSize);
}

/** Checks a configuration; returns a problem description or undefined. */
export function rateLimitConfigProblem(config: RateLimitConfig): string | undefined {
  const int = (v: number, min: number, max: number): boolean => Number.isInteger(v) && v >= min && v <= max;
  if (!int(config.intervalMs, 0, 2 ** 31 - 1)) return `intervalMs out of range: ${config.intervalMs}`;
  if (!int(config.burst, 1, 2 ** 31 - 1)) return `burst out of range: ${config.burst}`;
  if (!int(config.leak, 0, 16)) return `leak out of range: ${config.leak}`;
  if (!int(config.ipv4PrefixBits, 0, 32)) return `ipv4PrefixBits out of range: ${config.ipv4PrefixBits}`;
  if (!int(config.ipv6PrefixBits, 0, 128)) return `ipv6PrefixBits out of range: ${config.ipv6PrefixBits}`;
  return undefined;
}

/** A token-bucket rate limiter over a (possibly shared) bounded table. */
export class RateLimiter extends ClientTableUser {
  readonly #words = new Uint32Array(4);
  readonly #cursor: ClientTableCursor = { bucket: 0, slot: -1 };

  /**
   * Creates a limiter in `buffer` (at least rateLimiterBytes(tableSize) octets; a SharedArrayBuffer to
   * share it) with `seed` (32 random bits from the caller) and `config`.
   */
  static create(buffer: ArrayBuffer | SharedArrayBuffer, tableSize: number, seed: number, config: RateLimitConfig): RateLimiter {
    const limiter = new RateLimiter(new ClientTable(buffer, { capacity: tableSize, seed }));
    limiter.configure(config);
    return limiter;
  }

  /** Attaches to a limiter another thread created in `buffer` (same table, same configuration). */
  static attach(buffer: ArrayBuffer | SharedArrayBuffer): RateLimiter {
    return new RateLimiter(new ClientTable(buffer));
  }

  private constructor(table: ClientTable) {
    super(table);
  }

  /** The current configuration (as every view of the table sees it). */
  get config(): RateLimitConfig {
    const t = this.table;
    return {
      intervalMs: t.userWord(CFG_INTERVAL_MS),
      burst: t.userWord(CFG_BURST),
      leak: t.userWord(CFG_LEAK),
      ipv4PrefixBits: t.userWord(CFG_V4_BITS),
      ipv6PrefixBits: t.userWord(CFG_V6_BITS),
    };
  }

  /**
   * Replaces the limits for every thread (SIGHUP). Existing buckets are kept; a lower burst caps them at
   * their next request. Changing a prefix length changes keys: old entries age out. Throws RangeError on
   * a configuration rateLimitConfigProblem rejects (validated config never is).
   */
  configure(config: RateLimitConfig): void {
    const problem = rateLimitConfigProblem(config);
    if (problem !== undefined) throw new RangeError(problem);
    const t = this.table;
    t.setUserWord(CFG_BURST, config.burst);
    t.setUserWord(CFG_LEAK, config.leak);
    t.setUserWord(CFG_V4_BITS, config.ipv4PrefixBits);
    t.setUserWord(CFG_V6_BITS, config.ipv6PrefixBits);
    t.setUserWord(CFG_INTERVAL_MS, config.intervalMs);
  }

  /**
   * One request from `address` (an IP literal as node:net/node:dgram report it) at `nowMs`. A string that
   * is not an IP literal is keyed as the unspecified address (all such requests share one bucket).
   */
  take(address: string, nowMs: number): RateDecision {
    if (this.table.userWord(CFG_INTERVAL_MS) <= 0) return 'admit';
    const words = this.#words;
    let family = parseIpAddress(address, words);
    if (family === 0) {
      words.fill(0);
      family = 6;
    }
    return this.takeWords(words, family, nowMs);
  }

  /**
   * Like take() for an address already parsed by parseIpAddress into `words` (masked in place to the
   * configured prefix: pass a scratch copy). No allocation: for per-packet use.
   */
  takeWords(words: Uint32Array, family: IpFamily, nowMs: number): RateDecision {
    const t = this.table;
    const intervalMs = t.userWord(CFG_INTERVAL_MS);
    if (intervalMs <= 0) return 'admit';
    const burst = t.userWord(CFG_BURST);
    const leak = t.userWord(CFG_LEAK);
    maskIpPrefix(words, family, family === 4 ? t.userWord(CFG_V4_BITS) : t.userWord(CFG_V6_BITS));
    const cursor = this.#cursor;
    t.lock(hashIpWords(words, t.seed), cursor);
    try {
      let slot = t.find(words, cursor);
      let tokens: number;
      if (slot < 0) {
        slot = t.claim(words, cursor, true);
        tokens = burst;
      } else {
        const elapsedMs = nowMs - t.float(slot, F_LAST_MS);
        tokens = Math.min(burst, t.float(slot, F_TOKENS) + (elapsedMs > 0 ? elapsedMs / intervalMs : 0));
      }
      // Keep the later time: a clock read slightly behind another thread's must not re-earn tokens.
      t.setFloat(slot, F_LAST_MS, Math.max(nowMs, t.float(slot, F_LAST_MS)));
      if (tokens >= 1) {
        t.setFloat(slot, F_TOKENS, tokens - 1);
        return 'admit';
      }
      t.setFloat(slot, F_TOKENS, tokens);
      const refused = (t.int(slot, I_REFUSED) + 1) | 0;
      t.setInt(slot, I_REFUSED, refused);
      return leak > 0 && (refused & ((1 << leak) - 1)) === 0 ? 'leak' : 'limit';
    } finally {
      t.unlock(cursor);
    }
  }
}
