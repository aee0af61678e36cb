/**
 * The NTP/NTS responder: one request in, at most one reply out (RFC 5905 §8–§9 server mode,
 * RFC 8915 §5.7 NTS server rules). Pure: the clock, the randomness and the keyset come in through the
 * context, and the reply goes into a caller-owned buffer.
 *
 * Size guarantee (RFC 8915 §5.5, §8.4): the reply is written to out[0, length) and is never longer
 * than the request. This holds by construction: every reply is built from a budget of
 * `request.length` octets (a NAK is the header plus the request's own UID EF; an NTS reply issues only
 * as many cookies as fit).
 *
 * Order of work for an NTS reply (chrony's habit, ARCHITECTURE.md): open the cookie, verify the
 * request, mint the new cookies, key the S2C cipher, draw the nonce — then read the transmit clock,
 * stamp it into the header and seal, because the header is part of the associated data.
 *
 * Hot path: no closures, no Buffer, no per-packet allocation beyond small subarray views. The keyed
 * AEAD instances for C2S and S2C are kept per context and re-keyed in place (RekeyableAeadCipher), so
 * no key schedule object is allocated per packet; the last request's expanded keys stay in them until
 * the next request (best-effort secrecy, like every other buffer the GC has not reused yet). Scratch
 * buffers and the result object live in the context and are reused; a result is valid until the next call.
 */
import { padTo4, writeU32, type FillRandom } from './bytes.js';
import { getAead, isRekeyable, sealRegions, type AeadAlgorithm, type AeadCipher } from './crypto/aead.js';
import { EF_HEADER_LENGTH } from './ntp/extension.js';
import { LeapIndicator, NTP_HEADER_LENGTH, NtpHeaderOffset, NtpMode, packLiVnMode } from './ntp/header.js';
import { writeTimestamp, type NtpTimestamp } from './ntp/timestamp.js';
import {
  looksInterleaved,
  markReceiveFraction,
  originFraction,
  originSeconds,
  type InterleaveExchange,
  type InterleaveTable,
  type MutableNtpTimestamp,
} from './interleave.js';
import {
  COOKIE_MAX_LENGTH,
  COOKIE_OVERHEAD,
  COOKIE_PLAINTEXT_HEADER_LENGTH,
  CookieStatus,
  createCookieOpenScratch,
  openCookieInto,
  sealCookie,
  wipeCookieOpenScratch,
  type CookieOpenScratch,
} from './nts/cookie.js';
import { KISS_NTSN, NtsExtensionFieldType } from './nts/ids.js';
import { retireMasterKeys, type Keyset } from './nts/keyset.js';
import {
  AUTHENTICATOR_LENGTHS_SIZE,
  MAX_COOKIES_PER_REPLY,
  authenticateNtsRequest,
  createNtsRequestScratch,
  parseNtsRequest,
  writeAuthenticatorPrefix,
  writeFieldHeader,
  type NtsRequestScratch,
} from './nts/ntp-fields.js';

/** What happened to a request: one counter index per value (0..OUTCOME_COUNT-1). */
export const Outcome = {
  /** Plain NTP (v3/v4) mode-4 reply sent. */
  ntpTime: 0,
  /** Authenticated NTS reply sent (RFC 8915 §5.7). */
  ntsTime: 1,
  /** NTS NAK sent: the cookie has an impossible layout (RFC 8915 §5.7). */
  nakCookieMalformed: 2,
  /** NTS NAK sent: no master key with the cookie's key id (RFC 8915 §6). */
  nakCookieUnknownKey: 3,
  /** NTS NAK sent: the cookie did not decrypt (RFC 8915 §5.7). */
  nakCookieDecryptFailed: 4,
  /** NTS NAK sent: the request's Authenticator did not verify under C2S (RFC 8915 §5.7). */
  nakAuthFailed: 5,
  /** Dropped: malformed packet or NTS fields. */
  dropMalformed: 6,
  /** Dropped by policy: not mode 3, version not accepted, or a legacy MAC we do not serve. */
  dropPolicy: 7,
  /** Dropped: plain NTP while NTS is required. */
  dropRequireNts: 8,
  /** Kiss-o'-Death RATE sent: a plain NTP client over its rate limit, leak share (RFC 5905 §7.4). */
  kodRate: 9,
  /** Dropped: over the client's rate limit. */
  dropRateLimited: 10,
  /** Kiss-o'-Death DENY sent: a plain NTP client an access list denies (RFC 5905 §7.4). */
  kodDeny: 11,
  /** Dropped: an access list says ignore, or denies an NTS client (no forgeable KoD for NTS). */
  dropAccess: 12,
} as const;
/** A value of `Outcome`. */
export type OutcomeValue = (typeof Outcome)[keyof typeof Outcome];

/** Number of distinct outcomes (size of a tally array). */
export const OUTCOME_COUNT = 13;

/** Snake-case name of each outcome, indexed by value. */
export const OUTCOME_NAMES = [
  'ntp_time',
  'nts_time',
  'nak_cookie_malformed',
  'nak_cookie_unknown_key',
  'nak_cookie_decrypt_failed',
  'nak_auth_failed',
  'drop_malformed',
  'drop_policy',
  'drop_require_nts',
  'kod_rate',
  'drop_rate_limited',
  'kod_deny',
  'drop_access',
] as const;

/** Metric labels an outcome feeds (OPERATIONS.md metric names). */
export interface OutcomeMetricLabels {
  /** ntsd_ntp_responses_total{protocol, kind}, or null when nothing is sent. */
  readonly response: { readonly protocol: 'ntp' | 'nts'; readonly kind: 'time' | 'nts_nak' | 'kod' } | null;
  /** ntsd_ntp_dropped_total{reason}, or null when a reply is sent. */
  readonly dropReason: 'malformed' | 'policy' | 'require_nts' | 'rate_limited' | 'access_denied' | null;
  /** ntsd_nts_nak_total{reason}, or null when no NAK is sent. */
  readonly nakReason: 'cookie_malformed' | 'cookie_unknown_key' | 'cookie_decrypt_failed' | 'auth_failed' | null;
}

/** Metric labels for each outcome, indexed by value. */
export const OUTCOME_METRICS: readonly OutcomeMetricLabels[] = Object.freeze([
  { response: { protocol: 'ntp', kind: 'time' }, dropReason: null, nakReason: null },
  { response: { protocol: 'nts', kind: 'time' }, dropReason: null, nakReason: null },
  { response: { protocol: 'nts', kind: 'nts_nak' }, dropReason: null, nakReason: 'cookie_malformed' },
  { response: { protocol: 'nts', kind: 'nts_nak' }, dropReason: null, nakReason: 'cookie_unknown_key' },
  { response: { protocol: 'nts', kind: 'nts_nak' }, dropReason: null, nakReason: 'cookie_decrypt_failed' },
  { response: { protocol: 'nts', kind: 'nts_nak' }, dropReason: null, nakReason: 'auth_failed' },
  { response: null, dropReason: 'malformed', nakReason: null },
  { response: null, dropReason: 'policy', nakReason: null },
  { response: null, dropReason: 'require_nts', nakReason: null },
  { response: { protocol: 'ntp', kind: 'kod' }, dropReason: null, nakReason: null },
  { response: null, dropReason: 'rate_limited', nakReason: null },
  { response: { protocol: 'ntp', kind: 'kod' }, dropReason: null, nakReason: null },
  { response: null, dropReason: 'access_denied', nakReason: null },
] as const);

/**
 * `RespondResult.keyAge` when no cookie was opened. It is -2 because Keyset.find already uses -1 for the
 * `next` key; count a cookie decode only when keyAge !== KEY_AGE_NONE.
 */
export const KEY_AGE_NONE = -2;

/** Server state copied into every time reply (RFC 5905 §7.3). Swap the whole object to change it. */
export interface ServerFields {
  /** Leap indicator (RFC 5905 §7.3); 3 when unsynchronised. */
  readonly leap: number;
  /** Stratum (1..15 synchronised; 16 unsynchronised). */
  readonly stratum: number;
  /** Precision exponent, signed log2 seconds (e.g. -20). */
  readonly precision: number;
  /** Root delay in NTP short format (u32, seconds · 2^16). */
  readonly rootDelay: number;
  /** Root dispersion in NTP short format (u32, seconds · 2^16). */
  readonly rootDispersion: number;
  /** Reference id (u32). */
  readonly referenceId: number;
  /** Reference timestamp: when the clock was last set. */
  readonly referenceTime: NtpTimestamp;
}

/** Outcome of one `respond` call; reused (valid until the next call with the same context). */
export interface RespondResult {
  /** What happened (index into OUTCOME_NAMES / OUTCOME_METRICS). */
  outcome: OutcomeValue;
  /** Reply length in octets at out[0, length); 0 when dropped. */
  length: number;
  /** Generation of the key that opened the cookie (0 current, 1..n stale, -1 next), KEY_AGE_NONE if none. */
  keyAge: number;
  /** Cookies placed in the reply. */
  cookiesIssued: number;
  /** RFC 9769: the reply is in interleaved mode (its transmit timestamp is the previous reply's kernel stamp). */
  interleaved: boolean;
  /**
   * RFC 9769: the reply was saved in the interleave table; the shell should have the kernel stamp its
   * transmission and hand the stamp to InterleaveTable.setTransmit(peer, stampKey...).
   */
  transmitStampWanted: boolean;
  /** The reply's receive timestamp as sent (the table key) when transmitStampWanted. */
  readonly stampKey: MutableNtpTimestamp;
}

/**
 * RFC 9769 interleaved mode for one request: the table of the request's `[[server]]`, the client
 * address (core/ip.ts words) and the table's clock. The caller reuses one object and updates it per request.
 */
export interface InterleaveClient {
  table: InterleaveTable;
  peer: Uint32Array;
  nowMs: number;
}

/** Per-context reusable buffers. */
export interface ResponderScratch {
  readonly nts: NtsRequestScratch;
  readonly cookie: CookieOpenScratch;
  /** Plaintext of the reply's encrypted part: up to 8 cookie EFs. */
  readonly replyPlaintext: Uint8Array;
  readonly result: RespondResult;
  /** Re-keyable C2S cipher per AEAD id. */
  readonly c2sCiphers: Map<number, AeadCipher>;
  /** Re-keyable S2C cipher per AEAD id. */
  readonly s2cCiphers: Map<number, AeadCipher>;
  /** A request's origin timestamp, and the stored transmit stamp an interleaved reply carries. */
  readonly origin: MutableNtpTimestamp;
  readonly interleavedTransmit: MutableNtpTimestamp;
  /** What the interleave table's exchange() found and did for the current request. */
  readonly interleaveExchange: InterleaveExchange;
}

/** Everything `respond` needs besides the packet. Mutable fields may be swapped by the shell between calls. */
export interface ResponderContext {
  /**
   * Master keys for opening and sealing cookies. Assigning a new snapshot retires the previous one at once
   * (retireMasterKeys: the master keys the new snapshot does not hold are zeroed and their ciphers wiped, OpenSSL
   * handles included), so the previous snapshot must not be used afterwards in this thread.
   */
  keyset: Keyset;
  /** Stratum, leap, root delay/dispersion, refid, reference time. */
  serverFields: ServerFields;
  /** Transmit clock: read once per reply, as late as possible. */
  now: () => NtpTimestamp;
  /** CSPRNG for nonces and cookie nonces. */
  fillRandom: FillRandom;
  /** Drop plain NTP requests. */
  requireNts: boolean;
  /** NTP versions answered (e.g. [3, 4]); NTS needs 4. */
  acceptNtpVersions: readonly number[];
  /** Reusable buffers (one context per thread). */
  readonly scratch: ResponderScratch;
}

/**
 * Wraps a CSPRNG so that the responder's many small draws (a 12-octet nonce per cookie, a 12–16-octet
 * reply nonce) are served from a pool refilled `poolBytes` at a time. Every octet is handed out once.
 * Measured on the dev machine: node:crypto randomFillSync costs ~1.7 µs per call regardless of size,
 * the pooled draw ~60 ns. Draws larger than the pool go straight to `source`.
 */
export function createPooledFillRandom(source: FillRandom, poolBytes = 4096): FillRandom {
  const pool = new Uint8Array(poolBytes);
  let position = poolBytes;
  return (target: Uint8Array): void => {
    const n = target.length;
    if (n > poolBytes) {
      source(target);
      return;
    }
    if (position + n > poolBytes) {
      source(pool);
      position = 0;
    }
    for (let i = 0; i < n; i++) target[i] = pool[position + i] ?? 0;
    pool.fill(0, position, position + n);
    position += n;
  };
}

/** Creates the scratch buffers for one context. */
export function createResponderScratch(): ResponderScratch {
  return {
    nts: createNtsRequestScratch(),
    cookie: createCookieOpenScratch(),
    replyPlaintext: new Uint8Array(MAX_COOKIES_PER_REPLY * (EF_HEADER_LENGTH + COOKIE_MAX_LENGTH)),
    result: {
      outcome: Outcome.dropMalformed,
      length: 0,
      keyAge: KEY_AGE_NONE,
      cookiesIssued: 0,
      interleaved: false,
      transmitStampWanted: false,
      stampKey: { seconds: 0, fraction: 0 },
    },
    c2sCiphers: new Map(),
    s2cCiphers: new Map(),
    origin: { seconds: 0, fraction: 0 },
    interleavedTransmit: { seconds: 0, fraction: 0 },
    interleaveExchange: { lookup: 'absent', saved: false },
  };
}

/** Creates a responder context with fresh scratch buffers. */
export function createResponderContext(init: Omit<ResponderContext, 'scratch'>): ResponderContext {
  let keyset = init.keyset;
  return {
    get keyset(): Keyset {
      return keyset;
    },
    set keyset(next: Keyset) {
      const previous = keyset;
      keyset = next;
      retireMasterKeys(previous, next);
    },
    serverFields: init.serverFields,
    now: init.now,
    fillRandom: init.fillRandom,
    requireNts: init.requireNts,
    acceptNtpVersions: init.acceptNtpVersions,
    scratch: createResponderScratch(),
  };
}

/** A cipher keyed with `key`: the cached instance re-keyed in place when the backend supports it. */
function keyedCipher(cache: Map<number, AeadCipher>, aead: AeadAlgorithm, key: Uint8Array): AeadCipher {
  const cached = cache.get(aead.aeadId);
  if (cached !== undefined && isRekeyable(cached)) {
    cached.rekey(key);
    return cached;
  }
  const fresh = aead.newCipher(key);
  if (isRekeyable(fresh)) cache.set(aead.aeadId, fresh);
  return fresh;
}

/** Clears what respond() reports besides outcome and length, so a refused or dropped packet carries nothing stale. */
export function resetResult(result: RespondResult): RespondResult {
  result.keyAge = KEY_AGE_NONE;
  result.cookiesIssued = 0;
  result.interleaved = false;
  result.transmitStampWanted = false;
  return result;
}

function finish(result: RespondResult, outcome: OutcomeValue, length: number): RespondResult {
  result.outcome = outcome;
  result.length = length;
  return result;
}

/**
 * Copies a request timestamp into the reply's origin field: its transmit timestamp (RFC 5905 §8), or its
 * receive timestamp in interleaved mode (RFC 9769 §2). A loop, not a subarray view: nothing allocated.
 */
function copyOrigin(request: Uint8Array, out: Uint8Array, from: number = NtpHeaderOffset.transmitTime): void {
  for (let i = 0; i < 8; i++) out[NtpHeaderOffset.originTime + i] = request[from + i] ?? 0;
}

/**
 * Writes a mode-4 server header (everything but the transmit timestamp): server fields from `f`,
 * the client's version and poll copied, origin = client transmit, receive = `receiveTime`. In
 * interleaved mode (RFC 9769 §2) the origin is the request's receive timestamp instead.
 */
function writeTimeHeader(request: Uint8Array, receiveTime: NtpTimestamp, f: ServerFields, version: number, out: Uint8Array, interleaved: boolean): void {
  out[0] = packLiVnMode(f.leap, version, NtpMode.server);
  out[1] = f.stratum & 0xff;
  out[2] = request[NtpHeaderOffset.poll] ?? 0;
  out[3] = f.precision & 0xff;
  writeU32(out, NtpHeaderOffset.rootDelay, f.rootDelay);
  writeU32(out, NtpHeaderOffset.rootDispersion, f.rootDispersion);
  writeU32(out, NtpHeaderOffset.referenceId, f.referenceId);
  writeTimestamp(out, NtpHeaderOffset.referenceTime, f.referenceTime);
  copyOrigin(request, out, interleaved ? NtpHeaderOffset.receiveTime : NtpHeaderOffset.transmitTime);
  writeTimestamp(out, NtpHeaderOffset.receiveTime, receiveTime);
}

/** Octet holding the lowest bit of the receive timestamp's fraction. */
const RECEIVE_LOW_OCTET = NtpHeaderOffset.receiveTime + 7;
/** Octet holding the lowest bit of the transmit timestamp's fraction. */
const TRANSMIT_LOW_OCTET = NtpHeaderOffset.transmitTime + 7;

/**
 * RFC 9769 §2, before a time reply's header is written: whether it goes out in interleaved mode (then
 * scratch.interleavedTransmit holds the previous reply's kernel stamp), and, for a request that looks
 * interleaved, the entry this reply leaves in the table (result.transmitStampWanted, result.stampKey).
 * Only requests that look interleaved touch the table.
 */
function planInterleave(request: Uint8Array, receiveTime: NtpTimestamp, client: InterleaveClient, nts: boolean, scratch: ResponderScratch): boolean {
  const result = scratch.result;
  if (!looksInterleaved(request)) return false;
  const origin = scratch.origin;
  origin.seconds = originSeconds(request);
  origin.fraction = originFraction(request);
  const key = result.stampKey;
  key.seconds = receiveTime.seconds;
  key.fraction = markReceiveFraction(receiveTime.fraction);
  const done = client.table.exchange(client.peer, origin, key, nts, client.nowMs, scratch.interleavedTransmit, scratch.interleaveExchange);
  result.transmitStampWanted = done.saved;
  return done.lookup === 'hit';
}

/**
 * Writes a time reply's transmit timestamp: the stored kernel stamp in interleaved mode, else the clock
 * read now. With interleaving on, every reply marks its receive timestamp (lowest bit set) and its
 * transmit timestamp (bit clear), so a later request that echoes our receive timestamp is recognised.
 */
function writeTransmit(ctx: ResponderContext, out: Uint8Array, client: InterleaveClient | undefined, interleaved: boolean): void {
  writeTimestamp(out, NtpHeaderOffset.transmitTime, interleaved ? ctx.scratch.interleavedTransmit : ctx.now());
  if (client === undefined) return;
  out[RECEIVE_LOW_OCTET] = (out[RECEIVE_LOW_OCTET] ?? 0) | 1;
  out[TRANSMIT_LOW_OCTET] = (out[TRANSMIT_LOW_OCTET] ?? 0) & 0xfe;
}

/**
 * RFC 8915 §5.7 NTS NAK: a Kiss-o'-Death (stratum 0, refid "NTSN", LI 3) carrying only the request's
 * Unique Identifier EF — no cookie, no Authenticator. Its length is 48 + the UID EF, so ≤ the request.
 */
function writeNtsNak(
  request: Uint8Array,
  receiveTime: NtpTimestamp,
  ctx: ResponderContext,
  version: number,
  out: Uint8Array,
  outcome: OutcomeValue,
): RespondResult {
  const nts = ctx.scratch.nts;
  out[0] = packLiVnMode(LeapIndicator.unsynchronized, version, NtpMode.server);
  out[1] = 0; // RFC 5905 §7.4: stratum 0 = Kiss-o'-Death
  out[2] = request[NtpHeaderOffset.poll] ?? 0;
  out[3] = ctx.serverFields.precision & 0xff;
  writeU32(out, NtpHeaderOffset.rootDelay, 0);
  writeU32(out, NtpHeaderOffset.rootDispersion, 0);
  writeU32(out, NtpHeaderOffset.referenceId, KISS_NTSN);
  out.fill(0, NtpHeaderOffset.referenceTime, NtpHeaderOffset.originTime);
  copyOrigin(request, out);
  writeTimestamp(out, NtpHeaderOffset.receiveTime, receiveTime);
  const uidOffset = nts.uniqueIdFieldOffset;
  const uidLength = nts.uniqueIdFieldLength;
  out.set(request.subarray(uidOffset, uidOffset + uidLength), NTP_HEADER_LENGTH);
  writeTimestamp(out, NtpHeaderOffset.transmitTime, ctx.now());
  return finish(ctx.scratch.result, outcome, NTP_HEADER_LENGTH + uidLength);
}

/**
 * Answers one NTP/NTS request (RFC 5905 server mode, RFC 8915 §5.7). Writes the reply to out[0, length)
 * and returns the (reused) result. `out` must not overlap `request` and must be at least as long as
 * it (a caller bug otherwise: RangeError). Never throws on peer input. With `client`, time replies
 * follow RFC 9769's interleaved client/server mode (planInterleave); without, basic mode only.
 */
export function respond(
  request: Uint8Array,
  receiveTime: NtpTimestamp,
  ctx: ResponderContext,
  out: Uint8Array,
  client?: InterleaveClient,
): RespondResult {
  const result = resetResult(ctx.scratch.result);
  result.length = 0;
  if (out.length < request.length) throw new RangeError('respond: out must be at least as long as the request');
  const length = request.length;
  if (length < NTP_HEADER_LENGTH) return finish(result, Outcome.dropMalformed, 0);
  const b0 = request[0] ?? 0;
  const mode = b0 & 7;
  const version = (b0 >>> 3) & 7;
  if (mode !== NtpMode.client) return finish(result, Outcome.dropPolicy, 0);
  if (!ctx.acceptNtpVersions.includes(version)) return finish(result, Outcome.dropPolicy, 0);

  if (version !== 4) {
    // Before NTPv4 there are no extension fields: only an optional legacy MAC may follow the header.
    const extra = length - NTP_HEADER_LENGTH;
    if (extra !== 0) return finish(result, extra === 4 || extra === 20 || extra === 24 ? Outcome.dropPolicy : Outcome.dropMalformed, 0);
    if (ctx.requireNts) return finish(result, Outcome.dropRequireNts, 0);
    return plainReply(request, receiveTime, ctx, version, out, client);
  }

  const parsed = parseNtsRequest(request, ctx.scratch.nts);
  if (!parsed.ok) return finish(result, Outcome.dropMalformed, 0);
  if (parsed.kind === 'plain') {
    if (ctx.requireNts) return finish(result, Outcome.dropRequireNts, 0);
    // Symmetric-key authentication (legacy MAC) is not served: an unauthenticated answer would be useless.
    if (parsed.trailer !== 'none') return finish(result, Outcome.dropPolicy, 0);
    return plainReply(request, receiveTime, ctx, version, out, client);
  }
  return ntsReply(request, receiveTime, ctx, version, out, client);
}

/** Why a request is refused before respond() does any work for it. */
export type RefusalReason = 'rateLimited' | 'denied' | 'ignored';

/** Kiss codes (RFC 5905 §7.4) as reference-id words. */
export const KISS_RATE = 0x52415445;
/** "DENY": access denied by the server. */
export const KISS_DENY = 0x44454e59;

/** What respondRefused needs of the server: its `[[server]]` policy and its precision. */
export interface RefusalPolicy {
  readonly requireNts: boolean;
  readonly acceptNtpVersions: readonly number[];
  /** Precision exponent put in the KoD (ServerFields.precision). */
  readonly precision: number;
}

/** Outcome and length of respondRefused (a reused object the caller owns). */
export interface RefusedResult {
  outcome: OutcomeValue;
  length: number;
}

/**
 * The answer to a request refused by policy before any crypto (rate limit, access list), costing a header
 * check at most. `rateLimited` (the limiter's leak share) and `denied` send a 48-octet Kiss-o'-Death RATE or
 * DENY, but only to a plain NTP request (a bare 48-octet mode-3 header of an accepted version, and only
 * when the server answers plain NTP at all); everything else is a counted drop. NTS requests never get
 * one: a KoD is unauthenticated, so anybody could forge it to silence an NTS client, and an NTS client
 * must not act on it (RFC 8915 §5.7 leaves unauthenticated packets to be ignored). `ignored` always drops.
 * Call only for requests the limiter marked `leak` or an access list matched; plain `limit` is a drop the
 * caller counts as Outcome.dropRateLimited without calling this. Writes at most 48 octets into `out`.
 */
export function respondRefused(
  request: Uint8Array,
  receiveTime: NtpTimestamp,
  reason: RefusalReason,
  policy: RefusalPolicy,
  out: Uint8Array,
  result: RefusedResult,
): RefusedResult {
  result.length = 0;
  result.outcome = reason === 'rateLimited' ? Outcome.dropRateLimited : Outcome.dropAccess;
  if (reason === 'ignored' || request.length !== NTP_HEADER_LENGTH || out.length < NTP_HEADER_LENGTH) return result;
  const b0 = request[0] ?? 0;
  const version = (b0 >>> 3) & 7;
  if ((b0 & 7) !== NtpMode.client || !policy.acceptNtpVersions.includes(version) || policy.requireNts) return result;
  out[0] = packLiVnMode(LeapIndicator.unsynchronized, version, NtpMode.server);
  out[1] = 0; // RFC 5905 §7.4: stratum 0 = Kiss-o'-Death
  out[2] = request[NtpHeaderOffset.poll] ?? 0;
  out[3] = policy.precision & 0xff;
  writeU32(out, NtpHeaderOffset.rootDelay, 0);
  writeU32(out, NtpHeaderOffset.rootDispersion, 0);
  writeU32(out, NtpHeaderOffset.referenceId, reason === 'rateLimited' ? KISS_RATE : KISS_DENY);
  out.fill(0, NtpHeaderOffset.referenceTime, NtpHeaderOffset.originTime);
  copyOrigin(request, out);
  // No clock read: a client must not use a KoD's timestamps; the receive time fills both.
  writeTimestamp(out, NtpHeaderOffset.receiveTime, receiveTime);
  writeTimestamp(out, NtpHeaderOffset.transmitTime, receiveTime);
  result.outcome = reason === 'rateLimited' ? Outcome.kodRate : Outcome.kodDeny;
  result.length = NTP_HEADER_LENGTH;
  return result;
}

/** Writes the reply to a request that respond() has accepted, of the request's `version`, into `out`. */
type ReplyWriter = (
  request: Uint8Array,
  receiveTime: NtpTimestamp,
  ctx: ResponderContext,
  version: number,
  out: Uint8Array,
  client: InterleaveClient | undefined,
) => RespondResult;

const plainReply: ReplyWriter = (request, receiveTime, ctx, version, out, client) => {
  const result = ctx.scratch.result;
  const interleaved = client !== undefined && planInterleave(request, receiveTime, client, false, ctx.scratch);
  writeTimeHeader(request, receiveTime, ctx.serverFields, version, out, interleaved);
  writeTransmit(ctx, out, client, interleaved);
  result.interleaved = interleaved;
  return finish(result, Outcome.ntpTime, NTP_HEADER_LENGTH);
};

const ntsReply: ReplyWriter = (request, receiveTime, ctx, version, out, client) => {
  const scratch = ctx.scratch;
  const result = scratch.result;
  const nts = scratch.nts;
  const opened = scratch.cookie;
  const keyset = ctx.keyset;

  // 1. Recover AEAD id, C2S and S2C from the cookie (§5.7 step 1).
  const status = openCookieInto(keyset, request.subarray(nts.cookieOffset, nts.cookieOffset + nts.cookieLength), opened);
  switch (status) {
    case CookieStatus.ok:
      break;
    case CookieStatus.malformed:
      return writeNtsNak(request, receiveTime, ctx, version, out, Outcome.nakCookieMalformed);
    case CookieStatus.unknownKey:
      return writeNtsNak(request, receiveTime, ctx, version, out, Outcome.nakCookieUnknownKey);
    case CookieStatus.decryptFailed:
      return writeNtsNak(request, receiveTime, ctx, version, out, Outcome.nakCookieDecryptFailed);
    default: {
      const unreachable: never = status;
      return unreachable;
    }
  }
  result.keyAge = opened.keyAge;
  const aeadId = opened.aeadId;
  const aead = getAead(aeadId);
  if (aead === undefined) {
    wipeCookieOpenScratch(opened);
    return writeNtsNak(request, receiveTime, ctx, version, out, Outcome.nakCookieMalformed);
  }
  const k = opened.keyLength;
  const c2sKey = opened.plaintext.subarray(COOKIE_PLAINTEXT_HEADER_LENGTH, COOKIE_PLAINTEXT_HEADER_LENGTH + k);
  const s2cKey = opened.plaintext.subarray(COOKIE_PLAINTEXT_HEADER_LENGTH + k, COOKIE_PLAINTEXT_HEADER_LENGTH + 2 * k);

  // 2. Authenticate with C2S and decrypt (§5.6, §5.7); EFs after the Authenticator were never parsed.
  const authenticated = authenticateNtsRequest(request, nts, aead, keyedCipher(scratch.c2sCiphers, aead, c2sKey));
  if (!authenticated.ok) {
    wipeCookieOpenScratch(opened);
    if (authenticated.error === 'auth_failed') {
      return writeNtsNak(request, receiveTime, ctx, version, out, Outcome.nakAuthFailed);
    }
    return finish(result, Outcome.dropMalformed, 0);
  }

  // 3. Size the reply inside the request's length (§5.5, §8.4): header, echoed UID, Authenticator with
  //    a full nonce and as many cookies (≤ 1 + valid placeholders, ≤ 8) as fit.
  const uidLength = authenticated.uniqueIdFieldLength;
  const authOffset = NTP_HEADER_LENGTH + uidLength;
  const nonceLength = aead.nonceLength;
  const nonceField = padTo4(nonceLength);
  const fixed = authOffset + EF_HEADER_LENGTH + AUTHENTICATOR_LENGTHS_SIZE + nonceField + padTo4(aead.tagLength);
  const cookieField = EF_HEADER_LENGTH + COOKIE_OVERHEAD + 2 * k;
  const wanted = 1 + authenticated.cleartextPlaceholderCount + authenticated.encryptedPlaceholderCount;
  const fit = Math.floor((request.length - fixed) / cookieField);
  let count = wanted < MAX_COOKIES_PER_REPLY ? wanted : MAX_COOKIES_PER_REPLY;
  if (fit < count) count = fit;
  if (count < 1) {
    // Cannot happen for a request that obeys §5.6 padding with a cookie of ours; refuse rather than grow.
    wipeCookieOpenScratch(opened);
    return finish(result, Outcome.dropMalformed, 0);
  }

  // 4. Mint the new cookies (§5.7 step 3: inside the encrypted part), then key S2C.
  const plaintext = scratch.replyPlaintext;
  const fillRandom = ctx.fillRandom;
  for (let i = 0, at = 0; i < count; i++, at += cookieField) {
    sealCookie(keyset, aeadId, c2sKey, s2cKey, fillRandom, plaintext, writeFieldHeader(plaintext, at, NtsExtensionFieldType.ntsCookie, cookieField));
  }
  const plaintextLength = count * cookieField;
  const s2c = keyedCipher(scratch.s2cCiphers, aead, s2cKey);
  wipeCookieOpenScratch(opened);

  // 5. Header (no transmit time yet), the echoed UID EF (authenticated, not encrypted; §5.3), the
  //    Authenticator prefix and a fresh nonce. Interleaved mode is decided only now, for an authenticated
  //    request: a forged one cannot use up a client's entry.
  const interleaved = client !== undefined && planInterleave(request, receiveTime, client, true, scratch);
  writeTimeHeader(request, receiveTime, ctx.serverFields, version, out, interleaved);
  out.set(request.subarray(authenticated.uniqueIdFieldOffset, authenticated.uniqueIdFieldOffset + uidLength), NTP_HEADER_LENGTH);
  const ciphertextLength = plaintextLength + aead.tagLength;
  const fieldLength = EF_HEADER_LENGTH + AUTHENTICATOR_LENGTHS_SIZE + nonceField + padTo4(ciphertextLength);
  const nonceAt = writeAuthenticatorPrefix(out, authOffset, fieldLength, nonceLength, ciphertextLength);
  const nonce = out.subarray(nonceAt, nonceAt + nonceLength);
  fillRandom(nonce);
  out.fill(0, nonceAt + nonceLength, nonceAt + nonceField);

  // 6. Transmit timestamp last, then seal: the header is in the associated data (§5.6). In interleaved
  //    mode it is the previous reply's kernel stamp, known already.
  writeTransmit(ctx, out, client, interleaved);
  result.interleaved = interleaved;
  const ciphertextAt = nonceAt + nonceField;
  sealRegions(s2c, out, nonceAt, nonceLength, 0, authOffset, plaintext, 0, plaintextLength, out, ciphertextAt);
  const end = authOffset + fieldLength;
  out.fill(0, ciphertextAt + ciphertextLength, end);
  result.cookiesIssued = count;
  return finish(result, Outcome.ntsTime, end);
};
