/**
 * chronyd 4.3 as an NTS client of the real ntsd daemon on loopback (PEERS.md): chrony must hold NTS
 * cookies and count authenticated samples, with NTP sent to the port from ntsd's Port Negotiation record.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ensureNtsTestHost, NTS_TEST_NAME, startChronyClient, waitFor } from './peers.js';
import { startLoopbackNtsd } from './ntsd.js';
import { makeTestPki } from '../helpers/certs.js';

ensureNtsTestHost();

test('chronyd as an NTS client of ntsd: NTS mode, cookies, Authenticated: Yes, valid RX > 0', { timeout: 30_000 }, async (t) => {
  const pki = makeTestPki([NTS_TEST_NAME, '127.0.0.1']);
  t.after(() => pki.cleanup());
  const ntsd = await startLoopbackNtsd({ certPath: pki.chainPath, keyPath: pki.keyPath });
  t.after(() => ntsd.stop());
  const chrony = await startChronyClient({ kePort: ntsd.kePort, caPath: pki.caCertPath });
  t.after(() => chrony.stop());

  const sample = await waitFor('chrony: an authenticated sample from ntsd', 20_000, () => {
    const source = chrony.ntpdata()[0];
    return source !== undefined && source['Authenticated'] === 'Yes' && Number(source['Total valid RX']) > 0 ? source : undefined;
  }, 250).catch((err: unknown) => {
    throw new Error(
      `${String(err)}\nchronyc authdata:\n${chrony.chronyc('authdata')}\nchronyc ntpdata:\n${chrony.chronyc('ntpdata')}\n` +
        `chronyd:\n${chrony.output()}\nntsd:\n${ntsd.output()}`,
    );
  });
  assert.equal(sample['Remote port'], String(ntsd.ntpPort), 'chrony sent NTP to the Port Negotiation port');
  assert.equal(sample['Mode'], 'Server');
  const auth = chrony.authdata()[0];
  assert.equal(auth?.mode, 'NTS', chrony.chronyc('authdata'));
  assert.equal(auth?.type, 15, 'chrony 4.3 negotiates AEAD 15');
  assert.ok((auth?.cookies ?? 0) > 0, chrony.chronyc('authdata'));
  assert.equal(auth?.naks, 0, 'no NTS NAKs');
});

test('chronyd authenticates against a listener with two certificate pairs, through the second name (its SNI)', { timeout: 30_000 }, async (t) => {
  // The first (default) pair names another host; only the second names nts.test, the name chrony asks for.
  const pki = makeTestPki(['time.test', '127.0.0.1']);
  t.after(() => pki.cleanup());
  const second = pki.writeLeaf('nts-test', [NTS_TEST_NAME]);
  const ntsd = await startLoopbackNtsd({ certPath: pki.chainPath, keyPath: pki.keyPath, moreCertificates: [{ certPath: second.chainPath, keyPath: second.keyPath }] });
  t.after(() => ntsd.stop());
  const chrony = await startChronyClient({ kePort: ntsd.kePort, caPath: pki.caCertPath });
  t.after(() => chrony.stop());
  await waitFor('chrony: an authenticated sample through the second certificate', 20_000, () => {
    const source = chrony.ntpdata()[0];
    return source !== undefined && source['Authenticated'] === 'Yes' && Number(source['Total valid RX']) > 0 ? source : undefined;
  }, 250).catch((err: unknown) => {
    throw new Error(`${String(err)}\nchronyc authdata:\n${chrony.chronyc('authdata')}\nchronyd:\n${chrony.output()}\nntsd:\n${ntsd.output()}`);
  });
  const auth = chrony.authdata()[0];
  assert.equal(auth?.mode, 'NTS', chrony.chronyc('authdata'));
  assert.ok((auth?.cookies ?? 0) > 0, chrony.chronyc('authdata'));
});
