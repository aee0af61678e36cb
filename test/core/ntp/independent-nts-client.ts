/**
 * An NTS client written from RFC 8915 §5 and RFC 7822 for tests only. It deliberately imports nothing
 * from src/: packets are assembled octet by octet and the AEADs come straight from @noble/ciphers, so
 * a shared misunderstanding between this client and the server code is less likely.
 */
import assert from 'node:assert/strict';
import { aessiv, gcmsiv } from '@noble/ciphers/aes.js';

/** NTS extension field types (RFC 8915 §7.5). */
export const EfType = {
  uniqueIdentifier: 0x0104,
  cookie: 0x0204,
  cookiePlaceholder: 0x0304,
  authenticator: 0x0404,
} as const;

/** "NTSN" as a big-endian u32 (RFC 8915 §5.7). */
export const NTSN = 0x4e54534e;

function pad4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

function u16(n: number): number[] {
  return [(n >> 8) & 0xff, n & 0xff];
}

function readU16(b: Uint8Array, o: number): number {
  return ((b[o] ?? 0) << 8) | (b[o + 1] ?? 0);
}

function readU32(b: Uint8Array, o: number): number {
  return (((b[o] ?? 0) << 24) | ((b[o + 1] ?? 0) << 16) | ((b[o + 2] ?? 0) << 8) | (b[o + 3] ?? 0)) >>> 0;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** One extension field: type, length (header included), body, zero padding to 4 (RFC 7822 §3). `length` overrides. */
export function ef(type: number, body: Uint8Array, length?: number): Uint8Array {
  const total = length ?? 4 + pad4(body.length);
  const out = new Uint8Array(total);
  out.set([...u16(type), ...u16(total)], 0);
  out.set(body.subarray(0, Math.max(0, total - 4)), 4);
  return out;
}

/** AEAD seal per RFC 5297 §3 (SIV: S2V over AD then nonce, output V || C) or RFC 8452 (GCM-SIV: C || tag). */
export function aeadSeal(aeadId: number, key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  if (aeadId === 30) return gcmsiv(key, nonce, ad).encrypt(plaintext);
  return aessiv(key, ad, nonce).encrypt(plaintext);
}

/** AEAD open; undefined when the tag does not verify. */
export function aeadOpen(
  aeadId: number,
  key: Uint8Array,
  nonce: Uint8Array,
  ad: Uint8Array,
  ciphertext: Uint8Array,
): Uint8Array | undefined {
  try {
    if (aeadId === 30) return gcmsiv(key, nonce, ad).decrypt(ciphertext);
    return aessiv(key, ad, nonce).decrypt(ciphertext);
  } catch {
    return undefined;
  }
}

/** What the client puts in one request. */
export interface ClientRequestSpec {
  readonly version?: number;
  readonly mode?: number;
  readonly poll?: number;
  /** Client transmit timestamp (8 octets), echoed as the reply's origin (RFC 5905 §8). */
  readonly transmit: Uint8Array;
  /** Origin and receive timestamps (8 octets each; zero when absent): RFC 9769 interleaved requests set both. */
  readonly origin?: Uint8Array;
  readonly receive?: Uint8Array;
  readonly uniqueId: Uint8Array;
  readonly cookie: Uint8Array;
  /** Cleartext placeholders (RFC 8915 §5.5). */
  readonly placeholders?: number;
  /** Placeholder body length; defaults to the cookie length (§5.5). */
  readonly placeholderLength?: number;
  /** Placeholders inside the encrypted part. */
  readonly encryptedPlaceholders?: number;
  readonly aeadId: number;
  readonly c2s: Uint8Array;
  readonly nonce: Uint8Array;
  /** Additional padding octets at the end of the Authenticator body (§5.6). */
  readonly additionalPadding?: number;
  /** Extra EFs (already encoded) placed before the UID. */
  readonly leadingFields?: readonly Uint8Array[];
  /** Raw octets appended after the Authenticator (unauthenticated, §5.7). */
  readonly trailing?: Uint8Array;
}

/** A built request plus what a client remembers to check the reply. */
export interface ClientRequest {
  readonly packet: Uint8Array;
  readonly authenticatorOffset: number;
}

/** Builds an NTS request per RFC 8915 §5.7 (client side). */
export function buildClientRequest(spec: ClientRequestSpec): ClientRequest {
  const header = new Uint8Array(48);
  header[0] = ((spec.version ?? 4) << 3) | (spec.mode ?? 3);
  header[2] = spec.poll ?? 6;
  header.set(spec.transmit, 40);
  if (spec.origin !== undefined) header.set(spec.origin, 24);
  if (spec.receive !== undefined) header.set(spec.receive, 32);
  const placeholderBody = new Uint8Array(spec.placeholderLength ?? spec.cookie.length);
  const fields: Uint8Array[] = [header, ...(spec.leadingFields ?? [])];
  fields.push(ef(EfType.uniqueIdentifier, spec.uniqueId));
  fields.push(ef(EfType.cookie, spec.cookie));
  for (let i = 0; i < (spec.placeholders ?? 0); i++) fields.push(ef(EfType.cookiePlaceholder, placeholderBody));
  const ad = concat(fields);
  const inner: Uint8Array[] = [];
  for (let i = 0; i < (spec.encryptedPlaceholders ?? 0); i++) inner.push(ef(EfType.cookiePlaceholder, placeholderBody));
  const ciphertext = aeadSeal(spec.aeadId, spec.c2s, spec.nonce, ad, concat(inner));
  const body = new Uint8Array(4 + pad4(spec.nonce.length) + pad4(ciphertext.length) + (spec.additionalPadding ?? 0));
  body.set([...u16(spec.nonce.length), ...u16(ciphertext.length)], 0);
  body.set(spec.nonce, 4);
  body.set(ciphertext, 4 + pad4(spec.nonce.length));
  const auth = ef(EfType.authenticator, body);
  const packet = concat([ad, auth, spec.trailing ?? new Uint8Array(0)]);
  return { packet, authenticatorOffset: ad.length };
}

/** Extension fields of a packet from offset 48, parsed with RFC 7822 framing (no MAC expected). */
export function splitFields(packet: Uint8Array, from = 48, to = packet.length): { type: number; offset: number; body: Uint8Array }[] {
  const out: { type: number; offset: number; body: Uint8Array }[] = [];
  let o = from;
  while (o < to) {
    const type = readU16(packet, o);
    const len = readU16(packet, o + 2);
    assert.ok(len >= 4 && len % 4 === 0 && o + len <= to, `bad EF framing at ${o}`);
    out.push({ type, offset: o, body: packet.subarray(o + 4, o + len) });
    o += len;
  }
  return out;
}

/** What a client learns from a verified reply. */
export interface VerifiedReply {
  readonly stratum: number;
  readonly leap: number;
  readonly version: number;
  readonly cookies: Uint8Array[];
  readonly nonce: Uint8Array;
}

/**
 * Verifies a server reply the way an RFC 8915 §5.7 client does: mode 4, origin = our transmit, UID
 * matches, exactly one Authenticator verifying under S2C over everything before it, and new cookies
 * only inside the encrypted part.
 */
export function verifyServerReply(
  reply: Uint8Array,
  expect: { aeadId: number; s2c: Uint8Array; uniqueId: Uint8Array; transmit: Uint8Array },
): VerifiedReply {
  assert.ok(reply.length >= 48, 'reply shorter than an NTP header');
  assert.equal(reply[0]! & 7, 4, 'mode 4');
  assert.deepEqual(reply.subarray(24, 32), expect.transmit, 'origin timestamp = client transmit');
  const fields = splitFields(reply);
  const uids = fields.filter((f) => f.type === EfType.uniqueIdentifier);
  assert.equal(uids.length, 1, 'one Unique Identifier');
  assert.deepEqual(uids[0]!.body.subarray(0, expect.uniqueId.length), expect.uniqueId, 'UID echoed');
  const auths = fields.filter((f) => f.type === EfType.authenticator);
  assert.equal(auths.length, 1, 'one Authenticator');
  assert.equal(fields.filter((f) => f.type === EfType.cookie).length, 0, 'no cleartext cookies');
  const auth = auths[0]!;
  assert.ok(uids[0]!.offset < auth.offset, 'UID is before the Authenticator (authenticated)');
  const nonceLen = readU16(auth.body, 0);
  const ctLen = readU16(auth.body, 2);
  const nonce = auth.body.subarray(4, 4 + nonceLen);
  const ct = auth.body.subarray(4 + pad4(nonceLen), 4 + pad4(nonceLen) + ctLen);
  const plain = aeadOpen(expect.aeadId, expect.s2c, nonce, reply.subarray(0, auth.offset), ct);
  assert.ok(plain, 'reply authenticates under S2C');
  const cookies = splitFields(plain, 0).map((f) => {
    assert.equal(f.type, EfType.cookie, 'only cookies inside the encrypted part');
    return f.body;
  });
  return {
    stratum: reply[1]!,
    leap: reply[0]! >> 6,
    version: (reply[0]! >> 3) & 7,
    cookies,
    nonce,
  };
}

/** Checks an NTS NAK (RFC 8915 §5.7): KoD stratum 0, refid NTSN, only the UID, and returns its EFs. */
export function verifyNak(reply: Uint8Array, expect: { uniqueId: Uint8Array; transmit: Uint8Array }): void {
  assert.equal(reply[0]! & 7, 4, 'mode 4');
  assert.equal(reply[1], 0, 'stratum 0 (Kiss-o-Death)');
  assert.equal(readU32(reply, 12), NTSN, 'refid NTSN');
  assert.deepEqual(reply.subarray(24, 32), expect.transmit, 'origin timestamp = client transmit');
  const fields = splitFields(reply);
  assert.equal(fields.length, 1, 'exactly one EF');
  assert.equal(fields[0]!.type, EfType.uniqueIdentifier, 'and it is the Unique Identifier');
  assert.deepEqual(fields[0]!.body.subarray(0, expect.uniqueId.length), expect.uniqueId, 'UID echoed');
}

/** Deterministic byte source (xorshift32) standing in for a CSPRNG in tests. */
export function deterministicRandom(seed: number): (target: Uint8Array) => void {
  let x = seed >>> 0 || 1;
  return (target: Uint8Array) => {
    for (let i = 0; i < target.length; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      target[i] = x & 0xff;
    }
  };
}

/** Bytes 0, 1, 2, … of a given length (readable test data). */
export function counting(length: number, start = 0): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (start + i) & 0xff;
  return b;
}
