/**
 * RFC 9769 interleaved mode against real chrony clients (`xleave` on the server line): chrony 4.3 (the host's)
 * and chrony 4.6.1 (Debian 13 root, PEERS.md) as NTS clients of ntsd, and chrony 4.3 over plain NTP. Each must
 * report `Interleaved : Yes` in `chronyc ntpdata` (and, with NTS, `Authenticated : Yes`). ntsd runs two NTP
 * threads: chrony sends each request from a new source port, so its exchanges meet through the shared table.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { ensureNtsTestHost, ensureTrixieChrony, NTS_TEST_NAME, startChronyClient, waitFor, type ChronyClient } from './peers.js';
import { startLoopbackNtsd, type LoopbackNtsd } from './ntsd.js';
import { makeTestPki } from '../helpers/certs.js';

ensureNtsTestHost();
ensureTrixieChrony();
const pki = makeTestPki([NTS_TEST_NAME, '127.0.0.1']);
let ntsd: LoopbackNtsd | undefined;

before(async () => {
  ntsd = await startLoopbackNtsd({ certPath: pki.chainPath, keyPath: pki.keyPath, threads: 2 });
});
after(async () => {
  await ntsd?.stop();
  pki.cleanup();
});

/** Waits for an interleaved sample and returns chrony's ntpdata for the source. */
async function interleavedSample(chrony: ChronyClient, what: string, nts: boolean): Promise<Record<string, string>> {
  return waitFor(`${what}: an interleaved sample`, 30_000, () => {
    const source = chrony.ntpdata()[0];
    if (source === undefined || source['Interleaved'] !== 'Yes') return undefined;
    return !nts || source['Authenticated'] === 'Yes' ? source : undefined;
  }, 250).catch((err: unknown) => {
    throw new Error(`${String(err)}\nntpdata:\n${chrony.chronyc('ntpdata')}\nauthdata:\n${chrony.chronyc('authdata')}\nchronyd:\n${chrony.output()}`);
  });
}

for (const build of ['host', 'trixie'] as const) {
  const version = build === 'host' ? '4.3' : '4.6.1';
  test(`chrony ${version} with nts xleave: Interleaved : Yes, Authenticated : Yes`, { timeout: 45_000 }, async (t) => {
    assert.ok(ntsd, 'ntsd started');
    const chrony = await startChronyClient({ kePort: ntsd.kePort, caPath: pki.caCertPath, build, xleave: true });
    t.after(() => chrony.stop());
    const source = await interleavedSample(chrony, `chrony ${version}`, true);
    assert.equal(source['Authenticated'], 'Yes');
    assert.equal(chrony.authdata()[0]?.naks, 0, 'no NTS NAKs');
    assert.equal(source['Remote port'], String(ntsd.ntpPort));
  });
}

test('chrony 4.3 with xleave over plain NTP: Interleaved : Yes', { timeout: 45_000 }, async (t) => {
  assert.ok(ntsd, 'ntsd started');
  const chrony = await startChronyClient({ kePort: ntsd.kePort, ntpPort: ntsd.ntpPort, caPath: pki.caCertPath, name: '127.0.0.1', xleave: true, nts: false });
  t.after(() => chrony.stop());
  const source = await interleavedSample(chrony, 'chrony 4.3 plain', false);
  assert.equal(source['Authenticated'], 'No');
});
