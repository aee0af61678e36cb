import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { FillRandom } from '../../src/core/bytes.js';
import { getAead, getJavaScriptAead, setAeadProvider } from '../../src/core/crypto/aead.js';
import { chooseAead, handleKeRequest, type KeHandlerResult, type KePolicy } from '../../src/core/ke-handler.js';
import { cookieLength, openCookie } from '../../src/core/nts/cookie.js';
import type { ExportKeys } from '../../src/core/nts/exporter.js';
import { createKeyset } from '../../src/core/nts/keyset.js';
import { decodeKeMessage, encodeKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';

const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Deterministic "random" bytes so cookie bytes are reproducible. */
function counterRandom(seed = 1): FillRandom {
  let n = seed;
  return (target) => {
    for (let i = 0; i < target.length; i++) {
      n = (Math.imul(n, 1103515245) + 12345) >>> 0;
      target[i] = n >>> 24;
    }
  };
}

const fillRandom = counterRandom();
const keyset = createKeyset(1_700_000_000, fillRandom, { staleKeyCount: 2 });
const POLICY: KePolicy = { aeadIds: [15, 16, 17, 30] };

interface ExportCall {
  readonly c2sContext: string;
  readonly s2cContext: string;
  readonly keyLength: number;
  readonly c2s: Uint8Array;
  readonly s2c: Uint8Array;
}

/** A stand-in for the TLS exporter that derives distinct keys from the contexts and records each call. */
function recordingExporter(): { exportKeys: ExportKeys; calls: ExportCall[] } {
  const calls: ExportCall[] = [];
  const exportKeys: ExportKeys = (c2sContext, s2cContext, keyLength) => {
    const c2s = new Uint8Array(keyLength).map((_, i) => (i * 7 + (c2sContext[3] ?? 0) + (c2sContext[4] ?? 0)) & 0xff);
    const s2c = new Uint8Array(keyLength).map((_, i) => (i * 13 + (s2cContext[3] ?? 0) + (s2cContext[4] ?? 0) + 100) & 0xff);
    calls.push({ c2sContext: toHex(c2sContext), s2cContext: toHex(s2cContext), keyLength, c2s, s2c });
    return { c2s, s2c };
  };
  return { exportKeys, calls };
}

const NP0: KeRecord = { kind: 'nextProtocol', critical: true, protocolIds: [0] };
const EOM: KeRecord = { kind: 'endOfMessage', critical: true };
const aead = (...ids: number[]): KeRecord => ({ kind: 'aeadAlgorithm', critical: true, aeadIds: ids });
const COMPLIANT: KeRecord = { kind: 'chronyCompliantExporter', critical: false };

function run(records: readonly KeRecord[] | Uint8Array, policy: KePolicy = POLICY): { res: KeHandlerResult; records: readonly KeRecord[]; calls: ExportCall[] } {
  const { exportKeys, calls } = recordingExporter();
  const input = records instanceof Uint8Array ? records : encodeKeMessage(records);
  const res = handleKeRequest(input, exportKeys, keyset, policy, fillRandom);
  const decoded = decodeKeMessage(res.response);
  assert.ok(decoded.ok, 'response must decode as one complete message');
  return { res, records: decoded.records, calls };
}

const kinds = (rs: readonly KeRecord[]): string[] => rs.map((r) => r.kind);
const cookies = (rs: readonly KeRecord[]): Uint8Array[] => rs.flatMap((r) => (r.kind === 'newCookie' ? [r.cookie] : []));
const errors = (rs: readonly KeRecord[]): number[] => rs.flatMap((r) => (r.kind === 'error' ? [r.code] : []));

describe('handleKeRequest: success (RFC 8915 §4.1)', () => {
  it('answers Next Protocol [0], AEAD [15], 8 New Cookie records, End of Message', () => {
    const { res, records, calls } = run([NP0, aead(15), EOM]);
    assert.equal(res.outcome, 'success');
    assert.equal(res.aeadId, 15);
    assert.equal(res.cookiesIssued, 8);
    assert.deepEqual(kinds(records), ['nextProtocol', 'aeadAlgorithm', ...Array<string>(8).fill('newCookie'), 'endOfMessage']);
    assert.deepEqual(records[0], { kind: 'nextProtocol', critical: true, protocolIds: [0] });
    assert.deepEqual(records[1], { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] });
    assert.equal(calls.length, 1);
  });

  it('RFC 8915 §4.1.1: End of Message is the last record of the response and is critical', () => {
    const { records } = run([NP0, aead(15), EOM]);
    assert.deepEqual(records.at(-1), EOM);
    assert.equal(records.filter((r) => r.kind === 'endOfMessage').length, 1);
  });

  it('RFC 8915 §4.1.2: the response has exactly one Next Protocol record, a subset of the request, critical', () => {
    const { records } = run([{ kind: 'nextProtocol', critical: true, protocolIds: [0x8001, 0, 7] }, aead(15), EOM]);
    const np = records.filter((r) => r.kind === 'nextProtocol');
    assert.deepEqual(np, [{ kind: 'nextProtocol', critical: true, protocolIds: [0] }]);
  });

  it('RFC 8915 §4.1.5: the response names at most one AEAD, one the client offered', () => {
    const { records, res } = run([NP0, aead(99, 17, 15), EOM]);
    const a = records.filter((r) => r.kind === 'aeadAlgorithm');
    assert.deepEqual(a, [{ kind: 'aeadAlgorithm', critical: true, aeadIds: [17] }]);
    assert.equal(res.aeadId, 17);
  });

  it('AEAD choice follows the client order (as chrony and ntpd-rs do)', () => {
    for (const [offer, chosen] of [
      [[30, 15], 30],
      [[15, 30], 15],
      [[16, 17, 15], 16],
      [[1, 2, 17], 17],
    ] as const) {
      assert.equal(run([NP0, aead(...offer), EOM]).res.aeadId, chosen, `offer ${offer.join(',')}`);
    }
    assert.equal(chooseAead([30, 17, 15], [17, 15]), 17);
  });

  it('AEAD choice: an AEAD on the table-driven JavaScript AES comes after every offered constant-time one', () => {
    // Providers that declare constant time stand in for OpenSSL's (runtime/aead-openssl.test.ts runs the real ones).
    const constantTime = (id: number): void => {
      const js = getJavaScriptAead(id);
      assert.ok(js);
      setAeadProvider(id, { ...js, constantTime: true });
    };
    try {
      // Node 20's OpenSSL 3.0: the SIV AEADs on OpenSSL, 30 on JavaScript. chrony ≥ 4.4 offers "30 15".
      for (const id of [15, 16, 17]) constantTime(id);
      for (const [offer, chosen] of [
        [[30, 15], 15],
        [[30, 17, 16], 17],
        [[15, 30], 15],
        [[30], 30], // nothing constant-time offered: the client's choice still stands
        [[30, 99], 30],
      ] as const) {
        assert.equal(run([NP0, aead(...offer), EOM]).res.aeadId, chosen, `offer ${offer.join(',')}`);
      }
      assert.equal(chooseAead([30, 17, 15], [30, 15]), 15, '17 is not accepted by the server');
      // OpenSSL ≥ 3.2 (Node 24): all four constant-time, the client's order again.
      constantTime(30);
      assert.equal(run([NP0, aead(30, 15), EOM]).res.aeadId, 30);
    } finally {
      for (const id of [15, 16, 17, 30]) setAeadProvider(id, undefined);
    }
    assert.equal(getAead(30)?.constantTime, false);
    assert.equal(chooseAead([30, 15], [15, 30]), 30, 'all on JavaScript: the client order');
  });

  it('RFC 8915 §4.1.5: a server accepting NTPv4 MUST NOT answer empty when 15 was offered', () => {
    for (const aeadIds of [[], [30], [17, 16]]) {
      const { res, records } = run([NP0, aead(99, 15), EOM], { aeadIds });
      assert.equal(res.outcome, 'success');
      assert.deepEqual(records[1], { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] });
    }
  });

  it('RFC 8915 §4.1.6: New Cookie records are non-critical; 8 by default, each cookieLength(aeadId) octets', () => {
    for (const id of [15, 16, 17, 30]) {
      const { records } = run([NP0, aead(id), EOM]);
      const cs = records.filter((r) => r.kind === 'newCookie');
      assert.equal(cs.length, 8);
      for (const c of cs) {
        assert.equal(c.critical, false);
        assert.equal(c.cookie.length, cookieLength(id), `AEAD ${id}`);
      }
      // Fresh randomness per cookie: no two alike.
      assert.equal(new Set(cs.map((c) => toHex(c.cookie))).size, 8);
    }
  });

  it('RFC 8915 §4.1.6: the server sends at least one cookie (cookieCount is clamped to 1..8)', () => {
    assert.equal(cookies(run([NP0, aead(15), EOM], { ...POLICY, cookieCount: 0 }).records).length, 1);
    assert.equal(cookies(run([NP0, aead(15), EOM], { ...POLICY, cookieCount: 3 }).records).length, 3);
    assert.equal(cookies(run([NP0, aead(15), EOM], { ...POLICY, cookieCount: 50 }).records).length, 8);
  });

  it('RFC 8915 §4.3/§5.1: cookies carry the keys exportKeys returned for the negotiated AEAD context', () => {
    for (const id of [15, 16, 17, 30]) {
      const { records, calls } = run([NP0, aead(id), COMPLIANT, EOM]);
      const keyLength = getAead(id)?.keyLength;
      assert.equal(calls.length, 1);
      const call = calls[0];
      assert.ok(call !== undefined);
      assert.equal(call.keyLength, keyLength, 'exported length = AEAD key length');
      const idHex = id.toString(16).padStart(4, '0');
      assert.equal(call.c2sContext, `0000${idHex}00`);
      assert.equal(call.s2cContext, `0000${idHex}01`);
      for (const c of cookies(records)) {
        const opened = openCookie(keyset, c);
        assert.ok(opened.ok);
        assert.equal(opened.aeadId, id);
        assert.equal(toHex(opened.c2s), toHex(call.c2s));
        assert.equal(toHex(opened.s2c), toHex(call.s2c));
      }
    }
  });

  it('chrony quirk: AEAD 30 with record 1024 echoes 1024 (non-critical) and uses the RFC context', () => {
    const { records, calls } = run([NP0, aead(30, 15), COMPLIANT, EOM]);
    assert.deepEqual(records[2], COMPLIANT);
    assert.equal(calls[0]?.c2sContext, '0000001e00');
    assert.equal(calls[0]?.s2cContext, '0000001e01');
    assert.equal(calls[0]?.keyLength, 16);
  });

  it('chrony quirk: AEAD 30 without record 1024 uses the legacy context (15) and no echo', () => {
    const { records, calls } = run([NP0, aead(30, 15), EOM]);
    assert.ok(!records.some((r) => r.kind === 'chronyCompliantExporter'));
    assert.equal(calls[0]?.c2sContext, '0000000f00');
    assert.equal(calls[0]?.s2cContext, '0000000f01');
    assert.equal(calls[0]?.keyLength, 16);
  });

  it('record 1024 is not echoed when another AEAD is chosen', () => {
    const { records, calls } = run([NP0, aead(15, 30), COMPLIANT, EOM]);
    assert.ok(!records.some((r) => r.kind === 'chronyCompliantExporter'));
    assert.equal(calls[0]?.c2sContext, '0000000f00');
  });

  it('RFC 8915 §4.1.8: a Port record whenever the NTP port is not 123, none when it is', () => {
    const withPort = run([NP0, aead(15), EOM], { ...POLICY, ntpPort: 11123 }).records;
    assert.deepEqual(
      withPort.filter((r) => r.kind === 'ntpv4Port'),
      [{ kind: 'ntpv4Port', critical: true, port: 11123 }],
    );
    for (const policy of [POLICY, { ...POLICY, ntpPort: 123 }]) {
      assert.ok(!run([NP0, aead(15), EOM], policy).records.some((r) => r.kind === 'ntpv4Port'));
    }
  });

  it('RFC 8915 §4.1.7: one Server record when configured, none otherwise', () => {
    const { records } = run([NP0, aead(15), EOM], { ...POLICY, ntpServer: 'time.example.net' });
    assert.deepEqual(
      records.filter((r) => r.kind === 'ntpv4Server'),
      [{ kind: 'ntpv4Server', critical: true, server: 'time.example.net' }],
    );
    assert.ok(!run([NP0, aead(15), EOM], { ...POLICY, ntpServer: '' }).records.some((r) => r.kind === 'ntpv4Server'));
  });

  it('RFC 8915 §4.1.7/§4.1.8: the client Server/Port preference is not honoured; the configured values are sent', () => {
    const req: KeRecord[] = [
      NP0,
      aead(15),
      { kind: 'ntpv4Server', critical: false, server: '198.51.100.7' },
      { kind: 'ntpv4Port', critical: false, port: 4123 },
      EOM,
    ];
    const { res, records } = run(req, { ...POLICY, ntpServer: '192.0.2.1', ntpPort: 1123 });
    assert.equal(res.outcome, 'success');
    assert.deepEqual(
      records.filter((r) => r.kind === 'ntpv4Server' || r.kind === 'ntpv4Port'),
      [
        { kind: 'ntpv4Port', critical: true, port: 1123 },
        { kind: 'ntpv4Server', critical: true, server: '192.0.2.1' },
      ],
    );
  });

  it('RFC 8915 §4: a server MUST accept a request of 1024 octets (unknown non-critical records skipped)', () => {
    const req = encodeKeMessage([NP0, { kind: 'unknown', critical: false, type: 0x4001, body: new Uint8Array(1004) }, aead(15), EOM]);
    assert.equal(req.length, 1024);
    assert.equal(run(req).res.outcome, 'success');
  });

  it('accepts already-decoded records as input', () => {
    const { exportKeys } = recordingExporter();
    const res = handleKeRequest([NP0, aead(15), EOM], exportKeys, keyset, POLICY, fillRandom);
    assert.equal(res.outcome, 'success');
  });

  it('is deterministic for a given fillRandom and exporter', () => {
    const a = handleKeRequest(encodeKeMessage([NP0, aead(30), EOM]), recordingExporter().exportKeys, keyset, POLICY, counterRandom(9));
    const b = handleKeRequest(encodeKeMessage([NP0, aead(30), EOM]), recordingExporter().exportKeys, keyset, POLICY, counterRandom(9));
    assert.equal(toHex(a.response), toHex(b.response));
  });
});

describe('handleKeRequest: negotiation failures (RFC 8915 §4.1.2, §4.1.5)', () => {
  it('RFC 8915 §4.1.2: no common protocol → an empty Next Protocol record and End of Message', () => {
    const { res, records, calls } = run([{ kind: 'nextProtocol', critical: true, protocolIds: [0x8001] }, EOM]);
    assert.equal(res.outcome, 'no_common_protocol');
    assert.deepEqual(records, [{ kind: 'nextProtocol', critical: true, protocolIds: [] }, EOM]);
    assert.equal(calls.length, 0);
  });

  it('RFC 8915 §4.1.5: no common AEAD → Next Protocol [0], an empty AEAD record, no cookies', () => {
    const { res, records, calls } = run([NP0, aead(30, 99), EOM], { aeadIds: [15, 17] });
    assert.equal(res.outcome, 'no_common_aead');
    assert.deepEqual(records, [NP0, { kind: 'aeadAlgorithm', critical: true, aeadIds: [] }, EOM]);
    assert.equal(res.cookiesIssued, 0);
    assert.equal(calls.length, 0);
  });
});

describe('handleKeRequest: errors (RFC 8915 §4.1.3)', () => {
  it('RFC 8915 §4.1.3: Bad Request → one critical Error 1 record and End of Message only', () => {
    const { res, records, calls } = run([aead(15), EOM]);
    assert.equal(res.outcome, 'bad_request');
    assert.equal(res.defect, 'missing_next_protocol');
    assert.deepEqual(records, [{ kind: 'error', critical: true, code: 1 }, EOM]);
    assert.equal(calls.length, 0);
  });

  it('RFC 8915 §4.1.3: unknown critical record → Error 0', () => {
    const { res, records } = run([NP0, aead(15), { kind: 'unknown', critical: true, type: 0x2000, body: new Uint8Array(0) }, EOM]);
    assert.equal(res.outcome, 'unrecognized_critical');
    assert.deepEqual(records, [{ kind: 'error', critical: true, code: 0 }, EOM]);
  });

  it('RFC 8915 §4.1.3: an exporter failure → Error 2 (Internal Server Error), outcome internal_error', () => {
    const boom: ExportKeys = () => {
      throw new Error('socket gone');
    };
    const res = handleKeRequest(encodeKeMessage([NP0, aead(15), EOM]), boom, keyset, POLICY, fillRandom);
    assert.equal(res.outcome, 'internal_error');
    assert.ok(res.internalError instanceof Error);
    const d = decodeKeMessage(res.response);
    assert.ok(d.ok);
    assert.deepEqual(d.records, [{ kind: 'error', critical: true, code: 2 }, EOM]);
  });

  it('exported keys of the wrong length → internal_error, no cookies', () => {
    const short: ExportKeys = () => ({ c2s: new Uint8Array(16), s2c: new Uint8Array(16) });
    const res = handleKeRequest(encodeKeMessage([NP0, aead(15), EOM]), short, keyset, POLICY, fillRandom);
    assert.equal(res.outcome, 'internal_error');
    assert.equal(res.cookiesIssued, 0);
  });
});

// ---------- property tests ----------

type Defect = { readonly name: string; readonly code: 0 | 1; readonly apply: (rs: KeRecord[], pos: number) => KeRecord[] | Uint8Array };

const raw = (type: number, critical: boolean, body: number[]): KeRecord => ({ kind: 'unknown', critical, type, body: Uint8Array.from(body) });
const insertAt = (rs: KeRecord[], pos: number, r: KeRecord): KeRecord[] => {
  const before = rs.slice(0, -1); // keep End of Message last
  const i = pos % (before.length + 1);
  return [...before.slice(0, i), r, ...before.slice(i), ...rs.slice(-1)];
};
const without = (rs: KeRecord[], kind: KeRecord['kind']): KeRecord[] => rs.filter((r) => r.kind !== kind);
const replace = (rs: KeRecord[], kind: KeRecord['kind'], r: KeRecord): KeRecord[] => rs.map((x) => (x.kind === kind ? r : x));

const DEFECTS: readonly Defect[] = [
  { name: 'missing End of Message', code: 1, apply: (rs) => rs.slice(0, -1) },
  { name: 'non-critical End of Message', code: 1, apply: (rs) => [...rs.slice(0, -1), { kind: 'endOfMessage', critical: false }] },
  { name: 'End of Message with a body', code: 1, apply: (rs) => [...rs.slice(0, -1), raw(0, true, [0])] },
  { name: 'record after End of Message', code: 1, apply: (rs) => [...rs, NP0] },
  { name: 'octets after End of Message', code: 1, apply: (rs) => Uint8Array.from([...encodeKeMessage(rs), 0]) },
  { name: 'truncated last record', code: 1, apply: (rs) => encodeKeMessage(rs).subarray(0, -1) },
  { name: 'no Next Protocol', code: 1, apply: (rs) => without(rs, 'nextProtocol') },
  { name: 'duplicate Next Protocol', code: 1, apply: (rs, p) => insertAt(rs, p, NP0) },
  { name: 'non-critical Next Protocol', code: 1, apply: (rs) => replace(rs, 'nextProtocol', { kind: 'nextProtocol', critical: false, protocolIds: [0] }) },
  { name: 'empty Next Protocol', code: 1, apply: (rs) => replace(rs, 'nextProtocol', { kind: 'nextProtocol', critical: true, protocolIds: [] }) },
  { name: 'odd-length Next Protocol', code: 1, apply: (rs) => replace(rs, 'nextProtocol', raw(1, true, [0, 0, 0])) },
  { name: 'no AEAD', code: 1, apply: (rs) => without(rs, 'aeadAlgorithm') },
  { name: 'duplicate AEAD', code: 1, apply: (rs, p) => insertAt(rs, p, aead(15)) },
  { name: 'empty AEAD', code: 1, apply: (rs) => replace(rs, 'aeadAlgorithm', aead()) },
  { name: 'odd-length AEAD', code: 1, apply: (rs) => replace(rs, 'aeadAlgorithm', raw(4, true, [0, 15, 0])) },
  { name: 'client Error', code: 1, apply: (rs, p) => insertAt(rs, p, { kind: 'error', critical: true, code: 0 }) },
  { name: 'client Warning', code: 1, apply: (rs, p) => insertAt(rs, p, { kind: 'warning', critical: true, code: 1 }) },
  { name: 'client New Cookie', code: 1, apply: (rs, p) => insertAt(rs, p, { kind: 'newCookie', critical: false, cookie: new Uint8Array(4) }) },
  { name: 'Error with a bad body', code: 1, apply: (rs, p) => insertAt(rs, p, raw(2, true, [1])) },
  { name: 'Port with a bad body', code: 1, apply: (rs, p) => insertAt(without(rs, 'ntpv4Port'), p, raw(7, false, [1, 2, 3])) },
  { name: 'duplicate Server', code: 1, apply: (rs, p) => insertAt(insertAt(without(rs, 'ntpv4Server'), p, { kind: 'ntpv4Server', critical: false, server: 'a' }), p + 1, { kind: 'ntpv4Server', critical: false, server: 'b' }) },
  { name: 'duplicate Port', code: 1, apply: (rs, p) => insertAt(insertAt(without(rs, 'ntpv4Port'), p, { kind: 'ntpv4Port', critical: false, port: 1 }), p + 2, { kind: 'ntpv4Port', critical: false, port: 2 }) },
  { name: 'record 1024 with a body', code: 1, apply: (rs, p) => insertAt(without(rs, 'chronyCompliantExporter'), p, raw(1024, false, [0])) },
  { name: 'unknown critical record', code: 0, apply: (rs, p) => insertAt(rs, p, raw(0x3000, true, [1, 2])) },
];

const arbValidRequest: fc.Arbitrary<KeRecord[]> = fc
  .record({
    protocols: fc.uniqueArray(fc.integer({ min: 1, max: 0xffff }), { maxLength: 3 }),
    protoPos: fc.nat(),
    aeads: fc.array(fc.constantFrom(15, 16, 17, 30, 31, 99, 0x8000), { minLength: 1, maxLength: 4 }),
    compliant: fc.boolean(),
    server: fc.option(fc.constantFrom('192.0.2.1', 'ntp.example.org', '2001:db8::1'), { nil: undefined }),
    port: fc.option(fc.integer({ min: 0, max: 0xffff }), { nil: undefined }),
    extras: fc.array(
      fc.record({ type: fc.integer({ min: 15, max: 0x7fff }).filter((t) => t !== 1024), body: fc.uint8Array({ maxLength: 12 }) }),
      { maxLength: 3 },
    ),
    order: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
  })
  .map((g) => {
    const protocolIds = [...g.protocols];
    protocolIds.splice(g.protoPos % (protocolIds.length + 1), 0, 0);
    const rs: KeRecord[] = [
      { kind: 'nextProtocol', critical: true, protocolIds },
      { kind: 'aeadAlgorithm', critical: g.order[0]! % 2 === 0, aeadIds: g.aeads },
    ];
    if (g.compliant) rs.push(COMPLIANT);
    if (g.server !== undefined) rs.push({ kind: 'ntpv4Server', critical: false, server: g.server });
    if (g.port !== undefined) rs.push({ kind: 'ntpv4Port', critical: false, port: g.port });
    for (const e of g.extras) rs.push({ kind: 'unknown', critical: false, type: e.type, body: e.body });
    // Deterministic shuffle driven by `order`.
    const shuffled = rs
      .map((r, i) => ({ r, k: g.order[i % g.order.length]! * 16 + i }))
      .sort((a, b) => a.k - b.k)
      .map((x) => x.r);
    return [...shuffled, EOM];
  });

describe('handleKeRequest properties', () => {
  it('every valid request gets success or no_common_aead, never an Error record', () => {
    fc.assert(
      fc.property(arbValidRequest, (req) => {
        const { res, records } = run(req);
        assert.ok(res.outcome === 'success' || res.outcome === 'no_common_aead', res.outcome);
        assert.equal(errors(records).length, 0);
        assert.equal(records.filter((r) => r.kind === 'nextProtocol').length, 1);
        if (res.outcome === 'success') assert.equal(cookies(records).length, 8);
      }),
      { numRuns: 300, interruptAfterTimeLimit: 2500 },
    );
  });

  it('every single-defect request gets exactly one Error record with the expected code and no cookies', () => {
    fc.assert(
      fc.property(arbValidRequest, fc.constantFrom(...DEFECTS), fc.nat(), (req, defect, pos) => {
        const { res, records, calls } = run(defect.apply(req, pos));
        assert.deepEqual(errors(records), [defect.code], defect.name);
        assert.deepEqual(kinds(records), ['error', 'endOfMessage'], defect.name);
        assert.equal(res.outcome, defect.code === 0 ? 'unrecognized_critical' : 'bad_request', defect.name);
        assert.equal(cookies(records).length, 0);
        assert.equal(calls.length, 0, 'no keys exported for a refused request');
      }),
      { numRuns: 2000, interruptAfterTimeLimit: 3000 },
    );
  });

  it('random bytes never throw and always give exactly one outcome and a well-formed response', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const { res, records } = run(bytes);
        assert.ok(['success', 'bad_request', 'unrecognized_critical', 'no_common_protocol', 'no_common_aead'].includes(res.outcome));
        assert.deepEqual(records.at(-1), EOM);
        assert.ok(errors(records).length <= 1);
      }),
      { numRuns: 2000, interruptAfterTimeLimit: 2000 },
    );
  });
});
