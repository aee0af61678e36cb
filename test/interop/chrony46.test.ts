/**
 * Debian 13's chrony 4.6.1 (in the debootstrap root test/install-peers.sh builds, PEERS.md) against ntsd in
 * both directions: as an NTS client of the real daemon with `ntsaeads 30` (AES-128-GCM-SIV, with chrony's
 * key-export rule for it), with `ntsaeads 15` and with its default offer ("30 15"), and as an NTS server probed by
 * `ntsd check` with each AEAD.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { CheckExitCode, runCheck } from '../../src/cli/check.js';
import {
  ensureNtsTestHost,
  ensureTrixieChrony,
  freeTcpPort,
  freeUdpPort,
  NTS_TEST_NAME,
  startChronyClient,
  startChronyServer,
  waitFor,
  type ChronyServer,
} from './peers.js';
import { startLoopbackNtsd, type LoopbackNtsd } from './ntsd.js';
import { makeTestPki } from '../helpers/certs.js';
import { getOpenSslAeads } from '../../src/runtime/aead-openssl.js';

ensureNtsTestHost();
ensureTrixieChrony();
const pki = makeTestPki([NTS_TEST_NAME, '127.0.0.1']);
let ntsd: LoopbackNtsd | undefined;
let server: ChronyServer | undefined;

before(async () => {
  ntsd = await startLoopbackNtsd({ certPath: pki.chainPath, keyPath: pki.keyPath });
  server = await startChronyServer({ ntpPort: await freeUdpPort(), kePort: await freeTcpPort(), certPath: pki.certPath, keyPath: pki.keyPath, build: 'trixie' });
});
after(async () => {
  await ntsd?.stop();
  await server?.stop();
  pki.cleanup();
});

test('chrony 4.6.1 with its default offer ("30 15"): ntsd picks 30 where OpenSSL runs it, else 15 (never 30 on JavaScript AES when 15 runs on OpenSSL)', { timeout: 40_000 }, async (t) => {
  assert.ok(ntsd, 'ntsd started');
  // The daemon runs this Node and this addon (or none, under NTSD_NATIVE=0): what loads here loads there.
  const openssl = getOpenSslAeads();
  const expected = openssl.has(30) || !openssl.has(15) ? 30 : 15;
  const chrony = await startChronyClient({ kePort: ntsd.kePort, caPath: pki.caCertPath, build: 'trixie' });
  t.after(() => chrony.stop());
  await waitFor('chrony 4.6.1: an authenticated sample from ntsd', 25_000, () => {
    const source = chrony.ntpdata()[0];
    return source !== undefined && source['Authenticated'] === 'Yes' && Number(source['Total valid RX']) > 1 ? source : undefined;
  }, 250).catch((err: unknown) => {
    throw new Error(`${String(err)}\nauthdata:\n${chrony.chronyc('authdata')}\nchronyd:\n${chrony.output()}\nntsd:\n${ntsd?.output() ?? ''}`);
  });
  const auth = chrony.authdata()[0];
  assert.equal(auth?.mode, 'NTS', chrony.chronyc('authdata'));
  assert.equal(auth?.type, expected, `OpenSSL AEADs here: ${[...openssl.keys()].join(', ') || 'none'}\n${chrony.chronyc('authdata')}`);
  assert.equal(auth?.naks, 0, 'no NTS NAKs');
});

for (const aead of [30, 15]) {
  test(`chrony 4.6.1 with ntsaeads ${aead} as an NTS client of ntsd: AEAD ${aead} negotiated, Authenticated: Yes, no NAKs`, { timeout: 40_000 }, async (t) => {
    assert.ok(ntsd, 'ntsd started');
    const chrony = await startChronyClient({ kePort: ntsd.kePort, caPath: pki.caCertPath, build: 'trixie', aeads: [aead] });
    t.after(() => chrony.stop());
    const sample = await waitFor('chrony 4.6.1: an authenticated sample from ntsd', 25_000, () => {
      const source = chrony.ntpdata()[0];
      return source !== undefined && source['Authenticated'] === 'Yes' && Number(source['Total valid RX']) > 1 ? source : undefined;
    }, 250).catch((err: unknown) => {
      throw new Error(`${String(err)}\nauthdata:\n${chrony.chronyc('authdata')}\nntpdata:\n${chrony.chronyc('ntpdata')}\nchronyd:\n${chrony.output()}\nntsd:\n${ntsd?.output() ?? ''}`);
    });
    assert.equal(sample['Remote port'], String(ntsd.ntpPort), 'chrony sent NTP to the Port Negotiation port');
    const auth = chrony.authdata()[0];
    assert.equal(auth?.mode, 'NTS', chrony.chronyc('authdata'));
    assert.equal(auth?.type, aead, chrony.chronyc('authdata'));
    assert.equal(auth?.keyLengthBits, aead === 30 ? 128 : 256, chrony.chronyc('authdata'));
    assert.ok((auth?.cookies ?? 0) > 0, chrony.chronyc('authdata'));
    assert.equal(auth?.naks, 0, 'no NTS NAKs');
  });

  test(`ntsd check against chrony 4.6.1 as a server with --aead ${aead}: negotiated and authenticated`, { timeout: 30_000 }, async () => {
    assert.ok(server, 'chrony 4.6.1 server started');
    const lines: string[] = [];
    const code = await runCheck([`${NTS_TEST_NAME}:${server.kePort}`, '--ca', pki.caCertPath, '--aead', String(aead), '--count', '2', '--interval-ms', '100'], (l) => lines.push(l));
    const text = lines.join('\n');
    assert.equal(code, CheckExitCode.ok, `${text}\nchronyd:\n${server.output()}`);
    assert.match(text, new RegExp(`^AEAD: ${aead} \\(`, 'm'));
    assert.equal(lines.filter((l) => /^NTP \d\/2: .*authenticated/.test(l)).length, 2, text);
  });
}
