import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { ClientTable, clientTableBytes } from '../../src/core/client-table.js';
import { parseIpAddress } from '../../src/core/ip.js';
import { RateLimiter, rateLimiterBytes, type RateDecision, type RateLimitConfig } from '../../src/core/limiter.js';

const BASE: RateLimitConfig = { intervalMs: 10_000, burst: 2, leak: 0, ipv4PrefixBits: 32, ipv6PrefixBits: 64 };

function limiter(tableSize: number, config: Partial<RateLimitConfig> = {}, shared = false): RateLimiter {
  const bytes = rateLimiterBytes(tableSize);
  return RateLimiter.create(shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes), tableSize, 0x5eed, { ...BASE, ...config });
}

describe('ClientTable', () => {
  test('memory is stated up front and the geometry never exceeds the capacity asked for', () => {
    for (const capacity of [1, 3, 8, 16, 17, 100, 65_536]) {
      const table = new ClientTable(new ArrayBuffer(clientTableBytes(capacity)), { capacity, seed: 1 });
      assert.ok(table.capacity <= capacity && table.capacity >= Math.min(capacity, 8) && table.capacity > capacity - 8, `capacity ${capacity} → ${table.capacity}`);
      assert.ok(clientTableBytes(capacity) <= 64 + 4 * (table.buckets + 1) + 48 * table.capacity);
    }
    assert.throws(() => new ClientTable(new ArrayBuffer(10), { capacity: 16, seed: 1 }), RangeError);
    assert.throws(() => new ClientTable(new ArrayBuffer(clientTableBytes(16))), /does not hold a client table/);
  });

  test('claim, find, release; a full bucket evicts the smallest float value 1 only when asked', () => {
    const table = new ClientTable(new ArrayBuffer(clientTableBytes(4)), { capacity: 4, seed: 9 });
    assert.equal(table.buckets, 1);
    const cursor = { bucket: 0, slot: -1 };
    const key = (i: number): Uint32Array => Uint32Array.of(0, 0, 0xffff, i);
    for (let i = 0; i < 4; i++) {
      table.lock(0, cursor);
      assert.equal(table.find(key(i), cursor), -1);
      const s = table.claim(key(i), cursor, false);
      assert.ok(s >= 0);
      table.setFloat(s, 1, 100 - i); // key 3 has the smallest value
      table.setInt(s, 0, i);
      table.unlock(cursor);
    }
    assert.equal(table.countUsed(), 4);
    table.lock(0, cursor);
    assert.equal(table.claim(key(9), cursor, false), -1, 'full, no eviction');
    const evicted = table.claim(key(9), cursor, true);
    assert.ok(evicted >= 0);
    assert.equal(table.int(evicted, 0), 0, 'user values zeroed');
    assert.equal(table.find(key(3), cursor), -1, 'the smallest float value 1 went');
    assert.ok(table.find(key(2), cursor) >= 0);
    assert.equal(table.int(cursor.slot, 0), 2);
    table.release(cursor);
    assert.equal(table.find(key(2), cursor), -1);
    table.unlock(cursor);
    assert.equal(table.countUsed(), 3);
    // A second view of the same memory sees the same entries and seed.
    const view = new ClientTable(table.buffer);
    assert.equal(view.seed, 9);
    assert.equal(view.countUsed(), 3);
  });
});

describe('RateLimiter (chrony ratelimit semantics)', () => {
  test('burst, then one per interval; refill is continuous and capped at the burst', () => {
    const l = limiter(16);
    assert.equal(l.take('192.0.2.1', 0), 'admit');
    assert.equal(l.take('192.0.2.1', 0), 'admit');
    assert.equal(l.take('192.0.2.1', 0), 'limit');
    assert.equal(l.take('192.0.2.1', 9_000), 'limit', '0.9 token earned');
    assert.equal(l.take('192.0.2.1', 10_500), 'admit', '1.05 tokens');
    assert.equal(l.take('192.0.2.1', 10_500), 'limit');
    assert.equal(l.take('192.0.2.1', 1_000_000), 'admit', 'a long pause earns no more than the burst');
    assert.equal(l.take('192.0.2.1', 1_000_000), 'admit');
    assert.equal(l.take('192.0.2.1', 1_000_000), 'limit');
    assert.equal(l.take('192.0.2.2', 0), 'admit', 'clients are independent');
  });

  test('a refused request still updates the time: a client that keeps hammering earns at the interval rate, no faster', () => {
    const l = limiter(16, { burst: 1, intervalMs: 1000 });
    let admitted = 0;
    for (let t = 0; t <= 10_000; t += 10) if (l.take('192.0.2.1', t) === 'admit') admitted++;
    assert.equal(admitted, 11, '1 burst + 10 earned over 10 s');
  });

  test('property: over any request times, admits ≤ burst + elapsed/interval, and a patient client is always admitted', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10 }),
        fc.integer({ min: 1, max: 5000 }),
        fc.array(fc.integer({ min: 0, max: 2000 }), { minLength: 1, maxLength: 200 }),
        (burst, intervalMs, gaps) => {
          const l = limiter(16, { burst, intervalMs });
          let t = 0;
          let admitted = 0;
          for (const gap of gaps) {
            t += gap;
            if (l.take('198.51.100.1', t) === 'admit') admitted++;
          }
          assert.ok(admitted <= burst + t / intervalMs + 1e-9, `${admitted} admits in ${t} ms`);
          assert.equal(l.take('198.51.100.1', t + intervalMs * burst), 'admit');
        },
      ),
      { numRuns: 300 },
    );
  });

  test('leak: one in 2^leak refused requests is marked leak, counted per client', () => {
    const l = limiter(16, { burst: 1, leak: 2 });
    const seen: RateDecision[] = [];
    for (let i = 0; i < 13; i++) seen.push(l.take('192.0.2.1', 0));
    assert.deepEqual(seen, ['admit', 'limit', 'limit', 'limit', 'leak', 'limit', 'limit', 'limit', 'leak', 'limit', 'limit', 'limit', 'leak']);
    assert.equal(l.take('192.0.2.2', 0), 'admit');
    assert.equal(l.take('192.0.2.2', 0), 'limit', 'another client has its own count');
    const none = limiter(16, { burst: 1, leak: 0 });
    none.take('192.0.2.1', 0);
    for (let i = 0; i < 100; i++) assert.equal(none.take('192.0.2.1', 0), 'limit');
  });

  test('interval 0 turns it off: everything admitted, the table untouched', () => {
    const l = limiter(16, { intervalMs: 0 });
    for (let i = 0; i < 100; i++) assert.equal(l.take('192.0.2.9', 0), 'admit');
    assert.equal(l.size, 0);
  });

  test('keys: IPv4 address, IPv4-mapped = IPv4, IPv6 by /64; prefix lengths configurable', () => {
    const l = limiter(64, { burst: 1 });
    assert.equal(l.take('192.0.2.7', 0), 'admit');
    assert.equal(l.take('::ffff:192.0.2.7', 0), 'limit', 'same client through a dual-stack socket');
    assert.equal(l.take('192.0.2.8', 0), 'admit', '/32 for IPv4');
    assert.equal(l.take('2001:db8:1:2:aaaa::1', 0), 'admit');
    assert.equal(l.take('2001:db8:1:2:bbbb:cccc:dddd:eeee', 0), 'limit', 'same /64');
    assert.equal(l.take('2001:db8:1:3::1', 0), 'admit', 'next /64');
    assert.equal(l.take('fe80::1%eth0', 0), 'admit');
    assert.equal(l.take('fe80::2%eth1', 0), 'limit', 'zone ids do not split a /64');
    l.configure({ ...BASE, burst: 1, ipv4PrefixBits: 24, ipv6PrefixBits: 48 });
    assert.equal(l.take('203.0.113.1', 0), 'admit');
    assert.equal(l.take('203.0.113.200', 0), 'limit', '/24 for IPv4');
    assert.equal(l.take('2001:db8:9:1::1', 0), 'admit');
    assert.equal(l.take('2001:db8:9:ffff::1', 0), 'limit', '/48 for IPv6');
    assert.equal(l.take('not an address', 0), 'admit');
    assert.equal(l.take('also not', 0), 'limit', 'non-addresses share one bucket');
  });

  test('takeWords masks a parsed address in place and agrees with take', () => {
    const a = limiter(16, { burst: 1 });
    const w = new Uint32Array(4);
    const family = parseIpAddress('2001:db8:1:2::99', w);
    assert.ok(family !== 0);
    assert.equal(a.takeWords(w, family, 0), 'admit');
    assert.deepEqual([...w], [0x20010db8, 0x00010002, 0, 0]);
    assert.equal(a.take('2001:db8:1:2::1', 0), 'limit');
  });

  test('configure: a lower burst caps existing buckets, a higher one does not refill them; ranges checked', () => {
    const l = limiter(16, { burst: 8 });
    assert.equal(l.take('192.0.2.1', 0), 'admit'); // 7 left
    l.configure({ ...BASE, burst: 2 });
    assert.equal(l.take('192.0.2.1', 0), 'admit');
    assert.equal(l.take('192.0.2.1', 0), 'admit');
    assert.equal(l.take('192.0.2.1', 0), 'limit', 'capped at the new burst');
    l.configure({ ...BASE, burst: 10 });
    assert.equal(l.take('192.0.2.1', 0), 'limit', 'no free refill');
    assert.deepEqual(l.config, { ...BASE, burst: 10 });
    for (const bad of [{ burst: 0 }, { intervalMs: -1 }, { intervalMs: 1.5 }, { leak: 17 }, { ipv4PrefixBits: 33 }, { ipv6PrefixBits: 129 }]) {
      assert.throws(() => l.configure({ ...BASE, ...bad }), RangeError, JSON.stringify(bad));
    }
  });

  test('a clock step backwards earns nothing and takes nothing away', () => {
    const l = limiter(16, { burst: 1, intervalMs: 1000 });
    assert.equal(l.take('192.0.2.1', 50_000), 'admit');
    assert.equal(l.take('192.0.2.1', 10_000), 'limit');
    assert.equal(l.take('192.0.2.1', 50_999), 'limit');
    assert.equal(l.take('192.0.2.1', 51_000), 'admit');
  });

  test('bounded: many clients never grow the table; the least recently seen of a bucket is forgotten first', () => {
    const l = limiter(64, { burst: 1 });
    for (let i = 0; i < 10_000; i++) l.take(`10.${i >> 16}.${(i >> 8) & 0xff}.${i & 0xff}`, i);
    assert.ok(l.size <= l.capacity && l.capacity <= 64, `size ${l.size} of ${l.capacity}`);
    // One bucket (table of 8): the client not seen for longest loses its state and starts with a full bucket.
    const small = limiter(8, { burst: 1 });
    for (let i = 1; i <= 8; i++) assert.equal(small.take(`192.0.2.${i}`, i), 'admit');
    assert.equal(small.take('192.0.2.2', 100), 'limit', 'refreshes .2');
    assert.equal(small.take('192.0.2.99', 101), 'admit', 'a ninth client evicts the oldest, .1');
    assert.equal(small.take('192.0.2.1', 102), 'admit', '.1 was forgotten');
    assert.equal(small.take('192.0.2.2', 103), 'limit', '.2 was kept');
    assert.equal(small.size, 8);
  });

  test('one shared table for several threads: a client gets one budget, not one per thread', async () => {
    const l = limiter(1024, { burst: 500, intervalMs: 1_000_000_000 }, true);
    const moduleUrl = new URL('../../src/core/limiter.js', import.meta.url).href;
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.moduleUrl).then(({ RateLimiter }) => {
        const l = RateLimiter.attach(workerData.buffer);
        let admitted = 0;
        for (let i = 0; i < 2000; i++) if (l.take(i % 2 ? '192.0.2.1' : '::ffff:192.0.2.1', 0) === 'admit') admitted++;
        parentPort.postMessage(admitted);
      });`;
    const runs = Array.from({ length: 4 }, () => {
      const w = new Worker(code, { eval: true, workerData: { moduleUrl, buffer: l.buffer } });
      return new Promise<number>((resolve, reject) => {
        w.once('message', (n: number) => resolve(n));
        w.once('error', reject);
      }).finally(() => w.terminate());
    });
    const admitted = await Promise.all(runs);
    assert.equal(admitted.reduce((a, b) => a + b, 0), 500, `per thread: ${admitted.join(', ')}`);
    assert.equal(l.take('192.0.2.1', 0), 'limit', 'the main thread sees the same bucket');
    // A change made through one view reaches the others.
    l.configure({ ...BASE, intervalMs: 0 });
    assert.equal(RateLimiter.attach(l.buffer).config.intervalMs, 0);
  });
});
