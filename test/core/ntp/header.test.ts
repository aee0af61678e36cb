import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  LeapIndicator,
  NTP_HEADER_LENGTH,
  NtpMode,
  asciiReferenceId,
  decodeHeader,
  encodeHeader,
  packLiVnMode,
  readLeap,
  readMode,
  readVersion,
} from '../../../src/core/ntp/header.js';
import { fromHex, toHex } from '../../vectors/hex.js';

// A server reply: LI 0, VN 4, mode 4, stratum 2, poll 6, precision -24, root delay 0x00000b4a,
// root dispersion 0x00000512, refid 192.0.2.1, then four timestamps.
const REPLY_HEX =
  '240206e8' + '00000b4a' + '00000512' + 'c0000201' +
  'e9a1b2c300000000' + 'e9a1b2d011111111' + 'e9a1b2d122222222' + 'e9a1b2d133333333';

describe('NTP header (RFC 5905 §7.3)', () => {
  it('RFC 5905 §7.3: decodes every field of a known packet', () => {
    const r = decodeHeader(fromHex(REPLY_HEX));
    assert.ok(r.ok);
    assert.deepEqual(r.header, {
      leap: 0,
      version: 4,
      mode: 4,
      stratum: 2,
      poll: 6,
      precision: -24,
      rootDelay: 0x0b4a,
      rootDispersion: 0x0512,
      referenceId: 0xc0000201,
      referenceTime: { seconds: 0xe9a1b2c3, fraction: 0 },
      originTime: { seconds: 0xe9a1b2d0, fraction: 0x11111111 },
      receiveTime: { seconds: 0xe9a1b2d1, fraction: 0x22222222 },
      transmitTime: { seconds: 0xe9a1b2d1, fraction: 0x33333333 },
    });
  });

  it('RFC 5905 §7.3: encodes back to the same bytes', () => {
    const r = decodeHeader(fromHex(REPLY_HEX));
    assert.ok(r.ok);
    const out = new Uint8Array(48);
    assert.equal(encodeHeader(r.header, out, 0), 48);
    assert.equal(toHex(out), REPLY_HEX);
  });

  it('RFC 5905 §7.3: LI/VN/mode packing — 0x23 is a v4 client, 0x1b a v3 client, 0xe4 an unsynchronised v4 server', () => {
    assert.equal(packLiVnMode(0, 4, NtpMode.client), 0x23);
    assert.equal(packLiVnMode(0, 3, NtpMode.client), 0x1b);
    assert.equal(packLiVnMode(LeapIndicator.unsynchronized, 4, NtpMode.server), 0xe4);
    const b = Uint8Array.of(0xe4);
    assert.equal(readLeap(b), 3);
    assert.equal(readVersion(b), 4);
    assert.equal(readMode(b), 4);
  });

  it('RFC 8915 §5.7: the kiss code NTSN is 0x4e54534e', () => {
    assert.equal(asciiReferenceId('NTSN'), 0x4e54534e);
    assert.equal(asciiReferenceId('GPS'), 0x47505300);
  });

  it('refuses fewer than 48 octets and never throws', () => {
    for (let n = 0; n < NTP_HEADER_LENGTH; n++) assert.deepEqual(decodeHeader(new Uint8Array(n)), { ok: false, error: 'too_short' });
  });

  it('decode ∘ encode is the identity on any 48 octets', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 48, maxLength: 48 }), (bytes) => {
        const r = decodeHeader(bytes);
        assert.ok(r.ok);
        const out = new Uint8Array(48);
        encodeHeader(r.header, out, 0);
        assert.deepEqual(out, bytes);
      }),
      { numRuns: 2000 },
    );
  });
});
