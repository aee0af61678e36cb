import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  INTERLEAVE_ENTRIES_PER_ADDRESS,
  InterleaveTable,
  MAX_TRANSMIT_DELAY_S,
  interleaveTableBytes,
  looksInterleaved,
  markReceiveFraction,
  markTransmitFraction,
  originFraction,
  originSeconds,
  type MutableNtpTimestamp,
} from '../../src/core/interleave.js';
import { hashIpWords } from '../../src/core/ip.js';
import { ClientTable } from '../../src/core/client-table.js';

function table(capacity: number, seed = 0x1234): InterleaveTable {
  return InterleaveTable.create(new SharedArrayBuffer(interleaveTableBytes(capacity)), capacity, seed);
}

function v4(a: number, b: number, c: number, d: number): Uint32Array {
  return Uint32Array.of(0, 0, 0xffff, ((a << 24) | (b << 16) | (c << 8) | d) >>> 0);
}

function ts(seconds: number, fraction: number): MutableNtpTimestamp {
  return { seconds, fraction };
}

function header(version: number, origin: [number, number], receive: [number, number], transmit: [number, number]): Uint8Array {
  const p = new Uint8Array(48);
  const dv = new DataView(p.buffer);
  p[0] = (version << 3) | 3;
  dv.setUint32(24, origin[0]);
  dv.setUint32(28, origin[1]);
  dv.setUint32(32, receive[0]);
  dv.setUint32(36, receive[1]);
  dv.setUint32(40, transmit[0]);
  dv.setUint32(44, transmit[1]);
  return p;
}

/** Addresses that land in one bucket of `t` (same seed), to fill a bucket on purpose. */
function sameBucket(t: InterleaveTable, seed: number, count: number): Uint32Array[] {
  const probe = new ClientTable(new SharedArrayBuffer(interleaveTableBytes(t.capacity)), { capacity: t.capacity, seed });
  const buckets = probe.buckets;
  const want = hashIpWords(v4(10, 0, 0, 1), seed) % buckets;
  const out: Uint32Array[] = [];
  for (let i = 1; out.length < count; i++) {
    const w = v4(10, (i >> 16) & 255, (i >> 8) & 255, i & 255);
    if (hashIpWords(w, seed) % buckets === want) out.push(w);
  }
  return out;
}

describe('interleave: detection (RFC 9769 §2, chrony marker bit)', () => {
  it('a v4 request whose origin has the marker bit and whose receive ≠ transmit looks interleaved', () => {
    assert.equal(looksInterleaved(header(4, [0xe9000000, 0x11], [0xe9000001, 2], [0xe9000001, 3])), true);
  });
  it('origin without the marker bit (a basic client echoing our transmit, or zero) does not', () => {
    assert.equal(looksInterleaved(header(4, [0xe9000000, 0x10], [0xe9000001, 2], [0xe9000001, 3])), false);
    assert.equal(looksInterleaved(header(4, [0, 0], [0, 0], [0xe9000001, 3])), false);
  });
  it('receive = transmit: the client could not tell the modes apart, so basic', () => {
    assert.equal(looksInterleaved(header(4, [0xe9000000, 0x11], [0xe9000001, 3], [0xe9000001, 3])), false);
  });
  it('NTPv3 never looks interleaved', () => {
    assert.equal(looksInterleaved(header(3, [0xe9000000, 0x11], [0xe9000001, 2], [0xe9000001, 3])), false);
  });
  it('origin accessors and marker helpers', () => {
    const p = header(4, [0xe9000000, 0x11], [1, 2], [3, 4]);
    assert.equal(originSeconds(p), 0xe9000000);
    assert.equal(originFraction(p), 0x11);
    assert.equal(markReceiveFraction(0xfffffffe), 0xffffffff);
    assert.equal(markReceiveFraction(0x10), 0x11);
    assert.equal(markTransmitFraction(0xffffffff), 0xfffffffe);
    assert.equal(markTransmitFraction(0x10), 0x10);
  });
});

describe('interleave: table', () => {
  const peer = v4(192, 0, 2, 1);
  const rx = ts(0xe9000000, 0x80000001);

  it('save → setTransmit → take is a hit with the stamp, exactly once', () => {
    const t = table(64);
    assert.equal(t.save(peer, rx, false, 1), true);
    assert.equal(t.setTransmit(peer, rx.seconds, rx.fraction, ts(0xe9000000, 0x80100000)), true);
    const out = ts(0, 0);
    assert.equal(t.take(peer, rx, false, out), 'hit');
    assert.deepEqual(out, { seconds: 0xe9000000, fraction: 0x80100000 });
    assert.equal(t.take(peer, rx, false, out), 'absent', 'used once: a replay gets a basic reply');
    assert.equal(t.size, 0);
  });

  it('the stamp crosses a second boundary (and a u32 wrap of the seconds)', () => {
    const t = table(64);
    const near = ts(0xffffffff, 0xffff0001);
    t.save(peer, near, false, 1);
    assert.equal(t.setTransmit(peer, near.seconds, near.fraction, ts(0, 0x00010000)), true);
    const out = ts(0, 0);
    assert.equal(t.take(peer, near, false, out), 'hit');
    assert.deepEqual(out, { seconds: 0, fraction: 0x00010000 });
  });

  it('a stamp slightly before its receive time (a clock step back) is kept; one beyond MAX_TRANSMIT_DELAY_S is refused as late', () => {
    const t = table(64);
    t.save(peer, rx, false, 1);
    assert.equal(t.setTransmit(peer, rx.seconds, rx.fraction, ts(rx.seconds + MAX_TRANSMIT_DELAY_S + 1, 0)), false);
    assert.equal(t.setTransmit(peer, rx.seconds, rx.fraction, ts(rx.seconds, rx.fraction - 1000)), true);
    const out = ts(0, 0);
    assert.equal(t.take(peer, rx, false, out), 'hit');
    assert.deepEqual(out, { seconds: rx.seconds, fraction: rx.fraction - 1000 });
  });

  it('without a stamp the entry is pending: used up, and the stamp arriving afterwards is late', () => {
    const t = table(64);
    t.save(peer, rx, false, 1);
    const out = ts(7, 7);
    assert.equal(t.take(peer, rx, false, out), 'pending');
    assert.deepEqual(out, { seconds: 7, fraction: 7 }, 'untouched');
    assert.equal(t.setTransmit(peer, rx.seconds, rx.fraction, ts(rx.seconds, rx.fraction + 5)), false);
  });

  it('keyed by client address AND timestamp: another address echoing the same origin gets nothing', () => {
    const t = table(64);
    t.save(peer, rx, false, 1);
    t.setTransmit(peer, rx.seconds, rx.fraction, ts(rx.seconds, rx.fraction + 5));
    const out = ts(0, 0);
    assert.equal(t.take(v4(192, 0, 2, 2), rx, false, out), 'absent');
    assert.equal(t.take(peer, ts(rx.seconds, rx.fraction + 2), false, out), 'absent');
    assert.equal(t.take(peer, rx, false, out), 'hit', 'the spoofed lookups did not use it up');
  });

  it('an NTS entry is never used by a plain request (nor the reverse)', () => {
    const t = table(64);
    t.save(peer, rx, true, 1);
    t.setTransmit(peer, rx.seconds, rx.fraction, ts(rx.seconds, rx.fraction + 5));
    const out = ts(0, 0);
    assert.equal(t.take(peer, rx, false, out), 'absent');
    assert.equal(t.take(peer, rx, true, out), 'hit');
    t.save(peer, rx, false, 2);
    assert.equal(t.take(peer, rx, true, out), 'absent');
  });

  it('saving a key twice drops both (ambiguous: never answer with a wrong stamp)', () => {
    const t = table(64);
    assert.equal(t.save(peer, rx, false, 1), true);
    assert.equal(t.save(peer, rx, false, 2), false);
    assert.equal(t.take(peer, rx, false, ts(0, 0)), 'absent');
  });

  it(`one budget per address: at most ${INTERLEAVE_ENTRIES_PER_ADDRESS} entries, its own oldest goes first, others keep theirs`, () => {
    const seed = 99;
    const t = table(64, seed);
    const [victim, greedy] = sameBucket(t, seed, 2) as [Uint32Array, Uint32Array];
    t.save(victim, rx, false, 0);
    for (let i = 0; i < 20; i++) t.save(greedy, ts(0xe9000000, 2 * i + 1), false, 1 + i);
    let own = 0;
    for (let i = 0; i < 20; i++) if (t.take(greedy, ts(0xe9000000, 2 * i + 1), false, ts(0, 0)) !== 'absent') own++;
    assert.equal(own, INTERLEAVE_ENTRIES_PER_ADDRESS);
    // The newest four survived.
    assert.equal(t.evictions, 20 - INTERLEAVE_ENTRIES_PER_ADDRESS);
    assert.equal(t.take(victim, rx, false, ts(0, 0)), 'pending', 'the other address in the same bucket kept its entry');
  });

  it('a full bucket evicts its least recently saved entry, and counts it', () => {
    const seed = 7;
    const t = table(64, seed);
    const peers = sameBucket(t, seed, 9);
    peers.forEach((p, i) => t.save(p, rx, false, 100 + i));
    assert.equal(t.evictions, 1);
    assert.equal(t.take(peers[0]!, rx, false, ts(0, 0)), 'absent', 'the oldest went');
    for (let i = 1; i < 9; i++) assert.equal(t.take(peers[i]!, rx, false, ts(0, 0)), 'pending');
  });

  it('views attached in other threads share entries and the eviction count', () => {
    const t = table(64);
    const other = InterleaveTable.attach(t.buffer);
    t.save(peer, rx, false, 1);
    assert.equal(other.setTransmit(peer, rx.seconds, rx.fraction, ts(rx.seconds, rx.fraction + 9)), true);
    const out = ts(0, 0);
    assert.equal(other.take(peer, rx, false, out), 'hit');
    assert.equal(out.fraction, rx.fraction + 9);
    assert.equal(other.capacity, t.capacity);
  });

  it('property: spoofed origins and floods never grow the table past its size nor return another address\'s stamp', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            op: fc.constantFrom('save', 'stamp', 'take'),
            who: fc.integer({ min: 0, max: 40 }),
            sec: fc.integer({ min: 0, max: 3 }),
            frac: fc.integer({ min: 0, max: 7 }),
            nts: fc.boolean(),
          }),
          { maxLength: 400 },
        ),
        (ops) => {
          const t = table(32);
          // The stamp of (who, rx) is a function of who and rx, so a hit can be checked against its owner.
          const stampOf = (who: number, sec: number, frac: number): MutableNtpTimestamp => ts(0xe9000000 + sec, frac * 2 + 1 + who * 1000);
          let now = 0;
          for (const o of ops) {
            const p = v4(198, 51, 100, o.who);
            const key = ts(0xe9000000 + o.sec, o.frac * 2 + 1);
            if (o.op === 'save') t.save(p, key, o.nts, now++);
            else if (o.op === 'stamp') t.setTransmit(p, key.seconds, key.fraction, stampOf(o.who, o.sec, o.frac));
            else {
              const out = ts(0, 0);
              if (t.take(p, key, o.nts, out) === 'hit') assert.deepEqual(out, stampOf(o.who, o.sec, o.frac));
            }
            assert.ok(t.size <= t.capacity);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
