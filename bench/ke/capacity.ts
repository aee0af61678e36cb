/**
 * NTS-KE capacity of ntsd, short runs: for each KE thread count, a fresh ntsd (its CLI, on the Node that
 * runs this script) is loaded by `bench/load --mode ke` (closed loop, `--concurrency` sessions) for
 * `--duration-s`; prints successful handshakes/s, handshakes per server CPU-second (ntsd's whole process
 * from /proc) and the session p50/p99. Run it once per Node to compare them:
 *
 *   node dist/bench/ke/capacity.js [--threads 1,2] [--duration-s 10] [--concurrency 16] [--generator-threads 2]
 *     [--rounds 1] [--ke-extra 'key = value'] [--node-arg --cpu-prof --node-arg --cpu-prof-dir=DIR] [--chrony]
 *
 * `--chrony` adds Debian's chronyd (bench/compare/servers.ts: `ntsprocesses 1`, the same certificate) after
 * the ntsd runs of each round, measured the same way.
 *
 * Everything shares one machine: the generator competes with ntsd for the cores (about 2.3 ms of client
 * CPU per handshake), so handshakes/s is bounded by the box; per server CPU-second is the fairer figure.
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runLoadChild } from '../load/child.js';
import { cpuSeconds } from '../compare/procfs.js';
import { startChrony, startNtsd, type ServerUnderTest } from '../compare/servers.js';
import { makeTestPki } from '../../test/helpers/certs.js';
import { freeTcpAndUdpPort, freeTcpPort } from '../../test/interop/peers.js';

const here = dirname(fileURLToPath(import.meta.url));

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      threads: { type: 'string', default: '1,2' },
      'duration-s': { type: 'string', default: '10' },
      concurrency: { type: 'string', default: '16' },
      'generator-threads': { type: 'string', default: '2' },
      rounds: { type: 'string', default: '1' },
      'ke-extra': { type: 'string', multiple: true, default: [] },
      'node-arg': { type: 'string', multiple: true, default: [] },
      chrony: { type: 'boolean', default: false },
    },
  });
  const pki = makeTestPki(['localhost', '127.0.0.1']);
  const caPath = join(pki.dir, 'ca-for-load.pem');
  writeFileSync(caPath, pki.caPem);
  const mainJs = join(here, '..', '..', 'src', 'main.js');
  console.log(`ntsd KE capacity on Node ${process.versions.node}: ${values['duration-s']} s runs, ${values.concurrency} sessions on ${values['generator-threads']} generator threads`);
  try {
    for (let round = 0; round < Number(values.rounds); round++) {
      const targets: readonly (number | 'chrony')[] = [...values.threads.split(',').map(Number), ...(values.chrony ? (['chrony'] as const) : [])];
      for (const target of targets) {
        const ntpPort = await freeTcpAndUdpPort();
        const kePort = await freeTcpPort();
        const tlsFiles = { chainPath: pki.chainPath, keyPath: pki.keyPath };
        const server: ServerUnderTest =
          target === 'chrony'
            ? await startChrony({ ntpPort, kePort, tls: tlsFiles })
            : await startNtsd({
                mainJs,
                ntpPort,
                kePort,
                tls: tlsFiles,
                keExtra: [`threads = ${target}`, 'concurrent-connections = 4096', ...values['ke-extra']],
                nodeArgs: values['node-arg'],
              });
        try {
          const cpuBefore = cpuSeconds(server.pid);
          const report = await runLoadChild([
            '--mode', 'ke', '--ke', `127.0.0.1:${kePort}`, '--ca', caPath,
            '--concurrency', values.concurrency, '--threads', values['generator-threads'], '--duration-s', values['duration-s'],
          ]);
          const cpu = cpuSeconds(server.pid) - cpuBefore;
          const q = report.delayUs;
          console.log(
            `${target === 'chrony' ? 'chrony' : `ntsd, threads ${target}`}: ${report.ratePerS.toFixed(0)} handshakes/s, ${(report.repliesTotal / cpu).toFixed(0)} per server CPU-second ` +
              `(${report.repliesTotal} sessions, ${cpu.toFixed(2)} CPU-s), session p50 ${(q.p50 / 1000).toFixed(1)} ms p99 ${(q.p99 / 1000).toFixed(1)} ms, invalid ${report.invalid}`,
          );
        } finally {
          await server.stop();
        }
      }
    }
  } finally {
    pki.cleanup();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
