import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NtsdError } from '../../src/errors.js';
import { loadConfigFile, parseConfig } from '../../src/config/load.js';
import { repositoryRoot } from '../../src/config/default.js';

const EXAMPLE = `
# A production-shaped file: both IP families.
[[server]]
listen = "0.0.0.0:123"
require-nts = true

[[server]]
listen = "[::]:123"

[[nts-ke-server]]
listen = "[::]:4460"
certificate-chain-path = "tls/fullchain.pem"
private-key-path = "tls/privkey.pem"
ntp-server = "time.example.com"
aead-algorithms = [15, 30]
client-rate-limit-interval-s = 64
client-rate-limit-burst = 8

[keyset]
key-storage-path = "/var/lib/ntsd/keyset"
stale-key-count = 7

[observability]
log-level = "warn"
log-format = "pretty"

[worker-pool]
threads = 2

[time-source]
mode = "follow"
address = "127.0.0.1:123"
poll-interval-s = 8
`;

test('parseConfig reads TOML and validates it', () => {
  const r = parseConfig(EXAMPLE, '/etc/ntsd', 4);
  if (!r.ok) return assert.fail(r.errors.join('\n'));
  assert.equal(r.config.servers.length, 2);
  assert.equal(r.config.servers[0]?.requireNts, true);
  assert.equal(r.config.servers[1]?.listen.family, 'IPv6');
  assert.equal(r.config.ntsKeServers[0]?.certificates[0]?.certificateChainPath, '/etc/ntsd/tls/fullchain.pem');
  assert.equal(r.config.ntsKeServers[0]?.ntpPort, 123);
  assert.deepEqual(r.config.ntsKeServers[0]?.aeadAlgorithms, [15, 30]);
  assert.equal(r.config.observability.logFormat, 'pretty');
  assert.equal(r.config.workerPool.threads, 2);
  assert.deepEqual(r.config.timeSource, { mode: 'follow', address: { host: '127.0.0.1', port: 123, family: 'IPv4' }, pollIntervalS: 8 });
});

test('a TOML syntax error is one problem with line and column', () => {
  const r = parseConfig('[[server]]\nlisten = \n', '/etc/ntsd');
  assert.equal(r.ok, false);
  if (r.ok) return;
  assert.equal(r.errors.length, 1);
  assert.match(r.errors[0] ?? '', /^\(toml\) line 2, column \d+: /);
});

test('loadConfigFile resolves relative paths against the file directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-config-'));
  try {
    const file = join(dir, 'ntsd.toml');
    writeFileSync(file, EXAMPLE);
    const config = loadConfigFile(file);
    assert.equal(config.ntsKeServers[0]?.certificates[0]?.privateKeyPath, join(dir, 'tls/privkey.pem'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('loadConfigFile throws CONFIG_INVALID carrying every problem', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-config-'));
  try {
    const file = join(dir, 'bad.toml');
    writeFileSync(file, '[[server]]\nlisten = "abc"\n[observability]\nlog-levle = "debug"\n');
    assert.throws(
      () => loadConfigFile(file),
      (error: unknown) => {
        assert.ok(error instanceof NtsdError);
        assert.equal(error.code, 'CONFIG_INVALID');
        assert.deepEqual(error.details, [
          'server[0].listen: expected "host:port" (IPv4) or "[host]:port" (IPv6), got "abc"',
          'observability.log-levle: unknown key',
        ]);
        assert.match(error.message, /2 problems/);
        assert.match(error.message, /observability\.log-levle: unknown key/);
        return true;
      },
    );
    assert.throws(
      () => loadConfigFile(join(dir, 'missing.toml')),
      (error: unknown) => error instanceof NtsdError && error.code === 'CONFIG_INVALID' && error.cause !== undefined,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every TOML config the project ships under deploy/ is valid', () => {
  const deploy = join(repositoryRoot(), 'deploy');
  const files = existsSync(deploy) ? readdirSync(deploy, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.toml')) : [];
  for (const f of files) {
    assert.doesNotThrow(() => loadConfigFile(join(deploy, f)), f);
  }
});
