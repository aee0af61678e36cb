/**
 * `ntsd check` and the client library against a real chrony 4.3 NTS server on loopback (PEERS.md).
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CheckExitCode, runCheck } from '../../src/cli/check.js';
import { performKeyExchange } from '../../src/cli/ke-client.js';
import { ensureNtsTestHost, freeTcpPort, freeUdpPort, NTS_TEST_NAME, startChronyServer, type ChronyServer } from './peers.js';
import { makeOtherCa, makeTestPki } from '../helpers/certs.js';

ensureNtsTestHost();
const pki = makeTestPki([NTS_TEST_NAME, '127.0.0.1']);
let server: ChronyServer | undefined;

before(async () => {
  server = await startChronyServer({ ntpPort: await freeUdpPort(), kePort: await freeTcpPort(), certPath: pki.certPath, keyPath: pki.keyPath });
});
after(async () => {
  await server?.stop();
  pki.cleanup();
});

function chrony(): ChronyServer {
  assert.ok(server, 'chrony server started');
  return server;
}

async function check(args: string[]): Promise<{ code: number; text: string; lines: string[] }> {
  const lines: string[] = [];
  const code = await runCheck(args, (line) => lines.push(line));
  return { code, text: lines.join('\n'), lines };
}

test('ntsd check against chrony: AEAD 15, 8 cookies, Port Negotiation port, authenticated exchanges, small offset', { timeout: 30_000 }, async () => {
  const s = chrony();
  const { code, text, lines } = await check([`${NTS_TEST_NAME}:${s.kePort}`, '--ca', pki.caCertPath, '--count', '3', '--interval-ms', '100']);
  assert.equal(code, CheckExitCode.ok, text);
  assert.ok(lines.includes('AEAD: 15 (AEAD_AES_SIV_CMAC_256)'), text);
  assert.match(text, /^cookies: 8 x \d+ octets$/m);
  assert.ok(lines.includes(`NTP server: 127.0.0.1 port ${s.ntpPort} (server is the KE address, port from Port Negotiation record)`), text);
  assert.match(text, /^certificate subject: .*CN=nts\.test/m);
  assert.match(text, /^certificate expires: /m);
  const exchanges = lines.filter((l) => /^NTP \d\/3: .* stratum 2, .*authenticated/.test(l));
  assert.equal(exchanges.length, 3, text);
  for (const line of exchanges) {
    const offset = Number(/offset ([+-]\d+\.\d+) s/.exec(line)?.[1]);
    assert.ok(Math.abs(offset) < 0.05, `same host, same clock: offset ${offset} s should be tiny (${line})`);
  }
});

test('client library against chrony: the KE result matches what chrony sends', { timeout: 30_000 }, async () => {
  const s = chrony();
  const ke = await performKeyExchange({ host: NTS_TEST_NAME, port: s.kePort, ca: pki.caPem, timeoutMs: 5000 });
  assert.ok(ke.ok, JSON.stringify(ke));
  assert.equal(ke.result.aeadId, 15, 'chrony 4.3 speaks AEAD 15 only');
  assert.equal(ke.result.c2s.length, 32);
  assert.equal(ke.result.cookies.length, 8);
  assert.equal(ke.result.ntpPort, s.ntpPort);
  assert.ok(ke.result.ntpPortFromRecord, 'RFC 8915 §4.1.8: chrony sends Port Negotiation when its port is not 123');
  assert.equal(ke.result.tlsVersion, 'TLSv1.3');
});

test('ntsd check against chrony with the wrong CA fails with the TLS exit code', { timeout: 30_000 }, async () => {
  const s = chrony();
  const otherCa = join(pki.dir, 'unsafe-other-ca.pem');
  writeFileSync(otherCa, makeOtherCa().certPem);
  const { code, text } = await check([`${NTS_TEST_NAME}:${s.kePort}`, '--ca', otherCa, '--count', '1']);
  assert.equal(code, CheckExitCode.tls, text);
  assert.match(text, /^FAIL \(tls\): TLS handshake failed: .*certificate/m);
});

test('ntsd check against chrony with a name the certificate lacks fails with the TLS exit code', { timeout: 30_000 }, async () => {
  const s = chrony();
  const { code, text } = await check([`localhost:${s.kePort}`, '--ca', pki.caCertPath, '--count', '1']);
  assert.equal(code, CheckExitCode.tls, text);
  assert.match(text, /ERR_TLS_CERT_ALTNAME_INVALID/);
});
