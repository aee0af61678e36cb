/**
 * RFC 9769 interleaved mode end to end on the native datapath (src/ntp/socket-native.ts, transmit-stamps.ts):
 * real loopback sockets, two NTP threads sharing the port, kernel TX stamps from the error queue, and a
 * client that, like chrony, sends every request from a new source port (so consecutive requests may land
 * on different threads and meet through the shared table). Plus the pending-stamp ring on its own: lost,
 * late and misnumbered stamps are counted and never wait.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { WallClock } from '../../src/runtime/clock.js';
import { createKeyset, encodeKeyset } from '../../src/core/nts/keyset.js';
import { InterleaveTable, interleaveTableBytes } from '../../src/core/interleave.js';
import { readTimestamp } from '../../src/core/ntp/timestamp.js';
import { startNtpThreads, type NtpThreads } from '../../src/ntp/threads.js';
import { loadNativeUdp } from '../../src/runtime/addon.js';
import { MAX_PENDING_MS, MISMATCHES_BEFORE_RESET, PendingTransmitStamps } from '../../src/ntp/transmit-stamps.js';
import { TEST_SERVER_FIELDS, checkNtsReply, newSession, ntsRequest, openTestClient, plainRequest, waitFor } from './nts-test-client.js';

const native = loadNativeUdp();
const fill = (b: Uint8Array): void => {
  randomFillSync(b);
};

function request(origin: Uint8Array, receive: Uint8Array, transmit: Uint8Array): Uint8Array {
  return plainRequest(4, { origin, receive, transmit });
}

/** One request from a fresh source port (chrony's default), returning the reply. */
async function once(packet: Uint8Array, port: number): Promise<Uint8Array> {
  const c = await openTestClient();
  try {
    return await c.exchange(packet, port);
  } finally {
    await c.close();
  }
}

const toNs = (b: Uint8Array): bigint => {
  const t = readTimestamp(b, 0);
  return (BigInt(t.seconds) * 1_000_000_000n) + ((BigInt(t.fraction) * 1_000_000_000n) >> 32n);
};

describe('interleaved mode on the native datapath (RFC 9769)', { skip: native.ok ? false : 'native addon not built' }, () => {
  let threads: NtpThreads;
  let table: InterleaveTable;
  let port = 0;
  before(async () => {
    table = InterleaveTable.create(new SharedArrayBuffer(interleaveTableBytes(1024)), 1024, 77);
    threads = await startNtpThreads({
      threads: 2,
      backend: 'native',
      listen: [{ host: '127.0.0.1', port: 0, family: 'IPv4' }],
      keysetBytes: encodeKeyset(createKeyset(Math.floor(Date.now() / 1000), fill, { staleKeyCount: 2 })),
      serverFields: TEST_SERVER_FIELDS,
      policies: [{ requireNts: false, acceptNtpVersions: [3, 4] }],
      interleaveTables: [table.buffer as SharedArrayBuffer],
      clock: new WallClock(),
      reportIntervalMs: 50,
    });
    port = threads.addresses[0]?.port ?? 0;
  });
  after(async () => {
    await threads.close();
  });

  test('plain NTP: the third exchange carries the kernel TX stamp of the second reply', async () => {
    const transmit = (n: number): Uint8Array => Uint8Array.from([0xe9, 0, 0, 1, n, n, n, n]);
    const zero = new Uint8Array(8);
    const a = await once(request(zero, zero, transmit(1)), port);
    assert.equal((a[39] ?? 0) & 1, 1, 'receive timestamp marked');
    assert.equal((a[47] ?? 0) & 1, 0, 'transmit timestamp marked');
    const b = await once(request(a.subarray(32, 40), Uint8Array.from([0xe9, 0, 0, 1, 0, 0, 0, 0x22]), transmit(2)), port);
    assert.deepEqual(b.subarray(24, 32), transmit(2), 'second reply: basic');
    const before = threads.stats().txStampsCaptured;
    await waitFor(() => threads.stats().txStampsCaptured > before, 2000, 'the TX stamp of the second reply');
    const clientRx = Uint8Array.from([0xe9, 0, 0, 1, 0, 0, 0, 0x33]);
    const c = await once(request(b.subarray(32, 40), clientRx, transmit(3)), port);
    assert.deepEqual(c.subarray(24, 32), clientRx, 'third reply: interleaved (origin = request receive)');
    // The kernel stamp of reply 2 lies after its request arrived and within a few ms of the estimate sent in it.
    const kernelTx = toNs(c.subarray(40, 48));
    assert.ok(kernelTx >= toNs(b.subarray(32, 40)), 'TX after RX');
    const gapNs = kernelTx - toNs(b.subarray(40, 48));
    assert.ok(gapNs > -5_000_000n && gapNs < 5_000_000n, `stamp ${gapNs} ns from the basic estimate`);
    await waitFor(() => threads.stats().interleavedReplies >= 1, 2000, 'the interleaved reply counted');
  });

  test('NTS: interleaved replies authenticate', async () => {
    const keyset = createKeyset(Math.floor(Date.now() / 1000), fill, { staleKeyCount: 2 });
    // A fresh service with this keyset so the session's cookie opens.
    const t2 = InterleaveTable.create(new SharedArrayBuffer(interleaveTableBytes(64)), 64, 78);
    const ntp = await startNtpThreads({
      threads: 2,
      backend: 'native',
      listen: [{ host: '127.0.0.1', port: 0, family: 'IPv4' }],
      keysetBytes: encodeKeyset(keyset),
      serverFields: TEST_SERVER_FIELDS,
      policies: [{ requireNts: false, acceptNtpVersions: [3, 4] }],
      interleaveTables: [t2.buffer as SharedArrayBuffer],
      clock: new WallClock(),
      reportIntervalMs: 50,
    });
    try {
      const p = ntp.addresses[0]?.port ?? 0;
      const session = newSession(keyset);
      // `interleaved`: the reply's origin must be our receive field (RFC 9769), else our transmit.
      const exchange = async (origin: Uint8Array, receive: Uint8Array, interleaved = false): Promise<{ reply: Uint8Array; transmit: Uint8Array }> => {
        const req = ntsRequest(session, 0, { origin, receive });
        const reply = await once(req.packet, p);
        const checked = checkNtsReply(reply, interleaved ? { ...req, transmit: receive } : req, session);
        assert.equal(checked.kind, 'time');
        return { reply, transmit: req.packet.subarray(40, 48) };
      };
      const zero = new Uint8Array(8);
      const a = await exchange(zero, zero);
      const b = await exchange(a.reply.subarray(32, 40), Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]));
      assert.deepEqual(b.reply.subarray(24, 32), b.transmit);
      const before = ntp.stats().txStampsCaptured;
      await waitFor(() => ntp.stats().txStampsCaptured > before, 2000, 'the TX stamp of the second reply');
      const clientRx = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 9]);
      const c = await exchange(b.reply.subarray(32, 40), clientRx, true);
      assert.deepEqual(c.reply.subarray(24, 32), clientRx, 'interleaved, and it verified under S2C');
    } finally {
      await ntp.close();
    }
  });
});

describe('pending TX stamps: loss and lateness are counted, never waited for', () => {
  const peer = Uint32Array.of(0, 0, 0xffff, 0x7f000001);
  const key = { seconds: 0xe9000000, fraction: 0x1001 };
  /** (id, Unix seconds, ns) of a stamp 10 µs after `key`. */
  const stamp = (id: number): Float64Array => Float64Array.of(id, 0xe9000000 - 2_208_988_800, 10_000);
  const fresh = (): { table: InterleaveTable; pending: PendingTransmitStamps } => {
    const table = InterleaveTable.create(new ArrayBuffer(interleaveTableBytes(64)), 64, 1);
    table.save(peer, key, false, 0);
    return { table, pending: new PendingTransmitStamps(table) };
  };

  test('a stamp matched by id lands in the table', () => {
    const { table, pending } = fresh();
    pending.add(5, peer, key, 0);
    pending.match(stamp(5), 1);
    assert.deepEqual(pending.counts, { captured: 1, missing: 0, late: 0 });
    assert.equal(pending.live, 0);
    const out = { seconds: 0, fraction: 0 };
    assert.equal(table.take(peer, key, false, out), 'hit');
  });

  test(`a stamp not read within ${MAX_PENDING_MS} ms is missing; if it comes after all, it is late`, () => {
    const { pending } = fresh();
    pending.add(5, peer, key, 0);
    pending.expire(MAX_PENDING_MS / 2);
    assert.equal(pending.live, 1);
    pending.expire(MAX_PENDING_MS + 1);
    assert.deepEqual(pending.counts, { captured: 0, missing: 1, late: 0 });
    pending.match(stamp(5), 1);
    assert.deepEqual(pending.counts, { captured: 0, missing: 1, late: 1 });
  });

  test('a stamp whose table entry the client already used is late', () => {
    const { table, pending } = fresh();
    pending.add(5, peer, key, 0);
    table.take(peer, key, false, { seconds: 0, fraction: 0 });
    pending.match(stamp(5), 1);
    assert.deepEqual(pending.counts, { captured: 0, missing: 0, late: 1 });
  });

  test(`ids nobody was given, ${MISMATCHES_BEFORE_RESET} in a row, ask for a numbering reset; clear() gives up the rest`, () => {
    const { pending } = fresh();
    pending.add(5, peer, key, 0);
    for (let i = 0; i < MISMATCHES_BEFORE_RESET - 1; i++) pending.match(stamp(900 + i), 1);
    assert.equal(pending.needsReset, false);
    pending.match(stamp(990), 1);
    assert.equal(pending.needsReset, true);
    pending.clear();
    assert.equal(pending.needsReset, false);
    assert.equal(pending.live, 0);
    assert.deepEqual(pending.counts, { captured: 0, missing: 1, late: MISMATCHES_BEFORE_RESET });
    pending.match(stamp(5), 1);
    assert.equal(pending.counts.captured, 0, 'an old id does not match after the reset');
  });

  test('a ring slot needed again before its stamp came counts the old note missing', () => {
    const { pending } = fresh();
    pending.add(5, peer, key, 0);
    pending.add(5 + 1024, peer, key, 0);
    assert.equal(pending.counts.missing, 1);
    assert.equal(pending.live, 1);
  });
});
