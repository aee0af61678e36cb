/**
 * The daemon with two certificate pairs on one `[[nts-ke-server]]` (nts-ke/service.ts): one expiry series
 * per name, and each pair reloaded on its own by polling and by SIGHUP; a bad new pair for one name is
 * logged and counted, and leaves every name (that one's old pair included) serving.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as tls from 'node:tls';
import { makeTestPki } from '../helpers/certs.js';
import {
  freePorts,
  makeTempDir,
  removeDir,
  sample,
  scrapeMetrics,
  startDaemon,
  testConfigToml,
  waitForMetrics,
  waitUntil,
  type LogLine,
} from '../helpers/daemon.js';

/** The fingerprint of the certificate the KE listener presents for `servername`. */
function presented(port: number, ca: string, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername, ALPNProtocols: ['ntske/1'], minVersion: 'TLSv1.3' }, () => {
      const fingerprint = socket.getPeerX509Certificate()?.fingerprint256 ?? '';
      socket.destroy();
      resolve(fingerprint);
    });
    socket.on('error', reject);
  });
}

test('two pairs on one listener: expiry by name; a bad new pair for one name (poll, then SIGHUP) is refused and counted, both names keep serving', { timeout: 60_000 }, async (t) => {
  const dir = makeTempDir('certs');
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  const second = pki.writeLeaf('second', ['nts.test']);
  const ports = await freePorts();
  const toml = testConfigToml({
    ...ports,
    certPath: pki.chainPath,
    keyPath: pki.keyPath,
    keExtra: ['', '[[nts-ke-server.certificate]]', `certificate-chain-path = ${JSON.stringify(second.chainPath)}`, `private-key-path = ${JSON.stringify(second.keyPath)}`],
  }).replace('certificate-reload-interval-s = 0', 'certificate-reload-interval-s = 1');
  const d = await startDaemon({ toml, dir });
  t.after(async () => {
    await d.stop('SIGKILL', 2000);
    removeDir(dir);
    pki.cleanup();
  });
  const ke = d.ntsKe[0];
  const metricsAt = d.metrics;
  assert.ok(ke !== undefined && metricsAt !== undefined);
  const fingerprintOf = (pem: string): string => new X509Certificate(pem).fingerprint256;

  // Each name gets its own certificate, and its own expiry series.
  assert.equal(await presented(ke.port, pki.caPem, 'localhost'), fingerprintOf(pki.certPem));
  assert.equal(await presented(ke.port, pki.caPem, 'nts.test'), fingerprintOf(second.certPem));
  const s = await scrapeMetrics(metricsAt);
  const notAfterS = (pem: string): number => Math.floor(Date.parse(new X509Certificate(pem).validTo) / 1000);
  assert.equal(sample(s, 'ntsd_tls_certificate_expiry_timestamp_seconds{name="localhost"}'), notAfterS(pki.certPem));
  assert.equal(sample(s, 'ntsd_tls_certificate_expiry_timestamp_seconds{name="nts.test"}'), notAfterS(second.certPem));

  // 1. Polling: a certificate for nts.test with another key is refused; both names keep their pairs.
  const refused = (l: LogLine): boolean => l['msg'] === 'TLS certificate reload refused; keeping the current certificate' && l['chainPath'] === second.chainPath;
  const stranger = pki.issueLeaf(['nts.test']);
  writeFileSync(second.chainPath, stranger.certPem + pki.caPem);
  await d.waitForLine(refused, 10_000);
  const afterPoll = await waitForMetrics(metricsAt, 'reload failure', (m) => sample(m, 'ntsd_tls_reloads_total{result="failure"}') >= 1);
  assert.equal(sample(afterPoll, 'ntsd_tls_reloads_total{result="success"}'), 0);
  assert.equal(await presented(ke.port, pki.caPem, 'nts.test'), fingerprintOf(second.certPem), 'the old nts.test pair keeps serving');
  assert.equal(await presented(ke.port, pki.caPem, 'localhost'), fingerprintOf(pki.certPem));

  // 2. Polling: a good renewal of nts.test is installed for that name only.
  const renewed = pki.issueLeaf(['nts.test'], 30);
  writeFileSync(second.keyPath, renewed.keyPem);
  writeFileSync(second.chainPath, renewed.certPem + pki.caPem);
  await waitForMetrics(metricsAt, 'reload success', (m) => sample(m, 'ntsd_tls_reloads_total{result="success"}') === 1);
  assert.equal(await presented(ke.port, pki.caPem, 'nts.test'), fingerprintOf(renewed.certPem));
  assert.equal(await presented(ke.port, pki.caPem, 'localhost'), fingerprintOf(pki.certPem));
  const renewedMetrics = await waitForMetrics(metricsAt, 'expiry follows the renewal', (m) => sample(m, 'ntsd_tls_certificate_expiry_timestamp_seconds{name="nts.test"}') === notAfterS(renewed.certPem));
  assert.equal(sample(renewedMetrics, 'ntsd_tls_certificate_expiry_timestamp_seconds{name="localhost"}'), notAfterS(pki.certPem));

  // 3. SIGHUP: an unreadable key for nts.test is refused again; both names still serve.
  const failuresBefore = sample(await scrapeMetrics(metricsAt), 'ntsd_tls_reloads_total{result="failure"}');
  writeFileSync(second.keyPath, 'not a key');
  const from = d.lines().length;
  d.signal('SIGHUP');
  await d.waitForLine(refused, 10_000, from);
  await waitForMetrics(metricsAt, 'SIGHUP failure counted', (m) => sample(m, 'ntsd_tls_reloads_total{result="failure"}') > failuresBefore);
  assert.equal(await presented(ke.port, pki.caPem, 'nts.test'), fingerprintOf(renewed.certPem));
  assert.equal(await presented(ke.port, pki.caPem, 'localhost'), fingerprintOf(pki.certPem));
  await waitUntil('still running', 1000, () => (d.running() ? true : undefined));
});
