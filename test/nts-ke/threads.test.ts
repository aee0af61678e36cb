/**
 * Several KE threads per listener (SO_REUSEPORT, Node >= 22.12): connections spread over the threads,
 * every limit stays global (per-client bucket, per-source cap), certificate reloads and keyset snapshots
 * reach every thread, a dead thread is replaced and counted. On Node 20 (no TCP reusePort) the fallback
 * is tested instead: one thread and a warning.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { once } from 'node:events';
import * as net from 'node:net';
import { Writable } from 'node:stream';
import * as tls from 'node:tls';
import { pino } from 'pino';
import { openCookie } from '../../src/core/nts/cookie.js';
import { decodeKeMessage, encodeKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';
import { createKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { KeServer, type KeServerOptions, type KeStats } from '../../src/nts-ke/server.js';
import { reusePortWorks } from '../../src/runtime/reuse-port.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { addressBytes, loadNativeUdp } from '../../src/runtime/addon.js';

const native = loadNativeUdp();
const reusePort = await reusePortWorks('tcp');
/** Node 20's way to several KE threads: SO_REUSEPORT sockets from the native addon (as nts-ke/service.ts passes). */
const nativeListener =
  native.ok && !reusePort
    ? (host: string, port: number, ipv6Only: boolean): number => {
        const a = addressBytes(host);
        return a === undefined ? -22 : native.addon.openTcpListener(a.family, a.bytes, port, ipv6Only ? 1 : 0, 511);
      }
    : undefined;

const REQUEST = encodeKeMessage([
  { kind: 'nextProtocol', critical: true, protocolIds: [0] },
  { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
  { kind: 'endOfMessage', critical: true },
] satisfies KeRecord[]);

function newKeyset(): Keyset {
  return createKeyset(Math.floor(Date.now() / 1000), (b) => {
    randomFillSync(b);
  }, { staleKeyCount: 2 });
}

interface Started {
  readonly server: KeServer;
  readonly port: number;
  readonly stats: KeStats[];
  readonly logs: string[];
}

/** Starts a 3-thread KE server; `useNative` hands it the addon's SO_REUSEPORT sockets where Node 20 needs them. */
async function start(pki: TestPki, keyset: Keyset, overrides: Partial<KeServerOptions> = {}, useNative = true): Promise<Started> {
  const logs: string[] = [];
  const server = new KeServer({
    listen: [{ host: '127.0.0.1', port: 0 }],
    certificateChainPem: pki.certPem,
    privateKeyPem: pki.keyPem,
    keyExchangeTimeoutMs: 3000,
    concurrentConnections: 256,
    concurrentConnectionsPerSource: 256,
    maxRequestBytes: 1024,
    clientRateLimit: { intervalS: 0, burst: 8, tableSize: 1024 },
    policy: { aeadIds: [15] },
    keyset,
    logger: pino({ level: 'warn' }, new Writable({ write: (c: Buffer, _e, cb) => (logs.push(c.toString()), cb()) })),
    statsIntervalMs: 25,
    threads: 3,
    threadNiceness: 0,
    ...(useNative && nativeListener !== undefined ? { openReusePortListener: nativeListener } : {}),
    ...overrides,
  });
  const stats: KeStats[] = [];
  server.onStats((s) => stats.push(s));
  const [first] = await server.start();
  assert.ok(first !== undefined);
  return { server, port: first.port, stats, logs };
}

interface Reply {
  readonly cookies: Uint8Array[];
  readonly serial: string | undefined;
  readonly failed: boolean;
}

function ke(port: number, ca: string, localAddress = '127.0.0.1'): Promise<Reply> {
  return new Promise((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port, localAddress });
    raw.on('error', () => undefined);
    const socket = tls.connect({ socket: raw, host: '127.0.0.1', ca, ALPNProtocols: ['ntske/1'] });
    const chunks: Buffer[] = [];
    let serial: string | undefined;
    let failed = false;
    socket.on('secureConnect', () => {
      serial = socket.getPeerCertificate().serialNumber;
      socket.write(REQUEST);
    });
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => {
      failed = true;
    });
    socket.on('close', () => {
      const decoded = decodeKeMessage(new Uint8Array(Buffer.concat(chunks)));
      const cookies = decoded.ok ? decoded.records.flatMap((r) => (r.kind === 'newCookie' ? [r.cookie] : [])) : [];
      resolve({ cookies, serial, failed: failed || cookies.length === 0 });
    });
  });
}

function sum(stats: readonly KeStats[], pick: (s: KeStats) => number): number {
  return stats.reduce((n, s) => n + pick(s), 0);
}

async function until(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('KE threads without SO_REUSEPORT listeners (Node 20 without the native addon): one thread and a warning', { skip: reusePort ? `Node ${process.versions.node} has reusePort; the multi-thread suite runs instead` : false }, () => {
  test('threads = 3 runs one KE thread, warns once, and serves', async () => {
    const pki = makeTestPki(['127.0.0.1']);
    const s = await start(pki, newKeyset(), {}, false);
    try {
      assert.equal(s.server.threadCount, 1);
      assert.equal(s.logs.length, 1);
      assert.match(s.logs[0] ?? '', /NTS-KE threads > 1 need SO_REUSEPORT listeners/);
      assert.equal((await ke(s.port, pki.caPem)).failed, false);
    } finally {
      await s.server.stop();
      pki.cleanup();
    }
  });
});

describe(`several KE threads per listener (SO_REUSEPORT${reusePort ? '' : ' sockets from the native addon'})`, {
  skip: reusePort || nativeListener !== undefined ? false : `Node ${process.versions.node} has no TCP reusePort (needs >= 22.12) and the native addon is missing; the fallback is tested instead`,
}, () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki(['127.0.0.1']);
  });
  after(() => pki.cleanup());

  test('connections spread over the threads; a keyset snapshot and a certificate reload reach every thread', async () => {
    const keyset = newKeyset();
    const s = await start(pki, keyset);
    try {
      assert.equal(s.server.threadCount, 3);
      const first = await Promise.all(Array.from({ length: 30 }, () => ke(s.port, pki.caPem)));
      assert.ok(first.every((r) => !r.failed));
      await until('stats of 30 sessions', () => sum(s.stats, (x) => x.sessions.success) === 30);
      const threads = new Set(s.stats.filter((x) => x.sessions.success > 0).map((x) => x.thread));
      assert.ok(threads.size >= 2, `sessions on threads ${[...threads].join(', ')}`);
      const next = newKeyset();
      s.server.updateKeyset(next);
      const leaf = pki.issueLeaf(['127.0.0.1']);
      await s.server.reloadCertificate(leaf.certPem, leaf.keyPem);
      const second = await Promise.all(Array.from({ length: 30 }, () => ke(s.port, pki.caPem)));
      const serials = new Set(second.map((r) => r.serial));
      assert.equal(serials.size, 1, 'every thread presents the new leaf');
      assert.notEqual([...serials][0], first[0]?.serial);
      for (const r of second) {
        const cookie = r.cookies[0];
        assert.ok(cookie !== undefined && openCookie(next, cookie).ok, 'every thread seals under the new keyset');
      }
      assert.deepEqual(s.logs, []);
    } finally {
      await s.server.stop();
    }
  });

  test('limits stay global: a per-client bucket and a per-source cap are not multiplied by the threads', async () => {
    const s = await start(pki, newKeyset(), {
      clientRateLimit: { intervalS: 3600, burst: 3, tableSize: 1024 },
      concurrentConnectionsPerSource: 2,
    });
    try {
      const replies: Reply[] = [];
      for (let i = 0; i < 9; i++) replies.push(await ke(s.port, pki.caPem, '127.0.0.5')); // one at a time: the per-source cap is 2
      assert.equal(replies.filter((r) => !r.failed).length, 3, 'burst 3 over three threads');
      await until('9 decisions', () => sum(s.stats, (x) => x.accepted + x.rejected.rate_limited) === 9);
      assert.equal(sum(s.stats, (x) => x.rejected.rate_limited), 6);
      // The bucket off (a write into the shared table, as SIGHUP does), then idle connections from one
      // address: two held in total, whatever thread each lands on.
      s.server.updateRateLimit({ intervalS: 0, burst: 3, tableSize: 1024 });
      const held: net.Socket[] = [];
      for (let i = 0; i < 8; i++) {
        const c = net.connect({ host: '127.0.0.1', port: s.port, localAddress: '127.0.0.6' });
        c.on('error', () => undefined);
        held.push(c);
        await once(c, 'connect');
      }
      await until('8 admissions decided', () => sum(s.stats, (x) => x.rejected.source_limit) + sum(s.stats, (x) => x.accepted) === 3 + 8);
      assert.equal(sum(s.stats, (x) => x.rejected.source_limit), 6);
      assert.equal(s.server.openConnections, 2);
      for (const c of held) c.destroy();
      await until('slots released', () => s.server.openConnections === 0);
    } finally {
      await s.server.stop();
    }
  });

  test('a KE thread that dies is replaced and counted; the connection count is rebuilt from the survivors', async () => {
    const s = await start(pki, newKeyset());
    let restarts = 0;
    s.server.onThreadRestart(() => restarts++);
    try {
      const held: { socket: net.Socket; closed: boolean }[] = [];
      // 24 connections over 3 threads: the chance that none lands on thread 1 is (2/3)^24 < 1e-4.
      for (let i = 0; i < 24; i++) {
        const socket = net.connect({ host: '127.0.0.1', port: s.port, localAddress: `127.0.0.${20 + i}` });
        const entry = { socket, closed: false };
        socket.on('error', () => undefined);
        socket.on('close', () => {
          entry.closed = true;
        });
        held.push(entry);
        await once(socket, 'connect');
      }
      await until('24 open', () => s.server.openConnections === 24);
      await s.server.crashThreadForTest(1);
      assert.equal(restarts, 1);
      await until('the dead thread\'s connections closed', () => held.some((h) => h.closed));
      const survivors = held.filter((h) => !h.closed).length;
      await until(`the count rebuilt to ${survivors}`, () => s.server.openConnections === survivors);
      const replies = await Promise.all(Array.from({ length: 15 }, () => ke(s.port, pki.caPem)));
      assert.ok(replies.every((r) => !r.failed), 'all three threads serve again');
      for (const h of held) h.socket.destroy();
      await until('all released', () => s.server.openConnections === 0);
    } finally {
      await s.server.stop();
    }
  });
});
