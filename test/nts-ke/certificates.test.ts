/**
 * Several certificate pairs on one KE listener (docs/install.md "Several certificates on one listener"): real TLS on 127.0.0.1.
 * The server name a client sends picks its certificate; among pairs for one name, its signature algorithms
 * pick the key type; a bad reload of one pair leaves every name serving.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync, X509Certificate } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { pino } from 'pino';
import { decodeKeMessage, encodeKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';
import { createKeyset } from '../../src/core/nts/keyset.js';
import { CertificateSelector, certificateIdentity, certificateNameMatches } from '../../src/nts-ke/certificates.js';
import { KeServer, type KeServerOptions, type KeStats } from '../../src/nts-ke/server.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';

/** TLS 1.3 signature schemes a client offers to accept only an RSA certificate (RFC 8446 §4.2.3). */
const RSA_ONLY_SIGALGS = 'rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pkcs1_sha256';
/** ... and only an ECDSA P-256 one. */
const ECDSA_ONLY_SIGALGS = 'ecdsa_secp256r1_sha256';

const GOOD_REQUEST: readonly KeRecord[] = [
  { kind: 'nextProtocol', critical: true, protocolIds: [0] },
  { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
  { kind: 'endOfMessage', critical: true },
];

interface Seen {
  /** The certificate the server presented, when the handshake completed. */
  readonly certificate?: X509Certificate;
  /** Whether the chain verified against the test CA for the name asked (authorized). */
  readonly authorized?: boolean;
  /** New Cookie records in the answer. */
  readonly cookies?: number;
  readonly error?: string;
}

/** One NTS-KE exchange; the server's name check is reported, not enforced, so a wrong certificate can be seen. */
function exchange(port: number, ca: string, options: { servername?: string; sigalgs?: string }): Promise<Seen> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let certificate: X509Certificate | undefined;
    let authorized: boolean | undefined;
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ca,
      ALPNProtocols: ['ntske/1'],
      minVersion: 'TLSv1.3',
      rejectUnauthorized: false,
      ...(options.servername === undefined ? {} : { servername: options.servername }),
      ...(options.sigalgs === undefined ? {} : { sigalgs: options.sigalgs }),
    });
    socket.on('secureConnect', () => {
      certificate = socket.getPeerX509Certificate();
      authorized = socket.authorized && (options.servername === undefined || certificate?.checkHost(options.servername) !== undefined);
      socket.write(encodeKeMessage(GOOD_REQUEST));
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (e: Error) => resolve({ error: e.message }));
    socket.on('close', () => {
      if (certificate === undefined) return resolve({ error: 'closed before the handshake completed' });
      const decoded = decodeKeMessage(Buffer.concat(chunks));
      const cookies = decoded.ok ? decoded.records.filter((r) => r.kind === 'newCookie').length : -1;
      resolve({ certificate, authorized: authorized === true, cookies });
    });
  });
}

function cn(seen: Seen): string | undefined {
  return /CN=([^\n]*)/.exec(seen.certificate?.subject ?? '')?.[1];
}

function keyType(seen: Seen): string | undefined {
  return seen.certificate?.publicKey.asymmetricKeyType;
}

async function startServer(first: { certPem: string; keyPem: string }, more: { certPem: string; keyPem: string }[], pki: TestPki, extra: Partial<KeServerOptions> = {}): Promise<{ server: KeServer; port: number; stats: KeStats[] }> {
  const server = new KeServer({
    listen: [{ host: '127.0.0.1', port: 0 }],
    certificateChainPem: first.certPem + pki.caPem,
    privateKeyPem: first.keyPem,
    moreCertificates: more.map((p) => ({ chainPem: p.certPem + pki.caPem, keyPem: p.keyPem })),
    keyExchangeTimeoutMs: 1500,
    concurrentConnections: 64,
    concurrentConnectionsPerSource: 64,
    maxRequestBytes: 1024,
    clientRateLimit: { intervalS: 0, burst: 8, tableSize: 1024 },
    policy: { aeadIds: [15] },
    keyset: createKeyset(Math.floor(Date.now() / 1000), (b) => void randomFillSync(b), { staleKeyCount: 2 }),
    logger: pino({ level: 'silent' }),
    statsIntervalMs: 25,
    ...extra,
  });
  const stats: KeStats[] = [];
  server.onStats((s) => stats.push(s));
  const [address] = await server.start();
  assert.ok(address !== undefined);
  return { server, port: address.port, stats };
}

describe('certificate identity and selection rules', () => {
  test('names come from the subjectAltName (DNS, lower case; IPs apart), the key type from the leaf', () => {
    const pki = makeTestPki(['Time.Example.org', '*.pool.example.org', '127.0.0.1']);
    try {
      const id = certificateIdentity(pki.certPem + pki.caPem);
      assert.deepEqual(id.dnsNames, ['time.example.org', '*.pool.example.org']);
      assert.deepEqual(id.ipAddresses, ['127.0.0.1']);
      assert.equal(id.keyType, 'ec');
      assert.equal(id.primaryName, 'time.example.org');
      assert.equal(certificateIdentity(pki.issueLeaf(['127.0.0.1'], undefined, 'rsa').certPem).primaryName, '127.0.0.1');
      assert.equal(certificateIdentity(pki.issueLeaf(['a.test'], undefined, 'rsa').certPem).keyType, 'rsa');
    } finally {
      pki.cleanup();
    }
  });

  test('RFC 6125 §6.4.3: a wildcard stands for exactly one left-most label', () => {
    assert.ok(certificateNameMatches('*.example.org', 'nts.example.org'));
    assert.ok(!certificateNameMatches('*.example.org', 'example.org'));
    assert.ok(!certificateNameMatches('*.example.org', 'a.b.example.org'));
    assert.ok(certificateNameMatches('nts.example.org', 'nts.example.org'));
  });

  test('one pair, or an ECDSA and an RSA pair for the same names, need no look at the server name', () => {
    const pki = makeTestPki(['a.test']);
    try {
      const options = (pairs: readonly { chainPem: string; keyPem: string }[]): tls.SecureContextOptions => ({
        cert: pairs.map((p) => p.chainPem),
        key: pairs.map((p) => p.keyPem),
        minVersion: 'TLSv1.3',
      });
      const ecdsa = { chainPem: pki.certPem, keyPem: pki.keyPem };
      const rsaLeaf = pki.issueLeaf(['a.test'], undefined, 'rsa');
      const rsa = { chainPem: rsaLeaf.certPem, keyPem: rsaLeaf.keyPem };
      const otherLeaf = pki.issueLeaf(['b.test']);
      assert.equal(new CertificateSelector([ecdsa], options).needsServerName, false);
      assert.equal(new CertificateSelector([ecdsa, rsa], options).needsServerName, false);
      const two = new CertificateSelector([ecdsa, { chainPem: otherLeaf.certPem, keyPem: otherLeaf.keyPem }], options);
      assert.equal(two.needsServerName, true);
      assert.equal(two.contextFor('c.test'), two.defaultContext, 'an unknown name gets the first pair');
      assert.notEqual(two.contextFor('b.test'), two.defaultContext);
      assert.throws(() => new CertificateSelector([], options));
    } finally {
      pki.cleanup();
    }
  });
});

describe('several certificate pairs on one KE listener (real TLS)', () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki(['time.test', '127.0.0.1']);
  });
  after(() => pki.cleanup());

  test('two names: each client sees its own certificate; no server name or an unknown one gets the first', async () => {
    const second = pki.issueLeaf(['nts.test']);
    const h = await startServer({ certPem: pki.certPem, keyPem: pki.keyPem }, [second], pki);
    try {
      const time = await exchange(h.port, pki.caPem, { servername: 'time.test' });
      assert.equal(cn(time), 'time.test');
      assert.equal(time.authorized, true);
      assert.equal(time.cookies, 8);
      const nts = await exchange(h.port, pki.caPem, { servername: 'nts.test' });
      assert.equal(cn(nts), 'nts.test', 'the second name is served by the second pair');
      assert.equal(nts.certificate?.subjectAltName, 'DNS:nts.test');
      assert.equal(nts.authorized, true);
      assert.equal(nts.cookies, 8, 'a full NTS-KE exchange after the ClientHello was read ahead');
      const noName = await exchange(h.port, pki.caPem, {});
      assert.equal(cn(noName), 'time.test');
      const unknown = await exchange(h.port, pki.caPem, { servername: 'other.test' });
      assert.equal(cn(unknown), 'time.test');
    } finally {
      await h.server.stop();
    }
  });

  test('ECDSA and RSA side by side: an RSA-only client gets RSA, an ECDSA-only client ECDSA, a client with both ECDSA', async () => {
    // The RSA-only client really refuses ECDSA: against an ECDSA-only listener its handshake fails.
    const ecdsaOnly = await startServer({ certPem: pki.certPem, keyPem: pki.keyPem }, [], pki);
    try {
      const refused = await exchange(ecdsaOnly.port, pki.caPem, { servername: 'time.test', sigalgs: RSA_ONLY_SIGALGS });
      assert.ok(refused.error !== undefined, 'an RSA-only client cannot use an ECDSA certificate');
    } finally {
      await ecdsaOnly.server.stop();
    }
    // The default name with both key types, and a second name with both (the ClientHello picks its context).
    const rsaTime = pki.issueLeaf(['time.test', '127.0.0.1'], undefined, 'rsa');
    const ecdsaNts = pki.issueLeaf(['nts.test']);
    const rsaNts = pki.issueLeaf(['nts.test'], undefined, 'rsa');
    const h = await startServer({ certPem: pki.certPem, keyPem: pki.keyPem }, [rsaTime, ecdsaNts, rsaNts], pki);
    try {
      for (const name of ['time.test', 'nts.test']) {
        const rsa = await exchange(h.port, pki.caPem, { servername: name, sigalgs: RSA_ONLY_SIGALGS });
        assert.equal(keyType(rsa), 'rsa', `${name}: ${rsa.error ?? ''}`);
        assert.equal(cn(rsa), name);
        assert.equal(rsa.authorized, true);
        assert.equal(rsa.cookies, 8);
        const ecdsa = await exchange(h.port, pki.caPem, { servername: name, sigalgs: ECDSA_ONLY_SIGALGS });
        assert.equal(keyType(ecdsa), 'ec', `${name}: ${ecdsa.error ?? ''}`);
        assert.equal(cn(ecdsa), name);
        const both = await exchange(h.port, pki.caPem, { servername: name });
        assert.equal(keyType(both), 'ec', 'ECDSA first when the client takes both (smaller, faster)');
        assert.equal(cn(both), name);
      }
    } finally {
      await h.server.stop();
    }
  });

  test('a second name served by RSA only never leaks the first name\'s ECDSA certificate', async () => {
    const rsaNts = pki.issueLeaf(['nts.test'], undefined, 'rsa');
    const h = await startServer({ certPem: pki.certPem, keyPem: pki.keyPem }, [rsaNts], pki);
    try {
      const both = await exchange(h.port, pki.caPem, { servername: 'nts.test' });
      assert.equal(cn(both), 'nts.test');
      assert.equal(keyType(both), 'rsa');
      const ecdsaOnly = await exchange(h.port, pki.caPem, { servername: 'nts.test', sigalgs: ECDSA_ONLY_SIGALGS });
      assert.ok(ecdsaOnly.error !== undefined, 'no ECDSA certificate for nts.test: the handshake fails');
    } finally {
      await h.server.stop();
    }
  });

  test('reloading one pair: a bad pair is refused and both names keep serving; a good one replaces only its name', async () => {
    const second = pki.issueLeaf(['nts.test']);
    const h = await startServer({ certPem: pki.certPem, keyPem: pki.keyPem }, [second], pki);
    try {
      const before = await exchange(h.port, pki.caPem, { servername: 'nts.test' });
      const wrongKey = pki.issueLeaf(['nts.test']);
      await assert.rejects(h.server.reloadCertificate(wrongKey.certPem + pki.caPem, second.keyPem, 1), /certificate reload refused/);
      await assert.rejects(h.server.reloadCertificate(second.certPem, second.keyPem, 2), /no certificate pair 2/);
      const stillNts = await exchange(h.port, pki.caPem, { servername: 'nts.test' });
      assert.equal(stillNts.certificate?.fingerprint256, before.certificate?.fingerprint256);
      assert.equal(cn(await exchange(h.port, pki.caPem, { servername: 'time.test' })), 'time.test');
      const renewed = pki.issueLeaf(['nts.test']);
      await h.server.reloadCertificate(renewed.certPem + pki.caPem, renewed.keyPem, 1);
      const after = await exchange(h.port, pki.caPem, { servername: 'nts.test' });
      assert.notEqual(after.certificate?.fingerprint256, before.certificate?.fingerprint256);
      assert.equal(cn(after), 'nts.test');
      const time = await exchange(h.port, pki.caPem, { servername: 'time.test' });
      assert.equal(time.certificate?.fingerprint256, new X509Certificate(pki.certPem).fingerprint256);
    } finally {
      await h.server.stop();
    }
  });

  test('a connection that never sends its ClientHello is cut at the session deadline (timeout) and can be evicted', async () => {
    const second = pki.issueLeaf(['nts.test']);
    const h = await startServer({ certPem: pki.certPem, keyPem: pki.keyPem }, [second], pki, { keyExchangeTimeoutMs: 400, concurrentConnections: 2 });
    try {
      const silent = net.connect(h.port, '127.0.0.1');
      silent.on('error', () => undefined);
      const half = net.connect(h.port, '127.0.0.1');
      half.on('error', () => undefined);
      half.write(Uint8Array.of(22, 3, 1, 0, 200, 1, 0)); // a ClientHello that never completes
      await new Promise((r) => setTimeout(r, 100));
      // The cap (2) is full of connections without a ClientHello: a real client evicts one of them.
      const good = await exchange(h.port, pki.caPem, { servername: 'nts.test' });
      assert.equal(cn(good), 'nts.test');
      const closed = (s: net.Socket): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.once('close', () => r())));
      const startedMs = Date.now();
      await Promise.all([closed(silent), closed(half)]);
      assert.ok(Date.now() - startedMs < 1500, 'closed by the deadline');
      const deadline = Date.now() + 2000;
      const sum = (o: 'timeout' | 'evicted' | 'success'): number => h.stats.reduce((n, s) => n + s.sessions[o], 0);
      while (sum('timeout') + sum('evicted') < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      assert.equal(sum('evicted'), 1);
      assert.equal(sum('timeout'), 1);
      assert.equal(sum('success'), 1);
    } finally {
      await h.server.stop();
    }
  });
});
