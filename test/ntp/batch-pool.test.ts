/**
 * The worker pool without sockets: batching, keyset and server-field broadcast, per-listener policies,
 * and the batch processor shared by worker threads and inline mode.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import fc from 'fast-check';
import { WallClock } from '../../src/runtime/clock.js';
import { createKeyset, encodeKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { Outcome, OUTCOME_COUNT } from '../../src/core/responder.js';
import { createPool, type Pool } from '../../src/ntp/batch-pool.js';
import {
  BATCH_COUNT_WORD,
  BATCH_TALLY_WORD,
  Entry,
  KEY_AGE_MAX_TRACKED,
  Tally,
  batchBytes,
  entryWord,
  keyAgeBucket,
  keyAgeLabel,
} from '../../src/ntp/tally.js';
import { createBatchProcessor } from '../../src/ntp/batch-worker.js';
import { TEST_SERVER_FIELDS, checkNtsReply, newSession, ntsRequest, plainRequest, waitFor } from './nts-test-client.js';

const fill = (b: Uint8Array): void => {
  randomFillSync(b);
};

function freshKeyset(): Keyset {
  return createKeyset(Date.now() / 1000, fill, { staleKeyCount: 7 });
}

interface Collected {
  readonly replies: Map<number, Uint8Array>;
}

function collect(pool: Pool<number>): Collected {
  const replies = new Map<number, Uint8Array>();
  pool.onReply((reply, target) => {
    replies.set(target, reply.slice());
  });
  return { replies };
}

const ZERO = { seconds: 0, fraction: 0 };

for (const threads of [0, 1]) {
  describe(`pool, threads = ${threads}`, () => {
    test('every packet comes back to its own target; batches hold up to batchSize packets', async () => {
      const pool = createPool<number>({
        threads,
        batchSize: 32,
        flushIntervalUs: 0,
        queueLimit: 1024,
        keysetBytes: encodeKeyset(freshKeyset()),
        serverFields: TEST_SERVER_FIELDS,
      });
      try {
        const { replies } = collect(pool);
        const requests = Array.from({ length: 100 }, () => plainRequest());
        requests.forEach((r, i) => assert.ok(pool.submit(r, ZERO, i)));
        await waitFor(() => replies.size === 100, 3000, '100 replies');
        requests.forEach((r, i) => {
          assert.deepEqual(replies.get(i)?.subarray(24, 32), r.subarray(40, 48), `reply ${i} answers request ${i}`);
        });
        const s = pool.stats();
        assert.equal(s.batches, 4, '3 full batches + 1 flushed at the end of the turn');
        assert.equal(s.submitted, 100);
        assert.equal(s.replied, 100);
        assert.equal(s.outcomes[Outcome.ntpTime], 100);
        assert.equal(s.queueDepth, 0);
      } finally {
        await pool.close();
      }
    });

    test('setKeyset reaches the responder: old cookies NAK (unknown key), new cookies verify', async () => {
      const first = freshKeyset();
      const pool = createPool<number>({
        threads,
        batchSize: 8,
        flushIntervalUs: 0,
        queueLimit: 64,
        keysetBytes: encodeKeyset(first),
        serverFields: TEST_SERVER_FIELDS,
      });
      try {
        const { replies } = collect(pool);
        const oldSession = newSession(first);
        const req1 = ntsRequest(oldSession, 1);
        pool.submit(req1.packet, ZERO, 1);
        await waitFor(() => replies.has(1));
        const ok1 = checkNtsReply(replies.get(1) ?? new Uint8Array(0), req1, oldSession);
        assert.equal(ok1.kind, 'time');
        assert.equal(ok1.kind === 'time' ? ok1.cookies.length : 0, 2);

        const second = freshKeyset();
        pool.setKeyset(encodeKeyset(second));
        const req2 = ntsRequest(oldSession);
        pool.submit(req2.packet, ZERO, 2);
        const newSess = newSession(second);
        const req3 = ntsRequest(newSess);
        pool.submit(req3.packet, ZERO, 3);
        await waitFor(() => replies.has(2) && replies.has(3));
        assert.equal(checkNtsReply(replies.get(2) ?? new Uint8Array(0), req2, oldSession).kind, 'nak');
        assert.equal(checkNtsReply(replies.get(3) ?? new Uint8Array(0), req3, newSess).kind, 'time');
        const s = pool.stats();
        assert.equal(s.outcomes[Outcome.nakCookieUnknownKey], 1);
        assert.equal(s.outcomes[Outcome.ntsTime], 2);
        assert.equal(s.cookiesIssued, 3);
        assert.equal(s.keyAges[keyAgeBucket(0)], 2, 'two cookies opened under a current key');
        assert.throws(() => pool.setKeyset(new Uint8Array(10)), RangeError);
      } finally {
        await pool.close();
      }
    });

    test('setServerFields changes the stratum of the following replies', async () => {
      const pool = createPool<number>({
        threads,
        batchSize: 8,
        flushIntervalUs: 0,
        queueLimit: 64,
        keysetBytes: encodeKeyset(freshKeyset()),
        serverFields: TEST_SERVER_FIELDS,
      });
      try {
        const { replies } = collect(pool);
        pool.submit(plainRequest(), ZERO, 1);
        await waitFor(() => replies.has(1));
        assert.equal(replies.get(1)?.[1], 2);
        pool.setServerFields({ ...TEST_SERVER_FIELDS, stratum: 16, leap: 3 });
        pool.submit(plainRequest(), ZERO, 2);
        await waitFor(() => replies.has(2));
        assert.equal(replies.get(2)?.[1], 16);
        assert.equal((replies.get(2)?.[0] ?? 0) >> 6, 3, 'LI = 3 (unsynchronised)');
      } finally {
        await pool.close();
      }
    });

    test('per-listener policies: require-nts on policy 1 drops plain NTP there, policy 0 answers', async () => {
      const pool = createPool<number>({
        threads,
        batchSize: 8,
        flushIntervalUs: 0,
        queueLimit: 64,
        keysetBytes: encodeKeyset(freshKeyset()),
        serverFields: TEST_SERVER_FIELDS,
        policies: [
          { requireNts: false, acceptNtpVersions: [4] },
          { requireNts: true, acceptNtpVersions: [3, 4] },
        ],
      });
      try {
        const { replies } = collect(pool);
        pool.submit(plainRequest(), ZERO, 1, 0);
        pool.submit(plainRequest(), ZERO, 2, 1);
        pool.submit(plainRequest(3), ZERO, 3, 0);
        await waitFor(() => pool.stats().outcomes.reduce((a, b) => a + b, 0) === 3);
        assert.ok(replies.has(1));
        assert.ok(!replies.has(2));
        assert.ok(!replies.has(3), 'NTPv3 is not accepted by policy 0 here');
        const s = pool.stats();
        assert.equal(s.outcomes[Outcome.dropRequireNts], 1);
        assert.equal(s.outcomes[Outcome.dropPolicy], 1);
      } finally {
        await pool.close();
      }
    });
  });
}

test('a lone packet is flushed at the end of its loop turn (flushIntervalUs = 200, one worker)', async () => {
  const pool = createPool<number>({
    threads: 1,
    batchSize: 32,
    flushIntervalUs: 200,
    queueLimit: 64,
    keysetBytes: encodeKeyset(freshKeyset()),
    serverFields: TEST_SERVER_FIELDS,
  });
  try {
    const { replies } = collect(pool);
    pool.submit(plainRequest(), ZERO, 0); // warm-up: worker start-up
    await waitFor(() => replies.has(0));
    const latencies: number[] = [];
    for (let i = 1; i <= 20; i++) {
      const t0 = performance.now();
      pool.submit(plainRequest(), ZERO, i);
      await waitFor(() => replies.has(i));
      latencies.push(performance.now() - t0);
    }
    assert.equal(pool.stats().batches, 21, 'one batch per lone packet');
    latencies.sort((a, b) => a - b);
    // waitFor polls every 5 ms, so this bounds the median at "within one poll", not microseconds.
    assert.ok((latencies[10] ?? Infinity) < 20, `median ${latencies[10]} ms`);
  } finally {
    await pool.close();
  }
});

test('a batch is flushed once its oldest packet is flushIntervalUs old, judged by receive timestamps', async () => {
  const pool = createPool<number>({
    threads: 0,
    batchSize: 32,
    flushIntervalUs: 200,
    queueLimit: 64,
    keysetBytes: encodeKeyset(freshKeyset()),
    serverFields: TEST_SERVER_FIELDS,
  });
  try {
    const { replies } = collect(pool);
    const us = (n: number): number => Math.round(n * 4294.967296);
    const base = 0xffff_ffff - us(150); // the 200 µs bound is crossed across a seconds boundary
    pool.submit(plainRequest(), { seconds: 100, fraction: base }, 1);
    pool.submit(plainRequest(), { seconds: 100, fraction: base + us(100) }, 2);
    assert.equal(pool.stats().batches, 0, '100 µs: still pending');
    pool.submit(plainRequest(), { seconds: 101, fraction: us(60) }, 3);
    assert.equal(pool.stats().batches, 1, '210 µs: flushed at once, before the end of the turn');
    assert.equal(replies.size, 3, 'inline mode answered synchronously');
  } finally {
    await pool.close();
  }
});

test('queueLimit bounds the packets in flight; the excess is refused and counted', async () => {
  const pool = createPool<number>({
    threads: 0,
    batchSize: 32,
    flushIntervalUs: 0,
    queueLimit: 4,
    keysetBytes: encodeKeyset(freshKeyset()),
    serverFields: TEST_SERVER_FIELDS,
  });
  try {
    const accepted = Array.from({ length: 10 }, (_, i) => pool.submit(plainRequest(), ZERO, i));
    assert.deepEqual(accepted, [true, true, true, true, false, false, false, false, false, false]);
    assert.equal(pool.stats().queueRejected, 6);
    assert.equal(pool.stats().queueDepth, 4);
    await waitFor(() => pool.stats().queueDepth === 0);
    assert.ok(pool.submit(plainRequest(), ZERO, 99), 'slots are reused');
  } finally {
    await pool.close();
  }
});

describe('batch processor (the code worker threads and inline mode share)', () => {
  const clock = new WallClock();
  const keyset = freshKeyset();

  function buildBatch(packets: readonly Uint8Array[]): ArrayBuffer {
    const payload = packets.reduce((a, p) => a + p.length, 0);
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

  test('RFC 8915 §5.5/§8.4 property: for random batches every reply is ≤ its request and every packet is tallied once', () => {
    const processor = createBatchProcessor({
      keysetBytes: encodeKeyset(keyset),
      serverFields: TEST_SERVER_FIELDS,
      policies: [{ requireNts: false, acceptNtpVersions: [3, 4] }],
      clock,
    });
    const session = newSession(keyset);
    const packetArb = fc.oneof(
      fc.uint8Array({ minLength: 0, maxLength: 400 }),
      fc.constant(0).map(() => plainRequest()),
      fc.integer({ min: 0, max: 7 }).map((n) => ntsRequest(session, n).packet),
      // A valid NTS request with one octet flipped.
      fc.tuple(fc.integer({ min: 0, max: 400 }), fc.integer({ min: 1, max: 255 })).map(([pos, x]) => {
        const p = ntsRequest(session, 2).packet;
        p[pos % p.length] = (p[pos % p.length] ?? 0) ^ x;
        return p;
      }),
    );
    fc.assert(
      fc.property(fc.array(packetArb, { minLength: 1, maxLength: 40 }), (packets) => {
        const buffer = buildBatch(packets);
        const error = processor.process(buffer);
        assert.equal(error, undefined);
        const words = new Uint32Array(buffer);
        let tallied = 0;
        for (let o = 0; o < OUTCOME_COUNT; o++) tallied += words[BATCH_TALLY_WORD + Tally.outcomes + o] ?? 0;
        assert.equal(tallied, packets.length);
        packets.forEach((p, i) => {
          const replyLength = words[entryWord(i) + Entry.length] ?? 0;
          assert.ok(replyLength <= p.length, `reply ${replyLength} > request ${p.length}`);
        });
      }),
      { numRuns: 300, interruptAfterTimeLimit: 4000 },
    );
  });

  test('key-age buckets: next, 0..15, older', () => {
    assert.equal(keyAgeLabel(keyAgeBucket(-1)), 'next');
    assert.equal(keyAgeLabel(keyAgeBucket(0)), '0');
    assert.equal(keyAgeLabel(keyAgeBucket(KEY_AGE_MAX_TRACKED)), String(KEY_AGE_MAX_TRACKED));
    assert.equal(keyAgeLabel(keyAgeBucket(KEY_AGE_MAX_TRACKED + 1)), 'older');
    assert.equal(keyAgeLabel(keyAgeBucket(1000)), 'older');
  });
});
