/**
 * A real fleet on distinct loopback addresses (127.0.0.x; every 127/8 address is local on Linux), with
 * Debian's chronyd as the client (PEERS.md): one KE-only ntsd and three NTP-only ntsd, first in ratchet
 * mode (one shared seed), then in follow mode (a key file copied from a local-mode writer). chrony does
 * NTS-KE at the KE node, is sent to an NTP node by the Server Negotiation record, authenticates there;
 * the same KE session's cookies authenticate at the other NTP nodes; all nodes agree across a rotation;
 * killing the KE node does not stop NTP; a node with another seed answers NTS NAK. Then HAProxy with
 * send-proxy-v2 in front of two KE nodes: the per-client limit sees the client's address.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { copyFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { performKeyExchange, type KeyExchangeResult } from '../../src/cli/ke-client.js';
import { ntsExchange, type NtsExchangeOutcome } from '../../src/cli/ntp-client.js';
import { createKeyset, encodeKeyset } from '../../src/core/nts/keyset.js';
import { decodeKeMessage, encodeKeMessage } from '../../src/core/nts/ke-record.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { startNtsd, type NtsdProcess } from './ntsd.js';
import { delay, ensureNtsTestHost, makeWorkDir, NTS_TEST_NAME, spawnPeer, startChronyClient, waitFor, type ChronyClient, type PeerProcess } from './peers.js';

ensureNtsTestHost();

const HAPROXY = '/usr/sbin/haproxy';
const NTP_ADDRESSES = ['127.0.0.2', '127.0.0.3', '127.0.0.4'] as const;
const STRANGER_ADDRESS = '127.0.0.5';

/** A UDP port free on every address in `hosts`. */
async function freeUdpPortOn(hosts: readonly string[]): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 30000);
    let free = true;
    for (const host of hosts) {
      free &&= await new Promise<boolean>((resolve) => {
        const s = createSocket('udp4');
        s.once('error', () => resolve(false));
        s.bind(port, host, () => s.close(() => resolve(true)));
      });
    }
    if (free) return port;
  }
  throw new Error(`no UDP port free on ${hosts.join(', ')}`);
}

/** A TCP port free on every address in `hosts`. */
async function freeTcpPortOn(hosts: readonly string[]): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 30000);
    let free = true;
    for (const host of hosts) {
      free &&= await new Promise<boolean>((resolve) => {
        const s = createServer();
        s.once('error', () => resolve(false));
        s.listen(port, host, () => s.close(() => resolve(true)));
      });
    }
    if (free) return port;
  }
  throw new Error(`no TCP port free on ${hosts.join(', ')}`);
}

function scrape(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path: '/metrics', timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? Number.NaN : Number(line.slice(series.length + 1));
}

interface Node {
  readonly process: NtsdProcess;
  readonly host: string;
  readonly metricsPort: number;
  metrics(): Promise<string>;
}

async function startNode(t: TestContext, host: string, toml: string): Promise<Node> {
  const metricsPort = await freeTcpPortOn([host]);
  const process = await startNtsd({ configToml: `${toml}\n[observability]\nmetrics-listen = "${host}:${metricsPort}"\n`, startTimeoutMs: 30_000 });
  t.after(() => process.stop());
  return { process, host, metricsPort, metrics: () => scrape(host, metricsPort) };
}

function ntpNodeToml(host: string, port: number, keyset: readonly string[]): string {
  return ['[[server]]', `listen = "${host}:${port}"`, '', '[keyset]', ...keyset, '', '[worker-pool]', 'threads = 1', '', '[time-source]', 'mode = "static"', 'local-stratum = 2', ''].join('\n');
}

function keNodeToml(o: { host: string; port: number; pki: TestPki; ntpServer: string; ntpPort: number; keyset: readonly string[]; extra?: readonly string[] }): string {
  return [
    '[[nts-ke-server]]',
    `listen = "${o.host}:${o.port}"`,
    `certificate-chain-path = ${JSON.stringify(o.pki.chainPath)}`,
    `private-key-path = ${JSON.stringify(o.pki.keyPath)}`,
    'certificate-reload-interval-s = 0',
    `ntp-server = ${JSON.stringify(o.ntpServer)}`,
    `ntp-port = ${o.ntpPort}`,
    ...(o.extra ?? ['client-rate-limit-interval-s = 0']),
    '',
    '[keyset]',
    ...o.keyset,
    '',
  ].join('\n');
}

async function ourKe(port: number, pki: TestPki): Promise<KeyExchangeResult> {
  const outcome = await performKeyExchange({ host: '127.0.0.1', port, ca: pki.caPem, servername: NTS_TEST_NAME, aeadIds: [15], timeoutMs: 10_000 });
  if (!outcome.ok) throw new Error(`NTS-KE failed: ${outcome.failure.message}`);
  return outcome.result;
}

function ntsAt(keys: KeyExchangeResult, host: string, port: number, cookie: Uint8Array | undefined): Promise<NtsExchangeOutcome> {
  assert.ok(cookie !== undefined, 'a cookie is left');
  return ntsExchange({ server: host, port, aeadId: keys.aeadId, c2s: keys.c2s, s2c: keys.s2c, cookie, placeholders: 0, timeoutMs: 3000 });
}

async function chronyAuthenticated(chrony: ChronyClient, what: string, minValidRx = 1): Promise<Record<string, string>> {
  return waitFor(what, 40_000, () => {
    const source = chrony.ntpdata()[0];
    return source !== undefined && source['Authenticated'] === 'Yes' && Number(source['Total valid RX']) >= minValidRx ? source : undefined;
  }, 250).catch((err: unknown) => {
    throw new Error(`${String(err)}\nchronyc authdata:\n${chrony.chronyc('authdata')}\nntpdata:\n${chrony.chronyc('ntpdata')}\nchronyd:\n${chrony.output()}`);
  });
}

/** Every node reports the same current key id; returns it. */
async function agreedKeyId(nodes: readonly Node[]): Promise<number> {
  const ids = await Promise.all(nodes.map(async (n) => metric(await n.metrics(), 'ntsd_keyset_current_key_id')));
  assert.equal(new Set(ids).size, 1, `nodes disagree on the current key id: ${ids.map((i) => i.toString(16)).join(', ')}`);
  return ids[0] ?? 0;
}

/** The common checks of both modes, once the fleet runs. */
async function exerciseFleet(
  t: TestContext,
  o: { pki: TestPki; ke: Node; kePort: number; ntp: readonly Node[]; ntpPort: number; rotate: () => Promise<void>; stranger?: Node },
): Promise<void> {
  const chrony = await startChronyClient({ kePort: o.kePort, caPath: o.pki.caCertPath });
  t.after(() => chrony.stop());
  const sample = await chronyAuthenticated(chrony, 'chrony: an authenticated sample from the NTP node named by the Server record');
  // chronyc prints "127.0.0.2 (7F000002)".
  assert.equal(sample['Remote address']?.split(' ')[0], NTP_ADDRESSES[0], 'chrony went where the Server Negotiation record sent it');
  assert.equal(sample['Remote port'], String(o.ntpPort));
  assert.equal(chrony.authdata()[0]?.naks, 0);

  // One KE session's cookies authenticate at every NTP node.
  const keys = await ourKe(o.kePort, o.pki);
  assert.equal(keys.ntpServer, NTP_ADDRESSES[0]);
  let c = 0;
  for (const host of NTP_ADDRESSES) {
    const r = await ntsAt(keys, host, o.ntpPort, keys.cookies[c++]);
    assert.ok(r.ok, `${host}: ${r.ok ? '' : r.failure.message}`);
  }
  if (o.stranger !== undefined) {
    const nak = await ntsAt(keys, o.stranger.host, o.ntpPort, keys.cookies[c++]);
    assert.equal(nak.ok ? 'authenticated' : nak.failure.kind, 'nts_nak', 'a node with another seed answers NTS NAK');
  }

  // Across a rotation every node agrees, and a cookie from before it still opens everywhere.
  const before = await agreedKeyId([o.ke, ...o.ntp]);
  await o.rotate();
  // Up to one whole interval: a local-mode writer may have rotated just before `before` was read.
  await waitFor('every node past the rotation', 75_000, async () => {
    const ids = await Promise.all([o.ke, ...o.ntp].map(async (n) => metric(await n.metrics(), 'ntsd_keyset_current_key_id')));
    return ids.every((id) => id !== before) && new Set(ids).size === 1 ? true : undefined;
  }, 250);
  const after = await agreedKeyId([o.ke, ...o.ntp]);
  assert.notEqual(after, before);
  const fresh = await ourKe(o.kePort, o.pki);
  for (const [i, host] of NTP_ADDRESSES.entries()) {
    const oldCookie = await ntsAt(keys, host, o.ntpPort, keys.cookies[c++]);
    assert.ok(oldCookie.ok, `${host}, cookie from before the rotation: ${oldCookie.ok ? '' : oldCookie.failure.message}`);
    const newCookie = await ntsAt(fresh, host, o.ntpPort, fresh.cookies[i]);
    assert.ok(newCookie.ok, `${host}, cookie from after the rotation: ${newCookie.ok ? '' : newCookie.failure.message}`);
  }

  // Kill the KE node: chrony keeps getting authenticated samples from the NTP node.
  const rxBefore = Number(chrony.ntpdata()[0]?.['Total valid RX'] ?? 0);
  await o.ke.process.stop();
  assert.equal(o.ke.process.running(), false);
  await chronyAuthenticated(chrony, 'chrony: samples after the KE node is gone', rxBefore + 4);
  assert.equal(chrony.authdata()[0]?.naks, 0, 'no NAKs across the rotation and the KE outage');
}

test('ratchet fleet: 1 KE-only + 3 NTP-only ntsd on 127.0.0.x, chrony as the client, a stranger seed NAKs', { timeout: 180_000 }, async (t) => {
  const pki = makeTestPki([NTS_TEST_NAME, 'localhost', '127.0.0.1']);
  t.after(() => pki.cleanup());
  const dir = makeWorkDir('fleet-seeds');
  const seed = join(dir, 'fleet.seed');
  const otherSeed = join(dir, 'other.seed');
  writeFileSync(seed, randomFillSync(new Uint8Array(32)), { mode: 0o600 });
  writeFileSync(otherSeed, randomFillSync(new Uint8Array(32)), { mode: 0o600 });
  const ratchet = (path: string): string[] => ['mode = "ratchet"', `shared-secret-path = ${JSON.stringify(path)}`, 'key-rotation-interval-s = 60', 'stale-key-count = 2'];

  // Start right after an epoch boundary so the ~60 s until the next one covers the checks before it.
  const intoEpochS = (Date.now() / 1000) % 60;
  if (intoEpochS > 30) await delay((61 - intoEpochS) * 1000);
  const ntpPort = await freeUdpPortOn([...NTP_ADDRESSES, STRANGER_ADDRESS]);
  const ntp = await Promise.all(NTP_ADDRESSES.map((host) => startNode(t, host, ntpNodeToml(host, ntpPort, ratchet(seed)))));
  const stranger = await startNode(t, STRANGER_ADDRESS, ntpNodeToml(STRANGER_ADDRESS, ntpPort, ratchet(otherSeed)));
  const kePort = await freeTcpPortOn(['127.0.0.1']);
  const ke = await startNode(t, '127.0.0.1', keNodeToml({ host: '127.0.0.1', port: kePort, pki, ntpServer: NTP_ADDRESSES[0], ntpPort, keyset: ratchet(seed) }));
  t.after(() => ke.process.stop());
  assert.equal(ke.process.started['role'], 'ke-only');
  for (const n of ntp) assert.equal(n.process.started['role'], 'ntp-only');

  await exerciseFleet(t, {
    pki,
    ke,
    kePort,
    ntp,
    ntpPort,
    stranger,
    // The ratchet turns at the wall-clock boundary on every node by itself.
    rotate: async () => {
      const leftMs = (60 - ((Date.now() / 1000) % 60)) * 1000;
      await delay(leftMs + 500);
    },
  });
});

test('follow fleet: a local-mode KE node writes the key file, a copier moves it to 3 NTP-only followers', { timeout: 240_000 }, async (t) => {
  const pki = makeTestPki([NTS_TEST_NAME, 'localhost', '127.0.0.1']);
  t.after(() => pki.cleanup());
  const dir = makeWorkDir('fleet-follow');
  const writerPath = join(dir, 'writer.keys');
  // The writer's keyset started 45 s ago with a 60 s interval: its next rotation comes in ~15 s.
  writeFileSync(writerPath, encodeKeyset(createKeyset(Math.floor(Date.now() / 1000) - 45, (b) => randomFillSync(b), { staleKeyCount: 2 })), { mode: 0o600 });
  const copies = NTP_ADDRESSES.map((_, i) => join(dir, `follower${i}.keys`));
  // The operator's tooling, here: copy the writer's file to each follower every 500 ms (tmp + rename, as rsync does).
  const copy = (): void => {
    if (!existsSync(writerPath)) return;
    for (const target of copies) {
      copyFileSync(writerPath, `${target}.tmp`);
      renameSync(`${target}.tmp`, target);
    }
  };
  copy();
  const copier = setInterval(copy, 500);
  t.after(() => clearInterval(copier));

  const ntpPort = await freeUdpPortOn(NTP_ADDRESSES);
  const follow = (path: string): string[] => ['mode = "follow"', `key-storage-path = ${JSON.stringify(path)}`, 'follow-poll-interval-s = 1', 'key-rotation-interval-s = 60'];
  const ntp = await Promise.all(NTP_ADDRESSES.map((host, i) => startNode(t, host, ntpNodeToml(host, ntpPort, follow(copies[i] ?? '')))));
  const kePort = await freeTcpPortOn(['127.0.0.1']);
  const ke = await startNode(
    t,
    '127.0.0.1',
    keNodeToml({ host: '127.0.0.1', port: kePort, pki, ntpServer: NTP_ADDRESSES[0], ntpPort, keyset: [`key-storage-path = ${JSON.stringify(writerPath)}`, 'key-rotation-interval-s = 60', 'stale-key-count = 2'] }),
  );
  t.after(() => ke.process.stop());
  for (const n of ntp) assert.equal(metric(await n.metrics(), 'ntsd_keyset_mode{mode="follow"}'), 1);
  await exerciseFleet(t, {
    pki,
    ke,
    kePort,
    ntp,
    ntpPort,
    // The writer rotates on its own schedule; the copier and the followers' polling carry it over.
    rotate: async () => undefined,
  });
  for (const target of copies) assert.deepEqual(readFileSync(target), readFileSync(writerPath), 'followers never rewrite their copy');
});

/** NTS-KE from a chosen local address (a distinct client) through `port`; true when cookies came back. */
function keFrom(localAddress: string, port: number, pki: TestPki, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const raw = connect({ host, port, localAddress });
    raw.on('error', () => undefined);
    const socket = tls.connect({ socket: raw, ca: pki.caPem, servername: NTS_TEST_NAME, ALPNProtocols: ['ntske/1'] });
    const chunks: Buffer[] = [];
    socket.setTimeout(10_000, () => socket.destroy());
    socket.on('secureConnect', () =>
      socket.write(
        encodeKeMessage([
          { kind: 'nextProtocol', critical: true, protocolIds: [0] },
          { kind: 'aeadAlgorithm', critical: true, aeadIds: [15] },
          { kind: 'endOfMessage', critical: true },
        ]),
      ),
    );
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      const decoded = decodeKeMessage(new Uint8Array(Buffer.concat(chunks)));
      resolve(decoded.ok && decoded.records.some((r) => r.kind === 'newCookie'));
    });
  });
}

test('HAProxy send-proxy-v2 in front of two KE nodes: the per-client limit sees the client address, not HAProxy\'s', { timeout: 120_000 }, async (t) => {
  assert.ok(existsSync(HAPROXY), `${HAPROXY} missing: run test/install-peers.sh (Debian package haproxy)`);
  const pki = makeTestPki([NTS_TEST_NAME, 'localhost', '127.0.0.1']);
  t.after(() => pki.cleanup());
  const dir = makeWorkDir('fleet-haproxy');
  const seed = join(dir, 'fleet.seed');
  writeFileSync(seed, randomFillSync(new Uint8Array(32)), { mode: 0o600 });
  const keHosts = ['127.0.0.6', '127.0.0.7'];
  const kePort = await freeTcpPortOn(keHosts);
  const ntpPort = await freeUdpPortOn([NTP_ADDRESSES[0]]);
  const ntp = await startNode(t, NTP_ADDRESSES[0], ntpNodeToml(NTP_ADDRESSES[0], ntpPort, ['mode = "ratchet"', `shared-secret-path = ${JSON.stringify(seed)}`]));
  // Each KE node: 2 connections per client back to back, then one per minute. HAProxy connects from 127.0.0.1.
  const kes = await Promise.all(
    keHosts.map((host) =>
      startNode(
        t,
        host,
        keNodeToml({
          host,
          port: kePort,
          pki,
          ntpServer: NTP_ADDRESSES[0],
          ntpPort,
          keyset: ['mode = "ratchet"', `shared-secret-path = ${JSON.stringify(seed)}`],
          extra: ['client-rate-limit-interval-s = 60', 'client-rate-limit-burst = 2', 'proxy-protocol = true', 'proxy-trusted-sources = ["127.0.0.1"]'],
        }),
      ),
    ),
  );
  const frontPort = await freeTcpPortOn(['127.0.0.1']);
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    [
      'global',
      '  maxconn 200',
      `  pidfile ${join(dir, 'haproxy.pid')}`,
      'defaults',
      '  mode tcp',
      '  timeout connect 3s',
      '  timeout client 15s',
      '  timeout server 15s',
      'frontend ntske',
      `  bind 127.0.0.1:${frontPort}`,
      '  default_backend ke_nodes',
      'backend ke_nodes',
      '  balance roundrobin',
      ...keHosts.map((host, i) => `  server ke${i} ${host}:${kePort} send-proxy-v2`),
      '',
    ].join('\n'),
  );
  const haproxy: PeerProcess = spawnPeer(dir, HAPROXY, ['-db', '-f', cfg]);
  t.after(() => haproxy.stop());
  await waitFor('HAProxy listening', 15_000, async () => {
    if (!haproxy.running()) throw new Error(`haproxy exited:\n${haproxy.output()}`);
    return (await keFrom('127.0.0.20', frontPort, pki)) ? true : undefined;
  }, 250);

  // Client A (127.0.0.10): 2 per node = 4 admitted, then refused, although every connection comes from HAProxy.
  const a: boolean[] = [];
  for (let i = 0; i < 6; i++) a.push(await keFrom('127.0.0.10', frontPort, pki));
  assert.deepEqual(a.slice(0, 4), [true, true, true, true], `client A: ${a.join(', ')}`);
  assert.deepEqual(a.slice(4), [false, false], `client A over its limit: ${a.join(', ')}`);
  // Client B (127.0.0.11) through the same HAProxy: its own bucket.
  assert.ok(await keFrom('127.0.0.11', frontPort, pki), 'client B is not limited by client A');
  assert.ok(await keFrom('127.0.0.11', frontPort, pki));

  // KE threads fold their counters into the metrics about once a second: poll until every node's
  // counts are in (the totals only grow), then check them.
  const totals = async (): Promise<{ rateLimited: number; proxied: number; untrusted: number }> => {
    let rateLimited = 0;
    let proxied = 0;
    let untrusted = 0;
    for (const k of kes) {
      const m = await k.metrics();
      rateLimited += metric(m, 'ntsd_ke_connections_rejected_total{reason="rate_limited"}');
      proxied += metric(m, 'ntsd_ke_proxy_connections_total{source="127.0.0.1"}');
      untrusted += metric(m, 'ntsd_ke_connections_rejected_total{reason="untrusted_proxy"}');
    }
    return { rateLimited, proxied, untrusted };
  };
  const folded = await waitFor('KE stats of all 10 proxied connections folded', 15_000, async () => {
    const t = await totals();
    return t.rateLimited >= 2 && t.proxied >= 9 ? t : undefined;
  }, 200);
  assert.equal(folded.rateLimited, 2, 'both refusals are client A over its own limit');
  assert.ok(folded.proxied >= 9, `proxied connections counted: ${folded.proxied}`);
  assert.equal(folded.untrusted, 0);
  // A client that bypasses HAProxy is refused: the port is proxied.
  assert.equal(await keFrom('127.0.0.30', kePort, pki, keHosts[0]), false);
  await waitFor('the bypass counted as untrusted', 10_000, async () => (metric(await (kes[0] as Node).metrics(), 'ntsd_ke_connections_rejected_total{reason="untrusted_proxy"}') === 1 ? true : undefined), 200);
  assert.ok(ntp.process.running());
});
