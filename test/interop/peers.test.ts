/**
 * Self-test of the interop harness against chrony's own NTS server: the port shim moves binds, and
 * chrony and NTPsec, started by peers.ts, get authenticated NTS samples. If these fail, the ntsd
 * interop tests cannot be trusted either.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  buildPortshim,
  ensureNtpsec,
  ensureNtsTestHost,
  freeTcpPort,
  freeUdpPort,
  makeWorkDir,
  parseChronycAuthdata,
  parseChronycNtpdata,
  parsePeerstats,
  PEER_STATUS_AUTHENTIC,
  PEER_STATUS_REACHABLE,
  startChronyClient,
  startChronyServer,
  startNtpsecClient,
  waitFor,
} from './peers.js';
import { makeTestPki } from '../helpers/certs.js';
import { rmSync } from 'node:fs';

ensureNtsTestHost();
const pki = makeTestPki(['nts.test', '127.0.0.1']);
after(() => pki.cleanup());

test('parsers read chronyc authdata/ntpdata and NTPsec peerstats output', () => {
  const authdata = parseChronycAuthdata(
    [
      'Name/IP address             Mode KeyID Type KLen Last Atmp  NAK Cook CLen',
      '=========================================================================',
      '127.0.0.1                    NTS     1   15  256   10    0    0    8  100',
    ].join('\n'),
  );
  assert.deepEqual(authdata, [{ address: '127.0.0.1', mode: 'NTS', keyId: 1, type: 15, keyLengthBits: 256, naks: 0, cookies: 8, cookieLength: 100 }]);
  const ntpdata = parseChronycNtpdata('\nRemote address  : 127.0.0.1 (7F000001)\nAuthenticated   : Yes\nTotal valid RX  : 18\n');
  assert.equal(ntpdata[0]?.['Authenticated'], 'Yes');
  assert.equal(ntpdata[0]?.['Total valid RX'], '18');
  const stats = parsePeerstats('61366 67714.192 127.0.0.1 f014 0.000016603 0.000055806 7.937500060 0.000000000\n');
  assert.equal(stats[0]?.status, 0xf014);
  assert.equal(stats[0]?.address, '127.0.0.1');
});

test('portshim.c moves binds of ports 123 and 4460 to the SHIM_* ports on loopback, and leaves others alone', async (t) => {
  const dir = makeWorkDir('portshim');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const shim = buildPortshim(dir);
  const ntpPort = await freeUdpPort();
  const kePort = await freeTcpPort();
  const script = `
    const dgram = require('node:dgram'); const net = require('node:net');
    const u = dgram.createSocket('udp4');
    u.bind(123, '0.0.0.0', () => {
      const s = net.createServer().listen(4460, '0.0.0.0', () => {
        const o = net.createServer().listen(0, '127.0.0.1', () => {
          console.log(JSON.stringify({ udp: u.address(), tcp: s.address(), other: o.address() }));
          u.close(); s.close(); o.close();
        });
      });
    });`;
  const r = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8',
    timeout: 10_000,
    env: { ...process.env, LD_PRELOAD: shim, SHIM_NTP_PORT: String(ntpPort), SHIM_NTSKE_PORT: String(kePort) },
  });
  assert.equal(r.status, 0, r.stderr);
  const bound = JSON.parse(r.stdout) as Record<'udp' | 'tcp' | 'other', { address: string; port: number }>;
  assert.deepEqual([bound.udp.address, bound.udp.port], ['127.0.0.1', ntpPort], 'UDP 0.0.0.0:123 → 127.0.0.1:SHIM_NTP_PORT');
  assert.deepEqual([bound.tcp.address, bound.tcp.port], ['127.0.0.1', kePort], 'TCP 0.0.0.0:4460 → 127.0.0.1:SHIM_NTSKE_PORT');
  assert.ok(bound.other.port !== 0 && bound.other.port !== ntpPort && bound.other.port !== kePort, 'port 0 untouched');
});

test('ensureNtpsec finds NTPsec ntpd (unpacked by .ci/run)', () => {
  ensureNtpsec();
});

test('chrony and NTPsec clients get authenticated NTS samples from a chrony NTS server', { timeout: 30_000 }, async (t) => {
  const ntpPort = await freeUdpPort();
  const kePort = await freeTcpPort();
  const server = await startChronyServer({ ntpPort, kePort, certPath: pki.certPath, keyPath: pki.keyPath });
  t.after(() => server.stop());
  const chrony = await startChronyClient({ kePort, caPath: pki.caCertPath });
  t.after(() => chrony.stop());
  const ntpsec = await startNtpsecClient({ kePort, caPath: pki.caCertPath });
  t.after(() => ntpsec.stop());

  const ntpdata = await waitFor('chrony: an authenticated sample', 15_000, () => {
    const source = chrony.ntpdata()[0];
    return source !== undefined && source['Authenticated'] === 'Yes' && Number(source['Total valid RX']) > 0 ? source : undefined;
  }, 250).catch((err: unknown) => {
    throw new Error(`${String(err)}\nchronyc ntpdata:\n${chrony.chronyc('ntpdata')}\nchronyd:\n${chrony.output()}`);
  });
  assert.equal(ntpdata['Remote port'], String(ntpPort), 'chrony used the Port Negotiation port');
  const auth = chrony.authdata()[0];
  assert.equal(auth?.mode, 'NTS');
  assert.equal(auth?.type, 15);
  assert.ok((auth?.cookies ?? 0) > 0);

  const line = await waitFor('NTPsec: an authentic, reachable peerstats line', 25_000, () =>
    ntpsec.peerstats().find((l) => (l.status & PEER_STATUS_AUTHENTIC) !== 0 && (l.status & PEER_STATUS_REACHABLE) !== 0),
  500).catch((err: unknown) => {
    throw new Error(`${String(err)}\nntpd log:\n${ntpsec.log()}`);
  });
  assert.equal(line.address, '127.0.0.1');
  assert.match(ntpsec.log(), new RegExp(`NTSc: Using port ${ntpPort}`));
});
