/**
 * The daemon's NTP side: one start path, NTP threads with one of two socket backends.
 *  - `[worker-pool] datapath`: `auto` runs the native addon where it loads and says why not where it does
 *    not; `native` without the addon is a configuration error; `dgram` never touches the addon;
 *  - on the dgram backend, `threads = N` runs N threads where dgram reusePort works (Node ≥ 22.12) and
 *    one thread with one warning where it does not (Node 20).
 * The suite runs on both versions; the tests say which branch this runtime took.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { pino, type Logger } from 'pino';
import { WallClock } from '../../src/runtime/clock.js';
import { validateConfig, type Config, type Datapath } from '../../src/config/schema.js';
import { NtsdError, NtsdErrorCode } from '../../src/errors.js';
import { loadNativeUdp, type NativeLoad } from '../../src/runtime/addon.js';
import { openCookie } from '../../src/core/nts/cookie.js';
import { createKeyset, encodeKeyset, rotateKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { createMetrics, type Metrics } from '../../src/obs/metrics.js';
import { DGRAM_ONE_THREAD_WARNING, startNtpListeners, type NtpListeners } from '../../src/ntp/service.js';
import {
  TEST_SERVER_FIELDS,
  checkNtsReply,
  newSession,
  ntsRequest,
  openTestClient,
  plainRequest,
  type TestUdpClient,
} from './nts-test-client.js';
import { makeTestPki } from '../helpers/certs.js';
import {
  freePorts,
  keyExchange,
  makeTempDir,
  ntsQuery,
  removeDir,
  startDaemon,
  sumOf,
  testConfigToml,
  waitForMetrics,
  type LogLine as DaemonLogLine,
} from '../helpers/daemon.js';

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
/** dgram reusePort arrived in Node 22.12 (Linux: SO_REUSEPORT). */
const runtimeHasReusePort = process.platform === 'linux' && (major > 22 || (major === 22 && minor >= 12));

const fill = (b: Uint8Array): void => {
  randomFillSync(b);
};

const native = loadNativeUdp();
const UNAVAILABLE: NativeLoad = { ok: false, reason: 'forced off by the test' };

function configWith(threads: number, datapath: Datapath = 'dgram', server: Record<string, unknown> = {}): Config {
  const result = validateConfig(
    {
      server: [{ listen: '127.0.0.1:0', ...server }],
      'nts-ke-server': [{ listen: '127.0.0.1:0', 'certificate-chain-path': 'c.pem', 'private-key-path': 'k.pem' }],
      'worker-pool': { threads, datapath },
      'time-source': { mode: 'static', 'local-stratum': 2 },
    },
    { baseDir: '/tmp', cpuCount: 2 },
  );
  if (!result.ok) return assert.fail(result.errors.join('\n'));
  return result.config;
}

interface LogLine {
  readonly level: number;
  readonly msg?: string;
  readonly [key: string]: unknown;
}

function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { logger, lines };
}

/** Sum of the samples of `name` whose labels include every pair of `labels`. */
async function metricSum(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const body = await metrics.registry.metrics();
  let sum = 0;
  for (const line of body.split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const labelText = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/** Folds and polls until `series` reaches `expected` (NTP threads report every 250 ms). */
async function waitForMetric(ntp: NtpListeners, metrics: Metrics, name: string, labels: Record<string, string>, expected: number): Promise<void> {
  const deadline = Date.now() + 3000;
  for (;;) {
    ntp.foldStats();
    const v = await metricSum(metrics, name, labels);
    if (v === expected) return;
    if (Date.now() > deadline) assert.fail(`${name}${JSON.stringify(labels)} = ${v}, expected ${expected}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Rig {
  readonly ntp: NtpListeners;
  readonly metrics: Metrics;
  readonly lines: LogLine[];
  readonly clients: TestUdpClient[];
  readonly port: number;
  keyset: Keyset;
  close(): Promise<void>;
}

async function startRig(
  threads: number,
  probe?: () => Promise<boolean>,
  datapath: Datapath = 'dgram',
  loadNative?: () => NativeLoad,
  server: Record<string, unknown> = {},
): Promise<Rig> {
  const keyset = createKeyset(Date.now() / 1000, fill, { staleKeyCount: 7 });
  const { logger, lines } = capturingLogger();
  const metrics = createMetrics({ version: 'test', defaultMetrics: false });
  const ntp = await startNtpListeners(configWith(threads, datapath, server), {
    ...(loadNative !== undefined ? { loadNative } : {}),
    clock: new WallClock(),
    keysetBytes: encodeKeyset(keyset),
    serverFields: TEST_SERVER_FIELDS,
    logger,
    metrics,
    ...(probe !== undefined ? { probeReusePort: probe } : {}),
  });
  const clients = await Promise.all(Array.from({ length: 8 }, () => openTestClient()));
  return {
    ntp,
    metrics,
    lines,
    clients,
    port: ntp.addresses[0]?.port ?? 0,
    keyset,
    async close() {
      await Promise.all(clients.map((c) => c.close()));
      await ntp.close();
    },
  };
}

/** Every client sends one plain and one NTS request (1 placeholder) and checks the replies. */
async function exchangeAll(rig: Rig): Promise<void> {
  for (const client of rig.clients) {
    const reply = await client.exchange(plainRequest(), rig.port);
    assert.equal(reply.length, 48);
    assert.equal(reply[1], TEST_SERVER_FIELDS.stratum);
    const session = newSession(rig.keyset);
    const req = ntsRequest(session, 1);
    const checked = checkNtsReply(await client.exchange(req.packet, rig.port), req, session);
    assert.equal(checked.kind, 'time', 'RFC 8915 §5.7 authentic reply');
  }
}

/** Rotates twice (a key the running keyset never saw), broadcasts, and polls until every client's cookie opens. */
async function rotateAndCheck(rig: Rig): Promise<void> {
  const now = Date.now() / 1000;
  const rotated = rotateKeyset(rotateKeyset(rig.keyset, now, fill), now, fill);
  rig.ntp.setKeyset(encodeKeyset(rotated));
  rig.keyset = rotated;
  for (const client of rig.clients) {
    const session = newSession(rotated);
    const deadline = Date.now() + 3000;
    for (;;) {
      const req = ntsRequest(session, 0);
      const checked = checkNtsReply(await client.exchange(req.packet, rig.port), req, session);
      if (checked.kind === 'time') {
        for (const c of checked.cookies) assert.ok(openCookie(rotated, c).ok);
        break;
      }
      assert.ok(Date.now() < deadline, 'a cookie under the new key still NAKs 3 s after the broadcast');
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

const warnings = (lines: readonly LogLine[]): LogLine[] => lines.filter((l) => l.level === 40);

test(`dgram with threads = 2 on Node ${process.versions.node}: ${runtimeHasReusePort ? 'two threads' : 'one warning, then one thread'}`, async () => {
  const rig = await startRig(2);
  try {
    assert.equal(rig.ntp.datapath, 'dgram');
    if (runtimeHasReusePort) {
      assert.equal(rig.ntp.threads, 2);
      assert.deepEqual(warnings(rig.lines), []);
    } else {
      assert.equal(rig.ntp.threads, 1, 'one thread where Node cannot share a port');
      const warned = warnings(rig.lines);
      assert.equal(warned.length, 1);
      assert.equal(warned[0]?.msg, DGRAM_ONE_THREAD_WARNING);
      assert.equal(warned[0]?.['threads'], 2);
    }
    await exchangeAll(rig);
    // The same series whichever backend answered.
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_packets_received_total', {}, 16);
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_responses_total', { protocol: 'nts', kind: 'time' }, 8);
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_responses_total', { protocol: 'ntp', kind: 'time' }, 8);
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_nts_cookies_issued_total', { via: 'ntp' }, 16);
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_nts_cookie_decodes_total', { key_age: 'current' }, 8);
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_request_duration_seconds_count', {}, 16);
    await rotateAndCheck(rig);
  } finally {
    await rig.close();
  }
});

test('dgram with threads = 2 and a failing reusePort feature test: one warning naming the key, and one thread answers', async () => {
  const rig = await startRig(2, () => Promise.resolve(false));
  try {
    assert.equal(rig.ntp.threads, 1);
    const warned = warnings(rig.lines);
    assert.equal(warned.length, 1);
    assert.equal(warned[0]?.msg, 'worker-pool.threads: dgram reusePort needs Node >= 22.12; running one NTP thread');
    await exchangeAll(rig);
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_packets_received_total', {}, 16);
    await rotateAndCheck(rig);
  } finally {
    await rig.close();
  }
  assert.equal(warnings(rig.lines).length, 1, 'warned once, not per packet or per fold');
});

test('dgram with threads = 1: no feature test, no warning', async () => {
  let probed = 0;
  const rig = await startRig(1, () => {
    probed++;
    return Promise.resolve(true);
  });
  try {
    assert.equal(probed, 0);
    assert.equal(rig.ntp.threads, 1);
    assert.deepEqual(warnings(rig.lines), []);
    await exchangeAll(rig);
  } finally {
    await rig.close();
  }
});

test('a dead NTP thread is replaced and counted in ntsd_worker_restarts_total', async () => {
  const rig = await startRig(1);
  try {
    await exchangeAll(rig);
    rig.ntp.foldStats();
    assert.equal(await metricSum(rig.metrics, 'ntsd_worker_restarts_total'), 0);
    assert.ok(await rig.ntp.terminateThread(0));
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_worker_restarts_total', {}, 1);
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        await exchangeAll(rig);
        break;
      } catch (error) {
        if (Date.now() > deadline) throw error;
      }
    }
    assert.ok(rig.lines.some((l) => l.msg === 'NTP thread exited; replacing it'));
  } finally {
    await rig.close();
  }
});

test(`the daemon with dgram threads = 2 (Node ${process.versions.node}): the started line reports the NTP threads in use; NTS-KE + NTS work`, { timeout: 30_000 }, async () => {
  const dir = makeTempDir('ntp-listeners');
  const pki = makeTestPki();
  const toml = testConfigToml({ ...(await freePorts()), certPath: pki.chainPath, keyPath: pki.keyPath, threads: 1 }).replace(
    /^threads = 1$/m,
    'threads = 2\ndatapath = "dgram"',
  );
  assert.match(toml, /^datapath = "dgram"$/m);
  const daemon = await startDaemon({ toml, dir });
  try {
    const isFallback = (l: DaemonLogLine): boolean => l['msg'] === DGRAM_ONE_THREAD_WARNING;
    assert.equal(daemon.started['ntpThreads'], runtimeHasReusePort ? 2 : 1);
    assert.equal(daemon.started['datapath'], 'dgram');
    assert.equal(daemon.lines().filter(isFallback).length, runtimeHasReusePort ? 0 : 1);
    const keys = await keyExchange(daemon, pki.caPem);
    for (const cookie of keys.cookies.slice(0, 4)) {
      const outcome = await ntsQuery(keys, cookie, 1);
      assert.ok(outcome.ok, `NTS exchange: ${outcome.ok ? '' : outcome.failure.message}`);
    }
    const at = daemon.metrics;
    assert.ok(at !== undefined);
    await waitForMetrics(at, 'four NTS replies counted', (m) => sumOf(m, 'ntsd_ntp_responses_total') === 4);
    const stopped = await daemon.stop('SIGTERM');
    assert.equal(stopped.exitCode, 0, daemon.stderr());
  } finally {
    await daemon.stop('SIGKILL', 2000);
    removeDir(dir);
    pki.cleanup();
  }
});

test(`datapath = "auto" ${native.ok ? 'with the addon: native threads, kernel timestamps' : 'without the addon: the dgram datapath, and why'}`, async () => {
  const rig = await startRig(1, undefined, 'auto');
  try {
    if (native.ok) {
      assert.equal(rig.ntp.datapath, 'native');
      assert.equal(rig.ntp.threads, 1, 'worker-pool.threads NTP threads');
      assert.equal(await metricSum(rig.metrics, 'ntsd_ntp_datapath_info', { datapath: 'native', timestamps: 'kernel' }), 1);
    } else {
      assert.equal(rig.ntp.datapath, 'dgram');
      assert.ok(rig.lines.some((l) => l.msg === 'native datapath not used; running the dgram datapath' && typeof l['reason'] === 'string'));
      assert.equal(await metricSum(rig.metrics, 'ntsd_ntp_datapath_info', { datapath: 'dgram', timestamps: 'user' }), 1);
    }
    assert.equal(await metricSum(rig.metrics, 'ntsd_ntp_datapath_info'), 1, 'exactly one datapath series');
    await exchangeAll(rig);
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_packets_received_total', {}, 16);
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_responses_total', { protocol: 'nts', kind: 'time' }, 8);
    await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_request_duration_seconds_count', {}, 16);
    await rotateAndCheck(rig);
  } finally {
    await rig.close();
  }
});

test('datapath = "auto" where the addon cannot load: the dgram datapath, with the reason logged once', async () => {
  const rig = await startRig(1, undefined, 'auto', () => UNAVAILABLE);
  try {
    assert.equal(rig.ntp.datapath, 'dgram');
    const notes = rig.lines.filter((l) => l.msg === 'native datapath not used; running the dgram datapath');
    assert.equal(notes.length, 1);
    assert.equal(notes[0]?.['reason'], 'forced off by the test');
    await exchangeAll(rig);
  } finally {
    await rig.close();
  }
});

test('datapath = "native" where the addon cannot load: CONFIG_INVALID naming worker-pool.datapath (exit 78)', async () => {
  await assert.rejects(
    startRig(1, undefined, 'native', () => UNAVAILABLE),
    (error: unknown) => error instanceof NtsdError && error.code === NtsdErrorCode.CONFIG_INVALID && error.message.startsWith('worker-pool.datapath:') && error.message.includes('forced off by the test'),
  );
});

test('datapath = "dgram" never loads the addon', async () => {
  let loads = 0;
  const rig = await startRig(1, undefined, 'dgram', () => {
    loads++;
    return native;
  });
  try {
    assert.equal(loads, 0);
    assert.equal(rig.ntp.datapath, 'dgram');
  } finally {
    await rig.close();
  }
});

/**
 * The backends this runtime has, as (name, threads, datapath). Two threads where they can share a port,
 * so a per-client limit is shown to hold across threads.
 */
const ADMISSION_PATHS: readonly [string, number, Datapath][] = [
  ...(native.ok ? [['2 native threads', 2, 'native'] as [string, number, Datapath]] : []),
  runtimeHasReusePort ? ['2 dgram threads', 2, 'dgram'] : ['1 dgram thread', 1, 'dgram'],
];

const KISS = (reply: Uint8Array): string => (reply[1] === 0 ? String.fromCharCode(...reply.subarray(12, 16)) : 'time');

/** Sends `n` requests round-robin from the rig's 8 client sockets (8 source ports, one address), one at a time; returns what came back. */
async function sendRoundRobin(rig: Rig, n: number, make: () => Uint8Array): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < n; i++) {
    const client = rig.clients[i % rig.clients.length];
    assert.ok(client !== undefined);
    const before = client.replies.length;
    await client.send(make(), rig.port);
    const deadline = Date.now() + 150;
    while (client.replies.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    const reply = client.replies[before];
    seen.push(reply === undefined ? 'none' : KISS(reply));
  }
  return seen;
}

for (const [name, threads, datapath] of ADMISSION_PATHS) {
  test(`${name}: per-client rate limit with chrony semantics — one budget across source ports, KoD RATE for plain NTP (leak), drops for NTS`, async () => {
    const rig = await startRig(threads, undefined, datapath, undefined, {
      'client-rate-limit-interval-s': 60,
      'client-rate-limit-burst': 5,
      'client-rate-limit-leak': 1,
    });
    try {
      // The first token warms the path up (a thread's first packet can take longer than the 150 ms wait below).
      assert.equal(KISS(await rig.clients[0]!.exchange(plainRequest(), rig.port)), 'time');
      const seen = await sendRoundRobin(rig, 20, () => plainRequest());
      // 4 more tokens for 127.0.0.1 whichever of the 8 ports (and threads) a request comes from; of the 16 refused, every 2nd gets a KoD.
      assert.deepEqual(seen.slice(0, 4), ['time', 'time', 'time', 'time'], seen.join(' '));
      assert.equal(seen.filter((k) => k === 'time').length, 4, seen.join(' '));
      assert.equal(seen.filter((k) => k === 'RATE').length, 8, seen.join(' '));
      assert.equal(seen.filter((k) => k === 'none').length, 8, seen.join(' '));
      // NTS over the limit: never a KoD (it could be forged), always a drop.
      const nts = await sendRoundRobin(rig, 6, () => ntsRequest(newSession(rig.keyset), 0).packet);
      assert.deepEqual(nts, ['none', 'none', 'none', 'none', 'none', 'none']);
      await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_responses_total', { protocol: 'ntp', kind: 'kod' }, 8);
      await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_dropped_total', { reason: 'rate_limited' }, 14);
      await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_responses_total', { protocol: 'ntp', kind: 'time' }, 5);
    } finally {
      await rig.close();
    }
  });

  test(`${name}: access lists — deny sends KoD DENY to plain NTP and drops NTS, ignore drops, and a reload (setAdmission) applies at once`, async () => {
    const rig = await startRig(threads, undefined, datapath, undefined, { deny: ['127.0.0.0/8'], allow: ['127.0.0.2'] });
    try {
      assert.deepEqual(await sendRoundRobin(rig, 3, () => plainRequest()), ['DENY', 'DENY', 'DENY']);
      assert.deepEqual(await sendRoundRobin(rig, 2, () => ntsRequest(newSession(rig.keyset), 0).packet), ['none', 'none']);
      const next = configWith(threads, datapath, { ignore: ['127.0.0.1'] });
      rig.ntp.setAdmission(next.servers);
      const deadline = Date.now() + 3000;
      // Threads get the new list with their next loop turn: poll until the first silent drop.
      while ((await sendRoundRobin(rig, 1, () => plainRequest()))[0] !== 'none') assert.ok(Date.now() < deadline, 'ignore not applied within 3 s');
      assert.deepEqual(await sendRoundRobin(rig, 4, () => plainRequest()), ['none', 'none', 'none', 'none']);
      rig.ntp.setAdmission(configWith(threads, datapath).servers);
      const open = Date.now() + 3000;
      while ((await sendRoundRobin(rig, 1, () => plainRequest()))[0] !== 'time') assert.ok(Date.now() < open, 'allow-all not applied within 3 s');
      await exchangeAll(rig);
      await waitForMetric(rig.ntp, rig.metrics, 'ntsd_ntp_responses_total', { protocol: 'ntp', kind: 'kod' }, 3);
      rig.ntp.foldStats();
      assert.ok((await metricSum(rig.metrics, 'ntsd_ntp_dropped_total', { reason: 'access_denied' })) >= 6);
    } finally {
      await rig.close();
    }
  });
}

test('the daemon: a [[server]] deny list answers plain NTP with KoD DENY, and SIGHUP with the list removed serves time again', { timeout: 30_000 }, async () => {
  const dir = makeTempDir('ntp-access');
  const pki = makeTestPki();
  const base = testConfigToml({ ...(await freePorts()), certPath: pki.chainPath, keyPath: pki.keyPath, threads: 1 });
  const withDeny = base.replace(/^(listen = "127\.0\.0\.1:\d+")$/m, '$1\ndeny = ["127.0.0.0/8"]');
  assert.notEqual(withDeny, base);
  const daemon = await startDaemon({ toml: withDeny, dir });
  const client = await openTestClient();
  try {
    const port = daemon.ntp[0]?.port ?? 0;
    const kind = async (): Promise<string> => {
      try {
        return KISS(await client.exchange(plainRequest(), port, 500));
      } catch {
        return 'none';
      }
    };
    assert.equal(await kind(), 'DENY');
    writeFileSync(daemon.configPath, base);
    const from = daemon.lines().length;
    daemon.signal('SIGHUP');
    await daemon.waitForLine((l) => l['msg'] === 'reload', 10_000, from);
    const deadline = Date.now() + 5000;
    let now = await kind();
    while (now !== 'time' && Date.now() < deadline) now = await kind();
    assert.equal(now, 'time', 'the access list change applied without a restart');
    assert.ok(!daemon.lines().slice(from).some((l) => l['msg']?.toString().startsWith('reload: some changes need a restart') === true), 'no restart warning for an access list change');
  } finally {
    await client.close();
    await daemon.stop('SIGKILL', 2000);
    removeDir(dir);
    pki.cleanup();
  }
});
