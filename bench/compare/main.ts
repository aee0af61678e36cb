#!/usr/bin/env node
/**
 * ntsd vs chrony on the same machine in the same run (see bench/compare/README.md):
 *   node dist/bench/compare/main.js [--pairs 3] [--duration-s 5] [--soak-s 60]
 *
 * Makes an ECDSA P-256 PKI, starts ntsd (native datapath), ntsd (dgram datapath), chronyd and two native
 * variants (2 NTP threads; send-mode "batch") as NTS servers on loopback, then for each pair runs the same
 * kernel-stamping generator (bench/load, as a child process with --json) against every server in turn for
 * every measurement (ntp.ts), reads each server's CPU time and memory from /proc, and prints markdown
 * tables of medians. Results also go to bench/results/compare-<time>.json.
 * It stops by itself and stops what it started, by PID.
 *
 * `--ke-flood` runs the KE-flood isolation experiment instead (ke-flood.ts): ntsd alone vs ntsd under a
 * concurrent full-rate NTS-KE flood, for each KE-thread nice value; results go to bench/results/ke-flood-<time>.json.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { generateDevPki } from '../../src/cli/dev-certs.js';
import { freeTcpAndUdpPort } from '../../test/interop/peers.js';
import type { LoadReport } from '../load/protocol.js';
import { renderKeFloodTable, runKeFloodExperiment, summariseKeFlood, type KeFloodOptions } from './ke-flood.js';
import {
  DEFAULT_NTP_VARIANTS,
  NTP_VARIANTS,
  renderNtpTables,
  runNtpCompare,
  summarise,
  summariseExchanges,
  type NtpCompareOptions,
  type NtpCompareResult,
  type NtpVariant,
} from './ntp.js';
import { cpuSeconds, residentBytes } from './procfs.js';
import { ensureChronyInstalled, startNtsd, type ServerTls, type ServerUnderTest } from './servers.js';

/** Options of one comparison. */
export interface CompareOptions {
  /** The NTP comparison (pairs, runs, servers). */
  readonly ntp: NtpCompareOptions;
  /** ntsd `[worker-pool] threads` for the native runs and the KE flood; undefined = its default. */
  readonly ntsdThreads: number | undefined;
  /** Path of ntsd's dist/src/main.js. */
  readonly ntsdMain: string;
  /** Result file; undefined = bench/results/compare-<time>.json. */
  readonly out: string | undefined;
  /** Run the KE-flood isolation experiment (ntsd only) instead of the NTP comparison; undefined = do not. */
  readonly keFlood: KeFloodOptions | undefined;
}

const here = dirname(fileURLToPath(import.meta.url));
const LOAD_MAIN = join(here, '..', 'load', 'main.js');

const children = new Set<ChildProcess>();
const started: ServerUnderTest[] = [];

function log(line: string): void {
  process.stderr.write(`[compare] ${line}\n`);
}

/** The repository root: nearest ancestor of this file with package.json. */
function repoRoot(): string {
  let dir = here;
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
}

/** Runs the generator as a child process; samples the server's RSS every second while it runs. */
async function runGenerator(
  args: readonly string[],
  server: ServerUnderTest | undefined,
  timeoutS: number,
  nice = 0,
): Promise<{ report: LoadReport; serverCpuS: number; rssMaxBytes: number; samples: number[] }> {
  const cpuBefore = server === undefined ? 0 : cpuSeconds(server.pid);
  const samples: number[] = [];
  const sample = (): void => {
    if (server !== undefined && server.running()) samples.push(residentBytes(server.pid).rssBytes);
  };
  sample();
  // A nice value other than 0 runs the generator under nice(1), so every thread it starts inherits it.
  const command = nice === 0 ? process.execPath : 'nice';
  const commandArgs = [...(nice === 0 ? [] : ['-n', String(nice), process.execPath]), LOAD_MAIN, ...args, '--json'];
  const child = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const sampler = setInterval(sample, 1000);
  const killer = setTimeout(() => {
    if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  }, timeoutS * 1000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearInterval(sampler);
  clearTimeout(killer);
  children.delete(child);
  sample();
  const serverCpuS = server === undefined ? 0 : cpuSeconds(server.pid) - cpuBefore;
  if (code !== 0) throw new Error(`generator ${args.join(' ')} failed (exit ${String(code)}): ${stderr.trim()}`);
  const line = stdout.trim().split('\n').pop() ?? '';
  const parsed: unknown = JSON.parse(line);
  if (!isLoadReport(parsed)) throw new Error(`generator printed no report: ${line.slice(0, 200)}`);
  const report = parsed;
  return { report, serverCpuS, rssMaxBytes: Math.max(0, ...samples), samples };
}

/** Shape check of the generator's --json output (same program, so the fields are trusted after this). */
function isLoadReport(value: unknown): value is LoadReport {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Partial<Record<keyof LoadReport, unknown>>;
  return typeof v.mode === 'string' && typeof v.ratePerS === 'number' && typeof v.repliesTotal === 'number' && typeof v.delayUs === 'object';
}

function parseOptions(argv: readonly string[]): CompareOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      pairs: { type: 'string' },
      'duration-s': { type: 'string' },
      'warmup-s': { type: 'string' },
      threads: { type: 'string' },
      window: { type: 'string' },
      sockets: { type: 'string' },
      'max-threads': { type: 'string' },
      'idle-rate': { type: 'string' },
      servers: { type: 'string' },
      'ntsd-threads': { type: 'string' },
      'soak-s': { type: 'string' },
      'ntsd-main': { type: 'string' },
      out: { type: 'string' },
      interleaved: { type: 'boolean' },
      'interleaved-sockets': { type: 'string' },
      'ke-flood': { type: 'boolean' },
      'ke-flood-nice': { type: 'string' },
      'ke-flood-concurrency': { type: 'string' },
      'ke-flood-threads': { type: 'string' },
      'ke-flood-generator-nice': { type: 'string' },
      'ke-flood-rate-fraction': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(
      'usage: node dist/bench/compare/main.js [--pairs 3] [--duration-s 5] [--warmup-s 1] [--threads 1] [--max-threads 2] [--sockets 8] [--window 16]\n' +
        `         [--idle-rate 1000] [--servers ${DEFAULT_NTP_VARIANTS.join(',')}] [--ntsd-threads N] [--soak-s 60]\n` +
        '         [--interleaved] [--interleaved-sockets 32] [--ntsd-main dist/src/main.js] [--out FILE]\n' +
        `       servers known: ${NTP_VARIANTS.join(', ')}\n` +
        '       node dist/bench/compare/main.js --ke-flood [--pairs 3] [--duration-s 5] [--ke-flood-nice 0,10]\n' +
        '         [--ke-flood-concurrency 16] [--ke-flood-threads 2] [--ke-flood-generator-nice 0]\n' +
        '         [--ke-flood-rate-fraction 0.25] [--ntsd-threads N]\n',
    );
    process.exit(0);
  }
  const num = (text: string | undefined, name: string, fallback: number, min: number): number => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: expected a number ≥ ${min}, got "${text}"`);
    return n;
  };
  const isVariant = (s: string): s is NtpVariant => NTP_VARIANTS.some((v) => v === s);
  const variants: NtpVariant[] = [];
  for (const s of (values.servers ?? DEFAULT_NTP_VARIANTS.join(',')).split(',').map((t) => t.trim())) {
    if (!isVariant(s)) throw new Error(`--servers: unknown server "${s}" (known: ${NTP_VARIANTS.join(', ')})`);
    variants.push(s);
  }
  const durationS = num(values['duration-s'], 'duration-s', 5, 1);
  const warmupS = num(values['warmup-s'], 'warmup-s', Math.min(1, durationS / 4), 0);
  const threads = Math.floor(num(values.threads, 'threads', 1, 1));
  const keFloodWanted = values['ke-flood'] === true;
  // The KE flood's NTS runs keep their one-socket window of 64; the NTP comparison spreads 128 over 8 sockets.
  const window = Math.floor(num(values.window, 'window', keFloodWanted ? 64 : 16, 1));
  const ntsdThreads = values['ntsd-threads'] === undefined ? undefined : Math.floor(num(values['ntsd-threads'], 'ntsd-threads', 0, 0));
  const ntsdMain = values['ntsd-main'] ?? join(here, '..', '..', 'src', 'main.js');
  let keFlood: KeFloodOptions | undefined;
  if (keFloodWanted) {
    const nicenessValues = (values['ke-flood-nice'] ?? '0,10').split(',').map((t) => Math.floor(num(t.trim(), 'ke-flood-nice', 0, 0)));
    if (nicenessValues.some((n) => n > 19)) throw new Error('--ke-flood-nice: values 0..19');
    const generatorNice = Math.floor(num(values['ke-flood-generator-nice'], 'ke-flood-generator-nice', 0, -20));
    if (generatorNice > 19) throw new Error('--ke-flood-generator-nice: -20..19');
    keFlood = {
      rounds: Math.max(1, Math.floor(num(values.pairs, 'pairs', 3, 1))),
      durationS,
      warmupS,
      threads,
      window,
      nicenessValues,
      floodConcurrency: Math.floor(num(values['ke-flood-concurrency'], 'ke-flood-concurrency', 16, 1)),
      floodThreads: Math.floor(num(values['ke-flood-threads'], 'ke-flood-threads', 2, 1)),
      floodGeneratorNice: generatorNice,
      probeRatePerS: 1000,
      fixedRateFraction: num(values['ke-flood-rate-fraction'], 'ke-flood-rate-fraction', 0.25, 0.01),
    };
  }
  return {
    ntp: {
      pairs: Math.floor(num(values.pairs, 'pairs', 3, 0)),
      durationS,
      warmupS,
      threads,
      maxThreads: Math.floor(num(values['max-threads'], 'max-threads', 2, 1)),
      sockets: Math.floor(num(values.sockets, 'sockets', 8, 1)),
      window,
      idleRatePerS: num(values['idle-rate'], 'idle-rate', 1000, 1),
      variants,
      ntsdThreads,
      soakS: num(values['soak-s'], 'soak-s', 0, 0),
      ntsdMain,
      cpus: cpus().length,
      interleaved: values.interleaved === true,
      interleavedSockets: Math.floor(num(values['interleaved-sockets'], 'interleaved-sockets', 32, 1)),
    },
    ntsdThreads,
    ntsdMain,
    out: values.out,
    keFlood,
  };
}

function fmtInt(n: number): string {
  if (!Number.isFinite(n)) return '–';
  return Math.round(n).toLocaleString('en-US');
}

async function stopEverything(): Promise<void> {
  for (const child of children) if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
  await Promise.all(started.map((s) => s.stop().catch(() => undefined)));
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const stopOnSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: stopping everything`);
    void stopEverything().then(() => process.exit(130));
  };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  if (o.keFlood !== undefined) return keFloodMain(o, o.keFlood);

  const n = o.ntp;
  if (n.variants.includes('chrony')) ensureChronyInstalled(log);
  if (n.variants.some((v) => v !== 'chrony') && !existsSync(o.ntsdMain)) throw new Error(`ntsd is not built: ${o.ntsdMain} is missing (run npm ci or npx tsc)`);
  const pkiDir = mkdtempSync(join(tmpdir(), 'unsafe-ntsd-bench-pki-'));
  const loadStart = loadavg();
  const startedAt = new Date();
  let result: NtpCompareResult | undefined;
  try {
    const pki = generateDevPki({ dir: pkiDir, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], prefix: 'unsafe-bench', caName: 'ntsd UNSAFE bench CA' });
    const tls: ServerTls = { chainPath: pki.chainPath, keyPath: pki.keyPath };
    result = await runNtpCompare(n, {
      runGenerator: (args, server, timeoutS) => runGenerator(args, server, timeoutS),
      tls,
      caPath: pki.caCertPath,
      freePort: freeTcpAndUdpPort,
      started: (s) => started.push(s),
      log,
    });
  } finally {
    await stopEverything();
    rmSync(pkiDir, { recursive: true, force: true });
  }
  if (result === undefined) throw new Error('the comparison produced no result');
  const elapsedS = (Date.now() - startedAt.getTime()) / 1000;
  const loadEnd = loadavg();
  const text = [
    `Medians of ${n.pairs} interleaved rounds, ${n.durationS} s runs (${n.warmupS} s warm-up); generator bench/load with kernel timestamps, ` +
      `${n.maxThreads} thread(s) in the max runs, ${n.threads} × ${n.sockets} sockets in the fixed-rate runs, same machine (${cpus().length} CPUs, Node ${process.version}, ${chronyVersion().split('\n')[0] ?? 'chrony'}; ` +
      `load average ${loadStart[0]?.toFixed(2) ?? '?'} at start, ${loadEnd[0]?.toFixed(2) ?? '?'} at end; ${elapsedS.toFixed(0)} s in all).`,
    '',
    renderNtpTables(result, n),
  ].join('\n');
  process.stdout.write(`${text}\n`);

  const outPath = o.out ?? join(repoRoot(), 'bench', 'results', `compare-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  mkdirSync(dirname(outPath), { recursive: true });
  const json = {
    startedAt: startedAt.toISOString(),
    elapsedS,
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '', node: process.version, kernel: release(), loadavgStart: loadStart, loadavgEnd: loadEnd },
    chronyVersion: chronyVersion(),
    options: o,
    labels: result.labels,
    summary: summarise(result),
    exchangeSummary: summariseExchanges(result),
    endRss: result.endRss,
    soak: result.soak,
    runs: result.records,
    table: text,
  };
  writeFileSync(outPath, `${JSON.stringify(json, null, 1)}\n`);
  log(`results written to ${outPath}`);
  return 0;
}

/** `--ke-flood`: the isolation experiment against ntsd alone (see ke-flood.ts). */
async function keFloodMain(o: CompareOptions, k: KeFloodOptions): Promise<number> {
  if (!existsSync(o.ntsdMain)) throw new Error(`ntsd is not built: ${o.ntsdMain} is missing (run npm ci or npx tsc)`);
  const pkiDir = mkdtempSync(join(tmpdir(), 'unsafe-ntsd-bench-pki-'));
  try {
    const pki = generateDevPki({ dir: pkiDir, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], prefix: 'unsafe-bench', caName: 'ntsd UNSAFE bench CA' });
    const tls: ServerTls = { chainPath: pki.chainPath, keyPath: pki.keyPath };
    const loadStart = loadavg();
    const result = await runKeFloodExperiment(k, {
      runGenerator: (args, server, timeoutS, nice) => runGenerator(args, server, timeoutS, nice),
      startNtsd: async (threadNiceness) => {
        const server = await startNtsd({
          mainJs: o.ntsdMain,
          ntpPort: await freeTcpAndUdpPort(),
          kePort: await freeTcpAndUdpPort(),
          tls,
          threads: o.ntsdThreads,
          threadNiceness,
        });
        started.push(server);
        log(`ntsd started (KE thread nice ${threadNiceness}): pid ${server.pid}, NTP 127.0.0.1:${server.ntpPort}, NTS-KE 127.0.0.1:${server.kePort}`);
        return {
          ...server,
          stop: async () => {
            const i = started.indexOf(server);
            if (i >= 0) started.splice(i, 1);
            await server.stop();
          },
        };
      },
      caPath: pki.caCertPath,
      log,
    });
    const loadEnd = loadavg();
    const text = [
      `KE-flood isolation: medians of ${k.rounds} round(s); NTS runs of ${k.durationS} s (${k.warmupS} s warm-up), ${k.threads} generator thread(s); ` +
        `flood: bench/load --mode ke, ${k.floodConcurrency} sessions on ${k.floodThreads} thread(s), generator nice ${k.floodGeneratorNice}; ` +
        `fixed-rate runs at ${fmtInt(result.fixedRatePerS)} req/s + probe ${k.probeRatePerS}/s. ` +
        `${cpus().length} CPUs, Node ${process.version}, load average ${loadStart[0]?.toFixed(2) ?? '?'} at start, ${loadEnd[0]?.toFixed(2) ?? '?'} at end.`,
      '',
      renderKeFloodTable(result),
    ].join('\n');
    process.stdout.write(`${text}\n`);
    const outPath = o.out ?? join(repoRoot(), 'bench', 'results', `ke-flood-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    mkdirSync(dirname(outPath), { recursive: true });
    const json = {
      startedAt: new Date().toISOString(),
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '', node: process.version, kernel: release(), loadavgStart: loadStart, loadavgEnd: loadEnd },
      options: k,
      summary: summariseKeFlood(result),
      fixedRatePerS: result.fixedRatePerS,
      runs: result.runs,
      table: text,
    };
    writeFileSync(outPath, `${JSON.stringify(json, null, 1)}\n`);
    log(`results written to ${outPath}`);
    return 0;
  } finally {
    await stopEverything();
    rmSync(pkiDir, { recursive: true, force: true });
  }
}

function chronyVersion(): string {
  const out = spawnSync('/usr/sbin/chronyd', ['--version'], { encoding: 'utf8' });
  return out.status === 0 ? out.stdout.trim() : '';
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (err: unknown) => {
    process.stderr.write(`compare: ${err instanceof Error ? err.message : String(err)}\n`);
    await stopEverything();
    process.exitCode = 1;
  },
);
