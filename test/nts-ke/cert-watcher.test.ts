import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync, X509Certificate } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import * as tls from 'node:tls';
import { pino } from 'pino';
import { createKeyset } from '../../src/core/nts/keyset.js';
import { NtsdError } from '../../src/errors.js';
import {
  CertWatcher,
  loadCertificatePair,
  validateCertificatePair,
  type CertificatePair,
  type CertificateReloadResult,
} from '../../src/nts-ke/cert-watcher.js';
import { createDevCertificateAuthority, issueDevLeafCertificate } from '../../src/cli/dev-certs.js';
import { KeServer } from '../../src/nts-ke/server.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';

/** Replaces a file atomically, as the certbot deploy hook does. */
function replaceFile(path: string, content: string): void {
  writeFileSync(`${path}.new`, content, { mode: 0o600 });
  renameSync(`${path}.new`, path);
}

function serialOf(pem: string): string {
  return new X509Certificate(pem).serialNumber;
}

/** Connects, completes a TLS 1.3 handshake trusting only `ca`, returns the server leaf serial. */
function peerSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, ALPNProtocols: ['ntske/1'] }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.on('error', reject);
  });
}

describe('validateCertificatePair', () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki(['nts.test', '127.0.0.1']);
  });
  after(() => pki.cleanup());

  test('a matching chain and key validate; expiry, subject and chain length are reported', async () => {
    const loaded = await loadCertificatePair(pki.chainPath, pki.keyPath);
    assert.ok(loaded.ok, loaded.ok ? '' : loaded.error);
    const leaf = new X509Certificate(pki.certPem);
    assert.equal(loaded.pair.notAfterS, Math.floor(Date.parse(leaf.validTo) / 1000));
    assert.match(loaded.pair.subject, /CN=nts\.test/);
    assert.match(loaded.pair.subjectAltName, /IP Address:127\.0\.0\.1/);
    assert.equal(loaded.pair.chainLength, 2);
    assert.deepEqual(loaded.pair.warnings, []);
  });

  test('refusals: mismatched key, garbage, no certificate, expired leaf, missing file', async () => {
    const other = pki.issueLeaf();
    const mismatched = validateCertificatePair(pki.certPem, other.keyPem);
    assert.equal(mismatched.ok, false);
    assert.match(mismatched.ok ? '' : mismatched.error, /does not match/);
    assert.equal(validateCertificatePair(pki.certPem, 'not a key').ok, false);
    assert.equal(validateCertificatePair('', pki.keyPem).ok, false);
    const broken = pki.certPem.replace(/\n[A-Za-z0-9+/]{64}\n/, '\n'); // one base64 line cut out of the DER
    assert.notEqual(broken, pki.certPem);
    assert.equal(validateCertificatePair(broken, pki.keyPem).ok, false);
    const old = issueDevLeafCertificate(pki.ca, {
      dnsNames: ['nts.test'],
      ipAddresses: [],
      validDays: 1,
      now: new Date(Date.now() - 5 * 86_400_000),
    });
    const expired = validateCertificatePair(old.certPem, old.keyPem);
    assert.match(expired.ok ? '' : expired.error, /expired/);
    const missing = await loadCertificatePair(`${pki.dir}/nope.pem`, pki.keyPath);
    assert.match(missing.ok ? '' : missing.error, /cannot read/);
  });

  test('a chain in the wrong order validates with a warning', () => {
    const reversed = validateCertificatePair(pki.caPem + pki.certPem, pki.keyPem);
    // The first certificate is the CA, whose key is not ours: refused as a mismatch.
    assert.equal(reversed.ok, false);
    const unrelated = createDevCertificateAuthority('ntsd UNSAFE unrelated CA');
    const wrongIssuer = validateCertificatePair(pki.certPem + unrelated.certPem, pki.keyPem);
    assert.ok(wrongIssuer.ok);
    assert.equal(wrongIssuer.pair.warnings.length, 1);
  });
});

describe('CertWatcher', () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki(['127.0.0.1']);
  });
  after(() => pki.cleanup());

  test('load() refuses an unusable initial pair with NtsdError TLS_MATERIAL_INVALID', async () => {
    const watcher = new CertWatcher({ chainPath: pki.certPath, keyPath: `${pki.dir}/missing.key`, intervalS: 0, onReload: () => undefined });
    await assert.rejects(watcher.load(), (e: unknown) => e instanceof NtsdError && e.code === 'TLS_MATERIAL_INVALID');
  });

  test('swap to a new valid pair → new KE handshakes see it; mismatched pair → the old one stays', async () => {
    const keyset = createKeyset(Math.floor(Date.now() / 1000), (b) => {
      randomFillSync(b);
    }, { staleKeyCount: 1 });
    const results: CertificateReloadResult[] = [];
    const installed: CertificatePair[] = [];
    const chainPath = `${pki.dir}/unsafe-watch-chain.pem`;
    const keyPath = `${pki.dir}/unsafe-watch.key`;
    writeFileSync(chainPath, pki.certPem + pki.caPem);
    writeFileSync(keyPath, pki.keyPem, { mode: 0o600 });
    let server: KeServer | undefined;
    const watcher = new CertWatcher({
      chainPath,
      keyPath,
      intervalS: 0,
      onReload: async (pair) => {
        installed.push(pair);
        await server?.reloadCertificate(pair.chainPem, pair.keyPem);
      },
      onResult: (r) => results.push(r),
    });
    const initial = await watcher.load();
    server = new KeServer({
      listen: [{ host: '127.0.0.1', port: 0 }],
      certificateChainPem: initial.chainPem,
      privateKeyPem: initial.keyPem,
      keyExchangeTimeoutMs: 1000,
      concurrentConnections: 16,
      concurrentConnectionsPerSource: 16,
      maxRequestBytes: 1024,
      clientRateLimit: { intervalS: 0, burst: 8, tableSize: 16 },
      policy: { aeadIds: [15] },
      keyset,
      logger: pino({ level: 'silent' }),
    });
    try {
      const [bound] = await server.start();
      const port = bound?.port ?? 0;
      assert.equal(await peerSerial(port, pki.caPem), serialOf(pki.certPem));
      assert.equal(await watcher.reload(), 'unchanged');

      const fresh = pki.issueLeaf();
      replaceFile(keyPath, fresh.keyPem);
      replaceFile(chainPath, fresh.certPem + pki.caPem);
      assert.equal(await watcher.reload(), 'success');
      assert.equal(await peerSerial(port, pki.caPem), serialOf(fresh.certPem));
      assert.equal(watcher.current?.fingerprint256, new X509Certificate(fresh.certPem).fingerprint256);

      // Mismatched: a new certificate whose key was not copied.
      const third = pki.issueLeaf();
      replaceFile(chainPath, third.certPem + pki.caPem);
      assert.equal(await watcher.reload(), 'failure');
      assert.equal(await peerSerial(port, pki.caPem), serialOf(fresh.certPem));
      assert.equal(watcher.current?.fingerprint256, new X509Certificate(fresh.certPem).fingerprint256);
      assert.deepEqual(results, ['success', 'failure']);
      assert.equal(installed.length, 1);
    } finally {
      watcher.stop();
      await server.stop();
    }
  });

  test('polling notices a change by itself, reports a bad state once, and recovers', async () => {
    const chainPath = `${pki.dir}/unsafe-poll-chain.pem`;
    const keyPath = `${pki.dir}/unsafe-poll.key`;
    writeFileSync(chainPath, pki.certPem);
    writeFileSync(keyPath, pki.keyPem, { mode: 0o600 });
    const results: CertificateReloadResult[] = [];
    const installed: string[] = [];
    let wake: (() => void) | undefined;
    const watcher = new CertWatcher({
      chainPath,
      keyPath,
      intervalS: 0.03,
      onReload: (pair) => {
        installed.push(serialOf(pair.chainPem));
      },
      onResult: (r) => {
        results.push(r);
        wake?.();
      },
    });
    const next = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no reload result; so far ${results.join(',')}`)), 2000);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    try {
      await watcher.load();
      const fresh = pki.issueLeaf();
      // Non-atomic renewal: the certificate first, then (a few polls later) its key.
      let event = next();
      replaceFile(chainPath, fresh.certPem);
      await event;
      assert.deepEqual(results, ['failure']);
      await new Promise((r) => setTimeout(r, 150)); // several polls of the same bad state: no repeats
      assert.deepEqual(results, ['failure']);
      event = next();
      replaceFile(keyPath, fresh.keyPem);
      await event;
      assert.deepEqual(results, ['failure', 'success']);
      assert.deepEqual(installed, [serialOf(fresh.certPem)]);
      // A file vanishing is a failure too, and the pair stays.
      event = next();
      rmSync(keyPath);
      await event;
      assert.equal(results.at(-1), 'failure');
      assert.equal(watcher.current?.keyPem, fresh.keyPem);
    } finally {
      watcher.stop();
    }
  });

  test('an onReload rejection counts as a failure and keeps the old pair', async () => {
    const chainPath = `${pki.dir}/unsafe-rej-chain.pem`;
    const keyPath = `${pki.dir}/unsafe-rej.key`;
    writeFileSync(chainPath, pki.certPem);
    writeFileSync(keyPath, pki.keyPem, { mode: 0o600 });
    const watcher = new CertWatcher({
      chainPath,
      keyPath,
      intervalS: 0,
      onReload: () => Promise.reject(new Error('KE thread said no')),
    });
    await watcher.load();
    const fresh = pki.issueLeaf();
    replaceFile(keyPath, fresh.keyPem);
    replaceFile(chainPath, fresh.certPem);
    assert.equal(await watcher.reload(), 'failure');
    assert.equal(watcher.current?.keyPem, pki.keyPem);
  });
});
