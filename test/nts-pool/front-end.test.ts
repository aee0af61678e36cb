/**
 * The pool KE front end (nts-pool/front-end.ts, the request handler of a KE listener: nts-ke/server.ts)
 * against real ntsd KE servers acting as sources on distinct loopback addresses (127.0.0.2–4), over real TLS: relayed cookies open at the chosen source with
 * the client's own keys, NTP Server Deny is honoured, a wrong token is refused, and a source that dies
 * after the keys were sent gives the client Error 0xF003 and never another source's cookies.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import * as tls from 'node:tls';
import { pino } from 'pino';
import { openCookie } from '../../src/core/nts/cookie.js';
import { ntpv4ExporterContexts } from '../../src/core/nts/exporter.js';
import { NTS_EXPORTER_LABEL, NTSKE_ALPN, PoolKeErrorCode } from '../../src/core/nts/ids.js';
import { decodeKeMessage, encodeKeMessage, scanKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';
import { createKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { KeServer, type KeStats } from '../../src/nts-ke/server.js';
import type { PoolFrontEndOptions, PoolKeSourceOptions } from '../../src/nts-pool/front-end.js';
import { addressBytes, loadNativeUdp } from '../../src/runtime/addon.js';
import { reusePortWorks } from '../../src/runtime/reuse-port.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { waitUntil } from '../helpers/daemon.js';

const SOURCE_NAMES = ['ts1.test', 'ts2.test', 'ts3.test'] as const;
const SOURCE_HOSTS = ['127.0.0.2', '127.0.0.3', '127.0.0.4'] as const;
const quiet = pino({ level: 'silent' });
const FRONT_END_MODULE = new URL('../../src/nts-pool/front-end.js', import.meta.url).href;
const native = loadNativeUdp();
const reusePort = await reusePortWorks('tcp');
/** Node 20's way to several KE threads: the addon's SO_REUSEPORT sockets (as nts-ke/service.ts passes them). */
const nativeListener =
  native.ok && !reusePort
    ? (host: string, port: number, ipv6Only: boolean): number => {
        const a = addressBytes(host);
        return a === undefined ? -22 : native.addon.openTcpListener(a.family, a.bytes, port, ipv6Only ? 1 : 0, 511);
      }
    : undefined;

interface Source {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly token: string;
  readonly keyset: Keyset;
  readonly server: KeServer;
  cookiesIssued: number;
}

async function startSource(pki: TestPki, index: number, advertiseName: boolean): Promise<Source> {
  const keyset = createKeyset(Math.floor(Date.now() / 1000), (b) => void randomFillSync(b), { staleKeyCount: 1 });
  const name = SOURCE_NAMES[index] ?? 'x';
  const host = SOURCE_HOSTS[index] ?? '127.0.0.1';
  const token = `token-of-${name}`;
  const server = new KeServer({
    listen: [{ host, port: 0 }],
    certificateChainPem: pki.certPem,
    privateKeyPem: pki.keyPem,
    keyExchangeTimeoutMs: 3000,
    concurrentConnections: 64,
    concurrentConnectionsPerSource: 64,
    maxRequestBytes: 4096,
    clientRateLimit: { intervalS: 0, burst: 8, tableSize: 1024 },
    policy: { aeadIds: [15, 16, 17, 30], poolAuthenticationTokens: [token], ...(advertiseName ? { ntpServer: name } : {}) },
    keyset,
    logger: quiet,
    statsIntervalMs: 25,
  });
  const addresses = await server.start();
  const port = addresses[0]?.port ?? 0;
  const source: Source = { name, host, port, token, keyset, server, cookiesIssued: 0 };
  server.onStats((s: KeStats) => {
    source.cookiesIssued += s.cookiesIssued;
  });
  return source;
}

function sourceOptions(s: { name: string; host: string; port: number; token: string }, weight = 1): PoolKeSourceOptions {
  return { name: s.name, host: s.host, port: s.port, tlsName: s.name, authenticationToken: s.token, weight };
}

/** A front end under test: its port, the session outcomes and source health its threads reported. */
interface FrontEnd {
  readonly port: number;
  readonly server: KeServer;
  readonly outcomes: string[];
  /** Latest reported health by source name. */
  readonly health: Map<string, boolean>;
  /** KE threads that reported front-end sessions. */
  readonly threads: Set<number>;
  stop(): Promise<void>;
}

async function startFrontEnd(pki: TestPki, sources: readonly PoolKeSourceOptions[], extra: { fixedRandom?: number; threads?: number } = {}): Promise<FrontEnd> {
  const options: PoolFrontEndOptions = {
    upstreamTimeoutMs: 2500,
    capabilityCacheS: 300,
    healthCheckIntervalS: 3600,
    connectionsPerSource: 2,
    upstreamCaPem: pki.caPem,
    sources,
    fixedRandom: extra.fixedRandom,
  };
  const server = new KeServer({
    listen: [{ host: '127.0.0.1', port: 0 }],
    certificateChainPem: pki.certPem,
    privateKeyPem: pki.keyPem,
    keyExchangeTimeoutMs: 5000,
    concurrentConnections: 64,
    concurrentConnectionsPerSource: 64,
    maxRequestBytes: 4096,
    clientRateLimit: { intervalS: 0, burst: 8, tableSize: 1024 },
    handler: { module: FRONT_END_MODULE, options },
    logger: quiet,
    statsIntervalMs: 25,
    threadNiceness: 0,
    threads: extra.threads ?? 1,
    ...(nativeListener !== undefined ? { openReusePortListener: nativeListener } : {}),
  });
  const outcomes: string[] = [];
  const health = new Map<string, boolean>();
  const threads = new Set<number>();
  server.onStats((s) => {
    if (s.handlerReport?.some((x) => x.series === 'session') === true) threads.add(s.thread);
    for (const sample of s.handlerReport ?? []) {
      if (sample.series === 'session') for (let i = 0; i < sample.value; i++) outcomes.push(sample.labels['outcome'] ?? '');
      if (sample.series === 'health') health.set(sample.labels['source'] ?? '', sample.value === 1);
    }
  });
  const [address] = await server.start();
  return { port: address?.port ?? 0, server, outcomes, health, threads, stop: () => server.stop() };
}

interface ClientResult {
  readonly records: readonly KeRecord[];
  readonly c2s: Uint8Array;
  readonly s2c: Uint8Array;
}

/** An NTS-KE client that sends `records` to the pool name and exports the keys for `aeadId`. */
function clientKe(port: number, caPem: string, records: readonly KeRecord[], aeadId = 15, keyLength = 32): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'pool.test', ca: caPem, ALPNProtocols: [NTSKE_ALPN], minVersion: 'TLSv1.3' });
    const chunks: Buffer[] = [];
    let keys: { c2s: Uint8Array; s2c: Uint8Array } | undefined;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('client timed out'));
    }, 8000);
    socket.on('secureConnect', () => {
      const ctx = ntpv4ExporterContexts(aeadId, false);
      keys = {
        c2s: socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, Buffer.from(ctx.c2s)),
        s2c: socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, Buffer.from(ctx.s2c)),
      };
      socket.write(encodeKeMessage(records));
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      const bytes = Buffer.concat(chunks);
      const scan = scanKeMessage(bytes);
      const decoded = decodeKeMessage(bytes);
      if (scan.status !== 'complete' || !decoded.ok || keys === undefined) {
        reject(new Error(`bad answer ${bytes.toString('hex')}`));
        return;
      }
      resolve({ records: decoded.records, ...keys });
      socket.end();
    });
  });
}

const NP0: KeRecord = { kind: 'nextProtocol', critical: true, protocolIds: [0] };
const EOM: KeRecord = { kind: 'endOfMessage', critical: true };
const aead = (...ids: number[]): KeRecord => ({ kind: 'aeadAlgorithm', critical: true, aeadIds: ids });
const deny = (server: string): KeRecord => ({ kind: 'ntpServerDeny', critical: false, server });
const errorCodes = (rs: readonly KeRecord[]): number[] => rs.flatMap((r) => (r.kind === 'error' ? [r.code] : []));
const serverOf = (rs: readonly KeRecord[]): string | undefined => rs.flatMap((r) => (r.kind === 'ntpv4Server' ? [r.server] : []))[0];
const cookiesOf = (rs: readonly KeRecord[]): Uint8Array[] => rs.flatMap((r) => (r.kind === 'newCookie' ? [r.cookie] : []));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('pool KE front end → ntsd sources on 127.0.0.2–4', () => {
  let pki: TestPki;
  let sources: Source[] = [];

  before(async () => {
    pki = makeTestPki(['pool.test', ...SOURCE_NAMES, '127.0.0.1']);
    // ts3 sends no Server record: the front end inserts its registered name.
    sources = [await startSource(pki, 0, true), await startSource(pki, 1, true), await startSource(pki, 2, false)];
  });
  after(async () => {
    for (const s of sources) await s.server.stop();
    pki.cleanup();
  });

  test('cookies come from the chosen source, sealed over the client\'s own keys; the Server record names it', async () => {
    const fe = await startFrontEnd(pki, sources.map((s) => sourceOptions(s)));
    try {
      const port = fe.port;
      const seen = new Set<string>();
      for (let i = 0; i < 12; i++) {
        const r = await clientKe(port, pki.caPem, [NP0, aead(15), EOM]);
        assert.deepEqual(errorCodes(r.records), []);
        const name = serverOf(r.records);
        const source = sources.find((s) => s.name === name);
        assert.ok(source !== undefined, `Server record ${String(name)} names a source`);
        seen.add(source.name);
        const cookies = cookiesOf(r.records);
        assert.equal(cookies.length, 8);
        for (const cookie of cookies) {
          const opened = openCookie(source.keyset, cookie);
          assert.ok(opened.ok, 'the cookie opens at the source the Server record names');
          assert.equal(hex(opened.c2s), hex(r.c2s), 'C2S is the client\'s exported key');
          assert.equal(hex(opened.s2c), hex(r.s2c));
          for (const other of sources.filter((s) => s !== source)) assert.ok(!openCookie(other.keyset, cookie).ok);
        }
      }
      assert.ok(seen.size >= 2, `clients are spread over the sources (saw ${[...seen].join(', ')})`);
    } finally {
      await fe.stop();
    }
  });

  test('three KE threads run the front end (SO_REUSEPORT): sessions spread over them, each checks the sources itself', { skip: reusePort || nativeListener !== undefined ? false : 'no SO_REUSEPORT listeners here (Node 20 without the addon)' }, async () => {
    const fe = await startFrontEnd(pki, sources.map((s) => sourceOptions(s)), { threads: 3 });
    try {
      assert.equal(fe.server.threadCount, 3);
      const answers = await Promise.all(Array.from({ length: 30 }, () => clientKe(fe.port, pki.caPem, [NP0, aead(15), EOM])));
      for (const r of answers) assert.equal(cookiesOf(r.records).length, 8);
      await waitUntil('30 sessions reported', 5000, () => (fe.outcomes.length === 30 ? true : undefined), 20);
      assert.deepEqual(new Set(fe.outcomes), new Set(['success']));
      assert.ok(fe.threads.size >= 2, `sessions on threads ${[...fe.threads].join(', ')}`);
      assert.deepEqual([...fe.health.values()], [true, true, true]);
    } finally {
      await fe.stop();
    }
  });

  test('AEAD in the client\'s order at the source\'s key length (17: 64-octet keys)', async () => {
    const fe = await startFrontEnd(pki, sources.map((s) => sourceOptions(s)));
    try {
      const r = await clientKe(fe.port, pki.caPem, [NP0, aead(17, 15), EOM], 17, 64);
      assert.ok(r.records.some((x) => x.kind === 'aeadAlgorithm' && x.aeadIds[0] === 17));
      const source = sources.find((s) => s.name === serverOf(r.records));
      assert.ok(source !== undefined);
      const opened = openCookie(source.keyset, cookiesOf(r.records)[0] ?? new Uint8Array(0));
      assert.ok(opened.ok && opened.aeadId === 17 && hex(opened.c2s) === hex(r.c2s));
    } finally {
      await fe.stop();
    }
  });

  test('a denied source is never chosen; denying all of them is Error 0xF000', async () => {
    const fe = await startFrontEnd(pki, sources.map((s) => sourceOptions(s)));
    try {
      const port = fe.port;
      for (let i = 0; i < 8; i++) {
        const r = await clientKe(port, pki.caPem, [NP0, deny('ts1.test'), deny('TS2.test.'), aead(15), EOM]);
        assert.equal(serverOf(r.records), 'ts3.test');
      }
      const none = await clientKe(port, pki.caPem, [NP0, aead(15), ...SOURCE_NAMES.map(deny), EOM]);
      assert.deepEqual(errorCodes(none.records), [PoolKeErrorCode.noSuchServer]);
      assert.equal(cookiesOf(none.records).length, 0);
    } finally {
      await fe.stop();
    }
  });

  test('a wrong token is refused by the source; the front end takes it out and serves the others', async () => {
    const first = sources[0];
    assert.ok(first !== undefined);
    const wrong = { ...first, token: 'not-the-token' };
    const only = await startFrontEnd(pki, [sourceOptions(wrong)]);
    try {
      // The start-up health check and this client's own capability query race to hear the refusal: the
      // client gets 0xF002 when its query was first, 0xF000 (no usable source) when the check was.
      const port = only.port;
      const r = await clientKe(port, pki.caPem, [NP0, aead(15), EOM]);
      const code = errorCodes(r.records);
      assert.ok(
        ([PoolKeErrorCode.couldNotGetCapabilities, PoolKeErrorCode.noSuchServer] as readonly number[]).includes(code[0] ?? -1) && code.length === 1,
        `one Error record 0xF002 or 0xF000, got ${JSON.stringify(code)}`,
      );
      assert.equal(cookiesOf(r.records).length, 0);
      await waitUntil('the refusing source taken out', 5000, () => (only.health.get('ts1.test') === false ? true : undefined), 20);
      assert.deepEqual([...only.health], [['ts1.test', false]]);
      // Once it is out, it is not asked again: no source is left.
      const again = await clientKe(port, pki.caPem, [NP0, aead(15), EOM]);
      assert.deepEqual(errorCodes(again.records), [PoolKeErrorCode.noSuchServer]);
    } finally {
      await only.stop();
    }
    const mixed = await startFrontEnd(pki, [sourceOptions(wrong), ...sources.slice(1).map((s) => sourceOptions(s))]);
    try {
      for (let i = 0; i < 6; i++) {
        const r = await clientKe(mixed.port, pki.caPem, [NP0, aead(15), EOM]);
        assert.notEqual(serverOf(r.records), 'ts1.test');
        assert.equal(cookiesOf(r.records).length, 8);
      }
    } finally {
      await mixed.stop();
    }
  });

  test('a source that dies after the keys were sent: Error 0xF003, never another source\'s cookies', async () => {
    // A source that answers the capability query, then closes on the fixed key request.
    const keysSeen: string[] = [];
    const dying = tls.createServer({ cert: pki.certPem, key: pki.keyPem, ALPNProtocols: [NTSKE_ALPN], minVersion: 'TLSv1.3' }, (socket) => {
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        const decoded = decodeKeMessage(chunk);
        if (!decoded.ok) {
          socket.destroy();
          return;
        }
        const fk = decoded.records.find((r) => r.kind === 'fixedKeyRequest');
        if (fk?.kind === 'fixedKeyRequest') {
          keysSeen.push(hex(fk.keys));
          socket.destroy();
          return;
        }
        socket.end(
          encodeKeMessage([
            { kind: 'supportedAlgorithmList', critical: true, algorithms: [{ aeadId: 15, keyLength: 32 }] },
            { kind: 'supportedNextProtocolList', critical: true, protocolIds: [0] },
            EOM,
          ]),
        );
      });
    });
    await new Promise<void>((resolve) => dying.listen(0, '127.0.0.5', resolve));
    const address = dying.address();
    const dyingPort = typeof address === 'object' && address !== null ? address.port : 0;
    const real = sources[1];
    assert.ok(real !== undefined);
    // Stats arrive every 25 ms: let earlier tests' counts settle first.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const cookiesBefore = real.cookiesIssued;
    // random = 0: the first usable source (the dying one) is chosen every time.
    const fe = await startFrontEnd(pki, [sourceOptions({ name: 'ts1.test', host: '127.0.0.5', port: dyingPort, token: 't' }), sourceOptions(real)], {
      fixedRandom: 0,
    });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await clientKe(fe.port, pki.caPem, [NP0, aead(15), EOM]);
        assert.deepEqual(errorCodes(r.records), [PoolKeErrorCode.couldNotGetCookies]);
        assert.equal(cookiesOf(r.records).length, 0);
        assert.equal(keysSeen.at(-1), hex(r.c2s) + hex(r.s2c), 'the dying source got exactly this client\'s keys');
      }
      assert.equal(keysSeen.length, 3);
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(real.cookiesIssued, cookiesBefore, 'the other source was never asked for cookies');
      assert.deepEqual(fe.outcomes, ['could_not_get_cookies', 'could_not_get_cookies', 'could_not_get_cookies']);
    } finally {
      await fe.stop();
      dying.close();
    }
  });

  test('an unreachable source fails its health check and gets no clients; a client pool request is Error 1', async () => {
    const down = { name: 'ts1.test', host: '127.0.0.6', port: 1, token: 't' };
    const fe = await startFrontEnd(pki, [sourceOptions(down, 100), ...sources.slice(1).map((s) => sourceOptions(s))]);
    try {
      await waitUntil('the unreachable source taken out', 5000, () => (fe.health.get('ts1.test') === false ? true : undefined), 20);
      for (let i = 0; i < 4; i++) {
        const r = await clientKe(fe.port, pki.caPem, [NP0, aead(15), EOM]);
        assert.ok(serverOf(r.records) === 'ts2.test' || serverOf(r.records) === 'ts3.test');
      }
      const fixed = await clientKe(fe.port, pki.caPem, [
        { kind: 'authenticationToken', critical: false, token: new Uint8Array([1]) },
        { kind: 'supportedNextProtocolList', critical: true, protocolIds: [] },
        EOM,
      ]);
      assert.deepEqual(errorCodes(fixed.records), [1]);
    } finally {
      await fe.stop();
    }
  });
});
