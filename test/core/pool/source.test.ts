/**
 * The time-source side of NTS for pools (draft-ietf-ntp-nts-keyexchange-pool as ntpd-rs 1.9 and nts-pool-ke
 * speak it): record codecs, support and fixed key requests, the token check and keep-alive decisions.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { FillRandom } from '../../../src/core/bytes.js';
import { getAead } from '../../../src/core/crypto/aead.js';
import { handleKeRequest, type KeHandlerResult, type KePolicy } from '../../../src/core/ke-handler.js';
import {
  constantTimeEqual,
  defaultLonglivedConnections,
  isAcceptedToken,
  type KePoolConnection,
  supportedAlgorithms,
} from '../../../src/core/pool/source.js';
import { openCookie } from '../../../src/core/nts/cookie.js';
import type { ExportKeys } from '../../../src/core/nts/exporter.js';
import { KeRecordType, PoolKeErrorCode } from '../../../src/core/nts/ids.js';
import { validateKeRequest } from '../../../src/core/nts/ke-message.js';
import { decodeKeMessage, decodeKeRecord, encodeKeMessage, type KeRecord } from '../../../src/core/nts/ke-record.js';
import { createKeyset } from '../../../src/core/nts/keyset.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

function counterRandom(seed = 7): FillRandom {
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
const TOKEN = 'abcd';
const POLICY: KePolicy = { aeadIds: [15, 17], poolAuthenticationTokens: ['other-token', TOKEN] };
const FRESH: KePoolConnection = { kept: false, keepAliveAvailable: true };

const NP0: KeRecord = { kind: 'nextProtocol', critical: true, protocolIds: [0] };
const EOM: KeRecord = { kind: 'endOfMessage', critical: true };
const KEEP: KeRecord = { kind: 'keepAlive', critical: false };
const ASK_ALG: KeRecord = { kind: 'supportedAlgorithmList', critical: true, algorithms: [] };
const ASK_NP: KeRecord = { kind: 'supportedNextProtocolList', critical: true, protocolIds: [] };
const aead = (...ids: number[]): KeRecord => ({ kind: 'aeadAlgorithm', critical: true, aeadIds: ids });
const token = (t: string | Uint8Array): KeRecord => ({ kind: 'authenticationToken', critical: false, token: typeof t === 'string' ? utf8(t) : t });
const fixedKey = (c2s: Uint8Array, s2c: Uint8Array): KeRecord => ({ kind: 'fixedKeyRequest', critical: true, keys: Uint8Array.from([...c2s, ...s2c]) });
const deny = (server: string): KeRecord => ({ kind: 'ntpServerDeny', critical: false, server });
const raw = (type: number, critical: boolean, body: number[]): KeRecord => ({ kind: 'unknown', critical, type, body: Uint8Array.from(body) });
const keysOf = (len: number, seed: number): { c2s: Uint8Array; s2c: Uint8Array } => ({
  c2s: new Uint8Array(len).map((_, i) => (i * 3 + seed) & 0xff),
  s2c: new Uint8Array(len).map((_, i) => (i * 5 + seed + 101) & 0xff),
});

/** An exporter that must never be called for pool requests. */
function countingExporter(): { exportKeys: ExportKeys; calls: () => number } {
  let n = 0;
  return {
    exportKeys: (_c, _s, len) => {
      n++;
      return { c2s: new Uint8Array(len).fill(1), s2c: new Uint8Array(len).fill(2) };
    },
    calls: () => n,
  };
}

function run(
  request: readonly KeRecord[] | Uint8Array,
  connection: KePoolConnection = FRESH,
  policy: KePolicy = POLICY,
): { res: KeHandlerResult; records: readonly KeRecord[]; exports: number } {
  const exporter = countingExporter();
  const input = request instanceof Uint8Array ? request : encodeKeMessage(request);
  const res = handleKeRequest(input, exporter.exportKeys, keyset, policy, fillRandom, connection);
  const decoded = decodeKeMessage(res.response);
  assert.ok(decoded.ok, 'response must decode as one complete message');
  return { res, records: decoded.records, exports: exporter.calls() };
}
const kinds = (rs: readonly KeRecord[]): string[] => rs.map((r) => r.kind);
const errors = (rs: readonly KeRecord[]): number[] => rs.flatMap((r) => (r.kind === 'error' ? [r.code] : []));
const cookiesOf = (rs: readonly KeRecord[]): Uint8Array[] => rs.flatMap((r) => (r.kind === 'newCookie' ? [r.cookie] : []));

describe('pool record codecs (IANA early allocations 8, 9, 10, 12, 13, 14)', () => {
  it('decodes each record type with its body', () => {
    const cases: [string, KeRecord][] = [
      ['0008 0000', { kind: 'keepAlive', critical: false }],
      ['8009 0004 0000 8001', { kind: 'supportedNextProtocolList', critical: true, protocolIds: [0, 0x8001] }],
      ['800a 0008 000f 0020 0011 0040', { kind: 'supportedAlgorithmList', critical: true, algorithms: [{ aeadId: 15, keyLength: 32 }, { aeadId: 17, keyLength: 64 }] }],
      ['800c 0004 0102 0304', { kind: 'fixedKeyRequest', critical: true, keys: hex('01020304') }],
      ['000d 0003 612e62', { kind: 'ntpServerDeny', critical: false, server: 'a.b' }],
      ['000e 0004 61626364', { kind: 'authenticationToken', critical: false, token: utf8('abcd') }],
    ];
    for (const [h, record] of cases) {
      const r = decodeKeRecord(hex(h), 0);
      assert.ok(r.ok, h);
      assert.deepEqual(r.record, record, h);
      assert.equal(toHex(encodeKeMessage([record])), h.replace(/\s+/g, ''), h);
    }
  });

  it('rejects impossible body lengths: Keep Alive with a body, odd lists, a list 10 not in pairs, an odd or empty key body', () => {
    for (const h of ['0008 0001 00', '8009 0003 000000', '800a 0002 000f', '800a 0006 000f 0020 0011', '800c 0003 010203', '800c 0000']) {
      const r = decodeKeRecord(hex(h), 0);
      assert.ok(!r.ok && r.error === 'bad_body_length', h);
    }
  });

  it('the private numbers 0x4000–0x4005 used before June 2026 are not pool records', () => {
    for (let type = 0x4000; type <= 0x4005; type++) {
      const r = decodeKeRecord(hex(`${type.toString(16)} 0000`), 0);
      assert.ok(r.ok && r.record.kind === 'unknown', type.toString(16));
    }
    // A non-critical 0x4005 in an ordinary request is skipped; a critical 0x4000 is Error 0.
    assert.equal(run([NP0, aead(15), raw(0x4005, false, [1]), EOM]).res.outcome, 'success');
    assert.deepEqual(errors(run([NP0, aead(15), raw(0x4000, true, []), EOM]).records), [0]);
  });

  it('record type numbers and front-end error codes are the draft\'s', () => {
    assert.deepEqual(
      [KeRecordType.keepAlive, KeRecordType.supportedNextProtocolList, KeRecordType.supportedAlgorithmList, KeRecordType.fixedKeyRequest, KeRecordType.ntpServerDeny, KeRecordType.authenticationToken],
      [8, 9, 10, 12, 13, 14],
    );
    assert.deepEqual(Object.values(PoolKeErrorCode), [0xf000, 0xf001, 0xf002, 0xf003]);
  });
});

describe('support request (capability query)', () => {
  it('byte vector: token "abcd", 10, 9, End of Message → 10 [(15, 32), (17, 64)], 9 [0], End of Message', () => {
    const request = hex('00 0E 00 04 61 62 63 64 80 0A 00 00 80 09 00 00 80 00 00 00');
    const v = validateKeRequest(request);
    assert.ok(v.ok);
    assert.deepEqual(v.request.pool, { kind: 'support', algorithms: true, protocols: true });
    const { res, exports } = run(request);
    assert.equal(toHex(res.response), toHex(hex('80 0A 00 08 00 0F 00 20 00 11 00 40 80 09 00 02 00 00 80 00 00 00')));
    assert.equal(res.outcome, 'success');
    assert.equal(res.requestKind, 'support');
    assert.equal(res.keepAlive, false, 'not asked for');
    assert.equal(exports, 0);
  });

  it('answers only the lists asked for', () => {
    assert.deepEqual(kinds(run([token(TOKEN), ASK_NP, EOM]).records), ['supportedNextProtocolList', 'endOfMessage']);
    assert.deepEqual(kinds(run([token(TOKEN), ASK_ALG, EOM]).records), ['supportedAlgorithmList', 'endOfMessage']);
  });

  it('the algorithm list is the implemented configured AEADs with key lengths, 15 always included', () => {
    assert.deepEqual(supportedAlgorithms([17, 30, 99]), [
      { aeadId: 15, keyLength: 32 },
      { aeadId: 17, keyLength: 64 },
      { aeadId: 30, keyLength: 16 },
    ]);
  });

  it('Keep Alive is granted to an authenticated front end that asks, when the shell has room', () => {
    const req = [token(TOKEN), ASK_ALG, ASK_NP, KEEP, EOM];
    const granted = run(req);
    assert.equal(granted.res.keepAlive, true);
    assert.deepEqual(kinds(granted.records), ['supportedAlgorithmList', 'supportedNextProtocolList', 'keepAlive', 'endOfMessage']);
    assert.match(toHex(granted.res.response), /0008000080000000$/);
    const full = run(req, { kept: false, keepAliveAvailable: false });
    assert.equal(full.res.keepAlive, false);
    assert.ok(!kinds(full.records).includes('keepAlive'));
    const bad = run([token('wrong'), ASK_ALG, ASK_NP, KEEP, EOM]);
    assert.equal(bad.res.keepAlive, false);
    assert.deepEqual(errors(bad.records), [1]);
  });
});

describe('fixed key request', () => {
  for (const aeadId of [15, 17]) {
    it(`cookies seal the SUPPLIED keys (AEAD ${aeadId}), never the exporter's`, () => {
      const len = getAead(aeadId)?.keyLength ?? 0;
      const keys = keysOf(len, aeadId);
      const { res, records, exports } = run([token(TOKEN), fixedKey(keys.c2s, keys.s2c), NP0, aead(aeadId), EOM]);
      assert.equal(res.outcome, 'success');
      assert.equal(res.requestKind, 'fixed_key');
      assert.equal(exports, 0, 'the TLS exporter is not used');
      assert.deepEqual(kinds(records), ['nextProtocol', 'aeadAlgorithm', ...Array<string>(8).fill('newCookie'), 'endOfMessage']);
      for (const cookie of cookiesOf(records)) {
        const opened = openCookie(keyset, cookie);
        assert.ok(opened.ok);
        assert.equal(opened.aeadId, aeadId);
        assert.equal(toHex(opened.c2s), toHex(keys.c2s));
        assert.equal(toHex(opened.s2c), toHex(keys.s2c));
      }
    });
  }

  it('carries Server and Port when configured, and Keep Alive last before End of Message when granted', () => {
    const keys = keysOf(32, 1);
    const { res, records } = run([token(TOKEN), fixedKey(keys.c2s, keys.s2c), NP0, aead(15), KEEP, EOM], FRESH, {
      ...POLICY,
      ntpServer: 'ts1.example.net',
      ntpPort: 1123,
    });
    assert.equal(res.keepAlive, true);
    assert.deepEqual(records.slice(-2), [KEEP, EOM]);
    assert.ok(records.some((r) => r.kind === 'ntpv4Server' && r.server === 'ts1.example.net'));
    assert.ok(records.some((r) => r.kind === 'ntpv4Port' && r.port === 1123));
  });

  it('an AEAD the source does not accept gets the ordinary empty AEAD answer, not cookies', () => {
    const keys = keysOf(16, 1);
    const { res, records } = run([token(TOKEN), fixedKey(keys.c2s, keys.s2c), NP0, aead(30), EOM]);
    assert.equal(res.outcome, 'no_common_aead');
    assert.equal(cookiesOf(records).length, 0);
  });

  it('a wrong, prefix, longer or missing token is Error 1, with no cookies and no keep-alive', () => {
    const keys = keysOf(32, 2);
    for (const t of ['abc', 'abcde', 'abce', 'ABCD', 'other-toke']) {
      const { res, records } = run([token(t), fixedKey(keys.c2s, keys.s2c), NP0, aead(15), KEEP, EOM]);
      assert.deepEqual(errors(records), [1], t);
      assert.equal(res.defect, 'bad_authentication_token');
      assert.equal(res.keepAlive, false);
      assert.equal(cookiesOf(records).length, 0);
    }
    const none = run([fixedKey(keys.c2s, keys.s2c), NP0, aead(15), EOM]);
    assert.equal(none.res.defect, 'missing_authentication_token');
    // No tokens configured: nobody is a front end.
    const unconfigured = run([token(TOKEN), fixedKey(keys.c2s, keys.s2c), NP0, aead(15), EOM], FRESH, { aeadIds: [15] });
    assert.equal(unconfigured.res.defect, 'bad_authentication_token');
  });
});

describe('ordinary requests and kept connections', () => {
  it('NTP Server Deny records in an ordinary request are ignored', () => {
    const { res, records } = run([deny('ts1.example.net'), NP0, deny('ts2.example.net'), aead(15), EOM]);
    assert.equal(res.outcome, 'success');
    assert.equal(res.requestKind, 'ordinary');
    assert.equal(cookiesOf(records).length, 8);
    const v = validateKeRequest([deny('a'), NP0, aead(15), deny('b'), EOM]);
    assert.ok(v.ok);
    assert.deepEqual(v.request.deniedServers, ['a', 'b']);
  });

  it('Keep Alive in an ordinary request is never granted', () => {
    const { res, records } = run([NP0, aead(15), KEEP, EOM]);
    assert.equal(res.outcome, 'success');
    assert.equal(res.keepAlive, false);
    assert.ok(!kinds(records).includes('keepAlive'));
  });

  it('on a kept connection only support and fixed key requests are allowed', () => {
    const kept: KePoolConnection = { kept: true, keepAliveAvailable: true };
    const { res, records } = run([NP0, aead(15), EOM], kept);
    assert.deepEqual(errors(records), [1]);
    assert.equal(res.defect, 'ordinary_request_on_kept_connection');
    assert.equal(run([token(TOKEN), ASK_NP, KEEP, EOM], kept).res.keepAlive, true);
  });

  it('response-only records in a request are Error 1', () => {
    const lists: KeRecord[] = [
      { kind: 'supportedAlgorithmList', critical: true, algorithms: [{ aeadId: 15, keyLength: 32 }] },
      { kind: 'supportedNextProtocolList', critical: true, protocolIds: [0] },
    ];
    for (const r of lists) assert.equal(run([token(TOKEN), r, EOM]).res.defect, 'response_only_record');
  });
});

describe('constant-time token compare', () => {
  it('constantTimeEqual is equality of octet strings', () => {
    assert.ok(constantTimeEqual(utf8('abcd'), utf8('abcd')));
    assert.ok(constantTimeEqual(new Uint8Array(0), new Uint8Array(0)));
    for (const other of ['abc', 'abcde', 'abce', 'bbcd', '']) assert.ok(!constantTimeEqual(utf8(other), utf8('abcd')), other);
    // A given token that extends the expected one by NUL octets is still different.
    assert.ok(!constantTimeEqual(Uint8Array.from([0x61, 0]), Uint8Array.from([0x61])));
  });

  it('isAcceptedToken matches any accepted token and nothing else (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 24 }), { maxLength: 4 }), fc.uint8Array({ maxLength: 24 }), (accepted, given) => {
        const expected = accepted.some((a) => toHex(a) === toHex(given));
        assert.equal(isAcceptedToken(given, accepted), expected);
      }),
      { numRuns: 500, interruptAfterTimeLimit: 1500 },
    );
  });

  it('the long-lived cap defaults to a tenth of concurrent connections, at least 1', () => {
    assert.equal(defaultLonglivedConnections(512), 51);
    assert.equal(defaultLonglivedConnections(5), 1);
  });
});

// ---------- property test: single-defect pool requests ----------

interface PoolCase {
  readonly records: KeRecord[];
  readonly kind: 'support' | 'fixed_key';
}

const arbExtras: fc.Arbitrary<KeRecord[]> = fc.array(
  fc.oneof(
    fc.constantFrom('ts1.example.net', '192.0.2.7', 'x').map(deny),
    fc.record({ type: fc.integer({ min: 0x4000, max: 0x7fff }), body: fc.uint8Array({ maxLength: 6 }) }).map(
      (u): KeRecord => ({ kind: 'unknown', critical: false, type: u.type, body: u.body }),
    ),
  ),
  { maxLength: 3 },
);

function shuffle(rs: KeRecord[], order: readonly number[]): KeRecord[] {
  return rs
    .map((r, i) => ({ r, k: (order[i % order.length] ?? 0) * 32 + i }))
    .sort((a, b) => a.k - b.k)
    .map((x) => x.r);
}

const arbPoolRequest: fc.Arbitrary<PoolCase> = fc
  .record({
    fixed: fc.boolean(),
    ask: fc.constantFrom([true, false], [false, true], [true, true]),
    aeadId: fc.constantFrom(15, 17),
    tok: fc.constantFrom(TOKEN, 'other-token'),
    keep: fc.boolean(),
    extras: arbExtras,
    order: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
  })
  .map((g): PoolCase => {
    const rs: KeRecord[] = [token(g.tok), ...g.extras];
    if (g.keep) rs.push(KEEP);
    if (g.fixed) {
      const keys = keysOf(getAead(g.aeadId)?.keyLength ?? 32, g.order[0] ?? 0);
      rs.push(fixedKey(keys.c2s, keys.s2c), NP0, aead(g.aeadId));
    } else {
      if (g.ask[0] === true) rs.push(ASK_ALG);
      if (g.ask[1] === true) rs.push(ASK_NP);
    }
    return { records: [...shuffle(rs, g.order), EOM], kind: g.fixed ? 'fixed_key' : 'support' };
  });

type PoolDefect = {
  readonly name: string;
  readonly code: 0 | 1;
  readonly only?: 'support' | 'fixed_key';
  readonly apply: (rs: KeRecord[], pos: number) => KeRecord[] | Uint8Array;
};

const insertAt = (rs: KeRecord[], pos: number, r: KeRecord): KeRecord[] => {
  const before = rs.slice(0, -1);
  const i = pos % (before.length + 1);
  return [...before.slice(0, i), r, ...before.slice(i), ...rs.slice(-1)];
};
const mapKind = (rs: KeRecord[], kind: KeRecord['kind'], f: (r: KeRecord) => KeRecord): KeRecord[] => rs.map((r) => (r.kind === kind ? f(r) : r));
const without = (rs: KeRecord[], kind: KeRecord['kind']): KeRecord[] => rs.filter((r) => r.kind !== kind);

const POOL_DEFECTS: readonly PoolDefect[] = [
  { name: 'no token', code: 1, apply: (rs) => without(rs, 'authenticationToken') },
  { name: 'wrong token', code: 1, apply: (rs) => mapKind(rs, 'authenticationToken', () => token('abce')) },
  { name: 'token with one octet more', code: 1, apply: (rs) => mapKind(rs, 'authenticationToken', () => token('abcdd')) },
  { name: 'empty token', code: 1, apply: (rs) => mapKind(rs, 'authenticationToken', () => token('')) },
  { name: 'duplicate token', code: 1, apply: (rs, p) => insertAt(rs, p, token(TOKEN)) },
  { name: 'Keep Alive with a body', code: 1, apply: (rs, p) => insertAt(rs, p, raw(8, false, [0])) },
  { name: 'client Error', code: 1, apply: (rs, p) => insertAt(rs, p, { kind: 'error', critical: true, code: 2 }) },
  { name: 'client Warning', code: 1, apply: (rs, p) => insertAt(rs, p, { kind: 'warning', critical: true, code: 2 }) },
  { name: 'client New Cookie', code: 1, apply: (rs, p) => insertAt(rs, p, { kind: 'newCookie', critical: false, cookie: new Uint8Array(8) }) },
  { name: 'non-empty Supported Algorithm List', code: 1, apply: (rs, p) => insertAt(without(rs, 'supportedAlgorithmList'), p, { kind: 'supportedAlgorithmList', critical: true, algorithms: [{ aeadId: 15, keyLength: 32 }] }) },
  { name: 'non-empty Supported Next Protocol List', code: 1, apply: (rs, p) => insertAt(without(rs, 'supportedNextProtocolList'), p, { kind: 'supportedNextProtocolList', critical: true, protocolIds: [0] }) },
  { name: 'missing End of Message', code: 1, apply: (rs) => rs.slice(0, -1) },
  { name: 'octets after End of Message', code: 1, apply: (rs) => Uint8Array.from([...encodeKeMessage(rs), 0]) },
  { name: 'truncated last record', code: 1, apply: (rs) => encodeKeMessage(rs).subarray(0, -1) },
  { name: 'unknown critical record', code: 0, apply: (rs, p) => insertAt(rs, p, raw(0x4003, true, [])) },
  { name: 'duplicate Supported Algorithm List', code: 1, only: 'support', apply: (rs, p) => insertAt(insertAt(without(rs, 'supportedAlgorithmList'), p, ASK_ALG), p + 1, ASK_ALG) },
  { name: 'Next Protocol in a support request', code: 1, only: 'support', apply: (rs, p) => insertAt(rs, p, NP0) },
  { name: 'Fixed Key Request in a support request', code: 1, only: 'support', apply: (rs, p) => insertAt(rs, p, fixedKey(new Uint8Array(32), new Uint8Array(32))) },
  { name: 'duplicate Fixed Key Request', code: 1, only: 'fixed_key', apply: (rs, p) => insertAt(rs, p, rs.find((r) => r.kind === 'fixedKeyRequest') ?? EOM) },
  { name: 'keys one octet short each', code: 1, only: 'fixed_key', apply: (rs) => mapKind(rs, 'fixedKeyRequest', (r) => (r.kind === 'fixedKeyRequest' ? fixedKey(r.keys.subarray(1, r.keys.length / 2), r.keys.subarray(r.keys.length / 2 + 1)) : r)) },
  { name: 'keys of odd total length', code: 1, only: 'fixed_key', apply: (rs) => mapKind(rs, 'fixedKeyRequest', (r) => (r.kind === 'fixedKeyRequest' ? raw(12, true, [...r.keys.subarray(1)]) : r)) },
  { name: 'two protocols', code: 1, only: 'fixed_key', apply: (rs) => mapKind(rs, 'nextProtocol', () => ({ kind: 'nextProtocol', critical: true, protocolIds: [0, 0x8001] })) },
  { name: 'two AEADs', code: 1, only: 'fixed_key', apply: (rs) => mapKind(rs, 'aeadAlgorithm', (r) => (r.kind === 'aeadAlgorithm' ? aead(...r.aeadIds, 15) : r)) },
  { name: 'no AEAD', code: 1, only: 'fixed_key', apply: (rs) => without(rs, 'aeadAlgorithm') },
  { name: 'no Next Protocol', code: 1, only: 'fixed_key', apply: (rs) => without(rs, 'nextProtocol') },
  { name: 'Supported list in a fixed key request', code: 1, only: 'fixed_key', apply: (rs, p) => insertAt(rs, p, ASK_NP) },
];

describe('pool request properties', () => {
  it('every valid pool request succeeds without an Error record; fixed key cookies open to the supplied keys', () => {
    fc.assert(
      fc.property(arbPoolRequest, fc.boolean(), (c, available) => {
        const { res, records, exports } = run(c.records, { kept: available, keepAliveAvailable: available });
        assert.equal(res.outcome, 'success');
        assert.equal(res.requestKind, c.kind);
        assert.deepEqual(errors(records), []);
        assert.equal(exports, 0);
        assert.equal(res.keepAlive, available && c.records.some((r) => r.kind === 'keepAlive'));
        if (c.kind === 'fixed_key') {
          const fk = c.records.find((r) => r.kind === 'fixedKeyRequest');
          assert.ok(fk?.kind === 'fixedKeyRequest');
          const cookie = cookiesOf(records)[0];
          assert.ok(cookie !== undefined);
          const opened = openCookie(keyset, cookie);
          assert.ok(opened.ok);
          assert.equal(toHex(opened.c2s) + toHex(opened.s2c), toHex(fk.keys));
        }
      }),
      { numRuns: 300, interruptAfterTimeLimit: 2500 },
    );
  });

  it('every single-defect pool request gets exactly one Error record, no cookies, no keep-alive', () => {
    fc.assert(
      fc.property(arbPoolRequest, fc.constantFrom(...POOL_DEFECTS), fc.nat(), fc.boolean(), (c, defect, pos, kept) => {
        fc.pre(defect.only === undefined || defect.only === c.kind);
        const { res, records, exports } = run(defect.apply(c.records, pos), { kept, keepAliveAvailable: true });
        assert.deepEqual(errors(records), [defect.code], defect.name);
        assert.deepEqual(kinds(records), ['error', 'endOfMessage'], defect.name);
        assert.equal(res.keepAlive, false, defect.name);
        assert.equal(exports, 0, defect.name);
      }),
      { numRuns: 2000, interruptAfterTimeLimit: 4000 },
    );
  });
});
