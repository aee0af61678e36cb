/**
 * KE-flood isolation experiment (RFC 8915 §8.3: a flood of NTS-KE handshakes should not hurt clients that
 * already have cookies). For each KE-thread nice value (ntsd `[[nts-ke-server]] thread-niceness`), a fresh
 * ntsd is loaded by two bench/load processes at once, one `--mode nts`, one `--mode ke` (the flood), and
 * compared with the NTS load alone:
 *   1. NTS closed loop (maximum rate), alone, then with the flood;
 *   2. NTS at a fixed rate (a quarter of round 1's alone rate by default: on two shared cores the probe
 *      already queues at half) plus an idle probe thread, alone, then with the flood: the probe's delay and
 *      |offset| percentiles are the server's receive-timestamp error.
 * The flood starts one second before the NTS run and ends after it. The KE thread is found by a short
 * flood-only burst after start-up (the thread that used the most CPU) so its CPU share can be reported.
 * Everything runs on one machine: the flood generator competes for the same cores (2.3 ms of client CPU
 * per handshake against ~0.6 ms in the server); `--ke-flood-generator-nice 19` approximates an attacker
 * whose CPU is elsewhere.
 */
import type { LoadReport } from '../load/protocol.js';
import { threadCpuSeconds } from './procfs.js';
import type { ServerUnderTest } from './servers.js';

/** Options of the experiment. */
export interface KeFloodOptions {
  /** Repetitions of the whole sequence for every nice value (medians are reported). */
  readonly rounds: number;
  /** Length of each NTS run, seconds. */
  readonly durationS: number;
  readonly warmupS: number;
  /** NTS generator threads and closed-loop window. */
  readonly threads: number;
  readonly window: number;
  /** KE-thread nice values compared, e.g. [0, 10]. */
  readonly nicenessValues: readonly number[];
  /** Flood: concurrent KE sessions and generator threads (as fast as the generator can go). */
  readonly floodConcurrency: number;
  readonly floodThreads: number;
  /** Nice value of the flood generator process (0 = as the rest). */
  readonly floodGeneratorNice: number;
  /** Probe rate of the fixed-rate runs, req/s. */
  readonly probeRatePerS: number;
  /** Fixed rate as a fraction of round 1's alone closed-loop rate (default 0.25). */
  readonly fixedRateFraction: number;
}

/** Runs one bench/load process (with --json) and returns its report and the server's CPU over the run. */
export type GeneratorRunner = (
  args: readonly string[],
  server: ServerUnderTest | undefined,
  timeoutS: number,
  nice: number,
) => Promise<{ readonly report: LoadReport; readonly serverCpuS: number }>;

/** What the experiment needs from its caller. */
export interface KeFloodDeps {
  readonly runGenerator: GeneratorRunner;
  /** Starts a fresh ntsd whose KE thread uses `niceness`. */
  readonly startNtsd: (niceness: number) => Promise<ServerUnderTest>;
  /** PEM file of the CA that signed ntsd's certificate. */
  readonly caPath: string;
  readonly log: (line: string) => void;
}

/** The phases of one round. */
export type KeFloodPhase = 'closed' | 'fixed';

/** One NTS run, alone or under the flood. */
export interface KeFloodRun {
  readonly round: number;
  readonly niceness: number;
  readonly phase: KeFloodPhase;
  readonly flood: boolean;
  readonly nts: LoadReport;
  /** The flood generator's report (null when alone). */
  readonly ke: LoadReport | null;
  /** ntsd CPU seconds (all threads) and KE-thread CPU seconds over the NTS run's process lifetime. */
  readonly serverCpuS: number;
  readonly keThreadCpuS: number;
  /** Wall-clock seconds the CPU figures cover. */
  readonly wallS: number;
}

/** Everything measured. */
export interface KeFloodResult {
  readonly options: KeFloodOptions;
  readonly fixedRatePerS: number;
  readonly runs: readonly KeFloodRun[];
}

function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? (v[mid] ?? Number.NaN) : ((v[mid - 1] ?? 0) + (v[mid] ?? 0)) / 2;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs the experiment; ntsd instances are started and stopped here, one per (round, nice value). */
export async function runKeFloodExperiment(o: KeFloodOptions, deps: KeFloodDeps): Promise<KeFloodResult> {
  const runs: KeFloodRun[] = [];
  let fixedRatePerS = 0;
  const timeoutS = o.durationS + 90;
  for (let round = 1; round <= o.rounds; round++) {
    for (const niceness of o.nicenessValues) {
      const server = await deps.startNtsd(niceness);
      try {
        const ke = `127.0.0.1:${server.kePort}`;
        const floodArgs = (seconds: number): string[] => [
          '--mode', 'ke', '--ke', ke, '--ca', deps.caPath,
          '--concurrency', String(o.floodConcurrency), '--threads', String(o.floodThreads),
          '--duration-s', String(seconds), '--max-requests', '100000000',
        ];
        // Flood-only burst: warms the KE thread up and tells which thread it is.
        const before = threadCpuSeconds(server.pid);
        await deps.runGenerator(floodArgs(2), undefined, timeoutS, o.floodGeneratorNice);
        const after = threadCpuSeconds(server.pid);
        let keTid = -1;
        let most = -1;
        for (const [tid, cpu] of after) {
          const delta = cpu - (before.get(tid) ?? 0);
          if (delta > most) {
            most = delta;
            keTid = tid;
          }
        }
        const ntsArgs = ['--mode', 'nts', '--ke', ke, '--ca', deps.caPath, '--duration-s', String(o.durationS), '--warmup-s', String(o.warmupS), '--threads', String(o.threads), '--max-requests', '2000000000'];
        const measure = async (phase: KeFloodPhase, flood: boolean, extra: readonly string[]): Promise<KeFloodRun> => {
          const t0 = threadCpuSeconds(server.pid);
          const wall0 = performance.now();
          let floodRun: Promise<{ readonly report: LoadReport }> | undefined;
          if (flood) {
            floodRun = deps.runGenerator(floodArgs(o.durationS + 2.5), undefined, timeoutS, o.floodGeneratorNice);
            await sleep(1000);
          }
          const nts = await deps.runGenerator([...ntsArgs, ...extra], server, timeoutS, 0);
          const keReport = floodRun === undefined ? null : (await floodRun).report;
          const t1 = threadCpuSeconds(server.pid);
          let total = 0;
          for (const [tid, cpu] of t1) total += cpu - (t0.get(tid) ?? 0);
          const run: KeFloodRun = {
            round,
            niceness,
            phase,
            flood,
            nts: nts.report,
            ke: keReport,
            serverCpuS: total,
            keThreadCpuS: (t1.get(keTid) ?? 0) - (t0.get(keTid) ?? 0),
            wallS: (performance.now() - wall0) / 1000,
          };
          runs.push(run);
          const probe = nts.report.probe;
          deps.log(
            `ke-flood round ${round} nice ${niceness} ${phase.padEnd(6)} ${flood ? 'flood' : 'alone'}: NTS ${Math.round(nts.report.ratePerS)}/s` +
              (probe === null ? '' : `, probe delay p99 ${probe.delayUs.p99.toFixed(1)} µs, |offset| p99 ${probe.offsetAbsUs.p99.toFixed(1)} µs`) +
              (keReport === null ? '' : `, KE ${Math.round(keReport.ratePerS)}/s`) +
              `, KE thread ${run.keThreadCpuS.toFixed(2)} s of ${run.wallS.toFixed(1)} s`,
          );
          return run;
        };
        const alone = await measure('closed', false, ['--window', String(o.window)]);
        await measure('closed', true, ['--window', String(o.window)]);
        if (fixedRatePerS === 0) fixedRatePerS = Math.max(100, Math.round(alone.nts.ratePerS * o.fixedRateFraction));
        const fixed = ['--rate', String(fixedRatePerS), '--probe-rate', String(o.probeRatePerS)];
        await measure('fixed', false, fixed);
        await measure('fixed', true, fixed);
      } finally {
        await server.stop();
      }
    }
  }
  return { options: o, fixedRatePerS, runs };
}

function pct(after: number, before: number): string {
  if (!Number.isFinite(after) || !Number.isFinite(before) || before === 0) return '–';
  const d = (after / before - 1) * 100;
  return `${d >= 0 ? '+' : ''}${d.toFixed(0)} %`;
}

function f(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return '–';
  return digits === 0 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits);
}

/** Median summary of one nice value. */
export interface KeFloodSummary {
  readonly niceness: number;
  readonly closedAlone: number;
  readonly closedFlood: number;
  readonly keRateClosed: number;
  readonly keRateFixed: number;
  /** KE-thread CPU as a share of one core during the flood runs (closed, fixed). */
  readonly keThreadShareClosed: number;
  readonly keThreadShareFixed: number;
  readonly fixedAchievedAlone: number;
  readonly fixedAchievedFlood: number;
  readonly probeDelayP50Alone: number;
  readonly probeDelayP50Flood: number;
  readonly probeDelayP99Alone: number;
  readonly probeDelayP99Flood: number;
  readonly probeOffsetP99Alone: number;
  readonly probeOffsetP99Flood: number;
}

/** Medians over rounds for every nice value. */
export function summariseKeFlood(result: KeFloodResult): KeFloodSummary[] {
  return result.options.nicenessValues.map((niceness) => {
    const pick = (phase: KeFloodPhase, flood: boolean, g: (r: KeFloodRun) => number): number =>
      median(result.runs.filter((r) => r.niceness === niceness && r.phase === phase && r.flood === flood).map(g));
    return {
      niceness,
      closedAlone: pick('closed', false, (r) => r.nts.ratePerS),
      closedFlood: pick('closed', true, (r) => r.nts.ratePerS),
      keRateClosed: pick('closed', true, (r) => r.ke?.ratePerS ?? Number.NaN),
      keRateFixed: pick('fixed', true, (r) => r.ke?.ratePerS ?? Number.NaN),
      keThreadShareClosed: pick('closed', true, (r) => r.keThreadCpuS / r.wallS),
      keThreadShareFixed: pick('fixed', true, (r) => r.keThreadCpuS / r.wallS),
      fixedAchievedAlone: pick('fixed', false, (r) => r.nts.ratePerS),
      fixedAchievedFlood: pick('fixed', true, (r) => r.nts.ratePerS),
      probeDelayP50Alone: pick('fixed', false, (r) => r.nts.probe?.delayUs.p50 ?? Number.NaN),
      probeDelayP50Flood: pick('fixed', true, (r) => r.nts.probe?.delayUs.p50 ?? Number.NaN),
      probeDelayP99Alone: pick('fixed', false, (r) => r.nts.probe?.delayUs.p99 ?? Number.NaN),
      probeDelayP99Flood: pick('fixed', true, (r) => r.nts.probe?.delayUs.p99 ?? Number.NaN),
      probeOffsetP99Alone: pick('fixed', false, (r) => r.nts.probe?.offsetAbsUs.p99 ?? Number.NaN),
      probeOffsetP99Flood: pick('fixed', true, (r) => r.nts.probe?.offsetAbsUs.p99 ?? Number.NaN),
    };
  });
}

/** The markdown table (one row per nice value; "Δ" is the flood's effect, target within ±10 %). */
export function renderKeFloodTable(result: KeFloodResult): string {
  const rows = summariseKeFlood(result);
  const out = [
    '| KE thread nice | NTS closed loop alone (req/s) | + KE flood | Δ | fixed rate achieved alone / + flood (req/s) | Δ | KE/s in flood (closed / fixed) | KE thread CPU (cores) | probe delay p50 alone / flood (µs) | probe delay p99 alone (µs) | + flood | Δ | probe \\|offset\\| p99 alone (µs) | + flood | Δ |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    out.push(
      `| ${r.niceness} | ${f(r.closedAlone)} | ${f(r.closedFlood)} | ${pct(r.closedFlood, r.closedAlone)} | ` +
        `${f(r.fixedAchievedAlone)} / ${f(r.fixedAchievedFlood)} | ${pct(r.fixedAchievedFlood, r.fixedAchievedAlone)} | ${f(r.keRateClosed)} / ${f(r.keRateFixed)} | ` +
        `${f(r.keThreadShareClosed, 2)} / ${f(r.keThreadShareFixed, 2)} | ${f(r.probeDelayP50Alone, 1)} / ${f(r.probeDelayP50Flood, 1)} | ` +
        `${f(r.probeDelayP99Alone, 1)} | ${f(r.probeDelayP99Flood, 1)} | ${pct(r.probeDelayP99Flood, r.probeDelayP99Alone)} | ` +
        `${f(r.probeOffsetP99Alone, 1)} | ${f(r.probeOffsetP99Flood, 1)} | ${pct(r.probeOffsetP99Flood, r.probeOffsetP99Alone)} |`,
    );
  }
  return out.join('\n');
}
