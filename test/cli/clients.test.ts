/**
 * `ntsd clients` and the client log end to end: the real daemon with two NTP threads and two KE threads,
 * traffic from many loopback source addresses (127.0.0.2 .. 127.0.0.42 and ::1), exact per-client counts
 * in GET /clients, the command's table and JSON, the status line, eviction at client-log-size, the log
 * surviving SIGHUP, and no client address in a log line or in /metrics.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { request as httpRequest } from 'node:http';
import { performKeyExchange, type KeyExchangeResult } from '../../src/cli/ke-client.js';
import { ntsExchange } from '../../src/cli/ntp-client.js';
import type { ClientLogView, ClientView } from '../../src/core/client-log.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import {
  fetchMetricsText,
  freePorts,
  freeTcpPort,
  freeUdpPort,
  makeTempDir,
  removeDir,
  runCli,
  startDaemon,
  testConfigToml,
  waitUntil,
  type RunningDaemon,
} from '../helpers/daemon.js';
import { plainRequest } from '../ntp/nts-test-client.js';


/** Sends `datagram` from a fresh socket bound to `from` (so a new source port each time); resolves with the reply or undefined. */
function sendFrom(from: string, to: string, port: number, datagram: Uint8Array, waitMs = 1000): Promise<Uint8Array | undefined> {
  return new Promise((resolve, reject) => {
    const s = createSocket(from.includes(':') ? 'udp6' : 'udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, waitMs);
    s.on('error', (error) => {
      clearTimeout(timer);
      s.close();
      reject(error);
    });
    s.on('message', (msg) => {
      clearTimeout(timer);
      s.close();
      resolve(new Uint8Array(msg));
    });
    s.bind({ address: from, port: 0 }, () => s.send(datagram, port, to));
  });
}

/** GETs a path of the metrics listener: status and body. */
function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'GET', timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

async function readView(d: RunningDaemon): Promise<ClientLogView> {
  assert.ok(d.metrics !== undefined);
  const r = await httpGet(d.metrics.port, '/clients');
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body) as ClientLogView;
}

function client(view: ClientLogView, address: string): ClientView {
  const c = view.clients.find((x) => x.address === address);
  if (c === undefined) throw new Error(`${address} not in /clients: ${view.clients.map((x) => x.address).join(', ')}`);
  return c;
}

/** Waits until /clients satisfies `ready` (drops and KE outcomes are counted a moment after the client gives up). */
function waitForView(d: RunningDaemon, what: string, ready: (v: ClientLogView) => boolean): Promise<ClientLogView> {
  return waitUntil(what, 10_000, async () => {
    const v = await readView(d);
    return ready(v) ? v : undefined;
  }, 100);
}

/** Every client address the tests send from (127.0.0.1 is the daemon's own listen address, so it is not one). */
const CLIENT_ADDRESS = /\b127\.0\.0\.(?:[2-9]|[1-9]\d|1\d\d|2[0-4]\d|25[0-4])\b/;

async function ke(daemon: RunningDaemon, pki: TestPki, from: string): Promise<KeyExchangeResult | undefined> {
  const at = daemon.ntsKe[0];
  assert.ok(at !== undefined);
  const outcome = await performKeyExchange({ host: at.host, port: at.port, ca: pki.caPem, servername: 'localhost', timeoutMs: 5000, localAddress: from });
  return outcome.ok ? outcome.result : undefined;
}

interface Setup {
  readonly pki: TestPki;
  start(options: { threads?: number; extra?: (toml: string) => string; ntp6?: boolean }): Promise<RunningDaemon & { ntp6Port: number }>;
}

function setup(t: { after(fn: () => Promise<void> | void): void }): Setup {
  const pki = makeTestPki();
  const daemons: RunningDaemon[] = [];
  t.after(async () => {
    for (const d of daemons) await d.stop('SIGTERM', 4000);
    pki.cleanup();
  });
  return {
    pki,
    async start({ threads = 1, extra = (x) => x, ntp6 = false }) {
      const ports = await freePorts();
      const ntp6Port = ntp6 ? await freeUdpPort() : 0;
      const dir = makeTempDir('clients');
      t.after(() => removeDir(dir));
      let toml = testConfigToml({ ...ports, certPath: pki.chainPath, keyPath: pki.keyPath, threads });
      if (ntp6) toml = `[[server]]\nlisten = "[::1]:${ntp6Port}"\n\n${toml}`;
      const d = await startDaemon({ toml: extra(toml), dir });
      daemons.push(d);
      return Object.assign(d, { ntp6Port });
    },
  };
}

/** Adds lines to a table of the test configuration, right after the line that starts with `anchor`. */
function addAfter(toml: string, anchor: string, lines: readonly string[]): string {
  const at = toml.split('\n');
  const i = at.findIndex((l) => l.startsWith(anchor));
  if (i < 0) throw new Error(`no line starting with ${anchor}`);
  at.splice(i + 1, 0, ...lines);
  return at.join('\n');
}

test('per-client counts from many loopback sources over 2 NTP and 2 KE threads; table, JSON, status; SIGHUP keeps the log; no address leaks', { timeout: 120_000 }, async (t) => {
  const s = setup(t);
  const d = await s.start({
    threads: 2,
    ntp6: true,
    extra: (toml) => {
      let out = addAfter(toml, 'listen = "127.0.0.1:', ['deny = ["127.0.0.40"]', 'ignore = ["127.0.0.41"]']);
      out = addAfter(out, 'key-exchange-timeout-ms', ['threads = 2', 'deny = ["127.0.0.30"]']);
      return out;
    },
  });
  const ntp = d.ntp.find((a) => a.host === '127.0.0.1');
  assert.ok(ntp !== undefined && d.metrics !== undefined, JSON.stringify(d.started));
  const metricsUrl = `http://127.0.0.1:${d.metrics.port}/metrics`;

  // Plain NTP: 127.0.0.(2+i) sends i+1 requests, each from a new source port (spread over both threads).
  const sends: Promise<Uint8Array | undefined>[] = [];
  for (let i = 0; i < 10; i++) for (let k = 0; k <= i; k++) sends.push(sendFrom(`127.0.0.${2 + i}`, '127.0.0.1', ntp.port, plainRequest()));
  for (let k = 0; k < 3; k++) sends.push(sendFrom('::1', '::1', d.ntp6Port, plainRequest()));
  const replies = await Promise.all(sends);
  assert.equal(replies.filter((r) => r !== undefined).length, 55 + 3, 'every plain request answered');

  // NTS from 127.0.0.20: two KE sessions, three authenticated exchanges, one NAK (tampered cookie).
  const keys = await ke(d, s.pki, '127.0.0.20');
  assert.ok(keys !== undefined, 'KE from 127.0.0.20');
  assert.ok((await ke(d, s.pki, '127.0.0.20')) !== undefined);
  for (const cookie of keys.cookies.slice(0, 3)) {
    const r = await ntsExchange({ server: '127.0.0.1', port: ntp.port, aeadId: keys.aeadId, c2s: keys.c2s, s2c: keys.s2c, cookie, placeholders: 0, timeoutMs: 3000, localAddress: '127.0.0.20' });
    assert.ok(r.ok, JSON.stringify(r));
  }
  const tampered = (keys.cookies[3] ?? new Uint8Array(64)).slice();
  tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 1;
  const nak = await ntsExchange({ server: '127.0.0.1', port: ntp.port, aeadId: keys.aeadId, c2s: keys.c2s, s2c: keys.s2c, cookie: tampered, placeholders: 0, timeoutMs: 3000, localAddress: '127.0.0.20' });
  assert.ok(!nak.ok && nak.failure.kind === 'nts_nak', JSON.stringify(nak));
  // KE refused before TLS by the access list; KoD DENY; ignored; malformed.
  assert.equal(await ke(d, s.pki, '127.0.0.30'), undefined);
  for (let k = 0; k < 2; k++) assert.ok((await sendFrom('127.0.0.40', '127.0.0.1', ntp.port, plainRequest())) !== undefined, 'KoD DENY');
  for (let k = 0; k < 2; k++) assert.equal(await sendFrom('127.0.0.41', '127.0.0.1', ntp.port, plainRequest(), 200), undefined, 'ignored');
  await sendFrom('127.0.0.42', '127.0.0.1', ntp.port, new Uint8Array(10), 200);

  const view = await waitForView(d, 'every client counted', (v) => v.tracked >= 16 && v.clients.some((c) => c.address === '127.0.0.30' && c.ke.refused === 1));
  for (let i = 0; i < 10; i++) {
    const c = client(view, `127.0.0.${2 + i}`);
    assert.equal(c.ntp.requests, i + 1, c.address);
    assert.equal(c.ntp.plain, i + 1);
    assert.equal(c.ntp.replies, i + 1);
    assert.equal(c.ke.sessions, 0);
  }
  const v6 = client(view, '::/64');
  assert.equal(v6.ntp.plain, 3);
  const nts = client(view, '127.0.0.20');
  assert.deepEqual(
    { nts: nts.ntp.nts, plain: nts.ntp.plain, replies: nts.ntp.replies, naks: nts.ntp.naks, ke: nts.ke.sessions, ok: nts.ke.ok },
    { nts: 4, plain: 0, replies: 4, naks: 1, ke: 2, ok: 2 },
  );
  assert.ok(nts.ke.lastAgoS !== null && nts.ntp.lastAgoS !== null);
  assert.equal(client(view, '127.0.0.30').ke.refused, 1);
  assert.equal(client(view, '127.0.0.30').ntp.requests, 0);
  assert.deepEqual(client(view, '127.0.0.40').ntp, { ...client(view, '127.0.0.40').ntp, plain: 2, kods: 2, replies: 2 });
  assert.deepEqual(client(view, '127.0.0.41').ntp.drops, { rateLimit: 0, access: 2, other: 0 });
  assert.deepEqual(client(view, '127.0.0.42').ntp.drops, { rateLimit: 0, access: 0, other: 1 });
  assert.equal(view.clients[0]?.address, '127.0.0.11', 'busiest first');
  assert.equal(view.capacity, 4096);

  // The command: table and JSON.
  const table = await runCli(['clients', '--metrics', metricsUrl]);
  assert.equal(table.code, 0, table.stderr);
  const lines = table.stdout.trimEnd().split('\n');
  assert.match(lines[0] ?? '', /^\d+ clients tracked \(log holds 4096\); \d+ shown, by requests$/);
  assert.match(lines[1] ?? '', /^Address\s+NTP\s+NTS\s+Drop\s+NAK\s+KoD\s+Int\s+Last\s+KE\s+KEfail\s+KInt\s+KLast$/);
  assert.match(lines[3] ?? '', /^127\.0\.0\.11\s+10\s+0\s+0\s+0\s+0\s+\S+\s+\S+\s+0\s+0\s+-\s+-$/);
  assert.match(table.stdout, /\n127\.0\.0\.20\s+0\s+4\s+0\s+1\s+0\s+\S+\s+\S+\s+2\s+0\s+\S+\s+\S+\n/);
  t.diagnostic(`ntsd clients:\n${table.stdout}`);
  const json = await runCli(['clients', '--metrics', metricsUrl, '--json', '--sort', 'ke', '--limit', '2']);
  assert.equal(json.code, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as ClientLogView;
  assert.equal(parsed.clients.length, 2);
  assert.equal(parsed.clients[0]?.address, '127.0.0.20', 'most KE sessions first');
  assert.equal(parsed.clients[1]?.address, '127.0.0.30');
  const bad = await runCli(['clients', '--metrics', metricsUrl, '--sort', 'bogus']);
  assert.equal(bad.code, 64);

  // ntsd status: one line, aggregates only.
  const status = await runCli(['status', '--metrics', metricsUrl, '--interval', '0']);
  const line = status.stdout.split('\n').find((l) => l.startsWith('clients'));
  assert.match(line ?? '', /^clients\s+\d+ tracked \(log holds 4096\); busiest client \d+\.\d % of NTP requests/, status.stdout);

  // No client address in /metrics or in anything the daemon printed.
  const metricsText = await fetchMetricsText(d.metrics);
  assert.doesNotMatch(metricsText, CLIENT_ADDRESS);
  assert.match(metricsText, /^ntsd_clients_tracked \d+$/m);
  assert.match(metricsText, /^ntsd_clients_top_request_share 0\.\d+$/m);
  assert.match(metricsText, /^ntsd_client_log_capacity_clients 4096$/m);

  // SIGHUP: the log survives, and keeps counting.
  const before = d.lines().length;
  d.signal('SIGHUP');
  await d.waitForLine((l) => l['msg'] === 'reload', 10_000, before);
  assert.ok((await sendFrom('127.0.0.2', '127.0.0.1', ntp.port, plainRequest())) !== undefined);
  const after = await readView(d);
  assert.equal(client(after, '127.0.0.2').ntp.requests, 2, 'counted before and after the reload');
  assert.equal(client(after, '127.0.0.11').ntp.requests, 10);
  assert.equal(client(after, '127.0.0.20').ke.ok, 2);

  const stop = await d.stop();
  assert.equal(stop.exitCode, 0);
  assert.doesNotMatch(d.stdout(), CLIENT_ADDRESS);
  assert.doesNotMatch(d.stderr(), CLIENT_ADDRESS);
});

test('client-log-size bounds the log: the least recently seen clients go', { timeout: 60_000 }, async (t) => {
  const s = setup(t);
  const d = await s.start({ extra: (toml) => addAfter(toml, 'metrics-listen', ['client-log-size = 8']) });
  const ntp = d.ntp[0];
  assert.ok(ntp !== undefined && d.metrics !== undefined);
  for (let i = 2; i <= 21; i++) assert.ok((await sendFrom(`127.0.0.${i}`, '127.0.0.1', ntp.port, plainRequest())) !== undefined);
  const view = await readView(d);
  assert.equal(view.capacity, 8);
  assert.equal(view.tracked, 8);
  assert.deepEqual(view.clients.map((c) => c.address).sort(), Array.from({ length: 8 }, (_, i) => `127.0.0.${14 + i}`).sort());
  const metricsText = await fetchMetricsText(d.metrics);
  assert.match(metricsText, /^ntsd_clients_tracked 8$/m);
  assert.match(metricsText, /^ntsd_clients_top_request_share 0\.125$/m);
});

test('client-log-size = 0: no log, /clients is 404, ntsd clients says why, status says off', { timeout: 60_000 }, async (t) => {
  const s = setup(t);
  const d = await s.start({ extra: (toml) => addAfter(toml, 'metrics-listen', ['client-log-size = 0']) });
  assert.ok(d.metrics !== undefined);
  assert.equal((await httpGet(d.metrics.port, '/clients')).status, 404);
  const url = `http://127.0.0.1:${d.metrics.port}/metrics`;
  const r = await runCli(['clients', '--metrics', url]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /404: this ntsd serves no client view/);
  const status = await runCli(['status', '--metrics', url, '--interval', '0']);
  assert.match(status.stdout, /\nclients\s+client log off \(client-log-size = 0\)\n/);
});

test('a metrics listener off the loopback does not serve /clients, and says so at start', { timeout: 60_000 }, async (t) => {
  const s = setup(t);
  const port = await freeTcpPort();
  const d = await s.start({ extra: (toml) => toml.replace('metrics-listen = "127.0.0.1:0"', `metrics-listen = "0.0.0.0:${port}"`) });
  assert.ok(d.lines().some((l) => typeof l['msg'] === 'string' && l['msg'].startsWith('client log view (GET /clients, ntsd clients) is off')));
  assert.equal((await httpGet(port, '/clients')).status, 404);
  assert.equal((await httpGet(port, '/metrics')).status, 200);
});

test('formatting and selection: intervals, sorts, limit, /clients next to /metrics', async () => {
  const { formatIntervalS, selectClients, clientsUrl, formatClientsTable } = await import('../../src/cli/clients.js');
  assert.equal(formatIntervalS(null), '-');
  assert.equal(formatIntervalS(0.03125), '31ms');
  assert.equal(formatIntervalS(2), '2.0s');
  assert.equal(formatIntervalS(64), '64s');
  assert.equal(formatIntervalS(99.6), '100s');
  assert.equal(formatIntervalS(1024), '17m');
  assert.equal(formatIntervalS(90_000), '1d');
  assert.equal(clientsUrl('http://127.0.0.1:9975/metrics'), 'http://127.0.0.1:9975/clients');
  assert.equal(clientsUrl('http://[::1]:9975/metrics?x=1'), 'http://[::1]:9975/clients');
  const c = (address: string, requests: number, drops: number, ke: number, lastAgoS: number): ClientView => ({
    address,
    ntp: { requests, plain: requests, nts: 0, replies: requests - drops, drops: { rateLimit: drops, access: 0, other: 0 }, naks: 0, kods: 0, intervalS: 64, lastAgoS },
    ke: { sessions: ke, ok: ke, error: 0, tls: 0, timeout: 0, refused: 0, intervalS: null, lastAgoS: null },
    firstAgoS: 100,
    lastAgoS,
  });
  const view: ClientLogView = { capacity: 16, tracked: 3, clients: [c('192.0.2.1', 5, 0, 0, 9), c('192.0.2.2', 50, 1, 0, 20), c('192.0.2.3', 1, 0, 7, 1)] };
  const order = (sort: 'requests' | 'drops' | 'ke' | 'last'): string[] => selectClients(view, sort, 10).clients.map((x) => x.address);
  assert.deepEqual(order('requests'), ['192.0.2.2', '192.0.2.1', '192.0.2.3']);
  assert.deepEqual(order('drops'), ['192.0.2.2', '192.0.2.1', '192.0.2.3']);
  assert.deepEqual(order('ke'), ['192.0.2.3', '192.0.2.2', '192.0.2.1']);
  assert.deepEqual(order('last'), ['192.0.2.3', '192.0.2.1', '192.0.2.2']);
  const one = selectClients(view, 'requests', 1);
  assert.equal(one.clients.length, 1);
  assert.equal(one.tracked, 3);
  const lines = formatClientsTable(one, 'requests');
  assert.equal(lines[0], '3 clients tracked (log holds 16); 1 shown, by requests');
  assert.match(lines[3] ?? '', /^192\.0\.2\.2\s+50\s+0\s+1\s+0\s+0\s+64s\s+20s\s+0\s+0\s+-\s+-$/);
});
