import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeExporterContext,
  ExporterDirection,
  exporterAeadId,
  ntpv4ExporterContexts,
} from '../../../src/core/nts/exporter.js';
import { NTS_EXPORTER_LABEL } from '../../../src/core/nts/ids.js';

const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('NTS exporter contexts (RFC 8915 §4.3, §5.1)', () => {
  it('RFC 8915 §4.3: the exporter label is "EXPORTER-network-time-security" without NUL', () => {
    assert.equal(NTS_EXPORTER_LABEL, 'EXPORTER-network-time-security');
    assert.equal(Buffer.byteLength(NTS_EXPORTER_LABEL), 30);
  });

  it('RFC 8915 §5.1: AEAD 15 gives C2S 000000 0f 00 and S2C 000000 0f 01', () => {
    const c = ntpv4ExporterContexts(15, false);
    assert.equal(toHex(c.c2s), '00' + '00' + '000f' + '00');
    assert.equal(toHex(c.s2c), '0000000f01');
  });

  it('RFC 8915 §5.1: context is 5 octets, protocol id then AEAD id (u16) then direction, for every AEAD', () => {
    const expected: Record<number, [string, string]> = {
      15: ['0000000f00', '0000000f01'],
      16: ['0000001000', '0000001001'],
      17: ['0000001100', '0000001101'],
      31: ['0000001f00', '0000001f01'],
      0x1234: ['0000123400', '0000123401'],
    };
    for (const [id, [c2s, s2c]] of Object.entries(expected)) {
      for (const compliant of [false, true]) {
        const c = ntpv4ExporterContexts(Number(id), compliant);
        assert.equal(c.c2s.length, 5);
        assert.equal(toHex(c.c2s), c2s, `AEAD ${id} c2s`);
        assert.equal(toHex(c.s2c), s2c, `AEAD ${id} s2c`);
      }
    }
  });

  it('chrony quirk: AEAD 30 with record 1024 exchanged uses the RFC context (30)', () => {
    const c = ntpv4ExporterContexts(30, true);
    assert.equal(toHex(c.c2s), '0000001e00');
    assert.equal(toHex(c.s2c), '0000001e01');
    assert.equal(exporterAeadId(30, true), 30);
  });

  it('chrony quirk: AEAD 30 without record 1024 uses the legacy context (15 in the id field)', () => {
    const c = ntpv4ExporterContexts(30, false);
    assert.equal(toHex(c.c2s), '0000000f00');
    assert.equal(toHex(c.s2c), '0000000f01');
    assert.equal(exporterAeadId(30, false), 15);
  });

  it('encodes other next protocols in the first two octets', () => {
    assert.equal(toHex(encodeExporterContext(0x8001, 17, ExporterDirection.s2c)), '8001001101');
  });
});
