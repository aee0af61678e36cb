/**
 * The short KE flood battery (issue: a KE that a flood cannot lock), against the daemon through its CLI on
 * 127.0.0.1: for each of the three floods of bench/flood/ke-floods.ts (idle connections held, idle churn,
 * TLS-then-silent) from 127.0.0.2–127.0.0.254, an honest client on 127.0.0.1 completes NTS-KE on its first
 * attempt within 1 s, NTP answers every probe, and the daemon's counters show the cap was full (evictions).
 * The KE thread runs at nice 0 here (see below). Bounded: a cap of 128 connections, at most 600 attacker sockets, about 4 s per flood. The full-size
 * version is `node dist/bench/flood/main.js`.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { keFloodDefects, runKeFloodWithHonestClient, type KeFloodKind } from '../../bench/flood/ke-floods.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { freePorts, makeTempDir, removeDir, sample, scrapeMetrics, startDaemon, testConfigToml, type RunningDaemon } from '../helpers/daemon.js';

const CAP = 128;
const ATTACKERS: Readonly<Record<KeFloodKind, number>> = { 'idle-held': 600, 'idle-churn': 600, 'tls-silent': 256 };

let pki: TestPki;
let dir: string;
let daemon: RunningDaemon;

before(async () => {
  pki = makeTestPki();
  dir = makeTempDir('ke-floods');
  const ports = await freePorts();
  daemon = await startDaemon({
    dir,
    toml: testConfigToml({
      ...ports,
      certPath: pki.chainPath,
      keyPath: pki.keyPath,
      connectionsPerSource: 16, // the default: the attacker's 253 sources each hit it
      // Nice 0: on a shared CI machine the default nice 10 lets other jobs starve the KE thread, and this
      // test is about admission, not priority (the KE thread's nice value has its own tests).
      keExtra: [`concurrent-connections = ${CAP}`, 'thread-niceness = 0'],
    }),
  });
});

after(async () => {
  await daemon.stop();
  removeDir(dir);
  pki.cleanup();
});

for (const kind of ['idle-held', 'idle-churn', 'tls-silent'] as const) {
  test(`${kind} flood: the honest client gets its cookies on the first attempt within 1 s; NTP keeps answering`, async () => {
    const metrics = daemon.metrics;
    assert.ok(metrics !== undefined);
    const evictedBefore = sample(await scrapeMetrics(metrics), 'ntsd_ke_sessions_total{outcome="evicted"}');
    const ke = daemon.ntsKe[0];
    const ntp = daemon.ntp[0];
    assert.ok(ke !== undefined && ntp !== undefined);
    const run = await runKeFloodWithHonestClient({
      kind,
      host: ke.host,
      port: ke.port,
      connections: ATTACKERS[kind],
      caPem: pki.caPem,
      ntpPort: ntp.port,
      rampMs: 1500,
      honestAttempts: 3,
      gapMs: 200,
      honestTimeoutMs: 1000,
      ntpIntervalMs: 50,
    });
    assert.deepEqual(keFloodDefects(run, 1000), [], JSON.stringify(run));
    assert.ok(run.ntp.sent >= 20, `only ${run.ntp.sent} NTP probes sent`);
    assert.ok(run.openAtFirstAttempt > CAP, `the flood held only ${run.openAtFirstAttempt} connections`);
    if (kind === 'tls-silent') assert.ok(run.flood.handshakes > CAP, `only ${run.flood.handshakes} attacker handshakes`);
    const after = await scrapeMetrics(metrics);
    assert.ok(sample(after, 'ntsd_ke_sessions_total{outcome="evicted"}') > evictedBefore, 'the cap was full: connections were evicted');
  });
}
