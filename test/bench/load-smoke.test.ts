/**
 * Smoke tests of the load generator (bench/load): short runs bounded in time (≤ 3 s) and count
 * (≤ 2000 requests) against servers started here on 127.0.0.1 — its own echo server, a tiny plain NTP
 * responder, deliberately broken or slow responders (so the checks are shown to catch bad replies and
 * stale matches), and the ntsd daemon itself through its CLI for nts mode, with kernel timestamps
 * (the native addon's client mode) and with the user-space fallback.
 *
 * `NTSD_REQUIRE_NATIVE=1` (set by .ci/run) turns a missing addon into a failure instead of a skip.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { fileURLToPath } from 'node:url';
import { WallClock, unixSToNtp, type NtpTime } from '../../src/runtime/clock.js';
import { runLoad } from '../../bench/load/run.js';
import { DEFAULT_LOAD_OPTIONS, type LoadOptions } from '../../bench/load/protocol.js';
import { freeTcpAndUdpPort } from '../interop/peers.js';
import { makeTestPki } from '../helpers/certs.js';
import { startNtsd } from '../../bench/compare/servers.js';
import { loadNativeUdp } from '../../src/runtime/addon.js';

const native = loadNativeUdp();
/** Skip reason for the kernel-stamp tests, or undefined when they must run. */
function nativeSkip(): string | undefined {
  if (native.ok) return undefined;
  if (process.env['NTSD_REQUIRE_NATIVE'] === '1') assert.fail(`NTSD_REQUIRE_NATIVE=1 but the native addon is unavailable: ${native.reason}`);
  return `native addon unavailable: ${native.reason}`;
}

const MAX_REQUESTS = 2000;

function options(overrides: Partial<LoadOptions>): LoadOptions {
  return { ...DEFAULT_LOAD_OPTIONS, durationS: 1, maxRequests: MAX_REQUESTS, window: 16, poolSize: 1024, timeoutMs: 200, ...overrides };
}

type Mangle = (reply: Buffer) => Buffer;

/**
 * A plain NTPv4 server that holds back the first reply to each even-numbered request of generation 0 for
 * `holdMs`, longer than the generator's timeout. With a pool of 32, bench/load's transmit fraction is
 * (generation << 5) | index (bench/load/pool.ts), so those are the fractions 0, 2, ..., 30 seen for the
 * first time. The generator declares them lost and re-sends them re-sealed as generation 1, which is
 * answered at once; the held reply to the old send arrives later, while the request's newer send is
 * often in flight. T2 is stamped on arrival and T3 on release: a held reply matched to the newer send
 * would show a residence T3 − T2 of the whole hold.
 */
async function startHoldingServer(holdMs: number): Promise<{ port: number; held: () => number; close: () => Promise<void> }> {
  const clock = new WallClock();
  const socket: Socket = createSocket('udp4');
  const timers = new Set<NodeJS.Timeout>();
  const seen = new Set<number>();
  socket.on('message', (msg, rinfo) => {
    if (msg.length < 48) return;
    const t: NtpTime = { seconds: 0, fraction: 0 };
    const reply = Buffer.alloc(48);
    reply[0] = (4 << 3) | 4;
    reply[1] = 2;
    msg.copy(reply, 24, 40, 48);
    unixSToNtp(clock.nowUnixS(), t);
    reply.writeUInt32BE(t.seconds, 32);
    reply.writeUInt32BE(t.fraction, 36);
    const send = (): void => {
      unixSToNtp(clock.nowUnixS(), t);
      reply.writeUInt32BE(t.seconds, 40);
      reply.writeUInt32BE(t.fraction, 44);
      socket.send(reply, rinfo.port, rinfo.address);
    };
    const fraction = msg.readUInt32BE(44);
    if (fraction < 32 && fraction % 2 === 0 && !seen.has(fraction)) {
      seen.add(fraction);
      const timer = setTimeout(() => {
        timers.delete(timer);
        send();
      }, holdMs);
      timers.add(timer);
    } else send();
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    port: socket.address().port,
    held: () => seen.size,
    close: () => {
      for (const timer of timers) clearTimeout(timer);
      return new Promise((resolve) => socket.close(() => resolve()));
    },
  };
}

/** A minimal plain NTPv4 server (RFC 5905 mode 4 reply) on 127.0.0.1:0; `mangle` breaks replies on purpose. */
async function startPlainNtpServer(mangle: Mangle = (r) => r): Promise<{ port: number; close: () => Promise<void> }> {
  const clock = new WallClock();
  // The anchor a fresh WallClock takes from performance.timeOrigin can be milliseconds off CLOCK_REALTIME,
  // which the kernel-stamped generator reads; calibrating (as the daemon does at start) removes that.
  clock.calibrate();
  const t: NtpTime = { seconds: 0, fraction: 0 };
  const socket: Socket = createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    const received = clock.nowUnixS();
    if (msg.length < 48) return;
    const reply = Buffer.alloc(48);
    reply[0] = (0 << 6) | (4 << 3) | 4; // LI 0, VN 4, mode 4
    reply[1] = 2; // stratum
    reply[3] = 0xec; // precision 2^-20
    reply.write('LOCL', 12, 'latin1');
    msg.copy(reply, 24, 40, 48); // origin = client's transmit
    unixSToNtp(received, t);
    reply.writeUInt32BE(t.seconds, 16);
    reply.writeUInt32BE(t.seconds, 32);
    reply.writeUInt32BE(t.fraction, 36);
    unixSToNtp(clock.nowUnixS(), t);
    reply.writeUInt32BE(t.seconds, 40);
    reply.writeUInt32BE(t.fraction, 44);
    socket.send(mangle(reply), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { port: socket.address().port, close: () => new Promise((resolve) => socket.close(() => resolve())) };
}

test('echo mode: the generator starts its own echo server, stays within its bounds and loses nothing on loopback', async () => {
  const r = await runLoad(options({ mode: 'echo' }));
  assert.equal(r.mode, 'echo');
  assert.ok(r.sentTotal <= MAX_REQUESTS, `sent ${r.sentTotal} > ${MAX_REQUESTS}`);
  assert.ok(r.received > 0, 'no echo came back');
  assert.equal(r.invalid, 0);
  assert.ok(r.lost <= r.sent * 0.01, `lost ${r.lost} of ${r.sent}`);
  assert.ok(r.measuredS > 0 && r.measuredS <= 1.5, `measured ${r.measuredS} s`);
  assert.ok(Number.isFinite(r.delayUs.p50) && r.delayUs.p50 > 0);
  assert.ok(r.delayUs.p50 <= r.delayUs.p99 && r.delayUs.p99 <= r.delayUs.max * 1.01);
  assert.equal(r.offsetAbsUs, null);
});

test('plain mode at a fixed rate: valid replies, offset near zero on loopback, the count bound holds', async () => {
  const server = await startPlainNtpServer();
  try {
    const r = await runLoad(options({ mode: 'plain', target: { host: '127.0.0.1', port: server.port }, ratePerS: 1500, durationS: 2, probeRatePerS: 100 }));
    assert.ok(r.sentTotal <= MAX_REQUESTS);
    assert.ok(r.received >= r.sent * 0.95, `only ${r.received} of ${r.sent} valid`);
    assert.equal(r.invalid, 0, JSON.stringify(r.invalidByReason));
    assert.ok(r.verified > 0);
    // Fixed rate: 1500/s for 2 s is 3000, so the count bound (2000) stops it first.
    assert.equal(r.sentTotal, MAX_REQUESTS);
    const offset = r.offsetAbsUs;
    assert.ok(offset !== null);
    // Both ends read the same system clock: the median |offset| is queueing noise, far below 5 ms.
    assert.ok(offset.p50 < 5000, `|offset| p50 ${offset.p50} µs`);
    assert.ok(r.probe !== null && r.probe.received > 0, 'the probe thread measured nothing');
  } finally {
    await server.close();
  }
});

test('plain mode closed loop: replies larger than the request and Kiss-o\'-Death replies are counted invalid', async () => {
  const oversize = await startPlainNtpServer((reply) => Buffer.concat([reply, Buffer.alloc(20)]));
  const kod = await startPlainNtpServer((reply) => {
    reply[1] = 0;
    return reply;
  });
  try {
    const a = await runLoad(options({ mode: 'plain', target: { host: '127.0.0.1', port: oversize.port }, maxRequests: 300 }));
    assert.ok(a.sentTotal <= 300);
    assert.equal(a.received, 0);
    assert.ok((a.invalidByReason['larger_than_request'] ?? 0) > 0, JSON.stringify(a.invalidByReason));
    const b = await runLoad(options({ mode: 'plain', target: { host: '127.0.0.1', port: kod.port }, maxRequests: 300 }));
    assert.equal(b.received, 0);
    assert.ok((b.invalidByReason['kiss_of_death'] ?? 0) > 0, JSON.stringify(b.invalidByReason));
  } finally {
    await oversize.close();
    await kod.close();
  }
});

const ntsdMain = fileURLToPath(new URL('../../src/main.js', import.meta.url));
/** The daemon is usable when its CLI loads (its whole module graph resolves) and prints usage. */

test('nts mode against the ntsd daemon: one NTS-KE, authenticated replies, none invalid', async () => {
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  const ntpPort = await freeTcpAndUdpPort();
  const kePort = await freeTcpAndUdpPort();
  const ntsd = await startNtsd({ mainJs: ntsdMain, ntpPort, kePort, tls: { chainPath: pki.chainPath, keyPath: pki.keyPath }, threads: 1 });
  try {
    const r = await runLoad(options({ mode: 'nts', ke: { host: '127.0.0.1', port: kePort }, caPem: pki.caPem, ratePerS: 1000, durationS: 1.5, verifyEvery: 4 }));
    assert.ok(r.session !== null);
    assert.equal(r.session.ntp, `127.0.0.1:${ntpPort}`, 'the Port Negotiation record should name the NTP port');
    assert.ok(r.session.cookies >= 1);
    assert.ok(r.sentTotal <= MAX_REQUESTS);
    assert.ok(r.received >= r.sent * 0.95, `only ${r.received} of ${r.sent} valid`);
    assert.equal(r.invalid, 0, JSON.stringify(r.invalidByReason));
    assert.ok(r.verified >= 32, `only ${r.verified} replies fully verified`);
    assert.ok(r.maxReplyBytes <= r.requestBytes, 'a reply was larger than its request');
    const ke = await runLoad(options({ mode: 'ke', ke: { host: '127.0.0.1', port: kePort }, caPem: pki.caPem, concurrency: 2, durationS: 1 }));
    assert.ok(ke.received > 0, `no KE session succeeded: ${ke.firstKeFailure ?? ''}`);
    assert.equal(ke.invalid, 0, JSON.stringify(ke.keFailures));
  } finally {
    await ntsd.stop();
    pki.cleanup();
  }
});

test('a reply to a request already re-sent after a timeout is rejected (stale or late), never matched to the new send', async (t) => {
  for (const timestamps of ['kernel', 'user'] as const) {
    const server = await startHoldingServer(150);
    try {
      if (timestamps === 'kernel') {
        const skip = nativeSkip();
        if (skip !== undefined) {
          t.diagnostic(`kernel timestamps skipped: ${skip}`);
          continue;
        }
      }
      // A 32-request pool, 16 outstanding and a 40 ms timeout: every held request is re-sent as generation
      // 1 long before its 150 ms reply arrives.
      const r = await runLoad(
        options({ mode: 'plain', target: { host: '127.0.0.1', port: server.port }, timestamps, window: 16, poolSize: 32, timeoutMs: 40, durationS: 1.5, maxRequests: 200_000 }),
      );
      assert.equal(server.held(), 16, 'the server should have held the 16 even requests of generation 0');
      assert.equal(r.timestamps, timestamps === 'kernel' ? 'kernel' : 'user-space');
      assert.ok(r.stamps !== null);
      assert.ok(r.stamps.rebuilt > 0, `${timestamps}: no request was re-sealed: ${JSON.stringify(r.stamps)}`);
      assert.equal(r.invalid, 0, JSON.stringify(r.invalidByReason));
      assert.ok(r.received > 100, `${timestamps}: only ${r.received} valid replies`);
      // Only a held reply carries a residence T3 − T2 of 150 ms (the server stamps the others' T2 and T3 in
      // one callback, however late that runs); one among the samples would mean a stale reply was matched.
      const residence = r.residenceUs;
      assert.ok(residence !== null && residence.count > 0);
      assert.ok(residence.max < 100_000, `${timestamps}: residence max ${residence.max} µs: a held (stale) reply was matched`);
      // Every held reply is rejected: stale when its request was re-sent as a newer generation, late when
      // it arrived before the re-send (a loaded machine may add late replies of other requests).
      assert.ok(r.stamps.stale + r.stamps.late >= 16, JSON.stringify(r.stamps));
      assert.ok(r.stamps.stale > 0, JSON.stringify(r.stamps));
    } finally {
      await server.close();
    }
  }
});

test('kernel timestamps against a live ntsd: every sample has the TX stamp of its datagram and the RX stamp of its reply', async (t) => {
  const skip = nativeSkip();
  if (skip !== undefined) {
    t.skip(skip);
    return;
  }
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  const ntpPort = await freeTcpAndUdpPort();
  const kePort = await freeTcpAndUdpPort();
  const ntsd = await startNtsd({ mainJs: ntsdMain, ntpPort, kePort, tls: { chainPath: pki.chainPath, keyPath: pki.keyPath }, threads: 1, datapath: 'native' });
  try {
    const r = await runLoad(
      options({ mode: 'nts', ke: { host: '127.0.0.1', port: kePort }, caPem: pki.caPem, timestamps: 'kernel', ratePerS: 1000, durationS: 1.2, warmupS: 0.2, socketsPerThread: 2, verifyEvery: 4 }),
    );
    assert.equal(r.timestamps, 'kernel');
    assert.equal(r.timestampsNote, null);
    assert.equal(r.invalid, 0, JSON.stringify(r.invalidByReason));
    assert.ok(r.received >= 500, `only ${r.received} valid replies in about a second at 1000/s`);
    const st = r.stamps;
    assert.ok(st !== null);
    // Every valid measured reply became a kernel-stamped sample: nothing fell back or went unstamped.
    assert.equal(st.noRxStamp, 0, JSON.stringify(st));
    assert.equal(st.noTxStamp, 0, JSON.stringify(st));
    assert.equal(st.txStampOutsideSend, 0, JSON.stringify(st));
    assert.equal(st.samples, r.received, JSON.stringify(st));
    const offset = r.offsetAbsUs;
    const residence = r.residenceUs;
    assert.ok(offset !== null && residence !== null);
    assert.equal(offset.count, r.received);
    // Same clock both ends, kernel stamps both ends: the median error is microseconds, far below 1 ms
    // even on a loaded machine. The round trip T4 − T1 contains the residence T3 − T2, up to the server's
    // T3: a read of its calibrated clock, which may stand up to one calibration width (20 µs) off the
    // kernel's CLOCK_REALTIME that stamped T1, T2 and T4. On a loaded CI machine, where nearly the whole
    // round trip is residence, that error alone put the residence p50 2.7 µs above the round trip's. A
    // stale match (a reply held 150 ms) would be thousands of times off, so the margin costs nothing.
    assert.ok(offset.p50 < 1000, `|offset| p50 ${offset.p50} µs`);
    assert.ok(residence.p50 >= 0 && residence.p50 <= r.delayUs.p50 * 1.02 + 20, `residence p50 ${residence.p50} µs vs delay p50 ${r.delayUs.p50} µs`);
  } finally {
    await ntsd.stop();
    pki.cleanup();
  }
});
