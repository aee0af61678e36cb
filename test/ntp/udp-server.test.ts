/**
 * The UDP server with the pool behind it, over real loopback sockets, inline (threads = 0) and with one
 * worker thread (threads = 1).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { pino } from 'pino';
import { WallClock } from '../../src/runtime/clock.js';
import { openCookie } from '../../src/core/nts/cookie.js';
import { Outcome, OUTCOME_COUNT } from '../../src/core/responder.js';
import { openKeysetStore, type KeysetStore } from '../../src/keys/store.js';
import { probeReusePort, startUdpServer, type ReplyTarget, type UdpServer } from '../../src/ntp/udp-server.js';
import { createPool, type Pool, type PoolOptions } from '../../src/ntp/batch-pool.js';
import {
  TEST_SERVER_FIELDS,
  checkNtsReply,
  newSession,
  ntsRequest,
  openTestClient,
  plainRequest,
  waitFor,
  type TestUdpClient,
} from './nts-test-client.js';

interface Rig {
  readonly store: KeysetStore;
  readonly pool: Pool<ReplyTarget>;
  readonly server: UdpServer;
  readonly client: TestUdpClient;
  readonly port: number;
  readonly durations: number[];
  close(): Promise<void>;
}

async function startRig(threads: number, poolOverrides: Partial<PoolOptions> = {}): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-udp-'));
  const store = await openKeysetStore({
    path: join(dir, 'ntsd.keys'),
    rotationIntervalS: 86400,
    staleKeyCount: 7,
    logger: pino({ level: 'silent' }),
  });
  const clock = new WallClock();
  const pool = createPool<ReplyTarget>({
    threads,
    batchSize: 32,
    flushIntervalUs: 200,
    queueLimit: 1024,
    keysetBytes: store.bytes,
    serverFields: TEST_SERVER_FIELDS,
    requireNts: false,
    acceptNtpVersions: [3, 4],
    clock,
    ...poolOverrides,
  });
  const durations: number[] = [];
  const server = await startUdpServer({
    listen: [{ host: '127.0.0.1', port: 0, family: 'IPv4' }],
    pool,
    clock,
    onReplySent: (d) => durations.push(d),
  });
  const client = await openTestClient();
  const port = server.addresses[0]?.port ?? 0;
  return {
    store,
    pool,
    server,
    client,
    port,
    durations,
    async close() {
      await client.close();
      await server.close();
      await pool.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Packets the pool has finished with: counted outcomes plus refusals and respond() errors. */
function accounted(pool: Pool<ReplyTarget>): number {
  const s = pool.stats();
  return s.outcomes.reduce((a, b) => a + b, 0) + s.queueRejected + s.respondErrors + s.lost;
}

for (const threads of [0, 1]) {
  describe(`UDP server, threads = ${threads}`, () => {
    let rig: Rig;
    before(async () => {
      rig = await startRig(threads);
    });
    after(async () => {
      await rig.close();
    });

    test('RFC 5905: a plain NTPv4 request gets a mode-4 reply of the same length with our server fields', async () => {
      const req = plainRequest();
      const reply = await rig.client.exchange(req, rig.port);
      assert.equal(reply.length, 48);
      assert.equal((reply[0] ?? 0) & 7, 4, 'mode 4');
      assert.equal(((reply[0] ?? 0) >> 3) & 7, 4, 'version echoed');
      assert.equal(reply[1], TEST_SERVER_FIELDS.stratum);
      assert.deepEqual(reply.subarray(24, 32), req.subarray(40, 48), 'origin = client transmit');
      // Receive and transmit are close to now (µs clock, same process).
      const recv = ((reply[32] ?? 0) * 2 ** 24 + ((reply[33] ?? 0) << 16) + ((reply[34] ?? 0) << 8) + (reply[35] ?? 0)) >>> 0;
      const nowNtp = Math.floor(Date.now() / 1000) + 2_208_988_800;
      assert.ok(Math.abs(recv - (nowNtp >>> 0)) <= 2, 'receive timestamp is current');
      assert.ok(rig.durations.length > 0 && (rig.durations[0] ?? -1) >= 0 && (rig.durations[0] ?? 1) < 1, 'duration observed');
    });

    test('RFC 8915 §5.7: an NTS request with placeholders gets an authentic reply with 1 + placeholders fresh cookies', async () => {
      const session = newSession(rig.store.keyset);
      const req = ntsRequest(session, 3);
      const reply = await rig.client.exchange(req.packet, rig.port);
      const checked = checkNtsReply(reply, req, session);
      assert.equal(checked.kind, 'time');
      if (checked.kind !== 'time') return;
      assert.equal(checked.cookies.length, 4);
      for (const c of checked.cookies) {
        const opened = openCookie(rig.store.keyset, c);
        assert.ok(opened.ok, 'a returned cookie opens under the server keyset');
        assert.deepEqual(opened.c2s, session.c2s);
        assert.deepEqual(opened.s2c, session.s2c);
      }
      assert.equal(reply.length, req.packet.length, 'same size as the request (§8.4)');
    });

    test('RFC 8915 §5.7: a cookie that does not decrypt gets an NTSN NAK echoing only the UID', async () => {
      const session = newSession(rig.store.keyset);
      const broken = session.cookie.slice();
      broken[broken.length - 1] = (broken[broken.length - 1] ?? 0) ^ 0x01;
      const req = ntsRequest({ ...session, cookie: broken });
      const before = rig.pool.stats().outcomes[Outcome.nakCookieDecryptFailed] ?? 0;
      const reply = await rig.client.exchange(req.packet, rig.port);
      assert.equal(checkNtsReply(reply, req, session).kind, 'nak');
      assert.equal(rig.pool.stats().outcomes[Outcome.nakCookieDecryptFailed], before + 1);
    });

    test('datagrams of any size (0 … 65507 octets) and garbage: reply ≤ request or a counted drop; server alive', async () => {
      const sizes = [0, 1, 47, 48, 49, 1000, 65507];
      const packets: Uint8Array[] = sizes.map((n) => {
        const p = new Uint8Array(n);
        if (n >= 1) p[0] = 0x23; // looks like NTPv4 mode 3, so the longer ones reach the EF parser
        return p;
      });
      for (let i = 0; i < 40; i++) {
        const p = randomFillSync(new Uint8Array(1 + Math.floor(Math.random() * 600)));
        if (i % 2 === 0) p[0] = 0x23;
        packets.push(p);
      }
      const start = accounted(rig.pool);
      const repliesBefore = rig.client.replies.length;
      for (const p of packets) await rig.client.send(p, rig.port);
      await waitFor(() => accounted(rig.pool) - start === packets.length, 5000, 'every datagram accounted for');
      // Give replies in flight a moment to land, then compare sizes: a reply is never longer than any request we sent.
      await new Promise((r) => setTimeout(r, 50));
      const maxRequest = Math.max(...packets.map((p) => p.length));
      for (const r of rig.client.replies.slice(repliesBefore)) assert.ok(r.length <= maxRequest);
      // 48 octets of 0x23 then zeros is a valid plain request: at least that one was answered.
      assert.ok(rig.client.replies.length > repliesBefore);
      const reply = await rig.client.exchange(plainRequest(), rig.port);
      assert.equal(reply.length, 48, 'still answering');
      assert.equal(rig.server.stats().socketErrors, 0);
    });
  });
}

describe('UDP server drops and worker recovery', () => {
  for (const threads of [0, 1]) {
    test(`threads = ${threads}: beyond queueLimit packets are dropped and counted as queue_full`, async () => {
      const rig = await startRig(threads, { queueLimit: 2, batchSize: 64 });
      try {
        const burst = 200;
        const req = plainRequest();
        await Promise.all(Array.from({ length: burst }, () => rig.client.send(req, rig.port)));
        await waitFor(() => accounted(rig.pool) >= rig.server.stats().received && rig.server.stats().received > 0, 3000, 'burst accounted');
        await new Promise((r) => setTimeout(r, 100));
        const s = rig.pool.stats();
        assert.ok(s.queueRejected > 0, `expected queue_full drops, got ${JSON.stringify(s)}`);
        assert.equal(s.queueDepth, 0);
        assert.equal(s.outcomes[Outcome.ntpTime] ?? 0, s.replied);
        const reply = await rig.client.exchange(plainRequest(), rig.port);
        assert.equal(reply.length, 48, 'still answering after the burst');
      } finally {
        await rig.close();
      }
    });
  }

  test('threads = 1: a terminated worker is replaced and counted; its packets are answered or counted lost', async () => {
    const rig = await startRig(1);
    try {
      assert.equal((await rig.client.exchange(plainRequest(), rig.port)).length, 48);
      // Put a batch in the worker's hands and kill it at once.
      const target: ReplyTarget = { socket: rig.client.socket, address: '127.0.0.1', port: rig.client.socket.address().port };
      const now = { seconds: 0, fraction: 0 };
      const before = rig.pool.stats();
      for (let i = 0; i < 32; i++) rig.pool.submit(plainRequest(), now, target);
      assert.ok(await rig.pool.terminateWorker(0));
      await waitFor(() => rig.pool.stats().workersAlive === 1, 3000, 'replacement worker');
      const s = rig.pool.stats();
      assert.equal(s.workerRestarts, 1);
      assert.equal(s.replied - before.replied + s.lost, 32, 'each packet was either answered or counted lost');
      assert.equal(s.queueDepth, 0);
      assert.equal((await rig.client.exchange(plainRequest(), rig.port)).length, 48, 'the new worker answers');
    } finally {
      await rig.close();
    }
  });
});

test('IPv4 and IPv6 listeners side by side, each with its own policy (require-nts on the v6 one)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-udp6-'));
  const store = await openKeysetStore({ path: join(dir, 'k'), rotationIntervalS: 86400, staleKeyCount: 7, logger: pino({ level: 'silent' }) });
  const clock = new WallClock();
  const pool = createPool<ReplyTarget>({
    threads: 0,
    batchSize: 32,
    flushIntervalUs: 200,
    queueLimit: 64,
    keysetBytes: store.bytes,
    serverFields: TEST_SERVER_FIELDS,
    policies: [
      { requireNts: false, acceptNtpVersions: [3, 4] },
      { requireNts: true, acceptNtpVersions: [4] },
    ],
    clock,
  });
  const server = await startUdpServer({
    listen: [
      { host: '127.0.0.1', port: 0, family: 'IPv4', policy: 0 },
      { host: '::1', port: 0, family: 'IPv6', policy: 1 },
    ],
    pool,
    clock,
  });
  const v6 = createSocket('udp6');
  try {
    assert.equal(server.addresses.length, 2);
    assert.equal(server.addresses[1]?.family, 'IPv6');
    const v6Port = server.addresses[1]?.port ?? 0;
    await new Promise<void>((resolve) => v6.bind(0, '::1', () => resolve()));
    const got = new Promise<Buffer>((resolve) => v6.once('message', (m: Buffer) => resolve(m)));
    // Plain NTP is dropped on the v6 listener (require-nts) …
    v6.send(plainRequest(), v6Port, '::1');
    await waitFor(() => (pool.stats().outcomes[Outcome.dropRequireNts] ?? 0) === 1, 2000, 'require_nts drop');
    // … while NTS is answered there, from the same socket to our v6 address and port.
    const session = newSession(store.keyset);
    const req = ntsRequest(session, 1);
    v6.send(req.packet, v6Port, '::1');
    const reply = new Uint8Array(await got);
    assert.equal(checkNtsReply(reply, req, session).kind, 'time');
  } finally {
    await new Promise<void>((resolve) => v6.close(() => resolve()));
    await server.close();
    await pool.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('probeReusePort matches the runtime (Node ≥ 22.12 has dgram reusePort)', async () => {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  const expected = process.platform === 'linux' && (major > 22 || (major === 22 && minor >= 12));
  assert.equal(await probeReusePort(), expected);
});

test('outcome tally has one counter per responder outcome', () => {
  assert.equal(OUTCOME_COUNT, Object.keys(Outcome).length);
});
