import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { ensureDevCertificates, generateDevPki, ipAddressOctets } from '../../src/cli/dev-certs.js';
import { makeOtherCa, makeTestPki } from '../helpers/certs.js';

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

test('ipAddressOctets: IPv4, IPv6 with ::, and IPv4-embedded IPv6 (RFC 4291 §2.2)', () => {
  assert.equal(hex(ipAddressOctets('127.0.0.1')), '7f000001');
  assert.equal(hex(ipAddressOctets('::1')), '00000000000000000000000000000001');
  assert.equal(hex(ipAddressOctets('2001:db8::8:800:200c:417a')), '20010db80000000000080800200c417a');
  assert.equal(hex(ipAddressOctets('::ffff:192.0.2.1')), '00000000000000000000ffffc0000201');
  assert.equal(hex(ipAddressOctets('fe80::')), 'fe800000000000000000000000000000');
  assert.equal(hex(ipAddressOctets('1:2:3:4:5:6:7:8')), '00010002000300040005000600070008');
  assert.throws(() => ipAddressOctets('nts.test'));
});

test('generated CA and leaf parse and verify with X509Certificate (RFC 5280)', () => {
  const pki = makeTestPki(['nts.test', 'localhost', '127.0.0.1', '::1']);
  try {
    const ca = new X509Certificate(readFileSync(pki.caCertPath));
    const leaf = new X509Certificate(readFileSync(pki.certPath));
    assert.equal(ca.ca, true);
    assert.equal(leaf.ca, false);
    assert.ok(ca.verify(ca.publicKey), 'CA is self-signed');
    assert.ok(leaf.checkIssued(ca));
    assert.ok(leaf.verify(ca.publicKey));
    assert.ok(!leaf.verify(new X509Certificate(makeOtherCa().certPem).publicKey));
    assert.equal(leaf.checkHost('nts.test'), 'nts.test');
    assert.equal(leaf.checkHost('localhost'), 'localhost');
    assert.equal(leaf.checkHost('other.test'), undefined);
    assert.equal(leaf.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(leaf.checkIP('::1'), '::1');
    assert.equal(leaf.checkIP('127.0.0.2'), undefined);
    assert.ok(leaf.checkPrivateKey(createPrivateKey(pki.keyPem)));
    assert.deepEqual(leaf.keyUsage, ['1.3.6.1.5.5.7.3.1']); // Node reports extendedKeyUsage here
    assert.match(leaf.subjectAltName ?? '', /DNS:nts\.test/);
    assert.match(leaf.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
    assert.match(leaf.subject, /CN=nts\.test/);
    assert.equal((statSync(pki.keyPath).mode & 0o777).toString(8), '600');
    assert.equal(readFileSync(pki.chainPath, 'utf8'), pki.certPem + pki.caPem);
    const days = (Date.parse(leaf.validTo) - Date.now()) / 86_400_000;
    assert.ok(days > 824 && days < 826, `leaf lifetime ${days} days`);
  } finally {
    pki.cleanup();
  }
});

test('openssl verify accepts the chain and reads every extension', (t) => {
  const probe = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  if (probe.error !== undefined) {
    // Only this assertion depends on the binary; every other test here is pure Node.
    t.diagnostic('openssl binary absent: openssl cross-check not run');
    return;
  }
  const pki = makeTestPki(['nts.test', '127.0.0.1', '::1']);
  try {
    const verify = spawnSync(
      'openssl',
      ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', pki.caCertPath, pki.certPath],
      { encoding: 'utf8' },
    );
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, /OK/);
    const text = spawnSync('openssl', ['x509', '-noout', '-text', '-in', pki.certPath], { encoding: 'utf8' }).stdout;
    assert.match(text, /Version: 3/);
    assert.match(text, /ecdsa-with-SHA256/);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
    assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature/);
    assert.match(text, /TLS Web Server Authentication/);
    assert.match(text, /X509v3 Subject Key Identifier/);
    assert.match(text, /X509v3 Authority Key Identifier/);
    assert.match(text, /DNS:nts\.test, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1/);
    const caText = spawnSync('openssl', ['x509', '-noout', '-text', '-in', pki.caCertPath], { encoding: 'utf8' }).stdout;
    assert.match(caText, /CA:TRUE, pathlen:0/);
    assert.match(caText, /Certificate Sign, CRL Sign/);
    // A strict ASN.1 parse of the whole DER must succeed too.
    const asn1 = spawnSync('openssl', ['asn1parse', '-in', pki.certPath], { encoding: 'utf8' });
    assert.equal(asn1.status, 0, asn1.stderr);
  } finally {
    pki.cleanup();
  }
});

async function handshake(
  server: tls.Server,
  options: tls.ConnectionOptions,
): Promise<{ ok: true; peer: tls.PeerCertificate } | { ok: false; error: Error }> {
  const port = (server.address() as AddressInfo).port;
  return new Promise((resolve) => {
    const socket = tls.connect({ port, ...options });
    socket.once('secureConnect', () => {
      const peer = socket.getPeerCertificate();
      socket.destroy();
      resolve({ ok: true, peer });
    });
    socket.once('error', (error) => resolve({ ok: false, error }));
  });
}

test('TLS 1.3 handshake succeeds when the client trusts only the dev CA (DNS and IP identities)', async () => {
  const pki = makeTestPki(['nts.test', '127.0.0.1', '::1']);
  const server = tls.createServer({ cert: pki.certPem, key: pki.keyPem, minVersion: 'TLSv1.3' }, (s) => s.end());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const byName = await handshake(server, { host: '127.0.0.1', servername: 'nts.test', ca: pki.caPem });
    assert.equal(byName.ok, true, byName.ok ? '' : byName.error.message);
    const byIp = await handshake(server, { host: '127.0.0.1', ca: pki.caPem });
    assert.equal(byIp.ok, true, byIp.ok ? '' : byIp.error.message);
    const wrongName = await handshake(server, { host: '127.0.0.1', servername: 'evil.test', ca: pki.caPem });
    assert.equal(wrongName.ok, false);
    const wrongCa = await handshake(server, { host: '127.0.0.1', servername: 'nts.test', ca: makeOtherCa().certPem });
    assert.equal(wrongCa.ok, false);
    const systemCas = await handshake(server, { host: '127.0.0.1', servername: 'nts.test' });
    assert.equal(systemCas.ok, false, 'the dev CA must not be trusted by default');
  } finally {
    server.close();
    pki.cleanup();
  }
});

test('ensureDevCertificates creates the unsafe-dev files once and keeps them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'unsafe-ntsd-ensure-'));
  try {
    const first = ensureDevCertificates(join(dir, 'certs'));
    assert.equal(first.created, true);
    assert.match(first.caCertPath, /certs\/unsafe-dev-ca\.pem$/);
    assert.match(first.certPath, /certs\/unsafe-dev-server\.pem$/);
    assert.match(first.keyPath, /certs\/unsafe-dev-server\.key$/);
    assert.equal(statSync(first.keyPath).mode & 0o777, 0o600);
    const leaf = new X509Certificate(readFileSync(first.certPath));
    assert.equal(leaf.checkHost('localhost'), 'localhost');
    assert.equal(leaf.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(leaf.checkIP('::1'), '::1');
    assert.ok(leaf.verify(new X509Certificate(readFileSync(first.caCertPath)).publicKey));
    const before = readFileSync(first.certPath, 'utf8');
    const second = ensureDevCertificates(join(dir, 'certs'));
    assert.equal(second.created, false);
    assert.equal(readFileSync(first.certPath, 'utf8'), before);
    // A missing file triggers regeneration; so does an unparsable leaf.
    writeFileSync(first.certPath, 'garbage');
    assert.equal(ensureDevCertificates(join(dir, 'certs')).created, true);
    // Expired (generated long ago) → regenerated.
    generateDevPki({
      dir: join(dir, 'certs'),
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1'],
      validDays: 1,
      now: new Date(Date.now() - 10 * 86_400_000),
    });
    assert.equal(ensureDevCertificates(join(dir, 'certs')).created, true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('generateDevPki refuses a prefix without "unsafe-"', () => {
  assert.throws(() => generateDevPki({ dir: tmpdir(), dnsNames: ['x'], ipAddresses: [], prefix: 'prod' }), /unsafe-/);
});

test('GeneralizedTime after 2049 (RFC 5280 §4.1.2.5) parses', () => {
  const dir = mkdtempSync(join(tmpdir(), 'unsafe-ntsd-time-'));
  try {
    const pki = generateDevPki({ dir, dnsNames: ['a.test'], ipAddresses: [], validDays: 40_000 });
    const leaf = new X509Certificate(pki.leaf.certPem);
    assert.ok(new Date(leaf.validTo).getUTCFullYear() > 2100);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
