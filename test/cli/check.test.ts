import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { createServer as createNetServer } from 'node:net';
import { writeFileSync } from 'node:fs';
import { CheckExitCode, parseCheckArgs, parseTarget, runCheck } from '../../src/cli/check.js';
import { WallClock } from '../../src/runtime/clock.js';
import { handleKeRequest } from '../../src/core/ke-handler.js';
import { asciiReferenceId } from '../../src/core/ntp/header.js';
import { encodeKeMessage, scanKeMessage } from '../../src/core/nts/ke-record.js';
import { NTS_EXPORTER_LABEL } from '../../src/core/nts/ids.js';
import { createKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { createResponderContext, respond } from '../../src/core/responder.js';
import { makeOtherCa, makeTestPki } from '../helpers/certs.js';

const pki = makeTestPki(['nts.test', '127.0.0.1']);
after(() => pki.cleanup());
const fillRandom = (b: Uint8Array): void => {
  randomFillSync(b);
};
const clock = new WallClock();

/** How the UDP side misbehaves, if at all. */
type UdpMode = 'normal' | 'flip-tag' | 'mute';

/**
 * A small NTS server made of the core's pieces (ke-handler + responder) behind real node:tls and
 * node:dgram sockets on 127.0.0.1 — enough to drive `ntsd check` end to end without the daemon.
 */
async function startMiniNts(options: { keKeyset?: Keyset; udpMode?: UdpMode; alpn?: string } = {}) {
  const keyset = createKeyset(1_700_000_000, fillRandom, { staleKeyCount: 1 });
  const ctx = createResponderContext({
    keyset,
    serverFields: { leap: 0, stratum: 3, precision: -20, rootDelay: 0, rootDispersion: 0, referenceId: asciiReferenceId('TEST'), referenceTime: { seconds: 0, fraction: 0 } },
    now: () => clock.nowNtp({ seconds: 0, fraction: 0 }),
    fillRandom,
    requireNts: false,
    acceptNtpVersions: [4],
  });
  const udp: UdpSocket = createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    if (options.udpMode === 'mute') return;
    const request = new Uint8Array(msg);
    const out = new Uint8Array(request.length);
    const r = respond(request, clock.nowNtp({ seconds: 0, fraction: 0 }), ctx, out);
    if (r.length === 0) return;
    if (options.udpMode === 'flip-tag') out[r.length - 1] = (out[r.length - 1] ?? 0) ^ 1;
    udp.send(out.subarray(0, r.length), rinfo.port, rinfo.address);
  });
  udp.bind(0, '127.0.0.1');
  await once(udp, 'listening');
  const ntpPort = udp.address().port;

  const sockets = new Set<TLSSocket>();
  const ke = createTlsServer({ key: pki.keyPem, cert: pki.certPem, ALPNProtocols: [options.alpn ?? 'ntske/1'], minVersion: 'TLSv1.3' }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = new Uint8Array(0);
    socket.on('data', (chunk: Buffer) => {
      const next = new Uint8Array(buf.length + chunk.length);
      next.set(buf);
      next.set(chunk, buf.length);
      buf = next;
      if (scanKeMessage(buf).status !== 'complete') return;
      const exportKeys = (c2sContext: Uint8Array, s2cContext: Uint8Array, keyLength: number) => ({
        c2s: new Uint8Array(socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, Buffer.from(c2sContext))),
        s2c: new Uint8Array(socket.exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, Buffer.from(s2cContext))),
      });
      const r = handleKeRequest(buf, exportKeys, options.keKeyset ?? keyset, { aeadIds: [15, 16, 17, 30], ntpPort }, fillRandom);
      socket.end(r.response);
    });
  });
  ke.on('tlsClientError', () => undefined);
  ke.listen(0, '127.0.0.1');
  await once(ke, 'listening');
  const address = ke.address();
  assert.ok(typeof address === 'object' && address !== null);
  return {
    kePort: address.port,
    ntpPort,
    async close(): Promise<void> {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => ke.close(() => resolve()));
      await new Promise<void>((resolve) => udp.close(() => resolve()));
    },
  };
}

async function check(args: string[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await runCheck(args, (line) => lines.push(line));
  return { code, lines };
}

test('parseTarget: HOST, HOST:PORT, [IPv6]:PORT and bare IPv6; default port 4460 (RFC 8915 §7.1)', () => {
  assert.deepEqual(parseTarget('time.example'), { host: 'time.example', port: 4460 });
  assert.deepEqual(parseTarget('time.example:1234'), { host: 'time.example', port: 1234 });
  assert.deepEqual(parseTarget('[::1]:99'), { host: '::1', port: 99 });
  assert.deepEqual(parseTarget('[::1]'), { host: '::1', port: 4460 });
  assert.deepEqual(parseTarget('2001:db8::1'), { host: '2001:db8::1', port: 4460 });
  for (const bad of ['', ':4460', 'host:', 'host:0', 'host:65536', 'host:x', '[::1', '[::1]x']) assert.equal(parseTarget(bad), undefined, bad);
});

test('parseCheckArgs: options and usage errors', () => {
  const ok = parseCheckArgs(['nts.test:4460', '--ca', 'ca.pem', '--count', '5', '--aead', '15,30', '--timeout-ms', '100', '--interval-ms', '0']);
  assert.ok(ok.ok);
  assert.deepEqual(ok.options, { target: 'nts.test:4460', caFile: 'ca.pem', count: 5, aeadIds: [15, 30], timeoutMs: 100, intervalMs: 0 });
  for (const bad of [[], ['a', 'b'], ['a', '--count', '0'], ['a', '--count', 'x'], ['a', '--aead', '99'], ['a', '--bogus']]) {
    assert.equal(parseCheckArgs(bad).ok, false, bad.join(' '));
  }
});

test('ntsd check: KE then authenticated exchanges against a core-built NTS server; prints AEAD, cookies, port, offsets, certificate', async (t) => {
  const server = await startMiniNts();
  t.after(() => server.close());
  const { code, lines } = await check([`127.0.0.1:${server.kePort}`, '--servername', 'nts.test', '--ca', pki.caCertPath, '--count', '3', '--interval-ms', '0']);
  const text = lines.join('\n');
  assert.equal(code, CheckExitCode.ok, text);
  assert.match(text, /^AEAD: 15 \(AEAD_AES_SIV_CMAC_256\)$/m);
  assert.match(text, /^cookies: 8 x \d+ octets$/m);
  assert.match(text, new RegExp(`^NTP server: 127\\.0\\.0\\.1 port ${server.ntpPort} .*from Port Negotiation record`, 'm'));
  assert.match(text, /^certificate subject: .*nts\.test/m);
  assert.match(text, /^certificate expires: \d{4}-\d\d-\d\dT/m);
  const exchanges = lines.filter((l) => /^NTP \d\/3: offset [+-]\d+\.\d{6} s, delay \d+\.\d{6} s, stratum 3, .*authenticated/.test(l));
  assert.equal(exchanges.length, 3, text);
  assert.match(lines[lines.length - 1] ?? '', /^OK: 3\/3 authenticated NTP exchanges/);
});

test('ntsd check: --aead 30 negotiates AES-128-GCM-SIV with a server that follows chrony\'s record 1024', async (t) => {
  const server = await startMiniNts();
  t.after(() => server.close());
  const { code, lines } = await check([`127.0.0.1:${server.kePort}`, '--ca', pki.caCertPath, '--count', '1', '--aead', '30']);
  assert.equal(code, CheckExitCode.ok, lines.join('\n'));
  assert.ok(lines.includes('AEAD: 30 (AEAD_AES_128_GCM_SIV)'));
});

test('ntsd check exit codes: wrong CA → TLS, other ALPN → ALPN, nothing listening → connect', async (t) => {
  const server = await startMiniNts();
  t.after(() => server.close());
  const otherCaPath = `${pki.dir}/unsafe-other-ca.pem`;
  writeFileSync(otherCaPath, makeOtherCa().certPem);
  const tls = await check([`127.0.0.1:${server.kePort}`, '--ca', otherCaPath]);
  assert.equal(tls.code, CheckExitCode.tls, tls.lines.join('\n'));
  assert.match(tls.lines.join('\n'), /^FAIL \(tls\): .*certificate/m);

  const http = await startMiniNts({ alpn: 'http/1.1' });
  t.after(() => http.close());
  const alpn = await check([`127.0.0.1:${http.kePort}`, '--ca', pki.caCertPath]);
  assert.equal(alpn.code, CheckExitCode.alpn, alpn.lines.join('\n'));
  assert.match(alpn.lines.join('\n'), /^FAIL \(alpn\): .*ntske\/1/m);

  const probe = createNetServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const address = probe.address();
  assert.ok(typeof address === 'object' && address !== null);
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const refused = await check([`127.0.0.1:${address.port}`, '--ca', pki.caCertPath]);
  assert.equal(refused.code, CheckExitCode.connect);
  assert.match(refused.lines.join('\n'), /^FAIL \(connect\): .*ECONNREFUSED/m);
});

test('ntsd check exit codes: NTS NAK, bad tag, NTP timeout', async (t) => {
  // Cookies sealed under a keyset the NTP side does not know → the responder NAKs (RFC 8915 §5.7).
  const nakServer = await startMiniNts({ keKeyset: createKeyset(1_700_000_000, fillRandom, { staleKeyCount: 1 }) });
  t.after(() => nakServer.close());
  const nak = await check([`127.0.0.1:${nakServer.kePort}`, '--ca', pki.caCertPath, '--count', '1']);
  assert.equal(nak.code, CheckExitCode.ntsNak, nak.lines.join('\n'));
  assert.match(nak.lines.join('\n'), /^FAIL \(nts_nak\): NTP exchange 1\/1: .*NTSN/m);

  const flip = await startMiniNts({ udpMode: 'flip-tag' });
  t.after(() => flip.close());
  const badTag = await check([`127.0.0.1:${flip.kePort}`, '--ca', pki.caCertPath, '--count', '1']);
  assert.equal(badTag.code, CheckExitCode.ntpAuth, badTag.lines.join('\n'));

  const mute = await startMiniNts({ udpMode: 'mute' });
  t.after(() => mute.close());
  const timeout = await check([`127.0.0.1:${mute.kePort}`, '--ca', pki.caCertPath, '--count', '1', '--timeout-ms', '300']);
  assert.equal(timeout.code, CheckExitCode.timeout, timeout.lines.join('\n'));
});

test('ntsd check exit codes: KE Error record, usage error, unreadable CA file', async (t) => {
  const refuser = createTlsServer({ key: pki.keyPem, cert: pki.certPem, ALPNProtocols: ['ntske/1'] }, (socket) => {
    socket.on('error', () => undefined);
    socket.once('data', () => socket.end(encodeKeMessage([{ kind: 'error', critical: true, code: 2 }, { kind: 'endOfMessage', critical: true }])));
  });
  refuser.listen(0, '127.0.0.1');
  await once(refuser, 'listening');
  t.after(() => new Promise<void>((resolve) => refuser.close(() => resolve())));
  const address = refuser.address();
  assert.ok(typeof address === 'object' && address !== null);
  const refused = await check([`127.0.0.1:${address.port}`, '--ca', pki.caCertPath]);
  assert.equal(refused.code, CheckExitCode.keRefused, refused.lines.join('\n'));
  assert.match(refused.lines.join('\n'), /Error 2 \(Internal Server Error\)/);

  assert.equal((await check(['--count', '2'])).code, CheckExitCode.usage);
  assert.equal((await check(['a:b:c:d'])).code, CheckExitCode.usage);
  const missing = await check(['127.0.0.1:1', '--ca', `${pki.dir}/no-such-ca.pem`]);
  assert.equal(missing.code, CheckExitCode.noInput);
});
