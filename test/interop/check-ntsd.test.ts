/**
 * `ntsd check` against the real ntsd daemon (node dist/src/main.js run) on loopback.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { CheckExitCode, runCheck } from '../../src/cli/check.js';
import { ensureNtsTestHost, NTS_TEST_NAME } from './peers.js';
import { startLoopbackNtsd, type LoopbackNtsd } from './ntsd.js';
import { makeTestPki } from '../helpers/certs.js';

ensureNtsTestHost();
const pki = makeTestPki([NTS_TEST_NAME, '127.0.0.1']);
let daemon: LoopbackNtsd | undefined;

before(async () => {
  daemon = await startLoopbackNtsd({ certPath: pki.chainPath, keyPath: pki.keyPath });
});
after(async () => {
  await daemon?.stop();
  pki.cleanup();
});

function ntsd(): LoopbackNtsd {
  assert.ok(daemon, 'ntsd started');
  return daemon;
}

async function check(args: string[]): Promise<{ code: number; text: string; lines: string[] }> {
  const lines: string[] = [];
  const code = await runCheck(args, (line) => lines.push(line));
  return { code, text: lines.join('\n'), lines };
}

test('ntsd logs "ntsd started" with its bound NTP and NTS-KE addresses', () => {
  const d = ntsd();
  assert.equal(d.started['msg'], 'ntsd started');
  const text = JSON.stringify(d.started);
  assert.ok(text.includes(String(d.ntpPort)), text);
  assert.ok(text.includes(String(d.kePort)), text);
});

test('ntsd check against ntsd: AEAD 15, 8 cookies, Port Negotiation port, authenticated exchanges', { timeout: 30_000 }, async () => {
  const d = ntsd();
  const { code, text, lines } = await check([`${NTS_TEST_NAME}:${d.kePort}`, '--ca', pki.caCertPath, '--count', '3', '--interval-ms', '100']);
  assert.equal(code, CheckExitCode.ok, `${text}\n--- ntsd output ---\n${d.output()}`);
  assert.ok(lines.includes('AEAD: 15 (AEAD_AES_SIV_CMAC_256)'), text);
  assert.match(text, /^cookies: 8 x \d+ octets$/m);
  assert.ok(lines.includes(`NTP server: 127.0.0.1 port ${d.ntpPort} (server is the KE address, port from Port Negotiation record)`), text);
  const exchanges = lines.filter((l) => /^NTP \d\/3: .* stratum 2, .*authenticated, 1 new cookie/.test(l));
  assert.equal(exchanges.length, 3, text);
  for (const line of exchanges) {
    const offset = Number(/offset ([+-]\d+\.\d+) s/.exec(line)?.[1]);
    assert.ok(Math.abs(offset) < 0.05, `same host: offset ${offset} s should be tiny (${line})`);
  }
});

for (const aeadId of [16, 17, 30]) {
  test(`ntsd check against ntsd with --aead ${aeadId}: negotiated and authenticated`, { timeout: 30_000 }, async () => {
    const d = ntsd();
    const { code, text } = await check([`${NTS_TEST_NAME}:${d.kePort}`, '--ca', pki.caCertPath, '--count', '2', '--interval-ms', '0', '--aead', String(aeadId)]);
    assert.equal(code, CheckExitCode.ok, `${text}\n--- ntsd output ---\n${d.output()}`);
    assert.match(text, new RegExp(`^AEAD: ${aeadId} `, 'm'));
  });
}

test('ntsd stops cleanly on SIGTERM (exit 0)', { timeout: 30_000 }, async () => {
  const d = ntsd();
  await d.stop();
  assert.equal(d.exitCode(), 0, d.output());
});
