/**
 * A fleet on one machine, with the real daemon (docs/fleet.md): a KE-only node and NTP-only nodes that
 * share master keys, in `ratchet` mode (one shared seed) and in `follow` mode (a copied key file).
 * The multi-address version with chrony as the client is test/interop/fleet-chrony.test.ts.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestPki, type TestPki } from './helpers/certs.js';
import {
  freeTcpPort,
  freeUdpPort,
  keyExchange,
  makeTempDir,
  ntsQuery,
  removeDir,
  runCli,
  sample,
  scrapeMetrics,
  startDaemon,
  type RunningDaemon,
} from './helpers/daemon.js';
import { createKeyset, decodeKeyset, encodeKeyset, rotateKeyset } from '../src/core/nts/keyset.js';
import { randomFillSync } from 'node:crypto';

const fill = (b: Uint8Array): void => {
  randomFillSync(b);
};

function keyNodeToml(o: { kePort: number; pki: TestPki; ntpServer: string; ntpPort: number; keyset: readonly string[] }): string {
  return [
    '[[nts-ke-server]]',
    `listen = "127.0.0.1:${o.kePort}"`,
    `certificate-chain-path = ${JSON.stringify(o.pki.chainPath)}`,
    `private-key-path = ${JSON.stringify(o.pki.keyPath)}`,
    'certificate-reload-interval-s = 0',
    'client-rate-limit-interval-s = 0',
    `ntp-server = ${JSON.stringify(o.ntpServer)}`,
    `ntp-port = ${o.ntpPort}`,
    '',
    '[keyset]',
    ...o.keyset,
    '',
    '[observability]',
    'metrics-listen = "127.0.0.1:0"',
    '',
  ].join('\n');
}

function ntpNodeToml(o: { ntpPort: number; keyset: readonly string[] }): string {
  return [
    '[[server]]',
    `listen = "127.0.0.1:${o.ntpPort}"`,
    '',
    '[keyset]',
    ...o.keyset,
    '',
    '[observability]',
    'metrics-listen = "127.0.0.1:0"',
    '',
    '[worker-pool]',
    'threads = 1',
    '',
    '[time-source]',
    'mode = "static"',
    'local-stratum = 2',
    '',
  ].join('\n');
}

async function node(t: TestContext, toml: string, name: string): Promise<RunningDaemon> {
  const dir = makeTempDir(name);
  t.after(() => removeDir(dir));
  for (const line of toml.split('\n')) {
    const m = /^(?:shared-secret-path|accept-shared-secret-path) = "(.*)"$/.exec(line);
    if (m?.[1] !== undefined && !m[1].startsWith('/')) throw new Error('seed paths in these tests are absolute');
  }
  const d = await startDaemon({ toml, dir });
  t.after(() => d.stop());
  return d;
}

function writeSeed(dir: string, name: string, fillByte: number): string {
  const path = join(dir, name);
  writeFileSync(path, Uint8Array.from({ length: 32 }, (_, i) => (fillByte + i * 17) & 0xff), { mode: 0o600 });
  return path;
}

test('ratchet fleet: a KE-only node sends clients to NTP-only nodes; every node with the seed opens the cookies; another seed NAKs', { timeout: 90_000 }, async (t) => {
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  t.after(() => pki.cleanup());
  const seeds = makeTempDir('seeds');
  t.after(() => removeDir(seeds));
  const seed = writeSeed(seeds, 'fleet.seed', 3);
  const otherSeed = writeSeed(seeds, 'other.seed', 200);
  const ratchet = (path: string): string[] => ['mode = "ratchet"', `shared-secret-path = ${JSON.stringify(path)}`, 'key-rotation-interval-s = 3600', 'stale-key-count = 2'];

  const ntpPorts = [await freeUdpPort(), await freeUdpPort(), await freeUdpPort()];
  const ntpNodes = await Promise.all(ntpPorts.map((ntpPort, i) => node(t, ntpNodeToml({ ntpPort, keyset: ratchet(seed) }), `ntp${i}`)));
  const stranger = await node(t, ntpNodeToml({ ntpPort: await freeUdpPort(), keyset: ratchet(otherSeed) }), 'stranger');
  const ke = await node(t, keyNodeToml({ kePort: await freeTcpPort(), pki, ntpServer: '127.0.0.1', ntpPort: ntpPorts[0] ?? 0, keyset: ratchet(seed) }), 'ke');

  assert.deepEqual(ke.ntp, [], 'a KE-only node binds no NTP socket');
  assert.equal(ke.started['role'], 'ke-only');
  assert.equal(ntpNodes[0]?.started['role'], 'ntp-only');
  assert.deepEqual(ntpNodes[0]?.ntsKe, [], 'an NTP-only node binds no KE socket');

  const keys = await keyExchange(ke, pki.caPem);
  assert.equal(keys.ntpServer, '127.0.0.1');
  assert.ok(keys.ntpServerFromRecord, 'Server Negotiation record sent');
  assert.equal(keys.ntpPort, ntpPorts[0]);
  assert.ok(keys.ntpPortFromRecord, 'Port Negotiation record sent');

  // The cookies of one KE session authenticate at every NTP node (one cookie per node, RFC 8915 §5.7).
  for (const [i, port] of ntpPorts.entries()) {
    const cookie = keys.cookies[i];
    assert.ok(cookie !== undefined);
    const r = await ntsQuery({ ...keys, ntpPort: port }, cookie);
    assert.ok(r.ok, `NTP node ${i}: ${r.ok ? '' : r.failure.message}`);
  }
  const strangerPort = stranger.ntp[0]?.port ?? 0;
  const nak = await ntsQuery({ ...keys, ntpPort: strangerPort }, keys.cookies[3] ?? new Uint8Array());
  assert.equal(nak.ok ? 'ok' : nak.failure.kind, 'nts_nak', 'a node with another seed cannot open the cookie');

  // Every node reports the same mode and current key id (never key bytes).
  const ids = new Set<number>();
  for (const d of [ke, ...ntpNodes]) {
    assert.ok(d.metrics !== undefined);
    const m = await scrapeMetrics(d.metrics);
    assert.equal(sample(m, 'ntsd_keyset_mode{mode="ratchet"}'), 1);
    assert.equal(sample(m, 'ntsd_keyset_mode{mode="local"}'), 0);
    ids.add(sample(m, 'ntsd_keyset_current_key_id'));
  }
  assert.equal(ids.size, 1, `nodes disagree on the current key: ${[...ids].join(', ')}`);
  const strangerMetrics = await scrapeMetrics(stranger.metrics ?? { host: '', port: 0 });
  assert.notEqual(sample(strangerMetrics, 'ntsd_keyset_current_key_id'), [...ids][0]);

  // keyset inspect on a ratchet node: the same current id, no key bytes.
  const inspect = await runCli(['keyset', 'inspect', '-c', ke.configPath]);
  assert.equal(inspect.code, 0, inspect.stderr);
  const currentHex = ([...ids][0] ?? 0).toString(16).padStart(8, '0');
  assert.match(inspect.stdout, new RegExp(`mode: ratchet`));
  assert.match(inspect.stdout, new RegExp(`current\\s+${currentHex}`));
  assert.match(inspect.stdout, /next\s+[0-9a-f]{8}\s.*starts in/);
  assert.doesNotMatch(inspect.stdout, /[0-9a-f]{64}/, 'no key bytes');
  assert.ok(!inspect.stdout.includes(readFileSync(seed).toString('hex').slice(0, 16)), 'no seed bytes');

  // Killing the KE node does not stop the NTP nodes: the cookies from the reply keep working.
  await ke.stop();
  const again = await ntsQuery({ ...keys, ntpPort: ntpPorts[1] ?? 0 }, keys.cookies[4] ?? new Uint8Array());
  assert.ok(again.ok, again.ok ? '' : again.failure.message);
});

test('follow fleet: an NTP-only node follows a copied key file; newer copies swap in on SIGHUP, older ones are refused', { timeout: 90_000 }, async (t) => {
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  t.after(() => pki.cleanup());
  const shared = makeTempDir('follow');
  t.after(() => removeDir(shared));
  // The writer's key file, made as a writer would have made it 10 minutes ago.
  const writerPath = join(shared, 'writer.keys');
  const copyPath = join(shared, 'copy.keys');
  const nowS = Math.floor(Date.now() / 1000);
  const v1 = createKeyset(nowS - 600, fill, { staleKeyCount: 2 });
  const v1Bytes = encodeKeyset(v1);
  writeFileSync(writerPath, v1Bytes, { mode: 0o600 });
  copyFileSync(writerPath, copyPath);

  const ntpPort = await freeUdpPort();
  const follower = await node(t, ntpNodeToml({ ntpPort, keyset: ['mode = "follow"', `key-storage-path = ${JSON.stringify(copyPath)}`, 'follow-poll-interval-s = 3600', 'key-rotation-interval-s = 3600'] }), 'follower');
  const writer = await node(
    t,
    keyNodeToml({ kePort: await freeTcpPort(), pki, ntpServer: '127.0.0.1', ntpPort, keyset: [`key-storage-path = ${JSON.stringify(writerPath)}`, 'key-rotation-interval-s = 3600', 'stale-key-count = 2'] }),
    'writer',
  );
  const keys = await keyExchange(writer, pki.caPem);
  assert.equal(keys.ntpPort, ntpPort);
  const first = await ntsQuery(keys, keys.cookies[0] ?? new Uint8Array());
  assert.ok(first.ok, first.ok ? '' : first.failure.message);
  assert.deepEqual(readFileSync(copyPath), Buffer.from(v1Bytes), 'the follower never writes its file');

  // The writer rotates (here: a rotated copy of its file, as after one interval) and the copy lands.
  const decoded = decodeKeyset(readFileSync(writerPath));
  assert.ok(decoded.ok);
  const v2 = rotateKeyset(decoded.keyset, nowS, fill);
  writeFileSync(copyPath, encodeKeyset(v2));
  const before = follower.lines().length;
  follower.signal('SIGHUP');
  await follower.waitForLine((l) => l['msg'] === 'followed key file swapped in', 10_000, before);
  const m = await scrapeMetrics(follower.metrics ?? { host: '', port: 0 });
  assert.equal(sample(m, 'ntsd_keyset_current_key_id'), v2.current.id);
  assert.equal(sample(m, 'ntsd_keyset_mode{mode="follow"}'), 1);
  // Old cookies still open (the old current key is now stale).
  const second = await ntsQuery(keys, keys.cookies[1] ?? new Uint8Array());
  assert.ok(second.ok, second.ok ? '' : second.failure.message);

  // An older file (the v1 copy again) is refused and logged; the keys in use keep serving.
  writeFileSync(copyPath, v1Bytes);
  const mark = follower.lines().length;
  follower.signal('SIGHUP');
  const refused = await follower.waitForLine((l) => l['msg'] === 'followed key file refused; the keys in use keep serving', 10_000, mark);
  assert.equal(refused['reason'], 'older');
  const third = await ntsQuery(keys, keys.cookies[2] ?? new Uint8Array());
  assert.ok(third.ok, third.ok ? '' : third.failure.message);
  const after = await scrapeMetrics(follower.metrics ?? { host: '', port: 0 });
  assert.equal(sample(after, 'ntsd_keyset_current_key_id'), v2.current.id);
  assert.equal(sample(after, 'ntsd_keyset_rotations_total{result="failure"}'), 1);

  // keyset inspect on the follower reads the followed file (here: the older copy now on disk), never key bytes.
  const inspect = await runCli(['keyset', 'inspect', '-c', follower.configPath]);
  assert.equal(inspect.code, 0, inspect.stderr);
  assert.match(inspect.stdout, /mode: follow/);
  assert.match(inspect.stdout, /followed: written by another node/);
  assert.match(inspect.stdout, new RegExp(`current\\s+${v1.current.id.toString(16).padStart(8, '0')}`));
  assert.doesNotMatch(inspect.stdout, /[0-9a-f]{64}/);
});

test('reseeding a ratchet fleet: with accept-shared-secret-path, cookies of the old and the new seed open on both sides', { timeout: 90_000 }, async (t) => {
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  t.after(() => pki.cleanup());
  const seeds = makeTempDir('reseed');
  t.after(() => removeDir(seeds));
  const oldSeed = writeSeed(seeds, 'old.seed', 11);
  let newSeed = writeSeed(seeds, 'new.seed', 99);
  // The two seeds must have different key-id tags (1 in 256 do not): pick another new seed if needed.
  const { ratchetSeedTag } = await import('../src/core/nts/ratchet.js');
  for (let f = 100; ratchetSeedTag(readFileSync(newSeed)) === ratchetSeedTag(readFileSync(oldSeed)); f++) newSeed = writeSeed(seeds, 'new.seed', f);
  const keyset = (seal: string, accept?: string): string[] => [
    'mode = "ratchet"',
    `shared-secret-path = ${JSON.stringify(seal)}`,
    ...(accept === undefined ? [] : [`accept-shared-secret-path = ${JSON.stringify(accept)}`]),
    'key-rotation-interval-s = 3600',
  ];
  // Step 1 of the reseeding procedure (docs/fleet.md): an NTP node that seals with the old seed and already accepts the new one.
  const step1Port = await freeUdpPort();
  await node(t, ntpNodeToml({ ntpPort: step1Port, keyset: keyset(oldSeed, newSeed) }), 'step1');
  // Step 2: a node that has swapped (seals with the new seed, still accepts the old one), and a KE node of each kind.
  const step2Port = await freeUdpPort();
  await node(t, ntpNodeToml({ ntpPort: step2Port, keyset: keyset(newSeed, oldSeed) }), 'step2');
  const oldKe = await node(t, keyNodeToml({ kePort: await freeTcpPort(), pki, ntpServer: '127.0.0.1', ntpPort: step1Port, keyset: keyset(oldSeed) }), 'oldke');
  const newKe = await node(t, keyNodeToml({ kePort: await freeTcpPort(), pki, ntpServer: '127.0.0.1', ntpPort: step2Port, keyset: keyset(newSeed, oldSeed) }), 'newke');
  const oldKeys = await keyExchange(oldKe, pki.caPem);
  const newKeys = await keyExchange(newKe, pki.caPem);
  let i = 0;
  for (const port of [step1Port, step2Port]) {
    for (const keys of [oldKeys, newKeys]) {
      const r = await ntsQuery({ ...keys, ntpPort: port }, keys.cookies[i] ?? new Uint8Array());
      assert.ok(r.ok, `port ${port}, cookie ${i}: ${r.ok ? '' : r.failure.message}`);
    }
    i++;
  }
  // A node that has only the new seed (step 3, too early) refuses the old seed's cookies: hence the overlap.
  const step3Port = await freeUdpPort();
  await node(t, ntpNodeToml({ ntpPort: step3Port, keyset: keyset(newSeed) }), 'step3');
  const early = await ntsQuery({ ...oldKeys, ntpPort: step3Port }, oldKeys.cookies[5] ?? new Uint8Array());
  assert.equal(early.ok ? 'ok' : early.failure.kind, 'nts_nak');
  const fine = await ntsQuery({ ...newKeys, ntpPort: step3Port }, newKeys.cookies[5] ?? new Uint8Array());
  assert.ok(fine.ok, fine.ok ? '' : fine.failure.message);
  // inspect lists the accepted seed's keys under their own tag.
  const inspect = await runCli(['keyset', 'inspect', '-c', newKe.configPath]);
  assert.equal(inspect.code, 0, inspect.stderr);
  assert.match(inspect.stdout, /also accepted: .*old\.seed \(key-id tag [0-9a-f]{2}\)/);
  assert.match(inspect.stdout, /accepted\s+[0-9a-f]{8}/);
});
