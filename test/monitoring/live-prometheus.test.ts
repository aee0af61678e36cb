/**
 * The monitoring kit against the real thing: Debian's Prometheus 2.42 on loopback (a free port, a temp data
 * directory, killed at the end) scrapes a live ntsd every second while NTS, NTS-KE, NAK, dropped and plain NTP
 * traffic goes to it. Then, through Prometheus's HTTP API:
 * - the target is up, under the shipped prometheus.yml's job and instance labels;
 * - every query of deploy/grafana-ntsd.json evaluates without error, with Grafana's variables substituted the
 *   way Grafana does ($__rate_interval = max($__interval + scrape interval, 4 × scrape interval), `$instance`
 *   as "All" and as one value), and the main panels return series, the traffic ones with non-zero rates;
 * - the rule manager has evaluated every rule of deploy/ntsd-alerts.yml with health "ok", each rule query also
 *   evaluates on its own, and a healthy ntsd raises no alert (only the load-dependent event-loop lag may be pending).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { makeTestPki } from '../helpers/certs.js';
import { freePorts, freeTcpPort, makeTempDir, removeDir, repoRoot, startDaemon, testConfigToml, waitUntil, type RunningDaemon } from '../helpers/daemon.js';
import { sendMixedTraffic } from '../helpers/traffic.js';

const DEPLOY = join(repoRoot(), 'deploy');
const SCRAPE_INTERVAL_S = 1;
const INSTANCE = 'nts1.example.org';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** GET `path` on 127.0.0.1:`port`; resolves with status and body. */
function httpGet(port: number, path: string, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** A Prometheus API call: returns `data`, fails the test with Prometheus's error text otherwise. */
async function api(port: number, path: string, params: Record<string, string> = {}): Promise<unknown> {
  const query = new URLSearchParams(params).toString();
  const { status, body } = await httpGet(port, `/api/v1/${path}${query === '' ? '' : `?${query}`}`);
  const parsed: unknown = JSON.parse(body);
  assert.ok(isRecord(parsed), `${path}: not a JSON object: ${body.slice(0, 300)}`);
  assert.equal(parsed['status'], 'success', `${path} ${JSON.stringify(params)} -> HTTP ${status}: ${String(parsed['errorType'])}: ${String(parsed['error'])}`);
  return parsed['data'];
}

/** Every string under `key` in a JSON tree, with the title of the panel it belongs to. */
function collectExprs(node: unknown, panel: string, out: { panel: string; expr: string }[] = []): { panel: string; expr: string }[] {
  if (Array.isArray(node)) for (const item of node) collectExprs(item, panel, out);
  else if (isRecord(node)) {
    const title = typeof node['title'] === 'string' && Array.isArray(node['targets']) ? node['title'] : panel;
    for (const [k, v] of Object.entries(node)) {
      if (k === 'expr' && typeof v === 'string') out.push({ panel: title, expr: v });
      else collectExprs(v, title, out);
    }
  }
  return out;
}

/** Grafana's built-in interval variables for a query with step `intervalS` over `rangeS`, and the dashboard's `$instance`. */
export function substituteGrafanaVariables(expr: string, o: { intervalS: number; scrapeIntervalS: number; rangeS: number; instanceRegex: string }): string {
  const rateIntervalS = Math.max(o.intervalS + o.scrapeIntervalS, 4 * o.scrapeIntervalS);
  const vars: Record<string, string> = {
    __rate_interval: `${rateIntervalS}s`,
    __interval_ms: String(o.intervalS * 1000),
    __interval: `${o.intervalS}s`,
    __range_ms: String(o.rangeS * 1000),
    __range_s: String(o.rangeS),
    __range: `${o.rangeS}s`,
    instance: o.instanceRegex,
  };
  return expr.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole: string, braced: string | undefined, bare: string | undefined) => vars[braced ?? bare ?? ''] ?? whole);
}

/** Samples of a range-query matrix: every value of every series. */
function matrixValues(data: unknown): { series: number; values: number[] } {
  assert.ok(isRecord(data) && data['resultType'] === 'matrix' && Array.isArray(data['result']));
  const values: number[] = [];
  for (const s of data['result']) {
    if (isRecord(s) && Array.isArray(s['values'])) for (const pair of s['values']) if (Array.isArray(pair)) values.push(Number(pair[1]));
  }
  return { series: data['result'].length, values };
}

function startPrometheus(dir: string, port: number): { child: ChildProcess; log: () => string } {
  const child = spawn(
    'prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--storage.tsdb.retention.time=1h',
      '--log.level=warn',
    ],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (log += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (log += c));
  return { child, log: () => log };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

test('a real Prometheus scrapes a live ntsd; every dashboard query and alert rule evaluates', { timeout: 120_000 }, async (t) => {
  const dir = makeTempDir('prometheus');
  const pki = makeTestPki();
  let daemon: RunningDaemon | undefined;
  let prometheus: ChildProcess | undefined;
  t.after(async () => {
    if (prometheus !== undefined) await stopChild(prometheus);
    if (daemon !== undefined) await daemon.stop('SIGTERM', 3000);
    removeDir(dir);
    pki.cleanup();
  });

  const ports = await freePorts();
  mkdirSync(join(dir, 'ntsd'));
  // Two certificate pairs on the KE listener: the certificate panel and alerts work per name.
  const second = pki.writeLeaf('second', ['nts.test']);
  const keExtra = ['[[nts-ke-server.certificate]]', `certificate-chain-path = ${JSON.stringify(second.chainPath)}`, `private-key-path = ${JSON.stringify(second.keyPath)}`];
  daemon = await startDaemon({ toml: testConfigToml({ ...ports, certPath: pki.chainPath, keyPath: pki.keyPath, keExtra }), dir: join(dir, 'ntsd') });
  const metricsAt = daemon.metrics;
  assert.ok(metricsAt !== undefined, 'the test daemon serves metrics');

  // The shipped scrape config, pointed at this daemon and sped up to one scrape (and rule evaluation) a second.
  const shipped = readFileSync(join(DEPLOY, 'prometheus.yml'), 'utf8');
  const config = `global:\n  evaluation_interval: ${SCRAPE_INTERVAL_S}s\n${shipped
    .replace('scrape_interval: 15s', `scrape_interval: ${SCRAPE_INTERVAL_S}s`)
    .replace("'127.0.0.1:9975'", `'127.0.0.1:${metricsAt.port}'`)}`;
  assert.ok(config.includes(`scrape_interval: ${SCRAPE_INTERVAL_S}s`) && config.includes(`:${metricsAt.port}'`), 'prometheus.yml changed shape');
  writeFileSync(join(dir, 'prometheus.yml'), config);
  copyFileSync(join(DEPLOY, 'ntsd-alerts.yml'), join(dir, 'ntsd-alerts.yml'));

  const promPort = await freeTcpPort();
  const prom = startPrometheus(dir, promPort);
  prometheus = prom.child;
  await waitUntil(`Prometheus ready on port ${promPort}\n${prom.log()}`, 30_000, async () => {
    if (prom.child.exitCode !== null) throw new Error(`prometheus exited ${String(prom.child.exitCode)}:\n${prom.log()}`);
    const r = await httpGet(promPort, '/-/ready', 2000).catch(() => undefined);
    return r?.status === 200 ? true : undefined;
  }, 200);
  const windowStartS = Date.now() / 1000;

  const tally = await sendMixedTraffic(daemon, { caPem: pki.caPem, rounds: 24, pauseMs: 300, maxMs: 30_000 });

  // Until Prometheus holds the daemon's counts (the daemon folds thread tallies about once a second).
  const latest = async (expr: string): Promise<number> => {
    const data = await api(promPort, 'query', { query: expr });
    if (!isRecord(data) || !Array.isArray(data['result'])) return Number.NaN;
    const first: unknown = data['result'][0];
    return isRecord(first) && Array.isArray(first['value']) ? Number(first['value'][1]) : Number.NaN;
  };
  await waitUntil('Prometheus to have scraped the traffic', 20_000, async () => {
    const ke = await latest('sum(ntsd_ke_sessions_total{outcome="success"})');
    const naks = await latest('sum(ntsd_nts_nak_total)');
    return ke >= tally.keSessions && naks >= tally.naks ? true : undefined;
  }, 500);
  // A few more scrapes and rule evaluations after the last traffic.
  await new Promise((resolve) => setTimeout(resolve, 3000 * SCRAPE_INTERVAL_S));
  const windowEndS = Date.now() / 1000;

  // The target, with the shipped labels.
  const targets = await api(promPort, 'targets');
  assert.ok(isRecord(targets) && Array.isArray(targets['activeTargets']));
  const target: unknown = targets['activeTargets'][0];
  assert.ok(isRecord(target) && isRecord(target['labels']), JSON.stringify(targets));
  assert.equal(target['health'], 'up', JSON.stringify(target));
  assert.equal(target['labels']['job'], 'ntsd');
  assert.equal(target['labels']['instance'], INSTANCE);

  // The dashboard's instance variable: label_values(ntsd_build_info, instance), as Grafana asks for it.
  const instances = await api(promPort, 'label/instance/values', { 'match[]': 'ntsd_build_info' });
  assert.deepEqual(instances, [INSTANCE]);

  // Every dashboard query, for "All" and for the one instance, as a range query over the traffic window.
  const dashboard: unknown = JSON.parse(readFileSync(join(DEPLOY, 'grafana-ntsd.json'), 'utf8'));
  const exprs = collectExprs(dashboard, 'dashboard');
  assert.ok(exprs.length >= 20, `only ${exprs.length} dashboard queries`);
  const rangeS = Math.ceil(windowEndS - windowStartS);
  const results = new Map<string, { series: number; values: number[] }>();
  // Grafana escapes a selected value for a regex inside a PromQL string: `.` becomes `\\.` in the query text.
  const oneInstance = INSTANCE.replace(/[$^*{}[\]'+?.()|\\]/g, (c) => `\\\\${c}`);
  for (const instanceRegex of ['.*', oneInstance]) {
    for (const { panel, expr } of exprs) {
      const query = substituteGrafanaVariables(expr, { intervalS: 1, scrapeIntervalS: SCRAPE_INTERVAL_S, rangeS, instanceRegex });
      assert.doesNotMatch(query, /\$/, `panel "${panel}": a variable left unsubstituted in ${query}`);
      const data = await api(promPort, 'query_range', { query, start: windowStartS.toFixed(3), end: windowEndS.toFixed(3), step: '1' });
      const values = matrixValues(data);
      const key = `${panel}: ${expr}`;
      const prior = results.get(key);
      if (instanceRegex === '.*') results.set(key, values);
      else assert.equal(values.series, prior?.series, `panel "${panel}": "All" and the one instance disagree`);
    }
  }

  const panel = (title: string): { series: number; values: number[] }[] =>
    [...results].filter(([k]) => k.startsWith(`${title}: `)).map(([, v]) => v);
  const mainPanels = [
    'NTP responses per second',
    'Drops by reason',
    'NTS NAKs by reason',
    'Cookie decodes by key age',
    'Cookies issued',
    'Request duration (receive to send)',
    'Request duration heatmap',
    'KE sessions by outcome',
    'KE connections accepted and rejected',
    'Active KE connections',
    'KE session duration',
    'Certificate expires in',
    'Current master key age',
    'Master keys held',
    'Time source synchronised',
    'Stratum and root distance served',
    'NTP thread restarts',
    'Event loop lag',
    'Memory',
    'CPU',
    'NTP datapath',
    'Keyset mode',
  ];
  for (const title of mainPanels) {
    const queries = panel(title);
    assert.ok(queries.length > 0, `the dashboard has no panel "${title}"`);
    for (const q of queries) assert.ok(q.series > 0, `panel "${title}" returned no series`);
  }
  assert.deepEqual(panel('Certificate expires in').map((q) => q.series), [2], 'one certificate series per name (localhost, nts.test)');
  // The traffic shows: non-zero rates where it went, and the gauges read what the daemon holds.
  const anyAbove = (title: string, min: number): boolean => panel(title).some((q) => q.values.some((v) => Number.isFinite(v) && v > min));
  // On a loaded machine scrapes arrive late, and a rate window of 4 scrapes can hold fewer than two samples.
  // Grafana widens $__interval (and so $__rate_interval) as the view zooms out: a panel that shows nothing
  // at 1 s is asked again as a 15 s view would ask, and must show the traffic there.
  const widerAbove = async (title: string): Promise<boolean> => {
    for (const { expr } of exprs.filter((e) => e.panel === title)) {
      const query = substituteGrafanaVariables(expr, { intervalS: 15, scrapeIntervalS: SCRAPE_INTERVAL_S, rangeS, instanceRegex: '.*' });
      const data = await api(promPort, 'query_range', { query, start: windowStartS.toFixed(3), end: windowEndS.toFixed(3), step: '1' });
      if (matrixValues(data).values.some((v) => Number.isFinite(v) && v > 0)) return true;
    }
    return false;
  };
  for (const title of ['NTP responses per second', 'Drops by reason', 'NTS NAKs by reason', 'Cookie decodes by key age', 'Cookies issued', 'KE sessions by outcome', 'KE connections accepted and rejected', 'Request duration (receive to send)', 'KE session duration', 'Request duration heatmap']) {
    assert.ok(anyAbove(title, 0) || (await widerAbove(title)), `panel "${title}" shows no traffic, at a 1 s or a 15 s interval`);
  }
  const lastOf = (title: string): number => panel(title)[0]?.values.at(-1) ?? Number.NaN;
  assert.ok(lastOf('Certificate expires in') > 800, 'the test certificate has 825 days left');
  assert.ok(lastOf('Master keys held') >= 2, 'current and next key at least');
  assert.equal(lastOf('Time source synchronised'), 1);

  // The alert rules: evaluated by the rule manager without error, each query valid on its own.
  const alertNames = [...readFileSync(join(DEPLOY, 'ntsd-alerts.yml'), 'utf8').matchAll(/^\s+- alert: (\w+)$/gm)].map((m) => m[1]);
  const rules = await api(promPort, 'rules');
  assert.ok(isRecord(rules) && Array.isArray(rules['groups']));
  const loaded = rules['groups'].flatMap((g: unknown) => (isRecord(g) && Array.isArray(g['rules']) ? g['rules'] : []));
  assert.deepEqual(loaded.map((r: unknown) => (isRecord(r) ? r['name'] : undefined)), alertNames);
  for (const rule of loaded) {
    assert.ok(isRecord(rule));
    assert.equal(rule['health'], 'ok', `rule ${String(rule['name'])}: ${String(rule['lastError'])}`);
    assert.ok(!String(rule['lastEvaluation']).startsWith('0001-'), `rule ${String(rule['name'])} was never evaluated`);
    await api(promPort, 'query', { query: String(rule['query']) });
    // Event-loop lag depends on how busy this shared machine is: it may be pending, never firing (for: 10m).
    const allowed = rule['name'] === 'NtsdEventLoopLag' ? ['inactive', 'pending'] : ['inactive'];
    assert.ok(allowed.includes(String(rule['state'])), `a healthy ntsd raised ${String(rule['name'])}: ${JSON.stringify(rule['alerts'])}`);
  }
  const alerts = await api(promPort, 'alerts');
  assert.ok(isRecord(alerts) && Array.isArray(alerts['alerts']));
  const firing = alerts['alerts'].filter((a: unknown) => !isRecord(a) || a['state'] === 'firing');
  assert.deepEqual(firing, [], 'no alert firing on a healthy ntsd');
});
