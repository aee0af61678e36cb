import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import {
  ClientLog,
  KeClass,
  KE_CLASS_NAMES,
  clientLogBytes,
  clientLogView,
  keClassOf,
  nextIntervalLog2,
  type ClientRecord,
} from '../../src/core/client-log.js';
import { ClientTable, clientTableBytes } from '../../src/core/client-table.js';
import { parseIpAddress, type IpFamily } from '../../src/core/ip.js';
import { KE_SESSION_OUTCOMES } from '../../src/core/ke-handler.js';
import { Outcome, OUTCOME_COUNT } from '../../src/core/responder.js';

function log(size: number, shared = false): ClientLog {
  const bytes = clientLogBytes(size);
  return ClientLog.create(shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes), size, 0x5eed);
}

/** Parses `address` into words; returns [words, family]. */
function peer(address: string): [Uint32Array, IpFamily] {
  const words = new Uint32Array(4);
  const family = parseIpAddress(address, words);
  if (family === 0) throw new Error(`not an address: ${address}`);
  return [words, family];
}

function ntp(l: ClientLog, address: string, outcome: number, nowMs: number, length = 48): void {
  const [words, family] = peer(address);
  l.noteNtp(words, family, outcome, length, nowMs);
}

function find(l: ClientLog, address: string): ClientRecord {
  const r = l.read().find((c) => c.address === address);
  if (r === undefined) throw new Error(`${address} is not in the log: ${l.read().map((c) => c.address).join(', ')}`);
  return r;
}

describe('client table layouts', () => {
  test('the default layout keeps the 48-octet slots; a wider layout sizes and round-trips its values', () => {
    assert.equal(clientTableBytes(64), 64 + 4 * 8 + 48 * 64);
    const layout = { ints: 13, floats: 6 };
    // 5 key words + 13 ints = 18 words, 6 floats = 12 words: 120 octets per slot.
    assert.equal(clientTableBytes(64, layout), 64 + 4 * 8 + 120 * 64);
    const t = new ClientTable(new ArrayBuffer(clientTableBytes(64, layout)), { capacity: 64, seed: 3, layout });
    const words = new Uint32Array([0, 0, 0xffff, 0xc0000201]);
    const cursor = { bucket: 0, slot: -1 };
    t.lock(7, cursor);
    const slot = t.claim(words, cursor, true);
    for (let k = 0; k < 13; k++) t.setInt(slot, k, 100 + k);
    for (let k = 0; k < 6; k++) t.setFloat(slot, k, 0.5 + k);
    t.incrementInt(slot, 12);
    t.unlock(cursor);
    const view = new ClientTable(t.buffer);
    assert.equal(view.int(slot, 0), 100);
    assert.equal(view.int(slot, 12), 113);
    assert.equal(view.float(slot, 0), 0.5);
    assert.equal(view.float(slot, 5), 5.5);
    assert.ok(view.isUsed(slot));
    const key = new Uint32Array(4);
    view.keyOf(slot, key);
    assert.deepEqual([...key], [...words]);
  });

  test('a layout without an eviction float, or too wide, is refused', () => {
    assert.throws(() => clientTableBytes(8, { ints: 1, floats: 1 }), RangeError);
    assert.throws(() => clientTableBytes(8, { ints: 60, floats: 10 }), RangeError);
  });
});

describe('client log', () => {
  test('size: 120 octets per entry plus the header and locks', () => {
    assert.equal(clientLogBytes(4096), 64 + 4 * 512 + 120 * 4096);
    assert.equal(log(100).capacity, 96, 'whole buckets of 8');
  });

  test('counts NTP outcomes per client: plain and NTS requests, replies, drops by reason, NAKs, KoDs', () => {
    const l = log(64);
    ntp(l, '192.0.2.1', Outcome.ntpTime, 1000);
    ntp(l, '192.0.2.1', Outcome.ntsTime, 1001, 200);
    ntp(l, '192.0.2.1', Outcome.nakAuthFailed, 1002, 200);
    ntp(l, '192.0.2.1', Outcome.nakCookieUnknownKey, 1003, 200);
    ntp(l, '192.0.2.1', Outcome.dropRateLimited, 1004, 200); // NTS by length
    ntp(l, '192.0.2.1', Outcome.dropRateLimited, 1005, 48); // plain by length
    ntp(l, '192.0.2.1', Outcome.kodRate, 1006);
    ntp(l, '192.0.2.1', Outcome.kodDeny, 1007);
    ntp(l, '192.0.2.1', Outcome.dropAccess, 1008);
    ntp(l, '192.0.2.1', Outcome.dropMalformed, 1009, 10);
    ntp(l, '192.0.2.1', Outcome.dropPolicy, 1010);
    ntp(l, '192.0.2.1', Outcome.dropRequireNts, 1011);
    ntp(l, '192.0.2.2', Outcome.ntpTime, 1012);
    const r = find(l, '192.0.2.1');
    assert.equal(r.family, 4);
    assert.equal(r.ntsRequests, 4);
    assert.equal(r.ntpRequests, 8);
    assert.equal(r.replies, 6, 'time, NTS time, 2 NAKs, 2 KoDs');
    assert.equal(r.naks, 2);
    assert.equal(r.kods, 2);
    assert.equal(r.dropsRateLimit, 2);
    assert.equal(r.dropsAccess, 1);
    assert.equal(r.dropsOther, 3);
    assert.equal(r.firstSeenMs, 1000);
    assert.equal(r.lastSeenMs, 1011);
    assert.equal(r.ntpLastMs, 1011);
    assert.equal(r.keLastMs, null);
    assert.deepEqual(r.ke, [0, 0, 0, 0, 0]);
    assert.equal(find(l, '192.0.2.2').ntpRequests, 1);
    assert.equal(l.read().length, 2);
  });

  test('every responder outcome is counted as exactly one request', () => {
    const l = log(64);
    for (let o = 0; o < OUTCOME_COUNT; o++) ntp(l, '198.51.100.7', o, 1 + o);
    const r = find(l, '198.51.100.7');
    assert.equal(r.ntpRequests + r.ntsRequests, OUTCOME_COUNT);
  });

  test('keys: an IPv4 address (mapped or not) is one client; IPv6 is keyed by its /64', () => {
    const l = log(64);
    ntp(l, '192.0.2.9', Outcome.ntpTime, 1);
    ntp(l, '::ffff:192.0.2.9', Outcome.ntpTime, 2);
    ntp(l, '2001:db8:1:2::1', Outcome.ntpTime, 3);
    ntp(l, '2001:db8:1:2:ffff:1:2:3', Outcome.ntpTime, 4);
    ntp(l, '2001:db8:1:3::1', Outcome.ntpTime, 5);
    assert.equal(find(l, '192.0.2.9').ntpRequests, 2);
    assert.equal(find(l, '2001:db8:1:2::/64').ntpRequests, 2);
    assert.equal(find(l, '2001:db8:1:3::/64').family, 6);
    assert.equal(l.read().length, 3);
  });

  test('the peer words are left untouched and an unknown family is not counted', () => {
    const l = log(64);
    const [words, family] = peer('2001:db8::1234');
    const before = [...words];
    l.noteNtp(words, family, Outcome.ntpTime, 48, 1);
    assert.deepEqual([...words], before);
    l.noteNtp(words, 0, Outcome.ntpTime, 48, 2);
    assert.equal(l.read().length, 1);
    assert.equal(l.read()[0]?.ntpRequests, 1);
  });

  test('NTS-KE outcomes fall into the five classes; refused connections count by address', () => {
    const classes = KE_SESSION_OUTCOMES.map((o) => KE_CLASS_NAMES[keClassOf(o)]);
    assert.deepEqual(Object.fromEntries(KE_SESSION_OUTCOMES.map((o, i) => [o, classes[i]])), {
      success: 'ok',
      tls_error: 'tls',
      timeout: 'timeout',
      bad_request: 'error',
      no_common_protocol: 'error',
      no_common_aead: 'error',
      internal_error: 'error',
      client_closed: 'tls',
      evicted: 'timeout',
    });
    const l = log(64);
    const [words] = peer('203.0.113.5');
    l.noteKe(words, KeClass.ok, 10_000);
    l.noteKe(words, KeClass.ok, 20_000);
    l.noteKe(words, KeClass.error, 30_000);
    l.noteKeAddress('203.0.113.5', KeClass.refused, 40_000);
    l.noteKeAddress('::ffff:203.0.113.5', KeClass.tls, 50_000);
    l.noteKeAddress('not an address', KeClass.tls, 60_000);
    const r = find(l, '203.0.113.5');
    assert.deepEqual(r.ke, [2, 1, 1, 0, 1]);
    assert.equal(r.keLastMs, 50_000);
    assert.equal(r.ntpLastMs, null);
    assert.equal(r.ntpRequests, 0);
    assert.ok(Math.abs((r.keIntervalLog2 ?? 0) - Math.log2(10)) < 1e-9, 'a steady 10 s interval');
    assert.equal(l.read().length, 1);
  });

  test('mean interval follows chrony: slow to believe a faster client, quick to believe a slower one', () => {
    assert.equal(nextIntervalLog2(NaN, 64_000), 6);
    assert.equal(nextIntervalLog2(6, 64_000), 6);
    assert.equal(nextIntervalLog2(6, 1000), 5.75, 'a burst lowers it by a quarter octave per request');
    assert.equal(nextIntervalLog2(6, 128_000), 6.5, 'a slower client: halfway at once');
    assert.equal(nextIntervalLog2(0, 1024_000), 7.5, 'far slower: 2.5 octaves below the new interval');
    assert.equal(nextIntervalLog2(NaN, 0), -5, 'intervals under 1/32 s count as 1/32 s');
    // An iburst (4 requests 2 s apart) after a steady 64 s poll leaves the mean at 32 s and above.
    let mean = 6;
    for (let i = 0; i < 4; i++) mean = nextIntervalLog2(mean, 2000);
    assert.equal(mean, 5);
    // A client that floods at 100/s converges on 10 ms... clamped to 1/32 s.
    mean = 6;
    for (let i = 0; i < 100; i++) mean = nextIntervalLog2(mean, 10);
    assert.equal(mean, -5);
  });

  test('the first request has no interval; later ones average it', () => {
    const l = log(64);
    ntp(l, '192.0.2.3', Outcome.ntpTime, 100_000);
    assert.equal(find(l, '192.0.2.3').ntpIntervalLog2, null);
    ntp(l, '192.0.2.3', Outcome.ntpTime, 164_000);
    assert.equal(find(l, '192.0.2.3').ntpIntervalLog2, 6);
    ntp(l, '192.0.2.3', Outcome.ntpTime, 228_000);
    assert.equal(find(l, '192.0.2.3').ntpIntervalLog2, 6);
  });

  test('a clock read behind another thread keeps the later last-seen time', () => {
    const l = log(64);
    ntp(l, '192.0.2.4', Outcome.ntpTime, 5000);
    ntp(l, '192.0.2.4', Outcome.ntpTime, 4990);
    const r = find(l, '192.0.2.4');
    assert.equal(r.lastSeenMs, 5000);
    assert.equal(r.ntpLastMs, 5000);
    assert.equal(r.ntpRequests, 2);
  });

  test('memory is fixed: at the size limit the least recently seen client of a full bucket goes', () => {
    const l = log(8); // one bucket of 8
    for (let i = 1; i <= 8; i++) ntp(l, `192.0.2.${i}`, Outcome.ntpTime, i);
    ntp(l, '192.0.2.1', Outcome.ntpTime, 100); // .1 is now the most recent; .2 the least
    ntp(l, '192.0.2.99', Outcome.ntpTime, 101);
    const addresses = l.read().map((r) => r.address);
    assert.equal(addresses.length, 8);
    assert.ok(addresses.includes('192.0.2.1'));
    assert.ok(!addresses.includes('192.0.2.2'), 'the least recently seen client was evicted');
    assert.ok(addresses.includes('192.0.2.99'));
    const fresh = find(l, '192.0.2.99');
    assert.equal(fresh.ntpRequests, 1, 'the newcomer starts from zero');
    assert.equal(fresh.firstSeenMs, 101);
    // A KE-only visit refreshes a client too.
    l.noteKeAddress('192.0.2.3', KeClass.ok, 200);
    ntp(l, '192.0.2.100', Outcome.ntpTime, 201);
    const after = l.read().map((r) => r.address);
    assert.ok(after.includes('192.0.2.3'));
    assert.ok(!after.includes('192.0.2.4'));
  });

  test('many clients in a big log: tracked never exceeds the capacity', () => {
    const l = log(256);
    for (let i = 0; i < 5000; i++) ntp(l, `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, Outcome.ntpTime, i + 1);
    const records = l.read();
    assert.equal(records.length, l.capacity);
    assert.equal(l.summary().tracked, l.capacity);
    // The survivors are recent: nothing older than the last few thousand requests.
    assert.ok(Math.min(...records.map((r) => r.lastSeenMs)) > 5000 - 4 * l.capacity);
  });

  test('summary: tracked clients and the busiest client\'s requests, no addresses', () => {
    const l = log(64);
    for (let i = 0; i < 30; i++) ntp(l, '192.0.2.1', Outcome.ntsTime, i + 1, 200);
    for (let i = 0; i < 10; i++) ntp(l, '192.0.2.2', Outcome.ntpTime, i + 1);
    l.noteKeAddress('192.0.2.3', KeClass.ok, 1);
    assert.deepEqual(l.summary(), { tracked: 3, requests: 40, topRequests: 30 });
    assert.deepEqual(Object.keys(l.summary()).sort(), ['requests', 'topRequests', 'tracked']);
  });

  test('view: busiest first, seconds since, intervals in seconds', () => {
    const l = log(64);
    ntp(l, '192.0.2.1', Outcome.ntpTime, 1000);
    for (let i = 0; i < 3; i++) ntp(l, '2001:db8::1', Outcome.ntsTime, 1000 + 2000 * i, 200);
    l.noteKeAddress('2001:db8::9', KeClass.ok, 2000);
    const view = clientLogView(l.read(), l.capacity, 11_000);
    assert.equal(view.capacity, 64);
    assert.equal(view.tracked, 2);
    const [first, second] = view.clients;
    assert.equal(first?.address, '2001:db8::/64');
    assert.equal(first?.ntp.requests, 3);
    assert.equal(first?.ntp.nts, 3);
    assert.equal(first?.ntp.intervalS, 2);
    assert.equal(first?.ntp.lastAgoS, 6);
    assert.equal(first?.ke.sessions, 1);
    assert.equal(first?.ke.ok, 1);
    assert.equal(first?.ke.lastAgoS, 9);
    assert.equal(first?.ke.intervalS, null);
    assert.equal(first?.firstAgoS, 10);
    assert.equal(first?.lastAgoS, 6);
    assert.equal(second?.address, '192.0.2.1');
    assert.equal(second?.ntp.intervalS, null);
    assert.equal(second?.ke.lastAgoS, null);
    assert.deepEqual(JSON.parse(JSON.stringify(view)), view, 'plain JSON');
  });

  test('a counter wraps at 2^32 and reads unsigned', () => {
    const l = log(8);
    ntp(l, '192.0.2.1', Outcome.ntpTime, 1);
    const t = new ClientTable(l.buffer);
    t.setInt(0, 0, -1); // 2^32 - 1 plain requests on the only used slot
    const slot = l.read()[0];
    assert.equal(slot?.ntpRequests, 2 ** 32 - 1);
  });

  test('one shared log for several threads: every request of every thread is counted once', async () => {
    const l = log(1024, true);
    const moduleUrl = new URL('../../src/core/client-log.js', import.meta.url).href;
    const ipUrl = new URL('../../src/core/ip.js', import.meta.url).href;
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      Promise.all([import(workerData.moduleUrl), import(workerData.ipUrl)]).then(([{ ClientLog, KeClass }, { parseIpAddress }]) => {
        const l = ClientLog.attach(workerData.buffer);
        const words = new Uint32Array(4);
        for (let i = 0; i < 20000; i++) {
          const address = '192.0.2.' + (1 + (i % 50));
          const family = parseIpAddress(address, words);
          l.noteNtp(words, family, i % 2, i % 2 ? 200 : 48, workerData.index * 100000 + i + 1);
        }
        for (let i = 0; i < 500; i++) l.noteKeAddress('2001:db8::' + (i % 7 + 1), KeClass.ok, i + 1);
        parentPort.postMessage('done');
      });`;
    const runs = Array.from({ length: 4 }, (_, index) => {
      const w = new Worker(code, { eval: true, workerData: { moduleUrl, ipUrl, buffer: l.buffer, index } });
      return new Promise<void>((resolve, reject) => {
        w.once('message', () => resolve());
        w.once('error', reject);
      }).finally(() => w.terminate());
    });
    await Promise.all(runs);
    const records = l.read();
    assert.equal(records.length, 51);
    const v4 = records.filter((r) => r.family === 4);
    assert.equal(v4.reduce((a, r) => a + r.ntpRequests + r.ntsRequests, 0), 80_000);
    assert.equal(v4.reduce((a, r) => a + r.ntsRequests, 0), 40_000);
    for (const r of v4) assert.equal(r.ntpRequests + r.ntsRequests, 1600, r.address);
    assert.deepEqual(records.find((r) => r.family === 6)?.ke, [2000, 0, 0, 0, 0]);
    assert.deepEqual(l.summary(), { tracked: 51, requests: 80_000, topRequests: 1600 });
  });
});
