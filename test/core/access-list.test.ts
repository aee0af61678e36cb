/**
 * core/access-list.ts: CIDR access lists where the most specific prefix wins (chrony allow/deny).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AccessList, type AccessEntry } from '../../src/core/access-list.js';

function list(entries: AccessEntry[], defaultAction: 'allow' | 'deny' | 'ignore' = 'allow'): AccessList {
  const r = AccessList.compile(entries, defaultAction);
  if (!r.ok) return assert.fail(r.error);
  return r.list;
}

test('the most specific prefix wins, whatever the order of the entries', () => {
  const entries: AccessEntry[] = [
    { prefix: '10.0.0.0/8', action: 'ignore' },
    { prefix: '10.1.0.0/16', action: 'allow' },
    { prefix: '10.1.2.0/24', action: 'deny' },
    { prefix: '10.1.2.3', action: 'allow' },
  ];
  for (const order of [entries, [...entries].reverse()]) {
    const l = list(order);
    assert.equal(l.decide('10.9.9.9'), 'ignore');
    assert.equal(l.decide('10.1.9.9'), 'allow');
    assert.equal(l.decide('10.1.2.9'), 'deny');
    assert.equal(l.decide('10.1.2.3'), 'allow');
    assert.equal(l.decide('192.0.2.1'), 'allow', 'no match: the default');
  }
});

test('IPv4 prefixes match IPv4-mapped IPv6 peers (a dual-stack socket) the same way', () => {
  const l = list([{ prefix: '192.0.2.0/24', action: 'deny' }]);
  assert.equal(l.decide('192.0.2.7'), 'deny');
  assert.equal(l.decide('::ffff:192.0.2.7'), 'deny');
  assert.equal(l.decide('::ffff:198.51.100.1'), 'allow');
});

test('IPv6 prefixes: /64 sites, /0 everything, zone ids ignored', () => {
  const l = list(
    [
      { prefix: '2001:db8:1:2::/64', action: 'allow' },
      { prefix: '2001:db8::/32', action: 'deny' },
      { prefix: '::/0', action: 'ignore' },
    ],
    'allow',
  );
  assert.equal(l.decide('2001:db8:1:2::99'), 'allow');
  assert.equal(l.decide('2001:db8:ffff::1'), 'deny');
  assert.equal(l.decide('fe80::1%eth0'), 'ignore');
  assert.equal(l.decide('192.0.2.1'), 'ignore', '::/0 covers the IPv4-mapped range too');
  assert.equal(list([{ prefix: '0.0.0.0/0', action: 'deny' }]).decide('2001:db8::1'), 'allow', 'an IPv4 rule never matches IPv6');
});

test('the default action applies to unmatched and unparsable addresses; allowsAll says when nothing needs checking', () => {
  const closed = list([{ prefix: '127.0.0.0/8', action: 'allow' }], 'ignore');
  assert.equal(closed.decide('127.0.0.1'), 'allow');
  assert.equal(closed.decide('8.8.8.8'), 'ignore');
  assert.equal(closed.decide('not an address'), 'ignore');
  assert.equal(closed.allowsAll, false);
  assert.equal(list([]).allowsAll, true);
  assert.equal(list([{ prefix: '10.0.0.0/8', action: 'allow' }]).allowsAll, true);
});

test('bad prefixes and contradictions are refused with a message naming them', () => {
  const error = (entries: AccessEntry[]): string => {
    const r = AccessList.compile(entries);
    assert.ok(!r.ok);
    return r.error;
  };
  assert.match(error([{ prefix: '10.0.0.0/33', action: 'deny' }]), /not a CIDR prefix .*"10\.0\.0\.0\/33"/);
  assert.match(error([{ prefix: '2001:db8::/129', action: 'deny' }]), /not a CIDR prefix/);
  assert.match(error([{ prefix: 'example.org/8', action: 'deny' }]), /not a CIDR prefix/);
  assert.match(error([{ prefix: '::ffff:10.0.0.0/104', action: 'deny' }]), /not a CIDR prefix/, 'IPv4 prefixes are written as IPv4');
  assert.match(error([{ prefix: '10.0.0.0/8', action: 'deny' }, { prefix: '10.0.0.0/8', action: 'allow' }]), /both deny and allow/);
  assert.ok(AccessList.compile([{ prefix: '10.0.0.0/8', action: 'deny' }, { prefix: '10.0.0.0/8', action: 'deny' }]).ok, 'a repeat is fine');
  // The index names the entry at fault: the bad one, or the second listing of a conflict.
  const at = (entries: AccessEntry[]): number => {
    const r = AccessList.compile(entries);
    assert.ok(!r.ok);
    return r.index;
  };
  assert.equal(at([{ prefix: '10.0.0.0/8', action: 'deny' }, { prefix: '10.0.0.0/8', action: 'deny' }, { prefix: 'x', action: 'allow' }]), 2);
  assert.equal(at([{ prefix: '192.0.2.0/24', action: 'ignore' }, { prefix: '10.0.0.0/8', action: 'deny' }, { prefix: '10.0.0.0/8', action: 'allow' }]), 2);
});

test('property: the decision equals the action of the longest matching prefix (brute force over IPv4)', () => {
  const prefixArb = fc.record({ addr: fc.integer({ min: 0, max: 0xffffffff }), bits: fc.integer({ min: 0, max: 32 }), action: fc.constantFrom('allow' as const, 'deny' as const, 'ignore' as const) });
  fc.assert(
    fc.property(fc.array(prefixArb, { maxLength: 12 }), fc.integer({ min: 0, max: 0xffffffff }), (raw, probe) => {
      const mask = (bits: number): number => (bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0);
      const seen = new Map<string, 'allow' | 'deny' | 'ignore'>();
      const entries: AccessEntry[] = [];
      for (const r of raw) {
        const net = (r.addr & mask(r.bits)) >>> 0;
        const key = `${net}/${r.bits}`;
        if (seen.has(key)) continue;
        seen.set(key, r.action);
        entries.push({ prefix: `${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${r.bits}`, action: r.action });
      }
      let best = -1;
      let expected: 'allow' | 'deny' | 'ignore' = 'allow';
      for (const [key, action] of seen) {
        const [net = 0, bits = 0] = key.split('/').map(Number);
        if (((probe & mask(bits)) >>> 0) === net && bits > best) {
          best = bits;
          expected = action;
        }
      }
      const text = `${probe >>> 24}.${(probe >>> 16) & 255}.${(probe >>> 8) & 255}.${probe & 255}`;
      return list(entries).decide(text) === expected;
    }),
    { numRuns: 500 },
  );
});

test('a bare address is a one-host prefix', () => {
  const l = list([{ prefix: '192.0.2.1', action: 'deny' }, { prefix: '2001:db8::1', action: 'ignore' }]);
  assert.equal(l.decide('192.0.2.1'), 'deny');
  assert.equal(l.decide('192.0.2.2'), 'allow');
  assert.equal(l.decide('2001:db8::1'), 'ignore');
  assert.equal(l.decide('2001:db8::2'), 'allow');
});
