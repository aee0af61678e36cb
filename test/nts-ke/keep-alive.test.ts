/**
 * NTS pools on the KE server (docs/pools.md): Keep Alive for authenticated front ends over real TLS on a
 * KE thread, within `longlived-connections`, with the idle timeout and maximum age; on a kept connection only
 * support and fixed key requests; the pool requests are counted by kind and outcome.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import * as tls from 'node:tls';
import { pino } from 'pino';
import { openCookie } from '../../src/core/nts/cookie.js';
import { NTSKE_ALPN } from '../../src/core/nts/ids.js';
import { decodeKeMessage, encodeKeMessage, scanKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';
import { createKeyset } from '../../src/core/nts/keyset.js';
import { buildCapabilityQuery, buildFixedKeyRequest } from '../../src/core/pool/front-end.js';
import { KeServer, type KeStats } from '../../src/nts-ke/server.js';
import { UpstreamPool } from '../../src/nts-pool/upstream.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';

const TOKEN = 'front-end-token';
const tokenBytes = new TextEncoder().encode(TOKEN);
const keyset = createKeyset(Math.floor(Date.now() / 1000), (b) => void randomFillSync(b), { staleKeyCount: 1 });

interface Harness {
  readonly server: KeServer;
  readonly port: number;
  readonly pool: Record<string, number>;
}

async function start(pki: TestPki, keepAlive: { longlivedConnections: number; idleTimeoutMs: number; maxAgeMs: number }): Promise<Harness> {
  const server = new KeServer({
    listen: [{ host: '127.0.0.1', port: 0 }],
    certificateChainPem: pki.certPem,
    privateKeyPem: pki.keyPem,
    keyExchangeTimeoutMs: 2000,
    concurrentConnections: 64,
    concurrentConnectionsPerSource: 64,
    maxRequestBytes: 4096,
    clientRateLimit: { intervalS: 0, burst: 8, tableSize: 1024 },
    policy: { aeadIds: [15, 17], poolAuthenticationTokens: [TOKEN] },
    keyset,
    logger: pino({ level: 'silent' }),
    statsIntervalMs: 25,
    threads: 2,
    keepAlive,
  });
  const pool: Record<string, number> = {};
  server.onStats((s: KeStats) => {
    for (const [k, n] of Object.entries(s.poolRequests)) pool[k] = (pool[k] ?? 0) + n;
  });
  const addresses = await server.start();
  return { server, port: addresses[0]?.port ?? 0, pool };
}

/** A TLS connection that sends requests one at a time and reads each answer up to End of Message. */
class Conn {
  readonly socket: tls.TLSSocket;
  #buffer = Buffer.alloc(0);
  #waiter: (() => void) | undefined;
  closed = false;
  constructor(port: number, ca: string) {
    this.socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, ALPNProtocols: [NTSKE_ALPN], minVersion: 'TLSv1.3' });
    this.socket.on('data', (c: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, c]);
      this.#waiter?.();
    });
    this.socket.on('error', () => undefined);
    this.socket.on('close', () => {
      this.closed = true;
      this.#waiter?.();
    });
  }
  async ready(): Promise<void> {
    if (!this.socket.pending && this.socket.encrypted) return;
    await new Promise<void>((resolve) => this.socket.once('secureConnect', () => resolve()));
  }
  /** Sends one request; resolves with the answer's records, or undefined when the server closed first. */
  async ask(bytes: Uint8Array, timeoutMs = 3000): Promise<readonly KeRecord[] | undefined> {
    await this.ready();
    this.socket.write(bytes);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const scan = scanKeMessage(this.#buffer);
      if (scan.status === 'complete') {
        const msg = this.#buffer.subarray(0, scan.length);
        this.#buffer = this.#buffer.subarray(scan.length);
        const decoded = decodeKeMessage(new Uint8Array(msg));
        assert.ok(decoded.ok);
        return decoded.records;
      }
      if (this.closed) return undefined;
      if (Date.now() > deadline) throw new Error('no answer');
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
  }
  async waitClosed(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }
}

const kinds = (rs: readonly KeRecord[] | undefined): string[] => (rs ?? []).map((r) => r.kind);
const keys = (len: number, seed: number): { c2s: Uint8Array; s2c: Uint8Array } => ({
  c2s: new Uint8Array(len).fill(seed),
  s2c: new Uint8Array(len).fill(seed + 1),
});

describe('KE server keep-alive for pool front ends', () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki();
  });
  after(() => pki.cleanup());

  test('a kept connection serves support and fixed key requests in turn; an ordinary request on it is Error 1', async () => {
    const h = await start(pki, { longlivedConnections: 4, idleTimeoutMs: 5000, maxAgeMs: 60_000 });
    try {
      const c = new Conn(h.port, pki.caPem);
      const caps = await c.ask(buildCapabilityQuery(tokenBytes, true));
      assert.deepEqual(kinds(caps), ['supportedAlgorithmList', 'supportedNextProtocolList', 'keepAlive', 'endOfMessage']);
      for (let i = 1; i <= 3; i++) {
        const k = keys(32, i);
        const answer = await c.ask(buildFixedKeyRequest(tokenBytes, k.c2s, k.s2c, 15, true));
        assert.equal(kinds(answer).filter((x) => x === 'newCookie').length, 8);
        assert.deepEqual(kinds(answer).slice(-2), ['keepAlive', 'endOfMessage']);
        const cookie = (answer ?? []).find((r) => r.kind === 'newCookie');
        assert.ok(cookie?.kind === 'newCookie');
        const opened = openCookie(keyset, cookie.cookie);
        assert.ok(opened.ok && opened.c2s.every((b) => b === i) && opened.s2c.every((b) => b === i + 1));
      }
      const ordinary = await c.ask(encodeKeMessage([{ kind: 'nextProtocol', critical: true, protocolIds: [0] }, { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] }, { kind: 'endOfMessage', critical: true }]));
      assert.deepEqual(ordinary?.flatMap((r) => (r.kind === 'error' ? [r.code] : [])), [1]);
      assert.ok(await c.waitClosed(2000), 'closed after the refusal');
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(h.pool['support/success'], 1);
      assert.equal(h.pool['fixed_key/success'], 3);
    } finally {
      await h.server.stop();
    }
  });

  test('a wrong token: Error 1, no Keep Alive, closed', async () => {
    const h = await start(pki, { longlivedConnections: 4, idleTimeoutMs: 5000, maxAgeMs: 60_000 });
    try {
      const c = new Conn(h.port, pki.caPem);
      const answer = await c.ask(buildCapabilityQuery(new TextEncoder().encode('front-end-tokeN'), true));
      assert.deepEqual(kinds(answer), ['error', 'endOfMessage']);
      assert.ok(await c.waitClosed(2000));
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(h.pool['support/bad_request'], 1);
    } finally {
      await h.server.stop();
    }
  });

  test('the long-lived cap holds over both KE threads; a slot comes back when its connection closes', async () => {
    const h = await start(pki, { longlivedConnections: 2, idleTimeoutMs: 5000, maxAgeMs: 60_000 });
    try {
      const conns = [0, 1, 2, 3].map(() => new Conn(h.port, pki.caPem));
      const granted: boolean[] = [];
      for (const c of conns) granted.push(kinds(await c.ask(buildCapabilityQuery(tokenBytes, true))).includes('keepAlive'));
      assert.deepEqual(granted, [true, true, false, false]);
      assert.ok(await conns[2]!.waitClosed(2000), 'not kept: closed after the answer');
      conns[0]!.socket.destroy();
      await conns[0]!.waitClosed(2000);
      await new Promise((r) => setTimeout(r, 100));
      const again = new Conn(h.port, pki.caPem);
      assert.ok(kinds(await again.ask(buildCapabilityQuery(tokenBytes, true))).includes('keepAlive'));
      for (const c of [...conns, again]) c.socket.destroy();
    } finally {
      await h.server.stop();
    }
  });

  test('idle timeout and maximum age close a kept connection', async () => {
    const idle = await start(pki, { longlivedConnections: 4, idleTimeoutMs: 300, maxAgeMs: 60_000 });
    try {
      const c = new Conn(idle.port, pki.caPem);
      assert.ok(kinds(await c.ask(buildCapabilityQuery(tokenBytes, true))).includes('keepAlive'));
      const t0 = Date.now();
      assert.ok(await c.waitClosed(3000), 'closed after the idle timeout');
      assert.ok(Date.now() - t0 >= 200);
    } finally {
      await idle.server.stop();
    }
    const aged = await start(pki, { longlivedConnections: 4, idleTimeoutMs: 5000, maxAgeMs: 700 });
    try {
      const c = new Conn(aged.port, pki.caPem);
      assert.ok(kinds(await c.ask(buildCapabilityQuery(tokenBytes, true))).includes('keepAlive'));
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(kinds(await c.ask(buildCapabilityQuery(tokenBytes, true))).includes('keepAlive'), 'still young');
      assert.ok(await c.waitClosed(3000), 'closed at its maximum age');
    } finally {
      await aged.server.stop();
    }
  });

  test('the front end\'s upstream pool reuses one kept connection for many exchanges', async () => {
    const h = await start(pki, { longlivedConnections: 4, idleTimeoutMs: 5000, maxAgeMs: 60_000 });
    const pool = new UpstreamPool({ host: '127.0.0.1', port: h.port, tlsName: 'localhost', caPem: pki.caPem, maxIdle: 2, idleMs: 2000 });
    try {
      for (let i = 0; i < 5; i++) {
        const k = keys(32, 10 + i);
        const r = await pool.exchange(buildFixedKeyRequest(tokenBytes, k.c2s, k.s2c, 15, true), 2500);
        assert.ok(r.ok, r.ok ? '' : r.detail);
        assert.equal(r.reused, i > 0);
      }
      assert.equal(pool.connectionsOpened, 1);
    } finally {
      pool.close();
      await h.server.stop();
    }
  });
});
