/**
 * End-to-end tests of the whole daemon as an operator sees it: the real CLI (`main.js run -c FILE`) in a
 * child process, real TLS/UDP on 127.0.0.1, signals, the key storage file and /metrics
 * (OPERATIONS.md "Signals and lifecycle", "Key storage", "Metrics").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { getJavaScriptAead } from '../src/core/crypto/aead.js';
import { decodeKeyset } from '../src/core/nts/keyset.js';
import { makeTestPki, type TestPki } from './helpers/certs.js';
import {
  delay,
  freePorts,
  keyExchange,
  makeTempDir,
  ntsQuery,
  removeDir,
  repoRoot,
  sample,
  scrapeMetrics,
  startDaemon,
  sumOf,
  testConfigToml,
  waitForMetrics,
  type LogLine,
  type RunningDaemon,
  type TestConfigOptions,
} from './helpers/daemon.js';

/** Per test: a temp dir, a PKI and the daemons started in it, all removed in t.after. */
async function setup(t: { after(fn: () => Promise<void> | void): void }, extra: Partial<TestConfigOptions> = {}) {
  const dir = makeTempDir('daemon');
  const pki: TestPki = makeTestPki();
  const daemons: RunningDaemon[] = [];
  t.after(async () => {
    for (const d of daemons) await d.stop('SIGKILL', 2000);
    removeDir(dir);
    pki.cleanup();
  });
  const ports = await freePorts();
  const options: TestConfigOptions = { ...ports, certPath: pki.chainPath, keyPath: pki.keyPath, ...extra };
  const start = async (toml = testConfigToml(options)): Promise<RunningDaemon> => {
    const d = await startDaemon({ toml, dir });
    daemons.push(d);
    return d;
  };
  return { dir, pki, options, start };
}

const isMsg = (msg: string) => (l: LogLine): boolean => l['msg'] === msg;

test('restart on the same key storage file keeps old cookies valid; the file is 0600 in a 0700 directory', { timeout: 40_000 }, async (t) => {
  const { dir, pki, start } = await setup(t, { keyStoragePath: 'state/ntsd.keys' });
  const first = await start();
  const keys = await keyExchange(first, pki.caPem);
  assert.equal(keys.cookies.length, 8, 'RFC 8915 §4.1.6: eight cookies');
  const before = await ntsQuery(keys, keys.cookies[0] ?? new Uint8Array(0));
  assert.ok(before.ok, `baseline NTS exchange: ${before.ok ? '' : before.failure.message}`);

  const stopped = await first.stop('SIGTERM');
  assert.equal(stopped.exitCode, 0, `exit code after SIGTERM\n${first.stderr()}`);
  assert.ok(stopped.durationMs < 5000, `SIGTERM took ${stopped.durationMs.toFixed(0)} ms`);
  assert.ok(first.lines().some(isMsg('stopped')), 'logs "stopped" before exiting');

  const keyFile = join(dir, 'state', 'ntsd.keys');
  assert.equal(statSync(keyFile).mode & 0o777, 0o600, 'key storage file mode');
  assert.equal(statSync(join(dir, 'state')).mode & 0o777, 0o700, 'key storage directory mode');
  const bytesBefore = readFileSync(keyFile);

  const second = await start();
  assert.ok(!second.lines().some(isMsg('created a new keyset')), 'the second run must load the keyset, not make a new one');
  for (const cookie of keys.cookies.slice(1, 4)) {
    const outcome = await ntsQuery(keys, cookie, 1);
    assert.ok(outcome.ok, `old cookie after restart must give an authenticated reply, got ${outcome.ok ? '' : `${outcome.failure.kind}: ${outcome.failure.message}`}`);
    assert.equal(outcome.result.header.stratum, 2);
    assert.equal(outcome.result.cookies.length, 2, 'one new cookie plus one per placeholder (RFC 8915 §5.7)');
    // A cookie minted by the new process opens too (same keys).
    const again = await ntsQuery(keys, outcome.result.cookies[0] ?? new Uint8Array(0));
    assert.ok(again.ok, 'cookie minted after the restart');
  }
  const stoppedAgain = await second.stop('SIGTERM');
  assert.equal(stoppedAgain.exitCode, 0);
  // The same keys are current after the restart (a restart is not a rotation).
  const decodedBefore = decodeKeyset(bytesBefore);
  const decodedAfter = decodeKeyset(readFileSync(keyFile));
  assert.ok(decodedBefore.ok && decodedAfter.ok);
  assert.equal(decodedAfter.keyset.current.id, decodedBefore.keyset.current.id);
});

/** Opens `n` TCP connections to the KE port that never say anything. */
async function stalledConnections(port: number, n: number): Promise<Socket[]> {
  const sockets = await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<Socket>((resolve, reject) => {
        const s = netConnect({ host: '127.0.0.1', port }, () => resolve(s));
        s.on('error', reject);
      }),
    ),
  );
  for (const s of sockets) {
    s.removeAllListeners('error');
    s.on('error', () => undefined);
  }
  return sockets;
}

/** One TLS client that completes the handshake and then stalls (sends no request). */
function stalledTlsSession(port: number, caPem: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost', ALPNProtocols: ['ntske/1'] }, () => resolve(s));
    s.on('error', reject);
  });
}

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  test(`${sig} with NTS-KE clients stalled mid-session still exits 0 within 5 s`, { timeout: 30_000 }, async (t) => {
    const { pki, start } = await setup(t);
    const d = await start();
    const ke = d.ntsKe[0];
    assert.ok(ke !== undefined);
    const stalled = await stalledConnections(ke.port, 10);
    const tlsStalled = await stalledTlsSession(ke.port, pki.caPem);
    tlsStalled.on('error', () => undefined);
    t.after(() => {
      for (const s of [...stalled, tlsStalled]) s.destroy();
    });
    await delay(100);
    const result = await d.stop(sig);
    assert.equal(result.exitCode, 0, `exit code after ${sig}\n${d.stderr()}`);
    assert.ok(result.durationMs < 5500, `${sig} took ${result.durationMs.toFixed(0)} ms`);
    const signalLine = d.lines().find(isMsg('signal received'));
    assert.equal(signalLine?.['signal'], sig);
  });
}

test('SIGHUP: new certificate pair applied, mismatched pair refused and counted, log level applied, listen change warned', { timeout: 60_000 }, async (t) => {
  const { pki, options, start } = await setup(t);
  const d = await start();
  const metricsAt = d.metrics;
  assert.ok(metricsAt !== undefined);
  const fingerprint = async (): Promise<string> => (await keyExchange(d, pki.caPem)).certificate.fingerprint256;
  const oldFingerprint = new X509Certificate(pki.certPem).fingerprint256;
  assert.equal(await fingerprint(), oldFingerprint);

  const hup = async (): Promise<LogLine> => {
    const from = d.lines().length;
    d.signal('SIGHUP');
    return d.waitForLine(isMsg('reload'), 10_000, from);
  };

  // 1. A new valid leaf from the same CA: new handshakes see it.
  const leaf2 = pki.issueLeaf();
  writeFileSync(options.certPath, leaf2.certPem + pki.caPem);
  writeFileSync(options.keyPath, leaf2.keyPem);
  await hup();
  const newFingerprint = new X509Certificate(leaf2.certPem).fingerprint256;
  assert.notEqual(newFingerprint, oldFingerprint);
  assert.equal(await fingerprint(), newFingerprint, 'handshake after SIGHUP presents the new certificate');
  await waitForMetrics(metricsAt, 'tls reload success', (s) => sample(s, 'ntsd_tls_reloads_total{result="success"}') === 1);

  // 2. A certificate with someone else's key: refused, old pair kept, failure counted.
  const leaf3 = pki.issueLeaf();
  writeFileSync(options.certPath, leaf3.certPem + pki.caPem);
  writeFileSync(options.keyPath, leaf2.keyPem);
  await hup();
  assert.equal(await fingerprint(), newFingerprint, 'a mismatched pair must not replace the running one');
  const afterBad = await waitForMetrics(metricsAt, 'tls reload failure', (s) => sample(s, 'ntsd_tls_reloads_total{result="failure"}') >= 1);
  assert.equal(sample(afterBad, 'ntsd_tls_reloads_total{result="success"}'), 1);
  // Put the good pair back so later reloads are clean.
  writeFileSync(options.certPath, leaf2.certPem + pki.caPem);

  // 3. log-level = "debug" in the file: applied at runtime.
  writeFileSync(d.configPath, testConfigToml({ ...options, logLevel: 'debug' }));
  const reloadLine = await hup();
  assert.equal(reloadLine['logLevel'], 'debug', `reload line: ${JSON.stringify(reloadLine)}`);
  assert.ok(!d.lines().some((l) => l['level'] === 'warn' && String(l['msg']).includes('restart')), 'a log-level change needs no restart warning');

  // 4. A changed listen address: warned about, not applied; the daemon keeps serving on the old ports.
  const from = d.lines().length;
  writeFileSync(d.configPath, testConfigToml({ ...options, logLevel: 'debug', ntpPort: options.ntpPort === 65000 ? 65001 : 65000 }));
  await hup();
  const warning = d.lines().slice(from).find((l) => l['level'] === 'warn' && String(l['msg']).includes('restart'));
  assert.ok(warning !== undefined, `expected a restart warning, got ${JSON.stringify(d.lines().slice(from))}`);
  assert.ok(Array.isArray(warning['settings']) && warning['settings'].includes('server[0].listen'), `warning names the key: ${JSON.stringify(warning)}`);
  const keys = await keyExchange(d, pki.caPem);
  assert.equal(keys.ntpPort, options.ntpPort, 'still advertises the running NTP port');
  const exchange = await ntsQuery(keys, keys.cookies[0] ?? new Uint8Array(0));
  assert.ok(exchange.ok, 'still answers NTS after a refused listen change');
  assert.ok(d.running());

  const stopped = await d.stop();
  assert.equal(stopped.exitCode, 0);
});

/** Metric names OPERATIONS.md "Metrics" lists (histograms by base name), plus prom-client's defaults. */
const DOCUMENTED_METRICS = [
  'ntsd_ntp_packets_received_total',
  'ntsd_ntp_responses_total',
  'ntsd_ntp_dropped_total',
  'ntsd_nts_nak_total',
  'ntsd_nts_cookie_decodes_total',
  'ntsd_nts_cookies_issued_total',
  'ntsd_ntp_request_duration_seconds',
  'ntsd_ke_connections_accepted_total',
  'ntsd_ke_connections_rejected_total',
  'ntsd_ke_sessions_total',
  'ntsd_ke_session_duration_seconds',
  'ntsd_ke_active_connections',
  'ntsd_keyset_rotations_total',
  'ntsd_keyset_current_key_created_timestamp_seconds',
  'ntsd_keyset_keys',
  'ntsd_keyset_persist_failures_total',
  'ntsd_tls_certificate_expiry_timestamp_seconds',
  'ntsd_tls_reloads_total',
  'ntsd_worker_restarts_total',
  'ntsd_build_info',
  'ntsd_ke_aead_negotiated_total',
  'nodejs_eventloop_lag_seconds',
  'process_cpu_user_seconds_total',
];

/**
 * Named in OPERATIONS.md but retired on purpose: the worker queue these measured is gone (every NTP thread
 * answers inline; project issue 15).
 */
const RETIRED_METRICS: ReadonlySet<string> = new Set(['ntsd_worker_queue_depth', 'ntsd_worker_queue_rejected_total']);

/** `ntsd_*` names in OPERATIONS.md when the shared docs sit beside the repository (the CI layout). */
function metricsNamedInOperationsDoc(): string[] {
  for (const path of [join(repoRoot(), '..', 'shared', 'OPERATIONS.md'), join(process.cwd(), '..', 'shared', 'OPERATIONS.md')]) {
    if (!existsSync(path)) continue;
    const text = readFileSync(path, 'utf8');
    const section = text.slice(text.indexOf('## Metrics'));
    const end = section.indexOf('\n## ', 4);
    return [...new Set([...(end > 0 ? section.slice(0, end) : section).matchAll(/`(ntsd_[a-z0-9_]+)/g)].map((m) => m[1] ?? ''))];
  }
  return [];
}

/** Sends one UDP datagram to `port` and resolves with the first reply, or undefined after `waitMs`. */
function udpOnce(port: number, datagram: Uint8Array, waitMs = 500): Promise<Uint8Array | undefined> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, waitMs);
    s.on('message', (msg) => {
      clearTimeout(timer);
      s.close();
      resolve(new Uint8Array(msg));
    });
    s.send(datagram, port, '127.0.0.1');
  });
}

test('metrics: every documented metric is exposed and counters move with KE, NTS, NAK and dropped traffic', { timeout: 40_000 }, async (t) => {
  const { pki, options, start } = await setup(t);
  const d = await start();
  const at = d.metrics;
  assert.ok(at !== undefined);

  const keys = await keyExchange(d, pki.caPem);
  const [c0, c1, c2, c3] = keys.cookies;
  assert.ok(c0 !== undefined && c1 !== undefined && c2 !== undefined && c3 !== undefined);
  for (const cookie of [c0, c1]) {
    const ok = await ntsQuery(keys, cookie, 2);
    assert.ok(ok.ok, 'NTS exchange');
  }
  // A cookie whose sealed part was tampered with: NAK, cookie_decrypt_failed (RFC 8915 §5.7).
  const tampered = c2.slice();
  tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 0x01;
  const nak = await ntsQuery(keys, tampered);
  assert.ok(!nak.ok && nak.failure.kind === 'nts_nak', `tampered cookie must be NAKed, got ${JSON.stringify(nak.ok ? 'ok' : nak.failure)}`);
  // A cookie with an unknown key id: NAK, cookie_unknown_key.
  const unknownKey = c3.slice();
  unknownKey[0] = (unknownKey[0] ?? 0) ^ 0xff;
  const nak2 = await ntsQuery(keys, unknownKey);
  assert.ok(!nak2.ok && nak2.failure.kind === 'nts_nak');
  // A datagram shorter than an NTP header: dropped as malformed, no reply.
  assert.equal(await udpOnce(options.ntpPort, new Uint8Array(10), 300), undefined);
  // A plain NTPv4 client request: a plain time reply.
  const plain = new Uint8Array(48);
  plain[0] = (4 << 3) | 3;
  const plainReply = await udpOnce(options.ntpPort, plain);
  assert.equal(plainReply?.length, 48);

  // The KE thread and the NTP threads report their tallies about once a second: wait until all landed.
  const s = await waitForMetrics(
    at,
    'counters after traffic',
    (m) =>
      sample(m, 'ntsd_ntp_packets_received_total') >= 6 &&
      sample(m, 'ntsd_ntp_dropped_total{reason="malformed"}') >= 1 &&
      sample(m, 'ntsd_ntp_request_duration_seconds_count') >= 5 &&
      sample(m, 'ntsd_ke_sessions_total{outcome="success"}') >= 1 &&
      sample(m, 'ntsd_ke_session_duration_seconds_count') >= 1,
    8000,
  );
  const text = [...s.keys()];
  const names = new Set(text.map((series) => series.replace(/\{.*$/, '').replace(/_(bucket|sum|count)$/, '')));
  const expected = [...new Set([...DOCUMENTED_METRICS, ...metricsNamedInOperationsDoc()])].filter((n) => !RETIRED_METRICS.has(n));
  const missing = expected.filter((n) => !names.has(n));
  assert.deepEqual(missing, [], 'metrics named in OPERATIONS.md but not exposed');

  assert.equal(sample(s, 'ntsd_ke_sessions_total{outcome="success"}'), 1);
  assert.equal(sample(s, 'ntsd_ke_connections_accepted_total'), 1);
  assert.equal(sample(s, 'ntsd_nts_cookies_issued_total{via="ke"}'), 8);
  assert.equal(sample(s, `ntsd_ke_aead_negotiated_total{aead="${getJavaScriptAead(keys.aeadId)?.name ?? ''}"}`), 1, `AEAD ${keys.aeadId}`);
  assert.equal(sumOf(s, 'ntsd_ke_aead_negotiated_total'), 1);
  assert.equal(sample(s, 'ntsd_ntp_packets_received_total'), 6);
  assert.equal(sample(s, 'ntsd_ntp_responses_total{protocol="nts",kind="time"}'), 2);
  assert.equal(sample(s, 'ntsd_ntp_responses_total{protocol="nts",kind="nts_nak"}'), 2);
  assert.equal(sample(s, 'ntsd_ntp_responses_total{protocol="ntp",kind="time"}'), 1);
  assert.equal(sample(s, 'ntsd_nts_nak_total{reason="cookie_decrypt_failed"}'), 1);
  assert.equal(sample(s, 'ntsd_nts_nak_total{reason="cookie_unknown_key"}'), 1);
  assert.equal(sample(s, 'ntsd_ntp_dropped_total{reason="malformed"}'), 1);
  assert.equal(sample(s, 'ntsd_nts_cookie_decodes_total{key_age="current"}'), 2, 'two cookies opened with the current key');
  assert.equal(sample(s, 'ntsd_nts_cookies_issued_total{via="ntp"}'), 6, '1 + 2 placeholders, twice');
  assert.equal(sample(s, 'ntsd_ntp_request_duration_seconds_count'), 5, 'one observation per reply sent');
  assert.equal(sumOf(s, 'ntsd_ntp_responses_total') + sumOf(s, 'ntsd_ntp_dropped_total'), sample(s, 'ntsd_ntp_packets_received_total'), 'every packet is a response or a drop');
  assert.ok(sample(s, 'ntsd_ke_session_duration_seconds_count') >= 1);
  assert.equal(sample(s, 'ntsd_keyset_keys'), 2, 'current + next on a fresh keyset');
  assert.ok(sample(s, 'ntsd_tls_certificate_expiry_timestamp_seconds{name="localhost"}') > Date.now() / 1000);
  assert.ok(Math.abs(sample(s, 'ntsd_keyset_current_key_created_timestamp_seconds') - Date.now() / 1000) < 600);
  // Labelled counters start at zero for every label value (OPERATIONS.md "Metrics").
  for (const series of [
    'ntsd_ntp_dropped_total{reason="truncated"}',
    'ntsd_ntp_dropped_total{reason="rate_limited"}',
    'ntsd_ke_sessions_total{outcome="no_common_aead"}',
    'ntsd_ke_connections_rejected_total{reason="connection_limit"}',
    'ntsd_nts_cookie_decodes_total{key_age="stale1"}',
  ]) {
    assert.ok(s.has(series), `${series} initialised`);
  }
  // The exposition never carries a client address.
  const raw = await scrapeMetrics(at);
  assert.ok(![...raw.keys()].some((k) => k.includes('127.0.0.1')), 'no client address in label values');
});
