/**
 * The `[pool-ke]` front end as the daemon runs it (docs/pools.md): one KE listener like `[[nts-ke-server]]`
 * with the front end's request handler. From a TOML table: two KE threads, PROXY v2 from a trusted balancer
 * (the header's client address is what the access list sees), certificate hot reload (SIGHUP and polling),
 * and the KE metrics (ntsd_ke_*) counting the front end's sessions next to the pool metrics.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/load.js';
import { crc32c, PROXY_V2_SIGNATURE } from '../../src/core/proxy-v2.js';
import { decodeKeMessage, encodeKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';
import { createKeyset } from '../../src/core/nts/keyset.js';
import { startDaemon, type Daemon } from '../../src/daemon.js';
import { KeServer } from '../../src/nts-ke/server.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { waitUntil } from '../helpers/daemon.js';

const SOURCE_HOST = '127.0.0.2';
const TOKEN = 'front-end-token';
const REQUEST = encodeKeMessage([
  { kind: 'nextProtocol', critical: true, protocolIds: [0] },
  { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
  { kind: 'endOfMessage', critical: true },
] satisfies KeRecord[]);

/** A PROXY v2 TCP4 header for a client at `client`:40000, with a CRC32C TLV. */
function proxyHeader(client: string): Uint8Array {
  const [a = 0, b = 0, c = 0, d = 0] = client.split('.').map(Number);
  const body = [a, b, c, d, 127, 0, 0, 1, 0x9c, 0x40, 0x11, 0x6c, 0x03, 0x00, 0x04, 0, 0, 0, 0];
  const out = Uint8Array.from([...PROXY_V2_SIGNATURE, 0x21, 0x11, 0, body.length, ...body]);
  new DataView(out.buffer).setUint32(out.length - 4, crc32c(out));
  return out;
}

interface Answer {
  /** Served by the source the front end chose: its Server record. */
  readonly server: string | undefined;
  readonly cookies: number;
  /** Serial number of the certificate the front end presented; undefined when TLS never finished. */
  readonly serial: string | undefined;
}

/** NTS-KE at the front end as the balancer would pass it on: a PROXY v2 header for `client`, then TLS. */
function keVia(port: number, pki: TestPki, client: string): Promise<Answer> {
  return new Promise((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port });
    raw.on('error', () => undefined);
    raw.once('connect', () => {
      raw.write(proxyHeader(client));
      const socket = tls.connect({ socket: raw, ca: pki.caPem, servername: 'pool.test', ALPNProtocols: ['ntske/1'] });
      const chunks: Buffer[] = [];
      let serial: string | undefined;
      socket.on('secureConnect', () => {
        serial = socket.getPeerCertificate().serialNumber;
        socket.write(REQUEST);
      });
      socket.on('data', (d: Buffer) => chunks.push(d));
      socket.on('error', () => undefined);
      socket.on('close', () => {
        const decoded = decodeKeMessage(new Uint8Array(Buffer.concat(chunks)));
        const records = decoded.ok ? decoded.records : [];
        const server = records.flatMap((r) => (r.kind === 'ntpv4Server' ? [r.server] : []))[0];
        resolve({ server, cookies: records.filter((r) => r.kind === 'newCookie').length, serial });
      });
    });
  });
}

/** The value of one series in the daemon's registry (0 when absent). */
async function metric(daemon: Daemon, series: string): Promise<number> {
  const text = await daemon.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

let pki: TestPki;
let source: KeServer;
let daemon: Daemon;
let port = 0;

before(async () => {
  pki = makeTestPki(['pool.test', SOURCE_HOST]);
  source = new KeServer({
    listen: [{ host: SOURCE_HOST, port: 0 }],
    certificateChainPem: pki.certPem,
    privateKeyPem: pki.keyPem,
    keyExchangeTimeoutMs: 3000,
    concurrentConnections: 64,
    concurrentConnectionsPerSource: 64,
    maxRequestBytes: 4096,
    clientRateLimit: { intervalS: 0, burst: 8, tableSize: 1024 },
    policy: { aeadIds: [15], poolAuthenticationTokens: [TOKEN], ntpServer: SOURCE_HOST },
    keyset: createKeyset(Math.floor(Date.now() / 1000), (b) => void randomFillSync(b), { staleKeyCount: 1 }),
    keepAlive: { longlivedConnections: 8, idleTimeoutMs: 60_000, maxAgeMs: 600_000 },
    logger: pino({ level: 'silent' }),
    threadNiceness: 0,
  });
  const [bound] = await source.start();
  const toml = [
    '[pool-ke]',
    'listen = "127.0.0.1:0"',
    `certificate-chain-path = ${JSON.stringify(pki.chainPath)}`,
    `private-key-path = ${JSON.stringify(pki.keyPath)}`,
    `upstream-ca-path = ${JSON.stringify(pki.caCertPath)}`,
    'threads = 2',
    'thread-niceness = 0',
    'proxy-protocol = true',
    'proxy-trusted-sources = ["127.0.0.1/32"]',
    'deny = ["192.0.2.0/24"]',
    'client-rate-limit-interval-s = 0',
    'certificate-reload-interval-s = 1',
    '',
    '[[pool-ke.source]]',
    `name = "${SOURCE_HOST}"`,
    `address = "${SOURCE_HOST}:${bound?.port ?? 0}"`,
    `authentication-token = "${TOKEN}"`,
    '',
    '[observability]',
    'log-level = "error"',
    'metrics-listen = ""',
    '',
  ].join('\n');
  const parsed = parseConfig(toml, pki.dir);
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.errors.join('\n'));
  daemon = await startDaemon(parsed.config);
  port = daemon.poolKeAddress?.port ?? 0;
  assert.ok(port > 0);
  assert.deepEqual(daemon.keAddresses, [], 'the front end is not an ordinary KE listener');
});

after(async () => {
  await daemon.stop();
  await source.stop();
  pki.cleanup();
});

test('behind a trusted balancer the PROXY v2 client address reaches the access list; the KE metrics count the front end', async () => {
  const served = await Promise.all(Array.from({ length: 6 }, (_, i) => keVia(port, pki, `198.51.100.${i + 1}`)));
  for (const a of served) {
    assert.equal(a.server, SOURCE_HOST, 'the cookies come from the source');
    assert.equal(a.cookies, 8);
  }
  const denied = await keVia(port, pki, '192.0.2.7');
  assert.equal(denied.serial, undefined, 'closed before TLS: the header\'s address is denied');
  await waitUntil('the front end\'s sessions in the KE and pool metrics', 5000, async () =>
    (await metric(daemon, 'ntsd_ke_sessions_total{outcome="success"}')) === 6 &&
    (await metric(daemon, 'ntsd_pool_ke_sessions_total{outcome="success"}')) === 6 &&
    (await metric(daemon, 'ntsd_ke_connections_rejected_total{reason="access_denied"}')) === 1 &&
    (await metric(daemon, 'ntsd_ke_proxy_connections_total{source="127.0.0.1/32"}')) === 7
      ? true
      : undefined,
  );
  assert.equal(await metric(daemon, 'ntsd_ke_connections_accepted_total'), 6);
  assert.equal(await metric(daemon, `ntsd_pool_ke_source_healthy{source="${SOURCE_HOST}"}`), 1);
});

test('a certificate swapped on disk is served after SIGHUP, and after the next poll without one', async () => {
  const before = (await keVia(port, pki, '198.51.100.20')).serial;
  assert.ok(before !== undefined);
  const swap = (): void => {
    const leaf = pki.issueLeaf(['pool.test']);
    writeFileSync(pki.keyPath, leaf.keyPem);
    writeFileSync(pki.chainPath, leaf.certPem);
  };
  swap();
  await daemon.reload(); // what SIGHUP does
  const afterReload = (await keVia(port, pki, '198.51.100.21')).serial;
  assert.ok(afterReload !== undefined && afterReload !== before, 'the new leaf after SIGHUP');
  // Every thread serves it: a few sessions, spread by the kernel over both threads.
  const again = await Promise.all(Array.from({ length: 6 }, (_, i) => keVia(port, pki, `198.51.100.${30 + i}`)));
  assert.deepEqual(new Set(again.map((a) => a.serial)), new Set([afterReload]));
  swap();
  const polled = await waitUntil('the polled certificate', 8000, async () => {
    const serial = (await keVia(port, pki, '198.51.100.22')).serial;
    return serial !== undefined && serial !== afterReload ? serial : undefined;
  }, 200);
  assert.notEqual(polled, before);
});
