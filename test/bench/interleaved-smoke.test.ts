/**
 * Smoke tests of bench/load's client-exchange sender (`--client basic|interleaved`, exchange-sender.ts)
 * against ntsd started here through its CLI on 127.0.0.1: short fixed-rate runs (≤ 2 s, ≤ 4000 requests).
 *  - native datapath: after a warm-up nearly every reply is interleaved (RFC 9769), and the samples built
 *    from them (the previous exchange with the server's kernel TX stamp as T3) have a small |offset|;
 *  - dgram datapath (no TX stamps, basic mode only): the same requests get basic replies, fraction 0;
 *  - basic client form against the native datapath: no interleaved reply either.
 * The sockets are bound to their own loopback source addresses (127.0.0.2 …).
 *
 * `NTSD_REQUIRE_NATIVE=1` turns a missing addon into a failure instead of a skip.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { runLoad, sourceAddressPlan } from '../../bench/load/run.js';
import { DEFAULT_LOAD_OPTIONS, type LoadOptions, type LoadReport } from '../../bench/load/protocol.js';
import { freeTcpAndUdpPort } from '../interop/peers.js';
import { makeTestPki } from '../helpers/certs.js';
import { startNtsd } from '../../bench/compare/servers.js';
import { loadNativeUdp } from '../../src/runtime/addon.js';

const native = loadNativeUdp();
const ntsdMain = fileURLToPath(new URL('../../src/main.js', import.meta.url));

function nativeSkip(): string | undefined {
  if (native.ok) return undefined;
  if (process.env['NTSD_REQUIRE_NATIVE'] === '1') assert.fail(`NTSD_REQUIRE_NATIVE=1 but the native addon is unavailable: ${native.reason}`);
  return `native addon unavailable: ${native.reason}`;
}

function options(port: number, overrides: Partial<LoadOptions>): LoadOptions {
  return {
    ...DEFAULT_LOAD_OPTIONS,
    mode: 'plain',
    target: { host: '127.0.0.1', port },
    timestamps: 'kernel',
    client: 'interleaved',
    window: 4,
    socketsPerThread: 4,
    ratePerS: 1500,
    durationS: 2,
    warmupS: 0.6,
    maxRequests: 4000,
    timeoutMs: 300,
    ...overrides,
  };
}

/** Runs `body` against a fresh ntsd (1 NTP thread) on the given datapath. */
async function withNtsd(datapath: 'native' | 'dgram', body: (port: number) => Promise<void>): Promise<void> {
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  const ntpPort = await freeTcpAndUdpPort();
  const kePort = await freeTcpAndUdpPort();
  const ntsd = await startNtsd({ mainJs: ntsdMain, ntpPort, kePort, tls: { chainPath: pki.chainPath, keyPath: pki.keyPath }, threads: 1, datapath });
  try {
    await body(ntpPort);
  } finally {
    await ntsd.stop();
    pki.cleanup();
  }
}

function exchanges(r: LoadReport): NonNullable<LoadReport['exchanges']> {
  assert.equal(r.timestamps, 'kernel');
  assert.equal(r.invalid, 0, JSON.stringify(r.invalidByReason));
  assert.ok(r.exchanges !== null, 'no client-exchange figures in the report');
  return r.exchanges;
}

test('source addresses: one loopback address per socket, at most 4 clients on each', () => {
  assert.deepEqual(sourceAddressPlan('127.0.0.1', 2, 2, 4), [
    ['127.0.0.2', '127.0.0.3'],
    ['127.0.0.4', '127.0.0.5'],
  ]);
  assert.deepEqual(sourceAddressPlan('::1', 1, 2, 4), [['', '']]);
  // 254 sockets would put a second socket (8 clients) on 127.0.0.2; with 2 clients per socket that is fine.
  assert.throws(() => sourceAddressPlan('127.0.0.1', 1, 254, 4), /more than 4 clients/);
  assert.equal(sourceAddressPlan('127.0.0.1', 1, 254, 2)[0]?.[253], '127.0.0.2');
  assert.throws(() => sourceAddressPlan('127.0.0.1', 1, 1, 5), /at most 4 clients/);
});

test('interleaved clients against ntsd native: interleaved replies after warm-up, samples with a small |offset|', async (t) => {
  const skip = nativeSkip();
  if (skip !== undefined) {
    t.skip(skip);
    return;
  }
  await withNtsd('native', async (port) => {
    const r = await runLoad(options(port, {}));
    const e = exchanges(r);
    t.diagnostic(JSON.stringify({ received: r.received, fraction: e.interleavedFraction, offset: e.interleavedOffsetAbsUs, stamps: r.stamps }));
    assert.equal(e.client, 'interleaved');
    assert.equal(e.sourceAddresses, 4);
    assert.equal(e.clients, 16);
    assert.ok(r.received >= 500, `only ${r.received} valid replies`);
    assert.ok(e.interleavedFraction > 0.5, `interleaved fraction ${e.interleavedFraction} (${e.interleavedReplies}/${e.replies})`);
    assert.ok(e.interleavedSamples > r.received / 2, JSON.stringify(e));
    // Same clock, kernel stamps at both ends and the server's kernel TX stamp as T3: microseconds, far
    // below 1 ms even on a loaded machine (basic-mode samples with a T3 read before the send are no better).
    const q = e.interleavedOffsetAbsUs;
    assert.equal(q.count, e.interleavedSamples);
    assert.ok(q.p50 < 50, `interleaved |offset| p50 ${q.p50} µs`);
    assert.ok(q.p99 < 1000, `interleaved |offset| p99 ${q.p99} µs`);
    // The server's T3 of exchange k lies between its T2 and our T4 of exchange k: residence ≥ 0.
    assert.ok(r.residenceUs !== null && r.residenceUs.p50 >= 0);
    assert.equal(r.stamps?.noTxStamp, 0, JSON.stringify(r.stamps));
  });
});

test('interleaved clients against ntsd dgram (basic mode only) and basic clients against ntsd native: no interleaved reply', async (t) => {
  const skip = nativeSkip();
  if (skip !== undefined) {
    t.skip(skip);
    return;
  }
  await withNtsd('dgram', async (port) => {
    const r = await runLoad(options(port, { durationS: 1.2, warmupS: 0.3, ratePerS: 1000 }));
    const e = exchanges(r);
    assert.ok(r.received >= 300, `only ${r.received} valid replies`);
    assert.ok(e.askedInterleaved > r.received / 2, `requests in interleaved form: ${e.askedInterleaved}`);
    assert.equal(e.interleavedReplies, 0);
    assert.equal(e.interleavedFraction, 0);
    assert.ok(e.basicSamples > 0);
  });
  await withNtsd('native', async (port) => {
    const r = await runLoad(options(port, { client: 'basic', durationS: 1.2, warmupS: 0.3, ratePerS: 1000 }));
    const e = exchanges(r);
    assert.ok(r.received >= 300, `only ${r.received} valid replies`);
    assert.equal(e.askedInterleaved, 0);
    assert.equal(e.interleavedReplies, 0);
    assert.equal(e.basicSamples, r.stamps?.samples);
  });
});
