/**
 * PROXY protocol v2 header parser (src/core/proxy-v2.ts; HAProxy's "The PROXY protocol", section 2.2).
 * Known headers, one test per rule, and time-budgeted property tests: the parser never throws, and each
 * defect class (truncated, oversized, LOCAL, TCP6, corrupted signature, bad CRC) maps to one outcome.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { crc32c, parseProxyHeader, PROXY_V2_MAX_LENGTH, PROXY_V2_SIGNATURE } from '../../src/core/proxy-v2.js';
import { matchCidr, parseCidr } from '../../src/core/cidr.js';

const BUDGET = { interruptAfterTimeLimit: 4000, numRuns: 2000 };

/** Builds a header: command (0 LOCAL, 1 PROXY), family/protocol octet, address block, TLVs, with an optional CRC32C TLV. */
function header(o: { command?: number; familyProtocol?: number; address?: readonly number[]; tlvs?: readonly number[]; crc?: boolean; version?: number }): Uint8Array {
  const address = o.address ?? [];
  const tlvs = [...(o.tlvs ?? [])];
  const crcAt = 16 + address.length + tlvs.length + 3;
  if (o.crc === true) tlvs.push(0x03, 0x00, 0x04, 0, 0, 0, 0);
  const length = address.length + tlvs.length;
  const out = Uint8Array.from([
    ...PROXY_V2_SIGNATURE,
    ((o.version ?? 2) << 4) | (o.command ?? 1),
    o.familyProtocol ?? 0x11,
    length >> 8,
    length & 0xff,
    ...address,
    ...tlvs,
  ]);
  if (o.crc === true) new DataView(out.buffer).setUint32(crcAt, crc32c(out));
  return out;
}

/** TCP4 192.0.2.10:51000 → 198.51.100.1:4460. */
const TCP4 = [192, 0, 2, 10, 198, 51, 100, 1, 0xc7, 0x38, 0x11, 0x6c];
/** TCP6 2001:db8::7:51000 → 2001:db8::1:4460. */
const TCP6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xc7, 0x38, 0x11, 0x6c];
/** TCP6 with an IPv4-mapped source ::ffff:203.0.113.9. */
const TCP6_MAPPED = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 9, ...TCP6.slice(16)];

test('CRC-32C known answer (RFC 3720 B.4: "123456789" → e3069283)', () => {
  assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
});

test('TCP4 PROXY header: client address and port, header length; trailing octets are not part of it', () => {
  const h = header({ address: TCP4 });
  const withTls = Uint8Array.from([...h, 0x16, 0x03, 0x01]);
  const r = parseProxyHeader(withTls);
  assert.deepEqual(r, {
    kind: 'proxy',
    headerLength: 28,
    source: { address: '192.0.2.10', port: 51000, family: 4 },
    destination: { address: '198.51.100.1', port: 4460, family: 4 },
  });
});

test('TCP6 PROXY header; an IPv4-mapped source is normalised to IPv4', () => {
  const r = parseProxyHeader(header({ familyProtocol: 0x21, address: TCP6 }));
  assert.equal(r.kind, 'proxy');
  if (r.kind !== 'proxy') return;
  assert.deepEqual(r.source, { address: '2001:db8::7', port: 51000, family: 6 });
  assert.equal(r.headerLength, 52);
  const m = parseProxyHeader(header({ familyProtocol: 0x21, address: TCP6_MAPPED }));
  assert.equal(m.kind === 'proxy' ? m.source.address : m.kind, '203.0.113.9');
  assert.equal(m.kind === 'proxy' ? m.source.family : 0, 4);
});

test('LOCAL command: accepted whatever its address block says (section 2.2)', () => {
  assert.deepEqual(parseProxyHeader(header({ command: 0, familyProtocol: 0x00 })), { kind: 'local', headerLength: 16 });
  assert.deepEqual(parseProxyHeader(header({ command: 0, familyProtocol: 0x11, address: TCP4 })), { kind: 'local', headerLength: 28 });
});

test('each defect has its own outcome: version, command, protocol, address length, length cap, TLV bounds, CRC', () => {
  const reason = (b: Uint8Array): string => {
    const r = parseProxyHeader(b);
    return r.kind === 'invalid' ? r.reason : r.kind;
  };
  assert.equal(reason(header({ version: 1, address: TCP4 })), 'bad_version');
  assert.equal(reason(header({ command: 2, address: TCP4 })), 'bad_command');
  assert.equal(reason(header({ familyProtocol: 0x12, address: TCP4 })), 'unsupported_protocol', 'UDP over IPv4');
  assert.equal(reason(header({ familyProtocol: 0x31, address: new Array(216).fill(0) })), 'unsupported_protocol', 'UNIX stream');
  assert.equal(reason(header({ familyProtocol: 0x00, address: [] })), 'unsupported_protocol', 'PROXY with UNSPEC');
  assert.equal(reason(header({ address: TCP4.slice(0, 8) })), 'bad_address_length');
  assert.equal(reason(header({ familyProtocol: 0x21, address: TCP4 })), 'bad_address_length');
  const oversized = header({ address: TCP4 });
  oversized[14] = (PROXY_V2_MAX_LENGTH + 1) >> 8;
  oversized[15] = (PROXY_V2_MAX_LENGTH + 1) & 0xff;
  assert.equal(reason(oversized.subarray(0, 16)), 'too_long', 'refused from the 16 fixed octets, before buffering');
  assert.equal(reason(header({ address: TCP4, tlvs: [0x04, 0x00] })), 'bad_tlv', 'TLV header cut short');
  assert.equal(reason(header({ address: TCP4, tlvs: [0x04, 0x00, 0x05, 1, 2] })), 'bad_tlv', 'TLV value beyond the header');
  assert.equal(reason(header({ address: TCP4, tlvs: [0x03, 0x00, 0x02, 1, 2] })), 'bad_tlv', 'CRC32C TLV of the wrong length');
  const good = header({ address: TCP4, tlvs: [0x04, 0x00, 0x02, 0, 0], crc: true });
  assert.equal(reason(good), 'proxy');
  const bad = good.slice();
  bad[17] = (bad[17] ?? 0) ^ 1; // the source address changed in transit
  assert.equal(reason(bad), 'bad_crc');
});

test('a wrong signature is refused at the first differing octet, never waited on', () => {
  assert.equal(parseProxyHeader(new TextEncoder().encode('PROXY TCP4 ')).kind, 'invalid', 'the v1 text form');
  assert.deepEqual(parseProxyHeader(Uint8Array.from([0x16, 0x03, 0x01])), { kind: 'invalid', reason: 'bad_signature' }, 'a TLS ClientHello');
  assert.deepEqual(parseProxyHeader(Uint8Array.from(PROXY_V2_SIGNATURE.slice(0, 5))), { kind: 'incomplete' });
  assert.deepEqual(parseProxyHeader(new Uint8Array(0)), { kind: 'incomplete' });
});

const validHeader = fc.oneof(
  fc.constant(header({ address: TCP4 })),
  fc.constant(header({ familyProtocol: 0x21, address: TCP6 })),
  fc.constant(header({ address: TCP4, crc: true })),
  fc.uint8Array({ minLength: 0, maxLength: 40 }).map((v) => header({ address: TCP4, tlvs: [0xe0, v.length >> 8, v.length & 0xff, ...v], crc: true })),
);

test('property: the parser never throws, and any outcome is one of the four kinds', () => {
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }), validHeader.chain((h) => fc.uint8Array({ maxLength: 60 }).map((tail) => Uint8Array.from([...h.subarray(0, 16), ...tail])))), (bytes) => {
      const r = parseProxyHeader(bytes);
      assert.ok(['incomplete', 'local', 'proxy', 'invalid'].includes(r.kind));
      if (r.kind === 'proxy' || r.kind === 'local') assert.ok(r.headerLength <= bytes.length);
    }),
    BUDGET,
  );
});

test('property: every strict prefix of a valid header is incomplete; the whole header plus any tail parses the same', () => {
  fc.assert(
    fc.property(validHeader, fc.nat(), fc.uint8Array({ maxLength: 50 }), (h, cut, tail) => {
      assert.equal(parseProxyHeader(h.subarray(0, cut % h.length)).kind, 'incomplete');
      const whole = parseProxyHeader(h);
      assert.equal(whole.kind, 'proxy');
      assert.deepEqual(parseProxyHeader(Uint8Array.from([...h, ...tail])), whole);
    }),
    BUDGET,
  );
});

test('property: one corrupted signature octet → bad_signature; a length over the cap → too_long; LOCAL → local', () => {
  fc.assert(
    fc.property(validHeader, fc.integer({ min: 0, max: 11 }), fc.integer({ min: 1, max: 255 }), fc.integer({ min: PROXY_V2_MAX_LENGTH + 1, max: 0xffff }), (h, at, flip, length) => {
      const corrupt = h.slice();
      corrupt[at] = (corrupt[at] ?? 0) ^ flip;
      assert.deepEqual(parseProxyHeader(corrupt), { kind: 'invalid', reason: 'bad_signature' });
      const big = h.slice();
      big[14] = length >> 8;
      big[15] = length & 0xff;
      assert.deepEqual(parseProxyHeader(big), { kind: 'invalid', reason: 'too_long' });
      const local = h.slice();
      local[12] = 0x20;
      const r = parseProxyHeader(local);
      assert.equal(r.kind, 'local');
    }),
    BUDGET,
  );
});

test('property: one flipped bit in the address block or the CRC32C TLV of a protected header is refused', () => {
  // Octet 28 is the TLV's type: flipping it makes the CRC TLV some other TLV, which carries no check
  // (the spec verifies a CRC only when one is present), so it is left out here.
  fc.assert(
    fc.property(fc.integer({ min: 16, max: 34 }).filter((at) => at !== 28), fc.integer({ min: 0, max: 7 }), (at, bit) => {
      const h = header({ address: TCP4, crc: true });
      const flipped = h.slice();
      flipped[at] = (flipped[at] ?? 0) ^ (1 << bit);
      const r = parseProxyHeader(flipped);
      assert.equal(r.kind, 'invalid', `octet ${at} bit ${bit}: ${JSON.stringify(r)}`);
    }),
    BUDGET,
  );
});

test('CIDR prefixes for proxy-trusted-sources: IPv4, IPv6, bare hosts, IPv4-mapped peers; bad ones refused', () => {
  const list = ['10.0.0.0/8', '192.0.2.7', '2001:db8::/32'].map((t) => parseCidr(t));
  assert.ok(list.every((p) => p !== undefined));
  const prefixes = list.filter((p) => p !== undefined);
  assert.equal(matchCidr(prefixes, '10.200.3.4')?.text, '10.0.0.0/8');
  assert.equal(matchCidr(prefixes, '::ffff:10.1.1.1')?.text, '10.0.0.0/8', 'IPv4 seen on a dual-stack socket');
  assert.equal(matchCidr(prefixes, '192.0.2.7')?.text, '192.0.2.7');
  assert.equal(matchCidr(prefixes, '192.0.2.8'), undefined);
  assert.equal(matchCidr(prefixes, '2001:db8:ffff::1')?.text, '2001:db8::/32');
  assert.equal(matchCidr(prefixes, '2001:db9::1'), undefined);
  assert.equal(matchCidr(prefixes, 'not an address'), undefined);
  for (const bad of ['10.0.0.0/33', '2001:db8::/129', '10.0.0/8', 'example.org', '10.0.0.0/', '10.0.0.0/8x', '::ffff:10.0.0.0/104', 'fe80::1%eth0']) {
    assert.equal(parseCidr(bad), undefined, bad);
  }
  assert.equal(parseCidr('0.0.0.0/0')?.prefixBits, 0);
});
