/**
 * NTP threads (src/ntp/threads.ts) over real loopback sockets, with each socket backend that runs here.
 *
 * - native (the addon, when build/ntsd_udp.node is built): two threads share each port through
 *   SO_REUSEPORT on every Node version, with kernel receive timestamps;
 * - dgram: the same suite, with two threads where Node has reusePort (≥ 22.12) and one where it does not
 *   (Node 20, where a second thread cannot join the port and start-up fails cleanly; the service then runs
 *   one thread: test/ntp/service.test.ts).
 * The first test pins the reusePort feature test to the Node version, so a wrong probe fails here.
 * `NTSD_REQUIRE_NATIVE=1` (set by .ci/run) turns a missing addon into a failure instead of a skip.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { WallClock } from '../../src/runtime/clock.js';
import { openCookie } from '../../src/core/nts/cookie.js';
import { createKeyset, encodeKeyset, rotateKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { Outcome, type ServerFields } from '../../src/core/responder.js';
import { NtsdError, NtsdErrorCode } from '../../src/errors.js';
import { startNtpThreads, type NtpThreadEvent, type NtpThreads, type NtpThreadsOptions } from '../../src/ntp/threads.js';
import { loadNativeUdp } from '../../src/runtime/addon.js';
import type { ThreadBackend } from '../../src/ntp/messages.js';
import { reusePortWorks } from '../../src/runtime/reuse-port.js';
import { keyAgeBucket } from '../../src/ntp/counters.js';
import { freeUdpPort } from '../helpers/ports.js';
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

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
/** dgram reusePort arrived in Node 22.12 (Linux: SO_REUSEPORT). */
const runtimeHasReusePort = process.platform === 'linux' && (major > 22 || (major === 22 && minor >= 12));
const reusePort = await reusePortWorks('udp');
const native = loadNativeUdp();

const fill = (b: Uint8Array): void => {
  randomFillSync(b);
};

/** Bucket bounds for the duration test (seconds); counts come back with a +Inf bucket. */
const BUCKETS_S = [0.0001, 0.001, 0.01, 0.1] as const;

function receiverOptions(keyset: Keyset, overrides: Partial<NtpThreadsOptions> = {}): NtpThreadsOptions {
  return {
    threads: 2,
    listen: [{ host: '127.0.0.1', port: 0, family: 'IPv4' }],
    keysetBytes: encodeKeyset(keyset),
    serverFields: TEST_SERVER_FIELDS,
    policies: [{ requireNts: false, acceptNtpVersions: [3, 4] }],
    clock: new WallClock(),
    reportIntervalMs: 50,
    durationBucketsS: BUCKETS_S,
    ...overrides,
  };
}

/** Binds a plain socket (no reusePort) to `port`; resolves with it, or rejects when the port is taken. */
function bindPlain(port: number): Promise<Socket> {
  const s = createSocket('udp4');
  return new Promise((resolve, reject) => {
    s.once('error', (e) => {
      s.close();
      reject(e);
    });
    s.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve(s));
  });
}

function closeSocket(s: Socket): Promise<void> {
  return new Promise((resolve) => s.close(() => resolve()));
}

/** The NTP timestamp at `offset` of a packet, in seconds since 1900 (era 0). */
function ntpSeconds(packet: Uint8Array, offset: number): number {
  const v = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  return v.getUint32(offset) + v.getUint32(offset + 4) / 2 ** 32;
}

/** The NTP receive timestamp's seconds (reply octets 32..35). */
function receiveSeconds(reply: Uint8Array): number {
  return ((reply[32] ?? 0) * 2 ** 24 + ((reply[33] ?? 0) << 16) + ((reply[34] ?? 0) << 8) + (reply[35] ?? 0)) >>> 0;
}

test('the reusePort feature test matches the runtime (so the branch below is the one this Node needs)', () => {
  assert.equal(reusePort, runtimeHasReusePort, `Node ${process.versions.node}: reusePortWorks('udp') = ${reusePort}`);
});

test('the native addon loads where CI built it', (t) => {
  if (process.env['NTSD_REQUIRE_NATIVE'] === '1') assert.ok(native.ok, native.ok ? '' : native.reason);
  else if (!native.ok) t.skip(`native addon unavailable: ${native.reason}`);
  else assert.ok(native.ok);
});

/** Threads a backend can run here: dgram needs reusePort for a second thread on one port. */
function threadCountOf(backend: ThreadBackend): number {
  return backend === 'native' || reusePort ? 2 : 1;
}

/** Cookie-decode, policy, broadcast, garbage and replacement checks for one socket backend. */
function threadSuite(backend: ThreadBackend): void {
  const threads = threadCountOf(backend);
  describe(`${threads} NTP thread(s) on the ${backend} backend`, () => {
    const CLIENTS = 16;
    let keyset: Keyset;
    let receivers: NtpThreads;
    let clients: TestUdpClient[];
    let port: number;
    let strictPort: number;
    const events: NtpThreadEvent[] = [];

    before(async () => {
      keyset = createKeyset(Date.now() / 1000, fill, { staleKeyCount: 7 });
      receivers = await startNtpThreads(
        receiverOptions(keyset, {
          backend,
          threads,
          // Listener 1 requires NTS: checks that each listener's policy reaches the threads.
          listen: [
            { host: '127.0.0.1', port: 0, family: 'IPv4', policy: 0 },
            { host: '127.0.0.1', port: 0, family: 'IPv4', policy: 1 },
          ],
          policies: [
            { requireNts: false, acceptNtpVersions: [3, 4] },
            { requireNts: true, acceptNtpVersions: [4] },
          ],
          onEvent: (e) => events.push(e),
        }),
      );
      port = receivers.addresses[0]?.port ?? 0;
      strictPort = receivers.addresses[1]?.port ?? 0;
      // Distinct source ports: the kernel's flow hash spreads them over the threads' sockets.
      clients = await Promise.all(Array.from({ length: CLIENTS }, () => openTestClient()));
    });
    after(async () => {
      await Promise.all(clients.map((c) => c.close()));
      await receivers.close();
    });

    test('every thread is bound: one address per listen entry, shared by the threads', () => {
      assert.equal(receivers.addresses.length, 2);
      assert.ok(port > 0 && strictPort > 0 && port !== strictPort);
      const s = receivers.stats();
      assert.equal(s.threads, threads);
      assert.equal(s.threadsAlive, threads);
    });

    test('plain and NTS requests from 16 client sockets are answered by every thread, with correct tallies', async () => {
      const before = receivers.stats();
      for (const client of clients) {
        const req = plainRequest();
        const reply = await client.exchange(req, port);
        assert.equal(reply.length, 48);
        assert.equal((reply[0] ?? 0) & 7, 4, 'mode 4 (RFC 5905 §7.3)');
        assert.equal(reply[1], TEST_SERVER_FIELDS.stratum);
        assert.deepEqual(reply.subarray(24, 32), req.subarray(40, 48), 'origin = client transmit');
        const nowNtp = (Math.floor(Date.now() / 1000) + 2_208_988_800) >>> 0;
        assert.ok(Math.abs(receiveSeconds(reply) - nowNtp) <= 2, 'receive timestamp taken from the shared clock');

        const session = newSession(keyset);
        const nts = ntsRequest(session, 2);
        const checked = checkNtsReply(await client.exchange(nts.packet, port), nts, session);
        assert.equal(checked.kind, 'time', 'RFC 8915 §5.7 authentic reply');
        if (checked.kind !== 'time') return;
        assert.equal(checked.cookies.length, 3, '1 + placeholders fresh cookies');
        for (const c of checked.cookies) assert.ok(openCookie(keyset, c).ok, 'the threads seal under the current key');
      }
      const n = CLIENTS * 2;
      await waitFor(() => receivers.stats().sent - before.sent === n, 3000, 'reports of every reply');
      const s = receivers.stats();
      assert.equal(s.received - before.received, n);
      assert.equal((s.outcomes[Outcome.ntpTime] ?? 0) - (before.outcomes[Outcome.ntpTime] ?? 0), CLIENTS);
      assert.equal((s.outcomes[Outcome.ntsTime] ?? 0) - (before.outcomes[Outcome.ntsTime] ?? 0), CLIENTS);
      assert.equal(s.cookiesIssued - before.cookiesIssued, CLIENTS * 3);
      const current = keyAgeBucket(0);
      assert.equal((s.keyAges[current] ?? 0) - (before.keyAges[current] ?? 0), CLIENTS, 'cookie decodes with the current key');
      assert.equal(s.respondErrors, 0);
      assert.equal(s.sendErrors, 0);
      // 16 flows over 2 sockets all landing on one has probability 2^-15.
      const busy = s.receivedPerThread.filter((v) => v > 0).length;
      assert.equal(busy, threads, `every thread received packets: ${JSON.stringify(s.receivedPerThread)}`);
      // Receive-to-send durations are measured per reply in the threads.
      assert.equal(s.durationCounts.length, BUCKETS_S.length + 1);
      assert.equal(s.durationCounts.reduce((a, b) => a + b, 0), s.sent);
      assert.ok(s.durationSumS >= 0 && s.durationSumS < s.sent, `duration sum ${s.durationSumS}`);
    });

    test("each listener's policy reaches the threads: plain NTP is dropped where NTS is required", async () => {
      const before = receivers.stats().outcomes[Outcome.dropRequireNts] ?? 0;
      for (const client of clients) await client.send(plainRequest(), strictPort);
      await waitFor(() => (receivers.stats().outcomes[Outcome.dropRequireNts] ?? 0) - before === CLIENTS, 3000, 'require_nts drops');
      const client = clients[0];
      assert.ok(client !== undefined);
      const session = newSession(keyset);
      const req = ntsRequest(session, 0);
      assert.equal(checkNtsReply(await client.exchange(req.packet, strictPort), req, session).kind, 'time');
    });

    test('a keyset broadcast reaches every thread: a cookie under the new key NAKs before it and opens after it', async () => {
      // Two rotations: the new current key is one the running keyset has never seen (not even as `next`).
      const oldCurrent = keyset;
      const oldSessions = clients.map(() => newSession(oldCurrent));
      const rotated = rotateKeyset(rotateKeyset(keyset, Date.now() / 1000, fill), Date.now() / 1000, fill);
      const sessions = clients.map(() => newSession(rotated));
      for (const [i, client] of clients.entries()) {
        const session = sessions[i];
        assert.ok(session !== undefined);
        const req = ntsRequest(session, 0);
        assert.equal(checkNtsReply(await client.exchange(req.packet, port), req, session).kind, 'nak', 'unknown key before the broadcast (RFC 8915 §5.7)');
      }
      receivers.setKeyset(encodeKeyset(rotated));
      keyset = rotated;
      for (const [i, client] of clients.entries()) {
        const session = sessions[i];
        const old = oldSessions[i];
        assert.ok(session !== undefined && old !== undefined);
        // The message reaches each thread within its next loop turn; poll rather than sleep.
        const deadline = Date.now() + 3000;
        for (;;) {
          const req = ntsRequest(session, 1);
          const checked = checkNtsReply(await client.exchange(req.packet, port), req, session);
          if (checked.kind === 'time') {
            for (const c of checked.cookies) assert.ok(openCookie(rotated, c).ok, 'fresh cookies use the new current key');
            break;
          }
          assert.ok(Date.now() < deadline, `client ${i}: still NAKed 3 s after the broadcast`);
          await new Promise((r) => setTimeout(r, 10));
        }
        // The key that was current is now stale generation 2 and still accepted (RFC 8915 §6).
        const req = ntsRequest(old, 0);
        assert.equal(checkNtsReply(await client.exchange(req.packet, port), req, old).kind, 'time');
      }
      const stale2 = keyAgeBucket(2);
      await waitFor(() => (receivers.stats().keyAges[stale2] ?? 0) >= CLIENTS, 3000, 'stale-key decodes tallied');
      assert.equal(receivers.stats().threadsAlive, threads);
    });

    test('a server-fields broadcast reaches every thread', async () => {
      const fields: ServerFields = { ...TEST_SERVER_FIELDS, stratum: 7 };
      receivers.setServerFields(fields);
      for (const client of clients) {
        const deadline = Date.now() + 3000;
        for (;;) {
          const reply = await client.exchange(plainRequest(), port);
          if (reply[1] === 7) break;
          assert.ok(Date.now() < deadline, 'stratum 7 not seen within 3 s');
          await new Promise((r) => setTimeout(r, 10));
        }
      }
    });

    if (backend === 'native') {
      test('native: every datagram carries its kernel receive timestamp, and T2 ≤ T3 within the send window', async () => {
        const client = clients[0];
        assert.ok(client !== undefined);
        const before = receivers.stats();
        const session = newSession(keyset);
        for (let i = 0; i < 20; i++) {
          const sentAtS = Date.now() / 1000;
          const req = ntsRequest(session, 0);
          const reply: Uint8Array = await client.exchange(req.packet, port);
          assert.equal(checkNtsReply(reply, req, session).kind, 'time');
          const t2 = ntpSeconds(reply, 32);
          const t3 = ntpSeconds(reply, 40);
          assert.ok(t3 >= t2, `T3 ${t3} before T2 ${t2}`);
          assert.ok(t3 - t2 < 0.05, `residence ${(t3 - t2) * 1e6} µs`);
          // Date.now() has millisecond steps; the kernel stamp lies between send and now.
          assert.ok(t2 - (sentAtS + 2_208_988_800) > -0.002 && t2 - (Date.now() / 1000 + 2_208_988_800) < 0.002, 'T2 within the exchange');
        }
        await waitFor(() => receivers.stats().sent - before.sent >= 20, 3000, 'reports');
        const s = receivers.stats();
        assert.equal(s.unstamped, 0, 'no datagram lacked a kernel stamp');
        assert.ok(s.transmitStamps - before.transmitStamps >= 20, 'transmit stamps counted');
        const meanCompensationS = (s.transmitCompensationSumS - before.transmitCompensationSumS) / (s.transmitStamps - before.transmitStamps);
        assert.ok(meanCompensationS >= 0 && meanCompensationS <= 0.002, `mean compensation ${meanCompensationS} s`);
      });

      test('native: oversized datagrams (4097 and 65507 octets) are dropped and counted as truncated; empty ones get no reply', async () => {
        const client = clients[1];
        assert.ok(client !== undefined);
        const before = receivers.stats();
        const big = new Uint8Array(65507);
        big.set(plainRequest());
        const justOver = new Uint8Array(4097);
        justOver.set(plainRequest());
        await client.send(big, port);
        await client.send(justOver, port);
        await client.send(new Uint8Array(0), port);
        // A 4096-octet datagram fits a slot: answered (plain NTP with 4048 octets of junk is dropped as malformed or answered, never longer).
        const fits = new Uint8Array(4096);
        fits.set(plainRequest());
        await client.send(fits, port);
        const repliesBefore = client.replies.length;
        const reply = await client.exchange(plainRequest(), port);
        assert.equal(reply.length, 48, 'still answering');
        await waitFor(() => receivers.stats().truncated - before.truncated === 2, 3000, 'two truncated datagrams counted');
        for (const r of client.replies.slice(repliesBefore)) assert.ok(r.length <= 4096);
        assert.equal(receivers.stats().threadsAlive, threads);
        assert.equal(receivers.stats().respondErrors, 0);
      });
    }

    test('RFC 8915 §5.7: a cookie that does not decrypt gets an NTSN NAK echoing only the UID, counted', async () => {
      const client = clients[2];
      assert.ok(client !== undefined);
      const before = receivers.stats().outcomes[Outcome.nakCookieDecryptFailed] ?? 0;
      const session = newSession(keyset);
      const broken = session.cookie.slice();
      broken[broken.length - 1] = (broken[broken.length - 1] ?? 0) ^ 0x01;
      const req = ntsRequest({ ...session, cookie: broken });
      assert.equal(checkNtsReply(await client.exchange(req.packet, port), req, session).kind, 'nak');
      await waitFor(() => (receivers.stats().outcomes[Outcome.nakCookieDecryptFailed] ?? 0) === before + 1, 3000, 'NAK counted');
    });

    test('datagrams of any size (0 … 65507 octets) and garbage: a reply ≤ its request or a counted drop; threads alive', async () => {
      const client = clients[3];
      assert.ok(client !== undefined);
      const sizes = [0, 1, 47, 48, 49, 1000, 4097, 65507];
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
      // Every datagram ends as exactly one outcome, a responder error or (native, over 4,096 octets) a truncation.
      const accounted = (): number => {
        const s = receivers.stats();
        return s.outcomes.reduce((a, b) => a + b, 0) + s.respondErrors + s.truncated;
      };
      // Each thread reports every 50 ms (reportIntervalMs): the earlier tests' last counts may still be on
      // their way. Start once the total has stood still for several report intervals.
      let last = -1;
      let stillSinceMs = Date.now();
      await waitFor(() => {
        const now = accounted();
        if (now !== last) {
          last = now;
          stillSinceMs = Date.now();
        }
        return Date.now() - stillSinceMs >= 300;
      }, 5000, 'the earlier counts settled');
      const settled = (): boolean => accounted() === receivers.stats().received;
      const start = accounted();
      const repliesBefore = client.replies.length;
      for (const p of packets) await client.send(p, port);
      await waitFor(() => settled() && accounted() - start >= packets.length, 5000, 'every datagram accounted for');
      assert.equal(accounted() - start, packets.length, 'exactly one outcome per datagram');
      await new Promise((r) => setTimeout(r, 50));
      const replies = client.replies.slice(repliesBefore);
      // 48 octets of 0x23 then zeros is a valid plain request: at least that one was answered.
      assert.ok(replies.length > 0);
      for (const r of replies) assert.ok(r.length <= 1000, `a ${r.length}-octet reply`);
      assert.equal((await client.exchange(plainRequest(), port)).length, 48, 'still answering');
      const s = receivers.stats();
      assert.equal(s.respondErrors, 0);
      assert.equal(s.socketErrors, 0);
      assert.equal(s.threadsAlive, threads);
    });

    test('a thread that dies is replaced and counted; every thread answers again', async () => {
      const before = receivers.stats();
      assert.equal(before.restarts, 0);
      assert.ok(await receivers.terminateThread(0));
      await waitFor(() => {
        const s = receivers.stats();
        return s.restarts === 1 && s.threadsAlive === threads;
      }, 5000, 'replacement thread bound');
      const exits = events.filter((e) => e.kind === 'threadExit');
      assert.equal(exits.length, 1);
      assert.equal(exits[0]?.kind === 'threadExit' ? exits[0].index : -1, 0);
      const receivedByZero = receivers.stats().receivedPerThread[0] ?? 0;
      for (const client of clients) {
        const reply = await client.exchange(plainRequest(), port);
        assert.equal(reply.length, 48);
        assert.equal(reply[1], 7, 'the replacement starts from the latest server fields');
        const session = newSession(keyset);
        const req = ntsRequest(session, 0);
        assert.equal(checkNtsReply(await client.exchange(req.packet, port), req, session).kind, 'time', 'and the latest keyset');
      }
      await waitFor(() => (receivers.stats().receivedPerThread[0] ?? 0) > receivedByZero, 3000, 'the replacement rejoined the port group and received');
      assert.equal(receivers.stats().socketErrors, 0);
    });
  });

  test(`${backend}: a listen address that cannot be bound: BIND_FAILED naming it, and the addresses bound before it are released`, async () => {
    const free = await freeUdpPort();
    const taken = await bindPlain(0);
    const takenPort = taken.address().port;
    try {
      const keyset = createKeyset(Date.now() / 1000, fill, { staleKeyCount: 7 });
      await assert.rejects(
        startNtpThreads(
          receiverOptions(keyset, {
            backend,
            listen: [
              { host: '127.0.0.1', port: free, family: 'IPv4' },
              { host: '127.0.0.1', port: takenPort, family: 'IPv4' },
            ],
          }),
        ),
        (error: unknown) => error instanceof NtsdError && error.code === NtsdErrorCode.BIND_FAILED && error.message.includes(`127.0.0.1:${takenPort}`),
      );
      await closeSocket(await bindPlain(free));
    } finally {
      await closeSocket(taken);
    }
  });

  test(`${backend}: IPv4 and IPv6 listeners side by side, each with its own policy (require-nts on the v6 one)`, async () => {
    const keyset = createKeyset(Date.now() / 1000, fill, { staleKeyCount: 7 });
    const running = await startNtpThreads(
      receiverOptions(keyset, {
        backend,
        threads,
        listen: [
          { host: '127.0.0.1', port: 0, family: 'IPv4', policy: 0 },
          { host: '::1', port: 0, family: 'IPv6', policy: 1 },
        ],
        policies: [
          { requireNts: false, acceptNtpVersions: [3, 4] },
          { requireNts: true, acceptNtpVersions: [4] },
        ],
      }),
    );
    const v4 = await openTestClient();
    const v6 = createSocket('udp6');
    try {
      assert.equal(running.addresses[1]?.family, 'IPv6');
      const v4Port = running.addresses[0]?.port ?? 0;
      const v6Port = running.addresses[1]?.port ?? 0;
      assert.equal((await v4.exchange(plainRequest(), v4Port)).length, 48, 'plain NTP over IPv4 is answered');
      await new Promise<void>((resolve) => v6.bind(0, '::1', () => resolve()));
      const got = new Promise<Buffer>((resolve) => v6.once('message', (m: Buffer) => resolve(m)));
      // Plain NTP is dropped on the v6 listener (require-nts) …
      v6.send(plainRequest(), v6Port, '::1');
      await waitFor(() => (running.stats().outcomes[Outcome.dropRequireNts] ?? 0) === 1, 3000, 'require_nts drop');
      // … while NTS is answered there, from the same socket to our v6 address and port.
      const session = newSession(keyset);
      const req = ntsRequest(session, 1);
      v6.send(req.packet, v6Port, '::1');
      assert.equal(checkNtsReply(new Uint8Array(await got), req, session).kind, 'time');
    } finally {
      await new Promise<void>((resolve) => v6.close(() => resolve()));
      await v4.close();
      await running.close();
    }
  });
}

if (native.ok) threadSuite('native');
threadSuite('dgram');
if (!reusePort) {
  test('without dgram reusePort (Node 20) a second thread cannot join the port: BIND_FAILED, and the first thread is gone', async () => {
    const port = await freeUdpPort();
    const keyset = createKeyset(Date.now() / 1000, fill, { staleKeyCount: 7 });
    await assert.rejects(
      startNtpThreads(receiverOptions(keyset, { listen: [{ host: '127.0.0.1', port, family: 'IPv4' }] })),
      (error: unknown) => error instanceof NtsdError && error.code === NtsdErrorCode.BIND_FAILED && error.message.includes(`127.0.0.1:${port}`),
    );
    // Thread 0 had bound the port; it must have been stopped, or this plain bind fails with EADDRINUSE.
    await closeSocket(await bindPlain(port));
  });

}

test('bad arguments are refused before any thread starts', async () => {
  const keyset = createKeyset(Date.now() / 1000, fill, { staleKeyCount: 7 });
  await assert.rejects(startNtpThreads(receiverOptions(keyset, { threads: 0 })), RangeError);
  await assert.rejects(startNtpThreads(receiverOptions(keyset, { keysetBytes: new Uint8Array(3) })), RangeError);
  await assert.rejects(startNtpThreads(receiverOptions(keyset, { policies: [] })), RangeError);
});
