import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import fc from 'fast-check';
import { formatIpAddress, hashIpWords, maskIpPrefix, parseIpAddress } from '../../src/core/ip.js';

function parsed(text: string): { family: number; words: number[] } {
  const out = new Uint32Array(4);
  const family = parseIpAddress(text, out);
  return { family, words: [...out] };
}

describe('parseIpAddress', () => {
  test('IPv4 is held as IPv4-mapped IPv6 (RFC 4291 §2.5.5.2), and a mapped address is IPv4', () => {
    assert.deepEqual(parsed('192.0.2.7'), { family: 4, words: [0, 0, 0xffff, 0xc0000207] });
    assert.deepEqual(parsed('::ffff:192.0.2.7'), { family: 4, words: [0, 0, 0xffff, 0xc0000207] });
    assert.deepEqual(parsed('::ffff:c000:207'), { family: 4, words: [0, 0, 0xffff, 0xc0000207] });
    assert.deepEqual(parsed('0:0:0:0:0:FFFF:192.0.2.7'), { family: 4, words: [0, 0, 0xffff, 0xc0000207] });
    assert.deepEqual(parsed('0.0.0.0'), { family: 4, words: [0, 0, 0xffff, 0] });
    assert.deepEqual(parsed('255.255.255.255'), { family: 4, words: [0, 0, 0xffff, 0xffffffff] });
  });

  test('IPv6 forms: compressed, full, embedded IPv4, zone id', () => {
    assert.deepEqual(parsed('2001:db8::1'), { family: 6, words: [0x20010db8, 0, 0, 1] });
    assert.deepEqual(parsed('2001:0db8:0000:0000:0000:0000:0000:0001'), { family: 6, words: [0x20010db8, 0, 0, 1] });
    assert.deepEqual(parsed('::'), { family: 6, words: [0, 0, 0, 0] });
    assert.deepEqual(parsed('::1'), { family: 6, words: [0, 0, 0, 1] });
    assert.deepEqual(parsed('1::'), { family: 6, words: [0x00010000, 0, 0, 0] });
    assert.deepEqual(parsed('fe80::1%eth0'), { family: 6, words: [0xfe800000, 0, 0, 1] });
    assert.deepEqual(parsed('64:ff9b::192.0.2.33'), { family: 6, words: [0x0064ff9b, 0, 0, 0xc0000221] });
    assert.deepEqual(parsed('1:2:3:4:5:6:1.2.3.4'), { family: 6, words: [0x00010002, 0x00030004, 0x00050006, 0x01020304] });
    assert.deepEqual(parsed('::1.2.3.4'), { family: 6, words: [0, 0, 0, 0x01020304] });
    assert.deepEqual(parsed('ABCD:EF01::'), { family: 6, words: [0xabcdef01, 0, 0, 0] });
  });

  test('not IP literals → 0', () => {
    for (const bad of [
      '', 'localhost', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.-4', '1..2.3', '1.2.3.4 ', ' 1.2.3.4', '01234.1.1.1',
      ':', ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', 'g::1', '1:2:3:4:5:6:7', '::1.2.3', '1.2.3.4::',
      '1:2:3:4:5:6:7:1.2.3.4', '::ffff:256.0.0.1', '[::1]', '1:2:3:4:5:6:7:8::',
    ]) {
      assert.equal(parseIpAddress(bad, new Uint32Array(4)), 0, JSON.stringify(bad));
    }
  });

  test('agrees with node:net on random addresses and their text forms (property)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended()), (text) => {
        const family = parseIpAddress(text, new Uint32Array(4));
        const node = isIP(text);
        // fast-check's extended IPv4 (octal/hex parts) is not an IP literal for either.
        assert.equal(family !== 0, node !== 0, text);
      }),
      { numRuns: 3000 },
    );
  });

  test('format → parse round trip; RFC 5952 text for IPv6 (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff })), { minLength: 4, maxLength: 4 }), (ws) => {
        const words = Uint32Array.from(ws);
        const family = words[0] === 0 && words[1] === 0 && words[2] === 0xffff ? 4 : 6;
        const text = formatIpAddress(words, family);
        const back = new Uint32Array(4);
        assert.equal(parseIpAddress(text, back), family, text);
        assert.deepEqual([...back], [...words], text);
        if (family === 6) assert.equal(new URL(`http://[${text}]/`).hostname, `[${text}]`, 'canonical (WHATWG = RFC 5952)');
      }),
      { numRuns: 3000 },
    );
  });
});

describe('maskIpPrefix', () => {
  test('IPv4 prefixes count IPv4 bits; the mapped marker stays', () => {
    const cases: readonly [string, number, string][] = [
      ['192.0.2.255', 32, '192.0.2.255'],
      ['192.0.2.255', 24, '192.0.2.0'],
      ['192.0.2.255', 23, '192.0.2.0'],
      ['192.0.3.255', 23, '192.0.2.0'],
      ['192.0.2.255', 1, '128.0.0.0'],
      ['192.0.2.255', 0, '0.0.0.0'],
    ];
    for (const [text, bits, expected] of cases) {
      const w = new Uint32Array(4);
      assert.equal(parseIpAddress(text, w), 4);
      maskIpPrefix(w, 4, bits);
      assert.equal(formatIpAddress(w, 4), expected, `${text}/${bits}`);
      assert.deepEqual([w[0], w[1], w[2]], [0, 0, 0xffff]);
    }
  });

  test('IPv6 prefixes at every word boundary and in between', () => {
    const cases: readonly [number, string][] = [
      [128, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
      [127, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe'],
      [96, 'ffff:ffff:ffff:ffff:ffff:ffff::'],
      [64, 'ffff:ffff:ffff:ffff::'],
      [56, 'ffff:ffff:ffff:ff00::'],
      [48, 'ffff:ffff:ffff::'],
      [33, 'ffff:ffff:8000::'],
      [32, 'ffff:ffff::'],
      [1, '8000::'],
      [0, '::'],
    ];
    for (const [bits, expected] of cases) {
      const w = new Uint32Array(4);
      assert.equal(parseIpAddress('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', w), 6);
      maskIpPrefix(w, 6, bits);
      assert.equal(formatIpAddress(w, 6), expected, `/${bits}`);
    }
  });
});

describe('hashIpWords', () => {
  test('deterministic for a seed, different under another seed, spread over buckets', () => {
    const w = new Uint32Array(4);
    parseIpAddress('192.0.2.1', w);
    assert.equal(hashIpWords(w, 1), hashIpWords(w, 1));
    assert.notEqual(hashIpWords(w, 1), hashIpWords(w, 2));
    // 4096 consecutive IPv4 addresses over 64 buckets: none empty, none more than 3× the mean.
    const counts = new Array<number>(64).fill(0);
    for (let i = 0; i < 4096; i++) {
      parseIpAddress(`10.0.${i >> 8}.${i & 0xff}`, w);
      const b = hashIpWords(w, 12345) % 64;
      counts[b] = (counts[b] ?? 0) + 1;
    }
    assert.ok(Math.min(...counts) > 0 && Math.max(...counts) < 3 * 64, `bucket counts ${counts.join(',')}`);
  });
});
