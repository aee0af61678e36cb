/**
 * A minimal NTS client for tests, written by hand from RFC 8915 §5 (not from the server's encoders), so
 * the server is checked against an independent reading of the wire format.
 */
import { randomFillSync } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { getAead } from '../../src/core/crypto/aead.js';
import { cookieLength, sealCookie } from '../../src/core/nts/cookie.js';
import type { Keyset } from '../../src/core/nts/keyset.js';
import type { ServerFields } from '../../src/core/responder.js';

/** Fixed server fields used by the pool and UDP tests. */
export const TEST_SERVER_FIELDS: ServerFields = Object.freeze({
  leap: 0,
  stratum: 2,
  precision: -20,
  rootDelay: 0x0000_0100,
  rootDispersion: 0x0000_0200,
  referenceId: 0x7f00_0001,
  referenceTime: Object.freeze({ seconds: 3_900_000_000, fraction: 0 }),
});

const EF_UID = 0x0104; // RFC 8915 §5.3
const EF_COOKIE = 0x0204; // §5.4
const EF_PLACEHOLDER = 0x0304; // §5.5
const EF_AUTH = 0x0404; // §5.6
const KISS_NTSN = 0x4e54534e; // §5.7

const pad4 = (n: number): number => (n + 3) & ~3;
const u16 = (b: Uint8Array, o: number): number => ((b[o] ?? 0) << 8) | (b[o + 1] ?? 0);
const u32 = (b: Uint8Array, o: number): number => (((b[o] ?? 0) << 24) | ((b[o + 1] ?? 0) << 16) | ((b[o + 2] ?? 0) << 8) | (b[o + 3] ?? 0)) >>> 0;
const put16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
};

/**
 * A plain NTPv4 client request (RFC 5905 §7.3: LI 0, VN 4, mode 3) with a random transmit timestamp, or the
 * origin, receive and transmit timestamps given (RFC 9769 interleaved requests set all three).
 */
export function plainRequest(version = 4, header: { origin?: Uint8Array; receive?: Uint8Array; transmit?: Uint8Array } = {}): Uint8Array {
  const p = new Uint8Array(48);
  p[0] = (version << 3) | 3;
  if (header.origin !== undefined) p.set(header.origin, 24);
  if (header.receive !== undefined) p.set(header.receive, 32);
  if (header.transmit !== undefined) p.set(header.transmit, 40);
  else randomFillSync(p.subarray(40, 48));
  return p;
}

/** Session keys and a cookie for AEAD 15 (AES-SIV-CMAC-256), sealed under `keyset.current`. */
export interface TestSession {
  readonly c2s: Uint8Array;
  readonly s2c: Uint8Array;
  readonly cookie: Uint8Array;
}

/** Picks C2S/S2C and seals a cookie with core's sealCookie (RFC 8915 §6). */
export function newSession(keyset: Keyset): TestSession {
  const c2s = randomFillSync(new Uint8Array(32));
  const s2c = randomFillSync(new Uint8Array(32));
  const cookie = new Uint8Array(cookieLength(15));
  sealCookie(keyset, 15, c2s, s2c, (b) => randomFillSync(b), cookie, 0);
  return { c2s, s2c, cookie };
}

/** A built NTS request and what the reply must echo. */
export interface TestNtsRequest {
  readonly packet: Uint8Array;
  readonly uniqueId: Uint8Array;
  readonly transmit: Uint8Array;
  readonly placeholders: number;
}

/**
 * RFC 8915 §5.7 client request: header, Unique Identifier (32 octets), Cookie, `placeholders`
 * placeholders of the cookie's length, then the Authenticator (16-octet nonce, empty plaintext, tag)
 * computed under C2S over everything before it.
 */
export function ntsRequest(session: TestSession, placeholders = 0, header: { origin?: Uint8Array; receive?: Uint8Array } = {}): TestNtsRequest {
  const cookieField = 4 + pad4(session.cookie.length);
  const total = 48 + 36 + cookieField * (1 + placeholders) + 40;
  const p = new Uint8Array(total);
  p[0] = (4 << 3) | 3;
  // RFC 9769 interleaved requests set origin and receive too (authenticated like the rest of the header).
  if (header.origin !== undefined) p.set(header.origin, 24);
  if (header.receive !== undefined) p.set(header.receive, 32);
  randomFillSync(p.subarray(40, 48));
  let at = 48;
  put16(p, at, EF_UID);
  put16(p, at + 2, 36);
  randomFillSync(p.subarray(at + 4, at + 36));
  at += 36;
  put16(p, at, EF_COOKIE);
  put16(p, at + 2, cookieField);
  p.set(session.cookie, at + 4);
  at += cookieField;
  for (let i = 0; i < placeholders; i++) {
    put16(p, at, EF_PLACEHOLDER);
    put16(p, at + 2, cookieField);
    at += cookieField;
  }
  const authAt = at;
  put16(p, at, EF_AUTH);
  put16(p, at + 2, 40);
  put16(p, at + 4, 16);
  put16(p, at + 6, 16);
  const nonce = p.subarray(at + 8, at + 24);
  randomFillSync(nonce);
  const aead = getAead(15);
  if (aead === undefined) throw new Error('AEAD 15 missing');
  aead.newCipher(session.c2s).seal(nonce, p.subarray(0, authAt), new Uint8Array(0), p, at + 24);
  return { packet: p, uniqueId: p.slice(52, 84), transmit: p.slice(40, 48), placeholders };
}

/** What a valid NTS reply contained. */
export interface CheckedNtsReply {
  readonly kind: 'time';
  readonly stratum: number;
  readonly cookies: readonly Uint8Array[];
}

/** A checked NAK. */
export interface CheckedNak {
  readonly kind: 'nak';
}

/**
 * Verifies a reply to `req` per RFC 8915 §5.7: mode 4, origin = our transmit, the UID echoed, then an
 * Authenticator that opens under S2C whose plaintext holds only NTS Cookie EFs; or a NAK (stratum 0,
 * refid NTSN) carrying exactly the UID and nothing else. Throws (test failure) on anything else.
 */
export function checkNtsReply(reply: Uint8Array, req: TestNtsRequest, session: TestSession): CheckedNtsReply | CheckedNak {
  if (reply.length > req.packet.length) throw new Error(`reply ${reply.length} > request ${req.packet.length}`);
  if (reply.length < 48) throw new Error('reply shorter than a header');
  if (((reply[0] ?? 0) & 7) !== 4) throw new Error('reply is not mode 4');
  if (Buffer.compare(reply.subarray(24, 32), req.transmit) !== 0) throw new Error('origin does not echo transmit');
  // First EF: the Unique Identifier, byte for byte (§5.3).
  if (u16(reply, 48) !== EF_UID || u16(reply, 50) !== 36) throw new Error('first EF is not our UID');
  if (Buffer.compare(reply.subarray(52, 84), req.uniqueId) !== 0) throw new Error('UID not echoed');
  if (reply[1] === 0) {
    if (u32(reply, 12) !== KISS_NTSN) throw new Error('stratum 0 without NTSN');
    if (reply.length !== 84) throw new Error('NAK carries more than the UID (§5.7)');
    return { kind: 'nak' };
  }
  const at = 84;
  if (u16(reply, at) !== EF_AUTH) throw new Error('second EF is not the Authenticator');
  const fieldLength = u16(reply, at + 2);
  if (at + fieldLength !== reply.length) throw new Error('Authenticator does not end the reply');
  const nonceLength = u16(reply, at + 4);
  const ctLength = u16(reply, at + 6);
  const nonce = reply.subarray(at + 8, at + 8 + nonceLength);
  const ct = reply.subarray(at + 8 + pad4(nonceLength), at + 8 + pad4(nonceLength) + ctLength);
  const aead = getAead(15);
  if (aead === undefined) throw new Error('AEAD 15 missing');
  const plain = new Uint8Array(ctLength);
  const end = aead.newCipher(session.s2c).open(nonce, reply.subarray(0, at), ct, plain, 0);
  if (end < 0) throw new Error('Authenticator does not verify under S2C');
  const cookies: Uint8Array[] = [];
  for (let p = 0; p < end; ) {
    const type = u16(plain, p);
    const len = u16(plain, p + 2);
    if (type !== EF_COOKIE || len < 4 || p + len > end) throw new Error('encrypted EF is not a cookie');
    cookies.push(plain.slice(p + 4, p + len));
    p += len;
  }
  return { kind: 'time', stratum: reply[1] ?? 0, cookies };
}

/** A UDP client socket that collects replies. */
export interface TestUdpClient {
  readonly socket: Socket;
  /** Sends and waits for one reply (rejects after `timeoutMs`). */
  exchange(packet: Uint8Array, port: number, timeoutMs?: number): Promise<Uint8Array>;
  /** Sends without waiting. */
  send(packet: Uint8Array, port: number): Promise<void>;
  /** Every reply received so far. */
  readonly replies: Uint8Array[];
  close(): Promise<void>;
}

/** Opens a loopback UDP client. */
export async function openTestClient(): Promise<TestUdpClient> {
  const socket = createSocket({ type: 'udp4', recvBufferSize: 1 << 20 });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  const replies: Uint8Array[] = [];
  let waiter: ((b: Uint8Array) => void) | undefined;
  socket.on('message', (msg: Buffer) => {
    const copy = new Uint8Array(msg);
    replies.push(copy);
    const w = waiter;
    waiter = undefined;
    w?.(copy);
  });
  const send = (packet: Uint8Array, port: number): Promise<void> =>
    new Promise((resolve, reject) => socket.send(packet, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
  return {
    socket,
    replies,
    send,
    async exchange(packet, port, timeoutMs = 2000) {
      const got = new Promise<Uint8Array>((resolve, reject) => {
        const t = setTimeout(() => {
          waiter = undefined;
          reject(new Error('no reply within timeout'));
        }, timeoutMs);
        waiter = (b) => {
          clearTimeout(t);
          resolve(b);
        };
      });
      await send(packet, port);
      return got;
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** Polls `predicate` every few ms until true; rejects after `timeoutMs`. */
export async function waitFor(predicate: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
