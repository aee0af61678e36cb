import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { buildKeRequestRecords, checkKeResponse, describeKeErrorCode } from '../../src/cli/ke-response.js';
import { encodeKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';
import { validateKeRequest } from '../../src/core/nts/ke-message.js';

const eom: KeRecord = { kind: 'endOfMessage', critical: true };
const ntpv4: KeRecord = { kind: 'nextProtocol', critical: true, protocolIds: [0] };
const aead15: KeRecord = { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] };
const cookie = (n: number): KeRecord => ({ kind: 'newCookie', critical: false, cookie: new Uint8Array(100).fill(n) });
const good: KeRecord[] = [ntpv4, aead15, ...[1, 2, 3, 4, 5, 6, 7, 8].map(cookie), eom];

function problemOf(records: readonly KeRecord[], offered: readonly number[] = [15, 30]): string {
  const r = checkKeResponse(records, offered);
  assert.equal(r.ok, false);
  return r.ok ? '' : r.problem.kind;
}

test('RFC 8915 §4: a well-formed response yields the AEAD, every cookie (copied) and no negotiation records', () => {
  const r = checkKeResponse(good, [15]);
  assert.ok(r.ok);
  assert.equal(r.content.aeadId, 15);
  assert.equal(r.content.cookies.length, 8);
  assert.deepEqual([...(r.content.cookies[7] ?? [])], new Array<number>(100).fill(8));
  assert.equal(r.content.ntpServer, undefined);
  assert.equal(r.content.ntpPort, undefined);
  assert.equal(r.content.compliantGcmSivExporter, false);
});

test('RFC 8915 §4.1.7, §4.1.8: Server and Port Negotiation records are returned', () => {
  const r = checkKeResponse(
    [ntpv4, aead15, { kind: 'ntpv4Server', critical: false, server: 'time.example' }, { kind: 'ntpv4Port', critical: true, port: 1234 }, cookie(1), eom],
    [15],
  );
  assert.ok(r.ok);
  assert.equal(r.content.ntpServer, 'time.example');
  assert.equal(r.content.ntpPort, 1234);
});

test('RFC 8915 §4.1.3: an Error record wins over every other defect and carries its code', () => {
  const r = checkKeResponse([{ kind: 'error', critical: true, code: 1 }, eom], [15]);
  assert.ok(!r.ok);
  assert.equal(r.problem.kind, 'ke_error');
  assert.ok(r.problem.kind === 'ke_error' && r.problem.code === 1);
  assert.match(r.problem.message, /Bad Request/);
  assert.equal(describeKeErrorCode(0), 'Unrecognized Critical Record');
  assert.equal(describeKeErrorCode(2), 'Internal Server Error');
});

test('RFC 8915 §4.1.4: a Warning record (no codes are defined) fails the exchange', () => {
  assert.equal(problemOf([{ kind: 'warning', critical: true, code: 40000 }, ...good]), 'ke_warning');
});

test('RFC 8915 §4.1.2: an empty Next Protocol record means no common protocol', () => {
  assert.equal(problemOf([{ kind: 'nextProtocol', critical: true, protocolIds: [] }, eom]), 'negotiation');
});

test('RFC 8915 §4.1.5: an empty AEAD record means no common AEAD', () => {
  assert.equal(problemOf([ntpv4, { kind: 'aeadAlgorithm', critical: true, aeadIds: [] }, eom]), 'negotiation');
});

test('RFC 8915 §4.1.5: an AEAD that was not offered, or two AEADs, is malformed', () => {
  assert.equal(problemOf([ntpv4, { kind: 'aeadAlgorithm', critical: true, aeadIds: [17] }, cookie(1), eom], [15]), 'malformed');
  assert.equal(problemOf([ntpv4, { kind: 'aeadAlgorithm', critical: true, aeadIds: [15, 30] }, cookie(1), eom]), 'malformed');
});

test('RFC 8915 §4: structural defects are malformed', () => {
  const cases: KeRecord[][] = [
    [aead15, cookie(1), eom], // no Next Protocol
    [ntpv4, cookie(1), eom], // no AEAD
    [ntpv4, aead15, eom], // no cookie (§4.1.6: at least one)
    [ntpv4, ntpv4, aead15, cookie(1), eom], // duplicate Next Protocol
    [ntpv4, aead15, aead15, cookie(1), eom], // duplicate AEAD
    [{ kind: 'nextProtocol', critical: false, protocolIds: [0] }, aead15, cookie(1), eom], // §4.1.2 critical bit
    [ntpv4, aead15, cookie(1), { kind: 'endOfMessage', critical: false }], // §4.1.1 critical bit
    [ntpv4, aead15, cookie(1)], // no End of Message
    [ntpv4, aead15, cookie(1), eom, cookie(2)], // record after End of Message
    [{ kind: 'nextProtocol', critical: true, protocolIds: [0, 1] }, aead15, cookie(1), eom], // not a subset of [0]
    [ntpv4, aead15, { kind: 'newCookie', critical: false, cookie: new Uint8Array(0) }, eom], // empty cookie
    [ntpv4, aead15, cookie(1), { kind: 'ntpv4Port', critical: true, port: 0 }, eom],
    [ntpv4, aead15, cookie(1), { kind: 'ntpv4Port', critical: true, port: 1 }, { kind: 'ntpv4Port', critical: true, port: 2 }, eom],
    [ntpv4, aead15, cookie(1), { kind: 'ntpv4Server', critical: true, server: 'bad name' }, eom],
    [ntpv4, aead15, cookie(1), { kind: 'unknown', critical: true, type: 9000, body: new Uint8Array(0) }, eom],
  ];
  for (const records of cases) assert.equal(problemOf(records), 'malformed', JSON.stringify(records.map((r) => r.kind)));
});

test('RFC 8915 §4: an unknown non-critical record is skipped', () => {
  const r = checkKeResponse([ntpv4, aead15, { kind: 'unknown', critical: false, type: 9000, body: new Uint8Array(3) }, cookie(1), eom], [15]);
  assert.ok(r.ok);
});

test('record 1024 echoed by the server selects the RFC exporter context for AEAD 30', () => {
  const r = checkKeResponse(
    [ntpv4, { kind: 'aeadAlgorithm', critical: true, aeadIds: [30] }, { kind: 'chronyCompliantExporter', critical: false }, cookie(1), eom],
    [30, 15],
  );
  assert.ok(r.ok);
  assert.equal(r.content.compliantGcmSivExporter, true);
});

test('RFC 8915 §4: the client request is valid per the server-side validator, with record 1024 only when 30 is offered', () => {
  for (const offer of [[15], [15, 16, 17, 30], [30]]) {
    const bytes = encodeKeMessage(buildKeRequestRecords(offer));
    const v = validateKeRequest(bytes);
    assert.ok(v.ok, JSON.stringify(v));
    assert.deepEqual(v.request.nextProtocolIds, [0]);
    assert.deepEqual(v.request.aeadIds, offer);
    assert.equal(v.request.compliantGcmSivExporter, offer.includes(30));
  }
});

const arbitraryRecord: fc.Arbitrary<KeRecord> = fc.oneof(
  fc.constant(eom),
  fc.record({ kind: fc.constant('nextProtocol' as const), critical: fc.boolean(), protocolIds: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }) }),
  fc.record({ kind: fc.constant('aeadAlgorithm' as const), critical: fc.boolean(), aeadIds: fc.array(fc.constantFrom(15, 16, 17, 30, 99), { maxLength: 3 }) }),
  fc.record({ kind: fc.constant('error' as const), critical: fc.boolean(), code: fc.integer({ min: 0, max: 65535 }) }),
  fc.record({ kind: fc.constant('warning' as const), critical: fc.boolean(), code: fc.integer({ min: 0, max: 65535 }) }),
  fc.record({ kind: fc.constant('newCookie' as const), critical: fc.boolean(), cookie: fc.uint8Array({ maxLength: 8 }) }),
  fc.record({ kind: fc.constant('ntpv4Port' as const), critical: fc.boolean(), port: fc.integer({ min: 0, max: 65535 }) }),
  fc.record({ kind: fc.constant('ntpv4Server' as const), critical: fc.boolean(), server: fc.string({ maxLength: 6 }) }),
  fc.record({ kind: fc.constant('unknown' as const), critical: fc.boolean(), type: fc.integer({ min: 8, max: 0x7fff }), body: fc.uint8Array({ maxLength: 4 }) }),
);

test('checkKeResponse never throws and accepts only responses with exactly one offered AEAD and a cookie', () => {
  fc.assert(
    fc.property(fc.array(arbitraryRecord, { maxLength: 8 }), (records) => {
      const r = checkKeResponse(records, [15, 30]);
      if (r.ok) {
        assert.ok([15, 30].includes(r.content.aeadId));
        assert.ok(r.content.cookies.length >= 1);
        assert.ok(!records.some((x) => x.kind === 'error' || x.kind === 'warning'));
      }
    }),
    { numRuns: 2000, interruptAfterTimeLimit: 3000 },
  );
});
