import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { performKeyExchange, type KeyExchangeOutcome } from '../../src/cli/ke-client.js';
import { encodeKeMessage, scanKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';
import { validateKeRequest } from '../../src/core/nts/ke-message.js';
import { ntpv4ExporterContexts } from '../../src/core/nts/exporter.js';
import { NTS_EXPORTER_LABEL } from '../../src/core/nts/ids.js';
import { makeOtherCa, makeTestPki } from '../helpers/certs.js';

const pki = makeTestPki(['nts.test', '127.0.0.1']);
after(() => pki.cleanup());

const eom: KeRecord = { kind: 'endOfMessage', critical: true };
const ntpv4: KeRecord = { kind: 'nextProtocol', critical: true, protocolIds: [0] };
const cookies: KeRecord[] = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => ({ kind: 'newCookie', critical: false, cookie: new Uint8Array(96).fill(n) }));

interface FakeServer {
  readonly port: number;
  /** Keys the server side exported for the last session, per its own view of the contexts. */
  readonly exported: { c2s: Uint8Array; s2c: Uint8Array }[];
  close(): Promise<void>;
}

type Responder = (request: Uint8Array, socket: TLSSocket, exported: FakeServer['exported']) => void;

/** An NTS-KE-ish TLS server on 127.0.0.1:0 that reads one request and lets `respond` answer it. */
async function startFakeKeServer(respond: Responder, tlsOptions: { ALPNProtocols?: string[]; maxVersion?: 'TLSv1.2' } = {}): Promise<FakeServer> {
  const exported: FakeServer['exported'] = [];
  const sockets = new Set<TLSSocket>();
  const server = createTlsServer(
    { key: pki.keyPem, cert: pki.certPem, ALPNProtocols: tlsOptions.ALPNProtocols ?? ['ntske/1'], ...(tlsOptions.maxVersion ? { maxVersion: tlsOptions.maxVersion } : {}) },
    (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      let buf = new Uint8Array(0);
      socket.on('data', (chunk: Buffer) => {
        const next = new Uint8Array(buf.length + chunk.length);
        next.set(buf);
        next.set(chunk, buf.length);
        buf = next;
        const scan = scanKeMessage(buf);
        if (scan.status === 'complete') respond(buf.subarray(0, scan.length), socket, exported);
      });
      socket.on('error', () => undefined);
    },
  );
  server.on('tlsClientError', () => undefined);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: portOf(server),
    exported,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return closeServer(server);
    },
  };
}

function portOf(server: Server): number {
  const address = server.address();
  assert.ok(typeof address === 'object' && address !== null);
  return address.port;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Answers like a compliant server: echo NTPv4, choose the first offered AEAD we list, 8 cookies. */
function standardResponder(extra: KeRecord[] = [], choose: (offered: readonly number[]) => number = (o) => o[0] ?? 15): Responder {
  return (request, socket, exported) => {
    const v = validateKeRequest(request);
    assert.ok(v.ok);
    const aeadId = choose(v.request.aeadIds ?? []);
    const compliant = v.request.compliantGcmSivExporter && aeadId === 30;
    const contexts = ntpv4ExporterContexts(aeadId, compliant);
    const keyLength = aeadId === 30 ? 16 : aeadId === 17 ? 64 : aeadId === 16 ? 48 : 32;
    exported.push({
      c2s: new Uint8Array(socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, Buffer.from(contexts.c2s))),
      s2c: new Uint8Array(socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, Buffer.from(contexts.s2c))),
    });
    const records: KeRecord[] = [ntpv4, { kind: 'aeadAlgorithm', critical: true, aeadIds: [aeadId] }];
    if (compliant) records.push({ kind: 'chronyCompliantExporter', critical: false });
    socket.end(encodeKeMessage([...records, ...extra, ...cookies, eom]));
  };
}

function failureKind(outcome: KeyExchangeOutcome): string {
  assert.equal(outcome.ok, false, 'expected a failure');
  return outcome.ok ? '' : outcome.failure.kind;
}

const base = { host: '127.0.0.1', servername: 'nts.test', ca: pki.caPem, timeoutMs: 3000 } as const;

test('RFC 8915 §4.3, §5.1: C2S and S2C equal the server\'s exporter output; defaults for NTP server and port', async (t) => {
  const server = await startFakeKeServer(standardResponder());
  t.after(() => server.close());
  const outcome = await performKeyExchange({ ...base, port: server.port, aeadIds: [15] });
  assert.ok(outcome.ok, JSON.stringify(outcome));
  const r = outcome.result;
  assert.equal(r.aeadId, 15);
  assert.equal(r.c2s.length, 32);
  assert.deepEqual(r.c2s, server.exported[0]?.c2s);
  assert.deepEqual(r.s2c, server.exported[0]?.s2c);
  assert.notDeepEqual(r.c2s, r.s2c);
  assert.equal(r.cookies.length, 8);
  assert.equal(r.cookies[3]?.[0], 4);
  // §4.1.7: no Server record → the KE server's address; §4.1.8: no Port record → 123.
  assert.equal(r.ntpServer, '127.0.0.1');
  assert.equal(r.ntpServerFromRecord, false);
  assert.equal(r.ntpPort, 123);
  assert.equal(r.ntpPortFromRecord, false);
  assert.equal(r.tlsVersion, 'TLSv1.3');
  assert.match(r.certificate.subjectAltName, /DNS:nts\.test/);
  assert.ok(r.certificate.validTo.getTime() > Date.now());
});

test('RFC 8915 §4.1.7, §4.1.8: Server and Port Negotiation records direct the NTP exchange', async (t) => {
  const server = await startFakeKeServer(
    standardResponder([
      { kind: 'ntpv4Server', critical: false, server: '127.0.0.2' },
      { kind: 'ntpv4Port', critical: false, port: 10123 },
    ]),
  );
  t.after(() => server.close());
  const outcome = await performKeyExchange({ ...base, port: server.port });
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.equal(outcome.result.ntpServer, '127.0.0.2');
  assert.equal(outcome.result.ntpPort, 10123);
  assert.ok(outcome.result.ntpServerFromRecord && outcome.result.ntpPortFromRecord);
});

test('AEAD 30: the RFC exporter context only when the server echoes record 1024, else chrony\'s legacy context', async (t) => {
  for (const echo of [true, false]) {
    const server = await startFakeKeServer((request, socket, exported) => {
      const v = validateKeRequest(request);
      assert.ok(v.ok && v.request.compliantGcmSivExporter, 'client offers record 1024 with AEAD 30');
      const contexts = ntpv4ExporterContexts(30, echo);
      exported.push({
        c2s: new Uint8Array(socket.exportKeyingMaterial(16, NTS_EXPORTER_LABEL, Buffer.from(contexts.c2s))),
        s2c: new Uint8Array(socket.exportKeyingMaterial(16, NTS_EXPORTER_LABEL, Buffer.from(contexts.s2c))),
      });
      const records: KeRecord[] = [ntpv4, { kind: 'aeadAlgorithm', critical: true, aeadIds: [30] }];
      if (echo) records.push({ kind: 'chronyCompliantExporter', critical: false });
      socket.end(encodeKeMessage([...records, ...cookies, eom]));
    });
    t.after(() => server.close());
    const outcome = await performKeyExchange({ ...base, port: server.port, aeadIds: [30, 15] });
    assert.ok(outcome.ok, JSON.stringify(outcome));
    assert.equal(outcome.result.aeadId, 30);
    assert.equal(outcome.result.compliantGcmSivExporter, echo);
    assert.equal(outcome.result.c2s.length, 16);
    assert.deepEqual(outcome.result.c2s, server.exported[0]?.c2s);
    assert.deepEqual(outcome.result.s2c, server.exported[0]?.s2c);
  }
});

test('RFC 8915 §4.1.3: an Error record is reported with its code', async (t) => {
  const server = await startFakeKeServer((_req, socket) => socket.end(encodeKeMessage([{ kind: 'error', critical: true, code: 2 }, eom])));
  t.after(() => server.close());
  const outcome = await performKeyExchange({ ...base, port: server.port });
  assert.equal(failureKind(outcome), 'ke_error');
  assert.ok(!outcome.ok && outcome.failure.kind === 'ke_error' && outcome.failure.code === 2);
});

test('RFC 8915 §4.1.5: a server that supports none of the offered AEADs is a negotiation failure', async (t) => {
  const server = await startFakeKeServer((_req, socket) =>
    socket.end(encodeKeMessage([ntpv4, { kind: 'aeadAlgorithm', critical: true, aeadIds: [] }, eom])),
  );
  t.after(() => server.close());
  assert.equal(failureKind(await performKeyExchange({ ...base, port: server.port })), 'negotiation');
});

test('RFC 8915 §3: a TLS server with another ALPN protocol, or none, is an ALPN failure', async (t) => {
  const server = await startFakeKeServer(standardResponder(), { ALPNProtocols: ['http/1.1'] });
  t.after(() => server.close());
  const outcome = await performKeyExchange({ ...base, port: server.port });
  assert.equal(failureKind(outcome), 'alpn');
  const none = await startFakeKeServer(standardResponder(), { ALPNProtocols: [] });
  t.after(() => none.close());
  const noAlpn = await performKeyExchange({ ...base, port: none.port });
  assert.ok(!noAlpn.ok && noAlpn.failure.kind === 'alpn' && /got none/.test(noAlpn.failure.message), JSON.stringify(noAlpn));
});

test('RFC 8915 §3: TLS 1.2 is refused (TLS 1.3 or newer only)', async (t) => {
  const server = await startFakeKeServer(standardResponder(), { maxVersion: 'TLSv1.2' });
  t.after(() => server.close());
  assert.equal(failureKind(await performKeyExchange({ ...base, port: server.port })), 'tls');
});

test('RFC 8915 §3: an untrusted CA or a wrong name is a TLS failure', async (t) => {
  const server = await startFakeKeServer(standardResponder());
  t.after(() => server.close());
  const wrongCa = await performKeyExchange({ ...base, port: server.port, ca: makeOtherCa().certPem });
  assert.equal(failureKind(wrongCa), 'tls');
  const wrongName = await performKeyExchange({ ...base, port: server.port, servername: 'other.test' });
  assert.equal(failureKind(wrongName), 'tls');
  assert.ok(!wrongName.ok && wrongName.failure.kind === 'tls' && wrongName.failure.code === 'ERR_TLS_CERT_ALTNAME_INVALID');
  // The certificate also names 127.0.0.1, so an IP-literal connection without servername verifies.
  const byIp = await performKeyExchange({ host: '127.0.0.1', ca: pki.caPem, port: server.port, timeoutMs: 3000 });
  assert.ok(byIp.ok, JSON.stringify(byIp));
});

test('nothing listening is a connect failure', async () => {
  const probe = createNetServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = portOf(probe);
  await closeServer(probe);
  const outcome = await performKeyExchange({ ...base, port });
  assert.equal(failureKind(outcome), 'connect');
  assert.ok(!outcome.ok && /ECONNREFUSED/.test(outcome.failure.message));
});

test('a server that never completes the handshake or never answers times out', async (t) => {
  const held = new Set<Socket>();
  const silent = createNetServer((socket) => {
    held.add(socket);
    socket.on('error', () => undefined);
  });
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.after(() => {
    for (const socket of held) socket.destroy();
    return closeServer(silent);
  });
  const handshake = await performKeyExchange({ ...base, port: portOf(silent), timeoutMs: 300 });
  assert.ok(!handshake.ok && handshake.failure.kind === 'timeout' && handshake.failure.phase === 'handshake', JSON.stringify(handshake));

  const mute = await startFakeKeServer(() => undefined);
  t.after(() => mute.close());
  const response = await performKeyExchange({ ...base, port: mute.port, timeoutMs: 300 });
  assert.ok(!response.ok && response.failure.kind === 'timeout' && response.failure.phase === 'response', JSON.stringify(response));
});

test('RFC 8915 §4: a response cut short, oversized, or followed by data is malformed', async (t) => {
  const full = encodeKeMessage([ntpv4, { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] }, ...cookies, eom]);
  const truncated = await startFakeKeServer((_req, socket) => socket.end(full.subarray(0, full.length - 6)));
  t.after(() => truncated.close());
  assert.equal(failureKind(await performKeyExchange({ ...base, port: truncated.port })), 'malformed');

  const big = await startFakeKeServer((_req, socket) => socket.end(full));
  t.after(() => big.close());
  assert.equal(failureKind(await performKeyExchange({ ...base, port: big.port, maxResponseBytes: 200 })), 'malformed');

  const trailing = new Uint8Array(full.length + 4);
  trailing.set(full);
  const extra = await startFakeKeServer((_req, socket) => socket.end(trailing));
  t.after(() => extra.close());
  assert.equal(failureKind(await performKeyExchange({ ...base, port: extra.port })), 'malformed');
});

test('an AEAD this client does not implement is refused before connecting', async () => {
  assert.equal(failureKind(await performKeyExchange({ ...base, port: 1, aeadIds: [99] })), 'negotiation');
});
