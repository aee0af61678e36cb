/**
 * The short version of bench/storm: 5,000 hostile datagrams (random sizes up to 65,507 octets, mutated
 * NTS requests) against two native NTP threads running an AddressSanitizer build of the addon. No
 * sanitizer report, no reply longer than its request, no reply to a datagram shorter than a header,
 * and valid probes answered afterwards. The full run: `node dist/bench/storm/main.js` (1,000,000).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runStorm, sanitizerAvailable } from '../../bench/storm/storm.js';

test('malformed-datagram storm on the native datapath under AddressSanitizer: zero defects', { timeout: 120_000 }, async (t) => {
  if (!sanitizerAvailable()) {
    assert.notEqual(process.env['NTSD_REQUIRE_NATIVE'], '1', 'CI must have cc and libasan for the storm');
    return t.skip('no cc or libasan here');
  }
  const result = await runStorm({ datagrams: 5000, seconds: 30 });
  t.diagnostic(JSON.stringify({ ...result, defects: result.defects.length }));
  assert.deepEqual(result.defects, []);
  assert.equal(result.sent, 5000, 'the whole storm was sent');
  assert.ok(result.replies > 0, 'the storm had answerable datagrams');
  assert.ok(result.truncatedCounted > 0, 'some datagrams were longer than a slot and counted as truncated');
  assert.equal(result.sanitizerReports, 0);
});
