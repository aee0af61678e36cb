/**
 * `ntsd status` against live daemons (the real CLI, real metrics endpoints), plus the report rules on pages
 * rendered by ntsd's own metrics registry: exit 0 healthy, 1 warning, 2 down, 64 usage; --json = the same data.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import {
  freePorts,
  freeTcpPort,
  makeTempDir,
  removeDir,
  runCli,
  startDaemon,
  testConfigToml,
  waitForMetrics,
  sample,
  type RunningDaemon,
  type TestConfigOptions,
} from '../helpers/daemon.js';
import { sendMixedTraffic } from '../helpers/traffic.js';
import { createMetrics } from '../../src/obs/metrics.js';
import { parsePromText, type PromPage } from '../../src/cli/prom-text.js';
import { buildStatusReport, formatDurationS, formatSeconds, formatStatusReport, type StatusReport } from '../../src/cli/status.js';

async function setup(t: { after(fn: () => Promise<void> | void): void }) {
  const dir = makeTempDir('status');
  const pki: TestPki = makeTestPki();
  const daemons: RunningDaemon[] = [];
  t.after(async () => {
    for (const d of daemons) await d.stop('SIGTERM', 3000);
    removeDir(dir);
    pki.cleanup();
  });
  const start = async (extra: Partial<TestConfigOptions> = {}, edit: (toml: string) => string = (x) => x): Promise<RunningDaemon> => {
    const ports = await freePorts();
    const sub = makeTempDir('status-d');
    t.after(() => removeDir(sub));
    const d = await startDaemon({ toml: edit(testConfigToml({ ...ports, certPath: pki.chainPath, keyPath: pki.keyPath, ...extra })), dir: sub });
    daemons.push(d);
    return d;
  };
  return { dir, pki, start };
}

function metricsUrl(d: RunningDaemon): string {
  assert.ok(d.metrics !== undefined);
  return `http://127.0.0.1:${d.metrics.port}/metrics`;
}

function parseJsonReport(stdout: string): StatusReport & { exitCode: number } {
  return JSON.parse(stdout) as StatusReport & { exitCode: number };
}

test('healthy ntsd under traffic: exit 0, every section filled, rates over the interval, JSON = text', { timeout: 60_000 }, async (t) => {
  const { pki, start } = await setup(t);
  const d = await start();
  const tally = await sendMixedTraffic(d, { caPem: pki.caPem, rounds: 4, pauseMs: 100 });
  assert.ok(d.metrics !== undefined);
  await waitForMetrics(d.metrics, 'the traffic in the counters', (m) => sample(m, 'ntsd_ke_sessions_total{outcome="success"}') >= tally.keSessions && sample(m, 'ntsd_nts_nak_total{reason="cookie_decrypt_failed"}') >= 1, 8000);

  // Traffic during the interval, so the rates are above zero.
  const during = sendMixedTraffic(d, { caPem: pki.caPem, rounds: 16, pauseMs: 150 }); // outlasts the 2 s interval
  const json = await runCli(['status', '--metrics', metricsUrl(d), '--interval', '2', '--json']);
  await during;
  assert.equal(json.code, 0, json.stdout + json.stderr);
  const r = parseJsonReport(json.stdout);
  assert.equal(r.health, 'ok');
  assert.equal(r.exitCode, 0);
  assert.deepEqual(r.problems, []);
  assert.ok(r.intervalS !== null && r.intervalS >= 1.9 && r.intervalS < 10, `interval ${String(r.intervalS)}`);
  assert.ok(r.server !== null && r.server.version !== null && r.server.node === process.versions.node);
  assert.ok((r.server.uptimeS ?? -1) >= 0);
  assert.ok(r.ntp !== null && r.ke !== null && r.keys !== null && r.timeSource !== null && r.threads !== null);
  assert.ok(r.ntp.received.total >= tally.ntsOk + tally.naks + tally.plainReplies);
  assert.ok((r.ntp.received.perS ?? 0) > 0, 'packets arrived during the interval');
  assert.ok((r.ntp.responses['nts/time']?.total ?? 0) >= tally.ntsOk);
  assert.ok((r.ntp.responses['ntp/time']?.total ?? 0) >= tally.plainReplies);
  assert.ok((r.ntp.naksByReason['cookie_decrypt_failed']?.total ?? 0) >= 1);
  assert.ok((r.ntp.naksByReason['cookie_unknown_key']?.total ?? 0) >= 1);
  assert.equal(r.ntp.naks.total, Object.values(r.ntp.naksByReason).reduce((n, c) => n + c.total, 0));
  assert.ok((r.ntp.droppedByReason['malformed']?.total ?? 0) >= 1);
  assert.ok((r.ntp.cookiesIssuedVia['ke']?.total ?? 0) >= 8 * tally.keSessions);
  assert.ok(r.ntp.requestDuration !== null && r.ntp.requestDuration.meanS > 0 && r.ntp.requestDuration.meanS < 1);
  assert.ok((r.ke.sessionsByOutcome['success']?.total ?? 0) >= tally.keSessions);
  const agreed = Object.values(r.ke.aeadsNegotiated).reduce((n, c) => n + c.total, 0);
  assert.ok(agreed >= tally.keSessions, `AEAD agreed in ${agreed} responses, ${tally.keSessions} KE sessions`);
  assert.ok(r.ke.accepted.total >= tally.keSessions);
  assert.ok(r.ke.sessionDuration !== null);
  assert.ok(r.certificate !== null && r.certificate.expiresInS > 800 * 86400, 'the test leaf lives 825 days');
  assert.ok(r.keys.keysHeld !== null && r.keys.keysHeld >= 2);
  assert.ok(r.keys.currentKeyAgeS !== null && r.keys.currentKeyAgeS >= 0 && r.keys.currentKeyAgeS < 3600);
  assert.deepEqual(r.timeSource, { synchronised: true, stratum: 2, rootDistanceS: r.timeSource.rootDistanceS });
  assert.equal(r.keys.mode, 'local');
  // The key id is the one `keyset inspect` reads from the key storage file.
  const inspect = await runCli(['keyset', 'inspect', '-c', d.configPath], { cwd: d.dir });
  assert.equal(inspect.code, 0, inspect.stderr);
  assert.match(inspect.stdout, new RegExp(`^current +${r.keys.currentKeyId ?? 'missing'} `, 'm'));
  assert.equal(r.threads.ntpRestarts.total, 0);
  assert.equal(r.threads.keRestarts.total, 0);

  const text = await runCli(['status', '--metrics', metricsUrl(d), '--interval', '0.2']);
  assert.equal(text.code, 0, text.stdout + text.stderr);
  const out = text.stdout;
  for (const want of [/^ntsd \S+ on Node\.js \S+, up \S+, at http:/m, /^health: OK$/m, /^  packets received +\d+ +[\d.]+$/m, /^  replies nts\/time +\d+/m,
    /^  NTS NAKs +\d+ .*\n    cookie_\w+ +\d+/m, /^  sessions: success +\d+/m, /^  agreed AES_\w+ +\d+/m, /^certificate +\S+: expires \d{4}-\d\d-\d\dT/m, /^keys +current key [0-9a-f]{8} created .*; mode local$/m,
    /^time source +synchronised, stratum 2,/m, /^threads +restarts: NTP 0 \(.*\/s\), NTS-KE 0 \(.*\/s\)$/m, /^datapath +/m]) {
    assert.match(out, want);
  }
});

test('down: nothing listening, HTTP errors and a page that is not ntsd exit 2', { timeout: 30_000 }, async () => {
  const closed = await freeTcpPort();
  const r = await runCli(['status', '--metrics', `http://127.0.0.1:${closed}/metrics`, '--interval', '0']);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stdout, /DOWN/);
  assert.match(r.stdout, /cannot read http:\/\/127\.0\.0\.1:\d+\/metrics/);
  const j = await runCli(['status', '--metrics', `http://127.0.0.1:${closed}/metrics`, '--json']);
  assert.equal(j.code, 2);
  assert.equal(parseJsonReport(j.stdout).health, 'down');

  const server = createServer((req, res) => {
    if (req.url === '/metrics') res.writeHead(200).end('some_other_exporter 1\n');
    else if (req.url === '/broken') res.writeHead(200).end('<html>not metrics</html>\n');
    else res.writeHead(404).end('nope');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const address = server.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    const other = await runCli(['status', '--metrics', `http://127.0.0.1:${port}/metrics`, '--interval', '0']);
    assert.equal(other.code, 2);
    assert.match(other.stdout, /not with ntsd metrics/);
    const missing = await runCli(['status', '--metrics', `http://127.0.0.1:${port}/nothing`, '--interval', '0']);
    assert.equal(missing.code, 2);
    assert.match(missing.stdout, /answered HTTP 404/);
    const broken = await runCli(['status', '--metrics', `http://127.0.0.1:${port}/broken`, '--interval', '0']);
    assert.equal(broken.code, 2);
    assert.match(broken.stdout, /is not Prometheus text: line 1/);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('warning: a certificate expiring within 7 days and an unsynchronised time source exit 1, each named', { timeout: 40_000 }, async (t) => {
  const { pki, start } = await setup(t);
  const leaf = pki.issueLeaf(['localhost', '127.0.0.1', '::1'], 3);
  const dir = makeTempDir('status-leaf');
  t.after(() => removeDir(dir));
  writeFileSync(join(dir, 'leaf.pem'), leaf.certPem + pki.caPem);
  writeFileSync(join(dir, 'leaf.key'), leaf.keyPem, { mode: 0o600 });
  const d = await start({ certPath: join(dir, 'leaf.pem'), keyPath: join(dir, 'leaf.key') }, (toml) => toml.replace('local-stratum = 2', 'local-stratum = 16'));
  const r = await runCli(['status', '--metrics', metricsUrl(d), '--interval', '0']);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /^health: WARNING \(2 problems\)$/m);
  assert.match(r.stdout, /certificate expires within 7 days/);
  assert.match(r.stdout, /unsynchronised/);
  assert.match(r.stdout, /^time source +UNSYNCHRONISED, stratum 16/m);
  const j = parseJsonReport((await runCli(['status', '--metrics', metricsUrl(d), '--interval', '0', '--json'])).stdout);
  assert.equal(j.health, 'warning');
  assert.equal(j.exitCode, 1);
  assert.ok(j.certificate !== null && j.certificate.expiresInS > 2 * 86400 && j.certificate.expiresInS < 3 * 86400);
  assert.equal(j.timeSource?.synchronised, false);
});

test('-c FILE reads metrics-listen from the configuration; usage errors exit 64', { timeout: 30_000 }, async (t) => {
  const { start } = await setup(t);
  const d = await start();
  assert.ok(d.metrics !== undefined);
  const original = readFileSync(d.configPath, 'utf8');
  assert.ok(original.includes('metrics-listen = "127.0.0.1:0"'));
  const config = join(d.dir, 'status.toml');
  writeFileSync(config, original.replace('metrics-listen = "127.0.0.1:0"', `metrics-listen = "0.0.0.0:${d.metrics.port}"`));
  const r = await runCli(['status', '-c', config, '--interval', '0']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, new RegExp(`at http://127\\.0\\.0\\.1:${d.metrics.port}/metrics`));
  for (const args of [['--interval', 'soon'], ['--metrics', 'ftp://x'], ['extra'], ['--bogus'], ['--metrics', 'http://a', '-c', config]]) {
    const bad = await runCli(['status', ...args]);
    assert.equal(bad.code, 64, `${args.join(' ')}: ${bad.stderr}`);
    assert.match(bad.stderr, /usage: ntsd status/);
  }
  const off = join(d.dir, 'off.toml');
  writeFileSync(off, original.replace('metrics-listen = "127.0.0.1:0"', 'metrics-listen = ""'));
  const offRun = await runCli(['status', '-c', off]);
  assert.equal(offRun.code, 64);
  assert.match(offRun.stderr, /metrics are off/);
});

// ---------------------------------------------------------------------------------------------------------
// Report rules on pages from ntsd's own registry.

async function page(metrics: ReturnType<typeof createMetrics>): Promise<PromPage> {
  const parsed = parsePromText(await metrics.registry.metrics());
  assert.ok(parsed.ok);
  return parsed.page;
}

test('report rules: worker restarts warn, an expired certificate is down, rates and histograms', async () => {
  const m = createMetrics({ version: 'test', defaultMetrics: true });
  const nowS = 1_800_000_000;
  m.keys.setCertificateExpiries(new Map([['nts.example.org', nowS + 30 * 86400]]));
  m.keys.setKeyset(nowS - 3600, 9, 0x1a2b3c4d);
  m.timeSource.set({ leap: 0, stratum: 2, rootDelay: 0, rootDispersion: 655, precision: -20, referenceId: 0, referenceTime: { seconds: 0, fraction: 0 } });
  m.ntp.addReceived(100);
  m.ntp.addRequestDurations([0, 0, 90, 10], 0.0025);
  const before = await page(m);
  m.ntp.addReceived(50);
  m.ntp.addRequestDurations([0, 0, 0, 10], 0.0004);
  const healthy = buildStatusReport('u', await page(m), before, 2, nowS);
  assert.equal(healthy.health, 'ok', healthy.problems.join('; '));
  assert.deepEqual(healthy.ntp?.received, { total: 150, perS: 25 });
  // Over the interval only: 10 requests in the 50 µs bucket, mean 40 µs.
  const d = healthy.ntp?.requestDuration;
  assert.ok(d !== null && d !== undefined);
  assert.deepEqual({ ...d, meanS: Math.round(d.meanS * 1e9) / 1e9 }, { over: 'interval', count: 10, meanS: 0.00004, p99AtMostS: 0.00005 });
  assert.equal(healthy.keys?.currentKeyAgeS, 3600);
  assert.equal(healthy.certificate?.expiresInS, 30 * 86400);
  assert.equal(healthy.keys?.currentKeyId, '1a2b3c4d');
  assert.equal(healthy.datapath, null);
  assert.ok(formatStatusReport(healthy).some((l) => /^datapath +not reported by this ntsd$/.test(l)));

  m.ntpThreads.addRestarts(1);
  const saturated = buildStatusReport('u', await page(m), before, 2, nowS);
  assert.equal(saturated.health, 'warning');
  assert.ok(saturated.problems.some((p) => /restarted/.test(p)));
  // With a single scrape there is no interval, so nothing can be said about restarts: still ok.
  assert.equal(buildStatusReport('u', await page(m), undefined, null, nowS).health, 'ok');

  m.keys.setCertificateExpiries(new Map([['nts.example.org', nowS - 60]]));
  const expired = buildStatusReport('u', await page(m), undefined, null, nowS);
  assert.equal(expired.health, 'down');
  assert.ok(expired.problems.some((p) => /expired at/.test(p)));

  // No NTS-KE listener: the expiry gauge stays 0, which is "none", not "expired in 1970".
  const ntpOnly = createMetrics({ version: 'test', defaultMetrics: false });
  const r = buildStatusReport('u', await page(ntpOnly), undefined, null, nowS);
  assert.equal(r.certificate, null);
  assert.equal(r.keys?.currentKeyCreated, null);
  assert.equal(r.keys?.currentKeyId, null, 'no keyset yet: no key id');
  assert.ok(formatStatusReport(r).some((l) => /none reported/.test(l)));
});

test('datapath info and a key id are shown when the daemon exports them; a counter reset has no rate', () => {
  const text = (received: number): string =>
    [
      'ntsd_build_info{version="9.9.9",node="24.0.0"} 1',
      'ntsd_ntp_datapath_info{datapath="batched",timestamps="kernel"} 1',
      'ntsd_keyset_current_key_id 439041101',
      'ntsd_keyset_current_key_created_timestamp_seconds 1799990000',
      `ntsd_ntp_packets_received_total ${received}`,
      '',
    ].join('\n');
  const parse = (t: string): PromPage => {
    const p = parsePromText(t);
    assert.ok(p.ok);
    return p.page;
  };
  const r = buildStatusReport('u', parse(text(3)), parse(text(10)), 1, 1_800_000_000);
  assert.deepEqual(r.datapath, [{ datapath: 'batched', timestamps: 'kernel' }]);
  assert.equal(r.keys?.currentKeyId, '1a2b3c4d');
  assert.deepEqual(r.ntp?.received, { total: 3, perS: null });
  const lines = formatStatusReport(r);
  assert.ok(lines.some((l) => /^datapath +datapath=batched timestamps=kernel$/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /^keys +current key 1a2b3c4d /.test(l)));
});

test('number formatting', () => {
  assert.equal(formatDurationS(59), '59s');
  assert.equal(formatDurationS(61), '1m1s');
  assert.equal(formatDurationS(7300), '2h1m');
  assert.equal(formatDurationS(90000), '1d1h');
  assert.equal(formatSeconds(0.0000452), '45.2 µs');
  assert.equal(formatSeconds(0.0123), '12.3 ms');
  assert.equal(formatSeconds(2), '2 s');
  assert.equal(formatSeconds(Number.POSITIVE_INFINITY), '+Inf');
});
