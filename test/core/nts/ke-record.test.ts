import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  decodeKeMessage,
  decodeKeRecord,
  encodeKeMessage,
  encodeKeRecord,
  type KeRecord,
  keRecordLength,
  scanKeMessage,
} from '../../../src/core/nts/ke-record.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** A typical client request: Next Protocol [0], AEAD [30, 15], End of Message. */
const CLIENT_REQUEST = hex('8001 0002 0000' + '8004 0004 001e 000f' + '8000 0000');

describe('KE record header (RFC 8915 §4)', () => {
  it('RFC 8915 §4: the critical bit is the top bit of the first octet', () => {
    const crit = decodeKeRecord(hex('8000 0000'), 0);
    const nonCrit = decodeKeRecord(hex('0000 0000'), 0);
    assert.ok(crit.ok && nonCrit.ok);
    assert.equal(crit.record.critical, true);
    assert.equal(nonCrit.record.critical, false);
    assert.equal(toHex(encodeKeMessage([{ kind: 'endOfMessage', critical: true }])), '80000000');
  });

  it('RFC 8915 §4: record type is 15 bits, big-endian', () => {
    const r = decodeKeRecord(hex('ffff 0000'), 0);
    assert.ok(r.ok);
    assert.deepEqual(r.record, { kind: 'unknown', critical: true, type: 0x7fff, body: new Uint8Array(0) });
    const t1024 = decodeKeRecord(hex('0400 0000'), 0);
    assert.ok(t1024.ok);
    assert.equal(t1024.record.kind, 'chronyCompliantExporter');
  });

  it('RFC 8915 §4: body length counts the body only, not the 4-octet header', () => {
    const r = decodeKeRecord(hex('0005 0003 aabbcc 8000 0000'), 0);
    assert.ok(r.ok);
    assert.equal(r.next, 7);
    assert.ok(r.record.kind === 'newCookie');
    assert.equal(toHex(r.record.cookie), 'aabbcc');
    assert.equal(keRecordLength(r.record), 7);
  });

  it('decodes the typical client request', () => {
    const m = decodeKeMessage(CLIENT_REQUEST);
    assert.ok(m.ok);
    assert.equal(m.length, CLIENT_REQUEST.length);
    assert.deepEqual(m.records, [
      { kind: 'nextProtocol', critical: true, protocolIds: [0] },
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [30, 15] },
      { kind: 'endOfMessage', critical: true },
    ]);
  });

  it('decodes every typed record', () => {
    const cases: [string, KeRecord][] = [
      ['8002 0002 0001', { kind: 'error', critical: true, code: 1 }],
      ['8003 0002 8001', { kind: 'warning', critical: true, code: 0x8001 }],
      ['8006 0009 6e74732e74657374 2e', { kind: 'ntpv4Server', critical: true, server: 'nts.test.' }],
      ['8007 0002 3039', { kind: 'ntpv4Port', critical: true, port: 12345 }],
      ['0400 0000', { kind: 'chronyCompliantExporter', critical: false }],
      ['0001 0000', { kind: 'nextProtocol', critical: false, protocolIds: [] }],
      ['0004 0006 0011 0010 1234', { kind: 'aeadAlgorithm', critical: false, aeadIds: [17, 16, 0x1234] }],
      ['4000 0002 abcd', { kind: 'unknown', critical: false, type: 0x4000, body: hex('abcd') }],
    ];
    for (const [bytes, expected] of cases) {
      const buf = hex(bytes);
      const r = decodeKeRecord(buf, 0);
      assert.ok(r.ok, bytes);
      assert.deepEqual(r.record, expected, bytes);
      const out = new Uint8Array(buf.length);
      assert.equal(encodeKeRecord(expected, out, 0), buf.length);
      assert.equal(toHex(out), toHex(buf), bytes);
    }
  });

  it('keeps unknown ids as numbers (registries stay open)', () => {
    const r = decodeKeRecord(hex('8001 0004 8001 0007'), 0);
    assert.ok(r.ok && r.record.kind === 'nextProtocol');
    assert.deepEqual(r.record.protocolIds, [0x8001, 7]);
  });

  it('returns subarray views, not copies', () => {
    const buf = hex('0005 0004 01020304 4321 0001 ff');
    const a = decodeKeRecord(buf, 0);
    const b = decodeKeRecord(buf, 8);
    assert.ok(a.ok && a.record.kind === 'newCookie' && b.ok && b.record.kind === 'unknown');
    assert.equal(a.record.cookie.buffer, buf.buffer);
    assert.equal(a.record.cookie.byteOffset, buf.byteOffset + 4);
    assert.equal(b.record.body.buffer, buf.buffer);
  });

  it('reports impossible body lengths for known types', () => {
    for (const bytes of ['8000 0001 00', '8001 0003 000000', '8002 0000', '8002 0003 000000', '8003 0001 00', '8004 0001 0f', '8007 0003 000000', '0400 0001 00']) {
      const r = decodeKeRecord(hex(bytes), 0);
      assert.ok(!r.ok, bytes);
      assert.equal(r.error, 'bad_body_length', bytes);
    }
  });

  it('reports truncation', () => {
    const h = decodeKeRecord(hex('8000 00'), 0);
    assert.ok(!h.ok && h.error === 'truncated_header');
    const b = decodeKeRecord(hex('8005 0004 0102'), 0);
    assert.ok(!b.ok && b.error === 'truncated_body');
  });

  it('RFC 8915 §4.1.1: a message without End of Message is incomplete', () => {
    const m = decodeKeMessage(hex('8001 0002 0000'));
    assert.ok(!m.ok);
    assert.equal(m.error, 'missing_end_of_message');
    const empty = decodeKeMessage(new Uint8Array(0));
    assert.ok(!empty.ok && empty.error === 'missing_end_of_message');
  });

  it('RFC 8915 §4.1.1: End of Message is the last record (octets after it are refused)', () => {
    const m = decodeKeMessage(hex('8000 0000 8001 0002 0000'));
    assert.ok(!m.ok);
    assert.equal(m.error, 'data_after_end_of_message');
  });

  it('encoder rejects caller bugs with RangeError', () => {
    const small = new Uint8Array(3);
    assert.throws(() => encodeKeRecord({ kind: 'endOfMessage', critical: true }, small, 0), RangeError);
    assert.throws(() => encodeKeMessage([{ kind: 'nextProtocol', critical: true, protocolIds: [65536] }]), RangeError);
    assert.throws(() => encodeKeMessage([{ kind: 'ntpv4Port', critical: true, port: -1 }]), RangeError);
    assert.throws(() => encodeKeMessage([{ kind: 'unknown', critical: false, type: 0x8000, body: new Uint8Array(0) }]), RangeError);
    assert.throws(() => encodeKeMessage([{ kind: 'newCookie', critical: false, cookie: new Uint8Array(65536) }]), RangeError);
    assert.throws(() => encodeKeMessage([{ kind: 'ntpv4Server', critical: true, server: 'ñ\u0101' }]), RangeError);
  });
});

describe('scanKeMessage (stream framing)', () => {
  it('reports complete with the length through End of Message', () => {
    assert.deepEqual(scanKeMessage(CLIENT_REQUEST), { status: 'complete', length: CLIENT_REQUEST.length });
    const withTrailer = new Uint8Array([...CLIENT_REQUEST, 1, 2, 3]);
    assert.deepEqual(scanKeMessage(withTrailer), { status: 'complete', length: CLIENT_REQUEST.length });
  });

  it('reports incomplete with a resume offset at the first unfinished record', () => {
    assert.deepEqual(scanKeMessage(CLIENT_REQUEST.subarray(0, 0)), { status: 'incomplete', resumeOffset: 0 });
    assert.deepEqual(scanKeMessage(CLIENT_REQUEST.subarray(0, 5)), { status: 'incomplete', resumeOffset: 0 });
    assert.deepEqual(scanKeMessage(CLIENT_REQUEST.subarray(0, 6)), { status: 'incomplete', resumeOffset: 6 });
    assert.deepEqual(scanKeMessage(CLIENT_REQUEST.subarray(0, 17)), { status: 'incomplete', resumeOffset: 14 });
    assert.deepEqual(scanKeMessage(CLIENT_REQUEST, { fromOffset: 14 }), { status: 'complete', length: 18 });
  });

  it('treats any type-0 record as the end for framing (its body and critical bit are for validation)', () => {
    assert.deepEqual(scanKeMessage(hex('0000 0002 abcd')), { status: 'complete', length: 6 });
    assert.deepEqual(scanKeMessage(hex('0000 0002 ab')), { status: 'incomplete', resumeOffset: 0 });
  });

  it('reports malformed as soon as a header proves the cap will be exceeded', () => {
    // A 60000-octet body announced against a 4096 cap: refuse without waiting for the body.
    assert.deepEqual(scanKeMessage(hex('0005 ea60'), { maxLength: 4096 }), { status: 'malformed' });
    // A record that fits exactly but leaves no room for End of Message.
    assert.deepEqual(scanKeMessage(hex('0005 000c'), { maxLength: 16 }), { status: 'malformed' });
    assert.deepEqual(scanKeMessage(hex('0005 0008'), { maxLength: 16 }), { status: 'incomplete', resumeOffset: 0 });
  });

  it('RFC 8915 §4: a server MUST accept requests of at least 1024 octets', () => {
    const pad: KeRecord = { kind: 'unknown', critical: false, type: 0x4321, body: new Uint8Array(1024 - 16 - 4) };
    const msg = encodeKeMessage([
      { kind: 'nextProtocol', critical: true, protocolIds: [0] },
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
      pad,
      { kind: 'endOfMessage', critical: true },
    ]);
    assert.equal(msg.length, 1024);
    assert.deepEqual(scanKeMessage(msg, { maxLength: 1024 }), { status: 'complete', length: 1024 });
  });
});

// ---------- property tests (time-budgeted) ----------

const u16 = fc.integer({ min: 0, max: 0xffff });
const bytes = (max: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ maxLength: max });
const knownTypes = new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 1024]);
const arbRecord: fc.Arbitrary<KeRecord> = fc.oneof(
  fc.record({ kind: fc.constant('endOfMessage' as const), critical: fc.boolean() }),
  fc.record({ kind: fc.constant('nextProtocol' as const), critical: fc.boolean(), protocolIds: fc.array(u16, { maxLength: 8 }) }),
  fc.record({ kind: fc.constant('error' as const), critical: fc.boolean(), code: u16 }),
  fc.record({ kind: fc.constant('warning' as const), critical: fc.boolean(), code: u16 }),
  fc.record({ kind: fc.constant('aeadAlgorithm' as const), critical: fc.boolean(), aeadIds: fc.array(u16, { maxLength: 8 }) }),
  fc.record({ kind: fc.constant('newCookie' as const), critical: fc.boolean(), cookie: bytes(200) }),
  fc.record({
    kind: fc.constant('ntpv4Server' as const),
    critical: fc.boolean(),
    server: fc.string({ maxLength: 40 }).map((s) => s.replace(/[^\x00-\xff]/g, 'x')),
  }),
  fc.record({ kind: fc.constant('ntpv4Port' as const), critical: fc.boolean(), port: u16 }),
  fc.record({ kind: fc.constant('chronyCompliantExporter' as const), critical: fc.boolean() }),
  fc.record({ kind: fc.constant('keepAlive' as const), critical: fc.boolean() }),
  fc.record({ kind: fc.constant('supportedNextProtocolList' as const), critical: fc.boolean(), protocolIds: fc.array(u16, { maxLength: 8 }) }),
  fc.record({
    kind: fc.constant('supportedAlgorithmList' as const),
    critical: fc.boolean(),
    algorithms: fc.array(fc.tuple(u16, u16).map(([aeadId, keyLength]) => ({ aeadId, keyLength })), { maxLength: 6 }),
  }),
  fc.record({
    kind: fc.constant('fixedKeyRequest' as const),
    critical: fc.boolean(),
    keys: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((half) => Uint8Array.from([...half, ...half.map((b) => b ^ 0x5a)])),
  }),
  fc.record({
    kind: fc.constant('ntpServerDeny' as const),
    critical: fc.boolean(),
    server: fc.string({ maxLength: 40 }).map((s) => s.replace(/[^\x00-\xff]/g, 'x')),
  }),
  fc.record({ kind: fc.constant('authenticationToken' as const), critical: fc.boolean(), token: bytes(40) }),
  fc.record({
    kind: fc.constant('unknown' as const),
    critical: fc.boolean(),
    type: fc.integer({ min: 0, max: 0x7fff }).filter((t) => !knownTypes.has(t)),
    body: bytes(64),
  }),
).map((r): KeRecord => ({ ...r })); // fc.record builds null-prototype objects; deepEqual wants plain ones
const budget = { numRuns: 3000, interruptAfterTimeLimit: 2500 };

describe('KE record codec properties', () => {
  it('no decoder or the scanner throws on random bytes', () => {
    fc.assert(
      fc.property(bytes(300), fc.nat(310), fc.nat(400), (buf, off, cap) => {
        decodeKeRecord(buf, off);
        decodeKeMessage(buf);
        scanKeMessage(buf);
        scanKeMessage(buf, { fromOffset: off, maxLength: cap });
      }),
      budget,
    );
  });

  it('decode ∘ encode is the identity on records', () => {
    fc.assert(
      fc.property(arbRecord, (record) => {
        const out = new Uint8Array(keRecordLength(record) + 3);
        const end = encodeKeRecord(record, out, 3);
        assert.equal(end, out.length);
        const back = decodeKeRecord(out, 3);
        assert.ok(back.ok);
        assert.deepEqual(back.record, record);
        assert.equal(back.next, end);
      }),
      budget,
    );
  });

  it('encode ∘ decode is the identity on bytes that decode as a message', () => {
    fc.assert(
      fc.property(fc.array(arbRecord, { maxLength: 6 }), (records) => {
        const all = [...records.filter((r) => r.kind !== 'endOfMessage'), { kind: 'endOfMessage', critical: true } as const];
        const msg = encodeKeMessage(all);
        const decoded = decodeKeMessage(msg);
        assert.ok(decoded.ok);
        assert.deepEqual(decoded.records, all);
        assert.equal(toHex(encodeKeMessage(decoded.records)), toHex(msg));
      }),
      budget,
    );
  });

  it('chunked scanning with resumeOffset agrees with one-shot decoding', () => {
    fc.assert(
      fc.property(fc.array(arbRecord, { maxLength: 5 }), fc.array(fc.nat(40), { maxLength: 8 }), (records, cuts) => {
        const all = [...records.filter((r) => r.kind !== 'endOfMessage'), { kind: 'endOfMessage', critical: true } as const];
        const msg = encodeKeMessage(all);
        let resume = 0;
        let received = 0;
        for (const cut of [...cuts, msg.length]) {
          received = Math.min(msg.length, received + cut);
          const r = scanKeMessage(msg.subarray(0, received), { fromOffset: resume });
          if (r.status === 'complete') {
            assert.equal(r.length, msg.length);
            assert.equal(received, msg.length);
            return;
          }
          assert.equal(r.status, 'incomplete');
          if (r.status === 'incomplete') resume = r.resumeOffset;
        }
        assert.fail('never completed');
      }),
      budget,
    );
  });
});
