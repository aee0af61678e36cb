import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import fc from 'fast-check';
import {
  buildNtsRequest,
  MAX_COOKIE_PLACEHOLDERS,
  ntsExchange,
  ntsRequestLength,
  offsetAndDelay,
  timestampDifferenceS,
  verifyNtsResponse,
  type NtsResponseExpectation,
} from '../../src/cli/ntp-client.js';
import { WallClock } from '../../src/runtime/clock.js';
import { getAead, type AeadAlgorithm } from '../../src/core/crypto/aead.js';
import { asciiReferenceId, NTP_HEADER_LENGTH } from '../../src/core/ntp/header.js';
import type { NtpTimestamp } from '../../src/core/ntp/timestamp.js';
import { cookieLength, sealCookie } from '../../src/core/nts/cookie.js';
import { createKeyset } from '../../src/core/nts/keyset.js';
import { createNtsRequestScratch, parseNtsRequest } from '../../src/core/nts/ntp-fields.js';
import { createResponderContext, respond, type ResponderContext } from '../../src/core/responder.js';

const fillRandom = (b: Uint8Array): void => {
  randomFillSync(b);
};
const clock = new WallClock();

function ts(seconds: number, fraction = 0): NtpTimestamp {
  return { seconds: seconds >>> 0, fraction: fraction >>> 0 };
}

/** A core responder (the real server code) with a fresh keyset. */
function makeServer(stratum = 2): ResponderContext {
  return createResponderContext({
    keyset: createKeyset(1_700_000_000, fillRandom, { staleKeyCount: 2 }),
    serverFields: { leap: 0, stratum, precision: -20, rootDelay: 0, rootDispersion: 0, referenceId: asciiReferenceId('TEST'), referenceTime: ts(3_900_000_000) },
    now: () => clock.nowNtp({ seconds: 0, fraction: 0 }),
    fillRandom,
    requireNts: false,
    acceptNtpVersions: [4],
  });
}

interface Session {
  readonly aead: AeadAlgorithm;
  readonly c2s: Uint8Array;
  readonly s2c: Uint8Array;
  readonly cookie: Uint8Array;
}

function makeSession(server: ResponderContext, aeadId: number): Session {
  const aead = getAead(aeadId);
  assert.ok(aead);
  const c2s = new Uint8Array(aead.keyLength);
  const s2c = new Uint8Array(aead.keyLength);
  fillRandom(c2s);
  fillRandom(s2c);
  const cookie = new Uint8Array(cookieLength(aeadId));
  sealCookie(server.keyset, aeadId, c2s, s2c, fillRandom, cookie, 0);
  return { aead, c2s, s2c, cookie };
}

/** Builds a request, runs the core responder on it, returns both plus the expectation to verify with. */
function exchange(server: ResponderContext, session: Session, placeholders: number, cookie = session.cookie) {
  const uniqueId = new Uint8Array(32);
  fillRandom(uniqueId);
  const transmitTime = ts(0x12345678, 0x9abcdef0);
  const request = new Uint8Array(ntsRequestLength(session.aead, 32, cookie.length, placeholders));
  const end = buildNtsRequest(
    { aead: session.aead, c2sCipher: session.aead.newCipher(session.c2s), uniqueId, cookie, placeholders, fillRandom, transmitTime },
    request,
  );
  assert.equal(end, request.length);
  const reply = new Uint8Array(request.length);
  const result = respond(request, clock.nowNtp({ seconds: 0, fraction: 0 }), server, reply);
  const expect: NtsResponseExpectation = { uniqueId, transmitTime, s2cCipher: session.aead.newCipher(session.s2c) };
  return { request, reply: reply.slice(0, result.length), expect };
}

test('RFC 5905 §8: offset and delay from the four timestamps', () => {
  // Client clock 0.4 s behind: t1 = 100.0, t2 = 100.6, t3 = 100.7, t4 = 100.5 → θ = 0.4, δ = 0.4.
  const half = 0x8000_0000;
  const r = offsetAndDelay(ts(100), ts(100, half + 0x1999_9999), ts(100, 0xb333_3333), ts(100, half));
  assert.ok(Math.abs(r.offsetS - 0.4) < 1e-9, String(r.offsetS));
  assert.ok(Math.abs(r.delayS - 0.4) < 1e-9, String(r.delayS));
  // RFC 5905 §6: differences stay correct across the era wrap.
  assert.equal(timestampDifferenceS(ts(1), ts(0xffff_ffff)), 2);
  assert.equal(timestampDifferenceS(ts(0xffff_ffff), ts(1)), -2);
});

test('RFC 8915 §5.7: requests from buildNtsRequest parse as NTS requests in the core, placeholders counted (§5.5)', () => {
  const server = makeServer();
  const session = makeSession(server, 15);
  for (let placeholders = 0; placeholders <= MAX_COOKIE_PLACEHOLDERS; placeholders++) {
    const { request } = exchange(server, session, placeholders);
    const parsed = parseNtsRequest(request, createNtsRequestScratch());
    assert.ok(parsed.ok && parsed.kind === 'nts', JSON.stringify(parsed));
    assert.equal(parsed.cleartextPlaceholderCount, placeholders);
    assert.equal(request[0], 0x23, 'LI 0, VN 4, mode 3');
  }
  assert.throws(() => exchange(server, session, 8), RangeError);
});

for (const aeadId of [15, 16, 17, 30]) {
  test(`RFC 8915 §5.7: a reply from the core responder verifies (AEAD ${aeadId}) and carries 1 + placeholders cookies`, () => {
    const server = makeServer();
    const session = makeSession(server, aeadId);
    for (const placeholders of [0, 3, 7]) {
      const { request, reply, expect } = exchange(server, session, placeholders);
      assert.ok(reply.length > NTP_HEADER_LENGTH);
      assert.ok(reply.length <= request.length, 'RFC 8915 §8.4: reply no larger than the request');
      const checked = verifyNtsResponse(reply, expect);
      assert.ok(checked.ok, JSON.stringify(checked));
      assert.equal(checked.response.header.mode, 4);
      assert.equal(checked.response.header.stratum, 2);
      assert.equal(checked.response.cookies.length, 1 + placeholders);
      // A returned cookie is good for the next request.
      const again = exchange(server, session, 0, checked.response.cookies[0]);
      assert.ok(verifyNtsResponse(again.reply, again.expect).ok);
    }
  });
}

test('RFC 8915 §5.7: a NAK (stratum 0, NTSN, our UID) is recognised; without our UID it is ignored as foreign', () => {
  const server = makeServer();
  const session = makeSession(server, 15);
  const bad = session.cookie.slice();
  bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 1;
  const { reply, expect } = exchange(server, session, 0, bad);
  assert.equal(reply[1], 0, 'stratum 0');
  const checked = verifyNtsResponse(reply, expect);
  assert.ok(!checked.ok && checked.error === 'nts_nak');
  const other = new Uint8Array(32);
  const foreign = verifyNtsResponse(reply, { ...expect, uniqueId: other });
  assert.ok(!foreign.ok && foreign.error === 'unique_id_mismatch');
});

test('RFC 8915 §5.3, RFC 5905 §8: a reply with another UID or origin timestamp is not ours', () => {
  const server = makeServer();
  const session = makeSession(server, 15);
  const { reply, expect } = exchange(server, session, 1);
  const uid = verifyNtsResponse(reply, { ...expect, uniqueId: new Uint8Array(32) });
  assert.ok(!uid.ok && uid.error === 'unique_id_mismatch');
  const origin = verifyNtsResponse(reply, { ...expect, transmitTime: ts(1, 2) });
  assert.ok(!origin.ok && origin.error === 'origin_mismatch');
});

test('RFC 8915 §5.6: a wrong S2C key or any change to the authenticated octets fails the tag', () => {
  const server = makeServer();
  const session = makeSession(server, 15);
  const { reply, expect } = exchange(server, session, 0);
  const wrongKey = verifyNtsResponse(reply, { ...expect, s2cCipher: session.aead.newCipher(new Uint8Array(32)) });
  assert.ok(!wrongKey.ok && wrongKey.error === 'bad_tag');
  const tampered = reply.slice();
  tampered[3] = (tampered[3] ?? 0) ^ 1; // precision: header bytes are associated data
  const t = verifyNtsResponse(tampered, expect);
  assert.ok(!t.ok && t.error === 'bad_tag');
});

test('RFC 8915 §5.7: EFs after the Authenticator are neither trusted nor fatal', () => {
  const server = makeServer();
  const session = makeSession(server, 15);
  const { reply, expect } = exchange(server, session, 0);
  const extended = new Uint8Array(reply.length + 32);
  extended.set(reply);
  extended.set([0x7f, 0x00, 0x00, 0x20], reply.length); // an unknown 32-octet EF
  const checked = verifyNtsResponse(extended, expect);
  assert.ok(checked.ok, JSON.stringify(checked));
  assert.equal(checked.response.unauthenticatedFields, 1);
});

test('verifyNtsResponse never throws on random or mutated replies, and accepts no mutation of authenticated octets', () => {
  const server = makeServer();
  const session = makeSession(server, 15);
  const { reply, expect } = exchange(server, session, 2);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
      verifyNtsResponse(bytes, expect);
    }),
    { numRuns: 2000, interruptAfterTimeLimit: 2000 },
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: reply.length - 1 }), fc.integer({ min: 1, max: 255 }), (index, flip) => {
      const mutated = reply.slice();
      mutated[index] = (mutated[index] ?? 0) ^ flip;
      const r = verifyNtsResponse(mutated, expect);
      assert.equal(r.ok, false, `mutation at ${index} accepted`);
    }),
    { numRuns: 2000, interruptAfterTimeLimit: 3000 },
  );
});

/** A UDP server on 127.0.0.1:0 running the core responder; `before` may send extra datagrams first. */
async function startUdpResponder(server: ResponderContext, before?: (send: (b: Uint8Array) => void, request: Uint8Array) => void) {
  const socket = createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    const request = new Uint8Array(msg);
    const send = (b: Uint8Array): void => {
      socket.send(b, rinfo.port, rinfo.address);
    };
    before?.(send, request);
    const out = new Uint8Array(request.length);
    const r = respond(request, clock.nowNtp({ seconds: 0, fraction: 0 }), server, out);
    if (r.length > 0) send(out.subarray(0, r.length));
  });
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  return { port: socket.address().port, close: () => new Promise<void>((resolve) => socket.close(() => resolve())) };
}

test('ntsExchange over real UDP: authenticated reply, fresh cookies, small offset and delay; stray packets ignored', async (t) => {
  const server = makeServer();
  const session = makeSession(server, 15);
  const udp = await startUdpResponder(server, (send, request) => {
    // A stray reply with the right origin but a different UID arrives first (RFC 8915 §5.3).
    const stray = request.slice(0, NTP_HEADER_LENGTH);
    stray[0] = 0x24;
    stray.set(request.subarray(40, 48), 24);
    send(stray);
  });
  t.after(() => udp.close());
  const outcome = await ntsExchange({
    server: '127.0.0.1',
    port: udp.port,
    aeadId: 15,
    c2s: session.c2s,
    s2c: session.s2c,
    cookie: session.cookie,
    placeholders: 2,
    timeoutMs: 2000,
    clock,
  });
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.equal(outcome.result.cookies.length, 3);
  assert.ok(Math.abs(outcome.result.offsetS) < 0.05, `offset ${outcome.result.offsetS}`);
  assert.ok(outcome.result.delayS >= 0 && outcome.result.delayS < 0.5, `delay ${outcome.result.delayS}`);
  assert.equal(outcome.result.requestLength, outcome.result.responseLength);
});

test('ntsExchange reports an NTS NAK, and a timeout when nothing answers', async (t) => {
  const server = makeServer();
  const session = makeSession(server, 15);
  const udp = await startUdpResponder(server);
  t.after(() => udp.close());
  const nak = await ntsExchange({
    server: '127.0.0.1',
    port: udp.port,
    aeadId: 15,
    c2s: session.c2s,
    s2c: session.s2c,
    cookie: new Uint8Array(session.cookie.length),
    placeholders: 0,
    timeoutMs: 2000,
  });
  assert.ok(!nak.ok && nak.failure.kind === 'nts_nak', JSON.stringify(nak));

  const mute = createSocket('udp4');
  mute.bind(0, '127.0.0.1');
  await once(mute, 'listening');
  t.after(() => new Promise<void>((resolve) => mute.close(() => resolve())));
  const timeout = await ntsExchange({
    server: '127.0.0.1',
    port: mute.address().port,
    aeadId: 15,
    c2s: session.c2s,
    s2c: session.s2c,
    cookie: session.cookie,
    placeholders: 0,
    timeoutMs: 200,
  });
  assert.ok(!timeout.ok && timeout.failure.kind === 'timeout', JSON.stringify(timeout));
});
