/**
 * log-format "auto" end to end: the real daemon started in a pseudo-terminal (util-linux `script`) prints
 * readable lines; the same configuration with stdout on a pipe prints JSON lines.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestPki } from '../helpers/certs.js';
import { freePorts, makeTempDir, ntsdMainPath, removeDir, startDaemon, testConfigToml, waitUntil } from '../helpers/daemon.js';

/** The processes that have `arg` among their command-line arguments (read from /proc). */
function processesRunning(arg: string): number[] {
  const pids: number[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(arg)) pids.push(Number(pid));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

/** Sends `sig` to each process, ignoring those already gone. */
function signalAll(pids: readonly number[], sig: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

test('log-format "auto": readable lines in a terminal, JSON on a pipe', { timeout: 60_000 }, async (t) => {
  const dir = makeTempDir('tty');
  const pki = makeTestPki();
  t.after(() => {
    removeDir(dir);
    pki.cleanup();
  });
  const toml = testConfigToml({ ...(await freePorts()), certPath: pki.chainPath, keyPath: pki.keyPath });
  assert.doesNotMatch(toml, /log-format/, 'the default (auto) is what is tested');
  const config = join(dir, 'ntsd.toml');
  writeFileSync(config, toml);

  // script -q (no banner) -e (its exit status is the command's) -c CMD, typescript to /dev/null.
  const command = [process.execPath, ntsdMainPath(), 'run', '--config', config].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('script', ['-qec', command, '/dev/null'], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.once('error', (error) => assert.fail(`cannot run script (util-linux): ${error.message}`));
  try {
    await waitUntil(`"ntsd started" in the terminal output:\n${out}`, 20_000, () => (/ntsd started/.test(out) ? true : undefined), 50);
  } finally {
    // The daemon is stopped directly: when the terminal closes it gets SIGHUP, which ntsd takes as "reload",
    // so killing `script` alone could leave it running. Once the daemon exits, script -e exits with it.
    signalAll(processesRunning(config), 'SIGTERM');
    const timer = setTimeout(() => {
      signalAll(processesRunning(config), 'SIGKILL');
      child.kill('SIGKILL');
    }, 8000);
    await exited;
    clearTimeout(timer);
  }
  // No process is left running this configuration.
  await waitUntil('the daemon started under script to exit', 10_000, () => (processesRunning(config).length === 0 ? true : undefined), 50);
  const lines = out.split(/\r?\n/).filter((l) => /^\d{4}-\d\d-\d\dT/.test(l));
  assert.ok(lines.length >= 3, out);
  assert.ok(!out.split(/\r?\n/).some((l) => l.startsWith('{')), `a JSON line on the terminal:\n${out}`);
  assert.ok(lines.some((l) => /^\S+Z INFO  ntsd started version=\S+ /.test(l)), out);
  // The certificate subject (multi-line in X509Certificate) on the same line as its message.
  assert.ok(lines.some((l) => /^\S+Z INFO  \[nts-ke\] certificate loaded .*subject="O=ntsd UNSAFE development, CN=localhost"/.test(l)), out);

  // The same configuration on a pipe: JSON (startDaemon parses the JSON "ntsd started" line). `script` closes
  // before the daemon in its session has released its sockets, so this run takes ports of its own.
  const sub = makeTempDir('tty-pipe');
  t.after(() => removeDir(sub));
  const pipeToml = testConfigToml({ ...(await freePorts()), certPath: pki.chainPath, keyPath: pki.keyPath });
  const d = await startDaemon({ toml: pipeToml, dir: sub });
  try {
    assert.equal(d.started['level'], 'info');
    assert.ok(d.stdout().split('\n').filter((l) => l !== '').every((l) => l.startsWith('{')), d.stdout());
  } finally {
    await d.stop('SIGTERM', 3000);
  }
});
