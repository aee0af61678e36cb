import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import * as net from 'node:net';
import { getPriority } from 'node:os';
import { Writable } from 'node:stream';
import * as tls from 'node:tls';
import { pino } from 'pino';
import { openCookie } from '../../src/core/nts/cookie.js';
import { NTS_EXPORTER_LABEL } from '../../src/core/nts/ids.js';
import { decodeKeMessage, encodeKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';
import { createKeyset, encodeKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { DEFAULTS } from '../../src/config/schema.js';
import { NtsdError } from '../../src/errors.js';
import {
  KE_REJECT_REASONS,
  KE_SESSION_OUTCOMES,
  KE_THREAD_NICENESS,
  KeServer,
  type KeServerOptions,
  type KeRejectReason,
  type KeSessionOutcome,
  type KeStats,
} from '../../src/nts-ke/server.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';

const fillRandom = (b: Uint8Array): void => {
  randomFillSync(b);
};

function newKeyset(): Keyset {
  return createKeyset(Math.floor(Date.now() / 1000), fillRandom, { staleKeyCount: 2 });
}

/** Sums every stats report into totals, and lets a test wait for a condition. */
class StatsTally {
  accepted = 0;
  rejected: Record<KeRejectReason, number> = Object.fromEntries(KE_REJECT_REASONS.map((r) => [r, 0])) as Record<KeRejectReason, number>;
  sessions: Record<KeSessionOutcome, number> = Object.fromEntries(KE_SESSION_OUTCOMES.map((o) => [o, 0])) as Record<
    KeSessionOutcome,
    number
  >;
  durations: number[] = [];
  cookiesIssued = 0;
  active = 0;
  readonly #waiters: (() => void)[] = [];

  add(s: KeStats): void {
    this.accepted += s.accepted;
    for (const r of KE_REJECT_REASONS) this.rejected[r] += s.rejected[r];
    for (const o of KE_SESSION_OUTCOMES) this.sessions[o] += s.sessions[o];
    this.durations.push(...s.sessionDurationsS);
    this.cookiesIssued += s.cookiesIssued;
    this.active = s.activeConnections;
    for (const w of this.#waiters.splice(0)) w();
  }

  async until(predicate: () => boolean, timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`stats condition not met: ${JSON.stringify(this)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

interface Harness {
  readonly server: KeServer;
  readonly port: number;
  readonly stats: StatsTally;
  readonly logs: string[];
}

async function startServer(pki: TestPki, keyset: Keyset, overrides: Partial<KeServerOptions> = {}): Promise<Harness> {
  const logs: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb): void {
      logs.push(chunk.toString());
      cb();
    },
  });
  const server = new KeServer({
    listen: [{ host: '127.0.0.1', port: 0 }],
    certificateChainPem: pki.certPem,
    privateKeyPem: pki.keyPem,
    keyExchangeTimeoutMs: 2000,
    concurrentConnections: 64,
    concurrentConnectionsPerSource: 64,
    maxRequestBytes: 1024,
    clientRateLimit: { intervalS: 0, burst: 8, tableSize: 1024 },
    policy: { aeadIds: [15, 16, 17, 30], ntpPort: 4123 },
    keyset,
    logger: pino({ level: 'warn' }, stream),
    statsIntervalMs: 25,
    ...overrides,
  });
  const stats = new StatsTally();
  server.onStats((s) => stats.add(s));
  const addresses = await server.start();
  const first = addresses[0];
  assert.ok(first !== undefined);
  return { server, port: first.port, stats, logs };
}

const GOOD_REQUEST: readonly KeRecord[] = [
  { kind: 'nextProtocol', critical: true, protocolIds: [0] },
  { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
  { kind: 'endOfMessage', critical: true },
];

interface KeReply {
  /** Every octet the server sent before closing. */
  readonly bytes: Uint8Array;
  /** True when the server sent close_notify/FIN (an orderly end). */
  readonly ended: boolean;
  /** Client-side C2S/S2C for AEAD 15 (RFC 8915 §5.1 contexts), exported right after the handshake. */
  readonly c2s: Uint8Array | undefined;
  readonly s2c: Uint8Array | undefined;
  /** TLS or socket error seen by the client, if any. */
  readonly error: Error | undefined;
  /** Milliseconds from connect to close. */
  readonly elapsedMs: number;
  /** Server certificate serial (hex). */
  readonly serial: string | undefined;
  /** Negotiated TLS cipher suite. */
  readonly cipher: string | undefined;
  /** The TLS session after the server's tickets (for a resumption attempt), and the longest ticket seen. */
  readonly session: Buffer | undefined;
  readonly ticketBytes: number;
  /** True when the server resumed the offered session. */
  readonly resumed: boolean;
}

interface ClientOptions {
  readonly port: number;
  readonly ca: string;
  readonly host?: string;
  /** Bytes to send after the handshake (all at once); undefined = send nothing. */
  readonly send?: Uint8Array | undefined;
  readonly alpn?: string[] | undefined;
  readonly maxVersion?: tls.SecureVersion;
  /** TLS 1.3 suites the client offers, in its order; undefined = Node's default (AES-256-GCM first). */
  readonly ciphers?: string;
  /** A TLS session from an earlier connection to offer for resumption. */
  readonly session?: Buffer;
}

function keClient(options: ClientOptions): Promise<KeReply> {
  const started = Date.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let ended = false;
    let error: Error | undefined;
    let c2s: Uint8Array | undefined;
    let s2c: Uint8Array | undefined;
    let serial: string | undefined;
    let cipher: string | undefined;
    let session: Buffer | undefined;
    let ticketBytes = 0;
    let resumed = false;
    const socket = tls.connect({
      host: options.host ?? '127.0.0.1',
      port: options.port,
      ca: options.ca,
      ...(options.alpn === undefined ? {} : { ALPNProtocols: options.alpn }),
      ...(options.maxVersion === undefined ? {} : { maxVersion: options.maxVersion }),
      ...(options.ciphers === undefined ? {} : { ciphers: options.ciphers }),
      ...(options.session === undefined ? {} : { session: options.session }),
    });
    socket.on('session', (s: Buffer) => {
      session = s;
      ticketBytes = Math.max(ticketBytes, socket.getTLSTicket()?.length ?? 0);
    });
    socket.on('secureConnect', () => {
      serial = socket.getPeerCertificate().serialNumber;
      cipher = socket.getCipher().standardName;
      resumed = socket.isSessionReused();
      // RFC 8915 §5.1: NTPv4 contexts for AEAD 15, one exporter call per direction.
      c2s = socket.exportKeyingMaterial(32, NTS_EXPORTER_LABEL, Buffer.from([0, 0, 0, 15, 0]));
      s2c = socket.exportKeyingMaterial(32, NTS_EXPORTER_LABEL, Buffer.from([0, 0, 0, 15, 1]));
      if (options.send !== undefined) socket.write(options.send);
    });
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('end', () => {
      ended = true;
    });
    socket.on('error', (e) => {
      error = e;
    });
    socket.on('close', () =>
      resolve({
        bytes: new Uint8Array(Buffer.concat(chunks)),
        ended,
        c2s,
        s2c,
        error,
        elapsedMs: Date.now() - started,
        serial,
        cipher,
        session,
        ticketBytes,
        resumed,
      }),
    );
  });
}

function records(bytes: Uint8Array): readonly KeRecord[] {
  const decoded = decodeKeMessage(bytes);
  assert.ok(decoded.ok, `response does not decode: ${Buffer.from(bytes).toString('hex')}`);
  return decoded.records;
}

function errorCodeOf(bytes: Uint8Array): number | undefined {
  const rs = records(bytes);
  assert.equal(rs.length, 2, 'an error response is one Error record and End of Message');
  const [first] = rs;
  return first?.kind === 'error' ? first.code : undefined;
}

/** Raw TCP connection (no TLS) from `localAddress` (default 127.0.0.1); `closed` resolves when the server closes it. */
async function rawConnect(port: number, payload?: Uint8Array, localAddress = '127.0.0.1'): Promise<{ socket: net.Socket; closed: Promise<number> }> {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress });
  socket.on('error', () => undefined);
  const started = Date.now();
  const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now() - started)));
  await once(socket, 'connect');
  if (payload !== undefined) socket.write(payload);
  return { socket, closed };
}

describe('KeServer: good clients (RFC 8915 §4)', () => {
  let pki: TestPki;
  let keyset: Keyset;
  let h: Harness;
  before(async () => {
    pki = makeTestPki(['nts.test', '127.0.0.1', '::1']);
    keyset = newKeyset();
    h = await startServer(pki, keyset);
  });
  after(async () => {
    await h.server.stop();
    pki.cleanup();
  });

  test('RFC 8915 §4.1.6: a good client gets 8 cookies whose keys equal its own exporter output (§5.1)', async () => {
    const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
    assert.equal(reply.error, undefined);
    assert.equal(reply.ended, true, 'server sends close_notify after the response');
    const rs = records(reply.bytes);
    assert.deepEqual(rs[0], { kind: 'nextProtocol', critical: true, protocolIds: [0] });
    assert.deepEqual(rs[1], { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] });
    assert.deepEqual(rs[2], { kind: 'ntpv4Port', critical: true, port: 4123 });
    const cookies = rs.flatMap((r) => (r.kind === 'newCookie' ? [r.cookie] : []));
    assert.equal(cookies.length, 8);
    assert.ok(reply.c2s !== undefined && reply.s2c !== undefined);
    for (const cookie of cookies) {
      const opened = openCookie(keyset, cookie);
      assert.ok(opened.ok);
      assert.equal(opened.aeadId, 15);
      assert.deepEqual(Buffer.from(opened.c2s), Buffer.from(reply.c2s));
      assert.deepEqual(Buffer.from(opened.s2c), Buffer.from(reply.s2c));
    }
    assert.notDeepEqual(Buffer.from(reply.c2s), Buffer.from(reply.s2c));
    await h.stats.until(() => h.stats.sessions.success >= 1 && h.stats.cookiesIssued >= 8);
    assert.ok(h.stats.durations.length >= 1 && (h.stats.durations[0] ?? -1) >= 0);
  });

  test('the listening sockets live on the KE thread, not on the main (NTP) thread', () => {
    // Handshakes run where the sockets are; the main thread must own no TCP listener.
    assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'TCPServerWrap').length, 0);
  });

  test('the request may arrive in pieces (record header split across TLS records)', async () => {
    const request = encodeKeMessage(GOOD_REQUEST);
    const reply = await new Promise<Uint8Array>((resolve) => {
      const chunks: Buffer[] = [];
      const socket = tls.connect({ host: '127.0.0.1', port: h.port, ca: pki.caPem, ALPNProtocols: ['ntske/1'] });
      socket.on('secureConnect', () => {
        socket.write(request.subarray(0, 3));
        setTimeout(() => socket.write(request.subarray(3, 9)), 20);
        setTimeout(() => socket.write(request.subarray(9)), 40);
      });
      socket.on('data', (d: Buffer) => chunks.push(d));
      socket.on('close', () => resolve(new Uint8Array(Buffer.concat(chunks))));
    });
    assert.equal(records(reply).filter((r) => r.kind === 'newCookie').length, 8);
  });

  test('cipher suite: AES-128-GCM-SHA256 preferred, a ChaCha20-first or AES-256-only client keeps its choice; keys still match', async () => {
    const cases: readonly [string | undefined, string][] = [
      [undefined, 'TLS_AES_128_GCM_SHA256'],
      ['TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256', 'TLS_CHACHA20_POLY1305_SHA256'],
      ['TLS_AES_256_GCM_SHA384', 'TLS_AES_256_GCM_SHA384'],
    ];
    for (const [ciphers, expected] of cases) {
      const reply = await keClient({
        port: h.port,
        ca: pki.caPem,
        alpn: ['ntske/1'],
        send: encodeKeMessage(GOOD_REQUEST),
        ...(ciphers === undefined ? {} : { ciphers }),
      });
      assert.equal(reply.cipher, expected);
      const cookie = records(reply.bytes).find((r) => r.kind === 'newCookie');
      assert.ok(cookie?.kind === 'newCookie' && reply.c2s !== undefined);
      const opened = openCookie(keyset, cookie.cookie);
      assert.ok(opened.ok);
      // RFC 8915 §5.1: the exporter (hash of the negotiated suite) gives both ends the same keys.
      assert.deepEqual(Buffer.from(opened.c2s), Buffer.from(reply.c2s));
    }
  });

  test('TLS session tickets are bare session IDs that never resume (NTS-KE clients do not resume)', async () => {
    const first = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
    assert.ok(first.session !== undefined, 'TLS 1.3 servers always send a NewSessionTicket (Node cannot send none)');
    // A stateful ticket is the 32-octet session ID; an encrypted (stateless) one carries the whole session.
    assert.ok(first.ticketBytes > 0 && first.ticketBytes <= 64, `ticket of ${first.ticketBytes} octets`);
    const second = await keClient({
      port: h.port,
      ca: pki.caPem,
      alpn: ['ntske/1'],
      send: encodeKeMessage(GOOD_REQUEST),
      session: first.session,
    });
    assert.equal(second.resumed, false, 'the server keeps no sessions, so nothing resumes');
    assert.equal(records(second.bytes).filter((r) => r.kind === 'newCookie').length, 8);
  });

  test('RFC 8915 §3: a TLS 1.2 client is refused', async () => {
    const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], maxVersion: 'TLSv1.2', send: encodeKeMessage(GOOD_REQUEST) });
    assert.ok(reply.error !== undefined);
    assert.equal(reply.bytes.length, 0);
  });

  test('RFC 8915 §4: a client offering no ALPN gets no KE answer', async () => {
    const reply = await keClient({ port: h.port, ca: pki.caPem, send: encodeKeMessage(GOOD_REQUEST) });
    assert.equal(reply.bytes.length, 0);
  });

  test('RFC 8915 §4: a client offering only another ALPN id fails the handshake', async () => {
    const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['h2'], send: encodeKeMessage(GOOD_REQUEST) });
    assert.ok(reply.error !== undefined);
    assert.equal(reply.bytes.length, 0);
  });

  test('garbage instead of a TLS ClientHello is closed and counted as tls_error', async () => {
    const before = h.stats.sessions.tls_error;
    const { closed } = await rawConnect(h.port, new TextEncoder().encode('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.ok((await closed) < 1000);
    await h.stats.until(() => h.stats.sessions.tls_error > before);
  });

  test('RFC 8915 §4.1.3: unknown critical record → Error 0', async () => {
    const request = encodeKeMessage([
      { kind: 'nextProtocol', critical: true, protocolIds: [0] },
      { kind: 'unknown', critical: true, type: 0x1234, body: new Uint8Array(2) },
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
      { kind: 'endOfMessage', critical: true },
    ]);
    const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: request });
    assert.equal(errorCodeOf(reply.bytes), 0);
    assert.equal(reply.ended, true);
  });

  test('RFC 8915 §4.1.2: missing Next Protocol → Error 1', async () => {
    const request = encodeKeMessage([
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
      { kind: 'endOfMessage', critical: true },
    ]);
    const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: request });
    assert.equal(errorCodeOf(reply.bytes), 1);
  });

  test('RFC 8915 §4.1.2: duplicate Next Protocol → Error 1', async () => {
    const request = encodeKeMessage([
      { kind: 'nextProtocol', critical: true, protocolIds: [0] },
      { kind: 'nextProtocol', critical: true, protocolIds: [0] },
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
      { kind: 'endOfMessage', critical: true },
    ]);
    const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: request });
    assert.equal(errorCodeOf(reply.bytes), 1);
  });

  test('RFC 8915 §4: a request over maxRequestBytes → Error 1 (without waiting for its body)', async () => {
    const request = encodeKeMessage([
      { kind: 'nextProtocol', critical: true, protocolIds: [0] },
      { kind: 'unknown', critical: false, type: 0x4000, body: new Uint8Array(1100) },
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
      { kind: 'endOfMessage', critical: true },
    ]);
    const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: request.subarray(0, 20) });
    assert.equal(errorCodeOf(reply.bytes), 1);
    assert.ok(reply.elapsedMs < 1000, `answered in ${reply.elapsedMs} ms`);
  });

  test('RFC 8915 §4: a 1024-octet request (the minimum a server MUST accept) is served', async () => {
    const padding = 1024 - 4 * 4 - 2 - 2; // four headers, two 2-octet id lists
    const request = encodeKeMessage([
      { kind: 'nextProtocol', critical: true, protocolIds: [0] },
      { kind: 'unknown', critical: false, type: 0x4000, body: new Uint8Array(padding) },
      { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
      { kind: 'endOfMessage', critical: true },
    ]);
    assert.equal(request.length, 1024);
    const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: request });
    assert.equal(records(reply.bytes).filter((r) => r.kind === 'newCookie').length, 8);
  });

  test('RFC 8915 §4.1.3: a client that half-closes after a partial request gets Error 1', async () => {
    const request = encodeKeMessage(GOOD_REQUEST);
    const reply = await new Promise<Uint8Array>((resolve) => {
      const chunks: Buffer[] = [];
      // allowHalfOpen is honoured by tls.connect but missing from its typings.
      const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
        host: '127.0.0.1',
        port: h.port,
        ca: pki.caPem,
        ALPNProtocols: ['ntske/1'],
        allowHalfOpen: true,
      };
      const socket = tls.connect(options);
      socket.on('secureConnect', () => socket.end(request.subarray(0, 6)));
      socket.on('data', (d: Buffer) => chunks.push(d));
      socket.on('close', () => resolve(new Uint8Array(Buffer.concat(chunks))));
    });
    assert.equal(errorCodeOf(reply), 1);
  });

  test('updateKeyset: new cookies are sealed under the new current key', async () => {
    const next = newKeyset();
    h.server.updateKeyset(encodeKeyset(next)); // the store hands bytes; a Keyset object works too
    // The snapshot travels by message; a later KE is answered with it.
    await new Promise((r) => setTimeout(r, 50));
    const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
    const cookie = records(reply.bytes).find((r) => r.kind === 'newCookie');
    assert.ok(cookie?.kind === 'newCookie');
    const opened = openCookie(next, cookie.cookie);
    assert.ok(opened.ok && opened.keyAge === 0);
    assert.equal(openCookie(keyset, cookie.cookie).ok, false);
    keyset = next;
  });

  test('no errors were logged for any of the above', () => {
    assert.deepEqual(h.logs, []);
  });

  test('a keyset snapshot that does not decode is logged and the previous one stays', async () => {
    h.server.updateKeyset(Uint8Array.of(1, 2, 3));
    const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
    const cookie = records(reply.bytes).find((r) => r.kind === 'newCookie');
    assert.ok(cookie?.kind === 'newCookie');
    assert.ok(openCookie(keyset, cookie.cookie).ok);
    for (let i = 0; i < 100 && h.logs.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(h.logs.length, 1);
    assert.match(h.logs[0] ?? '', /keyset snapshot did not decode/);
  });
});

describe('KeServer: deadlines, caps and rate limits (OPERATIONS.md hardening)', () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki(['127.0.0.1']);
  });
  after(() => pki.cleanup());

  test('truncated record then stall → Error 1 at the deadline, closed soon after', async () => {
    const h = await startServer(pki, newKeyset(), { keyExchangeTimeoutMs: 400 });
    try {
      const request = encodeKeMessage(GOOD_REQUEST);
      const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: request.subarray(0, 7) });
      assert.equal(errorCodeOf(reply.bytes), 1);
      assert.ok(reply.elapsedMs >= 350 && reply.elapsedMs < 400 + 600, `closed after ${reply.elapsedMs} ms`);
      await h.stats.until(() => h.stats.sessions.timeout === 1);
    } finally {
      await h.server.stop();
    }
  });

  test('slowloris: silent connections are cut at the deadline and do not delay a good client', async () => {
    const h = await startServer(pki, newKeyset(), { keyExchangeTimeoutMs: 1500 });
    try {
      const idle = await Promise.all(Array.from({ length: 20 }, () => rawConnect(h.port)));
      // Handshake started but never finished: a ClientHello prefix, then silence.
      const half = await rawConnect(h.port, Uint8Array.of(0x16, 0x03, 0x01, 0x00, 0xf0, 0x01));
      const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.equal(records(reply.bytes).filter((r) => r.kind === 'newCookie').length, 8);
      // Served long before the idle connections' deadline: they hold slots, not the event loop.
      assert.ok(reply.elapsedMs < 750, `good client served in ${reply.elapsedMs} ms while 21 connections idle`);
      const closedAfter = await Promise.all([...idle, half].map((c) => c.closed));
      for (const ms of closedAfter) assert.ok(ms >= 1400 && ms < 1500 + 1000, `idle connection closed after ${ms} ms`);
      await h.stats.until(() => h.stats.sessions.timeout === 21 && h.stats.active === 0);
    } finally {
      await h.server.stop();
    }
  });

  test('connection cap full: the newcomer evicts the connection idle the longest, counted as evicted', async () => {
    const h = await startServer(pki, newKeyset(), { concurrentConnections: 3 });
    try {
      const idle = [];
      for (let i = 0; i < 3; i++) {
        idle.push(await rawConnect(h.port, undefined, `127.0.0.${2 + i}`));
        await h.stats.until(() => h.stats.accepted === i + 1);
      }
      const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.equal(records(reply.bytes).filter((r) => r.kind === 'newCookie').length, 8, 'the newcomer is served');
      assert.ok((await idle[0]?.closed ?? Infinity) < 1000, 'the oldest idle connection was closed at once');
      await h.stats.until(() => h.stats.sessions.evicted === 1 && h.stats.sessions.success === 1);
      assert.equal(h.stats.rejected.connection_limit, 0);
      // The other two are untouched until their deadline.
      const states = await Promise.race([Promise.all(idle.slice(1).map((c) => c.closed)).then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 300))]);
      assert.equal(states, 'open');
      for (const c of idle) c.socket.destroy();
    } finally {
      await h.server.stop();
    }
  });

  test('eviction takes a client silent after its handshake before one that is mid-handshake', async () => {
    const h = await startServer(pki, newKeyset(), { concurrentConnections: 2 });
    try {
      // Two clients finish TLS and say nothing.
      const silent = await Promise.all(
        [0, 1].map(async () => {
          const socket = tls.connect({ host: '127.0.0.1', port: h.port, ca: pki.caPem, ALPNProtocols: ['ntske/1'] });
          socket.on('error', () => undefined);
          socket.resume(); // read (and drop) whatever comes, so the end of the stream is seen
          const closed = once(socket, 'close');
          await once(socket, 'secureConnect');
          return { closed }; // wrapped: an async function would otherwise wait for it
        }),
      );
      await h.stats.until(() => h.stats.accepted === 2);
      // A third arrives: it evicts the first silent one, then completes its handshake and request.
      const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.equal(records(reply.bytes).filter((r) => r.kind === 'newCookie').length, 8);
      await Promise.race(silent.map((c) => c.closed));
      await h.stats.until(() => h.stats.sessions.evicted === 1 && h.stats.sessions.success === 1);
      await Promise.all(silent.map((c) => c.closed));
    } finally {
      await h.server.stop();
    }
  });

  test('connection cap with every open session already answered: the newcomer is refused (connection_limit)', async () => {
    const h = await startServer(pki, newKeyset(), { concurrentConnections: 1, keyExchangeTimeoutMs: 1500 });
    try {
      // A client that reads its answer but never closes its side keeps the (answered) session open.
      const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
        host: '127.0.0.1',
        port: h.port,
        ca: pki.caPem,
        ALPNProtocols: ['ntske/1'],
        allowHalfOpen: true,
      };
      const lingering = tls.connect(options);
      lingering.on('error', () => undefined);
      await once(lingering, 'secureConnect');
      lingering.write(encodeKeMessage(GOOD_REQUEST));
      lingering.resume();
      await once(lingering, 'end');
      await h.stats.until(() => h.stats.sessions.success === 1);
      const extra = await rawConnect(h.port, undefined, '127.0.0.2');
      assert.ok((await extra.closed) < 500, 'refused at once');
      await h.stats.until(() => h.stats.rejected.connection_limit === 1);
      lingering.destroy();
      await h.stats.until(() => h.stats.active === 0);
      const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.equal(records(reply.bytes).filter((r) => r.kind === 'newCookie').length, 8);
    } finally {
      await h.server.stop();
    }
  });

  test('per-source cap: one IPv4 address may hold N connections; the next is closed before TLS (source_limit), others still get in', async () => {
    const h = await startServer(pki, newKeyset(), { concurrentConnections: 16, concurrentConnectionsPerSource: 2 });
    try {
      const held = [await rawConnect(h.port, undefined, '127.0.0.9'), await rawConnect(h.port, undefined, '127.0.0.9')];
      await h.stats.until(() => h.stats.accepted === 2);
      const third = await rawConnect(h.port, undefined, '127.0.0.9');
      assert.ok((await third.closed) < 500);
      await h.stats.until(() => h.stats.rejected.source_limit === 1);
      const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.equal(records(reply.bytes).filter((r) => r.kind === 'newCookie').length, 8, 'another source is served');
      // Closing one frees the source's slot at once.
      held[0]?.socket.destroy();
      await h.stats.until(() => h.stats.sessions.client_closed === 1);
      const again = await rawConnect(h.port, undefined, '127.0.0.9');
      await h.stats.until(() => h.stats.accepted === 4);
      for (const c of [...held, again]) c.socket.destroy();
      await h.stats.until(() => h.stats.active === 0);
      assert.equal(h.stats.rejected.source_limit, 1);
      // SIGHUP path: a higher cap applies to the next connection.
      h.server.updateConnectionLimits({ globalMax: 16, perSourceMax: 3 });
      const more = await Promise.all([0, 1, 2].map(() => rawConnect(h.port, undefined, '127.0.0.9')));
      await h.stats.until(() => h.stats.accepted === 7);
      assert.equal(h.stats.rejected.source_limit, 1);
      for (const c of more) c.socket.destroy();
    } finally {
      await h.server.stop();
    }
  });

  test('CLOSE-WAIT: a peer that closes before TLS frees its slot at once, counted as client_closed', async () => {
    const h = await startServer(pki, newKeyset(), { concurrentConnections: 64, keyExchangeTimeoutMs: 5000 });
    try {
      const conns = await Promise.all(Array.from({ length: 60 }, (_, i) => rawConnect(h.port, undefined, `127.0.0.${10 + (i % 50)}`)));
      await h.stats.until(() => h.stats.accepted === 60);
      await new Promise((r) => setTimeout(r, 300));
      const started = Date.now();
      for (const c of conns) c.socket.end(); // FIN: the server side would sit in CLOSE-WAIT
      await Promise.all(conns.map((c) => c.closed));
      await h.stats.until(() => h.stats.sessions.client_closed === 60 && h.stats.active === 0, 2000);
      assert.ok(Date.now() - started < 2000, 'released long before the 5 s deadline');
      assert.equal(h.stats.sessions.bad_request, 0);
      assert.equal(h.stats.sessions.timeout, 0);
      const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.equal(records(reply.bytes).filter((r) => r.kind === 'newCookie').length, 8);
    } finally {
      await h.server.stop();
    }
  });

  test('access list: a denied source is closed before TLS (access_denied), most specific prefix wins, SIGHUP applies', async () => {
    const h = await startServer(pki, newKeyset(), {
      listen: [{ host: '::', port: 0 }], // dual-stack: IPv4 peers arrive as ::ffff:127.0.0.x and must match IPv4 prefixes
      accessList: {
        entries: [
          { prefix: '127.0.0.0/8', action: 'allow' },
          { prefix: '127.0.0.3', action: 'allow' },
          { prefix: '127.0.0.0/30', action: 'ignore' },
          { prefix: '127.0.0.7', action: 'deny' },
        ],
        defaultAction: 'deny',
      },
    });
    try {
      const from = async (localAddress: string): Promise<boolean> => {
        const raw = net.connect({ host: '127.0.0.1', port: h.port, localAddress });
        raw.on('error', () => undefined);
        const socket = tls.connect({ socket: raw, host: '127.0.0.1', ca: pki.caPem, ALPNProtocols: ['ntske/1'] });
        socket.on('error', () => undefined);
        const chunks: Buffer[] = [];
        socket.on('data', (d: Buffer) => chunks.push(d));
        socket.on('secureConnect', () => socket.write(encodeKeMessage(GOOD_REQUEST)));
        await new Promise((resolve) => socket.on('close', resolve)); // not once(): it rejects on 'error'
        return chunks.length > 0 && records(new Uint8Array(Buffer.concat(chunks))).some((r) => r.kind === 'newCookie');
      };
      assert.equal(await from('127.0.0.1'), false, '/30 deny inside the /8 allow');
      assert.equal(await from('127.0.0.3'), true, '/32 allow inside the /30 deny');
      assert.equal(await from('127.0.0.9'), true, '/8 allow');
      assert.equal(await from('127.0.0.7'), false, 'deny: closed before TLS too (KE has no refusal message)');
      await h.stats.until(() => h.stats.rejected.access_ignored === 1 && h.stats.rejected.access_denied === 1 && h.stats.sessions.success === 2);
      assert.equal(h.stats.accepted, 2, 'refused connections never became sessions');
      h.server.updateAccessList({ entries: [{ prefix: '127.0.0.9', action: 'deny' }], defaultAction: 'allow' });
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(await from('127.0.0.9'), false, 'the new list applies to the next connection');
      assert.equal(await from('127.0.0.1'), true, 'default allow: the rest is allowed');
      await h.stats.until(() => h.stats.rejected.access_denied === 2);
      assert.throws(() => h.server.updateAccessList({ entries: [{ prefix: 'not a prefix', action: 'deny' }], defaultAction: 'allow' }), RangeError);
    } finally {
      await h.server.stop();
    }
  });

  test('per-client token bucket: over the burst → closed before TLS and counted as rate_limited', async () => {
    const h = await startServer(pki, newKeyset(), { clientRateLimit: { intervalS: 3600, burst: 3, tableSize: 16 } });
    try {
      for (let i = 0; i < 3; i++) {
        const ok = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
        assert.equal(records(ok.bytes).filter((r) => r.kind === 'newCookie').length, 8);
      }
      const limited = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.ok(limited.error !== undefined);
      assert.equal(limited.bytes.length, 0);
      await h.stats.until(() => h.stats.rejected.rate_limited === 1 && h.stats.sessions.success === 3);
      // Lifting the limit (SIGHUP) takes effect for the next connection.
      h.server.updateRateLimit({ intervalS: 0, burst: 3, tableSize: 16 });
      await new Promise((r) => setTimeout(r, 30));
      const again = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.equal(again.error, undefined);
    } finally {
      await h.server.stop();
    }
  });

  test('stop(): no new connections, open sessions may finish', async () => {
    const h = await startServer(pki, newKeyset());
    const request = encodeKeMessage(GOOD_REQUEST);
    const socket = tls.connect({ host: '127.0.0.1', port: h.port, ca: pki.caPem, ALPNProtocols: ['ntske/1'] });
    await once(socket, 'secureConnect');
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    const closed = once(socket, 'close');
    const stopped = h.server.stop();
    await new Promise((r) => setTimeout(r, 50));
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect(h.port, '127.0.0.1');
      s.on('error', () => resolve(true));
      s.on('connect', () => {
        s.destroy();
        resolve(false);
      });
    });
    assert.equal(refused, true, 'listener closed');
    socket.write(request);
    await closed;
    await stopped;
    assert.equal(records(new Uint8Array(Buffer.concat(chunks))).filter((r) => r.kind === 'newCookie').length, 8);
    assert.equal(h.stats.sessions.success, 1);
  });
});

/** TIDs of this process's threads. */
function threadIds(): number[] {
  return readdirSync('/proc/self/task').map(Number);
}

describe('KeServer: KE thread priority (RFC 8915 §8.3 isolation, Linux)', { skip: process.platform !== 'linux' ? 'per-thread nice values are Linux-only' : false }, () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki(['127.0.0.1']);
  });
  after(() => pki.cleanup());

  test('the default nice value is the documented constant and the config default', () => {
    assert.equal(KE_THREAD_NICENESS, 10);
    assert.equal(DEFAULTS.ntsKeServer.threadNiceness, KE_THREAD_NICENESS);
  });

  test('the KE thread runs at nice 10; the main (NTP-receiving) thread keeps its own', async () => {
    const mainNice = getPriority(process.pid);
    const before = new Set(threadIds());
    const lines: string[] = [];
    const logger = pino(
      { level: 'debug' },
      new Writable({
        write(chunk: Buffer, _enc, cb): void {
          lines.push(chunk.toString());
          cb();
        },
      }),
    );
    const h = await startServer(pki, newKeyset(), { logger });
    try {
      const expected = Math.max(KE_THREAD_NICENESS, mainNice);
      const line = lines.find((l) => l.includes('NTS-KE thread nice value set'));
      assert.ok(line !== undefined, `no debug line in:\n${lines.join('')}`);
      const logged: unknown = JSON.parse(line);
      assert.ok(typeof logged === 'object' && logged !== null && 'tid' in logged && typeof logged.tid === 'number');
      const tid = logged.tid;
      assert.ok(!before.has(tid), 'the TID is a thread started by KeServer');
      assert.equal(getPriority(tid), expected);
      assert.equal(getPriority(process.pid), mainNice, 'the main thread is untouched');
      const reniced = threadIds().filter((t) => !before.has(t) && getPriority(t) === expected && expected !== mainNice);
      assert.deepEqual(reniced, expected === mainNice ? [] : [tid], 'only the KE thread changed');
      // It still serves.
      const reply = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.equal(records(reply.bytes).filter((r) => r.kind === 'newCookie').length, 8);
    } finally {
      await h.server.stop();
    }
  });

  test('threadNiceness 0 leaves every thread at the daemon\'s nice value', async () => {
    const mainNice = getPriority(process.pid);
    const before = new Set(threadIds());
    const h = await startServer(pki, newKeyset(), { threadNiceness: 0 });
    try {
      const fresh = threadIds().filter((t) => !before.has(t));
      assert.ok(fresh.length >= 1, 'KeServer started a thread');
      for (const t of fresh) {
        try {
          assert.equal(getPriority(t), mainNice, `thread ${t}`);
        } catch (e: unknown) {
          // A short-lived helper thread may exit between the listing and the lookup.
          if (!(e instanceof Error && 'code' in e && e.code === 'ESRCH')) throw e;
        }
      }
    } finally {
      await h.server.stop();
    }
  });
});

describe('KeServer: listeners and certificates', () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki(['nts.test', '127.0.0.1', '::1']);
  });
  after(() => pki.cleanup());

  test('listens on IPv4 and IPv6 loopback at once', async () => {
    const h = await startServer(pki, newKeyset(), {
      listen: [
        { host: '127.0.0.1', port: 0 },
        { host: '::1', port: 0 },
      ],
    });
    try {
      const [v4, v6] = h.server.addresses;
      assert.equal(v4?.family, 'IPv4');
      assert.equal(v6?.family, 'IPv6');
      const reply = await keClient({ host: '::1', port: v6?.port ?? 0, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.equal(records(reply.bytes).filter((r) => r.kind === 'newCookie').length, 8);
    } finally {
      await h.server.stop();
    }
  });

  test('a listen address in use → NtsdError BIND_FAILED', async () => {
    const blocker = net.createServer();
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      await assert.rejects(startServer(pki, newKeyset(), { listen: [{ host: '127.0.0.1', port }] }), (e: unknown) => {
        assert.ok(e instanceof NtsdError);
        assert.equal(e.code, 'BIND_FAILED');
        return true;
      });
    } finally {
      blocker.close();
    }
  });

  test('reloadCertificate: new handshakes see the new leaf, TLS 1.2 stays refused, a bad pair is rejected', async () => {
    const h = await startServer(pki, newKeyset());
    try {
      const first = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      const leaf = pki.issueLeaf();
      await h.server.reloadCertificate(leaf.certPem, leaf.keyPem);
      const second = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.ok(first.serial !== undefined && second.serial !== undefined);
      assert.notEqual(first.serial, second.serial);
      const tls12 = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], maxVersion: 'TLSv1.2' });
      assert.ok(tls12.error !== undefined, 'TLS 1.2 must stay refused after a reload');
      // Mismatched pair: the KE thread refuses it and keeps serving the current one.
      await assert.rejects(h.server.reloadCertificate(pki.certPem, leaf.keyPem), /certificate reload refused/);
      const third = await keClient({ port: h.port, ca: pki.caPem, alpn: ['ntske/1'], send: encodeKeMessage(GOOD_REQUEST) });
      assert.equal(third.serial, second.serial);
      assert.equal(records(third.bytes).filter((r) => r.kind === 'newCookie').length, 8);
    } finally {
      await h.server.stop();
    }
  });
});
