/**
 * Capacity of an ntsd pool KE front end (docs/pools.md), short and bounded: three ntsd sources on
 * 127.0.0.2–4 and an ntsd `[pool-ke]` front end on 127.0.0.1, each its own process; `bench/load --mode ke`
 * (full NTS-KE sessions: TLS 1.3 handshake, request, 8 cookies) loads, in turn, one source directly and
 * the front end, first one session at a time (latency: what the front end adds), then `--concurrency`
 * sessions at once (KE/s through the front end). Prints handshakes/s and session p50/p99 of each run and the
 * added latency.
 *
 *   node dist/bench/pool-ke/main.js [--duration-s 5] [--concurrency 8] [--generator-threads 1] [--json]
 *
 * Everything shares one machine: the generator, the front end and the sources compete for the cores, and a
 * session through the front end costs two TLS handshakes (client↔front end, and front end↔source when no
 * kept connection is free) plus the source's work. Numbers are for this box under whatever else runs on it.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { LoadReport } from '../load/protocol.js';
import { runLoadChild } from '../load/child.js';
import { makeTestPki } from '../../test/helpers/certs.js';
import { freePortOn, frontEndToml, sourceToml } from '../../test/helpers/pool-ke.js';
import { startNtsd, type NtsdProcess } from '../../test/interop/ntsd.js';
import { cpuSeconds } from '../compare/procfs.js';

const SOURCE_HOSTS = ['127.0.0.2', '127.0.0.3', '127.0.0.4'] as const;

function line(what: string, r: LoadReport, cpuS?: number): string {
  const q = r.delayUs;
  const cpu = cpuS === undefined ? '' : `, front end ${(r.repliesTotal / cpuS).toFixed(0)} sessions per CPU-second`;
  return `${what}: ${r.ratePerS.toFixed(0)} KE/s (${r.repliesTotal} sessions, invalid ${r.invalid}), session p50 ${(q.p50 / 1000).toFixed(2)} ms p99 ${(q.p99 / 1000).toFixed(2)} ms${cpu}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'duration-s': { type: 'string', default: '5' },
      concurrency: { type: 'string', default: '8' },
      'generator-threads': { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
    },
  });
  const durationS = Math.min(15, Math.max(1, Number(values['duration-s'])));
  const log = values.json ? (): void => undefined : (text: string): void => console.log(text);
  const pki = makeTestPki(['nts.test', 'localhost', '127.0.0.1', ...SOURCE_HOSTS]);
  const caPath = join(pki.dir, 'ca-for-load.pem');
  writeFileSync(caPath, pki.caPem);
  const processes: NtsdProcess[] = [];
  try {
    const ntpPort = await freePortOn('udp', SOURCE_HOSTS);
    const kePort = await freePortOn('tcp', SOURCE_HOSTS);
    const sources: { host: string; kePort: number; token: string }[] = [];
    for (const host of SOURCE_HOSTS) {
      const token = `bench-token-${host}`;
      const metricsPort = await freePortOn('tcp', [host]);
      const toml = sourceToml({ host, kePort, ntpPort, metricsPort, pki, token }).replace('[[nts-ke-server]]', '[[nts-ke-server]]\nthreads = 1\nconcurrent-connections = 4096');
      processes.push(await startNtsd({ configToml: toml, startTimeoutMs: 30_000 }));
      sources.push({ host, kePort, token });
    }
    const fePort = await freePortOn('tcp', ['127.0.0.1']);
    const feMetrics = await freePortOn('tcp', ['127.0.0.1']);
    const frontEnd = await startNtsd({ configToml: frontEndToml({ port: fePort, metricsPort: feMetrics, pki, sources, healthCheckIntervalS: 30 }).replace('[pool-ke]', '[pool-ke]\nconcurrent-connections = 4096\nconnections-per-source = 8'), startTimeoutMs: 30_000 });
    processes.push(frontEnd);
    await new Promise((r) => setTimeout(r, 1000)); // start-up health checks
    const direct = `${SOURCE_HOSTS[0]}:${kePort}`;
    const pool = `127.0.0.1:${fePort}`;
    const common = ['--mode', 'ke', '--ca', caPath, '--servername', 'nts.test', '--aead', '15', '--duration-s', String(durationS), '--warmup-s', durationS >= 3 ? '1' : '0'];
    log(`ntsd pool KE front end on Node ${process.versions.node}: 3 sources, ${durationS} s runs (the first second not counted from 3 s on), noisy shared machine`);
    const results: Record<string, LoadReport> = {};
    for (const [name, target, concurrency] of [
      ['direct, 1 session at a time', direct, '1'],
      ['front end, 1 session at a time', pool, '1'],
      [`direct, ${values.concurrency} concurrent`, direct, values.concurrency],
      [`front end, ${values.concurrency} concurrent`, pool, values.concurrency],
    ] as const) {
      const cpuBefore = target === pool ? cpuSeconds(frontEnd.pid) : 0;
      const r = await runLoadChild([...common, '--ke', target, '--concurrency', concurrency, '--threads', values['generator-threads']]);
      results[name] = r;
      log(line(name, r, target === pool ? cpuSeconds(frontEnd.pid) - cpuBefore : undefined));
    }
    const d1 = results['direct, 1 session at a time']?.delayUs;
    const p1 = results['front end, 1 session at a time']?.delayUs;
    if (values.json) {
      const pick = (r: LoadReport | undefined): unknown => (r === undefined ? null : { kePerS: r.ratePerS, sessions: r.repliesTotal, invalid: r.invalid, p50Us: r.delayUs.p50, p99Us: r.delayUs.p99 });
      console.log(JSON.stringify(Object.fromEntries(Object.entries(results).map(([k, r]) => [k, pick(r)]))));
    } else if (d1 !== undefined && p1 !== undefined) {
      console.log(`added by the front end, one session at a time: p50 +${((p1.p50 - d1.p50) / 1000).toFixed(2)} ms, p99 +${((p1.p99 - d1.p99) / 1000).toFixed(2)} ms`);
    }
  } finally {
    for (const p of processes.reverse()) await p.stop();
    pki.cleanup();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
