import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULTS,
  nodeRole,
  formatListenAddress,
  parseListenAddress,
  parseReferenceId,
  validateConfig,
  type Config,
  type ConfigResult,
} from '../../src/config/schema.js';

import { changesRequiringRestart } from '../../src/config/reload.js';
type Doc = Record<string, unknown>;
const OPTIONS = { baseDir: '/etc/ntsd', cpuCount: 4 };

/** The smallest valid document. */
function base(): Doc {
  return {
    server: [{ listen: '0.0.0.0:123' }],
    'nts-ke-server': [{ listen: '0.0.0.0:4460', 'certificate-chain-path': 'fullchain.pem', 'private-key-path': 'privkey.pem' }],
  };
}

function valid(doc: Doc): Config {
  const r = validateConfig(doc, OPTIONS);
  if (!r.ok) assert.fail(`expected valid config, got:\n${r.errors.join('\n')}`);
  return r.config;
}

function errorsOf(result: ConfigResult): string[] {
  if (result.ok) return assert.fail('expected validation errors, got a valid config');
  return result.errors;
}

function table(doc: Doc, key: string): Doc {
  const existing = doc[key];
  if (existing !== undefined) return existing as Doc;
  const created: Doc = {};
  doc[key] = created;
  return created;
}

function first(doc: Doc, key: 'server' | 'nts-ke-server'): Doc {
  return (doc[key] as Doc[])[0] as Doc;
}

/** [key path, how to break it] — one row per configuration key. */
const BAD_VALUES: readonly (readonly [string, (d: Doc) => void])[] = [
  ['server[0].listen', (d) => (first(d, 'server')['listen'] = 'abc')],
  ['server[0].require-nts', (d) => (first(d, 'server')['require-nts'] = 'yes')],
  ['server[0].accept-ntp-versions', (d) => (first(d, 'server')['accept-ntp-versions'] = [5])],
  ['nts-ke-server[0].listen', (d) => (first(d, 'nts-ke-server')['listen'] = '1.2.3.4')],
  ['nts-ke-server[0].certificate-chain-path', (d) => (first(d, 'nts-ke-server')['certificate-chain-path'] = 5)],
  ['nts-ke-server[0].private-key-path', (d) => (first(d, 'nts-ke-server')['private-key-path'] = '')],
  ['nts-ke-server[0].key-exchange-timeout-ms', (d) => (first(d, 'nts-ke-server')['key-exchange-timeout-ms'] = 0)],
  ['nts-ke-server[0].concurrent-connections', (d) => (first(d, 'nts-ke-server')['concurrent-connections'] = -1)],
  ['nts-ke-server[0].deny', (d) => (first(d, 'nts-ke-server')['deny'] = ['10.0.0.0/40'])],
  ['nts-ke-server[0].access-default', (d) => (first(d, 'nts-ke-server')['access-default'] = 'drop')],
  ['nts-ke-server[0].threads', (d) => (first(d, 'nts-ke-server')['threads'] = -1)],
  ['nts-ke-server[0].concurrent-connections-per-source', (d) => (first(d, 'nts-ke-server')['concurrent-connections-per-source'] = 0)],
  ['nts-ke-server[0].max-request-bytes', (d) => (first(d, 'nts-ke-server')['max-request-bytes'] = 512)],
  ['nts-ke-server[0].ntp-server', (d) => (first(d, 'nts-ke-server')['ntp-server'] = 'bad host!')],
  ['nts-ke-server[0].ntp-port', (d) => (first(d, 'nts-ke-server')['ntp-port'] = 70000)],
  ['nts-ke-server[0].aead-algorithms', (d) => (first(d, 'nts-ke-server')['aead-algorithms'] = [16])],
  ['nts-ke-server[0].certificate-reload-interval-s', (d) => (first(d, 'nts-ke-server')['certificate-reload-interval-s'] = 1.5)],
  ['nts-ke-server[0].client-rate-limit-interval-s', (d) => (first(d, 'nts-ke-server')['client-rate-limit-interval-s'] = -1)],
  ['nts-ke-server[0].client-rate-limit-burst', (d) => (first(d, 'nts-ke-server')['client-rate-limit-burst'] = 0)],
  ['nts-ke-server[0].client-rate-limit-table-size', (d) => (first(d, 'nts-ke-server')['client-rate-limit-table-size'] = 1)],
  ['nts-ke-server[0].thread-niceness', (d) => (first(d, 'nts-ke-server')['thread-niceness'] = 20)],
  ['nts-ke-server[0].accepted-pool-authentication-tokens', (d) => (first(d, 'nts-ke-server')['accepted-pool-authentication-tokens'] = ['ok', ''])],
  ['nts-ke-server[0].longlived-connections', (d) => (first(d, 'nts-ke-server')['longlived-connections'] = 513)],
  ['nts-ke-server[0].keep-alive-idle-timeout-s', (d) => (first(d, 'nts-ke-server')['keep-alive-idle-timeout-s'] = 301)],
  ['nts-ke-server[0].keep-alive-max-age-s', (d) => (first(d, 'nts-ke-server')['keep-alive-max-age-s'] = 3601)],
  ['keyset.key-storage-path', (d) => (table(d, 'keyset')['key-storage-path'] = 7)],
  ['keyset.key-rotation-interval-s', (d) => (table(d, 'keyset')['key-rotation-interval-s'] = 9)],
  ['keyset.stale-key-count', (d) => (table(d, 'keyset')['stale-key-count'] = 0)],
  ['keyset.mode', (d) => (table(d, 'keyset')['mode'] = 'shared')],
  ['observability.log-level', (d) => (table(d, 'observability')['log-level'] = 'loud')],
  ['observability.log-format', (d) => (table(d, 'observability')['log-format'] = 'xml')],
  ['observability.log-file', (d) => (table(d, 'observability')['log-file'] = '')],
  ['observability.metrics-listen', (d) => (table(d, 'observability')['metrics-listen'] = 'localhost:9975')],
  ['observability.client-log-size', (d) => (table(d, 'observability')['client-log-size'] = -1)],
  ['observability.client-log-size', (d) => (table(d, 'observability')['client-log-size'] = 1.5)],
  ['worker-pool.threads', (d) => (table(d, 'worker-pool')['threads'] = 1000)],
  ['worker-pool.receive-buffer-bytes', (d) => (table(d, 'worker-pool')['receive-buffer-bytes'] = -1)],
  ['time-source.mode', (d) => (table(d, 'time-source')['mode'] = 'gps')],
  ['time-source.local-stratum', (d) => Object.assign(table(d, 'time-source'), { mode: 'static', 'local-stratum': 0 })],
  ['time-source.reference-id', (d) => Object.assign(table(d, 'time-source'), { mode: 'static', 'local-stratum': 2, 'reference-id': 'TOOLONG' })],
  ['time-source.address', (d) => (table(d, 'time-source')['address'] = 'x')],
  ['time-source.poll-interval-s', (d) => (table(d, 'time-source')['poll-interval-s'] = 0)],
];

for (const [path, breakIt] of BAD_VALUES) {
  test(`a bad ${path} is reported with its key path`, () => {
    const doc = base();
    breakIt(doc);
    const errors = errorsOf(validateConfig(doc, OPTIONS));
    assert.equal(errors.length, 1, errors.join('\n'));
    assert.ok(errors[0]?.startsWith(`${path}`), `"${errors[0]}" should start with "${path}"`);
  });
}

test('every problem is reported at once, not only the first', () => {
  const doc = base();
  // Only the non-time-source rows: the time-source rows overwrite each other's mode.
  const rows = BAD_VALUES.filter(([path]) => !path.startsWith('time-source'));
  for (const [, breakIt] of rows) breakIt(doc);
  const errors = errorsOf(validateConfig(doc, OPTIONS));
  for (const [path] of rows) assert.ok(errors.some((e) => e.startsWith(path)), `no error for ${path} in:\n${errors.join('\n')}`);
});

test('messages have the documented shape', () => {
  const doc = base();
  first(doc, 'server')['listen'] = 'abc';
  table(doc, 'keyset')['stale-key-count'] = 0;
  table(doc, 'observability')['log-levle'] = 'debug';
  const errors = errorsOf(validateConfig(doc, OPTIONS));
  assert.ok(errors.some((e) => e.startsWith('server[0].listen: expected "host:port"') && e.endsWith('got "abc"')), errors.join('\n'));
  assert.ok(errors.includes('keyset.stale-key-count: must be an integer between 1 and 1000, got 0'), errors.join('\n'));
  assert.ok(errors.includes('observability.log-levle: unknown key'), errors.join('\n'));
});

test('unknown keys are errors at every level', () => {
  const doc = base();
  doc['servers'] = [{ listen: '1.2.3.4:123' }];
  first(doc, 'server')['lisen'] = '1.2.3.4:123';
  (doc['nts-ke-server'] as Doc[]).push({ listen: '127.0.0.1:4461', 'certificate-chain-path': 'a', 'private-key-path': 'b', foo: 1 });
  table(doc, 'keyset')['rotation'] = 5;
  table(doc, 'worker-pool')['thread'] = 2;
  table(doc, 'time-source')['stratum'] = 3;
  const errors = errorsOf(validateConfig(doc, OPTIONS));
  assert.deepEqual(errors.toSorted(), [
    'keyset.rotation: unknown key',
    'nts-ke-server[1].foo: unknown key',
    'server[0].lisen: unknown key',
    'servers: unknown key',
    'time-source.stratum: unknown key',
    'worker-pool.thread: unknown key',
  ]);
});

test('keys of the other time-source mode are rejected', () => {
  const staticDoc = base();
  staticDoc['time-source'] = { mode: 'static', 'local-stratum': 1, 'reference-id': 'GPS', address: '127.0.0.1:123' };
  assert.deepEqual(errorsOf(validateConfig(staticDoc, OPTIONS)), ['time-source.address: only valid with mode = "follow"']);
  const followDoc = base();
  followDoc['time-source'] = { mode: 'follow', 'local-stratum': 1 };
  assert.deepEqual(errorsOf(validateConfig(followDoc, OPTIONS)), ['time-source.local-stratum: only valid with mode = "static"']);
  const noStratum = base();
  noStratum['time-source'] = { mode: 'static' };
  assert.match(errorsOf(validateConfig(noStratum, OPTIONS)).join('\n'), /^time-source\.local-stratum: required/);
});

test('defaults match OPERATIONS.md', () => {
  const c = valid(base());
  assert.equal(c.servers.length, 1);
  assert.deepEqual(c.servers[0], {
    listen: { host: '0.0.0.0', port: 123, family: 'IPv4' },
    requireNts: false,
    acceptNtpVersions: [3, 4],
    // Off by default, like chrony's ratelimit.
    rateLimit: { intervalMs: 0, burst: 8, leak: 2, tableSize: 65536, ipv4PrefixBits: 32, ipv6PrefixBits: 64 },
    access: { entries: [], defaultAction: 'allow' },
    // RFC 9769: on by default (the native datapath serves it; dgram answers in basic mode).
    interleave: { enabled: true, tableSize: 65536 },
  });
  const ke = c.ntsKeServers[0];
  assert.ok(ke !== undefined);
  assert.equal(ke.keyExchangeTimeoutMs, 2000);
  assert.equal(ke.concurrentConnections, 512);
  assert.equal(ke.concurrentConnectionsPerSource, 16);
  assert.equal(ke.threads, 0);
  assert.deepEqual(ke.access, { entries: [], defaultAction: 'allow' });
  assert.equal(ke.maxRequestBytes, 4096);
  assert.deepEqual(ke.aeadAlgorithms, [15, 16, 17, 30]);
  assert.equal(ke.certificateReloadIntervalS, 60);
  assert.equal(ke.threadNiceness, 10);
  assert.equal(ke.ntpServer, undefined);
  assert.deepEqual(ke.clientRateLimit, { intervalS: 64, burst: 8, tableSize: 65536 });
  assert.deepEqual(c.keyset, {
    mode: 'local',
    keyStoragePath: '/var/lib/ntsd/keyset',
    keyRotationIntervalS: 86400,
    staleKeyCount: 7,
    followPollIntervalS: 10,
    sharedSecretPath: undefined,
    acceptSharedSecretPath: undefined,
  });
  assert.deepEqual(c.observability, {
    logLevel: 'info',
    logFormat: 'auto',
    logFile: undefined,
    metricsListen: { host: '127.0.0.1', port: 9975, family: 'IPv4' },
    clientLogSize: 4096,
  });
  assert.deepEqual(c.workerPool, {
    threads: 3,
    datapath: 'auto',
    sendMode: 'each',
    receiveBufferBytes: 0,
    aeadBackend: 'auto',
  });
  // The safe default: follow the host daemon, so nothing is claimed that the host does not have.
  assert.deepEqual(c.timeSource, { mode: 'follow', address: { host: '127.0.0.1', port: 123, family: 'IPv4' }, pollIntervalS: 16 });
  assert.equal(DEFAULTS.timeSource.mode, 'follow');
});

test('[[server]] rate limit and access lists: values, and errors naming the key', () => {
  const server = (extra: Record<string, unknown>): Doc => ({ ...base(), server: [{ listen: '0.0.0.0:123', ...extra }] });
  const c = valid(server({ 'client-rate-limit-interval-s': 0.5, 'client-rate-limit-burst': 16, 'client-rate-limit-leak': 0, allow: ['10.0.0.0/8'], deny: ['10.9.0.0/16'], ignore: ['2001:db8::/32'], 'access-default': 'ignore' }));
  const s = c.servers[0];
  assert.ok(s !== undefined);
  assert.equal(s.rateLimit.intervalMs, 500);
  assert.equal(s.rateLimit.burst, 16);
  assert.equal(s.rateLimit.leak, 0);
  assert.deepEqual(s.access, {
    entries: [
      { prefix: '10.0.0.0/8', action: 'allow' },
      { prefix: '10.9.0.0/16', action: 'deny' },
      { prefix: '2001:db8::/32', action: 'ignore' },
    ],
    defaultAction: 'ignore',
  });
  const errors = (extra: Record<string, unknown>): string[] => {
    const r = validateConfig(server(extra), OPTIONS);
    assert.ok(!r.ok);
    return r.errors;
  };
  assert.deepEqual(errors({ 'client-rate-limit-interval-s': -1 }), ['server[0].client-rate-limit-interval-s: must be a number between 0 and 86400, got -1']);
  assert.deepEqual(errors({ 'client-rate-limit-leak': 17 }), ['server[0].client-rate-limit-leak: must be an integer between 0 and 16, got 17']);
  assert.deepEqual(errors({ deny: ['10.0.0.0/40'] }), ['server[0].deny[0]: not a CIDR prefix (e.g. "192.0.2.0/24", "2001:db8::/32" or one address): "10.0.0.0/40"']);
  assert.deepEqual(errors({ allow: ['10.0.0.0/8'], deny: ['192.0.2.0/24', '192.0.2.0/33'] }), ['server[0].deny[1]: not a CIDR prefix (e.g. "192.0.2.0/24", "2001:db8::/32" or one address): "192.0.2.0/33"']);
  assert.deepEqual(errors({ allow: 'all' }), ['server[0].allow: must be an array of strings, got "all"']);
  assert.deepEqual(errors({ allow: ['10.0.0.0/8'], ignore: ['10.0.0.0/8'] }), ['server[0].ignore[0]: 10.0.0.0/8 is listed as both allow and ignore']);
  assert.deepEqual(errors({ 'access-default': 'maybe' }), ['server[0].access-default: must be one of "allow", "deny", "ignore", got "maybe"']);
});

test('[[server]] interleaved and interleaved-table-size (RFC 9769) are read and checked, naming the key', () => {
  const server = (extra: Record<string, unknown>): Doc => ({ ...base(), server: [{ listen: '0.0.0.0:123', ...extra }] });
  assert.deepEqual(valid(server({ interleaved: false, 'interleaved-table-size': 1024 })).servers[0]?.interleave, { enabled: false, tableSize: 1024 });
  const errors = (extra: Record<string, unknown>): string[] => {
    const r = validateConfig(server(extra), OPTIONS);
    assert.ok(!r.ok);
    return r.errors;
  };
  assert.deepEqual(errors({ interleaved: 'yes' }), ['server[0].interleaved: must be true or false, got "yes"']);
  assert.deepEqual(errors({ 'interleaved-table-size': 8 }), ['server[0].interleaved-table-size: must be an integer between 16 and 16777216, got 8']);
  assert.deepEqual(errors({ 'interleaved-table-size': 2.5 }), ['server[0].interleaved-table-size: must be an integer between 16 and 16777216, got 2.5']);
});

test('worker-pool.datapath, send-mode and receive-buffer-bytes are checked, naming the key', () => {
  const bad = (pool: Record<string, unknown>): string[] => {
    const r = validateConfig({ ...base(), 'worker-pool': pool }, { baseDir: '/etc/ntsd', cpuCount: 4 });
    assert.ok(!r.ok);
    return r.errors;
  };
  assert.deepEqual(bad({ datapath: 'fast' }), ['worker-pool.datapath: must be one of "auto", "native", "dgram", got "fast"']);
  assert.deepEqual(bad({ 'send-mode': 'later' }), ['worker-pool.send-mode: must be one of "each", "batch", got "later"']);
  assert.match(bad({ 'receive-buffer-bytes': -1 })[0] ?? '', /^worker-pool\.receive-buffer-bytes: must be an integer between 0 and/);
  assert.equal(valid({ ...base(), 'worker-pool': { datapath: 'native', 'send-mode': 'batch', 'receive-buffer-bytes': 4194304 } }).workerPool.receiveBufferBytes, 4194304);
});

test('worker-pool.threads defaults to CPUs - 1, at least 1; 0 is refused', () => {
  const one = validateConfig(base(), { ...OPTIONS, cpuCount: 1 });
  assert.ok(one.ok);
  assert.equal(one.config.workerPool.threads, 1);
  const doc = base();
  doc['worker-pool'] = { threads: 0 };
  assert.deepEqual(errorsOf(validateConfig(doc, OPTIONS)), [
    'worker-pool.threads: must be at least 1: 0 (answer inline on the main thread) is gone; every NTP thread owns its sockets',
  ]);
});

test('the retired worker-pool keys are refused, each naming what replaced it', () => {
  const expected: Record<string, RegExp> = {
    'receive-threads': /^worker-pool\.receive-threads: removed; every NTP thread now owns its sockets: set worker-pool\.threads$/,
    'batch-size': /^worker-pool\.batch-size: removed; NTP threads answer each packet inline/,
    'flush-interval-us': /^worker-pool\.flush-interval-us: removed; NTP threads answer each packet inline/,
    'queue-limit': /^worker-pool\.queue-limit: removed; .*receive-buffer-bytes/,
  };
  for (const [key, message] of Object.entries(expected)) {
    const doc = base();
    doc['worker-pool'] = { [key]: 2 };
    const errors = errorsOf(validateConfig(doc, OPTIONS));
    assert.equal(errors.length, 1, key);
    assert.match(errors[0] ?? '', message);
  }
  // A restart is needed to change the thread count (the sockets are bound at start).
  const more = base();
  more['worker-pool'] = { threads: 1 };
  assert.deepEqual(changesRequiringRestart(valid(base()), valid(more)), ['worker-pool']);
});

test('metrics-listen = "" turns the endpoint off', () => {
  const doc = base();
  doc['observability'] = { 'metrics-listen': '' };
  assert.equal(valid(doc).observability.metricsListen, undefined);
});

test('listen accepts IPv4 and bracketed IPv6, and rejects everything else', () => {
  assert.deepEqual(parseListenAddress('[::]:123'), { host: '::', port: 123, family: 'IPv6' });
  assert.deepEqual(parseListenAddress('[2001:db8::1]:4460'), { host: '2001:db8::1', port: 4460, family: 'IPv6' });
  assert.deepEqual(parseListenAddress('[::ffff:192.0.2.1]:123'), { host: '::ffff:192.0.2.1', port: 123, family: 'IPv6' });
  assert.deepEqual(parseListenAddress('192.0.2.1:0'), { host: '192.0.2.1', port: 0, family: 'IPv4' });
  for (const bad of ['abc', '::1:123', '[::1]', '[::1]:', '[fe80::1%eth0]:123', '1.2.3.4:65536', '01.2.3.4:1', '[::1]:12x', 'localhost:123', '1.2.3:123', '[1.2.3.4]:123', '[:::1]:1', '1.2.3.4:-1']) {
    assert.equal(parseListenAddress(bad), undefined, bad);
  }
  assert.equal(formatListenAddress({ host: '::1', port: 4460, family: 'IPv6' }), '[::1]:4460');
  assert.equal(formatListenAddress({ host: '127.0.0.1', port: 123, family: 'IPv4' }), '127.0.0.1:123');
  const doc = base();
  first(doc, 'server')['listen'] = '[::1]:11123';
  assert.deepEqual(valid(doc).servers[0]?.listen, { host: '::1', port: 11123, family: 'IPv6' });
});

test('several [[server]] and [[nts-ke-server]] tables; at least one of the two', () => {
  const doc = base();
  (doc['server'] as Doc[]).push({ listen: '[::]:123' });
  (doc['nts-ke-server'] as Doc[]).push({ listen: '[::]:4460', 'certificate-chain-path': 'a', 'private-key-path': 'b' });
  const c = valid(doc);
  assert.equal(c.servers.length, 2);
  assert.equal(c.ntsKeServers.length, 2);

  const none: Doc = {};
  assert.deepEqual(errorsOf(validateConfig(none, OPTIONS)), [
    'server: at least one [[server]] (NTP), [[nts-ke-server]] (NTS-KE) or [pool-ke] (pool front end) table is required',
  ]);
  const empty = base();
  empty['server'] = [];
  empty['nts-ke-server'] = [];
  assert.deepEqual(errorsOf(validateConfig(empty, OPTIONS)), ['server: at least one [[server]] (NTP), [[nts-ke-server]] (NTS-KE) or [pool-ke] (pool front end) table is required']);
  const notArray = base();
  notArray['server'] = { listen: '1.2.3.4:123' };
  assert.match(errorsOf(validateConfig(notArray, OPTIONS)).join('\n'), /^server: must be an array of tables \(\[\[server\]\]\)/);
});

test('the same listen address twice is an error', () => {
  const doc = base();
  (doc['server'] as Doc[]).push({ listen: '0.0.0.0:123' });
  assert.deepEqual(errorsOf(validateConfig(doc, OPTIONS)), ['server[1].listen: same address as server[0].listen']);
  const clash = base();
  clash['observability'] = { 'metrics-listen': '0.0.0.0:4460' };
  assert.deepEqual(errorsOf(validateConfig(clash, OPTIONS)), ['observability.metrics-listen: same TCP address as nts-ke-server[0].listen']);
});

test('without ntp-port the KE server advertises the port of the first [[server]]', () => {
  const doc = base();
  doc['server'] = [{ listen: '127.0.0.1:11123' }, { listen: '[::1]:22123' }];
  (doc['nts-ke-server'] as Doc[]).push({ listen: '[::1]:4460', 'certificate-chain-path': 'a', 'private-key-path': 'b', 'ntp-port': 123 });
  const c = valid(doc);
  assert.equal(c.ntsKeServers[0]?.ntpPort, 11123);
  assert.equal(c.ntsKeServers[0]?.ntpPortExplicit, false);
  assert.equal(c.ntsKeServers[1]?.ntpPort, 123);
  assert.equal(c.ntsKeServers[1]?.ntpPortExplicit, true);
});

test('aead-algorithms: 15 is mandatory (RFC 8915 §5.1); only 15, 16, 17, 30; no duplicates', () => {
  const set = (v: unknown): string[] => {
    const doc = base();
    first(doc, 'nts-ke-server')['aead-algorithms'] = v;
    const r = validateConfig(doc, OPTIONS);
    return r.ok ? [] : r.errors;
  };
  assert.deepEqual(set([30, 15]), []);
  assert.deepEqual(set([16, 17]), ['nts-ke-server[0].aead-algorithms: must include 15 (AEAD_AES_SIV_CMAC_256, mandatory per RFC 8915 §5.1)']);
  assert.deepEqual(set([15, 99]), ['nts-ke-server[0].aead-algorithms[1]: must be one of {15, 16, 17, 30}, got 99']);
  assert.deepEqual(set([15, 15]), ['nts-ke-server[0].aead-algorithms[1]: duplicate value 15']);
  assert.match(set([]).join(), /^nts-ke-server\[0\]\.aead-algorithms: must be a non-empty array/);
  assert.match(set('15').join(), /^nts-ke-server\[0\]\.aead-algorithms: must be a non-empty array/);
});

test('require-nts needs NTPv4 in accept-ntp-versions (RFC 8915 §5)', () => {
  const doc = base();
  Object.assign(first(doc, 'server'), { 'require-nts': true, 'accept-ntp-versions': [3] });
  assert.match(errorsOf(validateConfig(doc, OPTIONS)).join(), /^server\[0\]\.accept-ntp-versions: must include 4/);
});

test('ntp-server accepts IPv4, IPv6 without brackets and DNS names (RFC 8915 §4.1.7)', () => {
  for (const ok of ['192.0.2.1', '2001:db8::1', 'time.example.com', 'time.example.com.']) {
    const doc = base();
    first(doc, 'nts-ke-server')['ntp-server'] = ok;
    assert.equal(valid(doc).ntsKeServers[0]?.ntpServer, ok);
  }
  for (const bad of ['[2001:db8::1]', 'a b', '-x.example', '']) {
    const doc = base();
    first(doc, 'nts-ke-server')['ntp-server'] = bad;
    assert.match(errorsOf(validateConfig(doc, OPTIONS)).join(), /^nts-ke-server\[0\]\.ntp-server: /, bad);
  }
});

test('relative paths resolve against the config directory; absolute paths stay', () => {
  const doc = base();
  first(doc, 'nts-ke-server')['private-key-path'] = '/etc/letsencrypt/live/x/privkey.pem';
  doc['keyset'] = { 'key-storage-path': '../state/keys' };
  doc['observability'] = { 'log-file': 'logs/ntsd.log' };
  const c = valid(doc);
  assert.equal(c.ntsKeServers[0]?.certificates[0]?.certificateChainPath, '/etc/ntsd/fullchain.pem');
  assert.equal(c.ntsKeServers[0]?.certificates[0]?.privateKeyPath, '/etc/letsencrypt/live/x/privkey.pem');
  assert.equal(c.keyset.keyStoragePath, '/etc/state/keys');
  assert.equal(c.observability.logFile, '/etc/ntsd/logs/ntsd.log');
});

test('static time source: reference id as ASCII or IPv4 (RFC 5905 §7.3)', () => {
  assert.equal(parseReferenceId('GPS'), 0x47505300);
  assert.equal(parseReferenceId('LOCL'), 0x4c4f434c);
  assert.equal(parseReferenceId('192.0.2.1'), 0xc0000201);
  assert.equal(parseReferenceId(''), undefined);
  assert.equal(parseReferenceId('ABCDE'), undefined);
  assert.equal(parseReferenceId('A B'), undefined);
  const doc = base();
  doc['time-source'] = { mode: 'static', 'local-stratum': 1, 'reference-id': 'GPS' };
  assert.deepEqual(valid(doc).timeSource, { mode: 'static', localStratum: 1, referenceId: 0x47505300, referenceIdText: 'GPS' });
  doc['time-source'] = { mode: 'static', 'local-stratum': 16 };
  assert.deepEqual(valid(doc).timeSource, { mode: 'static', localStratum: 16, referenceId: 0x4c4f434c, referenceIdText: 'LOCL' });
});

test('follow time source: address and poll interval', () => {
  const doc = base();
  doc['time-source'] = { mode: 'follow', address: '[::1]:10123', 'poll-interval-s': 4 };
  assert.deepEqual(valid(doc).timeSource, { mode: 'follow', address: { host: '::1', port: 10123, family: 'IPv6' }, pollIntervalS: 4 });
  doc['time-source'] = { mode: 'follow', address: '127.0.0.1:0' };
  assert.deepEqual(errorsOf(validateConfig(doc, OPTIONS)), ['time-source.address: port must not be 0']);
});

test('wrong value types name the type they got', () => {
  const doc = base();
  doc['keyset'] = 'keys';
  doc['observability'] = { 'log-level': 3 };
  const errors = errorsOf(validateConfig(doc, OPTIONS));
  assert.ok(errors.includes('keyset: must be a table ([keyset]), got "keys"'), errors.join('\n'));
  assert.ok(errors.includes('observability.log-level: must be a string, got 3'), errors.join('\n'));
  assert.deepEqual(errorsOf(validateConfig([], OPTIONS)), ['(top level): expected a table']);
});

test('changesRequiringRestart lists listen and structural changes, not runtime-tunable ones', () => {
  const running = valid(base());
  const tuned = base();
  Object.assign(first(tuned, 'nts-ke-server'), { 'client-rate-limit-burst': 2, 'concurrent-connections': 10, 'certificate-chain-path': 'new.pem' });
  tuned['observability'] = { 'log-level': 'debug' };
  tuned['keyset'] = { 'stale-key-count': 3 };
  assert.deepEqual(changesRequiringRestart(running, valid(tuned)), []);
  const moved = base();
  first(moved, 'server')['listen'] = '0.0.0.0:1123';
  (moved['nts-ke-server'] as Doc[]).push({ listen: '[::]:4460', 'certificate-chain-path': 'a', 'private-key-path': 'b' });
  moved['worker-pool'] = { threads: 1 };
  moved['time-source'] = { mode: 'static', 'local-stratum': 3 };
  moved['observability'] = { 'metrics-listen': '' };
  assert.deepEqual(changesRequiringRestart(running, valid(moved)), [
    'server[0].listen',
    'nts-ke-server',
    'observability.metrics-listen',
    'worker-pool',
    'time-source',
  ]);
});

test('roles: no [[server]] is a KE-only node, which must name ntp-server and ntp-port', () => {
  const keOnly = base();
  delete keOnly['server'];
  assert.deepEqual(errorsOf(validateConfig(keOnly, OPTIONS)), [
    "nts-ke-server[0].ntp-server: required on a KE-only node (no [[server]] table): the NTP node's DNS name or IP address, sent as the Server Negotiation record (RFC 8915 §4.1.7)",
    "nts-ke-server[0].ntp-port: required on a KE-only node (no [[server]] table): the NTP node's UDP port, sent as the Port Negotiation record when not 123 (RFC 8915 §4.1.8)",
  ]);
  Object.assign(first(keOnly, 'nts-ke-server'), { 'ntp-server': 'ntp1.example.org', 'ntp-port': 123 });
  const c = valid(keOnly);
  assert.equal(nodeRole(c), 'ke-only');
  assert.deepEqual(c.servers, []);
  assert.equal(c.ntsKeServers[0]?.ntpServer, 'ntp1.example.org');
  assert.equal(c.ntsKeServers[0]?.ntpPort, 123);
  assert.equal(c.ntsKeServers[0]?.ntpPortExplicit, true);
  // An explicitly empty array of tables is the same as none.
  const emptyArray = base();
  emptyArray['server'] = [];
  assert.equal(errorsOf(validateConfig(emptyArray, OPTIONS)).length, 2);
});

test('roles: no [[nts-ke-server]] is an NTP-only node; both is a combined node', () => {
  const ntpOnly = base();
  delete ntpOnly['nts-ke-server'];
  const c = valid(ntpOnly);
  assert.equal(nodeRole(c), 'ntp-only');
  assert.deepEqual(c.ntsKeServers, []);
  assert.equal(nodeRole(valid(base())), 'combined');
});

test('keyset modes: each mode takes only its own keys, each refusal names the key', () => {
  const ratchet = base();
  ratchet['keyset'] = { mode: 'ratchet' };
  assert.deepEqual(errorsOf(validateConfig(ratchet, OPTIONS)), [
    'keyset.shared-secret-path: required when mode = "ratchet" (a file of at least 32 random octets, e.g. `head -c 32 /dev/urandom`, mode 0600)',
  ]);
  ratchet['keyset'] = { mode: 'ratchet', 'shared-secret-path': 'seed', 'accept-shared-secret-path': '/etc/ntsd/old.seed', 'key-rotation-interval-s': 3600, 'stale-key-count': 2 };
  const r = valid(ratchet).keyset;
  assert.equal(r.mode, 'ratchet');
  assert.equal(r.sharedSecretPath, '/etc/ntsd/seed');
  assert.equal(r.acceptSharedSecretPath, '/etc/ntsd/old.seed');
  assert.equal(r.keyRotationIntervalS, 3600);
  assert.equal(r.staleKeyCount, 2);
  ratchet['keyset'] = { mode: 'ratchet', 'shared-secret-path': 'seed', 'accept-shared-secret-path': 'seed', 'key-storage-path': 'k', 'follow-poll-interval-s': 5 };
  assert.deepEqual(errorsOf(validateConfig(ratchet, OPTIONS)), [
    'keyset.follow-poll-interval-s: only valid with mode = "follow"',
    'keyset.key-storage-path: not used with mode = "ratchet" (keys are derived from shared-secret-path, never stored)',
    'keyset.accept-shared-secret-path: must name a different file than shared-secret-path',
  ]);

  const follow = base();
  follow['keyset'] = { mode: 'follow', 'key-storage-path': '/srv/keys/keyset', 'follow-poll-interval-s': 3 };
  const f = valid(follow).keyset;
  assert.equal(f.mode, 'follow');
  assert.equal(f.keyStoragePath, '/srv/keys/keyset');
  assert.equal(f.followPollIntervalS, 3);
  follow['keyset'] = { mode: 'follow', 'stale-key-count': 3, 'shared-secret-path': 's', 'follow-poll-interval-s': 0 };
  assert.deepEqual(errorsOf(validateConfig(follow, OPTIONS)), [
    'keyset.shared-secret-path: only valid with mode = "ratchet"',
    'keyset.stale-key-count: not used with mode = "follow" (the followed key file carries it; set it on the node that writes the file)',
    'keyset.follow-poll-interval-s: must be an integer between 1 and 3600, got 0',
  ]);

  const local = base();
  local['keyset'] = { 'follow-poll-interval-s': 3 };
  assert.deepEqual(errorsOf(validateConfig(local, OPTIONS)), ['keyset.follow-poll-interval-s: only valid with mode = "follow"']);
});

test('proxy-protocol: off by default; on, it needs proxy-trusted-sources (CIDR prefixes); off, that key is refused', () => {
  const doc = base();
  assert.equal(valid(doc).ntsKeServers[0]?.proxyProtocol, false);
  assert.deepEqual(valid(doc).ntsKeServers[0]?.proxyTrustedSources, []);
  Object.assign(first(doc, 'nts-ke-server'), { 'proxy-protocol': true });
  assert.deepEqual(errorsOf(validateConfig(doc, OPTIONS)), [
    'nts-ke-server[0].proxy-trusted-sources: required when proxy-protocol = true: the balancers\' addresses as CIDR prefixes, e.g. ["10.0.0.0/24", "2001:db8::5"]',
  ]);
  Object.assign(first(doc, 'nts-ke-server'), { 'proxy-trusted-sources': ['10.0.0.0/24', '2001:db8::5'] });
  const k = valid(doc).ntsKeServers[0];
  assert.equal(k?.proxyProtocol, true);
  assert.deepEqual(k?.proxyTrustedSources, ['10.0.0.0/24', '2001:db8::5']);
  Object.assign(first(doc, 'nts-ke-server'), { 'proxy-trusted-sources': ['10.0.0.0/33', 7] });
  assert.deepEqual(errorsOf(validateConfig(doc, OPTIONS)), [
    'nts-ke-server[0].proxy-trusted-sources[0]: must be an IP address or CIDR prefix ("192.0.2.0/24", "2001:db8::/32"), got "10.0.0.0/33"',
    'nts-ke-server[0].proxy-trusted-sources[1]: must be an IP address or CIDR prefix ("192.0.2.0/24", "2001:db8::/32"), got 7',
  ]);
  Object.assign(first(doc, 'nts-ke-server'), { 'proxy-trusted-sources': [] });
  assert.deepEqual(errorsOf(validateConfig(doc, OPTIONS)), ['nts-ke-server[0].proxy-trusted-sources: must be a non-empty array of CIDR prefixes, got an array']);
  Object.assign(first(doc, 'nts-ke-server'), { 'proxy-protocol': false, 'proxy-trusted-sources': ['10.0.0.1'] });
  assert.deepEqual(errorsOf(validateConfig(doc, OPTIONS)), ['nts-ke-server[0].proxy-trusted-sources: only valid with proxy-protocol = true']);
  Object.assign(first(doc, 'nts-ke-server'), { 'proxy-protocol': 'yes' });
  delete first(doc, 'nts-ke-server')['proxy-trusted-sources'];
  assert.match(errorsOf(validateConfig(doc, OPTIONS)).join('\n'), /^nts-ke-server\[0\]\.proxy-protocol: must be true or false/);
});

test('key-rotation-interval-s: at least 10 s with mode = "local", at least 60 s with ratchet and follow', () => {
  const local = base();
  local['keyset'] = { 'key-rotation-interval-s': 10 };
  assert.equal(valid(local).keyset.keyRotationIntervalS, 10);
  local['keyset'] = { mode: 'local', 'key-rotation-interval-s': 9 };
  assert.deepEqual(errorsOf(validateConfig(local, OPTIONS)), ['keyset.key-rotation-interval-s: must be an integer between 10 and 31536000, got 9']);
  const ratchet = base();
  ratchet['keyset'] = { mode: 'ratchet', 'shared-secret-path': 'seed', 'key-rotation-interval-s': 30 };
  assert.deepEqual(errorsOf(validateConfig(ratchet, OPTIONS)), ['keyset.key-rotation-interval-s: must be an integer between 60 and 31536000, got 30']);
  ratchet['keyset'] = { mode: 'ratchet', 'shared-secret-path': 'seed', 'key-rotation-interval-s': 60 };
  assert.equal(valid(ratchet).keyset.keyRotationIntervalS, 60);
  const follow = base();
  follow['keyset'] = { mode: 'follow', 'key-rotation-interval-s': 59 };
  assert.deepEqual(errorsOf(validateConfig(follow, OPTIONS)), ['keyset.key-rotation-interval-s: must be an integer between 60 and 31536000, got 59']);
});

test('NTS pools, time source: tokens and keep-alive limits, with defaults; messages never show a token', () => {
  const c = valid(base());
  const ke = c.ntsKeServers[0];
  assert.ok(ke !== undefined);
  assert.deepEqual(ke.acceptedPoolAuthenticationTokens, []);
  assert.equal(ke.longlivedConnections, 51, 'a tenth of concurrent-connections');
  assert.equal(ke.keepAliveIdleTimeoutS, 300);
  assert.equal(ke.keepAliveMaxAgeS, 3600);
  const doc = base();
  Object.assign(first(doc, 'nts-ke-server'), { 'accepted-pool-authentication-tokens': ['t-one', 'tøken-two'], 'longlived-connections': 0 });
  const set = valid(doc).ntsKeServers[0];
  assert.deepEqual(set?.acceptedPoolAuthenticationTokens, ['t-one', 'tøken-two']);
  assert.equal(set?.longlivedConnections, 0);
  const secret = 'sekrit\u0001value';
  const bad = base();
  first(bad, 'nts-ke-server')['accepted-pool-authentication-tokens'] = ['fine', secret, 7];
  const errors = errorsOf(validateConfig(bad, OPTIONS));
  assert.deepEqual(errors, [
    'nts-ke-server[0].accepted-pool-authentication-tokens[1]: must not contain control characters',
    'nts-ke-server[0].accepted-pool-authentication-tokens[2]: must be a string',
  ]);
  assert.ok(!errors.join('\n').includes('sekrit'));
  const notList = base();
  first(notList, 'nts-ke-server')['accepted-pool-authentication-tokens'] = 'sekrit';
  assert.deepEqual(errorsOf(validateConfig(notList, OPTIONS)), [
    'nts-ke-server[0].accepted-pool-authentication-tokens: must be an array of strings (the tokens your pool issued)',
  ]);
});

function poolKeDoc(): Doc {
  return {
    'pool-ke': {
      listen: '0.0.0.0:4460',
      'certificate-chain-path': 'pool.pem',
      'private-key-path': 'pool.key',
      source: [
        { name: 'ts1.example.net', address: 'ts1.example.net:4460', 'authentication-token': 'tok-1' },
        { name: '192.0.2.7', address: '[2001:db8::7]:14460', 'authentication-token': 'tok-2', weight: 3, 'tls-name': 'ts2.example.net' },
      ],
    },
  };
}

test('NTS pools, front end: [pool-ke] alone is a valid node, with defaults', () => {
  const c = valid(poolKeDoc());
  assert.deepEqual(c.servers, []);
  assert.deepEqual(c.ntsKeServers, []);
  assert.deepEqual(c.poolKe, {
    listen: { host: '0.0.0.0', port: 4460, family: 'IPv4' },
    certificates: [{ certificateChainPath: '/etc/ntsd/pool.pem', privateKeyPath: '/etc/ntsd/pool.key', name: undefined }],
    keyExchangeTimeoutMs: 5000,
    concurrentConnections: 512,
    concurrentConnectionsPerSource: 16,
    threads: 0,
    maxRequestBytes: 4096,
    certificateReloadIntervalS: 60,
    clientRateLimit: { intervalS: 64, burst: 8, tableSize: 65536 },
    threadNiceness: 10,
    proxyProtocol: false,
    proxyTrustedSources: [],
    access: { entries: [], defaultAction: 'allow' },
    upstreamTimeoutMs: 2500,
    capabilityCacheS: 300,
    healthCheckIntervalS: 30,
    connectionsPerSource: 2,
    upstreamCaPath: undefined,
    sources: [
      { name: 'ts1.example.net', host: 'ts1.example.net', port: 4460, tlsName: 'ts1.example.net', authenticationToken: 'tok-1', weight: 1 },
      { name: '192.0.2.7', host: '2001:db8::7', port: 14460, tlsName: 'ts2.example.net', authenticationToken: 'tok-2', weight: 3 },
    ],
  });
  assert.equal(valid(base()).poolKe, undefined);
});

test('NTS pools, front end: [pool-ke] takes the KE listener keys of [[nts-ke-server]] (threads, PROXY v2, certificate reload, caps, access list)', () => {
  const doc = poolKeDoc();
  Object.assign(doc['pool-ke'] as Doc, {
    threads: 3,
    'proxy-protocol': true,
    'proxy-trusted-sources': ['10.0.0.0/24'],
    'certificate-reload-interval-s': 5,
    'concurrent-connections-per-source': 4,
    'client-rate-limit-interval-s': 0,
    deny: ['192.0.2.0/24'],
  });
  const p = valid(doc).poolKe;
  assert.ok(p !== undefined);
  assert.equal(p.threads, 3);
  assert.equal(p.proxyProtocol, true);
  assert.deepEqual(p.proxyTrustedSources, ['10.0.0.0/24']);
  assert.equal(p.certificateReloadIntervalS, 5);
  assert.equal(p.concurrentConnectionsPerSource, 4);
  assert.equal(p.clientRateLimit.intervalS, 0);
  assert.equal(p.access.entries.length, 1);
});

test('NTS pools, front end: each bad key is named; tokens never appear in messages', () => {
  const src = (d: Doc, i: number): Doc => ((d['pool-ke'] as Doc)['source'] as Doc[])[i] as Doc;
  const pk = (d: Doc): Doc => d['pool-ke'] as Doc;
  const cases: [string, (d: Doc) => void][] = [
    ['pool-ke.listen', (d) => (pk(d)['listen'] = 'pool.example.net:4460')],
    ['pool-ke.upstream-timeout-ms', (d) => (pk(d)['upstream-timeout-ms'] = 2501)],
    ['pool-ke.upstream-timeout-ms', (d) => Object.assign(pk(d), { 'key-exchange-timeout-ms': 2000, 'upstream-timeout-ms': 2000 })],
    ['pool-ke.capability-cache-s', (d) => (pk(d)['capability-cache-s'] = 0)],
    ['pool-ke.health-check-interval-s', (d) => (pk(d)['health-check-interval-s'] = 0)],
    ['pool-ke.connections-per-source', (d) => (pk(d)['connections-per-source'] = 65)],
    ['pool-ke.source', (d) => (pk(d)['source'] = [])],
    ['pool-ke.source[0].name', (d) => delete src(d, 0)['name']],
    ['pool-ke.source[0].name', (d) => (src(d, 0)['name'] = 'bad name!')],
    ['pool-ke.source[1].name', (d) => (src(d, 1)['name'] = 'TS1.example.net')],
    ['pool-ke.source[0].address', (d) => (src(d, 0)['address'] = 'ts1.example.net')],
    ['pool-ke.source[0].address', (d) => (src(d, 0)['address'] = 'ts1.example.net:0')],
    ['pool-ke.source[0].authentication-token', (d) => delete src(d, 0)['authentication-token']],
    ['pool-ke.source[0].authentication-token', (d) => (src(d, 0)['authentication-token'] = '')],
    ['pool-ke.source[0].weight', (d) => (src(d, 0)['weight'] = 0)],
    ['pool-ke.source[0].tls-name', (d) => (src(d, 0)['tls-name'] = '-x-')],
    ['pool-ke.source[0].colour', (d) => (src(d, 0)['colour'] = 'red')],
    // The KE listener keys, as in [[nts-ke-server]].
    ['pool-ke.threads', (d) => (pk(d)['threads'] = -1)],
    ['pool-ke.proxy-trusted-sources', (d) => (pk(d)['proxy-protocol'] = true)],
    ['pool-ke.proxy-trusted-sources[0]', (d) => Object.assign(pk(d), { 'proxy-protocol': true, 'proxy-trusted-sources': ['not-a-prefix'] })],
    ['pool-ke.certificate-reload-interval-s', (d) => (pk(d)['certificate-reload-interval-s'] = -1)],
    ['pool-ke.deny[0]', (d) => (pk(d)['deny'] = ['300.0.0.0/8'])],
  ];
  for (const [path, breakIt] of cases) {
    const doc = poolKeDoc();
    breakIt(doc);
    const errors = errorsOf(validateConfig(doc, OPTIONS));
    assert.equal(errors.length, 1, `${path}: ${errors.join('\n')}`);
    assert.ok(errors[0]?.startsWith(`${path}:`), `"${errors[0]}" should start with "${path}"`);
    assert.ok(!/tok-1|tok-2/.test(errors[0] ?? ''), errors[0]);
  }
  const clash = poolKeDoc();
  Object.assign(clash, base());
  first(clash, 'nts-ke-server')['listen'] = '0.0.0.0:4460';
  assert.deepEqual(errorsOf(validateConfig(clash, OPTIONS)), ['pool-ke.listen: same address as nts-ke-server[0].listen']);
});

test('keThreadCount: explicit, else one per CPU beyond the NTP threads, at least 1', async () => {
  const { keThreadCount } = await import('../../src/config/schema.js');
  assert.equal(keThreadCount({ threads: 3 }, { threads: 7 }, 8), 3);
  assert.equal(keThreadCount({ threads: 0 }, { threads: 5 }, 8), 3);
  assert.equal(keThreadCount({ threads: 0 }, { threads: 1 }, 2), 1);
  assert.equal(keThreadCount({ threads: 0 }, { threads: 7 }, 8), 1, 'at least 1');
});

test('several certificates: the single-pair keys are the first pair, [[nts-ke-server.certificate]] tables follow in order', () => {
  const doc = base();
  first(doc, 'nts-ke-server')['certificate'] = [
    { 'certificate-chain-path': 'nts/fullchain.pem', 'private-key-path': 'nts/privkey.pem' },
    { 'certificate-chain-path': '/etc/ntsd/rsa.pem', 'private-key-path': '/etc/ntsd/rsa.key', name: 'time.example.org-rsa' },
  ];
  assert.deepEqual(valid(doc).ntsKeServers[0]?.certificates, [
    { certificateChainPath: '/etc/ntsd/fullchain.pem', privateKeyPath: '/etc/ntsd/privkey.pem', name: undefined },
    { certificateChainPath: '/etc/ntsd/nts/fullchain.pem', privateKeyPath: '/etc/ntsd/nts/privkey.pem', name: undefined },
    { certificateChainPath: '/etc/ntsd/rsa.pem', privateKeyPath: '/etc/ntsd/rsa.key', name: 'time.example.org-rsa' },
  ]);
  // Tables alone, without the single-pair keys.
  const tablesOnly = base();
  const ke = first(tablesOnly, 'nts-ke-server');
  delete ke['certificate-chain-path'];
  delete ke['private-key-path'];
  ke['certificate'] = [{ 'certificate-chain-path': 'a.pem', 'private-key-path': 'a.key' }];
  assert.equal(valid(tablesOnly).ntsKeServers[0]?.certificates.length, 1);
  // [pool-ke] takes the same tables.
  const pool = poolKeDoc();
  (pool['pool-ke'] as Doc)['certificate'] = [{ 'certificate-chain-path': 'pool-rsa.pem', 'private-key-path': 'pool-rsa.key' }];
  assert.deepEqual(valid(pool).poolKe?.certificates.map((c) => c.certificateChainPath), ['/etc/ntsd/pool.pem', '/etc/ntsd/pool-rsa.pem']);
});

test('several certificates: no pair, half a pair, a bad table or the same file twice is an error naming the key', () => {
  const none = base();
  delete first(none, 'nts-ke-server')['certificate-chain-path'];
  delete first(none, 'nts-ke-server')['private-key-path'];
  const noneErrors = errorsOf(validateConfig(none, OPTIONS));
  assert.ok(noneErrors.some((e) => e.startsWith('nts-ke-server[0].certificate-chain-path: required key is missing')), noneErrors.join('\n'));
  const half = base();
  delete first(half, 'nts-ke-server')['private-key-path'];
  first(half, 'nts-ke-server')['certificate'] = [{ 'certificate-chain-path': 'a.pem', 'private-key-path': 'a.key' }];
  assert.ok(errorsOf(validateConfig(half, OPTIONS)).some((e) => e.startsWith('nts-ke-server[0].private-key-path: required key is missing')));
  const cases: readonly (readonly [string, unknown])[] = [
    ['nts-ke-server[0].certificate[0].private-key-path', [{ 'certificate-chain-path': 'a.pem' }]],
    ['nts-ke-server[0].certificate[0].name', [{ 'certificate-chain-path': 'a.pem', 'private-key-path': 'a.key', name: '' }]],
    ['nts-ke-server[0].certificate[0].colour', [{ 'certificate-chain-path': 'a.pem', 'private-key-path': 'a.key', colour: 'red' }]],
    ['nts-ke-server[0].certificate[1].certificate-chain-path', [{ 'certificate-chain-path': 'a.pem', 'private-key-path': 'a.key' }, { 'certificate-chain-path': 'a.pem', 'private-key-path': 'b.key' }]],
    ['nts-ke-server[0].certificate', 'a.pem'],
  ];
  for (const [path, value] of cases) {
    const doc = base();
    first(doc, 'nts-ke-server')['certificate'] = value;
    const errors = errorsOf(validateConfig(doc, OPTIONS));
    assert.ok(errors.some((e) => e.startsWith(`${path}:`)), `${path}: ${errors.join('\n')}`);
  }
});

test('client-log-size: 4096 by default, 0 turns the log off, a change needs a restart', () => {
  const running = valid(base());
  assert.equal(running.observability.clientLogSize, 4096);
  const off = base();
  off['observability'] = { 'client-log-size': 0 };
  assert.equal(valid(off).observability.clientLogSize, 0);
  const bigger = base();
  bigger['observability'] = { 'client-log-size': 65536 };
  assert.deepEqual(changesRequiringRestart(running, valid(bigger)), ['observability.client-log-size']);
});

test('SIGHUP and [pool-ke]: caps, the client rate limit (table size included) and access lists apply; anything else needs a restart', () => {
  const running = valid(poolKeDoc());
  const tuned = poolKeDoc();
  Object.assign(tuned['pool-ke'] as Doc, {
    'concurrent-connections': 64,
    'concurrent-connections-per-source': 2,
    'client-rate-limit-interval-s': 8,
    'client-rate-limit-table-size': 1024,
    deny: ['192.0.2.0/24'],
  });
  assert.deepEqual(changesRequiringRestart(running, valid(tuned)), []);
  const moved = poolKeDoc();
  (moved['pool-ke'] as Doc)['upstream-timeout-ms'] = 1000;
  assert.deepEqual(changesRequiringRestart(running, valid(moved)), ['pool-ke']);
  assert.deepEqual(changesRequiringRestart(running, valid(base())).includes('pool-ke'), true);
});
