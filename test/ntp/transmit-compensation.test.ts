/**
 * Transmit-timestamp compensation (src/ntp/batch-worker.ts module comment): the estimators with injected
 * samples and a scripted clock, and the served offset over real loopback sockets with bursts of NTS
 * requests, compensation on and off.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { NTP_UNIX_OFFSET_S, WallClock } from '../../src/runtime/clock.js';
import { createKeyset, encodeKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { pino } from 'pino';
import { validateConfig } from '../../src/config/schema.js';
import { startUdpServer, type ReplyTarget } from '../../src/ntp/udp-server.js';
import { startNtpListeners } from '../../src/ntp/service.js';
import { createMetrics } from '../../src/obs/metrics.js';
import { createPool } from '../../src/ntp/batch-pool.js';
import {
  BATCH_COUNT_WORD,
  BATCH_F64_SLOTS,
  BATCH_STAMPS_WORD,
  BatchF64,
  COMPENSATION_SLOTS,
  CompensationSlot,
  Entry,
  MAX_TRANSMIT_COMPENSATION_S,
  batchBytes,
  batchSizeClass,
  entryWord,
} from '../../src/ntp/tally.js';
import {
  COST_WARMUP_SAMPLES,
  CostEwma,
  MAX_PACKET_COST_SAMPLE_S,
  SIZE_CLASS_COUNT,
  TransmitEstimator,
  clampCompensationS,
  createBatchProcessor,
  requestSizeClass,
} from '../../src/ntp/batch-worker.js';
import { runBurstProbe } from './burst-offset-client.js';
import { TEST_SERVER_FIELDS, newSession, ntsRequest, openTestClient, plainRequest, waitFor } from './nts-test-client.js';

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

  test('batchSizeClass: 1, 2–3, 4–7, 8–15, 16+', () => {
    assert.deepEqual([1, 2, 3, 4, 7, 8, 15, 16, 32, 1024].map(batchSizeClass), [0, 1, 1, 2, 2, 3, 3, 4, 4, 4]);
  });

  test('clampCompensationS keeps the compensation within [0, 2 ms]', () => {
    assert.equal(clampCompensationS(-5 * US), 0);
    assert.equal(clampCompensationS(Number.NaN), 0);
    assert.equal(clampCompensationS(50 * US), 50 * US);
    assert.equal(clampCompensationS(1), MAX_TRANSMIT_COMPENSATION_S);
  });

  test('TransmitEstimator: seal + rest of the batch + return hop + (i + ½) sends', () => {
    const t = new TransmitEstimator();
    const plain = requestSizeClass(48);
    const nts = requestSizeClass(228);
    for (let i = 0; i < 20; i++) {
      t.observe(plain, 0.2 * US, 0.1 * US);
      t.observe(nts, 12 * US, 3 * US);
    }
    const classes = [nts, plain, nts, nts];
    t.beginBatch(40 * US, 5 * US);
    for (const c of classes) t.addToBatch(c);
    const got = classes.map((c) => t.next(c));
    const expected = [
      3 + (0.2 + 12 + 12) + 40 + 0.5 * 5,
      0.1 + (12 + 12) + 40 + 1.5 * 5,
      3 + 12 + 40 + 2.5 * 5,
      3 + 0 + 40 + 3.5 * 5,
    ].map((us) => us * US);
    got.forEach((g, i) => assert.ok(Math.abs(g - (expected[i] ?? 0)) < 1e-12, `packet ${i}: ${g} vs ${expected[i]}`));
    // A lone packet (send-mode "each"): the same figure as a one-packet batch with no return hop.
    for (const c of [plain, nts]) {
      t.beginBatch(0, 5 * US);
      t.addToBatch(c);
      assert.ok(Math.abs(t.lone(c, 5 * US) - t.next(c)) < 1e-15, `lone ${c}`);
    }
    assert.ok(Math.abs(t.lone(nts, 5 * US) - (3 + 2.5) * US) < 1e-12);
  });

  test('TransmitEstimator: nothing before warm-up, and the plan ignores samples taken during the batch', () => {
    const t = new TransmitEstimator();
    const nts = requestSizeClass(228);
    t.beginBatch(0, 0);
    t.addToBatch(nts);
    t.addToBatch(nts);
    assert.equal(t.next(nts), 0, 'cold: no compensation');
    for (let i = 0; i < 20; i++) t.observe(nts, 10 * US, 2 * US);
    assert.equal(t.next(nts), 0, 'still the cold plan for this batch');
    t.beginBatch(0, 0);
    t.addToBatch(nts);
    t.addToBatch(nts);
    assert.ok(Math.abs(t.next(nts) - 12 * US) < 1e-12);
    assert.ok(Math.abs(t.next(nts) - 2 * US) < 1e-12);
    assert.equal(t.respondCostS(nts), 10 * US);
    assert.equal(t.sealCostS(nts), 2 * US);
  });

  test('TransmitEstimator clamps the sum', () => {
    const t = new TransmitEstimator();
    t.beginBatch(1, 1);
    t.addToBatch(0);
    assert.equal(t.next(0), MAX_TRANSMIT_COMPENSATION_S);
  });
});

/** Builds a batch buffer holding `packets` (the pool's layout). */
function batchOf(packets: readonly Uint8Array[]): ArrayBuffer {
  const payload = packets.reduce((n, p) => n + p.length, 0);
  const buffer = new ArrayBuffer((batchBytes(packets.length, payload) + 3) & ~3);
  const words = new Uint32Array(buffer);
  const bytes = new Uint8Array(buffer);
  words[BATCH_COUNT_WORD] = packets.length;
  let at = batchBytes(packets.length, 0);
  packets.forEach((p, i) => {
    const e = entryWord(i);
    words[e + Entry.slot] = i;
    words[e + Entry.length] = p.length;
    words[e + Entry.dataOffset] = at;
    bytes.set(p, at);
    at += p.length;
  });
  return buffer;
}

/** Transmit timestamp of reply `i` of a processed batch, Unix seconds. */
function transmitS(buffer: ArrayBuffer, i: number): number {
  const words = new Uint32Array(buffer);
  const view = new DataView(buffer);
  const at = (words[entryWord(i) + Entry.dataOffset] ?? 0) + 40;
  return view.getUint32(at) - NTP_UNIX_OFFSET_S + view.getUint32(at + 4) / 4_294_967_296;
}

describe('batch processor with a scripted monotonic clock', () => {
  test('every packet of a batch is stamped with its estimated departure', () => {
    // Each monotonic read advances 1 µs: per packet the transmit read and the done read, so a packet
    // costs 2 µs and 1 µs of it comes after its transmit read.
    let fake = 1000;
    const compensationShared = new SharedArrayBuffer(COMPENSATION_SLOTS * 8);
    const shared = new Float64Array(compensationShared);
    const processor = createBatchProcessor({
      keysetBytes: encodeKeyset(freshKeyset()),
      serverFields: TEST_SERVER_FIELDS,
      policies: [{ requireNts: false, acceptNtpVersions: [4] }],
      clock: new WallClock(),
      compensationShared,
      monotonicS: () => (fake += US),
    });
    const n = 6;
    const run = (): { buffer: ArrayBuffer; stamps: number[] } => {
      const buffer = batchOf(Array.from({ length: n }, () => plainRequest()));
      assert.equal(processor.process(buffer), undefined);
      return { buffer, stamps: Array.from({ length: n }, (_, i) => transmitS(buffer, i)) };
    };
    const cold = run();
    // Cold: no compensation, so the stamps are the raw reads, 2 µs apart.
    cold.stamps.forEach((s, i) => assert.ok(Math.abs(s - (cold.stamps[0] ?? 0) - 2 * i * US) < 0.5 * US, `cold ${i}`));
    assert.equal(new Uint32Array(cold.buffer)[BATCH_STAMPS_WORD], n);
    const header = new Float64Array(cold.buffer, 0, BATCH_F64_SLOTS);
    assert.equal(header[BatchF64.compensationSumS], 0);
    assert.ok(Math.abs((header[BatchF64.doneS] ?? 0) - fake) < 1e-9, 'done time = the last read');

    run(); // the plain class is warm after 8 samples
    // Warm, sends free: every stamp = first read + the rest of the batch = the same departure time.
    const warm = run();
    const departure = warm.stamps[0] ?? 0;
    warm.stamps.forEach((s, i) => assert.ok(Math.abs(s - departure) < 0.5 * US, `warm ${i}: ${(s - departure) / US} µs`));
    // The first packet's compensation: 1 µs seal + 5 × 2 µs for the rest.
    const sum = new Float64Array(warm.buffer, 0, BATCH_F64_SLOTS)[BatchF64.compensationSumS] ?? 0;
    assert.ok(Math.abs(sum - [11, 9, 7, 5, 3, 1].reduce((a, b) => a + b, 0) * US) < 1e-9, `compensation sum ${sum}`);

    // A 30 µs return hop for batches of this size and 4 µs per send, as the main thread would publish them.
    shared[CompensationSlot.returnHopS + batchSizeClass(n)] = 30 * US;
    shared[CompensationSlot.sendCostS] = 4 * US;
    const sent = run();
    const first = sent.stamps[0] ?? 0;
    sent.stamps.forEach((s, i) => assert.ok(Math.abs(s - first - 4 * i * US) < 0.5 * US, `send order ${i}`));
    // Σ over i of 1 µs seal + 2 µs × (n − 1 − i) + 30 µs hop + (i + ½) × 4 µs.
    const sentSum = new Float64Array(sent.buffer, 0, BATCH_F64_SLOTS)[BatchF64.compensationSumS] ?? 0;
    assert.ok(Math.abs(sentSum - (n * 31 + 2 * 15 + 4 * 18) * US) < 1e-9, `compensation sum ${sentSum}`);
  });

  test('transmitCompensation: false stamps the raw clock but still measures', () => {
    let fake = 1000;
    const processor = createBatchProcessor({
      keysetBytes: encodeKeyset(freshKeyset()),
      serverFields: TEST_SERVER_FIELDS,
      policies: [{ requireNts: false, acceptNtpVersions: [4] }],
      clock: new WallClock(),
      transmitCompensation: false,
      monotonicS: () => (fake += US),
    });
    for (let round = 0; round < 4; round++) {
      const buffer = batchOf(Array.from({ length: 4 }, () => plainRequest()));
      processor.process(buffer);
      const s0 = transmitS(buffer, 0);
      for (let i = 1; i < 4; i++) assert.ok(Math.abs(transmitS(buffer, i) - s0 - 2 * i * US) < 0.5 * US);
      assert.equal(new Float64Array(buffer, 0, BATCH_F64_SLOTS)[BatchF64.compensationSumS], 0);
    }
  });
});

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

interface OffsetRun {
  /** Median signed offset of the probes, µs. */
  readonly medianUs: number;
  readonly requestLegUs: number;
  readonly replyLegUs: number;
  readonly probes: number;
  readonly meanCompensationUs: number;
  readonly returnHopUs: number;
  readonly sendCostUs: number;
}

/**
 * Bound on the compensated probe's median signed offset (threads = 1). Measured on a loaded 2-core box:
 * compensated −141…+10 µs, uncompensated −272…−362 µs.
 */
const OFFSET_BOUND_US = 180;
/**
 * Bound on the compensated probe's median reply leg (inline). Measured on a loaded 2-core box:
 * compensated 46…252 µs, uncompensated 432…945 µs.
 */
const REPLY_LEG_BOUND_US = 350;
/**
 * When the machine is loaded (CI with other jobs), the uncompensated error grows and so does the part of it
 * that no transmit estimate can remove (wake-ups, the client's own delays): the bounds above then become this
 * fraction of the uncompensated figure. Seen on a loaded box: inline, 1,362 µs off and 626 µs on, where the
 * compensation removed 736 of its claimed 740 µs; a missing compensation still fails the "moved by" checks.
 */
const LOAD_SCALED_FRACTION = 0.6;

function describeRun(name: string, r: OffsetRun): string {
  return (
    `${name}: median θ ${r.medianUs.toFixed(1)} µs over ${r.probes} probes, legs T2−T1 ${r.requestLegUs.toFixed(0)} µs / T4−T3 ${r.replyLegUs.toFixed(0)} µs; ` +
    `mean compensation ${r.meanCompensationUs.toFixed(1)} µs, hop ${r.returnHopUs.toFixed(1)} µs, send ${r.sendCostUs.toFixed(1)} µs`
  );
}

/** One server (pool + UDP) under bursts of NTS requests; the probe's median signed offset. */
async function measure(threads: number, transmitCompensation: boolean, keyset: Keyset, rounds: number, burst: number): Promise<OffsetRun> {
  const clock = new WallClock();
  clock.calibrate();
  const pool = createPool<ReplyTarget>({
    threads,
    batchSize: 64,
    flushIntervalUs: 200,
    queueLimit: 1024,
    keysetBytes: encodeKeyset(keyset),
    serverFields: TEST_SERVER_FIELDS,
    clock,
    transmitCompensation,
  });
  const udp = await startUdpServer({ listen: [{ host: '127.0.0.1', port: 0, family: 'IPv4' }], pool, clock });
  try {
    const port = udp.addresses[0]?.port ?? 0;
    const session = newSession(keyset);
    const bulk = Array.from({ length: 64 }, () => ntsRequest(session).packet);
    const probes = (n: number): Uint8Array[] => Array.from({ length: n }, () => ntsRequest(session).packet);
    // Warm-up (JIT, estimators), not measured.
    await runBurstProbe({ clockShared: clock.shared, port, bulk, probes: probes(20), burst, gapMs: 2 });
    const before = pool.stats();
    const samples = await runBurstProbe({ clockShared: clock.shared, port, bulk, probes: probes(rounds), burst, gapMs: 2 });
    const after = pool.stats();
    const stamps = after.transmitStamps - before.transmitStamps;
    return {
      medianUs: median(samples.map((s) => s.offsetUs)),
      requestLegUs: median(samples.map((s) => s.requestLegUs)),
      replyLegUs: median(samples.map((s) => s.replyLegUs)),
      probes: samples.length,
      meanCompensationUs: stamps > 0 ? ((after.transmitCompensationSumS - before.transmitCompensationSumS) / stamps) * 1e6 : 0,
      returnHopUs: after.returnHopS * 1e6,
      sendCostUs: after.sendCostS * 1e6,
    };
  } finally {
    await udp.close();
    await pool.close();
  }
}

/** Bulk requests behind each probe: the probe leads a batch of up to 32 (one I/O turn reads ≤ 32 datagrams). */
const BURST = 31;
const ROUNDS = 200;

/** Measurement pairs at most (one pair is off then on): a missing or wrong compensation fails every one. */
const ATTEMPTS = 3;

/**
 * Measures without and then with compensation until `good` holds for a pair, ATTEMPTS pairs at most, and
 * returns the last pair for the asserts. One pair takes 2–3 s and is a stochastic figure (a median of 200
 * probes against one scheduler): on a quiet box about 1 pair in 8 lands outside the bounds by chance.
 */
async function measureUntil(
  t: { diagnostic(message: string): void },
  threads: number,
  good: (off: OffsetRun, on: OffsetRun) => boolean,
): Promise<{ off: OffsetRun; on: OffsetRun }> {
  const keyset = freshKeyset();
  for (let attempt = 1; ; attempt++) {
    const off = await measure(threads, false, keyset, ROUNDS, BURST);
    t.diagnostic(describeRun(`attempt ${attempt} off`, off));
    const on = await measure(threads, true, keyset, ROUNDS, BURST);
    t.diagnostic(describeRun(`attempt ${attempt} on`, on));
    if (good(off, on) || attempt === ATTEMPTS) return { off, on };
  }
}

describe('served offset over loopback, threads = 1', () => {
  // The main thread receives promptly (the crypto runs in the worker), so the probe's receive timestamp
  // is good and the signed offset shows the transmit side: uncompensated, the probe's reply waits for the
  // rest of its batch, the hop back and the sends after its timestamp was taken (≈ −250…−350 µs here).
  test(`bursts of NTS requests: the median signed offset is within ±${OFFSET_BOUND_US} µs only with compensation`, async (t) => {
    const { off, on } = await measureUntil(t, 1, (off, on) => on.medianUs - off.medianUs > 100 && Math.abs(on.medianUs) < Math.max(OFFSET_BOUND_US, LOAD_SCALED_FRACTION * Math.abs(off.medianUs)));
    assert.ok(on.probes > ROUNDS / 2 && off.probes > ROUNDS / 2, 'most probes answered');
    assert.ok(on.meanCompensationUs > 0 && off.meanCompensationUs === 0, 'compensation applied only when on');
    // On a loaded machine every leg stretches: the bound grows with the error there was to remove.
    const bound = Math.max(OFFSET_BOUND_US, LOAD_SCALED_FRACTION * Math.abs(off.medianUs));
    assert.ok(Math.abs(on.medianUs) < bound, `compensated median offset ${on.medianUs.toFixed(1)} µs within ±${bound.toFixed(0)} µs`);
    // The scenario must be one the uncompensated server gets wrong, or the bound above proves nothing.
    assert.ok(on.medianUs - off.medianUs > 100, `compensation moved the median by ${(on.medianUs - off.medianUs).toFixed(1)} µs`);
  });
});

describe('served offset over loopback, threads = 0 (inline)', () => {
  // Inline, the thread that stamps receive times also runs the crypto, so the probe can lead a batch only
  // when it was read late (the burst behind it had to be in the socket already): its receive timestamp
  // is late by about as much as its transmit timestamp is early, which partly cancels in θ. Transmit
  // compensation cannot (and must not) fix the receive side, so this test checks the transmit side
  // directly: the reply leg T4 − T3, which on loopback with one clock is the true reply delay (≥ 0, and
  // short for an idle client) when T3 is right, and grows by the rest of the batch and the sends when not.
  test(`bursts of NTS requests: the median reply leg T4 − T3 is below ${REPLY_LEG_BOUND_US} µs only with compensation`, async (t) => {
    const { off, on } = await measureUntil(t, 0, (off, on) => off.replyLegUs - on.replyLegUs > 150 && on.replyLegUs < Math.max(REPLY_LEG_BOUND_US, LOAD_SCALED_FRACTION * off.replyLegUs));
    assert.ok(on.probes > ROUNDS / 2 && off.probes > ROUNDS / 2, 'most probes answered');
    assert.ok(on.meanCompensationUs > 0 && off.meanCompensationUs === 0, 'compensation applied only when on');
    const bound = Math.max(REPLY_LEG_BOUND_US, LOAD_SCALED_FRACTION * off.replyLegUs);
    assert.ok(on.replyLegUs < bound, `compensated median reply leg ${on.replyLegUs.toFixed(1)} µs below ${bound.toFixed(0)} µs`);
    assert.ok(off.replyLegUs - on.replyLegUs > 150, `compensation shortened the reply leg by ${(off.replyLegUs - on.replyLegUs).toFixed(1)} µs`);
  });
});

test('ntsd_ntp_transmit_compensation_seconds: the mean compensation of the last stats interval', async () => {
  const validated = validateConfig(
    {
      server: [{ listen: '127.0.0.1:0' }],
      'nts-ke-server': [{ listen: '127.0.0.1:0', 'certificate-chain-path': 'c.pem', 'private-key-path': 'k.pem' }],
      // The pool's compensation (the native datapath's own is checked in test/ntp/threads.test.ts).
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
    listeners.foldStats();
    const value = await gauge();
    assert.ok(value > 0 && value <= MAX_TRANSMIT_COMPENSATION_S, `gauge ${value}`);
  } finally {
    await client.close();
    await listeners.close();
  }
});
