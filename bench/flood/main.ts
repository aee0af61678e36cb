/**
 * KE flood battery, full size: for each flood of bench/flood/ke-floods.ts (5,000 idle connections held;
 * 5,000 idle connections churning; TLS-then-silent clients) a fresh ntsd (its CLI, default limits except
 * the per-client rate limit, which is off unless --rate-limit: it would hide the caps, and the honest
 * client makes more than its burst of exchanges) is flooded from 127.0.0.2–127.0.0.254 while an honest
 * client on 127.0.0.1 runs NTS-KE one attempt at a time and a probe sends plain NTP. Prints the figures
 * and exits 1 on a defect: an honest attempt that fails or takes over 1 s, or an unanswered NTP probe.
 *
 *   node dist/bench/flood/main.js [--kinds idle-held,idle-churn,tls-silent] [--connections 5000]
 *     [--tls-connections 1000] [--ramp-s 3] [--attempts 10] [--gap-ms 300] [--rate-limit] [--ke-threads N]
 *     [--attacker-nice 19] [--ke-nice N]
 *
 * The attacker's thread runs at nice 19 by default: on this one shared machine it would otherwise take
 * the CPU that a remote attacker spends on its own hosts (0 = compete at full priority).
 * Bounded: each flood lasts ramp + attempts × (≤ 1 s + gap), every socket is closed at its end. The
 * attacker runs on its own thread; file descriptors: one per attacker socket here, so the count is capped
 * to this process's RLIMIT_NOFILE (read from /proc/self/limits) minus a margin, and the cap is printed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { makeTestPki } from '../../test/helpers/certs.js';
import { freeTcpAndUdpPort, freeTcpPort } from '../../test/interop/peers.js';
import { startNtsd } from '../compare/servers.js';
import { KE_FLOOD_KINDS, keFloodDefects, runKeFloodWithHonestClient, type KeFloodKind, type KeFloodRun } from './ke-floods.js';

/** Soft RLIMIT_NOFILE of this process, or undefined when /proc is not there. */
function openFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    return soft === undefined || soft === 'unlimited' ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
}

function report(run: KeFloodRun, durationS: number): string {
  const ms = run.attempts.map((a) => a.ms).sort((a, b) => a - b);
  const firstOk = run.attempts.filter((a) => a.ok && a.ms <= 1000).length;
  return [
    `${run.kind.padEnd(10)}`,
    `attacker: ${run.flood.connected} connects (${(run.flood.connected / durationS).toFixed(0)}/s), ${run.flood.handshakes} TLS handshakes, ${run.openAtFirstAttempt} open at the first honest attempt`,
    `honest: ${firstOk}/${run.attempts.length} first-attempt KE within 1 s, p50 ${percentile(ms, 0.5).toFixed(0)} ms, max ${(ms[ms.length - 1] ?? Number.NaN).toFixed(0)} ms`,
    `NTP: ${run.ntp.answered}/${run.ntp.sent} answered`,
  ].join(' | ');
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      kinds: { type: 'string', default: KE_FLOOD_KINDS.join(',') },
      connections: { type: 'string', default: '5000' },
      'tls-connections': { type: 'string', default: '1000' },
      'ramp-s': { type: 'string', default: '3' },
      attempts: { type: 'string', default: '10' },
      'gap-ms': { type: 'string', default: '300' },
      'rate-limit': { type: 'boolean', default: false },
      'ke-threads': { type: 'string' },
      'attacker-nice': { type: 'string', default: '19' },
      'ke-nice': { type: 'string' },
    },
  });
  const kinds = values.kinds.split(',').filter((k): k is KeFloodKind => (KE_FLOOD_KINDS as readonly string[]).includes(k));
  const limit = openFileLimit();
  let connections = Number(values.connections);
  if (limit !== undefined && connections > limit - 256) {
    console.log(`RLIMIT_NOFILE is ${limit}: the attacker holds at most ${limit - 256} connections (raise it with ulimit -n)`);
    connections = limit - 256;
  }
  const mainJs = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'main.js');
  if (!existsSync(mainJs)) throw new Error(`ntsd is not built: ${mainJs} is missing`);
  const pki = makeTestPki();
  const problems: string[] = [];
  console.log(`ke floods: ${connections} idle connections, ${values['tls-connections']} TLS-then-silent, ${values.attempts} honest attempts each; ntsd with default caps${values['rate-limit'] ? ' and its default per-client rate limit' : ', per-client rate limit off'}`);
  try {
    for (const kind of kinds) {
      const ntpPort = await freeTcpAndUdpPort();
      const kePort = await freeTcpPort();
      const keExtra = [
        ...(values['rate-limit'] ? ['client-rate-limit-interval-s = 64'] : []),
        ...(values['ke-threads'] === undefined ? [] : [`threads = ${values['ke-threads']}`]),
        ...(values['ke-nice'] === undefined ? [] : [`thread-niceness = ${values['ke-nice']}`]),
      ];
      const ntsd = await startNtsd({ mainJs, ntpPort, kePort, tls: { chainPath: pki.chainPath, keyPath: pki.keyPath }, keExtra });
      try {
        const started = performance.now();
        const run = await runKeFloodWithHonestClient({
          kind,
          host: '127.0.0.1',
          port: kePort,
          connections: kind === 'tls-silent' ? Number(values['tls-connections']) : connections,
          caPem: pki.caPem,
          ntpPort,
          rampMs: Number(values['ramp-s']) * 1000,
          honestAttempts: Number(values.attempts),
          gapMs: Number(values['gap-ms']),
          honestTimeoutMs: 1000,
          ntpIntervalMs: 50,
          attackerNice: Number(values['attacker-nice']),
        });
        console.log(report(run, (performance.now() - started) / 1000));
        problems.push(...keFloodDefects(run, 1000));
        if (!ntsd.running()) problems.push(`${kind}: ntsd exited:\n${ntsd.output()}`);
      } finally {
        await ntsd.stop();
      }
    }
  } finally {
    pki.cleanup();
  }
  for (const p of problems) console.log(`DEFECT ${p}`);
  console.log(problems.length === 0 ? 'ke floods: no defect' : `ke floods: ${problems.length} defect(s)`);
  return problems.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(2);
  },
);
