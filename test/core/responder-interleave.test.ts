import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cookieLength, sealCookie } from '../../src/core/nts/cookie.js';
import { createKeyset } from '../../src/core/nts/keyset.js';
import { InterleaveTable, interleaveTableBytes } from '../../src/core/interleave.js';
import { Outcome, createResponderContext, respond, type InterleaveClient, type ResponderContext } from '../../src/core/responder.js';
import { readTimestamp, type NtpTimestamp } from '../../src/core/ntp/timestamp.js';
import { buildClientRequest, counting, deterministicRandom, verifyNak, verifyServerReply } from './ntp/independent-nts-client.js';
import { TEST_SERVER_FIELDS, plainRequest } from '../ntp/nts-test-client.js';

const T0 = 1_700_000_000;
const PEER = Uint32Array.of(0, 0, 0xffff, 0xc0000201);
const OTHER = Uint32Array.of(0, 0, 0xffff, 0xc0000202);

interface Rig {
  readonly ctx: ResponderContext;
  readonly client: InterleaveClient;
  readonly table: InterleaveTable;
  clockReads: number;
}

function rig(): Rig {
  const table = InterleaveTable.create(new SharedArrayBuffer(interleaveTableBytes(64)), 64, 5);
  const r: Rig = {
    table,
    client: { table, peer: PEER, nowMs: 0 },
    clockReads: 0,
    ctx: createResponderContext({
      keyset: createKeyset(T0, deterministicRandom(1), { staleKeyCount: 2 }),
      serverFields: TEST_SERVER_FIELDS,
      now: () => {
        r.clockReads++;
        return { seconds: 0xe9a1b2c3, fraction: 0x7777_7777 };
      },
      fillRandom: deterministicRandom(2),
      requireNts: false,
      acceptNtpVersions: [3, 4],
    }),
  };
  return r;
}

function eight(seconds: number, fraction: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, seconds);
  dv.setUint32(4, fraction);
  return b;
}

function plain(origin: Uint8Array, receive: Uint8Array, transmit: Uint8Array): Uint8Array {
  return plainRequest(4, { origin, receive, transmit });
}

function ask(r: Rig, request: Uint8Array, receiveTime: NtpTimestamp, peer = PEER) {
  r.client.peer = peer;
  r.client.nowMs++;
  const out = new Uint8Array(request.length);
  const res = respond(request, receiveTime, r.ctx, out, r.client);
  return { ...res, stampKey: { ...res.stampKey }, reply: out.subarray(0, res.length) };
}

const RX1: NtpTimestamp = { seconds: 0xe9a1b2c3, fraction: 0x1000_0000 };
const RX2: NtpTimestamp = { seconds: 0xe9a1b2c4, fraction: 0x2000_0000 };
const RX3: NtpTimestamp = { seconds: 0xe9a1b2c5, fraction: 0x3000_0000 };
const KERNEL_TX: NtpTimestamp = { seconds: 0xe9a1b2c4, fraction: 0x2000_4001 };

describe('responder: RFC 9769 interleaved client/server mode, plain NTP', () => {
  it('a new client: basic replies, receive marked (bit set), transmit marked (bit clear), nothing saved', () => {
    const r = rig();
    const a = ask(r, plain(new Uint8Array(8), new Uint8Array(8), counting(8, 0xa0)), RX1);
    assert.equal(a.outcome, Outcome.ntpTime);
    assert.equal(a.interleaved, false);
    assert.equal(a.transmitStampWanted, false);
    assert.deepEqual(a.reply.subarray(24, 32), counting(8, 0xa0), 'origin = client transmit');
    assert.equal(readTimestamp(a.reply, 32).fraction, 0x1000_0001);
    assert.equal(readTimestamp(a.reply, 40).fraction, 0x7777_7776);
    assert.equal(r.table.size, 0);
  });

  it('the third exchange is interleaved: origin = request receive, transmit = the previous reply\'s kernel stamp', () => {
    const r = rig();
    const a = ask(r, plain(new Uint8Array(8), new Uint8Array(8), counting(8, 0xa0)), RX1);
    // Second request echoes our receive timestamp: still basic (nothing saved yet), but this reply is saved.
    const b = ask(r, plain(a.reply.subarray(32, 40), eight(0xe9a1b2c3, 0x5000), counting(8, 0xb0)), RX2);
    assert.equal(b.interleaved, false);
    assert.deepEqual(b.reply.subarray(24, 32), counting(8, 0xb0));
    assert.equal(b.transmitStampWanted, true);
    assert.deepEqual(b.stampKey, { seconds: RX2.seconds, fraction: RX2.fraction | 1 });
    assert.deepEqual(readTimestamp(b.reply, 32), b.stampKey, 'the key is the receive timestamp as sent');
    assert.equal(r.table.setTransmit(PEER, b.stampKey.seconds, b.stampKey.fraction, KERNEL_TX), true);
    const reads = r.clockReads;
    const clientRx = eight(0xe9a1b2c4, 0x6000);
    const c = ask(r, plain(b.reply.subarray(32, 40), clientRx, counting(8, 0xc0)), RX3);
    assert.equal(c.outcome, Outcome.ntpTime);
    assert.equal(c.interleaved, true);
    assert.equal(r.clockReads, reads, 'no clock read for an interleaved transmit timestamp');
    assert.deepEqual(c.reply.subarray(24, 32), clientRx, 'origin = the request\'s receive timestamp');
    assert.deepEqual(readTimestamp(c.reply, 32), { seconds: RX3.seconds, fraction: RX3.fraction | 1 });
    assert.deepEqual(readTimestamp(c.reply, 40), { seconds: KERNEL_TX.seconds, fraction: KERNEL_TX.fraction & ~1 });
    assert.equal(c.transmitStampWanted, true, 'and this reply is saved for the next one');
    assert.equal(c.reply.length, 48);
  });

  it('a stamp that never came: the next reply is basic (a fresh clock read)', () => {
    const r = rig();
    const b = ask(r, plain(eight(0xe9a1b2c3, 0x1001), eight(1, 2), counting(8, 0xb0)), RX2);
    assert.equal(b.transmitStampWanted, true);
    const c = ask(r, plain(b.reply.subarray(32, 40), eight(1, 3), counting(8, 0xc0)), RX3);
    assert.equal(c.interleaved, false);
    assert.deepEqual(c.reply.subarray(24, 32), counting(8, 0xc0));
  });

  it('another address echoing a client\'s receive timestamp gets a basic reply and does not use the entry', () => {
    const r = rig();
    const b = ask(r, plain(eight(0xe9a1b2c3, 0x1001), eight(1, 2), counting(8, 0xb0)), RX2);
    r.table.setTransmit(PEER, b.stampKey.seconds, b.stampKey.fraction, KERNEL_TX);
    const spoof = ask(r, plain(b.reply.subarray(32, 40), eight(1, 3), counting(8, 0xd0)), RX3, OTHER);
    assert.equal(spoof.interleaved, false);
    assert.deepEqual(spoof.reply.subarray(40, 48), eight(0xe9a1b2c3, 0x7777_7776));
    const real = ask(r, plain(b.reply.subarray(32, 40), eight(1, 3), counting(8, 0xc0)), RX3);
    assert.equal(real.interleaved, true);
  });

  it('without an interleave client the reply is basic and unmarked (as before)', () => {
    const r = rig();
    const out = new Uint8Array(48);
    const res = respond(plain(eight(0xe9a1b2c3, 0x1001), eight(1, 2), counting(8, 0xb0)), RX2, r.ctx, out);
    assert.equal(res.interleaved, false);
    assert.equal(res.transmitStampWanted, false);
    assert.equal(readTimestamp(out, 32).fraction, RX2.fraction);
    assert.equal(readTimestamp(out, 40).fraction, 0x7777_7777);
  });
});

describe('responder: RFC 9769 interleaved mode under NTS (RFC 8915)', () => {
  const aeadId = 15;
  function session(r: Rig) {
    const c2s = counting(32, 1);
    const s2c = counting(32, 0x81);
    const cookie = new Uint8Array(cookieLength(aeadId));
    sealCookie(r.ctx.keyset, aeadId, c2s, s2c, deterministicRandom(9), cookie, 0);
    return { c2s, s2c, cookie };
  }
  function ntsRequest(s: ReturnType<typeof session>, transmit: Uint8Array, origin?: Uint8Array, receive?: Uint8Array, c2s = s.c2s) {
    return buildClientRequest({
      transmit,
      ...(origin === undefined ? {} : { origin }),
      ...(receive === undefined ? {} : { receive }),
      uniqueId: counting(32, 0x30),
      cookie: s.cookie,
      aeadId,
      c2s,
      nonce: counting(16, 0xc0),
    }).packet;
  }

  it('the interleaved transmit timestamp is authenticated: the reply verifies under S2C with origin = request receive', () => {
    const r = rig();
    const s = session(r);
    const a = ask(r, ntsRequest(s, counting(8, 0xa0)), RX1);
    assert.equal(a.outcome, Outcome.ntsTime);
    const b = ask(r, ntsRequest(s, counting(8, 0xb0), a.reply.subarray(32, 40), eight(5, 6)), RX2);
    assert.equal(b.transmitStampWanted, true);
    verifyServerReply(b.reply, { aeadId, s2c: s.s2c, uniqueId: counting(32, 0x30), transmit: counting(8, 0xb0) });
    r.table.setTransmit(PEER, b.stampKey.seconds, b.stampKey.fraction, KERNEL_TX);
    const clientRx = eight(5, 7);
    const req = ntsRequest(s, counting(8, 0xc0), b.reply.subarray(32, 40), clientRx);
    const c = ask(r, req, RX3);
    assert.equal(c.outcome, Outcome.ntsTime);
    assert.equal(c.interleaved, true);
    assert.ok(c.reply.length <= req.length);
    verifyServerReply(c.reply, { aeadId, s2c: s.s2c, uniqueId: counting(32, 0x30), transmit: clientRx });
    assert.deepEqual(readTimestamp(c.reply, 40), { seconds: KERNEL_TX.seconds, fraction: KERNEL_TX.fraction & ~1 });
  });

  it('a request that fails authentication gets a NAK and leaves the entry for the real client', () => {
    const r = rig();
    const s = session(r);
    const b = ask(r, ntsRequest(s, counting(8, 0xb0), eight(0xe9a1b2c3, 0x1001), eight(5, 6)), RX2);
    r.table.setTransmit(PEER, b.stampKey.seconds, b.stampKey.fraction, KERNEL_TX);
    const forged = ntsRequest(s, counting(8, 0xd0), b.reply.subarray(32, 40), eight(5, 7), counting(32, 99));
    const nak = ask(r, forged, RX3);
    assert.equal(nak.outcome, Outcome.nakAuthFailed);
    verifyNak(nak.reply, { uniqueId: counting(32, 0x30), transmit: counting(8, 0xd0) });
    assert.equal(nak.transmitStampWanted, false);
    const c = ask(r, ntsRequest(s, counting(8, 0xc0), b.reply.subarray(32, 40), eight(5, 7)), RX3);
    assert.equal(c.interleaved, true);
  });

  it('a plain request echoing an NTS client\'s receive timestamp (same address) gets a basic reply', () => {
    const r = rig();
    const s = session(r);
    const b = ask(r, ntsRequest(s, counting(8, 0xb0), eight(0xe9a1b2c3, 0x1001), eight(5, 6)), RX2);
    r.table.setTransmit(PEER, b.stampKey.seconds, b.stampKey.fraction, KERNEL_TX);
    const p = ask(r, plain(b.reply.subarray(32, 40), eight(5, 7), counting(8, 0xd0)), RX3);
    assert.equal(p.interleaved, false);
    const c = ask(r, ntsRequest(s, counting(8, 0xc0), b.reply.subarray(32, 40), eight(5, 7)), RX3);
    assert.equal(c.interleaved, true);
  });
});
