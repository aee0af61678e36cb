/** Pure decisions of a pool KE front end (core/pool/front-end.ts). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { validateKeRequest, type KeRequest } from '../../../src/core/nts/ke-message.js';
import { decodeKeMessage, encodeKeMessage, type KeRecord } from '../../../src/core/nts/ke-record.js';
import {
  buildCapabilityQuery,
  buildClientAnswer,
  buildFixedKeyRequest,
  chooseSource,
  negotiateAtSource,
  parseCapabilityAnswer,
  parseFixedKeyAnswer,
  type SourceCandidate,
} from '../../../src/core/pool/front-end.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const EOM: KeRecord = { kind: 'endOfMessage', critical: true };

function request(records: KeRecord[]): KeRequest {
  const v = validateKeRequest([...records, EOM]);
  assert.ok(v.ok);
  return v.request;
}

describe('front end: requests to a source', () => {
  it('the capability query is the issue\'s byte vector (token "abcd", 10, 9, End of Message)', () => {
    assert.equal(toHex(buildCapabilityQuery(new TextEncoder().encode('abcd'), false)), toHex(hex('00 0E 00 04 61 62 63 64 80 0A 00 00 80 09 00 00 80 00 00 00')));
    assert.match(toHex(buildCapabilityQuery(new TextEncoder().encode('abcd'), true)), /800900000008000080000000$/);
  });

  it('the fixed key request carries token, C2S ‖ S2C, exactly one protocol and one AEAD', () => {
    const c2s = new Uint8Array(32).fill(1);
    const s2c = new Uint8Array(32).fill(2);
    const bytes = buildFixedKeyRequest(new TextEncoder().encode('t'), c2s, s2c, 15, true);
    const v = validateKeRequest(bytes);
    assert.ok(v.ok);
    assert.equal(v.request.pool?.kind, 'fixedKey');
    assert.deepEqual(v.request.nextProtocolIds, [0]);
    assert.deepEqual(v.request.aeadIds, [15]);
    assert.equal(v.request.keepAlive, true);
    assert.ok(v.request.pool?.kind === 'fixedKey' && toHex(v.request.pool.c2s) === toHex(c2s) && toHex(v.request.pool.s2c) === toHex(s2c));
  });
});

describe('front end: answers from a source', () => {
  it('parses the capability answer vector', () => {
    const a = parseCapabilityAnswer(hex('80 0A 00 08 00 0F 00 20 00 11 00 40 80 09 00 02 00 00 80 00 00 00'));
    assert.ok(a.ok);
    assert.deepEqual(a.capabilities, { protocolIds: [0], algorithms: [{ aeadId: 15, keyLength: 32 }, { aeadId: 17, keyLength: 64 }] });
    assert.equal(a.keepAlive, false);
    const err = parseCapabilityAnswer(hex('8002 0002 0001 8000 0000'));
    assert.ok(!err.ok && err.problem === 'error_record' && err.errorCode === 1);
    assert.ok(!parseCapabilityAnswer(hex('8009 0002 0000 8000 0000')).ok, 'a list asked for is missing');
  });

  it('a fixed key answer must name the protocol and AEAD asked for and carry cookies', () => {
    const cookie: KeRecord = { kind: 'newCookie', critical: false, cookie: new Uint8Array(100) };
    const np: KeRecord = { kind: 'nextProtocol', critical: true, protocolIds: [0] };
    const good = parseFixedKeyAnswer(encodeKeMessage([np, { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] }, cookie, { kind: 'keepAlive', critical: false }, EOM]), 15);
    assert.ok(good.ok && good.cookies.length === 1 && good.keepAlive && good.server === undefined);
    const wrong = parseFixedKeyAnswer(encodeKeMessage([np, { kind: 'aeadAlgorithm', critical: true, aeadIds: [17] }, cookie, EOM]), 15);
    assert.ok(!wrong.ok && wrong.problem === 'wrong_choice');
    const none = parseFixedKeyAnswer(encodeKeMessage([np, { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] }, EOM]), 15);
    assert.ok(!none.ok && none.problem === 'no_cookies');
  });

  it('the client answer inserts the source\'s name when it sent no Server record, and never relays Keep Alive', () => {
    const cookies = [new Uint8Array(100).fill(7)];
    const decoded = decodeKeMessage(buildClientAnswer({ cookies, server: undefined, port: undefined }, 15, false, 'ts1.example.net'));
    assert.ok(decoded.ok);
    assert.deepEqual(
      decoded.records.map((r) => r.kind),
      ['nextProtocol', 'aeadAlgorithm', 'ntpv4Server', 'newCookie', 'endOfMessage'],
    );
    assert.ok(decoded.records.some((r) => r.kind === 'ntpv4Server' && r.server === 'ts1.example.net'));
    const own = decodeKeMessage(buildClientAnswer({ cookies, server: '192.0.2.1', port: 1123 }, 30, true, 'ts1.example.net'));
    assert.ok(own.ok);
    assert.ok(own.records.some((r) => r.kind === 'ntpv4Server' && r.server === '192.0.2.1'));
    assert.ok(own.records.some((r) => r.kind === 'ntpv4Port' && r.port === 1123));
    assert.ok(own.records.some((r) => r.kind === 'chronyCompliantExporter'), 'record 1024 echoed for AEAD 30');
  });
});

describe('front end: choices', () => {
  const caps = { protocolIds: [0], algorithms: [{ aeadId: 15, keyLength: 32 }, { aeadId: 17, keyLength: 64 }] };
  it('protocol and AEAD follow the client\'s order, at the source\'s key length', () => {
    const np: KeRecord = { kind: 'nextProtocol', critical: true, protocolIds: [0] };
    assert.deepEqual(negotiateAtSource(request([np, { kind: 'aeadAlgorithm', critical: true, aeadIds: [30, 17, 15] }]), caps), { ok: true, aeadId: 17, keyLength: 64 });
    assert.deepEqual(negotiateAtSource(request([np, { kind: 'aeadAlgorithm', critical: true, aeadIds: [30] }]), caps), { ok: false, reason: 'no_common_aead' });
    assert.deepEqual(negotiateAtSource(request([{ kind: 'nextProtocol', critical: true, protocolIds: [0x8001] }]), caps), { ok: false, reason: 'no_common_protocol' });
  });

  it('chooseSource never picks a denied, unhealthy, excluded or zero-weight source (property)', () => {
    const arb = fc.array(
      fc.record({ name: fc.constantFrom('a.test', 'b.test', 'c.test', 'd.test', '192.0.2.1'), weight: fc.integer({ min: 0, max: 5 }), healthy: fc.boolean() }),
      { maxLength: 6 },
    );
    fc.assert(
      fc.property(arb, fc.subarray(['A.test', 'b.test.', 'x.test', '192.0.2.1']), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.array(fc.nat(5)), (sources: SourceCandidate[], denied, random, exclude) => {
        const i = chooseSource(sources, denied, random, exclude);
        const norm = (n: string): string => n.toLowerCase().replace(/\.$/, '');
        const ok = (s: SourceCandidate, j: number): boolean => s.healthy && s.weight > 0 && !exclude.includes(j) && !denied.map(norm).includes(norm(s.name));
        if (i === undefined) assert.ok(!sources.some(ok));
        else assert.ok(sources[i] !== undefined && ok(sources[i], i));
      }),
      { numRuns: 500, interruptAfterTimeLimit: 1500 },
    );
  });

  it('chooseSource follows the weights', () => {
    const sources: SourceCandidate[] = [
      { name: 'a', weight: 1, healthy: true },
      { name: 'b', weight: 3, healthy: true },
    ];
    const counts = [0, 0];
    for (let k = 0; k < 400; k++) counts[chooseSource(sources, [], (k + 0.5) / 400) ?? 0]! += 1;
    assert.deepEqual(counts, [100, 300]);
  });
});
