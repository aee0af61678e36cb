/**
 * The alert rules and the Prometheus example, checked by Prometheus's own tool:
 * `promtool check rules`, `promtool check config`, and `promtool test rules` on deploy/ntsd-alerts.test.yml,
 * which holds a firing case (labels and rendered annotations compared exactly) and a silent case for every alert.
 * promtool comes from Debian's prometheus package (test/install-peers.sh installs it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/daemon.js';

const DEPLOY = join(repoRoot(), 'deploy');
const RULES = join(DEPLOY, 'ntsd-alerts.yml');
const RULE_TESTS = join(DEPLOY, 'ntsd-alerts.test.yml');

function promtool(args: readonly string[], cwd = DEPLOY): SpawnSyncReturns<string> {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8', timeout: 60_000 });
  if (r.error !== undefined) assert.fail(`cannot run promtool (${r.error.message}): run test/install-peers.sh as root, or install Debian's prometheus package`);
  return r;
}

function describe(r: SpawnSyncReturns<string>): string {
  return `exit ${String(r.status)}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}

/** Alert names defined in deploy/ntsd-alerts.yml, in order. */
function alertNames(): string[] {
  return [...readFileSync(RULES, 'utf8').matchAll(/^\s+- alert: (\w+)$/gm)].map((m) => m[1] ?? '');
}

test('promtool check rules: deploy/ntsd-alerts.yml is valid and holds every alert', () => {
  const r = promtool(['check', 'rules', RULES]);
  assert.equal(r.status, 0, describe(r));
  const names = alertNames();
  assert.ok(names.length >= 8, `only ${names.length} alerts found`);
  assert.match(r.stdout, new RegExp(`SUCCESS: ${names.length} rules found`), describe(r));
});

test('promtool check config: deploy/prometheus.yml is valid and its rule file loads', () => {
  const r = promtool(['check', 'config', join(DEPLOY, 'prometheus.yml')]);
  assert.equal(r.status, 0, describe(r));
  assert.match(r.stdout, /SUCCESS: 1 rule files found/);
  assert.match(r.stdout, /is valid prometheus config file syntax/);
});

test('promtool test rules: every alert fires on its synthetic series and stays silent on a healthy server', () => {
  const text = readFileSync(RULE_TESTS, 'utf8');
  for (const name of alertNames()) {
    const firing = new RegExp(`- alertname: ${name}\\n\\s+eval_time: \\S+\\n\\s+exp_alerts:\\n\\s+- exp_labels: \\{[^}]*severity: \\w+[^}]*\\}\\n\\s+exp_annotations:\\n\\s+summary: "`);
    assert.match(text, firing, `${name}: no firing case with labels and a summary in ntsd-alerts.test.yml`);
    assert.match(text, new RegExp(`\\{alertname: ${name}, eval_time: 40h, exp_alerts: \\[\\]\\}`), `${name}: no silent case in the healthy group`);
  }
  const r = promtool(['test', 'rules', RULE_TESTS]);
  assert.equal(r.status, 0, describe(r));
  assert.match(r.stdout + r.stderr, /SUCCESS/);
});

test('promtool test rules fails when the rules do not fire (the unit tests assert something)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-promtool-'));
  try {
    copyFileSync(RULE_TESTS, join(dir, 'ntsd-alerts.test.yml'));
    // The same rules reading metrics that do not exist: every firing case must now fail.
    const blind = readFileSync(RULES, 'utf8').replace(/\b(ntsd|nodejs)_/g, '$1x_').replace(/\bup\{/g, 'upx{');
    writeFileSync(join(dir, 'ntsd-alerts.yml'), blind);
    const r = promtool(['test', 'rules', 'ntsd-alerts.test.yml'], dir);
    assert.notEqual(r.status, 0, describe(r));
    const failed = new Set([...(r.stdout + r.stderr).matchAll(/alertname: (\w+),/g)].map((m) => m[1]));
    assert.deepEqual(alertNames().filter((n) => !failed.has(n)), [], describe(r));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
