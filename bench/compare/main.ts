#!/usr/bin/env node
/**
 * ntsd vs chrony on the same machine in the same run (see bench/compare/README.md):
 *   node dist/bench/compare/main.js [--pairs 3] [--duration-s 5] [--soak-s 60]
 *
 * Makes an ECDSA P-256 PKI, starts ntsd (its CLI) and chronyd as NTS servers on loopback, then for each
 * pair runs the same generator (bench/load, as a child process with --json) against A then B for every
 * measurement, reads each server's CPU time and memory from /proc, and prints a markdown table of
 * medians with ntsd/chrony ratios. Results also go to bench/results/compare-<time>.json.
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
import { generateDevPki } from '../../src/io/dev-certs.js';
import { freeTcpAndUdpPort } from '../../test/interop/peers.js';
import type { LoadReport } from '../load/protocol.js';
import { renderKeFloodTable, runKeFloodExperiment, summariseKeFlood, type KeFloodOptions } from './ke-flood.js';
import { cpuSeconds, residentBytes } from './procfs.js';
import { ensureChronyInstalled, startChrony, startNtsd, type ServerTls, type ServerUnderTest } from './servers.js';

/** Options of one comparison. */
export interface CompareOptions {
  readonly pairs: number;
  readonly durationS: number;
  readonly warmupS: number;
  /** Generator threads for the UDP runs. */
  readonly threads: number;
  /** Closed-loop window per socket. */
  readonly window: number;
  /** Concurrent sessions in the KE runs. */
  readonly keConcurrency: number;
  /** Generator threads for the KE runs (a TLS client costs ~4x the server's CPU per handshake). */
  readonly keThreads: number;
  /** Pacing of the 50 % fixed-rate run. */
  readonly pacing: 'tick' | 'spin';
  /** Servers to run, in A/B order. */
  readonly servers: readonly ('ntsd' | 'chrony')[];
  /** ntsd `[worker-pool] threads`; undefined = its default. */
  readonly ntsdThreads: number | undefined;
  /** After the pairs, load ntsd this long and sample its RSS every second (0 = no soak). */
  readonly soakS: number;
  /** Path of ntsd's dist/src/main.js. */
  readonly ntsdMain: string;
  /** Result file; undefined = bench/results/compare-<time>.json. */
  readonly out: string | undefined;
  /** Run the KE-flood isolation experiment (ntsd only) instead of the A/B pairs; undefined = do not. */
  readonly keFlood: KeFloodOptions | undefined;
}

/** The measurements of one run of the generator against one server. */
interface RunRecord {
  readonly pair: number;
  readonly server: string;
  readonly kind: RunKind;
  readonly report: LoadReport;
  /** Server CPU seconds (all threads and child processes) over the whole generator run. */
  readonly serverCpuS: number;
  /** Largest VmRSS sampled during the run, bytes. */
  readonly rssMaxBytes: number;
}

/** Largest |drift| of a soak still called flat, MB. */
const SOAK_FLAT_MB = 10;

type RunKind = 'nts' | 'plain' | 'ke' | 'nts_half' | 'echo';

const here = dirname(fileURLToPath(import.meta.url));
const LOAD_MAIN = join(here, '..', 'load', 'main.js');

const children = new Set<ChildProcess>();
const started: ServerUnderTest[] = [];

function log(line: string): void {
  process.stderr.write(`[compare] ${line}\n`);
}

function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? (v[mid] ?? Number.NaN) : ((v[mid - 1] ?? 0) + (v[mid] ?? 0)) / 2;
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

function fmtInt(n: number): string {
  if (!Number.isFinite(n)) return '–';
  return Math.round(n).toLocaleString('en-US');
}

function fmtRatio(a: number, b: number): string {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '–';
  return `${(a / b).toFixed(2)}×`;
}

function fmtNum(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '–';
}

/** One row of the result table. */
interface Row {
  readonly metric: string;
  readonly ntsd: number;
  readonly chrony: number;
  readonly format: (n: number) => string;
  /** Whether a higher value is better (ratio shown as ntsd/chrony either way). */
  readonly target: string;
  /** Whether ntsd's value meets the target (undefined: no target). */
  readonly met: boolean | undefined;
}

function buildRows(records: readonly RunRecord[], o: CompareOptions): { rows: Row[]; echoMedian: number; echoCpuUs: number } {
  const pick = (server: string, kind: RunKind, f: (r: RunRecord) => number): number =>
    median(records.filter((r) => r.server === server && r.kind === kind).map(f));
  const both = (kind: RunKind, f: (r: RunRecord) => number): [number, number] => [pick('ntsd', kind, f), pick('chrony', kind, f)];
  const perCpu = (r: RunRecord): number => (r.serverCpuS > 0 ? r.report.repliesTotal / r.serverCpuS : Number.NaN);
  const [ntsRate, ntsRateC] = both('nts', (r) => r.report.ratePerS);
  const [plainRate, plainRateC] = both('plain', (r) => r.report.ratePerS);
  const [ntsCpu, ntsCpuC] = both('nts', perCpu);
  const [keRate, keRateC] = both('ke', (r) => r.report.ratePerS);
  const [keCpu, keCpuC] = both('ke', perCpu);
  const [halfOffset, halfOffsetC] = both('nts_half', (r) => r.report.probe?.offsetAbsUs.p99 ?? Number.NaN);
  const [halfDelay, halfDelayC] = both('nts_half', (r) => r.report.probe?.delayUs.p99 ?? Number.NaN);
  const [bulkOffset, bulkOffsetC] = both('nts_half', (r) => r.report.offsetAbsUs?.p99 ?? Number.NaN);
  const [halfRate, halfRateC] = both('nts_half', (r) => r.report.ratePerS);
  const [loss, lossC] = both('nts', (r) => r.report.lossPercent);
  const sumInvalid = (server: string): number => records.filter((r) => r.server === server && r.kind !== 'echo').reduce((a, r) => a + r.report.invalid, 0);
  const rssMax = (server: string): number => Math.max(...records.filter((r) => r.server === server).map((r) => r.rssMaxBytes), 0) / 2 ** 20;
  const echoMedian = median(records.filter((r) => r.kind === 'echo').map((r) => r.report.ratePerS));
  const echoCpuUs = median(records.filter((r) => r.kind === 'echo').map((r) => r.report.generatorCpuUsPerReply));
  const int = fmtInt;
  const us = (n: number): string => fmtNum(n, 1);
  const rows: Row[] = [
    { metric: `NTS req/s (closed loop, ${o.threads} thread × window ${o.window})`, ntsd: ntsRate, chrony: ntsRateC, format: int, target: '≥ 0.30× chrony', met: ntsRate / ntsRateC >= 0.3 },
    { metric: 'plain NTP req/s (closed loop)', ntsd: plainRate, chrony: plainRateC, format: int, target: '', met: undefined },
    { metric: 'NTS req per server CPU-second', ntsd: ntsCpu, chrony: ntsCpuC, format: int, target: '≥ 25,000', met: ntsCpu >= 25_000 },
    { metric: `NTS-KE/s (${o.keConcurrency} concurrent per generator thread × ${o.keThreads}, full TLS 1.3)`, ntsd: keRate, chrony: keRateC, format: int, target: '', met: undefined },
    { metric: 'NTS-KE per server CPU-second', ntsd: keCpu, chrony: keCpuC, format: int, target: '≥ 1,400', met: keCpu >= 1400 },
    { metric: 'NTS req/s offered at 50 % of own max (achieved)', ntsd: halfRate, chrony: halfRateC, format: int, target: '', met: undefined },
    { metric: '\\|offset\\| p99 at 50 % load, idle probe (µs)', ntsd: halfOffset, chrony: halfOffsetC, format: us, target: '≤ 100 µs', met: halfOffset <= 100 },
    { metric: 'delay p99 at 50 % load, idle probe (µs)', ntsd: halfDelay, chrony: halfDelayC, format: us, target: '', met: undefined },
    { metric: '\\|offset\\| p99 at 50 % load, bulk threads (µs)', ntsd: bulkOffset, chrony: bulkOffsetC, format: us, target: '', met: undefined },
    { metric: 'NTS loss at saturation (%)', ntsd: loss, chrony: lossC, format: (n) => fmtNum(n, 3), target: '', met: undefined },
    { metric: 'invalid responses (all runs)', ntsd: sumInvalid('ntsd'), chrony: sumInvalid('chrony'), format: int, target: '0', met: sumInvalid('ntsd') === 0 },
    { metric: 'RSS peak (VmHWM, MB)', ntsd: Number.NaN, chrony: Number.NaN, format: (n) => fmtNum(n, 1), target: '< 200 MB', met: undefined },
    { metric: 'RSS sampled max during runs (MB)', ntsd: rssMax('ntsd'), chrony: rssMax('chrony'), format: (n) => fmtNum(n, 1), target: '< 200 MB', met: rssMax('ntsd') < 200 },
  ];
  return { rows, echoMedian, echoCpuUs };
}

function renderTable(rows: readonly Row[], servers: readonly string[]): string {
  const hasNtsd = servers.includes('ntsd');
  const hasChrony = servers.includes('chrony');
  const out = ['| metric | ntsd | chrony | ntsd/chrony | target (ntsd) |', '|---|---:|---:|---:|---|'];
  for (const r of rows) {
    const mark = !hasNtsd || r.met === undefined || !Number.isFinite(r.ntsd) ? '' : r.met ? ' ✓' : ' ✗';
    out.push(
      `| ${r.metric} | ${hasNtsd ? r.format(r.ntsd) : '–'} | ${hasChrony ? r.format(r.chrony) : '–'} | ${hasNtsd && hasChrony ? fmtRatio(r.ntsd, r.chrony) : '–'} | ${r.target}${mark} |`,
    );
  }
  return out.join('\n');
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
      'ke-concurrency': { type: 'string' },
      'ke-threads': { type: 'string' },
      pacing: { type: 'string' },
      servers: { type: 'string' },
      'ntsd-threads': { type: 'string' },
      'soak-s': { type: 'string' },
      'ntsd-main': { type: 'string' },
      out: { type: 'string' },
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
      'usage: node dist/bench/compare/main.js [--pairs 3] [--duration-s 5] [--warmup-s 1] [--threads 1] [--window 64]\n' +
        '         [--ke-concurrency 8] [--ke-threads 2] [--pacing tick|spin] [--servers ntsd,chrony] [--ntsd-threads N] [--soak-s 60]\n' +
        '         [--ntsd-main dist/src/main.js] [--out FILE]\n' +
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
  const servers = (values.servers ?? 'ntsd,chrony').split(',').map((s) => s.trim());
  for (const s of servers) if (s !== 'ntsd' && s !== 'chrony') throw new Error(`--servers: unknown server "${s}"`);
  const pacing = values.pacing ?? 'tick';
  if (pacing !== 'tick' && pacing !== 'spin') throw new Error('--pacing: tick or spin');
  const durationS = num(values['duration-s'], 'duration-s', 5, 1);
  const warmupS = num(values['warmup-s'], 'warmup-s', Math.min(1, durationS / 4), 0);
  const threads = Math.floor(num(values.threads, 'threads', 1, 1));
  const window = Math.floor(num(values.window, 'window', 64, 1));
  let keFlood: KeFloodOptions | undefined;
  if (values['ke-flood'] === true) {
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
    pairs: Math.floor(num(values.pairs, 'pairs', 3, 0)),
    durationS,
    warmupS,
    threads,
    window,
    keConcurrency: Math.floor(num(values['ke-concurrency'], 'ke-concurrency', 8, 1)),
    keThreads: Math.floor(num(values['ke-threads'], 'ke-threads', 2, 1)),
    pacing,
    servers: servers.filter((s): s is 'ntsd' | 'chrony' => s === 'ntsd' || s === 'chrony'),
    ntsdThreads: values['ntsd-threads'] === undefined ? undefined : Math.floor(num(values['ntsd-threads'], 'ntsd-threads', 0, 0)),
    soakS: num(values['soak-s'], 'soak-s', 0, 0),
    ntsdMain: values['ntsd-main'] ?? join(here, '..', '..', 'src', 'main.js'),
    out: values.out,
    keFlood,
  };
}

async function stopEverything(): Promise<void> {
  for (const child of children) if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
  await Promise.all(started.map((s) => s.stop().catch(() => undefined)));
}

/** Soak: NTS closed loop against ntsd for `soakS`, VmRSS sampled every second. */
interface SoakResult {
  readonly durationS: number;
  readonly ratePerS: number;
  readonly samplesMb: number[];
  readonly minMb: number;
  readonly maxMb: number;
  /** Median of the last 10 samples minus median of samples 5..14 (after start-up), MB. */
  readonly driftMb: number;
  readonly peakMb: number;
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

  if (o.servers.includes('chrony')) ensureChronyInstalled(log);
  if (o.servers.includes('ntsd') && !existsSync(o.ntsdMain)) throw new Error(`ntsd is not built: ${o.ntsdMain} is missing (run npm ci or npx tsc)`);

  const pkiDir = mkdtempSync(join(tmpdir(), 'unsafe-ntsd-bench-pki-'));
  const records: RunRecord[] = [];
  let soak: SoakResult | undefined;
  const endRss: Record<string, { rssMb: number; peakMb: number }> = {};
  try {
    const pki = generateDevPki({ dir: pkiDir, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], prefix: 'unsafe-bench', caName: 'ntsd UNSAFE bench CA' });
    const tls: ServerTls = { chainPath: pki.chainPath, keyPath: pki.keyPath };
    const servers: ServerUnderTest[] = [];
    for (const name of o.servers) {
      const ntpPort = await freeTcpAndUdpPort();
      const kePort = await freeTcpAndUdpPort();
      const server =
        name === 'ntsd'
          ? await startNtsd({ mainJs: o.ntsdMain, ntpPort, kePort, tls, threads: o.ntsdThreads })
          : await startChrony({ ntpPort, kePort, tls });
      started.push(server);
      servers.push(server);
      log(`${name} started: pid ${server.pid}, NTP 127.0.0.1:${ntpPort}, NTS-KE 127.0.0.1:${kePort}`);
    }

    const d = String(o.durationS);
    const w = String(o.warmupS);
    const common = ['--duration-s', d, '--warmup-s', w, '--threads', String(o.threads)];
    const ntsArgs = (s: ServerUnderTest): string[] => ['--mode', 'nts', '--ke', `127.0.0.1:${s.kePort}`, '--ca', pki.caCertPath, ...common];
    const timeoutS = o.durationS + 90;
    const record = async (pair: number, kind: RunKind, server: ServerUnderTest | undefined, args: string[]): Promise<RunRecord> => {
      const { report, serverCpuS, rssMaxBytes } = await runGenerator(args, server, timeoutS);
      const rec: RunRecord = { pair, server: server?.name ?? 'generator', kind, report, serverCpuS, rssMaxBytes };
      records.push(rec);
      const probe = report.probe === null ? '' : `; probe |offset| p99 ${fmtNum(report.probe.offsetAbsUs.p99, 1)} µs`;
      const extra = report.offsetAbsUs === null ? '' : `, |offset| p99 ${fmtNum(report.offsetAbsUs.p99, 1)} µs${probe}`;
      log(
        `pair ${pair} ${kind.padEnd(8)} ${(server?.name ?? 'echo').padEnd(6)} ${fmtInt(report.ratePerS)}/s, loss ${fmtNum(report.lossPercent, 3)} %, invalid ${report.invalid}, delay p99 ${fmtNum(report.delayUs.p99, 1)} µs${extra}, server CPU ${fmtNum(serverCpuS, 2)} s`,
      );
      return rec;
    };

    for (let pair = 1; pair <= o.pairs; pair++) {
      await record(pair, 'echo', undefined, ['--mode', 'echo', '--window', String(o.window), ...common]);
      const saturation = new Map<string, number>();
      for (const s of servers) {
        const rec = await record(pair, 'nts', s, [...ntsArgs(s), '--window', String(o.window)]);
        saturation.set(s.name, rec.report.ratePerS);
      }
      for (const s of servers) await record(pair, 'plain', s, ['--mode', 'plain', '--target', `127.0.0.1:${s.ntpPort}`, '--window', String(o.window), ...common]);
      for (const s of servers) {
        await record(pair, 'ke', s, ['--mode', 'ke', '--ke', `127.0.0.1:${s.kePort}`, '--ca', pki.caCertPath, '--concurrency', String(o.keConcurrency), '--duration-s', d, '--warmup-s', w, '--threads', String(o.keThreads)]);
      }
      for (const s of servers) {
        const half = Math.max(100, Math.round((saturation.get(s.name) ?? 0) / 2));
        await record(pair, 'nts_half', s, [...ntsArgs(s), '--rate', String(half), '--pacing', o.pacing, '--probe-rate', '1000']);
      }
    }

    const ntsd = servers.find((s) => s.name === 'ntsd');
    if (o.soakS > 0 && ntsd !== undefined) {
      log(`soak: NTS closed loop against ntsd for ${o.soakS} s, VmRSS every second`);
      const { report, samples } = await runGenerator(
        ['--mode', 'nts', '--ke', `127.0.0.1:${ntsd.kePort}`, '--ca', pki.caCertPath, '--duration-s', String(o.soakS), '--threads', String(o.threads), '--window', String(o.window), '--max-requests', '2000000000'],
        ntsd,
        o.soakS + 90,
      );
      const mb = samples.map((b) => b / 2 ** 20);
      const early = median(mb.slice(5, 15));
      const late = median(mb.slice(-10));
      soak = {
        durationS: report.measuredS,
        ratePerS: report.ratePerS,
        samplesMb: mb.map((v) => Math.round(v * 10) / 10),
        minMb: Math.min(...mb),
        maxMb: Math.max(...mb),
        driftMb: late - early,
        peakMb: residentBytes(ntsd.pid).peakBytes / 2 ** 20,
      };
    }

    for (const s of servers) {
      const m = residentBytes(s.pid);
      endRss[s.name] = { rssMb: m.rssBytes / 2 ** 20, peakMb: m.peakBytes / 2 ** 20 };
    }
  } finally {
    await stopEverything();
    rmSync(pkiDir, { recursive: true, force: true });
  }

  // Report.
  const { rows, echoMedian, echoCpuUs } = buildRows(records, o);
  const peakRow = rows.findIndex((r) => r.metric.startsWith('RSS peak'));
  if (peakRow >= 0) {
    const ntsdPeak = endRss['ntsd']?.peakMb ?? Number.NaN;
    rows[peakRow] = { ...(rows[peakRow] as Row), ntsd: ntsdPeak, chrony: endRss['chrony']?.peakMb ?? Number.NaN, met: ntsdPeak < 200 };
    rows.splice(peakRow + 1, 0, {
      metric: 'RSS at end (VmRSS, MB)',
      ntsd: endRss['ntsd']?.rssMb ?? Number.NaN,
      chrony: endRss['chrony']?.rssMb ?? Number.NaN,
      format: (n) => fmtNum(n, 1),
      target: '< 200 MB',
      met: (endRss['ntsd']?.rssMb ?? Number.NaN) < 200,
    });
  }
  const lines: string[] = [];
  if (records.length > 0) {
    lines.push(
      `Medians of ${o.pairs} A/B pairs, ${o.durationS} s runs (${o.warmupS} s warm-up), generator: bench/load, ${o.threads} thread(s), same machine ` +
        `(${cpus().length} CPUs, Node ${process.version}, load average at end ${loadavg()[0]?.toFixed(2) ?? '?'}).`,
    );
    lines.push('');
    lines.push(renderTable(rows, o.servers));
    lines.push('');
    lines.push(
      `Generator ceiling: ${fmtInt(echoMedian)} packets/s against a one-process Node UDP echo server (bench/load --mode echo, closed loop); ` +
        `the generator spent ${fmtNum(echoCpuUs, 1)} µs CPU per packet.`,
    );
    lines.push(
      `The echo server is one Node process, so that rate is a lower bound: at ${fmtNum(echoCpuUs, 1)} µs per packet one generator core can drive about ${fmtInt(1e6 / echoCpuUs)} packets/s. ` +
        'A server whose rate is close to that was faster than the generator could show; the per-CPU-second rows do not depend on the generator.',
    );
  }
  if (soak !== undefined) {
    lines.push('');
    lines.push(`Soak: ntsd under NTS closed-loop load for ${fmtNum(soak.durationS, 0)} s (${fmtInt(soak.ratePerS)} req/s), VmRSS sampled every second:`);
    lines.push('');
    lines.push('| RSS min (MB) | RSS max (MB) | drift, last 10 s vs s 5–15 (MB) | VmHWM (MB) | target |');
    lines.push('|---:|---:|---:|---:|---|');
    const below = soak.maxMb < 200 && soak.peakMb < 200;
    const flat = Math.abs(soak.driftMb) <= SOAK_FLAT_MB;
    lines.push(
      `| ${fmtNum(soak.minMb, 1)} | ${fmtNum(soak.maxMb, 1)} | ${fmtNum(soak.driftMb, 1)} | ${fmtNum(soak.peakMb, 1)} | < 200 MB${below ? ' ✓' : ' ✗'}, flat (drift ≤ ${SOAK_FLAT_MB} MB)${flat ? ' ✓' : ' ✗'} |`,
    );
    lines.push('');
    lines.push(`VmRSS per second (MB): ${soak.samplesMb.join(' ')}`);
  }
  const text = lines.join('\n');
  process.stdout.write(`${text}\n`);

  const outPath = o.out ?? join(repoRoot(), 'bench', 'results', `compare-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  mkdirSync(dirname(outPath), { recursive: true });
  const json = {
    startedAt: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '', node: process.version, kernel: release(), loadavg: loadavg() },
    chronyVersion: chronyVersion(),
    options: o,
    summary: rows.map((r) => ({ metric: r.metric, ntsd: r.ntsd, chrony: r.chrony, ratio: r.ntsd / r.chrony, target: r.target, met: r.met ?? null })),
    generatorCeilingPerS: echoMedian,
    generatorCpuUsPerPacket: echoCpuUs,
    endRss,
    soak: soak ?? null,
    runs: records,
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
