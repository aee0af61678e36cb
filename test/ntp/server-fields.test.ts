import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { WallClock } from '../../src/runtime/clock.js';
import { LeapIndicator, NtpHeaderOffset, NtpMode, asciiReferenceId, packLiVnMode } from '../../src/core/ntp/header.js';
import { ntpShortToSeconds, secondsToNtpShort, writeTimestamp } from '../../src/core/ntp/timestamp.js';
import type { ServerFields } from '../../src/core/responder.js';
import {
  MAX_DISPERSION_S,
  createFollowTimeSource,
  createStaticTimeSource,
  createTimeSource,
  interpretDaemonReply,
  measurePrecision,
  unsynchronisedFields,
  type TimeSource,
} from '../../src/ntp/server-fields.js';

const clock = new WallClock();
const CHRONYD = '/usr/sbin/chronyd';

function assertUnsynchronised(f: ServerFields): void {
  assert.equal(f.leap, LeapIndicator.unsynchronized, 'LI = 3');
  assert.equal(f.stratum, 16, 'stratum 16');
  assert.equal(f.referenceId, 0);
  assert.equal(ntpShortToSeconds(f.rootDispersion), MAX_DISPERSION_S);
}

function follow(port: number, pollIntervalS = 1): TimeSource {
  return createFollowTimeSource(
    { mode: 'follow', address: { host: '127.0.0.1', port, family: 'IPv4' }, pollIntervalS },
    { clock, precision: -22, queryTimeoutMs: 300 },
  );
}

/** The next update. The source's own timers are unref'd, so hold the event loop open while waiting. */
function nextChange(source: TimeSource): Promise<ServerFields> {
  const keepAlive = setInterval(() => undefined, 1000);
  return new Promise((resolve) => {
    const off = source.onChange((f) => {
      off();
      clearInterval(keepAlive);
      resolve(f);
    });
  });
}

/** A UDP port that was free a moment ago. */
async function freePort(): Promise<number> {
  const s = createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Sends one mode-3 request and says whether any answer came back within `ms`. */
async function answers(port: number, ms: number): Promise<boolean> {
  const s = createSocket('udp4');
  const req = new Uint8Array(48);
  req[0] = packLiVnMode(0, 4, NtpMode.client);
  const got = new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    s.once('message', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
  s.send(req, port, '127.0.0.1');
  const ok = await got;
  s.close();
  return ok;
}

/** Starts chronyd on loopback (PEERS.md: no clock control, no sys_time capability, cmdport 0). */
async function startChronyd(dir: string, port: number, extra: string): Promise<ChildProcess> {
  const conf = join(dir, `chrony-${port}.conf`);
  writeFileSync(conf, [`port ${port}`, 'bindaddress 127.0.0.1', 'allow 127.0.0.0/8', extra, `pidfile ${dir}/chronyd-${port}.pid`, 'cmdport 0', 'bindcmdaddress /', ''].join('\n'));
  const child = spawn('setpriv', ['--bounding-set', '-sys_time', CHRONYD, '-x', '-d', '-u', 'root', '-f', conf], { stdio: 'ignore' });
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await exited;
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---------------------------------------------------------------------------------------------------------

test('static mode serves the configured stratum and refid, leap 0, a recent reference time', async () => {
  const source = createStaticTimeSource({ mode: 'static', localStratum: 2, referenceId: asciiReferenceId('GPS'), referenceIdText: 'GPS' }, { clock });
  await source.ready;
  const f = source.current();
  assert.equal(f.leap, 0);
  assert.equal(f.stratum, 2);
  assert.equal(f.referenceId, 0x47505300);
  assert.equal(f.rootDelay, 0);
  const nowNtpS = Math.floor(clock.nowUnixS()) + 2_208_988_800;
  assert.ok(Math.abs(f.referenceTime.seconds - nowNtpS) <= 1, 'reference time is now');
  assert.ok(Object.isFrozen(f));
  await source.close();
});

test('static mode with local-stratum 16 answers unsynchronised', async () => {
  const source = createTimeSource({ mode: 'static', localStratum: 16, referenceId: 0, referenceIdText: 'LOCL' }, { clock, precision: -20 });
  assertUnsynchronised(source.current());
  assert.equal(source.current().precision, -20);
  await source.close();
});

test('precision is measured from the clock (log2 s of its resolution)', () => {
  const p = measurePrecision(clock);
  assert.ok(Number.isInteger(p) && p >= -30 && p <= -6, String(p));
  let t = 1000;
  assert.equal(measurePrecision({ nowUnixS: () => (t += 0.001) }), -9); // 1 ms steps → 2^-9 s ≥ 1 ms
  assert.deepEqual(unsynchronisedFields(-20).precision, -20);
});

// ---------------------------------------------------------------------------------------------------------
// interpretDaemonReply (RFC 5905 §7.3, §7.4, §8)

function reply(opts: { leap?: number; stratum?: number; mode?: number; refid?: number; rootDelayS?: number; rootDispS?: number }, origin: Uint8Array): Uint8Array {
  const r = new Uint8Array(48);
  r[0] = packLiVnMode(opts.leap ?? 0, 4, opts.mode ?? NtpMode.server);
  r[1] = opts.stratum ?? 2;
  r[3] = 0xe8;
  new DataView(r.buffer).setUint32(4, secondsToNtpShort(opts.rootDelayS ?? 0.01));
  new DataView(r.buffer).setUint32(8, secondsToNtpShort(opts.rootDispS ?? 0.02));
  new DataView(r.buffer).setUint32(12, opts.refid ?? 0xc0000201);
  writeTimestamp(r, NtpHeaderOffset.referenceTime, { seconds: 4_000_000_000, fraction: 0 });
  r.set(origin, NtpHeaderOffset.originTime);
  writeTimestamp(r, NtpHeaderOffset.receiveTime, { seconds: 4_000_000_010, fraction: 0 });
  writeTimestamp(r, NtpHeaderOffset.transmitTime, { seconds: 4_000_000_010, fraction: 0x0010_0000 });
  return r;
}

test('interpretDaemonReply: a good answer adds one to the stratum and removes the daemon processing time', () => {
  const origin = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  const r = interpretDaemonReply(reply({ leap: 1, stratum: 2 }, origin), origin, 0.001, 1_700_000_000);
  if (!r.ok) return assert.fail(r.reason);
  assert.equal(r.sample.leap, 1);
  assert.equal(r.sample.stratum, 3);
  assert.equal(r.sample.referenceId, 0xc0000201);
  assert.ok(Math.abs(r.sample.delayS - (0.001 - 0x0010_0000 / 2 ** 32)) < 1e-9);
  assert.ok(Math.abs(r.sample.rootDelayS - 0.01) < 1e-4);
});

test('interpretDaemonReply: unsynchronised, Kiss-o-Death, stratum 15, wrong mode, wrong origin, short', () => {
  const origin = new Uint8Array([9, 9, 9, 9, 9, 9, 9, 9]);
  const reason = (bytes: Uint8Array, sent = origin): string => {
    const r = interpretDaemonReply(bytes, sent, 0.001, 0);
    return r.ok ? 'ok' : r.reason;
  };
  assert.equal(reason(reply({ leap: 3 }, origin)), 'unsynchronised');
  assert.equal(reason(reply({ stratum: 0, refid: asciiReferenceId('RATE') }, origin)), 'kiss_of_death');
  assert.equal(reason(reply({ stratum: 15 }, origin)), 'stratum_too_high');
  assert.equal(reason(reply({ stratum: 16 }, origin)), 'stratum_too_high');
  assert.equal(reason(reply({ rootDispS: 16 }, origin)), 'unsynchronised');
  assert.equal(reason(reply({ mode: NtpMode.symmetricPassive }, origin)), 'not_server_mode');
  assert.equal(reason(reply({}, origin), new Uint8Array(8)), 'origin_mismatch');
  assert.equal(reason(reply({}, origin).subarray(0, 47)), 'short');
  assert.equal(reason(reply({ stratum: 14 }, origin)), 'ok');
});

// ---------------------------------------------------------------------------------------------------------
// Follow mode over real loopback UDP.

test('follow mode: a dead port answers unsynchronised', async () => {
  const source = follow(await freePort());
  await source.ready;
  assertUnsynchronised(source.current());
  await source.close();
});

test('follow mode: copies a scripted daemon, and drops to unsynchronised when it says so', async () => {
  const daemon: Socket = createSocket('udp4');
  daemon.bind(0, '127.0.0.1');
  await once(daemon, 'listening');
  let script: { leap: number; stratum: number } = { leap: 0, stratum: 1 };
  daemon.on('message', (msg, rinfo) => {
    const origin = msg.subarray(NtpHeaderOffset.transmitTime, NtpHeaderOffset.transmitTime + 8);
    daemon.send(reply({ ...script, refid: asciiReferenceId('GPS'), rootDelayS: 0.001, rootDispS: 0.5 }, origin), rinfo.port, rinfo.address);
  });
  const source = follow(daemon.address().port);
  try {
    await source.ready;
    let f = source.current();
    assert.equal(f.leap, 0);
    assert.equal(f.stratum, 2);
    assert.equal(f.referenceId, asciiReferenceId('GPS'), 'refid passed through');
    assert.equal(f.referenceTime.seconds, 4_000_000_000, 'reference time passed through');
    assert.ok(ntpShortToSeconds(f.rootDelay) >= 0.001, 'root delay includes upstream root delay');
    // 0.5 s upstream + PHI · (poll look-ahead + age) > 0.5 s
    assert.ok(ntpShortToSeconds(f.rootDispersion) > 0.5 && ntpShortToSeconds(f.rootDispersion) < 0.51);

    script = { leap: LeapIndicator.lastMinuteHas61Seconds, stratum: 1 };
    f = await nextChange(source);
    assert.equal(f.leap, LeapIndicator.lastMinuteHas61Seconds, 'leap warning passed through');

    script = { leap: LeapIndicator.unsynchronized, stratum: 1 };
    assertUnsynchronised(await nextChange(source));
    script = { leap: 0, stratum: 15 };
    assertUnsynchronised(await nextChange(source));
    script = { leap: 0, stratum: 3 };
    assert.equal((await nextChange(source)).stratum, 4);
  } finally {
    await source.close();
    daemon.close();
  }
});

test('follow mode against a real chronyd on loopback: synchronised, then unsynchronised when it dies', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-ts-chrony-'));
  const port = await freePort();
  const chronyd = await startChronyd(dir, port, 'local stratum 2');
  let source: TimeSource | undefined;
  try {
    await waitUntil(() => answers(port, 200), 5000);
    source = follow(port);
    await source.ready;
    const f = source.current();
    assert.equal(f.leap, 0);
    assert.equal(f.stratum, 3, 'chronyd local stratum 2 + 1');
    assert.equal(f.referenceId, 0x7f7f0101, "chronyd's local refid (127.127.1.1) passed through");
    assert.notEqual(f.referenceTime.seconds, 0);
    assert.ok(ntpShortToSeconds(f.rootDelay) < 0.05, 'loopback delay is small');
    assert.ok(f.rootDispersion > 0);

    await stop(chronyd);
    // The last good sample goes stale after 4 poll intervals (4 s here).
    const started = Date.now();
    for (;;) {
      const next = await nextChange(source);
      if (next.leap === LeapIndicator.unsynchronized) {
        assertUnsynchronised(next);
        break;
      }
      assert.ok(Date.now() - started < 7000, 'still synchronised long after chronyd stopped');
    }
    assert.ok(Date.now() - started >= 2500, 'one lost answer does not flip the state');
  } finally {
    await source?.close();
    await stop(chronyd);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('follow mode against an unsynchronised chronyd (no sources, no local) answers unsynchronised', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-ts-chrony-'));
  const port = await freePort();
  const chronyd = await startChronyd(dir, port, '');
  let source: TimeSource | undefined;
  try {
    await waitUntil(() => answers(port, 200), 5000);
    source = follow(port);
    await source.ready;
    assertUnsynchronised(source.current());
  } finally {
    await source?.close();
    await stop(chronyd);
    rmSync(dir, { recursive: true, force: true });
  }
});
