/**
 * `[worker-pool] aead-backend` at start-up, through the real CLI as a child process (src/daemon.ts installAead):
 * `openssl` refuses to start (exit 78, the message names the key) when the OpenSSL AEADs are unavailable, here
 * because NTSD_NATIVE=0 keeps the native addon from loading; `javascript` on a non-loopback listener starts and
 * warns that the JavaScript AES's timing depends on the keys.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTestPki } from './helpers/certs.js';
import { freePorts, makeTempDir, removeDir, runCli, startDaemon, testConfigToml, type LogLine } from './helpers/daemon.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const EXIT_CONFIG = 78;
const pki = makeTestPki();
const dir = makeTempDir('aead-backend');
test.after(() => {
  removeDir(dir);
  pki.cleanup();
});

function withWorkerPoolLine(toml: string, line: string): string {
  assert.ok(toml.includes('[worker-pool]\n'));
  return toml.replace('[worker-pool]\n', `[worker-pool]\n${line}\n`);
}

test('aead-backend = "openssl" without the OpenSSL AEADs (NTSD_NATIVE=0) refuses to start: exit 78, naming worker-pool.aead-backend', async () => {
  const toml = withWorkerPoolLine(testConfigToml({ ...(await freePorts()), certPath: pki.chainPath, keyPath: pki.keyPath }), 'aead-backend = "openssl"');
  const path = join(dir, 'openssl.toml');
  writeFileSync(path, toml);
  const r = await runCli(['run', '-c', path], { cwd: dir, env: { NTSD_NATIVE: '0' } });
  assert.equal(r.code, EXIT_CONFIG, `exit ${String(r.code)}\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stderr, /worker-pool\.aead-backend: "openssl" is unavailable/);
  assert.match(r.stderr, /AEAD_AES_SIV_CMAC_256/);
  assert.ok(!r.stdout.includes('ntsd started'));
});

test('aead-backend = "javascript" with an NTP listener on 0.0.0.0 starts and warns about the JavaScript AES on a non-loopback listener', async () => {
  const ports = await freePorts();
  const base = testConfigToml({ ...ports, certPath: pki.chainPath, keyPath: pki.keyPath, metrics: false });
  const toml = withWorkerPoolLine(base.replace(`listen = "127.0.0.1:${ports.ntpPort}"`, `listen = "0.0.0.0:${ports.ntpPort}"`), 'aead-backend = "javascript"');
  assert.ok(toml.includes(`listen = "0.0.0.0:${ports.ntpPort}"`));
  const sub = makeTempDir('aead-backend-js');
  const daemon = await startDaemon({ toml, dir: sub });
  try {
    const isWarning = (l: LogLine): boolean => typeof l['msg'] === 'string' && l['msg'].includes('non-loopback listener');
    const warning = daemon.lines().find(isWarning) ?? (await daemon.waitForLine(isWarning, 5000));
    assert.deepEqual(warning['listeners'], ['0.0.0.0']);
    assert.ok(Array.isArray(warning['aeads']) && warning['aeads'].includes('AEAD_AES_SIV_CMAC_256'));
  } finally {
    await daemon.stop();
    removeDir(sub);
  }
});

test('aead-backend = "javascript" on loopback listeners only does not warn', async () => {
  const toml = withWorkerPoolLine(testConfigToml({ ...(await freePorts()), certPath: pki.chainPath, keyPath: pki.keyPath, metrics: false }), 'aead-backend = "javascript"');
  const sub = makeTempDir('aead-backend-lo');
  const daemon = await startDaemon({ toml, dir: sub });
  try {
    assert.ok(!daemon.lines().some((l) => typeof l['msg'] === 'string' && l['msg'].includes('non-loopback listener')));
  } finally {
    await daemon.stop();
    removeDir(sub);
  }
});
