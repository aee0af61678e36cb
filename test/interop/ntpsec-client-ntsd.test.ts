/**
 * NTPsec 1.2.2 ntpd as an NTS client of the real ntsd daemon on loopback (PEERS.md): peerstats must show
 * samples with the authentic (0x2000) and reachable (0x1000) status bits. NTPsec sends NTP to port 123
 * unless the KE response carries a Port Negotiation record, so this also proves ntsd sends one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ensureNtsTestHost, NTS_TEST_NAME, PEER_STATUS_AUTHENTIC, PEER_STATUS_REACHABLE, startNtpsecClient, waitFor } from './peers.js';
import { startLoopbackNtsd } from './ntsd.js';
import { makeTestPki } from '../helpers/certs.js';

ensureNtsTestHost();

test('NTPsec ntpd as an NTS client of ntsd: authentic and reachable peerstats samples', { timeout: 30_000 }, async (t) => {
  const pki = makeTestPki([NTS_TEST_NAME, '127.0.0.1']);
  t.after(() => pki.cleanup());
  const ntsd = await startLoopbackNtsd({ certPath: pki.chainPath, keyPath: pki.keyPath });
  t.after(() => ntsd.stop());
  const ntpsec = await startNtpsecClient({ kePort: ntsd.kePort, caPath: pki.caCertPath });
  t.after(() => ntpsec.stop());

  const line = await waitFor('NTPsec: an authentic, reachable peerstats line', 25_000, () =>
    ntpsec.peerstats().find((l) => (l.status & PEER_STATUS_AUTHENTIC) !== 0 && (l.status & PEER_STATUS_REACHABLE) !== 0),
  500).catch((err: unknown) => {
    throw new Error(`${String(err)}\nntpd log:\n${ntpsec.log()}\nntsd:\n${ntsd.output()}`);
  });
  assert.equal(line.address, '127.0.0.1');
  assert.match(ntpsec.log(), new RegExp(`NTSc: Using port ${ntsd.ntpPort}`), 'NTPsec used the Port Negotiation port');
  assert.match(ntpsec.log(), /NTSc: Got \d+ cookies, length \d+, aead=(15|16|17)\./);
});
