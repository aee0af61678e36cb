import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  EfScan,
  createExtensionFieldCursor,
  decodeExtensionFields,
  extensionFieldLength,
  scanExtensionField,
  scanInnerExtensionField,
  writeExtensionField,
} from '../../../src/core/ntp/extension.js';
import { toHex } from '../../vectors/hex.js';

function packet(...parts: number[][]): Uint8Array {
  return Uint8Array.from([...new Array<number>(48).fill(0), ...parts.flat()]);
}
function field(type: number, length: number): number[] {
  const b = new Array<number>(length).fill(0xaa);
  b[0] = type >> 8;
  b[1] = type & 0xff;
  b[2] = length >> 8;
  b[3] = length & 0xff;
  return b;
}

describe('NTPv4 extension fields (RFC 7822)', () => {
  it('RFC 7822 §3: reads fields with the length counting the header', () => {
    const r = decodeExtensionFields(packet(field(0x0104, 36), field(0x7777, 16), field(0x0404, 40)), 48);
    assert.ok(r.ok);
    assert.deepEqual(
      r.fields.map((f) => [f.type, f.offset, f.value.length]),
      [
        [0x0104, 48, 32],
        [0x7777, 84, 12],
        [0x0404, 100, 36],
      ],
    );
    assert.equal(r.trailer, 'none');
  });

  it('RFC 7822 §3: 20 or 24 remaining octets are a legacy MAC, 4 a crypto-NAK', () => {
    for (const mac of [20, 24]) {
      const r = decodeExtensionFields(packet(field(0x0104, 36), new Array<number>(mac).fill(1)), 48);
      assert.ok(r.ok);
      assert.equal(r.trailer, 'legacyMac');
      assert.equal(r.trailerOffset, 84);
    }
    const nak = decodeExtensionFields(packet([0, 0, 0, 0]), 48);
    assert.ok(nak.ok);
    assert.equal(nak.trailer, 'cryptoNak');
    // A 16-octet EF followed by a MAC is fine: only the last EF needs 28 octets.
    const short = decodeExtensionFields(packet(field(0x2000, 16), new Array<number>(24).fill(1)), 48);
    assert.ok(short.ok);
    assert.equal(short.fields.length, 1);
  });

  it('RFC 7822 §3: the last EF must be at least 28 octets when no MAC follows', () => {
    assert.deepEqual(decodeExtensionFields(packet(field(0x2000, 16)), 48), { ok: false, error: 'malformed_extension_field', offset: 48 });
    assert.ok(decodeExtensionFields(packet(field(0x2000, 28)), 48).ok);
  });

  it('RFC 7822 §3: length must be a multiple of 4, at least 16, and inside the packet', () => {
    const bad = [field(0x2000, 30).concat([0, 0]), field(0x2000, 12).concat(new Array<number>(20).fill(0)), field(0x2000, 32).slice(0, 28)];
    bad[2]![3] = 36; // claims 36, only 28 present
    for (const b of bad) assert.equal(decodeExtensionFields(packet(b), 48).ok, false);
  });

  it('RFC 8915 §5.6: inside the ciphertext only the 4-octet multiple rule applies', () => {
    const c = createExtensionFieldCursor();
    const inner = Uint8Array.from([0x03, 0x04, 0x00, 0x04, 0x02, 0x04, 0x00, 0x08, 1, 2, 3, 4]);
    assert.equal(scanInnerExtensionField(inner, 0, c), EfScan.field);
    assert.equal(c.length, 4);
    assert.equal(scanInnerExtensionField(inner, c.next, c), EfScan.field);
    assert.equal(c.valueLength, 4);
    assert.equal(scanInnerExtensionField(inner, c.next, c), EfScan.end);
    assert.equal(scanInnerExtensionField(Uint8Array.of(0, 1, 0, 6, 0, 0), 0, c), EfScan.malformed);
    assert.equal(scanInnerExtensionField(Uint8Array.of(0, 1, 0, 2), 0, c), EfScan.malformed);
    assert.equal(scanInnerExtensionField(Uint8Array.of(0, 1), 0, c), EfScan.malformed);
  });

  it('writes padding with zeros up to the minimum length', () => {
    assert.equal(extensionFieldLength(1), 16);
    assert.equal(extensionFieldLength(32), 36);
    assert.equal(extensionFieldLength(33), 40);
    assert.equal(extensionFieldLength(1, 4), 8);
    const out = new Uint8Array(20).fill(0xff);
    assert.equal(writeExtensionField(out, 2, 0x0104, Uint8Array.of(9, 8, 7)), 18);
    assert.equal(toHex(out), 'ffff' + '01040010' + '090807' + '00'.repeat(9) + 'ffff');
    assert.throws(() => writeExtensionField(new Uint8Array(10), 0, 1, new Uint8Array(8)), RangeError);
  });

  it('never throws and never reads past the end on random bytes', () => {
    const c = createExtensionFieldCursor();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const p = Uint8Array.from([...new Array<number>(48).fill(0), ...bytes]);
        const r = decodeExtensionFields(p, 48);
        if (r.ok) for (const f of r.fields) assert.ok(f.offset + 4 + f.value.length <= p.length);
        let at = 0;
        for (let i = 0; i < 200; i++) {
          const k = scanInnerExtensionField(bytes, at, c);
          if (k !== EfScan.field) break;
          assert.ok(c.next <= bytes.length && c.next > at);
          at = c.next;
        }
        scanExtensionField(p, 48, c);
      }),
      { numRuns: 3000, interruptAfterTimeLimit: 4000 },
    );
  });

  it('decode ∘ encode round-trips any valid field list', () => {
    const fieldArb = fc.record({ type: fc.nat({ max: 0xffff }), value: fc.uint8Array({ maxLength: 80 }) });
    fc.assert(
      fc.property(fc.array(fieldArb, { minLength: 1, maxLength: 6 }), (fields) => {
        const lengths = fields.map((f, i) => extensionFieldLength(f.value.length, i === fields.length - 1 ? 28 : 16));
        const p = new Uint8Array(48 + lengths.reduce((a, b) => a + b, 0));
        let at = 48;
        fields.forEach((f, i) => {
          at = writeExtensionField(p, at, f.type, f.value, i === fields.length - 1 ? 28 : 16);
        });
        const r = decodeExtensionFields(p, 48);
        assert.ok(r.ok);
        assert.equal(r.fields.length, fields.length);
        r.fields.forEach((d, i) => {
          assert.equal(d.type, fields[i]!.type);
          assert.deepEqual(d.value.subarray(0, fields[i]!.value.length), fields[i]!.value);
          assert.ok(d.value.subarray(fields[i]!.value.length).every((x) => x === 0));
        });
      }),
      { numRuns: 1000, interruptAfterTimeLimit: 4000 },
    );
  });
});
