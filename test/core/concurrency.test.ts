import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { ConcurrencyLimiter, concurrencyTableBytes } from '../../src/core/concurrency.js';

function limiter(globalMax: number, perSourceMax: number, shared = false): ConcurrencyLimiter {
  const bytes = concurrencyTableBytes(globalMax);
  return ConcurrencyLimiter.create(shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes), { globalMax, perSourceMax }, 77);
}

describe('ConcurrencyLimiter', () => {
  test('per-source cap: IPv4 address, IPv4-mapped = IPv4, IPv6 /64; release frees the slot', () => {
    const c = limiter(100, 2);
    const a = c.sourceKey('192.0.2.1');
    assert.equal(c.acquire(a), 'admitted');
    assert.equal(c.acquire(c.sourceKey('::ffff:192.0.2.1')), 'admitted');
    assert.equal(c.acquire(a), 'source_limit');
    assert.equal(c.count(a), 2);
    assert.equal(c.acquire(c.sourceKey('192.0.2.2')), 'admitted', 'another address');
    const v6 = c.sourceKey('2001:db8:1:2::1');
    assert.equal(c.acquire(v6), 'admitted');
    assert.equal(c.acquire(c.sourceKey('2001:db8:1:2:ffff::9')), 'admitted');
    assert.equal(c.acquire(c.sourceKey('2001:db8:1:2:abcd::')), 'source_limit', 'same /64');
    assert.equal(c.acquire(c.sourceKey('2001:db8:1:3::1')), 'admitted', 'next /64');
    assert.equal(c.open, 6);
    c.release(a, true);
    assert.equal(c.count(a), 1);
    assert.equal(c.acquire(a), 'admitted');
    c.release(a, true);
    c.release(a, true);
    assert.equal(c.count(a), 0);
    assert.equal(c.open, 4);
  });

  test('global cap: refused with nothing counted, admitted again after a release', () => {
    const c = limiter(3, 10);
    const keys = ['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4'].map((a) => c.sourceKey(a));
    for (const k of keys.slice(0, 3)) assert.equal(c.acquire(k), 'admitted');
    const fourth = keys[3];
    assert.ok(fourth !== undefined);
    assert.equal(c.acquire(fourth), 'global_limit');
    assert.equal(c.count(fourth), 0, 'a refused source is not counted');
    assert.equal(c.open, 3);
    c.release(keys[0] ?? fourth, true);
    assert.equal(c.acquire(fourth), 'admitted');
    // A source at its own cap is refused as such even when the global cap is also full.
    const one = limiter(1, 1);
    const k = one.sourceKey('198.51.100.1');
    assert.equal(one.acquire(k), 'admitted');
    assert.equal(one.acquire(k), 'source_limit');
  });

  test('configure applies to the next acquire; bad caps are refused', () => {
    const c = limiter(10, 1);
    const k = c.sourceKey('192.0.2.1');
    assert.equal(c.acquire(k), 'admitted');
    assert.equal(c.acquire(k), 'source_limit');
    c.configure({ globalMax: 10, perSourceMax: 2 });
    assert.equal(c.acquire(k), 'admitted');
    assert.deepEqual(c.limits, { globalMax: 10, perSourceMax: 2 });
    assert.throws(() => c.configure({ globalMax: 0, perSourceMax: 1 }), RangeError);
    assert.throws(() => c.configure({ globalMax: 1, perSourceMax: 1.5 }), RangeError);
  });

  test('a bucket full of live sources admits untracked (global cap still counts), never refuses for a collision', () => {
    const c = limiter(16, 1); // 64 slots
    c.configure({ globalMax: 10_000, perSourceMax: 1 }); // more open connections than the table was sized for
    const keys = Array.from({ length: 1000 }, (_, i) => c.sourceKey(`10.0.${i >> 8}.${i & 0xff}`));
    const results = keys.map((k) => c.acquire(k));
    assert.ok(results.every((r) => r === 'admitted' || r === 'untracked'));
    const tracked = results.filter((r) => r === 'admitted').length;
    assert.ok(tracked <= 64 && tracked >= 56, `${tracked} tracked of 64 slots`);
    assert.equal(c.open, 1000);
    keys.forEach((k, i) => c.release(k, results[i] === 'admitted'));
    assert.equal(c.open, 0);
    for (const k of keys.slice(0, 50)) assert.equal(c.count(k), 0);
  });

  test('shared by threads: one source gets one cap in total, the global count stays exact', async () => {
    const c = limiter(1000, 40, true);
    const moduleUrl = new URL('../../src/core/concurrency.js', import.meta.url).href;
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.moduleUrl).then(({ ConcurrencyLimiter }) => {
        const c = ConcurrencyLimiter.attach(workerData.buffer);
        const k = c.sourceKey('192.0.2.77');
        let admitted = 0;
        for (let i = 0; i < 500; i++) {
          if (c.acquire(k) === 'admitted') admitted++;
          const other = c.sourceKey('10.1.' + workerData.n + '.' + (i % 200));
          if (c.acquire(other) === 'admitted') c.release(other, true);
        }
        parentPort.postMessage(admitted);
      });`;
    const counts = await Promise.all(
      [0, 1, 2, 3].map((n) => {
        const w = new Worker(code, { eval: true, workerData: { moduleUrl, buffer: c.buffer, n } });
        return new Promise<number>((resolve, reject) => {
          w.once('message', resolve);
          w.once('error', reject);
        }).finally(() => w.terminate());
      }),
    );
    assert.equal(counts.reduce((a, b) => a + b, 0), 40, `per thread ${counts.join(', ')}`);
    assert.equal(c.open, 40);
    assert.equal(c.count(c.sourceKey('192.0.2.77')), 40);
  });
});
