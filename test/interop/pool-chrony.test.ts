/**
 * NTS for pools with real processes (docs/pools.md): an ntsd `[pool-ke]` front end on 127.0.0.1 in front
 * of three ntsd sources on 127.0.0.2–4, each its own daemon with its own cookie keys and its own pool
 * token. Debian's chronyd does NTS-KE at the front end (the pool name), is sent to a source by the
 * Server record and authenticates there. NTP Server Deny is honoured, a wrong token is refused by the
 * source, and a source that stops answering while it holds a client's keys gives that client Error 0xF003,
 * never another source's cookies.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as tls from 'node:tls';
import { performKeyExchange } from '../../src/cli/ke-client.js';
import { ntsExchange } from '../../src/cli/ntp-client.js';
import { NTSKE_ALPN, PoolKeErrorCode } from '../../src/core/nts/ids.js';
import { decodeKeMessage, encodeKeMessage, scanKeMessage, type KeRecord } from '../../src/core/nts/ke-record.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { freePortOn, frontEndToml, metric, scrape, sourceToml } from '../helpers/pool-ke.js';
import { startNtsd, type NtsdProcess } from './ntsd.js';
import { ensureNtsTestHost, NTS_TEST_NAME, startChronyClient, waitFor } from './peers.js';

ensureNtsTestHost();

const SOURCE_HOSTS = ['127.0.0.2', '127.0.0.3', '127.0.0.4'] as const;
const tokenOf = (host: string): string => `pool-token-for-${host}`;

interface KeAnswer {
  readonly records: readonly KeRecord[];
  readonly closed: boolean;
}

/** One raw NTS-KE exchange (TLS to `host`, certificate for nts.test), returning the decoded answer. */
function rawKe(host: string, port: number, caPem: string, records: readonly KeRecord[]): Promise<KeAnswer> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, servername: NTS_TEST_NAME, ca: caPem, ALPNProtocols: [NTSKE_ALPN], minVersion: 'TLSv1.3' });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('KE timed out'));
    }, 10_000);
    socket.on('secureConnect', () => socket.write(encodeKeMessage(records)));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      const bytes = Buffer.concat(chunks);
      const decoded = decodeKeMessage(bytes);
      if (scanKeMessage(bytes).status !== 'complete' || !decoded.ok) {
        reject(new Error(`not one KE message: ${bytes.toString('hex')}`));
        return;
      }
      resolve({ records: decoded.records, closed: true });
      socket.end();
    });
  });
}

const NP0: KeRecord = { kind: 'nextProtocol', critical: true, protocolIds: [0] };
const AEAD15: KeRecord = { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] };
const EOM: KeRecord = { kind: 'endOfMessage', critical: true };
const deny = (server: string): KeRecord => ({ kind: 'ntpServerDeny', critical: false, server });
const errorCodes = (rs: readonly KeRecord[]): number[] => rs.flatMap((r) => (r.kind === 'error' ? [r.code] : []));
const serverOf = (rs: readonly KeRecord[]): string | undefined => rs.flatMap((r) => (r.kind === 'ntpv4Server' ? [r.server] : []))[0];
const cookieCount = (rs: readonly KeRecord[]): number => rs.filter((r) => r.kind === 'newCookie').length;

interface Pool {
  readonly pki: TestPki;
  readonly sources: readonly { host: string; kePort: number; metricsPort: number; process: NtsdProcess }[];
  readonly ntpPort: number;
  readonly frontEnd: NtsdProcess;
  readonly fePort: number;
  readonly feMetricsPort: number;
}

async function startPool(t: TestContext): Promise<Pool> {
  const pki = makeTestPki([NTS_TEST_NAME, 'localhost', '127.0.0.1', ...SOURCE_HOSTS]);
  t.after(() => pki.cleanup());
  const ntpPort = await freePortOn('udp', SOURCE_HOSTS);
  const kePort = await freePortOn('tcp', SOURCE_HOSTS);
  const sources = [];
  for (const host of SOURCE_HOSTS) {
    const metricsPort = await freePortOn('tcp', [host]);
    const process = await startNtsd({ configToml: sourceToml({ host, kePort, ntpPort, metricsPort, pki, token: tokenOf(host) }), startTimeoutMs: 30_000 });
    t.after(() => process.stop());
    sources.push({ host, kePort, metricsPort, process });
  }
  const fePort = await freePortOn('tcp', ['127.0.0.1']);
  const feMetricsPort = await freePortOn('tcp', ['127.0.0.1']);
  const frontEnd = await startNtsd({
    configToml: frontEndToml({ port: fePort, metricsPort: feMetricsPort, pki, sources: sources.map((s) => ({ host: s.host, kePort: s.kePort, token: tokenOf(s.host) })) }),
    startTimeoutMs: 30_000,
  });
  t.after(() => frontEnd.stop());
  // The start-up health check has reached every source.
  await waitFor('front end: every source healthy', 20_000, async () => {
    const text = await scrape('127.0.0.1', feMetricsPort);
    return SOURCE_HOSTS.every((h) => metric(text, `ntsd_pool_ke_source_healthy{source="${h}"}`) === 1) ? true : undefined;
  }, 200);
  return { pki, sources, ntpPort, frontEnd, fePort, feMetricsPort };
}

test('pool: chrony does NTS-KE at an ntsd front end and authenticates at the ntsd source it is sent to', { timeout: 240_000 }, async (t) => {
  const pool = await startPool(t);
  const { pki, fePort, ntpPort } = pool;

  // Our own client first: the cookies from the front end authenticate at the source the Server record names.
  const outcome = await performKeyExchange({ host: '127.0.0.1', port: fePort, ca: pki.caPem, servername: NTS_TEST_NAME, aeadIds: [15], timeoutMs: 10_000 });
  assert.ok(outcome.ok, outcome.ok ? '' : outcome.failure.message);
  const keys = outcome.result;
  assert.ok((SOURCE_HOSTS as readonly string[]).includes(keys.ntpServer), `Server record ${keys.ntpServer}`);
  assert.equal(keys.ntpPort, ntpPort, 'the source\'s Port record is relayed');
  const cookie = keys.cookies[0];
  assert.ok(cookie !== undefined);
  const ntp = await ntsExchange({ server: keys.ntpServer, port: keys.ntpPort, aeadId: keys.aeadId, c2s: keys.c2s, s2c: keys.s2c, cookie, placeholders: 0, timeoutMs: 3000 });
  assert.ok(ntp.ok, ntp.ok ? '' : ntp.failure.message);
  // …and at no other source (each has its own cookie keys).
  const other = SOURCE_HOSTS.find((h) => h !== keys.ntpServer) ?? '';
  const elsewhere = await ntsExchange({ server: other, port: ntpPort, aeadId: keys.aeadId, c2s: keys.c2s, s2c: keys.s2c, cookie: keys.cookies[1] ?? cookie, placeholders: 0, timeoutMs: 3000 });
  assert.equal(elsewhere.ok ? 'authenticated' : elsewhere.failure.kind, 'nts_nak');

  // chrony: KE at nts.test (the front end), NTP at the source.
  const chrony = await startChronyClient({ kePort: fePort, caPath: pki.caCertPath });
  t.after(() => chrony.stop());
  const sample = await waitFor('chrony: an authenticated sample from a source', 60_000, () => {
    const s = chrony.ntpdata()[0];
    return s !== undefined && s['Authenticated'] === 'Yes' && Number(s['Total valid RX']) >= 1 ? s : undefined;
  }, 250).catch((err: unknown) => {
    throw new Error(`${String(err)}\nauthdata:\n${chrony.chronyc('authdata')}\nntpdata:\n${chrony.chronyc('ntpdata')}\nchronyd:\n${chrony.output()}\nfront end:\n${pool.frontEnd.output().slice(-3000)}`);
  });
  const remote = sample['Remote address']?.split(' ')[0] ?? '';
  assert.ok((SOURCE_HOSTS as readonly string[]).includes(remote), `chrony went to a source (${remote})`);
  assert.equal(sample['Remote port'], String(ntpPort));
  assert.equal(chrony.authdata()[0]?.naks, 0);

  // Metrics on both sides (KE threads report about once a second): the front end's sessions, in the pool
  // series and in the KE listener's own (the front end is a KE listener), and the sources' pool requests.
  await waitFor('the front end counts both sessions', 10_000, async () => {
    const feText = await scrape('127.0.0.1', pool.feMetricsPort);
    const pooled = metric(feText, 'ntsd_pool_ke_sessions_total{outcome="success"}');
    const ke = metric(feText, 'ntsd_ke_sessions_total{outcome="success"}');
    return pooled >= 2 && ke === pooled && metric(feText, 'ntsd_ke_connections_accepted_total') >= 2 ? true : undefined;
  }, 250);
  await waitFor('the sources count both fixed key requests', 10_000, async () => {
    let fixedKeys = 0;
    for (const s of pool.sources) fixedKeys += metric(await scrape(s.host, s.metricsPort), 'ntsd_ke_pool_requests_total{kind="fixed_key",outcome="success"}');
    return fixedKeys >= 2 ? true : undefined;
  }, 250);
});

test('pool: a denied source is not chosen; a wrong token is refused; a source that stops answering with the keys gives 0xF003', { timeout: 240_000 }, async (t) => {
  const pool = await startPool(t);
  const { pki, fePort } = pool;
  const [first, second, third] = pool.sources;
  assert.ok(first !== undefined && second !== undefined && third !== undefined);

  for (let i = 0; i < 6; i++) {
    const r = await rawKe('127.0.0.1', fePort, pki.caPem, [NP0, deny(first.host), AEAD15, deny(second.host), EOM]);
    assert.equal(serverOf(r.records), third.host, 'only the source nobody denied');
    assert.equal(cookieCount(r.records), 8);
  }

  // Straight at a source: the right token gets the capability lists; a wrong one Error 1 and a close.
  const token = (t: string): KeRecord => ({ kind: 'authenticationToken', critical: false, token: new TextEncoder().encode(t) });
  const query: KeRecord[] = [{ kind: 'supportedAlgorithmList', critical: true, algorithms: [] }, { kind: 'supportedNextProtocolList', critical: true, protocolIds: [] }, EOM];
  const good = await rawKe(first.host, first.kePort, pki.caPem, [token(tokenOf(first.host)), ...query]);
  assert.deepEqual(good.records.map((r) => r.kind), ['supportedAlgorithmList', 'supportedNextProtocolList', 'endOfMessage']);
  for (const wrong of [tokenOf(second.host), 'pool-token-for-127.0.0.', `${tokenOf(first.host)}x`]) {
    const bad = await rawKe(first.host, first.kePort, pki.caPem, [token(wrong), ...query]);
    assert.deepEqual(errorCodes(bad.records), [1], wrong);
    assert.ok(bad.closed);
  }

  // The third source stops (SIGSTOP) while the front end holds a kept connection and its capabilities:
  // the client, who denied the other two, gets 0xF003 after the upstream deadline, and no cookies.
  await new Promise((resolve) => setTimeout(resolve, 1500)); // let the KE threads' counts arrive
  const before = await Promise.all([first, second].map(async (s) => metric(await scrape(s.host, s.metricsPort), 'ntsd_ke_pool_requests_total{kind="fixed_key",outcome="success"}')));
  process.kill(third.process.pid, 'SIGSTOP');
  try {
    const started = Date.now();
    const r = await rawKe('127.0.0.1', fePort, pki.caPem, [NP0, AEAD15, deny(first.host), deny(second.host), EOM]);
    assert.deepEqual(errorCodes(r.records), [PoolKeErrorCode.couldNotGetCookies]);
    assert.equal(cookieCount(r.records), 0);
    assert.ok(Date.now() - started >= 2000, 'the front end waited for the upstream deadline');
  } finally {
    process.kill(third.process.pid, 'SIGCONT');
  }
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const afterCounts = await Promise.all([first, second].map(async (s) => metric(await scrape(s.host, s.metricsPort), 'ntsd_ke_pool_requests_total{kind="fixed_key",outcome="success"}')));
  assert.deepEqual(afterCounts, before, 'no other source was asked for cookies for those keys');
});
