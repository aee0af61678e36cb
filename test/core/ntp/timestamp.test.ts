import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  NTP_UNIX_OFFSET_S,
  fractionToNanoseconds,
  nanosecondsToFraction,
  ntpEraOfUnix,
  ntpShortToSeconds,
  ntpToUnix,
  readTimestamp,
  secondsToNtpShort,
  unixToNtp,
  writeTimestamp,
} from '../../../src/core/ntp/timestamp.js';
import { fromHex, toHex } from '../../vectors/hex.js';

describe('NTP timestamps (RFC 5905 §6)', () => {
  it('RFC 5905 §6 Figure 4: historic dates map to the listed era and era offset', () => {
    // [date, Unix seconds at 00:00 UTC, era, era offset]
    const table: [string, number, number, number][] = [
      ['1 Jan 1900', -NTP_UNIX_OFFSET_S, 0, 0],
      ['1 Jan 1970', 0, 0, 2_208_988_800],
      ['1 Jan 1972', 63_072_000, 0, 2_272_060_800],
      ['31 Dec 1999', 946_598_400, 0, 3_155_587_200],
      ['8 Feb 2036', 2_086_041_600, 1, 63_104],
    ];
    for (const [name, unix, era, offset] of table) {
      assert.equal(ntpEraOfUnix(unix), era, name);
      assert.deepEqual(unixToNtp(unix, 0), { seconds: offset, fraction: 0 }, name);
    }
  });

  it('RFC 5905 §6: the seconds field wraps at 2036-02-07 06:28:16 UTC into era 1', () => {
    const rollover = 0x1_0000_0000 - NTP_UNIX_OFFSET_S; // 2085978496
    assert.equal(rollover, 2_085_978_496);
    assert.deepEqual(unixToNtp(rollover - 1, 0xffffffff), { seconds: 0xffffffff, fraction: 0xffffffff });
    assert.deepEqual(unixToNtp(rollover, 0), { seconds: 0, fraction: 0 });
    assert.equal(ntpEraOfUnix(rollover - 1), 0);
    assert.equal(ntpEraOfUnix(rollover), 1);
  });

  it('RFC 5905 §6: era resolution by pivot puts 2036 and 1990 timestamps in the right era', () => {
    assert.equal(ntpToUnix({ seconds: 63_104, fraction: 0 }).seconds, 2_086_041_600); // default pivot 2024
    assert.equal(ntpToUnix({ seconds: 0xffffffff, fraction: 0 }, 631_152_000).seconds, 2_085_978_495); // pivot 1990
    assert.equal(ntpToUnix({ seconds: 2_208_988_800, fraction: 7 }, 2_500_000_000).seconds, 4_294_967_296); // 2106, era 1
    assert.equal(ntpToUnix({ seconds: 3_155_587_200, fraction: 0 }, 2_086_041_600).seconds, 946_598_400);
  });

  it('ntpToUnix ∘ unixToNtp is the identity within ±68 years of the pivot', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 4_000_000_000 }),
        fc.integer({ min: -0x7fff_ffff, max: 0x7fff_ffff }),
        fc.nat({ max: 0xffffffff }),
        (pivot, delta, fraction) => {
          const unix = pivot + delta;
          const back = ntpToUnix(unixToNtp(unix, fraction), pivot);
          assert.deepEqual(back, { seconds: unix, fraction });
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('fraction ↔ nanoseconds (2^-32 s units)', () => {
    assert.equal(nanosecondsToFraction(0), 0);
    assert.equal(nanosecondsToFraction(500_000_000), 0x8000_0000);
    assert.equal(nanosecondsToFraction(250_000_000), 0x4000_0000);
    assert.equal(nanosecondsToFraction(999_999_999), 0xffff_fffb);
    assert.equal(fractionToNanoseconds(0x8000_0000), 500_000_000);
    for (const ns of [1, 12_345, 999_999_999, 123_456_789]) {
      assert.ok(Math.abs(fractionToNanoseconds(nanosecondsToFraction(ns)) - ns) <= 1);
    }
  });

  it('wire form is two big-endian u32 (RFC 5905 §6)', () => {
    const buf = new Uint8Array(10);
    assert.equal(writeTimestamp(buf, 1, { seconds: 0xe9a1b2c3, fraction: 0x80000001 }), 9);
    assert.equal(toHex(buf), '00e9a1b2c380000001' + '00');
    assert.deepEqual(readTimestamp(fromHex('e9a1b2c380000001'), 0), { seconds: 0xe9a1b2c3, fraction: 0x80000001 });
  });

  it('RFC 5905 §6: 32-bit short format is 16.16 fixed point', () => {
    assert.equal(secondsToNtpShort(1.5), 0x0001_8000);
    assert.equal(secondsToNtpShort(0), 0);
    assert.equal(secondsToNtpShort(-1), 0);
    assert.equal(secondsToNtpShort(70_000), 0xffff_ffff);
    assert.equal(ntpShortToSeconds(0x0000_4000), 0.25);
  });
});
