import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { getAead } from '../../../src/core/crypto/aead.js';
import {
  authenticateNtsRequest,
  createNtsRequestScratch,
  encodeNtsClientRequest,
  parseNtsRequest,
  requiredNonceFieldLength,
  satisfiesNoncePadding,
  type NtsParseResult,
} from '../../../src/core/nts/ntp-fields.js';
import { EfType, buildClientRequest, counting, deterministicRandom, ef, type ClientRequestSpec } from '../ntp/independent-nts-client.js';

const C2S = counting(32, 0x40);
const BASE: ClientRequestSpec = {
  transmit: counting(8, 0xa0),
  uniqueId: counting(32, 1),
  cookie: counting(100, 0x10),
  aeadId: 15,
  c2s: C2S,
  nonce: counting(16, 0xf0),
};

function parse(spec: Partial<ClientRequestSpec>): NtsParseResult {
  return parseNtsRequest(buildClientRequest({ ...BASE, ...spec }).packet, createNtsRequestScratch());
}
function errorOf(r: NtsParseResult): string {
  return r.ok ? r.kind : r.error;
}
function aead15() {
  const a = getAead(15);
  assert.ok(a);
  return a;
}

describe('NTS extension fields in requests (RFC 8915 §5)', () => {
  it('RFC 8915 §5.7: locates UID, cookie, placeholders and the Authenticator (untrusted stage)', () => {
    const { packet, authenticatorOffset } = buildClientRequest({ ...BASE, placeholders: 2 });
    const r = parseNtsRequest(packet, createNtsRequestScratch());
    assert.ok(r.ok && r.kind === 'nts');
    assert.equal(r.trust, 'untrusted');
    assert.equal(r.uniqueIdFieldOffset, 48);
    assert.equal(r.uniqueIdFieldLength, 36);
    assert.equal(r.cookieOffset, 48 + 36 + 4);
    assert.equal(r.cookieLength, 100);
    assert.equal(r.cleartextPlaceholderCount, 2);
    assert.equal(r.authenticatorOffset, authenticatorOffset);
    assert.equal(r.nonceLength, 16);
    assert.equal(r.ciphertextLength, 16);
    assert.equal(r.additionalPaddingLength, 0);
  });

  it('RFC 8915 §5.3: a packet with only a UID (or no EFs) is plain NTP', () => {
    const header = buildClientRequest(BASE).packet.subarray(0, 48);
    assert.equal(errorOf(parseNtsRequest(header, createNtsRequestScratch())), 'plain');
    const uidOnly = Uint8Array.from([...header, ...ef(EfType.uniqueIdentifier, counting(32))]);
    assert.equal(errorOf(parseNtsRequest(uidOnly, createNtsRequestScratch())), 'plain');
    const mac = Uint8Array.from([...header, ...new Uint8Array(20)]);
    const r = parseNtsRequest(mac, createNtsRequestScratch());
    assert.ok(r.ok && r.kind === 'plain');
    assert.equal(r.trailer, 'legacyMac');
  });

  it('RFC 8915 §5.3: the Unique Identifier body must be at least 32 octets', () => {
    assert.equal(errorOf(parse({ uniqueId: counting(28) })), 'unique_id_too_short');
    assert.equal(errorOf(parse({ uniqueId: counting(32) })), 'nts');
    assert.equal(errorOf(parse({ uniqueId: counting(64) })), 'nts');
  });

  it('RFC 8915 §5.7: exactly one Unique Identifier', () => {
    assert.equal(errorOf(parse({ leadingFields: [ef(EfType.uniqueIdentifier, counting(32))] })), 'duplicate_unique_id');
    const noUid = buildClientRequest(BASE).packet;
    noUid[48] = 0x7f; // retype the UID as an unknown EF
    assert.equal(errorOf(parseNtsRequest(noUid, createNtsRequestScratch())), 'missing_unique_id');
  });

  it('RFC 8915 §5.7: exactly one NTS Cookie', () => {
    assert.equal(errorOf(parse({ leadingFields: [ef(EfType.cookie, counting(100))] })), 'duplicate_cookie');
    const { packet } = buildClientRequest(BASE);
    packet[48 + 36] = 0x7f;
    assert.equal(errorOf(parseNtsRequest(packet, createNtsRequestScratch())), 'missing_cookie');
  });

  it('RFC 8915 §5.7: the Authenticator is required', () => {
    const { packet, authenticatorOffset } = buildClientRequest(BASE);
    packet[authenticatorOffset] = 0x7f;
    assert.equal(errorOf(parseNtsRequest(packet, createNtsRequestScratch())), 'missing_authenticator');
  });

  it('RFC 8915 §5.5: only placeholders as long as the cookie count', () => {
    const r = parse({ placeholders: 3, placeholderLength: 96 });
    assert.ok(r.ok && r.kind === 'nts');
    assert.equal(r.cleartextPlaceholderCount, 0);
    // Placeholders before the cookie count as well.
    const early = parse({ leadingFields: [ef(EfType.cookiePlaceholder, new Uint8Array(100))] });
    assert.ok(early.ok && early.kind === 'nts');
    assert.equal(early.cleartextPlaceholderCount, 1);
  });

  it('RFC 8915 §5.6: inconsistent Authenticator lengths are malformed', () => {
    const { packet, authenticatorOffset } = buildClientRequest(BASE);
    packet[authenticatorOffset + 6] = 0x01; // ciphertext length 256+16 > body
    assert.equal(errorOf(parseNtsRequest(packet, createNtsRequestScratch())), 'malformed_authenticator');
  });

  it('RFC 8915 §5.7: EFs after the Authenticator are not parsed (even broken ones)', () => {
    const r = parse({ trailing: Uint8Array.of(1, 2, 3, 4, 5, 6, 7) });
    assert.ok(r.ok && r.kind === 'nts');
    const uidAfter = parse({ trailing: ef(EfType.uniqueIdentifier, counting(32)) });
    assert.equal(errorOf(uidAfter), 'nts', 'a second UID after the Authenticator is discarded, not a duplicate');
  });

  it('RFC 8915 §5.6: N_REQ is 16 for AES-SIV-CMAC and 12 for AES-GCM-SIV', () => {
    assert.equal(requiredNonceFieldLength(aead15()), 16);
    const gcm = getAead(30);
    assert.ok(gcm);
    assert.equal(requiredNonceFieldLength(gcm), 12);
  });

  it('RFC 8915 §5.6: a short nonce needs additional padding up to N_REQ (servers MUST drop otherwise)', () => {
    const a = aead15();
    const short = parse({ nonce: counting(8) });
    assert.ok(short.ok && short.kind === 'nts');
    assert.equal(satisfiesNoncePadding(short, a), false);
    const padded = parse({ nonce: counting(8), additionalPadding: 8 });
    assert.ok(padded.ok && padded.kind === 'nts');
    assert.equal(satisfiesNoncePadding(padded, a), true);
    const scratch = createNtsRequestScratch();
    const { packet } = buildClientRequest({ ...BASE, nonce: counting(8), additionalPadding: 4 });
    assert.ok(parseNtsRequest(packet, scratch).ok);
    assert.deepEqual(authenticateNtsRequest(packet, scratch, a, a.newCipher(C2S)), { ok: false, error: 'bad_nonce' });
  });

  it('RFC 8915 §5.6: the AD is the packet up to the Authenticator; C2S verifies it (authenticated stage)', () => {
    const a = aead15();
    const scratch = createNtsRequestScratch();
    const { packet } = buildClientRequest({ ...BASE, placeholders: 1, encryptedPlaceholders: 2 });
    assert.ok(parseNtsRequest(packet, scratch).ok);
    const r = authenticateNtsRequest(packet, scratch, a, a.newCipher(C2S));
    assert.ok(r.ok);
    assert.equal(r.trust, 'authenticated');
    assert.equal(r.cleartextPlaceholderCount, 1);
    assert.equal(r.encryptedPlaceholderCount, 2);
    for (const at of [0, 40, 60, 48 + 36 + 10]) {
      const bad = packet.slice();
      bad[at]! ^= 0x01;
      assert.ok(parseNtsRequest(bad, scratch).ok);
      assert.deepEqual(authenticateNtsRequest(bad, scratch, a, a.newCipher(C2S)), { ok: false, error: 'auth_failed' }, `offset ${at}`);
    }
    assert.ok(parseNtsRequest(packet, scratch).ok);
    assert.deepEqual(authenticateNtsRequest(packet, scratch, a, a.newCipher(counting(32))), { ok: false, error: 'auth_failed' });
  });

  it('authenticating requires a parsed request (caller bug)', () => {
    const a = aead15();
    assert.throws(() => authenticateNtsRequest(new Uint8Array(48), createNtsRequestScratch(), a, a.newCipher(C2S)), /parseNtsRequest/);
  });

  it('encodeNtsClientRequest builds requests the parser and an independent AES-SIV accept', () => {
    const a = aead15();
    const out = new Uint8Array(1024);
    const header = new Uint8Array(48);
    header[0] = 0x23;
    const n = encodeNtsClientRequest(
      { header, uniqueId: counting(32), cookie: counting(100), placeholders: 3, aead: a, c2s: a.newCipher(C2S) },
      deterministicRandom(3),
      out,
    );
    assert.equal(n, 48 + 36 + 4 * 104 + 40);
    const scratch = createNtsRequestScratch();
    const p = parseNtsRequest(out.subarray(0, n), scratch);
    assert.ok(p.ok && p.kind === 'nts');
    const r = authenticateNtsRequest(out.subarray(0, n), scratch, a, a.newCipher(C2S));
    assert.ok(r.ok);
    assert.equal(r.cleartextPlaceholderCount, 3);
  });

  it('never throws on random bytes after a header', () => {
    const scratch = createNtsRequestScratch();
    const a = aead15();
    const cipher = a.newCipher(C2S);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 700 }), (b) => {
        const p = Uint8Array.from([...new Uint8Array(48), ...b]);
        const r = parseNtsRequest(p, scratch);
        if (r.ok && r.kind === 'nts') authenticateNtsRequest(p, scratch, a, cipher);
      }),
      { numRuns: 2000, interruptAfterTimeLimit: 4000 },
    );
  });
});
