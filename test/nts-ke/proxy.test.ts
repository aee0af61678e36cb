/**
 * PROXY protocol v2 on a real KE listener (nts-ke/proxy.ts, nts-ke/listener.ts): real TCP and TLS on
 * 127.0.0.1. A trusted peer's header decides the client address the per-client limit sees; the octets
 * after the header reach TLS even when they share a TCP segment with it; an untrusted peer, a missing or
 * broken header and a header that never completes are each refused and counted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import * as net from 'node:net';
import { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { pino } from 'pino';
import { decodeKeMessage, encodeKeMessage } from '../../src/core/nts/ke-record.js';
import { createKeyset } from '../../src/core/nts/keyset.js';
import { crc32c, PROXY_V2_SIGNATURE } from '../../src/core/proxy-v2.js';
import { KeServer, type KeServerOptions, type KeStats } from '../../src/nts-ke/server.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';

const fill = (b: Uint8Array): void => {
  randomFillSync(b);
};

const REQUEST = encodeKeMessage([
  { kind: 'nextProtocol', critical: true, protocolIds: [0] },
  { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
  { kind: 'endOfMessage', critical: true },
]);

/** A PROXY v2 TCP4 header from `client`:40000 to 127.0.0.1:4460, with a CRC32C TLV. */
function proxyHeader(client: string, command = 1): Uint8Array {
  const [a = 0, b = 0, c = 0, d = 0] = client.split('.').map(Number);
  const body = [a, b, c, d, 127, 0, 0, 1, 0x9c, 0x40, 0x11, 0x6c, 0x03, 0x00, 0x04, 0, 0, 0, 0];
  const out = Uint8Array.from([...PROXY_V2_SIGNATURE, 0x20 | command, 0x11, 0, body.length, ...body]);
  new DataView(out.buffer).setUint32(out.length - 4, crc32c(out));
  return out;
}

interface Totals {
  accepted: number;
  rejected: Record<string, number>;
  proxied: Record<string, number>;
  success: number;
}

async function startProxied(pki: TestPki, overrides: Partial<KeServerOptions> = {}): Promise<{ server: KeServer; port: number; totals: Totals; until: (p: (t: Totals) => boolean) => Promise<void> }> {
  const server = new KeServer({
    listen: [{ host: '127.0.0.1', port: 0 }],
    certificateChainPem: pki.certPem,
    privateKeyPem: pki.keyPem,
    keyExchangeTimeoutMs: 2000,
    concurrentConnections: 64,
    concurrentConnectionsPerSource: 64,
    maxRequestBytes: 1024,
    // One connection per client address, then nothing for a minute.
    clientRateLimit: { intervalS: 60, burst: 1, tableSize: 1024 },
    policy: { aeadIds: [15], ntpPort: 4123 },
    keyset: createKeyset(Math.floor(Date.now() / 1000), fill, { staleKeyCount: 1 }),
    logger: pino({ level: 'silent' }),
    statsIntervalMs: 25,
    proxyTrustedSources: ['127.0.0.0/8'],
    ...overrides,
  });
  const totals: Totals = { accepted: 0, rejected: {}, proxied: {}, success: 0 };
  server.onStats((s: KeStats) => {
    totals.accepted += s.accepted;
    for (const [k, v] of Object.entries(s.rejected)) totals.rejected[k] = (totals.rejected[k] ?? 0) + v;
    for (const [k, v] of Object.entries(s.proxyConnections)) totals.proxied[k] = (totals.proxied[k] ?? 0) + v;
    totals.success += s.sessions.success;
  });
  const [first] = await server.start();
  assert.ok(first !== undefined);
  const until = async (p: (t: Totals) => boolean): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!p(totals)) {
      if (Date.now() > deadline) throw new Error(`stats never matched: ${JSON.stringify(totals)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  return { server, port: first.port, totals, until };
}

/**
 * Connects, sends `prefix` (a PROXY header, or anything), then runs NTS-KE over TLS. With `coalesce` the
 * prefix and the ClientHello leave in one write (one TCP segment on loopback), as HAProxy may send them.
 */
function keThrough(port: number, pki: TestPki, prefix: Uint8Array, coalesce: boolean): Promise<{ ok: boolean; records: number; error: string }> {
  return new Promise((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port });
    raw.on('error', () => undefined);
    let sentPrefix = false;
    const carrier = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        if (!sentPrefix && coalesce) {
          sentPrefix = true;
          raw.write(Buffer.concat([prefix, chunk]), cb);
        } else {
          raw.write(chunk, cb);
        }
      },
      final(cb) {
        raw.end();
        cb();
      },
    });
    raw.on('data', (d: Buffer) => carrier.push(d));
    raw.on('end', () => carrier.push(null));
    raw.on('close', () => carrier.destroy());
    raw.once('connect', () => {
      if (!coalesce) {
        sentPrefix = true;
        raw.write(prefix);
      }
      const socket = tls.connect({ socket: carrier, ca: pki.caPem, servername: 'localhost', ALPNProtocols: ['ntske/1'] });
      const chunks: Buffer[] = [];
      let error = '';
      socket.on('secureConnect', () => socket.write(REQUEST));
      socket.on('data', (d: Buffer) => chunks.push(d));
      socket.on('error', (e) => (error = e.message));
      socket.on('close', () => {
        const decoded = decodeKeMessage(new Uint8Array(Buffer.concat(chunks)));
        const records = decoded.ok ? decoded.records : [];
        resolve({ ok: records.some((r) => r.kind === 'newCookie'), records: records.length, error });
      });
    });
  });
}

test('behind a trusted balancer the per-client limit counts the PROXY header address, not the balancer', { timeout: 60_000 }, async (t) => {
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  t.after(() => pki.cleanup());
  const { server, port, until, totals } = await startProxied(pki);
  t.after(() => server.stop());

  // Client A: its first connection works (header and ClientHello in separate writes) …
  assert.ok((await keThrough(port, pki, proxyHeader('192.0.2.1'), false)).ok);
  // … its second is over its burst of 1, though it comes from the same balancer as every other.
  assert.equal((await keThrough(port, pki, proxyHeader('192.0.2.1'), true)).ok, false);
  await until((s) => (s.rejected['rate_limited'] ?? 0) === 1);
  // Client B through the same balancer: its own bucket. Header and ClientHello in one segment.
  const b = await keThrough(port, pki, proxyHeader('192.0.2.2'), true);
  assert.ok(b.ok, b.error);
  // LOCAL (a balancer health check) keeps the socket's own address: 127.0.0.1 gets its one connection.
  assert.ok((await keThrough(port, pki, proxyHeader('0.0.0.0', 0), true)).ok);
  await until((s) => s.success === 3 && (s.proxied['127.0.0.0/8'] ?? 0) === 4);
  assert.equal(totals.rejected['proxy_header'] ?? 0, 0);
});

test('a proxied port refuses what is not a valid header: plain TLS, a corrupt CRC, a stalled header (after ≥ 3 s)', { timeout: 60_000 }, async (t) => {
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  t.after(() => pki.cleanup());
  const { server, port, until } = await startProxied(pki, { clientRateLimit: { intervalS: 0, burst: 8, tableSize: 1024 } });
  t.after(() => server.stop());

  // A client that connects directly (no header): its ClientHello is not a header; never guessed.
  assert.equal((await keThrough(port, pki, new Uint8Array(0), false)).ok, false);
  const corrupt = proxyHeader('192.0.2.3');
  corrupt[17] = (corrupt[17] ?? 0) ^ 0x40;
  assert.equal((await keThrough(port, pki, corrupt, true)).ok, false);
  await until((s) => (s.rejected['proxy_header'] ?? 0) === 2);

  // Half a header, then silence: closed by the header deadline, not before 3 s (the spec's retransmit allowance).
  const started = Date.now();
  const closedAfterMs = await new Promise<number>((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port }, () => raw.write(proxyHeader('192.0.2.4').subarray(0, 10)));
    raw.on('error', () => undefined);
    raw.on('close', () => resolve(Date.now() - started));
  });
  assert.ok(closedAfterMs >= 2900, `closed after ${closedAfterMs} ms`);
  assert.ok(closedAfterMs < 15_000, `closed after ${closedAfterMs} ms`);
  await until((s) => (s.rejected['proxy_header'] ?? 0) === 3);
});

test('a peer outside proxy-trusted-sources is refused before it can send anything', { timeout: 30_000 }, async (t) => {
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  t.after(() => pki.cleanup());
  const { server, port, until, totals } = await startProxied(pki, { proxyTrustedSources: ['10.0.0.0/8', '2001:db8::/32'] });
  t.after(() => server.stop());
  assert.equal((await keThrough(port, pki, proxyHeader('192.0.2.9'), true)).ok, false);
  await until((s) => (s.rejected['untrusted_proxy'] ?? 0) === 1);
  assert.equal(totals.accepted, 0);
});
