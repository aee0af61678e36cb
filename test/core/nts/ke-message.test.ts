import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeKeErrorResponse, type KeRequestDefect, validateKeRequest } from '../../../src/core/nts/ke-message.js';
import { decodeKeMessage, encodeKeMessage, type KeRecord } from '../../../src/core/nts/ke-record.js';

const NP0: KeRecord = { kind: 'nextProtocol', critical: true, protocolIds: [0] };
const AEAD: KeRecord = { kind: 'aeadAlgorithm', critical: true, aeadIds: [30, 15] };
const EOM: KeRecord = { kind: 'endOfMessage', critical: true };
const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

function expectBad(input: Uint8Array | readonly KeRecord[], defect: KeRequestDefect, code = 1): void {
  for (const form of input instanceof Uint8Array ? [input] : [input, encodeKeMessage(input)]) {
    const v = validateKeRequest(form);
    assert.ok(!v.ok, `expected ${defect}`);
    assert.equal(v.defect, defect);
    assert.equal(v.errorCode, code);
  }
}

function expectOk(records: readonly KeRecord[]): void {
  for (const form of [records, encodeKeMessage(records)]) {
    const v = validateKeRequest(form);
    assert.ok(v.ok, v.ok ? '' : v.defect);
  }
}

describe('NTS-KE request validation (RFC 8915 §4.1)', () => {
  it('accepts the minimal NTPv4 request and reports what was offered', () => {
    const v = validateKeRequest([NP0, AEAD, EOM]);
    assert.ok(v.ok);
    assert.deepEqual(v.request, {
      nextProtocolIds: [0],
      aeadIds: [30, 15],
      compliantGcmSivExporter: false,
      ntpv4ServerPreference: undefined,
      ntpv4PortPreference: undefined,
      pool: undefined,
      authenticationToken: undefined,
      keepAlive: false,
      deniedServers: [],
    });
  });

  it('RFC 8915 §4.1.1: End of Message is the last record', () => {
    const v = validateKeRequest([NP0, EOM, AEAD, EOM]);
    assert.ok(!v.ok && v.defect === 'record_after_end_of_message' && v.errorCode === 1);
    expectBad(encodeKeMessage([NP0, EOM, AEAD, EOM]), 'data_after_end_of_message');
    expectBad(new Uint8Array([...encodeKeMessage([NP0, AEAD, EOM]), 0x80, 0, 0, 0]), 'data_after_end_of_message');
  });

  it('RFC 8915 §4.1.1: a request without End of Message is Bad Request', () => {
    expectBad([NP0, AEAD], 'missing_end_of_message');
    expectBad(encodeKeMessage([NP0, AEAD]), 'missing_end_of_message');
  });

  it('RFC 8915 §4.1.1: End of Message MUST have the critical bit set', () => {
    expectBad([NP0, AEAD, { kind: 'endOfMessage', critical: false }], 'end_of_message_not_critical');
  });

  it('RFC 8915 §4.1.1: End of Message has an empty body', () => {
    expectBad(hex('8001 0002 0000 8004 0002 000f 8000 0001 00'), 'bad_body_length');
  });

  it('RFC 8915 §4.1.2: a request carries exactly one Next Protocol record', () => {
    expectBad([AEAD, EOM], 'missing_next_protocol');
    expectBad([NP0, AEAD, NP0, EOM], 'duplicate_next_protocol');
  });

  it('RFC 8915 §4.1.2: Next Protocol MUST have the critical bit set', () => {
    expectBad([{ kind: 'nextProtocol', critical: false, protocolIds: [0] }, AEAD, EOM], 'next_protocol_not_critical');
  });

  it('RFC 8915 §4.1.2: a request lists at least one protocol', () => {
    expectBad([{ kind: 'nextProtocol', critical: true, protocolIds: [] }, AEAD, EOM], 'empty_next_protocol');
  });

  it('RFC 8915 §4.1.2: protocol ids are u16 (odd body length is Bad Request)', () => {
    expectBad(hex('8001 0003 000000 8004 0002 000f 8000 0000'), 'bad_body_length');
  });

  it('RFC 8915 §4.1.5: AEAD record required exactly once when NTPv4 is offered', () => {
    expectBad([NP0, EOM], 'missing_aead_algorithm');
    expectBad([NP0, AEAD, AEAD, EOM], 'duplicate_aead_algorithm');
    // Not required when NTPv4 is not offered.
    expectOk([{ kind: 'nextProtocol', critical: true, protocolIds: [0x8001] }, EOM]);
  });

  it('RFC 8915 §4.1.5: a request lists at least one AEAD id; ids are u16', () => {
    expectBad([NP0, { kind: 'aeadAlgorithm', critical: true, aeadIds: [] }, EOM], 'empty_aead_algorithm');
    expectBad(hex('8001 0002 0000 8004 0003 000f00 8000 0000'), 'bad_body_length');
  });

  it('RFC 8915 §4.1.5: the AEAD record critical bit is optional ("MAY")', () => {
    expectOk([NP0, { kind: 'aeadAlgorithm', critical: false, aeadIds: [15] }, EOM]);
  });

  it('RFC 8915 §4.1.3: clients do not send Error records', () => {
    expectBad([NP0, AEAD, { kind: 'error', critical: true, code: 2 }, EOM], 'client_sent_error');
  });

  it('RFC 8915 §4.1.4: clients do not send Warning records', () => {
    expectBad([NP0, AEAD, { kind: 'warning', critical: true, code: 0 }, EOM], 'client_sent_warning');
  });

  it('RFC 8915 §4.1.6: clients never send New Cookie records', () => {
    expectBad([NP0, AEAD, { kind: 'newCookie', critical: false, cookie: new Uint8Array(8) }, EOM], 'client_sent_new_cookie');
  });

  it('RFC 8915 §4: an unknown critical record is Error 0 (Unrecognized Critical Record)', () => {
    expectBad([NP0, AEAD, { kind: 'unknown', critical: true, type: 0x4444, body: new Uint8Array(2) }, EOM], 'unrecognized_critical_record', 0);
  });

  it('RFC 8915 §4: an unknown non-critical record is skipped', () => {
    expectOk([NP0, { kind: 'unknown', critical: false, type: 0x1234, body: new Uint8Array(5) }, AEAD, EOM]);
    expectOk([NP0, { kind: 'unknown', critical: false, type: 0x4005, body: new Uint8Array(0) }, AEAD, EOM]);
  });

  it('RFC 8915 §4.1.7/§4.1.8: client Server/Port preferences are accepted (even critical) and reported', () => {
    const v = validateKeRequest(
      encodeKeMessage([
        NP0,
        AEAD,
        { kind: 'ntpv4Server', critical: true, server: '192.0.2.1' },
        { kind: 'ntpv4Port', critical: true, port: 1123 },
        EOM,
      ]),
    );
    assert.ok(v.ok);
    assert.equal(v.request.ntpv4ServerPreference, '192.0.2.1');
    assert.equal(v.request.ntpv4PortPreference, 1123);
  });

  it('RFC 8915 §4.1.7: at most one Server record; its body is printable ASCII', () => {
    const s: KeRecord = { kind: 'ntpv4Server', critical: false, server: 'a.example' };
    expectBad([NP0, AEAD, s, s, EOM], 'duplicate_ntpv4_server');
    expectBad([NP0, AEAD, { kind: 'ntpv4Server', critical: false, server: '' }, EOM], 'bad_ntpv4_server');
    expectBad([NP0, AEAD, { kind: 'ntpv4Server', critical: false, server: 'a b' }, EOM], 'bad_ntpv4_server');
    expectBad([NP0, AEAD, { kind: 'ntpv4Server', critical: false, server: 'caf\u00e9' }, EOM], 'bad_ntpv4_server');
  });

  it('RFC 8915 §4.1.8: at most one Port record; its body is exactly 2 octets', () => {
    const p: KeRecord = { kind: 'ntpv4Port', critical: false, port: 123 };
    expectBad([NP0, AEAD, p, p, EOM], 'duplicate_ntpv4_port');
    expectBad(hex('8001 0002 0000 8004 0002 000f 0007 0001 00 8000 0000'), 'bad_body_length');
  });

  it('chrony record 1024 sets the compliant-exporter flag; a non-empty body is Bad Request', () => {
    const v = validateKeRequest([NP0, AEAD, { kind: 'chronyCompliantExporter', critical: false }, EOM]);
    assert.ok(v.ok && v.request.compliantGcmSivExporter);
    expectBad(hex('8001 0002 0000 8004 0002 001e 0400 0001 00 8000 0000'), 'bad_body_length');
  });

  it('RFC 8915 §4.1.3: the Error response is one critical Error record and End of Message', () => {
    const r = encodeKeErrorResponse(1);
    assert.equal(Buffer.from(r).toString('hex'), '80020002000180000000');
    const d = decodeKeMessage(r);
    assert.ok(d.ok);
    assert.deepEqual(d.records, [{ kind: 'error', critical: true, code: 1 }, EOM]);
  });
});
