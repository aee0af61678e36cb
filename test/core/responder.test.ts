import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cookieLength, sealCookie } from '../../src/core/nts/cookie.js';
import { createKeyset, rotateKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import {
  KEY_AGE_NONE,
  OUTCOME_COUNT,
  OUTCOME_METRICS,
  OUTCOME_NAMES,
  Outcome,
  createPooledFillRandom,
  KISS_DENY,
  KISS_RATE,
  createResponderContext,
  respond,
  respondRefused,
  type RefusedResult,
  type ResponderContext,
  type ServerFields,
} from '../../src/core/responder.js';
import type { NtpTimestamp } from '../../src/core/ntp/timestamp.js';
import {
  EfType,
  NTSN,
  buildClientRequest,
  counting,
  deterministicRandom,
  ef,
  splitFields,
  verifyNak,
  verifyServerReply,
  type ClientRequestSpec,
} from './ntp/independent-nts-client.js';
import { fromHex, toHex } from '../vectors/hex.js';

const T0 = 1_700_000_000;
const SERVER: ServerFields = {
  leap: 0,
  stratum: 2,
  precision: -20,
  rootDelay: 0x0000_0123,
  rootDispersion: 0x0000_0456,
  referenceId: 0xc000_0201,
  referenceTime: { seconds: 0xe900_0000, fraction: 0 },
};
const RECEIVE: NtpTimestamp = { seconds: 0xe9a1_b2c3, fraction: 0x1111_1111 };
const TRANSMIT: NtpTimestamp = { seconds: 0xe9a1_b2c3, fraction: 0x2222_2222 };
const KEY_LENGTH: Record<number, number> = { 15: 32, 16: 48, 17: 64, 30: 16 };

interface Session {
  readonly aeadId: number;
  readonly c2s: Uint8Array;
  readonly s2c: Uint8Array;
  readonly cookie: Uint8Array;
}

function context(seed: number, over: Partial<Omit<ResponderContext, 'scratch'>> = {}): ResponderContext {
  return createResponderContext({
    keyset: createKeyset(T0, deterministicRandom(seed), { staleKeyCount: 2 }),
    serverFields: SERVER,
    now: () => TRANSMIT,
    fillRandom: deterministicRandom(seed + 1000),
    requireNts: false,
    acceptNtpVersions: [3, 4],
    ...over,
  });
}

/** What NTS-KE would have handed the client: keys and a cookie sealed by the server. */
function session(keyset: Keyset, aeadId: number, seed = 1): Session {
  const k = KEY_LENGTH[aeadId]!;
  const c2s = counting(k, seed);
  const s2c = counting(k, seed + 0x80);
  const cookie = new Uint8Array(cookieLength(aeadId));
  sealCookie(keyset, aeadId, c2s, s2c, deterministicRandom(seed + 7), cookie, 0);
  return { aeadId, c2s, s2c, cookie };
}

function spec(s: Session, more: Partial<ClientRequestSpec> = {}): ClientRequestSpec {
  return {
    transmit: counting(8, 0xa0),
    uniqueId: counting(32, 0x30),
    cookie: s.cookie,
    aeadId: s.aeadId,
    c2s: s.c2s,
    nonce: counting(s.aeadId === 30 ? 12 : 16, 0xc0),
    ...more,
  };
}

function exchange(ctx: ResponderContext, request: Uint8Array) {
  const out = new Uint8Array(request.length);
  const r = respond(request, RECEIVE, ctx, out);
  return { outcome: r.outcome, keyAge: r.keyAge, cookiesIssued: r.cookiesIssued, reply: out.subarray(0, r.length) };
}

function plainRequest(version: number, mode = 3): Uint8Array {
  const p = new Uint8Array(48);
  p[0] = (version << 3) | mode;
  p[2] = 10;
  p.set(counting(8, 0xa0), 40);
  return p;
}

describe('responder: plain NTP (RFC 5905)', () => {
  it('RFC 5905 §8: a v4 mode-3 request gets a mode-4 reply: origin = client transmit, receive, transmit, server fields', () => {
    const { outcome, reply, keyAge } = exchange(context(1), plainRequest(4));
    assert.equal(outcome, Outcome.ntpTime);
    assert.equal(keyAge, KEY_AGE_NONE);
    assert.equal(
      toHex(reply),
      '24020aec' + '00000123' + '00000456' + 'c0000201' + 'e900000000000000' +
        'a0a1a2a3a4a5a6a7' + 'e9a1b2c311111111' + 'e9a1b2c322222222',
    );
  });

  it('RFC 5905 §7.3: the version number is copied (NTPv3 answered as v3)', () => {
    const { outcome, reply } = exchange(context(1), plainRequest(3));
    assert.equal(outcome, Outcome.ntpTime);
    assert.equal(reply[0], 0x1c);
  });

  it('RFC 7822: unknown EFs and a lone UID are tolerated and never echoed', () => {
    const p = Uint8Array.from([...plainRequest(4), ...ef(0x7001, counting(28)), ...ef(EfType.uniqueIdentifier, counting(32))]);
    const { outcome, reply } = exchange(context(1), p);
    assert.equal(outcome, Outcome.ntpTime);
    assert.equal(reply.length, 48);
  });

  it('drops: not mode 3, version not accepted, runt, malformed EFs, legacy MAC', () => {
    const ctx = context(1, { acceptNtpVersions: [4] });
    assert.equal(exchange(ctx, plainRequest(4, 1)).outcome, Outcome.dropPolicy);
    assert.equal(exchange(ctx, plainRequest(4, 4)).outcome, Outcome.dropPolicy);
    assert.equal(exchange(ctx, plainRequest(3)).outcome, Outcome.dropPolicy);
    assert.equal(exchange(ctx, plainRequest(4).subarray(0, 47)).outcome, Outcome.dropMalformed);
    assert.equal(exchange(ctx, Uint8Array.from([...plainRequest(4), 0, 1, 0, 16, 0, 0, 0, 0])).outcome, Outcome.dropMalformed);
    assert.equal(exchange(ctx, Uint8Array.from([...plainRequest(4), ...new Uint8Array(20)])).outcome, Outcome.dropPolicy);
    const r = exchange(ctx, plainRequest(4, 1));
    assert.equal(r.reply.length, 0);
  });

  it('require-nts drops plain NTP (OPERATIONS.md require-nts)', () => {
    const ctx = context(1, { requireNts: true });
    assert.equal(exchange(ctx, plainRequest(4)).outcome, Outcome.dropRequireNts);
    assert.equal(exchange(ctx, plainRequest(3)).outcome, Outcome.dropRequireNts);
  });

  it('refuses an output buffer shorter than the request (caller bug)', () => {
    assert.throws(() => respond(plainRequest(4), RECEIVE, context(1), new Uint8Array(47)), RangeError);
  });
});

describe('responder: NTS (RFC 8915 §5.7)', () => {
  it('RFC 8915 §5.7: pinned reply for AEAD 15, no placeholders; the independent client verifies it', () => {
    const ctx = context(2);
    const s = session(ctx.keyset, 15);
    const req = buildClientRequest(spec(s)).packet;
    assert.equal(req.length, 228);
    const { outcome, reply, keyAge, cookiesIssued } = exchange(ctx, req);
    assert.equal(outcome, Outcome.ntsTime);
    assert.equal(keyAge, 0);
    assert.equal(cookiesIssued, 1);
    assert.equal(reply.length, 228, 'same size as the request (RFC 8915 §5.7 / §8.4)');
    const v = verifyServerReply(reply, { aeadId: 15, s2c: s.s2c, uniqueId: counting(32, 0x30), transmit: counting(8, 0xa0) });
    assert.equal(v.cookies.length, 1);
    assert.equal(v.cookies[0]!.length, 100);
    assert.equal(v.nonce.length, 16);
    assert.equal(toHex(reply), PINNED_NTS_15);
  });

  it('RFC 8915 §5.7: pinned reply for AEAD 30 with two placeholders (three cookies)', () => {
    const ctx = context(3);
    const s = session(ctx.keyset, 30, 5);
    const req = buildClientRequest(spec(s, { placeholders: 2 })).packet;
    const { outcome, reply, cookiesIssued } = exchange(ctx, req);
    assert.equal(outcome, Outcome.ntsTime);
    assert.equal(cookiesIssued, 3);
    assert.ok(reply.length <= req.length);
    const v = verifyServerReply(reply, { aeadId: 30, s2c: s.s2c, uniqueId: counting(32, 0x30), transmit: counting(8, 0xa0) });
    assert.deepEqual(v.cookies.map((c) => c.length), [68, 68, 68]);
    assert.equal(v.nonce.length, 12);
    assert.equal(toHex(reply), PINNED_NTS_30);
  });

  it('RFC 8915 §5.7: the server issues 1 + valid placeholders cookies, at most 8, inside the encrypted part', () => {
    const ctx = context(4);
    const s = session(ctx.keyset, 15);
    for (const [clear, enc, expected] of [
      [0, 0, 1],
      [1, 0, 2],
      [7, 0, 8],
      [3, 4, 8],
      [9, 0, 8],
      [0, 12, 8],
    ] as const) {
      const req = buildClientRequest(spec(s, { placeholders: clear, encryptedPlaceholders: enc })).packet;
      const { outcome, reply, cookiesIssued } = exchange(ctx, req);
      assert.equal(outcome, Outcome.ntsTime);
      assert.equal(cookiesIssued, expected, `${clear}+${enc} placeholders`);
      assert.ok(reply.length <= req.length);
      const v = verifyServerReply(reply, { aeadId: 15, s2c: s.s2c, uniqueId: counting(32, 0x30), transmit: counting(8, 0xa0) });
      assert.equal(v.cookies.length, expected);
    }
  });

  it('RFC 8915 §5.5: placeholders whose body length differs from the cookie earn no cookie', () => {
    const ctx = context(5);
    const s = session(ctx.keyset, 15);
    const req = buildClientRequest(spec(s, { placeholders: 3, placeholderLength: 40 })).packet;
    const r = exchange(ctx, req);
    assert.equal(r.outcome, Outcome.ntsTime);
    assert.equal(r.cookiesIssued, 1);
  });

  it('RFC 8915 §5.7: cookies in a reply work at this server (and keys carry over)', () => {
    const ctx = context(6);
    let s = session(ctx.keyset, 15);
    for (let i = 0; i < 3; i++) {
      const req = buildClientRequest(spec(s, { uniqueId: counting(32, i) })).packet;
      const { outcome, reply } = exchange(ctx, req);
      assert.equal(outcome, Outcome.ntsTime, `round ${i}`);
      const v = verifyServerReply(reply, { aeadId: 15, s2c: s.s2c, uniqueId: counting(32, i), transmit: counting(8, 0xa0) });
      s = { ...s, cookie: v.cookies[0]! };
    }
  });

  it('RFC 8915 §5.3: the Unique Identifier is echoed byte for byte, authenticated but not encrypted', () => {
    const ctx = context(7);
    const s = session(ctx.keyset, 15);
    const uid = counting(64, 0x55);
    const req = buildClientRequest(spec(s, { uniqueId: uid })).packet;
    const { reply } = exchange(ctx, req);
    const fields = splitFields(reply);
    assert.equal(fields[0]!.type, EfType.uniqueIdentifier);
    assert.deepEqual(fields[0]!.body, uid);
    verifyServerReply(reply, { aeadId: 15, s2c: s.s2c, uniqueId: uid, transmit: counting(8, 0xa0) });
  });

  it('RFC 8915 §5.3: a Unique Identifier shorter than 32 octets is dropped', () => {
    const ctx = context(7);
    const s = session(ctx.keyset, 15);
    assert.equal(exchange(ctx, buildClientRequest(spec(s, { uniqueId: counting(28) })).packet).outcome, Outcome.dropMalformed);
  });

  it('RFC 8915 §5.7: exactly one Unique Identifier and one Cookie, else dropped', () => {
    const ctx = context(8);
    const s = session(ctx.keyset, 15);
    for (const extra of [ef(EfType.uniqueIdentifier, counting(32)), ef(EfType.cookie, s.cookie)]) {
      const r = exchange(ctx, buildClientRequest(spec(s, { leadingFields: [extra] })).packet);
      assert.equal(r.outcome, Outcome.dropMalformed);
      assert.equal(r.reply.length, 0);
    }
  });

  it('RFC 8915 §5.7: NAK carries only the Unique Identifier (unknown key, bad cookie tag, malformed cookie, bad authenticator)', () => {
    const ctx = context(9);
    const s = session(ctx.keyset, 15);
    const uid = counting(32, 0x30);
    const cases: [string, Uint8Array, number][] = [];
    const unknown = s.cookie.slice();
    unknown[0]! ^= 0xff;
    cases.push(['unknown key', buildClientRequest(spec(s, { cookie: unknown })).packet, Outcome.nakCookieUnknownKey]);
    const tampered = s.cookie.slice();
    tampered[50]! ^= 1;
    cases.push(['decrypt failed', buildClientRequest(spec(s, { cookie: tampered })).packet, Outcome.nakCookieDecryptFailed]);
    cases.push(['malformed', buildClientRequest(spec(s, { cookie: s.cookie.subarray(0, 40) })).packet, Outcome.nakCookieMalformed]);
    cases.push(['auth failed', buildClientRequest(spec(s, { c2s: counting(32, 99) })).packet, Outcome.nakAuthFailed]);
    for (const [name, req, expected] of cases) {
      const { outcome, reply, cookiesIssued } = exchange(ctx, req);
      assert.equal(outcome, expected, name);
      assert.equal(cookiesIssued, 0);
      assert.ok(reply.length <= req.length, name);
      assert.equal(reply.length, 48 + 36, name);
      verifyNak(reply, { uniqueId: uid, transmit: counting(8, 0xa0) });
      assert.equal(reply[0]! >> 6, 3, 'LI = 3 in a Kiss-o-Death');
    }
  });

  it('RFC 8915 §5.7: pinned NAK bytes (KoD stratum 0, refid NTSN)', () => {
    const ctx = context(10);
    const s = session(ctx.keyset, 15);
    const { reply } = exchange(ctx, buildClientRequest(spec(s, { c2s: counting(32, 99) })).packet);
    assert.equal(
      toHex(reply),
      'e40006ec' + '00000000' + '00000000' + NTSN.toString(16) + '0000000000000000' +
        'a0a1a2a3a4a5a6a7' + 'e9a1b2c311111111' + 'e9a1b2c322222222' + '01040024' + toHex(counting(32, 0x30)),
    );
  });

  it('RFC 8915 §5.6: the associated data covers the header and every EF before the Authenticator', () => {
    const ctx = context(11);
    const s = session(ctx.keyset, 15);
    const req = buildClientRequest(spec(s, { placeholders: 1 })).packet;
    for (const at of [1, 20, 40, 47, 60, 48 + 36 + 104 + 50]) {
      const bad = req.slice();
      bad[at]! ^= 0x80;
      const r = exchange(ctx, bad);
      assert.ok(r.outcome === Outcome.nakAuthFailed || r.outcome === Outcome.dropPolicy, `offset ${at}: ${OUTCOME_NAMES[r.outcome]}`);
    }
  });

  it('RFC 8915 §5.7: unauthenticated EFs after the Authenticator are discarded and never echoed', () => {
    const ctx = context(12);
    const s = session(ctx.keyset, 15);
    const trailing = Uint8Array.from([...ef(EfType.uniqueIdentifier, counting(32, 0xee)), ...ef(EfType.cookiePlaceholder, new Uint8Array(100))]);
    const req = buildClientRequest(spec(s, { trailing })).packet;
    const { outcome, reply, cookiesIssued } = exchange(ctx, req);
    assert.equal(outcome, Outcome.ntsTime);
    assert.equal(cookiesIssued, 1, 'a placeholder after the Authenticator earns nothing');
    const v = verifyServerReply(reply, { aeadId: 15, s2c: s.s2c, uniqueId: counting(32, 0x30), transmit: counting(8, 0xa0) });
    assert.equal(v.cookies.length, 1);
    assert.ok(!toHex(reply).includes(toHex(counting(32, 0xee))), 'trailing UID not echoed');
  });

  it('RFC 8915 §5.7 / RFC 7822: unknown EFs before the Authenticator are tolerated and not echoed', () => {
    const ctx = context(13);
    const s = session(ctx.keyset, 15);
    const odd = ef(0x7abc, counting(40, 0x99));
    const req = buildClientRequest(spec(s, { leadingFields: [odd] })).packet;
    const { outcome, reply } = exchange(ctx, req);
    assert.equal(outcome, Outcome.ntsTime);
    assert.ok(!splitFields(reply).some((f) => f.type === 0x7abc));
    verifyServerReply(reply, { aeadId: 15, s2c: s.s2c, uniqueId: counting(32, 0x30), transmit: counting(8, 0xa0) });
  });

  it('RFC 8915 §5.6: a short nonce without the additional padding is dropped; with it the request is served within its size', () => {
    const ctx = context(14);
    const s = session(ctx.keyset, 15);
    const bare = buildClientRequest(spec(s, { nonce: counting(4) })).packet;
    assert.equal(exchange(ctx, bare).outcome, Outcome.dropMalformed);
    const padded = buildClientRequest(spec(s, { nonce: counting(4), additionalPadding: 12 })).packet;
    const r = exchange(ctx, padded);
    assert.equal(r.outcome, Outcome.ntsTime);
    assert.ok(r.reply.length <= padded.length);
    verifyServerReply(r.reply, { aeadId: 15, s2c: s.s2c, uniqueId: counting(32, 0x30), transmit: counting(8, 0xa0) });
  });

  it('RFC 8915 §6: cookies under stale and next keys open and report their generation', () => {
    const rnd = deterministicRandom(15);
    const ctx = context(15);
    const old = session(ctx.keyset, 15);
    ctx.keyset = rotateKeyset(ctx.keyset, T0 + 86_400, rnd);
    const r1 = exchange(ctx, buildClientRequest(spec(old)).packet);
    assert.equal(r1.outcome, Outcome.ntsTime);
    assert.equal(r1.keyAge, 1);
    const ahead = rotateKeyset(createKeyset(T0, deterministicRandom(15), { staleKeyCount: 2 }), T0 + 86_400, deterministicRandom(15));
    // `ahead` has the same keys as ctx.keyset (same seeds), rotated once more: its current is our next.
    const further = rotateKeyset(ahead, T0 + 2 * 86_400, deterministicRandom(99));
    const r2 = exchange(ctx, buildClientRequest(spec(session(further, 15))).packet);
    assert.equal(r2.outcome, Outcome.ntsTime);
    assert.equal(r2.keyAge, -1);
  });

  it('transmit time is read once, after cookie minting and the nonce, just before sealing (chrony order)', () => {
    const log: string[] = [];
    const rnd = deterministicRandom(16);
    const ctx = context(16, {
      fillRandom: (b) => {
        log.push(`r${b.length}`);
        rnd(b);
      },
      now: () => {
        log.push('now');
        return TRANSMIT;
      },
    });
    const s = session(ctx.keyset, 15);
    const req = buildClientRequest(spec(s, { placeholders: 2 })).packet;
    log.length = 0;
    const { outcome, reply } = exchange(ctx, req);
    assert.equal(outcome, Outcome.ntsTime);
    // Three cookie nonces (12), then the reply nonce (16), then the clock.
    assert.deepEqual(log, ['r12', 'r12', 'r12', 'r16', 'now']);
    assert.deepEqual(reply.subarray(40, 48), fromHex('e9a1b2c322222222'));
    verifyServerReply(reply, { aeadId: 15, s2c: s.s2c, uniqueId: counting(32, 0x30), transmit: counting(8, 0xa0) });
  });

  it('every AEAD the server implements round-trips with the independent client', () => {
    const ctx = context(17);
    for (const aeadId of [15, 16, 17, 30]) {
      const s = session(ctx.keyset, aeadId);
      const req = buildClientRequest(spec(s, { placeholders: 1 })).packet;
      const { outcome, reply } = exchange(ctx, req);
      assert.equal(outcome, Outcome.ntsTime, `aead ${aeadId}`);
      assert.ok(reply.length <= req.length);
      const v = verifyServerReply(reply, { aeadId, s2c: s.s2c, uniqueId: counting(32, 0x30), transmit: counting(8, 0xa0) });
      assert.equal(v.cookies.length, 2);
    }
  });

  it('createPooledFillRandom hands out each source octet exactly once, in order', () => {
    let next = 0;
    let calls = 0;
    const source = (b: Uint8Array): void => {
      calls++;
      for (let i = 0; i < b.length; i++) b[i] = next++ & 0xff;
    };
    const pooled = createPooledFillRandom(source, 64);
    const drawn: number[] = [];
    for (const n of [12, 16, 12, 12, 16, 12]) {
      const b = new Uint8Array(n);
      pooled(b);
      drawn.push(...b);
    }
    // 12+16+12+12 = 52 fit the first pool; the next 16 does not, so the pool refills (octets 64..127).
    assert.deepEqual(drawn.slice(0, 52), [...counting(52)]);
    assert.deepEqual(drawn.slice(52), [...counting(28, 64)]);
    assert.equal(calls, 2);
    const big = new Uint8Array(100);
    pooled(big);
    assert.equal(calls, 3, 'a draw larger than the pool goes to the source');
  });

  it('outcome tables are complete and consistent', () => {
    assert.equal(OUTCOME_NAMES.length, OUTCOME_COUNT);
    assert.equal(OUTCOME_METRICS.length, OUTCOME_COUNT);
    assert.deepEqual(Object.values(Outcome).sort((a, b) => a - b), [...Array(OUTCOME_COUNT).keys()]);
    for (const m of OUTCOME_METRICS) assert.ok((m.response === null) !== (m.dropReason === null), 'sent xor dropped');
  });
});

/** 228 octets: header | UID EF (36) | Authenticator EF (144: nonce 16, ciphertext 120 = 1 cookie EF + tag). */
const PINNED_NTS_15 =
  '240206ec0000012300000456c0000201e900000000000000a0a1a2a3a4a5a6a7e9a1b2c311111111e9a1b2c322222222' +
  '01040024303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f0404009000100078c9783157' +
  'f5a2e6f1d24635dda3248aa0f91614c0653ec050ba1c0f643205d11727fc9fba3f00139a225e82d1cecdfe5c8c0da411' +
  '68d1ad706f5f48a11442f752b0268b88734384d27935ce8c5b89f6b5a5542587c1b4ee1dd7a2140bfd2af0ee7ce5376f' +
  '66ce5491be0b994fe5dff845e0c877fc78d6e05d7324b99b6a46872d92953363e47a72ab';
/** Header | UID EF (36) | Authenticator EF (252: nonce 12, ciphertext 232 = 3 cookie EFs of 72 + tag). */
const PINNED_NTS_30 =
  '240206ec0000012300000456c0000201e900000000000000a0a1a2a3a4a5a6a7e9a1b2c311111111e9a1b2c322222222' +
  '01040024303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f040400fc000c00e8c18a92ce' +
  '4ca66ed65fb67f2d98f69ca81f79547fdb592b55fb2f39fba33e237c7a214e523a7b3582c9c64edae8065ccec398e32d' +
  '65aa9950fefdb5c70184db9ed7f7d34a9c83b8c98f5a02f5104b7794ff72d521329d94bf7feabbaad1c6950bfd975c99' +
  'f628836d13437aac200a28e83729a5cd0f4c7abc972c95e73bee3f939cbffedacb374c605c7542bede218cf01f205a3a' +
  'aa2616e2c28e9c5e21d3957b61695fe9f76d415b9ee5ac7aaec7edd325ad3b5496bc7ba0fd25e1f2363fb612b53c020c' +
  'ea9b7a806cf4f95bbeae7beb26c76219402d2caf05ffd92e3a84d5313792751f144807d20744a23252553b84b25da75f';

describe('respondRefused: requests refused by rate limit or access list before any crypto', () => {
  const plain = (version = 4, poll = 6): Uint8Array => {
    const p = new Uint8Array(48);
    p[0] = (version << 3) | 3;
    p[2] = poll;
    p.set(counting(8, 0xa0), 40);
    return p;
  };
  const POLICY = { requireNts: false, acceptNtpVersions: [3, 4], precision: -20 } as const;
  const res = (): RefusedResult => ({ outcome: Outcome.ntpTime, length: 0 });
  const word = (p: Uint8Array, at: number): number => ((p[at]! << 24) | (p[at + 1]! << 16) | (p[at + 2]! << 8) | p[at + 3]!) >>> 0;

  it('RFC 5905 §7.4: a plain NTP client over its limit gets a KoD RATE (stratum 0, LI 3, origin echoed), 48 octets', () => {
    const out = new Uint8Array(48);
    const req = plain(4);
    const r = respondRefused(req, RECEIVE, 'rateLimited', POLICY, out, res());
    assert.equal(r.outcome, Outcome.kodRate);
    assert.equal(r.length, 48);
    assert.equal(out[0], (3 << 6) | (4 << 3) | 4, 'LI 3, VN 4, mode 4');
    assert.equal(out[1], 0, 'stratum 0');
    assert.equal(out[2], 6, 'poll echoed');
    assert.equal(word(out, 12), KISS_RATE);
    assert.deepEqual(out.subarray(24, 32), req.subarray(40, 48), 'origin = client transmit');
    assert.deepEqual(OUTCOME_METRICS[Outcome.kodRate]?.response, { protocol: 'ntp', kind: 'kod' });
  });

  it('a denied plain NTPv3 client gets a KoD DENY with its own version', () => {
    const out = new Uint8Array(48);
    const r = respondRefused(plain(3), RECEIVE, 'denied', POLICY, out, res());
    assert.equal(r.outcome, Outcome.kodDeny);
    assert.equal((out[0]! >>> 3) & 7, 3);
    assert.equal(word(out, 12), KISS_DENY);
  });

  it('NTS requests never get a KoD (it could be forged against them): counted drops', () => {
    const ctx = context(2);
    const s = session(ctx.keyset, 15);
    const req = buildClientRequest(spec(s)).packet;
    const out = new Uint8Array(req.length);
    assert.equal(respondRefused(req, RECEIVE, 'rateLimited', POLICY, out, res()).outcome, Outcome.dropRateLimited);
    assert.equal(respondRefused(req, RECEIVE, 'denied', POLICY, out, res()).outcome, Outcome.dropAccess);
    assert.equal(respondRefused(req, RECEIVE, 'denied', POLICY, out, res()).length, 0);
  });

  it('ignore, require-nts, bad modes, unaccepted versions and short packets are drops', () => {
    const out = new Uint8Array(64);
    assert.equal(respondRefused(plain(), RECEIVE, 'ignored', POLICY, out, res()).outcome, Outcome.dropAccess);
    assert.equal(respondRefused(plain(), RECEIVE, 'rateLimited', { ...POLICY, requireNts: true }, out, res()).outcome, Outcome.dropRateLimited);
    assert.equal(respondRefused(plain(2), RECEIVE, 'denied', POLICY, out, res()).outcome, Outcome.dropAccess);
    const server = plain();
    server[0] = (4 << 3) | 4;
    assert.equal(respondRefused(server, RECEIVE, 'rateLimited', POLICY, out, res()).length, 0);
    assert.equal(respondRefused(plain().subarray(0, 40), RECEIVE, 'rateLimited', POLICY, out, res()).outcome, Outcome.dropRateLimited);
  });

  it('property: never longer than the request, never throws', () => {
    for (let n = 0; n < 2000; n++) {
      const len = n % 97;
      const bytes = new Uint8Array(len);
      deterministicRandom(n + 1)(bytes);
      if (n % 3 === 0 && len >= 1) bytes[0] = (4 << 3) | 3; // often a client header
      const out = new Uint8Array(Math.max(48, len));
      for (const reason of ['rateLimited', 'denied', 'ignored'] as const) {
        assert.ok(respondRefused(bytes, RECEIVE, reason, POLICY, out, res()).length <= len);
      }
    }
  });
});
