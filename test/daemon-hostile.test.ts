/**
 * The whole daemon against a hostile network (OPERATIONS.md "Hardening limits"), on 127.0.0.1 only, with a
 * bounded number of packets and connections:
 *  - UDP: odd sizes, random garbage and every malformed NTS shape we could think of (RFC 8915 §5.3–§5.7,
 *    RFC 7822 framing), with worker threads and inline. Every reply is no larger than its request
 *    (RFC 8915 §8.4 amplification), a NAK carries only the Unique Identifier (§5.7), every received packet
 *    is counted as a response or a drop, and a valid request still gets an authenticated answer afterwards.
 *  - NTS-KE: garbage, TLS 1.2, no/wrong ALPN, slowloris connections and an oversize request, while a
 *    good key exchange in the middle of it completes promptly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomFillSync, randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { verifyNtsResponse } from '../src/cli/ntp-client.js';
import type { KeyExchangeResult } from '../src/cli/ke-client.js';
import { getAead, type AeadCipher } from '../src/core/crypto/aead.js';
import { makeTestPki } from './helpers/certs.js';
import {
  delay,
  freePorts,
  keyExchange,
  makeTempDir,
  ntsQuery,
  removeDir,
  sample,
  scrapeMetrics,
  startDaemon,
  sumOf,
  testConfigToml,
  waitForMetrics,
  type MetricSamples,
  type RunningDaemon,
} from './helpers/daemon.js';

// ---------------------------------------------------------------------------------------------------------
// Packet crafting, written here from the RFC text rather than with the project's encoder.

/** NTS extension field types (RFC 8915 §7.6). */
const EF = { uniqueId: 0x0104, cookie: 0x0204, placeholder: 0x0304, authenticator: 0x0404 } as const;
/** "NTSN" kiss code (RFC 8915 §5.7). */
const KISS_NTSN = 0x4e54534e;
/** Largest UDP payload over IPv4. */
const MAX_UDP_PAYLOAD = 65507;

const pad4 = (n: number): number => (n + 3) & ~3;

function u16(n: number): Uint8Array {
  return new Uint8Array([(n >>> 8) & 0xff, n & 0xff]);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function random(n: number): Uint8Array {
  return new Uint8Array(randomBytes(n));
}

/** A 48-octet header: LI 0, given version and mode, random transmit timestamp (RFC 5905 §7.3). */
function ntpHeader(version = 4, mode = 3): Uint8Array {
  const h = new Uint8Array(48);
  h[0] = ((version & 7) << 3) | (mode & 7);
  h[2] = 4; // poll
  randomFillSync(h, 40, 8);
  return h;
}

/** An extension field (RFC 7822 §3): type, length (default: 4 + padded body), body, zero padding. */
function ef(type: number, body: Uint8Array, declaredLength?: number): Uint8Array {
  const out = new Uint8Array(4 + pad4(body.length));
  out.set(u16(type), 0);
  out.set(u16(declaredLength ?? out.length), 2);
  out.set(body, 4);
  return out;
}

interface AuthOptions {
  /** Nonce octets sealed with (default 16). */
  readonly nonceLength?: number;
  /** Nonce octets put on the wire, when they should differ from what was sealed with (random filler). */
  readonly sentNonceLength?: number;
  /** Plaintext to encrypt (default empty). */
  readonly plaintext?: Uint8Array;
  /** Additional padding after the ciphertext (RFC 8915 §5.6). */
  readonly extraPadding?: number;
  /** Lie in the nonce-length field. */
  readonly declaredNonceLength?: number;
  /** Lie in the ciphertext-length field. */
  readonly declaredCiphertextLength?: number;
  /** Flip a bit of the tag after sealing. */
  readonly corruptTag?: boolean;
}

/** The NTS Authenticator and Encrypted Extension Fields EF (RFC 8915 §5.6) over associated data `ad`. */
function authenticator(c2s: AeadCipher, ad: Uint8Array, o: AuthOptions = {}): Uint8Array {
  const sealNonce = random(o.nonceLength ?? 16);
  const plaintext = o.plaintext ?? new Uint8Array(0);
  const ciphertext = new Uint8Array(plaintext.length + 16);
  c2s.seal(sealNonce, ad, plaintext, ciphertext, 0);
  const sent = o.sentNonceLength ?? sealNonce.length;
  const nonce = concat(sealNonce, random(Math.max(0, sent - sealNonce.length))).subarray(0, sent);
  if (o.corruptTag === true) ciphertext[0] = (ciphertext[0] ?? 0) ^ 0x80;
  const body = concat(
    u16(o.declaredNonceLength ?? nonce.length),
    u16(o.declaredCiphertextLength ?? ciphertext.length),
    nonce,
    new Uint8Array(pad4(nonce.length) - nonce.length),
    ciphertext,
    new Uint8Array(pad4(ciphertext.length) - ciphertext.length),
    new Uint8Array(o.extraPadding ?? 0),
  );
  return ef(EF.authenticator, body);
}

/** What the daemon must do with a datagram. */
type Expect = 'time' | 'nak' | 'drop' | 'any';

interface Probe {
  readonly shape: string;
  readonly datagram: Uint8Array;
  readonly expect: Expect;
  /** For 'time': the client state to verify the reply with. */
  readonly verify?: { readonly uniqueId: Uint8Array; readonly s2c: AeadCipher; readonly maxCookies: number };
}

interface Session {
  readonly keys: KeyExchangeResult;
  readonly c2s: AeadCipher;
  readonly s2c: AeadCipher;
}

function session(keys: KeyExchangeResult): Session {
  const aead = getAead(keys.aeadId);
  assert.ok(aead !== undefined);
  return { keys, c2s: aead.newCipher(keys.c2s), s2c: aead.newCipher(keys.s2c) };
}

interface NtsShape {
  readonly header?: Uint8Array;
  readonly uid?: Uint8Array | null;
  readonly cookie?: Uint8Array | null;
  /** EFs between the cookie and the Authenticator. */
  readonly middle?: readonly Uint8Array[];
  /** Options for the Authenticator; null = none. */
  readonly auth?: AuthOptions | null;
  /** EFs or raw octets after the Authenticator. */
  readonly after?: readonly Uint8Array[];
  /** Applied to the packet after sealing. */
  readonly tamper?: (p: Uint8Array) => void;
}

/** Builds a request: header, UID EF, cookie EF, middle EFs, Authenticator over all of that, trailing EFs. */
function ntsRequest(s: Session, shape: NtsShape): { datagram: Uint8Array; uniqueId: Uint8Array } {
  const uniqueId = shape.uid === undefined ? random(32) : (shape.uid ?? new Uint8Array(0));
  const cookie = shape.cookie === undefined ? (s.keys.cookies[0] ?? new Uint8Array(0)) : shape.cookie;
  const ad = concat(
    shape.header ?? ntpHeader(),
    ...(shape.uid === null ? [] : [ef(EF.uniqueId, uniqueId)]),
    ...(cookie === null ? [] : [ef(EF.cookie, cookie)]),
    ...(shape.middle ?? []),
  );
  const datagram = concat(ad, ...(shape.auth === null ? [] : [authenticator(s.c2s, ad, shape.auth ?? {})]), ...(shape.after ?? []));
  shape.tamper?.(datagram);
  return { datagram, uniqueId };
}

/** One probe of a structured NTS shape. */
function ntsProbe(s: Session, name: string, expect: Expect, shape: NtsShape, maxCookies = 8): Probe {
  const { datagram, uniqueId } = ntsRequest(s, shape);
  return expect === 'time' ? { shape: name, datagram, expect, verify: { uniqueId, s2c: s.s2c, maxCookies } } : { shape: name, datagram, expect };
}

/** Every structured shape once (fresh UID, nonce and transmit time each call). */
function structuredProbes(s: Session, s30: Session): Probe[] {
  const cookie = s.keys.cookies[1] ?? new Uint8Array(0);
  const placeholder = (len = cookie.length): Uint8Array => ef(EF.placeholder, new Uint8Array(len));
  const flipped = (i: number): Uint8Array => {
    const c = cookie.slice();
    c[i] = (c[i] ?? 0) ^ 0x01;
    return c;
  };
  const probes: Probe[] = [
    ntsProbe(s, 'valid', 'time', { cookie }, 1),
    ntsProbe(s, 'valid, 3 placeholders', 'time', { cookie, middle: [placeholder(), placeholder(), placeholder()] }, 4),
    ntsProbe(s, 'valid, 20 placeholders (≤ 8 cookies back)', 'time', { cookie, middle: Array.from({ length: 20 }, () => placeholder()) }, 8),
    ntsProbe(s, 'placeholder length mismatch (ignored, §5.5)', 'time', { cookie, middle: [placeholder(cookie.length - 4), placeholder(cookie.length + 8)] }, 1),
    ntsProbe(s, 'placeholder inside the encrypted part', 'time', { cookie, auth: { plaintext: placeholder() } }, 2),
    ntsProbe(s, 'long UID (200 octets)', 'time', { cookie, uid: random(200) }, 1),
    ntsProbe(s, 'unknown EF before the Authenticator', 'time', { cookie, middle: [ef(0x7777, random(24))] }, 1),
    ntsProbe(s, 'EF after the Authenticator (unauthenticated, ignored)', 'any', { cookie, after: [ef(EF.cookie, random(100))] }),
    ntsProbe(s, 'raw octets after the Authenticator', 'any', { cookie, after: [random(7)] }),
    ntsProbe(s, 'short nonce with §5.6 padding', 'time', { cookie, auth: { nonceLength: 4, extraPadding: 12 } }, 1),
    ntsProbe(s, 'short nonce without §5.6 padding', 'drop', { cookie, auth: { nonceLength: 4 } }),
    ntsProbe(s, 'nonce length 0', 'drop', { cookie, auth: { sentNonceLength: 0 } }),
    ntsProbe(s, 'nonce length field beyond the EF', 'drop', { cookie, auth: { declaredNonceLength: 900 } }),
    ntsProbe(s, 'ciphertext length field beyond the EF', 'drop', { cookie, auth: { declaredCiphertextLength: 900 } }),
    ntsProbe(s, 'ciphertext shorter than the tag', 'drop', { cookie, auth: { declaredCiphertextLength: 8 } }),
    ntsProbe(s, 'encrypted part is not a sequence of EFs', 'drop', { cookie, auth: { plaintext: random(7) } }),
    ntsProbe(s, 'tag corrupted', 'nak', { cookie, auth: { corruptTag: true } }),
    ntsProbe(s, 'header changed after sealing', 'nak', { cookie, tamper: (p) => (p[2] = 9) }),
    ntsProbe(s, 'cookie sealed part corrupted', 'nak', { cookie: flipped(cookie.length - 1) }),
    ntsProbe(s, 'cookie key id unknown', 'nak', { cookie: flipped(0) }),
    ntsProbe(s, 'cookie huge (1000 octets)', 'nak', { cookie: random(1000) }),
    ntsProbe(s, 'cookie tiny (4 octets)', 'any', { cookie: random(4) }),
    ntsProbe(s, 'cookie empty', 'any', { cookie: new Uint8Array(0) }),
    ntsProbe(s, 'no Unique Identifier', 'drop', { cookie, uid: null }),
    ntsProbe(s, 'short Unique Identifier (16)', 'drop', { cookie, uid: random(16) }),
    ntsProbe(s, 'duplicate Unique Identifier', 'drop', { cookie, middle: [ef(EF.uniqueId, random(32))] }),
    ntsProbe(s, 'duplicate cookie', 'drop', { cookie, middle: [ef(EF.cookie, cookie)] }),
    ntsProbe(s, 'no cookie', 'drop', { cookie: null }),
    ntsProbe(s, 'no Authenticator', 'drop', { cookie, auth: null }),
    ntsProbe(s, 'no Authenticator, placeholders only', 'drop', { cookie: null, middle: [placeholder()], auth: null }),
    ntsProbe(s, 'two Authenticators', 'any', { cookie, after: [ef(EF.authenticator, random(40))] }),
    ntsProbe(s, 'EF length not a multiple of 4', 'drop', { cookie, middle: [ef(0x7777, random(24), 25)] }),
    ntsProbe(s, 'EF length 0', 'drop', { cookie, middle: [ef(0x7777, random(24), 0)] }),
    ntsProbe(s, 'EF length beyond the packet', 'drop', { cookie, middle: [ef(0x7777, random(24), 4000)] }),
    ntsProbe(s, 'NTPv3 with NTS EFs', 'drop', { cookie, header: ntpHeader(3, 3) }),
    ntsProbe(s, 'NTPv2 with NTS EFs', 'drop', { cookie, header: ntpHeader(2, 3) }),
    ntsProbe(s30, 'AES-128-GCM-SIV valid', 'time', { cookie: s30.keys.cookies[0] ?? null, auth: { nonceLength: 12 } }, 1),
    ntsProbe(s30, 'AES-128-GCM-SIV with a 16-octet nonce', 'drop', { cookie: s30.keys.cookies[0] ?? null, auth: { nonceLength: 12, sentNonceLength: 16 } }),
    ntsProbe(s, 'cookie of another session (wrong C2S)', 'nak', { cookie: s30.keys.cookies[1] ?? null, auth: { nonceLength: 12 } }),
  ];
  for (const mode of [0, 1, 2, 4, 5, 6, 7]) {
    probes.push(ntsProbe(s, `mode ${mode} with NTS EFs`, 'drop', { cookie, header: ntpHeader(4, mode) }));
    probes.push({ shape: `mode ${mode}, bare header`, datagram: ntpHeader(4, mode), expect: 'drop' });
  }
  for (const version of [0, 1, 5, 6, 7]) probes.push({ shape: `version ${version} client`, datagram: ntpHeader(version, 3), expect: 'drop' });
  probes.push({ shape: 'NTPv3 bare', datagram: ntpHeader(3, 3), expect: 'time' });
  probes.push({ shape: 'NTPv4 bare', datagram: ntpHeader(4, 3), expect: 'time' });
  probes.push({ shape: 'NTPv4 + legacy MAC (20)', datagram: concat(ntpHeader(), random(20)), expect: 'drop' });
  probes.push({ shape: 'NTPv4 + legacy MAC (24)', datagram: concat(ntpHeader(), random(24)), expect: 'drop' });
  probes.push({ shape: 'NTPv4 + crypto-NAK', datagram: concat(ntpHeader(), new Uint8Array(4)), expect: 'drop' });
  probes.push({ shape: 'NTPv3 + 8 octets', datagram: concat(ntpHeader(3, 3), random(8)), expect: 'drop' });
  return probes;
}

/** A valid request cut short at every length between the header and the full packet. */
function truncationProbes(s: Session): Probe[] {
  const { datagram } = ntsRequest(s, { cookie: s.keys.cookies[2] ?? null, middle: [ef(EF.placeholder, new Uint8Array(100))] });
  const probes: Probe[] = [];
  for (let cut = 49; cut < datagram.length; cut += 1) {
    const d = datagram.slice(0, cut);
    randomFillSync(d, 40, 8); // distinct transmit time per probe, to match replies
    // Cut right after the Unique Identifier EF, what is left is a plain NTPv4 request with one EF that
    // plain NTP ignores (RFC 7822): a 48-octet time reply is right. Every other cut breaks the framing.
    probes.push({ shape: `truncated to ${cut}`, datagram: d, expect: cut === 48 + 4 + 32 ? 'time' : 'drop' });
  }
  return probes;
}

/** Datagrams of the sizes in the brief: random content, and a client header padded with zeros. */
function sizeProbes(): Probe[] {
  const probes: Probe[] = [];
  for (const size of [0, 1, 47, 48, 49, 200, 1000, 1500, MAX_UDP_PAYLOAD]) {
    probes.push({ shape: `random ${size}`, datagram: random(size), expect: size < 48 ? 'drop' : 'any' });
    const zeros = new Uint8Array(size);
    if (size >= 48) zeros.set(ntpHeader());
    probes.push({ shape: `client header + zeros ${size}`, datagram: zeros, expect: size < 48 ? 'drop' : size === 48 ? 'time' : 'drop' });
  }
  return probes;
}

/** A valid request with one random octet changed (anything may happen except a bigger reply). */
function mutationProbe(s: Session): Probe {
  const { datagram } = ntsRequest(s, { cookie: s.keys.cookies[3] ?? null, middle: [ef(EF.placeholder, new Uint8Array(100))] });
  const i = randomInt(datagram.length);
  datagram[i] = (datagram[i] ?? 0) ^ (1 + randomInt(255));
  return { shape: `mutated at ${i}`, datagram, expect: 'any' };
}

function garbageProbe(): Probe {
  return { shape: 'garbage', datagram: random(randomInt(1, 600)), expect: 'any' };
}

const keyOf = (p: Uint8Array, offset: number): string => Buffer.from(p.subarray(offset, offset + 8)).toString('hex');

interface StormResult {
  readonly sent: number;
  readonly replies: number;
  readonly problems: string[];
}

/** Sends every probe (paced so loopback buffers never overflow) and checks each reply against its request. */
async function storm(ntpPort: number, probes: readonly Probe[]): Promise<StormResult> {
  const socket = createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const byTransmit = new Map<string, Probe>();
  const replied = new Map<Probe, Uint8Array>();
  const waiting = new Map<Probe, () => void>();
  const problems: string[] = [];
  let replies = 0;
  let sent = 0;
  socket.on('message', (msg) => {
    replies++;
    const reply = new Uint8Array(msg);
    const probe = reply.length >= 48 ? byTransmit.get(keyOf(reply, 24)) : undefined;
    if (probe === undefined) {
      problems.push(`reply of ${reply.length} octets matches no request`);
      return;
    }
    if (replied.has(probe)) problems.push(`${probe.shape}: more than one reply`);
    replied.set(probe, reply);
    waiting.get(probe)?.();
  });
  const register = (p: Probe): void => {
    if (p.datagram.length < 48) return;
    const key = keyOf(p.datagram, 40);
    if (byTransmit.has(key)) throw new Error('transmit timestamp collision in the test');
    byTransmit.set(key, p);
  };
  for (const p of probes) register(p);
  const send = (p: Probe): void => {
    socket.send(p.datagram, ntpPort, '127.0.0.1');
    sent++;
  };

  // Flow control without trusting timing (the machine is shared): after each batch of at most ~48 KiB
  // (counted with per-packet overhead; the daemon's socket buffer is the OS default, ~200 KiB), a plain
  // NTPv4 request is sent and its reply awaited. The daemon reads its socket in order, so that reply
  // means the whole batch left the buffer: a kernel loss cannot blur the accounting below.
  const sentinels: Probe[] = [];
  const barrier = async (): Promise<void> => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const p: Probe = { shape: 'sentinel (plain NTPv4)', datagram: ntpHeader(4, 3), expect: 'any' };
      register(p);
      sentinels.push(p);
      const answered = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 3000);
        waiting.set(p, () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      send(p);
      if (await answered) return;
    }
    problems.push('the daemon stopped answering plain NTP requests');
  };
  let batchBytes = 0;
  for (const p of probes) {
    const cost = p.datagram.length + 1024;
    if (batchBytes > 0 && batchBytes + cost > 48 * 1024) {
      await barrier();
      batchBytes = 0;
    }
    send(p);
    batchBytes += cost;
  }
  await barrier();
  // Replies from worker threads may trail the last barrier's by a little.
  let seen = -1;
  for (let i = 0; i < 20 && seen !== replies; i++) {
    seen = replies;
    await delay(50);
  }
  socket.close();
  for (const p of sentinels) if (!replied.has(p)) problems.push('a sentinel got no reply');

  for (const p of probes) {
    const reply = replied.get(p);
    if (reply !== undefined && reply.length > p.datagram.length) {
      problems.push(`${p.shape}: reply ${reply.length} octets > request ${p.datagram.length} (amplification)`);
    }
    if (reply !== undefined && ((reply[0] ?? 0) & 7) !== 4) problems.push(`${p.shape}: reply is not mode 4`);
    const isNak = reply !== undefined && reply[1] === 0 && Buffer.from(reply.subarray(12, 16)).readUInt32BE(0) === KISS_NTSN;
    if (isNak) {
      // RFC 8915 §5.7: the NAK is the header plus the request's Unique Identifier EF, nothing else.
      const echoed = reply.subarray(48);
      const type = echoed.length >= 4 ? (echoed[0] ?? 0) * 256 + (echoed[1] ?? 0) : -1;
      const len = echoed.length >= 4 ? (echoed[2] ?? 0) * 256 + (echoed[3] ?? 0) : -1;
      const requestHex = Buffer.from(p.datagram).toString('hex');
      if (type !== EF.uniqueId || len !== echoed.length || !requestHex.includes(Buffer.from(echoed).toString('hex'))) {
        problems.push(`${p.shape}: NAK carries more or other than the request's Unique Identifier EF (${echoed.length} octets)`);
      }
    }
    switch (p.expect) {
      case 'drop':
        if (reply !== undefined) problems.push(`${p.shape}: expected a drop, got a ${reply.length}-octet reply`);
        break;
      case 'nak':
        if (!isNak) problems.push(`${p.shape}: expected an NTS NAK, got ${reply === undefined ? 'nothing' : `${reply.length} octets, stratum ${String(reply[1])}`}`);
        break;
      case 'time':
        if (reply === undefined || isNak) {
          problems.push(`${p.shape}: expected a time reply, got ${reply === undefined ? 'nothing' : 'a NAK'}`);
        } else if (p.verify !== undefined) {
          const transmitTime = { seconds: Buffer.from(p.datagram).readUInt32BE(40), fraction: Buffer.from(p.datagram).readUInt32BE(44) };
          const checked = verifyNtsResponse(reply, { uniqueId: p.verify.uniqueId, transmitTime, s2cCipher: p.verify.s2c });
          if (!checked.ok) problems.push(`${p.shape}: reply does not verify: ${checked.error}`);
          else if (checked.response.cookies.length < 1 || checked.response.cookies.length > p.verify.maxCookies) {
            problems.push(`${p.shape}: ${checked.response.cookies.length} cookies, expected 1..${p.verify.maxCookies}`);
          }
        } else if (reply.length !== 48) {
          problems.push(`${p.shape}: plain time reply of ${reply.length} octets`);
        }
        break;
      case 'any':
        break;
    }
  }
  return { sent, replies, problems };
}

/** Total probes per daemon: the brief's bound. */
const PROBE_BUDGET = 2000;

function buildProbes(s: Session, s30: Session): Probe[] {
  const probes: Probe[] = [...sizeProbes(), ...truncationProbes(s)];
  for (let round = 0; round < 10; round++) probes.push(...structuredProbes(s, s30));
  for (let i = 0; i < 150; i++) probes.push(garbageProbe());
  while (probes.length < PROBE_BUDGET) probes.push(mutationProbe(s));
  // Interleave, so that the shapes hit the pool's batches in every order.
  for (let i = probes.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    const tmp = probes[i];
    probes[i] = probes[j] as Probe;
    probes[j] = tmp as Probe;
  }
  return probes.slice(0, PROBE_BUDGET);
}

async function startHostileDaemon(t: { after(fn: () => Promise<void> | void): void }, threads: number, extra: readonly string[] = [], timeoutMs?: number) {
  const dir = makeTempDir(`hostile-${threads}`);
  const pki = makeTestPki();
  const ports = await freePorts();
  let daemon: RunningDaemon | undefined;
  t.after(async () => {
    await daemon?.stop('SIGKILL', 2000);
    removeDir(dir);
    pki.cleanup();
  });
  daemon = await startDaemon({
    dir,
    toml: testConfigToml({
      ...ports,
      certPath: pki.chainPath,
      keyPath: pki.keyPath,
      threads,
      keExtra: extra,
      ...(timeoutMs === undefined ? {} : { keyExchangeTimeoutMs: timeoutMs }),
    }),
  });
  return { d: daemon, pki, ...ports };
}

function errorLines(d: RunningDaemon): string[] {
  return d.lines().filter((l) => l['level'] === 'error' || l['level'] === 'fatal').map((l) => JSON.stringify(l));
}

for (const threads of [1, 2]) {
  test(`hostile UDP: ${PROBE_BUDGET} malformed, odd-sized and garbage datagrams (threads = ${threads})`, { timeout: 60_000 }, async (t) => {
    const { d, pki, ntpPort } = await startHostileDaemon(t, threads);
    const at = d.metrics;
    assert.ok(at !== undefined);
    const s = session(await keyExchange(d, pki.caPem, { aeadIds: [15] }));
    const s30 = session(await keyExchange(d, pki.caPem, { aeadIds: [30] }));
    const probes = buildProbes(s, s30);
    const before = await scrapeMetrics(at);

    const startedAt = performance.now();
    const result = await storm(ntpPort, probes);
    const elapsedMs = performance.now() - startedAt;
    t.diagnostic(`${result.sent} datagrams, ${result.replies} replies, ${elapsedMs.toFixed(0)} ms`);
    assert.ok(elapsedMs < 10_000, `storm took ${elapsedMs.toFixed(0)} ms`);
    assert.ok(result.replies > 200 && result.replies < result.sent, 'the mix holds both answered and dropped datagrams');

    // Every datagram reached the daemon and is counted as exactly one response or one drop.
    const received0 = sample(before, 'ntsd_ntp_packets_received_total');
    const after: MetricSamples = await waitForMetrics(
      at,
      'all datagrams accounted for',
      (m) =>
        sample(m, 'ntsd_ntp_packets_received_total') - received0 === result.sent &&
        sumOf(m, 'ntsd_ntp_responses_total') + sumOf(m, 'ntsd_ntp_dropped_total') === sample(m, 'ntsd_ntp_packets_received_total'),
      8000,
    );
    const delta = (name: string): number => sumOf(after, name) - sumOf(before, name);
    const drops = [...after].filter(([k]) => k.startsWith('ntsd_ntp_dropped_total')).map(([k, v]) => `${k} ${v}`);
    assert.deepEqual(result.problems.slice(0, 20), [], `${result.problems.length} problems; responses counted ${delta('ntsd_ntp_responses_total')}, replies seen ${result.replies}; ${drops.join(', ')}`);
    assert.equal(delta('ntsd_ntp_responses_total'), result.replies, 'responses counted = replies seen');
    assert.equal(delta('ntsd_ntp_dropped_total'), result.sent - result.replies, 'drops counted = datagrams without a reply');
    assert.ok(sample(after, 'ntsd_ntp_dropped_total{reason="malformed"}') > 0);
    assert.ok(sample(after, 'ntsd_ntp_dropped_total{reason="policy"}') > 0);
    assert.ok(sumOf(after, 'ntsd_nts_nak_total') > 0);
    assert.equal(sample(after, 'ntsd_worker_restarts_total'), 0, 'no worker died');

    // Still alive, still correct.
    assert.ok(d.running());
    const fresh = await ntsQuery(s.keys, s.keys.cookies[4] ?? new Uint8Array(0), 1);
    assert.ok(fresh.ok, `a valid request after the storm: ${fresh.ok ? '' : fresh.failure.message}`);
    assert.deepEqual(errorLines(d), [], 'no error-level log lines (a responder bug would log one)');
    assert.ok(!d.lines().some((l) => l['level'] === 'info' && String(l['msg']).toLowerCase().includes('packet')), 'packets never trigger info logs');
    const stopped = await d.stop();
    assert.equal(stopped.exitCode, 0);
  });
}

// ---------------------------------------------------------------------------------------------------------
// NTS-KE.

/** A TCP connection that sends `bytes` (if any) and then stalls. */
function rawConnection(port: number, bytes?: Uint8Array): Promise<Socket> {
  return new Promise((resolve) => {
    const s = netConnect({ host: '127.0.0.1', port }, () => {
      if (bytes !== undefined) s.write(bytes);
      resolve(s);
    });
    s.on('error', () => resolve(s));
  });
}

/** What a TLS client observed. */
interface TlsObservation {
  readonly handshake: boolean;
  readonly error: string | undefined;
  readonly received: Uint8Array;
}

/** Runs a TLS client with `options`, writes `send` after the handshake, and reports what came back (bounded by `limitMs`). */
function tlsProbe(port: number, caPem: string, options: { maxVersion?: 'TLSv1.2' | 'TLSv1.3'; alpn?: string[]; send?: Uint8Array }, limitMs: number): Promise<TlsObservation> {
  return new Promise((resolve) => {
    let handshake = false;
    let error: string | undefined;
    const chunks: Buffer[] = [];
    const socket: TLSSocket = tlsConnect(
      {
        host: '127.0.0.1',
        port,
        ca: caPem,
        servername: 'localhost',
        ...(options.maxVersion === undefined ? {} : { maxVersion: options.maxVersion }),
        ...(options.alpn === undefined ? {} : { ALPNProtocols: options.alpn }),
      },
      () => {
        handshake = true;
        if (options.send !== undefined) socket.write(options.send);
      },
    );
    const timer = setTimeout(() => finish(), limitMs);
    const finish = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ handshake, error, received: new Uint8Array(Buffer.concat(chunks)) });
    };
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (e) => {
      error = e.message;
    });
    socket.on('close', finish);
  });
}

/** An NTS-KE record (RFC 8915 §4): critical bit, type, body. */
function keRecord(critical: boolean, type: number, body: Uint8Array): Uint8Array {
  return concat(u16((critical ? 0x8000 : 0) | type), u16(body.length), body);
}

/** Error record "Bad Request" (RFC 8915 §4.1.3: type 2, code 1), as the daemon must start its answer. */
const BAD_REQUEST_PREFIX = Buffer.from(keRecord(true, 2, u16(1))).toString('hex');

test('hostile NTS-KE: garbage, TLS 1.2, no ALPN, 50 slowloris, oversize requests; a good KE still completes within 1 s', { timeout: 60_000 }, async (t) => {
  const { d, pki, kePort } = await startHostileDaemon(t, 1);
  const at = d.metrics;
  assert.ok(at !== undefined);
  const open: Socket[] = [];
  t.after(() => {
    for (const s of open) s.destroy();
  });

  // 50 slowloris connections: 40 stall before or inside the TLS ClientHello, 10 finish TLS and dribble a
  // request: one record header announcing 3840 octets (under the cap), then one octet every 150 ms.
  for (let i = 0; i < 40; i++) open.push(await rawConnection(kePort, i % 2 === 0 ? undefined : new Uint8Array([0x16, 0x03, 0x01])));
  const dribblers = await Promise.all(
    Array.from({ length: 10 }, () =>
      new Promise<TLSSocket>((resolve) => {
        const s = tlsConnect({ host: '127.0.0.1', port: kePort, ca: pki.caPem, servername: 'localhost', ALPNProtocols: ['ntske/1'] }, () => {
          s.write(concat(u16(0x4321), u16(3840)));
          resolve(s);
        });
        s.on('error', () => resolve(s));
      }),
    ),
  );
  open.push(...dribblers);
  const dribble = setInterval(() => {
    for (const s of dribblers) if (s.writable) s.write(new Uint8Array([0]));
  }, 150);
  t.after(() => clearInterval(dribble));

  // Garbage on the raw port (starting like HTTP, so it can never pass for the start of a TLS record).
  for (let i = 0; i < 10; i++) open.push(await rawConnection(kePort, concat(new TextEncoder().encode('GET / HTTP/1.1\r\n'), random(4096))));

  // A good key exchange in the middle of all that.
  const goodMs: number[] = [];
  const good = async (): Promise<void> => {
    const t0 = performance.now();
    const keys = await keyExchange(d, pki.caPem);
    goodMs.push(performance.now() - t0);
    assert.equal(keys.cookies.length, 8);
  };
  await good();

  // TLS 1.2 only: refused during the handshake (RFC 8915 §3: TLS 1.3 or later).
  const tls12 = await tlsProbe(kePort, pki.caPem, { maxVersion: 'TLSv1.2', alpn: ['ntske/1'] }, 3000);
  assert.equal(tls12.handshake, false, 'a TLS 1.2 handshake must fail');
  // No ALPN, or the wrong one: no NTS-KE answer (RFC 8915 §3/§4: ALPN ntske/1 is required).
  const request = concat(keRecord(true, 1, u16(0)), keRecord(true, 4, u16(15)), keRecord(true, 0, new Uint8Array(0)));
  const noAlpn = await tlsProbe(kePort, pki.caPem, { send: request }, 3000);
  assert.equal(noAlpn.received.length, 0, 'no NTS-KE response without ALPN');
  const wrongAlpn = await tlsProbe(kePort, pki.caPem, { alpn: ['http/1.1'], send: request }, 3000);
  assert.equal(wrongAlpn.received.length, 0, 'no NTS-KE response with a wrong ALPN');
  await good();

  // Oversize: 7 KiB of non-critical records and no End of Message, over the 4096-octet cap → Bad Request.
  const oversize = concat(...Array.from({ length: 7 }, () => keRecord(false, 0x4321, random(1020))));
  const big = await tlsProbe(kePort, pki.caPem, { alpn: ['ntske/1'], send: oversize }, 3000);
  assert.ok(big.handshake);
  assert.ok(Buffer.from(big.received).toString('hex').startsWith(BAD_REQUEST_PREFIX), `oversize request answered with Bad Request, got ${Buffer.from(big.received).toString('hex').slice(0, 40)}`);
  // One record that claims 65535 octets.
  const huge = await tlsProbe(kePort, pki.caPem, { alpn: ['ntske/1'], send: concat(u16(0x8001), u16(0xffff), random(2000)) }, 3000);
  assert.ok(Buffer.from(huge.received).toString('hex').startsWith(BAD_REQUEST_PREFIX), 'huge record length answered with Bad Request');
  await good();

  t.diagnostic(`good NTS-KE during the attack: ${goodMs.map((ms) => ms.toFixed(0)).join(', ')} ms`);
  for (const ms of goodMs) assert.ok(ms < 1000, `good NTS-KE took ${ms.toFixed(0)} ms during the attack (${goodMs.map((m) => m.toFixed(0)).join(', ')})`);

  // The stalled sessions end at their deadline (2 s); the daemon is fine afterwards.
  const m = await waitForMetrics(
    at,
    'slowloris sessions timed out and slots freed',
    (s) => sample(s, 'ntsd_ke_sessions_total{outcome="timeout"}') >= 50 && sample(s, 'ntsd_ke_active_connections') === 0,
    8000,
  );
  clearInterval(dribble);
  assert.ok(sample(m, 'ntsd_ke_sessions_total{outcome="tls_error"}') >= 12, 'garbage, TLS 1.2 and ALPN failures are tls_error');
  assert.ok(sample(m, 'ntsd_ke_sessions_total{outcome="bad_request"}') >= 2, 'oversize requests are bad_request');
  assert.equal(sample(m, 'ntsd_ke_sessions_total{outcome="success"}'), 3);
  assert.equal(sample(m, 'ntsd_ke_sessions_total{outcome="internal_error"}'), 0);
  const sessions = sumOf(m, 'ntsd_ke_sessions_total');
  assert.equal(sessions, sample(m, 'ntsd_ke_connections_accepted_total'), 'every accepted connection ends with exactly one outcome');

  assert.ok(d.running());
  const keys = await keyExchange(d, pki.caPem);
  const q = await ntsQuery(keys, keys.cookies[0] ?? new Uint8Array(0));
  assert.ok(q.ok, 'NTS still works after the KE attack');
  assert.deepEqual(errorLines(d), []);
  const stopped = await d.stop();
  assert.equal(stopped.exitCode, 0);
  assert.ok(stopped.durationMs < 5000);
});
