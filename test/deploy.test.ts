/**
 * The operator kit in deploy/ is shipped, so it is tested like code:
 * - every TOML config there passes the real CLI (`ntsd validate`, exit 0), and a broken copy fails with
 *   exit 78 naming the TOML key path (OPERATIONS.md "Configuration");
 * - the example config documents every key the schema reads, and its commented-out values are the defaults;
 * - the Grafana dashboard and the alert rules only use metric names the registry really exports;
 * - the systemd unit, the certbot hook, chrony snippet and Prometheus example agree with each other.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../src/config/load.js';
import { nodeRole, type Config } from '../src/config/schema.js';
import { createMetrics } from '../src/obs/metrics.js';

/** Nearest ancestor of this compiled test holding tsconfig.json (the repository), else the working directory. */
function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'tsconfig.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
}

const ROOT = findRepoRoot();
const DEPLOY = join(ROOT, 'deploy');
/** The CLI compiled together with this test (dist/src/main.js in a normal build). */
const MAIN_JS = fileURLToPath(new URL('../src/main.js', import.meta.url));
const EX_CONFIG = 78;

function readDeploy(name: string): string {
  return readFileSync(join(DEPLOY, name), 'utf8');
}

function runCli(args: readonly string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [MAIN_JS, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
}

function describeRun(r: SpawnSyncReturns<string>): string {
  return `exit ${String(r.status)} signal ${String(r.signal)}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** Every file under `dir` whose name ends with `suffix`, recursively. */
function filesUnder(dir: string, suffix: string): string[] {
  const found: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...filesUnder(path, suffix));
    else if (name.endsWith(suffix)) found.push(path);
  }
  return found;
}

function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-deploy-test-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function parseExample(text: string): Config {
  // A fixed CPU count so defaults that depend on the host (worker threads) compare equal.
  const result = parseConfig(text, DEPLOY, 4);
  assert.ok(result.ok, `deploy/ntsd.toml does not validate: ${result.ok ? '' : result.errors.join('; ')}`);
  return result.config;
}

// ---------------------------------------------------------------------------------------------------------
// Configuration files.

test('every deploy/**/*.toml passes `ntsd validate` (exit 0)', () => {
  const files = filesUnder(DEPLOY, '.toml');
  assert.ok(files.some((f) => f.endsWith('ntsd.toml')), 'deploy/ntsd.toml is missing');
  for (const file of files) {
    const r = runCli(['validate', '--config', file]);
    assert.equal(r.status, 0, `${file}: ${describeRun(r)}`);
    assert.match(r.stdout, /valid/);
  }
});

test('a broken copy of deploy/ntsd.toml exits 78 and names each bad key path', () => {
  const original = readDeploy('ntsd.toml');
  const cases: { name: string; edit: (text: string) => string; paths: string[] }[] = [
    {
      name: 'unknown key (typo)',
      edit: (t) => t.replace('key-storage-path = "/var/lib/ntsd/keyset"', 'key-storage-path = "/var/lib/ntsd/keyset"\nkey-rotation-intervall-s = 3600'),
      paths: ['keyset.key-rotation-intervall-s'],
    },
    {
      name: 'wrong types',
      edit: (t) => t.replace('address = "127.0.0.1:11123"', 'address = 11123').replace('listen = "[::]:123"', 'listen = "[::]:123"\nrequire-nts = "yes"'),
      paths: ['time-source.address', 'server[1].require-nts'],
    },
  ];
  withTempDir((dir) => {
    for (const c of cases) {
      const broken = c.edit(original);
      assert.notEqual(broken, original, `${c.name}: the edit did not apply (deploy/ntsd.toml changed shape?)`);
      const file = join(dir, 'broken.toml');
      writeFileSync(file, broken);
      const r = runCli(['validate', '--config', file]);
      assert.equal(r.status, EX_CONFIG, `${c.name}: ${describeRun(r)}`);
      for (const path of c.paths) assert.ok(r.stderr.includes(path), `${c.name}: stderr does not name ${path}: ${r.stderr}`);
    }
  });
});

test('deploy/ntsd.toml is the documented production setup', () => {
  const config = parseExample(readDeploy('ntsd.toml'));
  // Public UDP 123 on both families; one dual-stack KE listener on 4460.
  assert.deepEqual(
    config.servers.map((s) => [s.listen.host, s.listen.port]),
    [
      ['0.0.0.0', 123],
      ['::', 123],
    ],
  );
  assert.deepEqual(
    config.ntsKeServers.map((k) => [k.listen.host, k.listen.port]),
    [['::', 4460]],
  );
  const ke = config.ntsKeServers[0];
  assert.ok(ke !== undefined);
  assert.equal(ke.certificates[0]?.certificateChainPath, '/etc/ntsd/fullchain.pem');
  assert.equal(ke.certificates[0]?.privateKeyPath, '/etc/ntsd/privkey.pem');
  assert.equal(ke.ntpPort, 123, 'NTP on 123: no Port Negotiation record needed');
  assert.equal(config.keyset.keyStoragePath, '/var/lib/ntsd/keyset');
  assert.equal(config.timeSource.mode, 'follow');
  assert.deepEqual(config.observability.metricsListen, { host: '127.0.0.1', port: 9975, family: 'IPv4' });
});

test('deploy/ntsd-ke-node.toml and ntsd-ntp-node.toml are a fleet: one KE-only and one NTP-only node on one seed', () => {
  const parse = (name: string): Config => {
    const result = parseConfig(readDeploy(name), DEPLOY, 4);
    assert.ok(result.ok, `deploy/${name} does not validate: ${result.ok ? '' : result.errors.join('; ')}`);
    return result.config;
  };
  const ke = parse('ntsd-ke-node.toml');
  const ntp = parse('ntsd-ntp-node.toml');
  assert.equal(nodeRole(ke), 'ke-only');
  assert.equal(nodeRole(ntp), 'ntp-only');
  const k = ke.ntsKeServers[0];
  assert.ok(k !== undefined && k.ntpServer !== undefined && k.ntpPortExplicit, 'the KE node names where NTP is');
  assert.deepEqual(ntp.servers.map((s) => s.listen.port), [k.ntpPort, k.ntpPort], 'the NTP node listens where the KE node sends clients');
  for (const c of [ke, ntp]) assert.equal(c.keyset.mode, 'ratchet');
  assert.equal(ke.keyset.sharedSecretPath, ntp.keyset.sharedSecretPath, 'the same seed file');
  assert.equal(ke.keyset.keyRotationIntervalS, ntp.keyset.keyRotationIntervalS, 'the same interval (part of the derivation)');
  assert.equal(ke.keyset.staleKeyCount, ntp.keyset.staleKeyCount);
  // The commented follow alternative in the NTP node's file is a valid follow configuration too.
  const follow = readDeploy('ntsd-ntp-node.toml')
    .replace(/^mode = "ratchet"$/m, '')
    .replace(/^shared-secret-path = .*$/m, '')
    .replace(/^stale-key-count = .*$/m, '')
    .replace(/^key-rotation-interval-s = .*$/m, '')
    .replace(/^#   ((?:mode|key-storage-path|follow-poll-interval-s|key-rotation-interval-s) = \S+).*$/gm, '$1');
  const followed = parseConfig(follow, DEPLOY, 4);
  assert.ok(followed.ok, followed.ok ? '' : followed.errors.join('; '));
  assert.equal(followed.config.keyset.mode, 'follow');
  // A broken KE-only node (no ntp-server) exits 78 naming the key.
  withTempDir((dir) => {
    const file = join(dir, 'ke.toml');
    writeFileSync(file, readDeploy('ntsd-ke-node.toml').replace(/^ntp-server = .*$/m, ''));
    const r = runCli(['validate', '--config', file]);
    assert.equal(r.status, EX_CONFIG, describeRun(r));
    assert.match(r.stderr, /nts-ke-server\[0\]\.ntp-server: required on a KE-only node/);
  });
  const copy = spawnSync('sh', ['-n', join(DEPLOY, 'ntsd-keyset-copy.sh')], { encoding: 'utf8' });
  assert.equal(copy.status, 0, copy.stderr);
});

test('deploy/ntsd-pool-source.toml and ntsd-pool-ke.toml: a time source of a pool, and a pool front end', () => {
  const parse = (name: string): Config => {
    const result = parseConfig(readDeploy(name), DEPLOY, 4);
    assert.ok(result.ok, `deploy/${name} does not validate: ${result.ok ? '' : result.errors.join('; ')}`);
    return result.config;
  };
  const source = parse('ntsd-pool-source.toml');
  const front = parse('ntsd-pool-ke.toml');
  const ke = source.ntsKeServers[0];
  assert.ok(ke !== undefined);
  assert.equal(nodeRole(source), 'combined', 'a time source serves NTP and NTS-KE itself');
  assert.ok(ke.acceptedPoolAuthenticationTokens.length > 0, 'the source accepts the pool\'s token');
  assert.ok(ke.longlivedConnections > 0, 'the front end may keep connections');
  assert.ok(ke.keepAliveIdleTimeoutS <= 300 && ke.keepAliveMaxAgeS <= 3600);
  assert.equal(source.poolKe, undefined);
  // The front end: no NTP and no KE server of its own; the first source is the one above.
  assert.deepEqual([front.servers.length, front.ntsKeServers.length], [0, 0]);
  const pool = front.poolKe;
  assert.ok(pool !== undefined);
  assert.ok(pool.sources.length >= 2);
  assert.equal(pool.upstreamTimeoutMs, 2500);
  const first = pool.sources[0];
  assert.ok(first !== undefined);
  assert.equal(first.name, ke.ntpServer, 'the front end lists the source under the name the source advertises');
  assert.ok(ke.acceptedPoolAuthenticationTokens.includes(first.authenticationToken), 'the token pairs up');
  // A broken copy exits 78, names the key, and does not print the token.
  withTempDir((dir) => {
    const file = join(dir, 'front.toml');
    writeFileSync(file, readDeploy('ntsd-pool-ke.toml').replace('weight = 2', 'weight = 0').replace('upstream-timeout-ms = 2500', 'upstream-timeout-ms = 9000'));
    const r = runCli(['validate', '--config', file]);
    assert.equal(r.status, EX_CONFIG, describeRun(r));
    assert.match(r.stderr, /pool-ke\.source\[1\]\.weight/);
    assert.match(r.stderr, /pool-ke\.upstream-timeout-ms/);
    assert.ok(!r.stderr.includes('replace-with-the-token'), r.stderr);
  });
});

/** Key names the schema reads, scraped from schema.ts (`r.integer('key-name', ...)` and the mode key lists). */
function schemaKeyNames(): Set<string> {
  const source = readFileSync(join(ROOT, 'src', 'config', 'schema.ts'), 'utf8');
  const names = new Set<string>();
  for (const m of source.matchAll(/\br\.(?:integer|boolean|string|oneOf|listen|path|intList|raw|has|reject)\('([a-z0-9-]+)'/g)) {
    if (m[1] !== undefined) names.add(m[1]);
  }
  for (const m of source.matchAll(/_ONLY = \[([^\]]*)\]/g)) {
    for (const q of (m[1] ?? '').matchAll(/'([a-z0-9-]+)'/g)) if (q[1] !== undefined) names.add(q[1]);
  }
  return names;
}

test('deploy/ntsd.toml mentions every key the schema accepts', () => {
  const names = schemaKeyNames();
  assert.ok(names.size >= 25, `scraped only ${names.size} key names from schema.ts; the scraper needs updating`);
  const text = readDeploy('ntsd.toml');
  const missing = [...names].filter((name) => !new RegExp(`(^|[\\s#])${name} = `, 'm').test(text));
  assert.deepEqual(missing, [], 'document these keys (with their default) in deploy/ntsd.toml');
});

test('deploy/ntsd.toml: every commented-out `# key = value` is the built-in default', () => {
  const text = readDeploy('ntsd.toml');
  // Examples that deliberately differ from the default (or are not TOML): left commented.
  const examples = new Set(['threads', 'ntp-server', 'log-file']);
  let uncommented = 0;
  const all = text.replace(/^# ([a-z0-9-]+) = (.*)$/gm, (line: string, key: string, value: string) => {
    if (examples.has(key)) return line;
    uncommented++;
    return `${key} = ${value}`;
  });
  assert.ok(uncommented >= 20, `only ${uncommented} commented defaults found`);
  // `ntp-port` defaults to server[0]'s port; writing it out only flips the "set explicitly" flag.
  const comparable = (c: Config): unknown => ({ ...c, ntsKeServers: c.ntsKeServers.map((k) => ({ ...k, ntpPortExplicit: null })) });
  assert.deepEqual(comparable(parseExample(all)), comparable(parseExample(text)));
});

// ---------------------------------------------------------------------------------------------------------
// Monitoring.

/** Every series name the registry exports (histograms also as _bucket, _sum and _count). */
async function exportedNames(): Promise<Set<string>> {
  const metrics = createMetrics({ version: 'test', defaultMetrics: true });
  const names = new Set<string>();
  for (const metric of await metrics.registry.getMetricsAsJSON()) {
    names.add(metric.name);
    if (String(metric.type) === 'histogram') {
      for (const suffix of ['_bucket', '_sum', '_count']) names.add(metric.name + suffix);
    }
  }
  return names;
}

const METRIC_NAME_RE = /\b(?:ntsd|nodejs|process)_[a-z0-9_]*[a-z0-9]\b/g;

function metricNamesIn(text: string): Set<string> {
  return new Set(text.match(METRIC_NAME_RE) ?? []);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Every string value stored under `key` anywhere in a parsed JSON document. */
function collectStrings(node: unknown, key: string, out: string[] = []): string[] {
  if (Array.isArray(node)) {
    for (const item of node) collectStrings(item, key, out);
  } else if (isRecord(node)) {
    for (const [k, v] of Object.entries(node)) {
      if (k === key && typeof v === 'string') out.push(v);
      else collectStrings(v, key, out);
    }
  }
  return out;
}

test('Grafana dashboard: valid JSON, Prometheus datasource variable, only exported metric names', async () => {
  const dashboard: unknown = JSON.parse(readDeploy('grafana-ntsd.json'));
  assert.ok(isRecord(dashboard));
  const templating = dashboard['templating'];
  assert.ok(isRecord(templating) && Array.isArray(templating['list']));
  const dsVar = templating['list'].find((v: unknown) => isRecord(v) && v['type'] === 'datasource');
  assert.ok(isRecord(dsVar) && dsVar['query'] === 'prometheus', 'a datasource variable of type prometheus');
  const dsRef = `\${${String(dsVar['name'])}}`;

  const panels = dashboard['panels'];
  assert.ok(Array.isArray(panels) && panels.length > 0);
  const ids = panels.map((p: unknown) => (isRecord(p) ? p['id'] : undefined));
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of panels) {
    assert.ok(isRecord(p));
    if (p['type'] === 'row') continue;
    const ds = p['datasource'];
    assert.ok(isRecord(ds) && ds['uid'] === dsRef, `panel "${String(p['title'])}" uses the datasource variable`);
  }

  const exprs = collectStrings(dashboard, 'expr');
  assert.ok(exprs.length >= 20, `only ${exprs.length} queries`);
  const exported = await exportedNames();
  const used = metricNamesIn(JSON.stringify(dashboard));
  const unknown = [...used].filter((n) => !exported.has(n));
  assert.deepEqual(unknown, [], 'the dashboard references metrics the registry does not export');

  // The panels the operator kit promises.
  const wanted = [
    'ntsd_ntp_responses_total',
    'ntsd_ntp_dropped_total',
    'ntsd_nts_nak_total',
    'ntsd_nts_cookie_decodes_total',
    'ntsd_ntp_request_duration_seconds_bucket',
    'ntsd_ke_sessions_total',
    'ntsd_ke_connections_rejected_total',
    'ntsd_ke_active_connections',
    'ntsd_tls_certificate_expiry_timestamp_seconds',
    'ntsd_keyset_current_key_created_timestamp_seconds',
    'ntsd_worker_restarts_total',
    'nodejs_eventloop_lag_p99_seconds',
    'process_resident_memory_bytes',
  ];
  const queried = metricNamesIn(exprs.join('\n'));
  assert.deepEqual(wanted.filter((n) => !queried.has(n)), [], 'missing panels');
  assert.ok(panels.some((p: unknown) => isRecord(p) && p['type'] === 'heatmap'), 'a request duration heatmap');
});

test('alert rules reference only exported metrics and cover the documented alerts', async () => {
  const text = readDeploy('ntsd-alerts.yml');
  const exported = await exportedNames();
  const used = metricNamesIn(text);
  assert.deepEqual([...used].filter((n) => !exported.has(n)), [], 'alert rules reference metrics the registry does not export');
  const exprCount = (text.match(/^\s+expr:/gm) ?? []).length;
  const alertCount = (text.match(/^\s+- alert: \w+$/gm) ?? []).length;
  assert.ok(alertCount >= 8 && exprCount === alertCount, `${alertCount} alerts, ${exprCount} expressions`);
  // OPERATIONS.md: certificate expiry, key age, rotation/persist failures, NAK surge, KE rejections,
  // NTP thread restarts, event-loop lag.
  for (const name of [
    'ntsd_tls_certificate_expiry_timestamp_seconds',
    'ntsd_keyset_current_key_created_timestamp_seconds',
    'ntsd_keyset_rotations_total',
    'ntsd_keyset_persist_failures_total',
    'ntsd_nts_nak_total',
    'ntsd_ke_connections_rejected_total',
    'ntsd_worker_restarts_total',
    'nodejs_eventloop_lag_p99_seconds',
  ]) {
    assert.ok(used.has(name), `no alert uses ${name}`);
  }
});

test('Prometheus example scrapes the configured metrics address with job "ntsd" and loads the rules', () => {
  const text = readDeploy('prometheus.yml');
  const config = parseExample(readDeploy('ntsd.toml'));
  const m = config.observability.metricsListen;
  assert.ok(m !== undefined);
  assert.ok(text.includes(`'${m.host}:${m.port}'`), 'scrape target = metrics-listen');
  assert.match(text, /job_name: ntsd$/m, 'alerts select job="ntsd"');
  assert.match(text, /- ntsd-alerts\.yml$/m);
});

// ---------------------------------------------------------------------------------------------------------
// systemd, certbot, chrony.

/** `Key=value` settings of a unit file (comments and section headers dropped), in order. */
function unitSettings(text: string): [string, string][] {
  const out: [string, string][] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    if (eq > 0) out.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
  }
  return out;
}

test('systemd unit: own user, bind capability, state directory, reload by SIGHUP, no MemoryDenyWriteExecute', () => {
  const settings = unitSettings(readDeploy('ntsd.service'));
  const get = (key: string): string[] => settings.filter(([k]) => k === key).map(([, v]) => v);
  const user = get('User');
  assert.equal(user.length, 1);
  assert.ok(user[0] !== undefined && user[0] !== '' && user[0] !== 'root', 'runs as a dedicated user');
  assert.ok(get('AmbientCapabilities').some((v) => v.split(/\s+/).includes('CAP_NET_BIND_SERVICE')));
  assert.deepEqual(get('CapabilityBoundingSet'), ['CAP_NET_BIND_SERVICE']);
  assert.deepEqual(get('StateDirectory'), ['ntsd']);
  const reload = get('ExecReload').join(' ');
  assert.match(reload, /kill\s+-(HUP|SIGHUP|s\s+HUP)\s+\$MAINPID/);
  assert.deepEqual(get('MemoryDenyWriteExecute'), [], 'V8 needs W+X memory: MemoryDenyWriteExecute must not be set');
  assert.deepEqual(get('NoNewPrivileges'), ['yes']);
  assert.deepEqual(get('ProtectSystem'), ['strict']);
  assert.ok(get('RestartPreventExitStatus').includes(String(EX_CONFIG)), 'no restart loop on a config error');
  assert.ok(get('ExecStart').some((v) => / run --config \/etc\/ntsd\/ntsd\.toml$/.test(v)));
  assert.ok(get('ExecStartPre').some((v) => / validate --config \/etc\/ntsd\/ntsd\.toml$/.test(v)));
  // The keyset path in the example config lives in the unit's StateDirectory.
  assert.ok(parseExample(readDeploy('ntsd.toml')).keyset.keyStoragePath.startsWith('/var/lib/ntsd/'));
});

test('certbot deploy hook: valid sh, installs the pair atomically with the right modes', () => {
  const hook = join(DEPLOY, 'certbot-deploy-hook.sh');
  const syntax = spawnSync('sh', ['-n', hook], { encoding: 'utf8' });
  assert.equal(syntax.status, 0, syntax.stderr);

  withTempDir((dir) => {
    const lineage = join(dir, 'live', 'nts.example.org');
    const dest = join(dir, 'etc-ntsd');
    mkdirSync(lineage, { recursive: true });
    const { uid, gid } = userInfo();
    const env = {
      ...process.env,
      RENEWED_LINEAGE: lineage,
      NTSD_CERT_DIR: dest,
      NTSD_USER: String(uid),
      NTSD_GROUP: String(gid),
      NTSD_RELOAD: '0',
    };
    const run = (extra: Record<string, string> = {}): SpawnSyncReturns<string> =>
      spawnSync('sh', [hook], { encoding: 'utf8', env: { ...env, ...extra }, timeout: 10_000 });

    // Missing files: refuse, install nothing.
    const missing = run();
    assert.notEqual(missing.status, 0);
    assert.equal(existsSync(join(dest, 'privkey.pem')), false);

    for (const round of ['first', 'renewal']) {
      writeFileSync(join(lineage, 'fullchain.pem'), `chain ${round}\n`);
      writeFileSync(join(lineage, 'privkey.pem'), `key ${round}\n`);
      const r = run();
      assert.equal(r.status, 0, describeRun(r));
      assert.equal(readFileSync(join(dest, 'fullchain.pem'), 'utf8'), `chain ${round}\n`);
      assert.equal(readFileSync(join(dest, 'privkey.pem'), 'utf8'), `key ${round}\n`);
      assert.equal(statSync(join(dest, 'privkey.pem')).mode & 0o777, 0o600);
      assert.equal(statSync(join(dest, 'fullchain.pem')).mode & 0o777, 0o644);
      assert.deepEqual(readdirSync(dest).sort(), ['fullchain.pem', 'privkey.pem'], 'no temporary files left');
    }

    // Another certificate's renewal is ignored when NTSD_CERT_NAME is set.
    writeFileSync(join(lineage, 'privkey.pem'), 'key other\n');
    const other = run({ NTSD_CERT_NAME: 'some-other-name' });
    assert.equal(other.status, 0, describeRun(other));
    assert.equal(readFileSync(join(dest, 'privkey.pem'), 'utf8'), 'key renewal\n');

    // Several certificates (NTSD_CERT_NAMES): each listed name gets its own directory, others are ignored.
    const names = { NTSD_CERT_NAMES: 'time.example.org nts.example.org' };
    const several = run(names);
    assert.equal(several.status, 0, describeRun(several));
    assert.equal(readFileSync(join(dest, 'nts.example.org', 'privkey.pem'), 'utf8'), 'key other\n');
    assert.equal(readFileSync(join(dest, 'nts.example.org', 'fullchain.pem'), 'utf8'), 'chain renewal\n');
    assert.equal(statSync(join(dest, 'nts.example.org', 'privkey.pem')).mode & 0o777, 0o600);
    assert.equal(readFileSync(join(dest, 'privkey.pem'), 'utf8'), 'key renewal\n', 'the single-pair files are left alone');
    const unlisted = run({ NTSD_CERT_NAMES: 'time.example.org' });
    assert.equal(unlisted.status, 0, describeRun(unlisted));
    assert.deepEqual(readdirSync(dest).sort(), ['fullchain.pem', 'nts.example.org', 'privkey.pem']);
  });
});

test('chrony snippet serves loopback only, on the port ntsd follows, without a UDP command port', () => {
  const text = readDeploy('chrony-host.conf');
  const directives = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^[#!;%]/.test(l))
    .map((l) => l.split(/\s+/));
  const values = (name: string): string[] => directives.filter((d) => d[0] === name).map((d) => d.slice(1).join(' '));
  const config = parseExample(readDeploy('ntsd.toml'));
  assert.equal(config.timeSource.mode, 'follow');
  if (config.timeSource.mode !== 'follow') return;
  const follow = config.timeSource.address;
  assert.notEqual(follow.port, 123, 'ntsd owns UDP 123, so chrony must serve elsewhere');
  assert.deepEqual(values('port'), [String(follow.port)]);
  assert.ok(values('bindaddress').includes(follow.host));
  assert.ok(values('bindaddress').every((a) => a === '127.0.0.1' || a === '::1'), 'loopback only');
  assert.deepEqual(values('allow'), [follow.host]);
  assert.deepEqual(values('cmdport'), ['0']);
  assert.ok(values('server').length + values('pool').length >= 3, 'upstream sources');
});
