#!/usr/bin/env node
/**
 * Soak: the real daemon under NTS load at about half of its own maximum for a fixed time.
 *
 *   node dist/bench/reliability/soak.js [--minutes 10] [--fraction 0.5] [--sample-s 10]
 *   node dist/bench/reliability/soak.js --minutes 60            (the hour)
 *
 * Steps: start ntsd (one NTP thread, metrics on, loopback), measure its closed-loop NTS maximum with the
 * project's load generator (bench/load, used as a library), then offer `fraction` of that rate for the
 * duration while sampling the daemon's RSS (/proc/PID/status VmRSS) and scraping /metrics. Reports the rate,
 * loss, the verified sample, RSS over time and its least-squares slope in MB per hour (after the first
 * tenth of the run, V8's warm-up). Defects (exit 1): any invalid reply in the verified sample, no verified
 * reply at all, any thread restart (ntsd_worker_restarts_total), a daemon that exits, RSS above --max-rss-mb.
 * Bounded by the duration and by a request count of 1.2 × rate × duration.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runLoad } from '../load/run.js';
import { DEFAULT_LOAD_OPTIONS, type LoadOptions, type LoadReport } from '../load/protocol.js';
import { DefectLog, delay, freeTcpPort, freeUdpPort, grouped, isMain, numberOption, runMain } from './common.js';
import { batteryConfigToml, hostPortField, makeBatteryPki, spawnNtsd } from './ntsd-process.js';

/** Options of one soak. */
export interface SoakOptions {
  /** Length of the loaded phase, seconds. */
  readonly durationS: number;
  /** Share of the measured maximum to offer. */
  readonly fraction: number;
  /** Length of the closed-loop run that measures the maximum, seconds. */
  readonly maxProbeS: number;
  /** RSS and metrics sampling interval, seconds. */
  readonly sampleEveryS: number;
  /** Peak RSS above this is a defect (a defect bound; the target in docs/performance.md is < 120 MB). */
  readonly maxRssMb: number;
  /** Fully verify one reply in this many (bench/load --verify-every). */
  readonly verifyEvery: number;
  /** NTP threads of the daemon. */
  readonly threads: number;
  readonly progress?: (line: string) => void;
}

/** Defaults (the CLI starts from these). */
export const DEFAULT_SOAK_OPTIONS: SoakOptions = {
  durationS: 600,
  fraction: 0.5,
  maxProbeS: 5,
  sampleEveryS: 10,
  maxRssMb: 200,
  verifyEvery: 16,
  threads: 1,
};

/** One RSS sample. */
export interface RssSample {
  /** Seconds since the loaded phase began. */
  readonly atS: number;
  readonly rssMb: number;
}

/** What a soak saw. */
export interface SoakReport {
  readonly durationS: number;
  /** Closed-loop NTS maximum measured first, replies/s. */
  readonly maxRatePerS: number;
  readonly offeredRatePerS: number;
  readonly achievedRatePerS: number;
  readonly sent: number;
  readonly received: number;
  readonly lossPercent: number;
  /** Replies fully verified (Unique Identifier, origin, Authenticator with S2C, a cookie). */
  readonly verified: number;
  readonly invalid: number;
  readonly invalidByReason: Readonly<Record<string, number>>;
  /** ntsd_worker_restarts_total at the end minus at the start. */
  readonly workerRestarts: number;
  readonly rss: readonly RssSample[];
  readonly rssFirstMb: number;
  readonly rssLastMb: number;
  readonly rssMinMb: number;
  readonly rssMaxMb: number;
  /** Least-squares slope of RSS after the first tenth of the run, MB per hour. */
  readonly rssSlopeMbPerH: number;
  readonly defectCount: number;
  readonly defects: readonly string[];
}

function rssMbOf(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]);
    return Number.isFinite(kb) ? kb / 1024 : undefined;
  } catch {
    return undefined;
  }
}

function fetchText(host: string, port: number, path: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host, port, path, method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${path} answered ${String(res.statusCode)}`))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** Sum of every series of `name` in a Prometheus text page. */
export function metricSum(page: string, name: string): number {
  let total = 0;
  for (const line of page.split('\n')) {
    if (!(line.startsWith(`${name} `) || line.startsWith(`${name}{`))) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) total += value;
  }
  return total;
}

/** Least-squares slope of y over x (units of y per unit of x); 0 with fewer than two points. */
export function slope(points: readonly { readonly x: number; readonly y: number }[]): number {
  const n = points.length;
  if (n < 2) return 0;
  let sx = 0;
  let sy = 0;
  for (const p of points) {
    sx += p.x;
    sy += p.y;
  }
  const mx = sx / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return den > 0 ? num / den : 0;
}

/** Runs one soak. Throws only on setup failures (the daemon does not start, NTS-KE fails). */
export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const defects = new DefectLog();
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-soak-'));
  const pki = makeBatteryPki(dir);
  const ntpPort = await freeUdpPort();
  const kePort = await freeTcpPort();
  const configPath = join(dir, 'ntsd.toml');
  writeFileSync(
    configPath,
    batteryConfigToml({ ntpPort, kePort, certPath: pki.certPath, keyPath: pki.keyPath, keyStoragePath: 'keyset/ntsd.keys', threads: options.threads, metrics: true }),
  );
  const proc = spawnNtsd(configPath, dir);
  try {
    const started = await proc.waitForLine((l) => l['msg'] === 'ntsd started', 30_000);
    if (started === undefined) throw new Error(`ntsd did not start: ${proc.stderr().slice(-2000)}`);
    const metrics = hostPortField(started['metrics']);
    if (metrics === undefined) throw new Error('ntsd started without a metrics endpoint');
    const restarts = async (): Promise<number | undefined> => {
      try {
        return metricSum(await fetchText(metrics.host, metrics.port, '/metrics'), 'ntsd_worker_restarts_total');
      } catch {
        return undefined;
      }
    };
    const restartsAtStart = (await restarts()) ?? 0;
    const base: LoadOptions = {
      ...DEFAULT_LOAD_OPTIONS,
      mode: 'nts',
      ke: { host: '127.0.0.1', port: kePort },
      caPem: pki.caPem,
      servername: 'localhost',
      verifyEvery: options.verifyEvery,
    };

    // 1. The daemon's own maximum: closed loop, short.
    const max = await runLoad({ ...base, ratePerS: undefined, durationS: options.maxProbeS, warmupS: Math.min(1, options.maxProbeS / 4), maxRequests: 50_000_000 });
    if (max.invalid > 0) defects.add(`max probe: ${max.invalid} invalid replies ${JSON.stringify(max.invalidByReason)}`);
    const offered = Math.max(100, Math.round(max.ratePerS * options.fraction));
    options.progress?.(`soak: maximum ${grouped(max.ratePerS)} NTS replies/s; offering ${grouped(offered)}/s for ${options.durationS} s`);

    // 2. The loaded phase, with RSS and restart sampling beside it.
    const rss: RssSample[] = [];
    const loadStart = performance.now();
    let sampling = true;
    const sampler = (async () => {
      let nextLog = 60;
      while (sampling) {
        const atS = (performance.now() - loadStart) / 1000;
        const mb = rssMbOf(proc.pid);
        if (mb !== undefined) rss.push({ atS, rssMb: mb });
        if (proc.exit() !== undefined) return;
        if (atS >= nextLog) {
          nextLog += 60;
          options.progress?.(`soak: ${atS.toFixed(0)} s, RSS ${mb?.toFixed(1) ?? '?'} MB, restarts ${String(((await restarts()) ?? restartsAtStart) - restartsAtStart)}`);
        }
        await delay(options.sampleEveryS * 1000);
      }
    })();
    let report: LoadReport;
    try {
      report = await runLoad({
        ...base,
        ratePerS: offered,
        durationS: options.durationS,
        maxRequests: Math.ceil(offered * options.durationS * 1.2),
      });
    } finally {
      sampling = false;
    }
    await sampler;
    const endMb = rssMbOf(proc.pid);
    if (endMb !== undefined) rss.push({ atS: (performance.now() - loadStart) / 1000, rssMb: endMb });

    // 3. Verdicts.
    const exit = proc.exit();
    if (exit !== undefined) defects.add(`the daemon exited during the soak: ${JSON.stringify(exit)}; stderr: ${proc.stderr().slice(-2000)}`);
    const restartsAtEnd = await restarts();
    if (restartsAtEnd === undefined && exit === undefined) defects.add('the metrics endpoint did not answer at the end');
    const workerRestarts = (restartsAtEnd ?? restartsAtStart) - restartsAtStart;
    if (workerRestarts > 0) defects.add(`${workerRestarts} thread restarts (ntsd_worker_restarts_total)`);
    if (report.invalid > 0) defects.add(`${report.invalid} invalid replies: ${JSON.stringify(report.invalidByReason)}`);
    if (report.verified === 0) defects.add('no reply was verified');
    const mbs = rss.map((s) => s.rssMb);
    const rssMaxMb = mbs.length > 0 ? Math.max(...mbs) : 0;
    if (rssMaxMb > options.maxRssMb) defects.add(`RSS peaked at ${rssMaxMb.toFixed(1)} MB (limit ${options.maxRssMb} MB)`);
    const warm = rss.filter((s) => s.atS >= options.durationS / 10);
    const slopeMbPerS = slope((warm.length >= 2 ? warm : rss).map((s) => ({ x: s.atS, y: s.rssMb })));
    return {
      durationS: (performance.now() - loadStart) / 1000,
      maxRatePerS: max.ratePerS,
      offeredRatePerS: offered,
      achievedRatePerS: report.ratePerS,
      sent: report.sent,
      received: report.received,
      lossPercent: report.lossPercent,
      verified: report.verified,
      invalid: report.invalid,
      invalidByReason: report.invalidByReason,
      workerRestarts,
      rss,
      rssFirstMb: mbs[0] ?? 0,
      rssLastMb: mbs[mbs.length - 1] ?? 0,
      rssMinMb: mbs.length > 0 ? Math.min(...mbs) : 0,
      rssMaxMb,
      rssSlopeMbPerH: slopeMbPerS * 3600,
      defectCount: defects.count,
      defects: defects.messages,
    };
  } finally {
    await proc.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The figures as printed lines. */
export function formatSoakReport(r: SoakReport): string {
  const series = r.rss.length <= 13 ? r.rss : r.rss.filter((_, i) => i % Math.ceil(r.rss.length / 12) === 0 || i === r.rss.length - 1);
  return [
    `soak: ${(r.durationS / 60).toFixed(1)} min at ${grouped(r.offeredRatePerS)} NTS req/s offered (${((100 * r.offeredRatePerS) / Math.max(1, r.maxRatePerS)).toFixed(0)} % of the measured maximum ${grouped(r.maxRatePerS)}/s)`,
    `  achieved ${grouped(r.achievedRatePerS)} replies/s; sent ${grouped(r.sent)}, received ${grouped(r.received)}, loss ${r.lossPercent.toFixed(3)} %`,
    `  verified sample: ${grouped(r.verified)} replies, invalid ${r.invalid}${r.invalid > 0 ? ` ${JSON.stringify(r.invalidByReason)}` : ''}; thread restarts ${r.workerRestarts}`,
    `  RSS: first ${r.rssFirstMb.toFixed(1)} MB, last ${r.rssLastMb.toFixed(1)} MB, min ${r.rssMinMb.toFixed(1)}, max ${r.rssMaxMb.toFixed(1)}; slope ${r.rssSlopeMbPerH >= 0 ? '+' : ''}${r.rssSlopeMbPerH.toFixed(1)} MB/h (least squares after the first tenth)`,
    `  RSS over time (s: MB): ${series.map((s) => `${s.atS.toFixed(0)}: ${s.rssMb.toFixed(1)}`).join(', ')}`,
    `  defects: ${r.defectCount}`,
    ...r.defects.map((d) => `    - ${d}`),
  ].join('\n');
}

const USAGE = `usage: node dist/bench/reliability/soak.js [--minutes M] [--fraction F] [--sample-s S] [--json]

  --minutes M       length of the loaded phase (default ${DEFAULT_SOAK_OPTIONS.durationS / 60}; 60 for the hour)
  --fraction F      share of the measured closed-loop maximum to offer (default ${DEFAULT_SOAK_OPTIONS.fraction})
  --max-probe-s S   closed-loop run that measures the maximum (default ${DEFAULT_SOAK_OPTIONS.maxProbeS})
  --sample-s S      RSS sampling interval (default ${DEFAULT_SOAK_OPTIONS.sampleEveryS})
  --max-rss-mb MB   peak RSS above this is a defect (default ${DEFAULT_SOAK_OPTIONS.maxRssMb})
  --threads T       NTP threads of the daemon (default ${DEFAULT_SOAK_OPTIONS.threads})
  --json            print the report as one JSON object
`;

async function main(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      minutes: { type: 'string' },
      fraction: { type: 'string' },
      'max-probe-s': { type: 'string' },
      'sample-s': { type: 'string' },
      'max-rss-mb': { type: 'string' },
      threads: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  const report = await runSoak({
    durationS: numberOption(values.minutes, 'minutes', DEFAULT_SOAK_OPTIONS.durationS / 60, 0.1, 24 * 60, false) * 60,
    fraction: numberOption(values.fraction, 'fraction', DEFAULT_SOAK_OPTIONS.fraction, 0.01, 1, false),
    maxProbeS: numberOption(values['max-probe-s'], 'max-probe-s', DEFAULT_SOAK_OPTIONS.maxProbeS, 1, 120, false),
    sampleEveryS: numberOption(values['sample-s'], 'sample-s', DEFAULT_SOAK_OPTIONS.sampleEveryS, 0.1, 600, false),
    maxRssMb: numberOption(values['max-rss-mb'], 'max-rss-mb', DEFAULT_SOAK_OPTIONS.maxRssMb, 1, 100_000, false),
    verifyEvery: DEFAULT_SOAK_OPTIONS.verifyEvery,
    threads: numberOption(values.threads, 'threads', DEFAULT_SOAK_OPTIONS.threads, 1, 64),
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(values.json === true ? `${JSON.stringify(report)}\n` : `${formatSoakReport(report)}\n`);
  return report.defectCount === 0 ? 0 : 1;
}

if (isMain(import.meta.url)) runMain(USAGE, main);
