import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_CONFIG_TOML, defaultConfig, repositoryRoot } from '../../src/config/default.js';

test('the repository root is the directory holding ntsd package.json', () => {
  const pkg: unknown = JSON.parse(readFileSync(join(repositoryRoot(), 'package.json'), 'utf8'));
  assert.equal((pkg as { name?: unknown }).name, 'ntsd');
});

test('the embedded default is valid, loopback only, with repository-relative paths', () => {
  const root = repositoryRoot();
  const c = defaultConfig();
  assert.deepEqual(c.servers.map((s) => s.listen), [{ host: '127.0.0.1', port: 11123, family: 'IPv4' }]);
  const ke = c.ntsKeServers[0];
  assert.ok(ke !== undefined && c.ntsKeServers.length === 1);
  assert.deepEqual(ke.listen, { host: '127.0.0.1', port: 14460, family: 'IPv4' });
  assert.equal(ke.certificates[0]?.certificateChainPath, join(root, 'certs/unsafe-dev-server.pem'));
  assert.equal(ke.certificates[0]?.privateKeyPath, join(root, 'certs/unsafe-dev-server.key'));
  // Port Negotiation must carry 11123 (RFC 8915 §4.1.8: the NTP port is not 123).
  assert.equal(ke.ntpPort, 11123);
  // Local clients and benchmarks all come from 127.0.0.1: no per-client limit in the dev config.
  assert.equal(ke.clientRateLimit.intervalS, 0);
  assert.equal(c.keyset.keyStoragePath, join(root, 'keyset/ntsd.keys'));
  assert.deepEqual(c.observability.metricsListen, { host: '127.0.0.1', port: 9975, family: 'IPv4' });
  assert.deepEqual(c.timeSource, { mode: 'static', localStratum: 10, referenceId: 0x4c4f434c, referenceIdText: 'LOCL' });
  for (const listen of [...c.servers.map((s) => s.listen), ke.listen, c.observability.metricsListen]) {
    assert.equal(listen?.host, '127.0.0.1');
  }
});

test('the default does not depend on the working directory', () => {
  const before = defaultConfig();
  const cwd = process.cwd();
  try {
    process.chdir('/');
    assert.deepEqual(defaultConfig(), before);
  } finally {
    process.chdir(cwd);
  }
  assert.match(DEFAULT_CONFIG_TOML, /^\[\[server\]\]$/m);
});
