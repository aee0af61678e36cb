/**
 * The ntsd command line as an operator uses it, run as a child process: configuration errors and their
 * exit codes (OPERATIONS.md: 78 for a config error, 64 for usage), `validate`, `keyset inspect` and
 * `check` against a running daemon.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeKeyset, keysetKeys } from '../src/core/nts/keyset.js';
import { makeTestPki } from './helpers/certs.js';
import {
  freePorts,
  freeTcpPort,
  makeTempDir,
  removeDir,
  runCli,
  startDaemon,
  testConfigToml,
  type CliResult,
  type TestConfigOptions,
} from './helpers/daemon.js';

const EXIT_CONFIG = 78;
const EXIT_USAGE = 64;

const pki = makeTestPki();
const dir = makeTempDir('cli');
test.after(() => {
  removeDir(dir);
  pki.cleanup();
});

async function baseOptions(): Promise<TestConfigOptions> {
  return { ...(await freePorts()), certPath: pki.chainPath, keyPath: pki.keyPath };
}

let fileCounter = 0;
/** Writes a config file into the shared temp dir and returns its path. */
function writeConfig(text: string): string {
  const path = join(dir, `config-${++fileCounter}.toml`);
  writeFileSync(path, text);
  return path;
}

function show(r: CliResult): string {
  return `exit ${String(r.code)}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}

/** Inserts `line` right after the `[section]` header line of a generated config. */
function withLine(toml: string, section: string, line: string): string {
  const header = `${section}\n`;
  assert.ok(toml.includes(header), `config has ${section}`);
  return toml.replace(header, `${header}${line}\n`);
}

test('validate: a valid file exits 0', async () => {
  const path = writeConfig(testConfigToml(await baseOptions()));
  const r = await runCli(['validate', '-c', path]);
  assert.equal(r.code, 0, show(r));
  assert.match(r.stdout, /valid/);
});

test('run and validate: unknown key, wrong type, bad TOML and a missing file exit 78 and name the problem', async () => {
  const good = testConfigToml(await baseOptions());
  const cases: { name: string; path: string; expect: RegExp }[] = [
    { name: 'unknown key', path: writeConfig(withLine(good, '[observability]', 'log-colour = "blue"')), expect: /observability\.log-colour: unknown key/ },
    { name: 'unknown key in an array table', path: writeConfig(withLine(good, '[[nts-ke-server]]', 'max-cookies = 9')), expect: /nts-ke-server\[0\]\.max-cookies: unknown key/ },
    { name: 'unknown section', path: writeConfig(`${good}\n[extras]\nx = 1\n`), expect: /extras: unknown key/ },
    { name: 'wrong type', path: writeConfig(withLine(good, '[worker-pool]', 'receive-buffer-bytes = "many"')), expect: /worker-pool\.receive-buffer-bytes: must be an integer/ },
    { name: 'out of range', path: writeConfig(withLine(good, '[[nts-ke-server]]', 'max-request-bytes = 100')), expect: /nts-ke-server\[0\]\.max-request-bytes: must be an integer between 1024/ },
    { name: 'TOML syntax', path: writeConfig(`${good}\n[broken\n`), expect: /line \d+/ },
    { name: 'missing file', path: join(dir, 'does-not-exist.toml'), expect: /cannot read configuration file .*does-not-exist\.toml/ },
  ];
  for (const c of cases) {
    for (const command of ['validate', 'run'] as const) {
      const r = await runCli([command, '-c', c.path]);
      assert.equal(r.code, EXIT_CONFIG, `${command} / ${c.name}: ${show(r)}`);
      assert.match(r.stderr, c.expect, `${command} / ${c.name}: stderr names the key path\n${show(r)}`);
      assert.ok(!r.stdout.includes('ntsd started'), `${command} / ${c.name}: must not start`);
    }
  }
});

test('run: an unreadable or mismatched TLS key at start exits 78 and names the file', async () => {
  const options = await baseOptions();
  const missingKey = writeConfig(testConfigToml({ ...options, keyPath: join(dir, 'no-such.key') }));
  const r1 = await runCli(['run', '-c', missingKey]);
  assert.equal(r1.code, EXIT_CONFIG, show(r1));
  assert.match(r1.stderr, /no-such\.key/, show(r1));

  const otherLeaf = pki.issueLeaf();
  const otherKeyPath = join(dir, 'other.key');
  writeFileSync(otherKeyPath, otherLeaf.keyPem, { mode: 0o600 });
  const mismatched = writeConfig(testConfigToml({ ...options, keyPath: otherKeyPath }));
  const r2 = await runCli(['run', '-c', mismatched]);
  assert.equal(r2.code, EXIT_CONFIG, show(r2));
  assert.ok(r2.stderr.length > 0 && !r2.stdout.includes('ntsd started'), show(r2));

  const garbageKeyPath = join(dir, 'garbage.key');
  writeFileSync(garbageKeyPath, '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n', { mode: 0o600 });
  const r3 = await runCli(['run', '-c', writeConfig(testConfigToml({ ...options, keyPath: garbageKeyPath }))]);
  assert.equal(r3.code, EXIT_CONFIG, show(r3));
});

test('usage: an unknown command or none exits 64 with the usage text', async () => {
  const r1 = await runCli(['frobnicate']);
  assert.equal(r1.code, EXIT_USAGE, show(r1));
  assert.match(r1.stderr, /unknown command "frobnicate"/);
  assert.match(r1.stderr, /usage: ntsd/);
  const r2 = await runCli([]);
  assert.equal(r2.code, EXIT_USAGE, show(r2));
  assert.match(r2.stdout + r2.stderr, /usage: ntsd/);
  const r3 = await runCli(['run', '--no-such-flag']);
  assert.equal(r3.code, EXIT_USAGE, show(r3));
});

test('--help: every command prints its own page with each option explained and exits 0; help COMMAND is the same page', async () => {
  const pages: Record<string, RegExp[]> = {
    run: [/usage: ntsd run/, /-c, --config FILE/],
    validate: [/usage: ntsd validate -c FILE/, /-c, --config FILE/],
    check: [/usage: ntsd check HOST\[:PORT\]/, /--ca FILE/, /--count N/, /--servername NAME/, /--timeout-ms MS/, /--interval-ms MS/, /--aead ID/],
    status: [/usage: ntsd status/, /--metrics URL/, /--interval S/, /--timeout-ms MS/, /--json/],
    keyset: [/usage: ntsd keyset inspect/, /-c, --config FILE/],
    help: [/usage: ntsd help \[COMMAND\]/],
  };
  for (const [command, patterns] of Object.entries(pages)) {
    for (const argv of [[command, '--help'], [command, '-h'], ['help', command]]) {
      const r = await runCli(argv);
      assert.equal(r.code, 0, `${argv.join(' ')}: ${show(r)}`);
      for (const p of patterns) assert.match(r.stdout, p, `${argv.join(' ')}`);
      assert.equal(r.stderr, '', argv.join(' '));
    }
  }
  for (const argv of [['--help'], ['-h'], ['help']]) {
    const r = await runCli(argv);
    assert.equal(r.code, 0, show(r));
    for (const command of Object.keys(pages)) assert.match(r.stdout, new RegExp(`^  ${command} `, 'm'), `${argv.join(' ')} lists ${command}`);
  }
  const unknown = await runCli(['help', 'frobnicate']);
  assert.equal(unknown.code, EXIT_USAGE, show(unknown));
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
});

test('--version and -V print the version, Node.js, the datapath and the AEAD backend, and exit 0', async () => {
  const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const r = await runCli([flag]);
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, new RegExp(`^ntsd ${version.replaceAll('.', '\\.')}$`, 'm'));
    assert.match(r.stdout, new RegExp(`^Node\\.js ${process.versions.node.replaceAll('.', '\\.')} \\(OpenSSL `, 'm'));
    assert.match(r.stdout, /^NTP datapath: (native|dgram) /m);
    for (const id of [15, 16, 17, 30]) assert.match(r.stdout, new RegExp(`^AEAD ${id} AEAD_AES_\\w+: (OpenSSL \\(constant-time AES\\)|JavaScript \\(table-driven AES, not constant-time: .+\\))$`, 'm'));
  }
});

test('keyset inspect prints ids and ages, never key bytes; check against the daemon passes; check against a closed port fails clearly', { timeout: 60_000 }, async (t) => {
  const options = await baseOptions();
  const d = await startDaemon({ toml: testConfigToml({ ...options, keyStoragePath: 'state/ntsd.keys' }), dir: makeTempDir('cli-daemon') });
  t.after(async () => {
    await d.stop('SIGKILL', 2000);
    removeDir(d.dir);
  });

  // keyset inspect
  const inspect = await runCli(['keyset', 'inspect', '-c', d.configPath]);
  assert.equal(inspect.code, 0, show(inspect));
  const decoded = decodeKeyset(readFileSync(join(d.dir, 'state', 'ntsd.keys')));
  assert.ok(decoded.ok, 'key storage file decodes');
  const output = (inspect.stdout + inspect.stderr).toLowerCase();
  for (const key of keysetKeys(decoded.keyset)) {
    const id = key.id.toString(16).padStart(8, '0');
    assert.ok(output.includes(id), `key id ${id} listed\n${inspect.stdout}`);
    const hex = Buffer.from(key.key).toString('hex');
    assert.ok(!output.includes(hex), 'full key bytes (hex) must never be printed');
    // Not even a fragment: no 8-octet run of the key in hex or base64.
    for (let i = 0; i + 8 <= key.key.length; i += 4) {
      assert.ok(!output.includes(hex.slice(2 * i, 2 * i + 16)), 'a fragment of a key in hex was printed');
    }
    assert.ok(!(inspect.stdout + inspect.stderr).includes(Buffer.from(key.key).toString('base64').slice(0, 12)), 'key bytes in base64 were printed');
  }
  assert.match(inspect.stdout, /current\s+[0-9a-f]{8}/);
  assert.match(inspect.stdout, /next\s+[0-9a-f]{8}/);
  assert.match(inspect.stdout, /next rotation:/);

  // check against the running daemon
  const ke = d.ntsKe[0];
  assert.ok(ke !== undefined);
  const check = await runCli(['check', `127.0.0.1:${ke.port}`, '--ca', pki.caCertPath, '--count', '2', '--interval-ms', '0', '--timeout-ms', '5000']);
  assert.equal(check.code, 0, show(check));
  assert.match(check.stdout, /AEAD: 15 \(AEAD_AES_SIV_CMAC_256\)/);
  assert.match(check.stdout, /cookies: 8 x 100 octets/);
  assert.match(check.stdout, new RegExp(`port ${options.ntpPort} .*Port Negotiation record`));
  assert.match(check.stdout, /NTP 2\/2: .*authenticated/);
  assert.match(check.stdout, /^OK: 2\/2/m);

  // check against a port where nothing listens
  const closedPort = await freeTcpPort();
  const closed = await runCli(['check', `127.0.0.1:${closedPort}`, '--ca', pki.caCertPath, '--timeout-ms', '2000']);
  assert.notEqual(closed.code, 0, show(closed));
  assert.equal(closed.code, 2, 'CheckExitCode.connect');
  assert.match(closed.stdout, /FAIL \(connect\): .*ECONNREFUSED/, show(closed));

  // check with a CA that did not sign the server's certificate
  const other = makeTestPki();
  t.after(() => other.cleanup());
  const untrusted = await runCli(['check', `127.0.0.1:${ke.port}`, '--ca', other.caCertPath, '--timeout-ms', '3000']);
  assert.equal(untrusted.code, 3, `CheckExitCode.tls: ${show(untrusted)}`);
  assert.match(untrusted.stdout, /FAIL \(tls\)/);
});

test('listen = "127.0.0.1:0" is valid and binds free ports (what the schema docs promise)', { timeout: 30_000 }, async (t) => {
  const toml = testConfigToml({ ntpPort: 0, kePort: 0, certPath: pki.chainPath, keyPath: pki.keyPath });
  const r = await runCli(['validate', '-c', writeConfig(toml)]);
  assert.equal(r.code, 0, `port 0 must validate (ListenAddress: "0 asks the OS for a free port"): ${show(r)}`);
  const d = await startDaemon({ toml, dir: makeTempDir('cli-port0') });
  t.after(async () => {
    await d.stop('SIGKILL', 2000);
    removeDir(d.dir);
  });
  assert.ok((d.ntp[0]?.port ?? 0) > 0 && (d.ntsKe[0]?.port ?? 0) > 0, JSON.stringify(d.started));
  assert.equal(d.started['ntpPortAdvertised'], d.ntp[0]?.port, 'the KE advertises the NTP port actually bound');
});
