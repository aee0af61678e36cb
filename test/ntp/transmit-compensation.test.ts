/**
 * Transmit-timestamp compensation (src/ntp/transmit-estimate.ts module comment): the estimators with
 * injected samples, and NTP threads of each backend under bursts of NTS requests over loopback.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { WallClock } from '../../src/runtime/clock.js';
import { createKeyset, encodeKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { pino } from 'pino';
import { validateConfig } from '../../src/config/schema.js';
import { loadNativeUdp } from '../../src/runtime/addon.js';
import { startNtpListeners } from '../../src/ntp/service.js';
import { startNtpThreads } from '../../src/ntp/threads.js';
import type { ThreadBackend } from '../../src/ntp/messages.js';
import { createMetrics } from '../../src/obs/metrics.js';
import {
  COST_WARMUP_SAMPLES,
  CostEwma,
  MAX_PACKET_COST_SAMPLE_S,
  MAX_TRANSMIT_COMPENSATION_S,
  SIZE_CLASS_COUNT,
  TransmitEstimator,
  clampCompensationS,
  requestSizeClass,
} from '../../src/ntp/transmit-estimate.js';
import { runBurstProbe } from './burst-offset-client.js';
import { TEST_SERVER_FIELDS, newSession, ntsRequest, openTestClient, waitFor } from './nts-test-client.js';

const US = 1e-6;
const fill = (b: Uint8Array): void => {
  randomFillSync(b);
};

function freshKeyset(): Keyset {
  return createKeyset(Date.now() / 1000, fill, { staleKeyCount: 2 });
}

describe('estimators (injected samples)', () => {
  test('CostEwma reads 0 until warmed up, then the mean of its samples', () => {
    const e = new CostEwma(MAX_PACKET_COST_SAMPLE_S);
    for (let i = 0; i < COST_WARMUP_SAMPLES - 1; i++) {
      e.observe(10 * US);
      assert.equal(e.valueS, 0, `sample ${i + 1}: not warmed up yet`);
    }
    e.observe(10 * US);
    assert.ok(Math.abs(e.valueS - 10 * US) < 1e-12);
  });

  test('CostEwma follows a step change and drops impossible samples', () => {
    const e = new CostEwma(MAX_PACKET_COST_SAMPLE_S);
    for (let i = 0; i < 100; i++) e.observe(10 * US);
    for (let i = 0; i < 200; i++) e.observe(20 * US);
    assert.ok(Math.abs(e.valueS - 20 * US) < 0.01 * US, `converged to the new cost: ${e.valueS}`);
    const before = e.valueS;
    e.observe(-1 * US); // clock stepped backwards between the reads
    e.observe(Number.NaN);
    e.observe(2 * MAX_PACKET_COST_SAMPLE_S); // a descheduled thread
    assert.equal(e.valueS, before);
    assert.equal(e.samples, 300);
  });

  test('CostEwma caps a lone outlier at a few times the estimate', () => {
    const e = new CostEwma(MAX_PACKET_COST_SAMPLE_S);
    for (let i = 0; i < 100; i++) e.observe(10 * US);
    e.observe(900 * US);
    // Capped at 4 × 10 µs + 1 µs, weight 1/16: 10 + 31/16 µs.
    assert.ok(Math.abs(e.valueS - (10 + 31 / 16) * US) < 1e-12, `${e.valueS}`);
  });

  test('requestSizeClass: plain NTP alone in class 0, then powers of two', () => {
    assert.equal(requestSizeClass(0), 0);
    assert.equal(requestSizeClass(48), 0);
    assert.equal(requestSizeClass(49), 1);
    assert.equal(requestSizeClass(64), 1);
    assert.equal(requestSizeClass(65), 2);
    assert.equal(requestSizeClass(228), 3);
    assert.equal(requestSizeClass(1024), 5);
    assert.equal(requestSizeClass(65507), SIZE_CLASS_COUNT - 1);
  });

  test('clampCompensationS keeps the compensation within [0, 2 ms]', () => {
    assert.equal(clampCompensationS(-5 * US), 0);
    assert.equal(clampCompensationS(Number.NaN), 0);
    assert.equal(clampCompensationS(50 * US), 50 * US);
    assert.equal(clampCompensationS(1), MAX_TRANSMIT_COMPENSATION_S);
  });

  test('TransmitEstimator: seal + rest of the batch + (i + ½) sends', () => {
    const t = new TransmitEstimator();
    const plain = requestSizeClass(48);
    const nts = requestSizeClass(228);
    for (let i = 0; i < 20; i++) {
      t.observe(plain, 0.2 * US, 0.1 * US);
      t.observe(nts, 12 * US, 3 * US);
    }
    const classes = [nts, plain, nts, nts];
    t.beginBatch(5 * US);
    for (const c of classes) t.addToBatch(c);
    const got = classes.map((c) => t.next(c));
    const expected = [
      3 + (0.2 + 12 + 12) + 0.5 * 5,
      0.1 + (12 + 12) + 1.5 * 5,
      3 + 12 + 2.5 * 5,
      3 + 0 + 3.5 * 5,
    ].map((us) => us * US);
    got.forEach((g, i) => assert.ok(Math.abs(g - (expected[i] ?? 0)) < 1e-12, `packet ${i}: ${g} vs ${expected[i]}`));
    // A lone packet (send-mode "each", the dgram backend): the same figure as a one-packet batch.
    for (const c of [plain, nts]) {
      t.beginBatch(5 * US);
      t.addToBatch(c);
      assert.ok(Math.abs(t.lone(c, 5 * US) - t.next(c)) < 1e-15, `lone ${c}`);
    }
    assert.ok(Math.abs(t.lone(nts, 5 * US) - (3 + 2.5) * US) < 1e-12);
  });

  test('TransmitEstimator: nothing before warm-up, and the plan ignores samples taken during the batch', () => {
    const t = new TransmitEstimator();
    const nts = requestSizeClass(228);
    t.beginBatch(0);
    t.addToBatch(nts);
    t.addToBatch(nts);
    assert.equal(t.next(nts), 0, 'cold: no compensation');
    for (let i = 0; i < 20; i++) t.observe(nts, 10 * US, 2 * US);
    assert.equal(t.next(nts), 0, 'still the cold plan for this batch');
    t.beginBatch(0);
    t.addToBatch(nts);
    t.addToBatch(nts);
    assert.ok(Math.abs(t.next(nts) - 12 * US) < 1e-12);
    assert.ok(Math.abs(t.next(nts) - 2 * US) < 1e-12);
    assert.equal(t.respondCostS(nts), 10 * US);
    assert.equal(t.sealCostS(nts), 2 * US);
  });

  test('TransmitEstimator clamps the sum', () => {
    const t = new TransmitEstimator();
    t.beginBatch(1);
    t.addToBatch(0);
    assert.equal(t.next(0), MAX_TRANSMIT_COMPENSATION_S);
  });
});

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

const backends: ThreadBackend[] = [...(loadNativeUdp().ok ? (['native'] as const) : []), 'dgram'];

for (const backend of backends) {
  // One clock on loopback: T4 − T3 is the true reply delay when T3 is right, and turns negative when the
  // compensation overshoots (a T3 later than the reply's arrival). A missing compensation shows in the counters.
  test(`${backend}: under bursts of NTS requests the compensated T3 is never later than the reply's arrival`, async (t) => {
    const keyset = freshKeyset();
    const clock = new WallClock();
    clock.calibrate();
    const threads = await startNtpThreads({
      threads: 1,
      backend,
      listen: [{ host: '127.0.0.1', port: 0, family: 'IPv4' }],
      keysetBytes: encodeKeyset(keyset),
      serverFields: TEST_SERVER_FIELDS,
      policies: [{ requireNts: false, acceptNtpVersions: [4] }],
      clock,
      reportIntervalMs: 50,
    });
    try {
      const port = threads.addresses[0]?.port ?? 0;
      const session = newSession(keyset);
      const bulk = Array.from({ length: 16 }, () => ntsRequest(session).packet);
      const probes = (n: number): Uint8Array[] => Array.from({ length: n }, () => ntsRequest(session).packet);
      await runBurstProbe({ clockShared: clock.shared, port, bulk, probes: probes(20), burst: 7, gapMs: 2 });
      const samples = await runBurstProbe({ clockShared: clock.shared, port, bulk, probes: probes(100), burst: 7, gapMs: 2 });
      await waitFor(() => threads.stats().transmitStamps >= 800, 3000, 'reports');
      const s = threads.stats();
      const meanUs = (s.transmitCompensationSumS / s.transmitStamps) * 1e6;
      const replyLegUs = median(samples.map((p) => p.replyLegUs));
      t.diagnostic(`${samples.length} probes: median θ ${median(samples.map((p) => p.offsetUs)).toFixed(1)} µs, T4 − T3 ${replyLegUs.toFixed(1)} µs; mean compensation ${meanUs.toFixed(2)} µs`);
      assert.ok(samples.length > 50, 'most probes answered');
      assert.ok(meanUs > 0 && meanUs <= MAX_TRANSMIT_COMPENSATION_S * 1e6, `mean compensation ${meanUs} µs`);
      assert.ok(replyLegUs > -20, `median reply leg ${replyLegUs.toFixed(1)} µs`);
    } finally {
      await threads.close();
    }
  });
}

test('ntsd_ntp_transmit_compensation_seconds: the mean compensation of the last stats interval', async () => {
  const validated = validateConfig(
    {
      server: [{ listen: '127.0.0.1:0' }],
      'nts-ke-server': [{ listen: '127.0.0.1:0', 'certificate-chain-path': 'c.pem', 'private-key-path': 'k.pem' }],
      // The dgram backend's compensation (the native one's is checked in test/ntp/threads.test.ts).
      'worker-pool': { threads: 1, datapath: 'dgram' },
      'time-source': { mode: 'static', 'local-stratum': 2 },
    },
    { baseDir: '/tmp', cpuCount: 2 },
  );
  if (!validated.ok) return assert.fail(validated.errors.join('\n'));
  const keyset = freshKeyset();
  const metrics = createMetrics({ version: 'test', defaultMetrics: false });
  const gauge = async (): Promise<number> => {
    const line = (await metrics.registry.metrics()).split('\n').find((l) => l.startsWith('ntsd_ntp_transmit_compensation_seconds '));
    return Number(line?.split(' ')[1]);
  };
  const listeners = await startNtpListeners(validated.config, {
    clock: new WallClock(),
    keysetBytes: encodeKeyset(keyset),
    serverFields: TEST_SERVER_FIELDS,
    logger: pino({ level: 'silent' }),
    metrics,
    statsIntervalMs: 60_000,
  });
  const client = await openTestClient();
  try {
    listeners.foldStats();
    assert.equal(await gauge(), 0, 'nothing stamped yet');
    const port = listeners.addresses[0]?.port ?? 0;
    const session = newSession(keyset);
    for (let round = 0; round < 12; round++) {
      const before = client.replies.length;
      for (let i = 0; i < 8; i++) await client.send(ntsRequest(session).packet, port);
      await waitFor(() => client.replies.length === before + 8, 3000, 'replies');
    }
    // The thread reports every 250 ms: fold until its report is in.
    const deadline = Date.now() + 3000;
    let value = 0;
    while (value === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      listeners.foldStats();
      value = await gauge();
    }
    assert.ok(value > 0 && value <= MAX_TRANSMIT_COMPENSATION_S, `gauge ${value}`);
  } finally {
    await client.close();
    await listeners.close();
  }
});
