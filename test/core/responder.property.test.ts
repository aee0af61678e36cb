import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { cookieLength, sealCookie } from '../../src/core/nts/cookie.js';
import { createKeyset } from '../../src/core/nts/keyset.js';
import { OUTCOME_COUNT, Outcome, createResponderContext, respond, type ResponderContext } from '../../src/core/responder.js';
import { buildClientRequest, counting, deterministicRandom, verifyServerReply } from './ntp/independent-nts-client.js';

const T0 = 1_700_000_000;
const RECEIVE = { seconds: 0xe9a1_b2c3, fraction: 1 };
const KEY_LENGTH: Record<number, number> = { 15: 32, 16: 48, 17: 64, 30: 16 };
const BUDGET = { interruptAfterTimeLimit: 5000 };

function context(): ResponderContext {
  return createResponderContext({
    keyset: createKeyset(T0, deterministicRandom(1), { staleKeyCount: 2 }),
    serverFields: {
      leap: 0,
      stratum: 2,
      precision: -20,
      rootDelay: 1,
      rootDispersion: 2,
      referenceId: 3,
      referenceTime: { seconds: 4, fraction: 5 },
    },
    now: () => ({ seconds: 0xe9a1_b2c3, fraction: 2 }),
    fillRandom: deterministicRandom(2),
    requireNts: false,
    acceptNtpVersions: [3, 4],
  });
}

const ctx = context();
const sessions = new Map<number, { c2s: Uint8Array; s2c: Uint8Array; cookie: Uint8Array }>();
for (const aeadId of [15, 16, 17, 30]) {
  const k = KEY_LENGTH[aeadId]!;
  const cookie = new Uint8Array(cookieLength(aeadId));
  sealCookie(ctx.keyset, aeadId, counting(k, 1), counting(k, 2), deterministicRandom(aeadId), cookie, 0);
  sessions.set(aeadId, { c2s: counting(k, 1), s2c: counting(k, 2), cookie });
}

/** A valid NTS request as a real client might build it, with the knobs RFC 8915 §5 leaves open. */
const validRequest = fc
  .record({
    aeadId: fc.constantFrom(15, 16, 17, 30),
    uidWords: fc.integer({ min: 8, max: 24 }),
    placeholders: fc.integer({ min: 0, max: 9 }),
    encryptedPlaceholders: fc.integer({ min: 0, max: 3 }),
    shortNonce: fc.boolean(),
    extraPadding: fc.integer({ min: 0, max: 3 }),
    seed: fc.nat(),
  })
  .map((p) => {
    const s = sessions.get(p.aeadId)!;
    const nonceLength = p.aeadId === 30 ? 12 : p.shortNonce ? 8 : 16;
    const requiredPadding = p.aeadId !== 30 && p.shortNonce ? 8 : 0;
    const packet = buildClientRequest({
      transmit: counting(8, p.seed & 0xff),
      uniqueId: counting(p.uidWords * 4, p.seed & 0xff),
      cookie: s.cookie,
      placeholders: p.placeholders,
      encryptedPlaceholders: p.encryptedPlaceholders,
      aeadId: p.aeadId,
      c2s: s.c2s,
      nonce: counting(nonceLength, p.seed >>> 8),
      additionalPadding: requiredPadding + 4 * p.extraPadding,
    }).packet;
    return { ...p, packet };
  });

type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'truncate'; at: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; count: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 40 }) }),
);

function mutate(packet: Uint8Array, m: Mutation): Uint8Array {
  const at = m.at % (packet.length + 1);
  switch (m.op) {
    case 'flip': {
      const p = packet.slice();
      if (at < p.length) p[at]! ^= 1 << m.bit;
      return p;
    }
    case 'set': {
      const p = packet.slice();
      if (at < p.length) p[at] = m.value;
      return p;
    }
    case 'truncate':
      return packet.slice(0, at);
    case 'insert':
      return Uint8Array.from([...packet.subarray(0, at), ...m.bytes, ...packet.subarray(at)]);
    case 'delete':
      return Uint8Array.from([...packet.subarray(0, at), ...packet.subarray(at + m.count)]);
  }
}

function check(request: Uint8Array): { outcome: number; length: number } {
  // A guard zone after the request-sized window catches any write past request.length.
  const out = new Uint8Array(request.length + 64).fill(0xa5);
  const r = respond(request, RECEIVE, ctx, out.subarray(0, request.length));
  assert.ok(r.outcome >= 0 && r.outcome < OUTCOME_COUNT);
  assert.ok(r.length <= request.length, `reply ${r.length} > request ${request.length}`);
  assert.ok(out.subarray(request.length).every((b) => b === 0xa5), 'no write beyond the request length');
  const sent = r.outcome <= Outcome.nakAuthFailed;
  assert.equal(r.length > 0, sent);
  return { outcome: r.outcome, length: r.length };
}

describe('responder properties (RFC 8915 §5.5/§8.4: the reply is never longer than the request)', () => {
  it('random bytes: never throws, never replies longer than the request', () => {
    const firstByte = fc.oneof(fc.constantFrom(0x23, 0x1b, 0xe3, 0x24), fc.integer({ min: 0, max: 255 }));
    fc.assert(
      fc.property(firstByte, fc.uint8Array({ maxLength: 1200 }), (b0, rest) => {
        check(Uint8Array.from([b0, ...rest]));
      }),
      { numRuns: 3000, ...BUDGET },
    );
  });

  it('valid requests: served with min(1 + placeholders, 8) cookies, within the request size, verified by the independent client', () => {
    fc.assert(
      fc.property(validRequest, (p) => {
        const out = new Uint8Array(p.packet.length);
        const r = respond(p.packet, RECEIVE, ctx, out);
        assert.equal(r.outcome, Outcome.ntsTime);
        assert.ok(r.length <= p.packet.length);
        assert.equal(r.cookiesIssued, Math.min(1 + p.placeholders + p.encryptedPlaceholders, 8));
        const v = verifyServerReply(out.subarray(0, r.length), {
          aeadId: p.aeadId,
          s2c: sessions.get(p.aeadId)!.s2c,
          uniqueId: counting(p.uidWords * 4, p.seed & 0xff),
          transmit: counting(8, p.seed & 0xff),
        });
        assert.equal(v.cookies.length, r.cookiesIssued);
      }),
      { numRuns: 400, ...BUDGET },
    );
  });

  it('mutated valid requests: never throws, never replies longer than the request', () => {
    fc.assert(
      fc.property(validRequest, fc.array(mutation, { minLength: 1, maxLength: 4 }), (p, ms) => {
        let packet = p.packet;
        for (const m of ms) packet = mutate(packet, m);
        check(packet);
      }),
      { numRuns: 3000, ...BUDGET },
    );
  });
});
