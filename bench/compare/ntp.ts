/**
 * The NTP part of bench/compare: ntsd (native datapath), ntsd (dgram datapath) and chrony, plus native
 * variants (2 NTP threads, send-mode "batch"), from one interleaved run on the same machine.
 *
 * Every pair runs, for each kind of measurement, the same generator against every server in turn:
 *   max     NTS closed loop (`--sockets` × `--window` outstanding): the server's maximum rate, and its
 *           CPU per request from /proc over the same run;
 *   idle    a fixed low rate (`--idle-rate`, default 1,000 req/s);
 *   half    50 % of that server's own maximum from the same pair;
 *   ninety  90 % of it.
 * The generator stamps with the kernel (bench/load's native sender: t1 = the TX stamp of the request
 * datagram, t4 = the RX stamp of its reply), so |offset| on loopback is the server's error alone, and
 * T3 − T2 is the server's residence time. A result without kernel stamps is flagged in the table.
 * The variants run only `max` and `half` (their question is throughput and error at load).
 */
import type { ClientModeValue, LoadReport } from '../load/protocol.js';
import { residentBytes } from './procfs.js';
import { startChrony, startNtsd, type ServerTls, type ServerUnderTest } from './servers.js';

/** Server variants this comparison knows. */
export const NTP_VARIANTS = ['native', 'dgram', 'chrony', 'native-2t', 'native-batch', 'native-noxleave', 'native-noclientlog'] as const;
/** One of NTP_VARIANTS. */
export type NtpVariant = (typeof NTP_VARIANTS)[number];
/**
 * The variants run when `--servers` is not given. On request only: native-noxleave (`interleaved = false`) and
 * native-noclientlog (`client-log-size = 0`), each to price one feature of the hot path.
 */
export const DEFAULT_NTP_VARIANTS: readonly NtpVariant[] = ['native', 'dgram', 'chrony', 'native-2t', 'native-batch'];
/** Servers of the interleaved section (plain NTP, client exchanges), in this order when present. */
const EXCHANGE_VARIANTS: readonly NtpVariant[] = ['native', 'chrony'];
/** Request forms of the interleaved section, per server. */
const EXCHANGE_CLIENTS: readonly ClientModeValue[] = ['basic', 'interleaved'];
/** The three servers of the main table. */
const MAIN_VARIANTS: readonly NtpVariant[] = ['native', 'dgram', 'chrony'];

/** Kinds of run ('plainMax': plain NTP closed loop with basic client exchanges, the interleaved section's maximum). */
type RunKind = 'max' | 'idle' | 'half' | 'ninety' | 'plainMax';

/** Options of the NTP comparison. */
export interface NtpCompareOptions {
  readonly pairs: number;
  readonly durationS: number;
  readonly warmupS: number;
  /** Generator threads of the fixed-rate runs. */
  readonly threads: number;
  /**
   * Generator threads of the max runs: one thread's closed loop waits on its own wake-ups, so a fast
   * server (chrony) needs two to be saturated. The sockets are split over them (same total in flight).
   */
  readonly maxThreads: number;
  /** Generator sockets per thread (distinct source ports, so SO_REUSEPORT spreads them over ntsd's threads). */
  readonly sockets: number;
  /** Closed loop: outstanding requests per socket. */
  readonly window: number;
  /** Rate of the idle runs, req/s. */
  readonly idleRatePerS: number;
  /** Servers to run, in interleaving order. */
  readonly variants: readonly NtpVariant[];
  /** NTP threads of the native variants other than native-2t; undefined = ntsd's default (CPUs − 1, min 1). */
  readonly ntsdThreads: number | undefined;
  /** After the pairs, ntsd native at 50 % of its maximum for this long, VmRSS every second (0 = none). */
  readonly soakS: number;
  readonly ntsdMain: string;
  /** Usable CPUs (labels the default thread count). */
  readonly cpus: number;
  /**
   * Add the interleaved section to every pair: ntsd native and chrony with plain-NTP client exchanges
   * (bench/load --client), basic and interleaved, at idle and 50 % / 90 % of each server's plain maximum.
   */
  readonly interleaved: boolean;
  /** Interleaved section: sockets (source addresses, 4 clients each) per generator thread in the fixed-rate runs. */
  readonly interleavedSockets: number;
}

/** Runs one bench/load process with --json; the server's CPU seconds and VmRSS samples over the run. */
export type NtpGeneratorRunner = (
  args: readonly string[],
  server: ServerUnderTest | undefined,
  timeoutS: number,
) => Promise<{ readonly report: LoadReport; readonly serverCpuS: number; readonly rssMaxBytes: number; readonly samples: readonly number[] }>;

/** What the comparison needs from its caller. */
export interface NtpCompareDeps {
  readonly runGenerator: NtpGeneratorRunner;
  readonly tls: ServerTls;
  readonly caPath: string;
  readonly freePort: () => Promise<number>;
  /** Registers a started server so the caller stops it on exit or a signal. */
  readonly started: (server: ServerUnderTest) => void;
  readonly log: (line: string) => void;
}

/** The measurements of one generator run against one server. */
export interface NtpRunRecord {
  readonly pair: number;
  readonly variant: NtpVariant;
  readonly kind: RunKind;
  /** Interleaved section: the generator's request form; undefined = the NTS runs of the main tables. */
  readonly client?: ClientModeValue;
  readonly offeredRatePerS: number | null;
  readonly report: LoadReport;
  readonly serverCpuS: number;
  readonly rssMaxBytes: number;
  readonly rssSamplesBytes: readonly number[];
}

/** The RSS soak of ntsd native at 50 % of its maximum. */
export interface NtpSoak {
  readonly durationS: number;
  readonly offeredRatePerS: number;
  readonly ratePerS: number;
  readonly samplesMb: readonly number[];
  readonly minMb: number;
  readonly maxMb: number;
  /** Median of the last 10 samples minus the median of samples 5..14, MB. */
  readonly driftMb: number;
  readonly offsetP99Us: number;
}

/** Everything the comparison measured. */
export interface NtpCompareResult {
  readonly records: readonly NtpRunRecord[];
  readonly soak: NtpSoak | null;
  /** VmRSS and VmHWM of each server at the end, MB. */
  readonly endRss: Readonly<Record<string, { rssMb: number; peakMb: number }>>;
  readonly labels: Readonly<Record<string, string>>;
}

function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? (v[mid] ?? Number.NaN) : ((v[mid - 1] ?? 0) + (v[mid] ?? 0)) / 2;
}

/** Human label of a variant. */
export function variantLabel(variant: NtpVariant, o: Pick<NtpCompareOptions, 'ntsdThreads' | 'cpus'>): string {
  const threads = o.ntsdThreads ?? Math.max(1, o.cpus - 1);
  const t = (n: number): string => `${n} thread${n === 1 ? '' : 's'}`;
  switch (variant) {
    case 'native':
      return `ntsd native (${t(threads)})`;
    case 'dgram':
      return 'ntsd dgram';
    case 'chrony':
      return 'chrony';
    case 'native-2t':
      return `ntsd native (${t(2)})`;
    case 'native-batch':
      return `ntsd native, send-mode batch (${t(threads)})`;
    case 'native-noxleave':
      return `ntsd native, interleaved = false (${t(threads)})`;
    case 'native-noclientlog':
      return `ntsd native, client-log-size = 0 (${t(threads)})`;
  }
}

async function startVariant(variant: NtpVariant, o: NtpCompareOptions, deps: NtpCompareDeps): Promise<ServerUnderTest> {
  const ntpPort = await deps.freePort();
  const kePort = await deps.freePort();
  if (variant === 'chrony') return startChrony({ ntpPort, kePort, tls: deps.tls });
  const common = { mainJs: o.ntsdMain, ntpPort, kePort, tls: deps.tls, label: variant };
  switch (variant) {
    case 'dgram':
      return startNtsd({ ...common, datapath: 'dgram' });
    case 'native-2t':
      return startNtsd({ ...common, datapath: 'native', threads: 2, sendMode: 'each' });
    case 'native-batch':
      return startNtsd({ ...common, datapath: 'native', threads: o.ntsdThreads, sendMode: 'batch' });
    case 'native-noxleave':
      return startNtsd({ ...common, datapath: 'native', threads: o.ntsdThreads, sendMode: 'each', interleaved: false });
    case 'native-noclientlog':
      return startNtsd({ ...common, datapath: 'native', threads: o.ntsdThreads, sendMode: 'each', clientLogSize: 0 });
    default:
      return startNtsd({ ...common, datapath: 'native', threads: o.ntsdThreads, sendMode: 'each' });
  }
}

function fmt(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '–';
}

function fmtInt(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–';
}

/** Runs the pairs (and the soak) and returns every record. Servers are started here and registered with `deps.started`. */
export async function runNtpCompare(o: NtpCompareOptions, deps: NtpCompareDeps): Promise<NtpCompareResult> {
  const servers = new Map<NtpVariant, ServerUnderTest>();
  const labels: Record<string, string> = {};
  for (const v of o.variants) {
    const s = await startVariant(v, o, deps);
    deps.started(s);
    servers.set(v, s);
    labels[v] = variantLabel(v, o);
    deps.log(`${labels[v]} started: pid ${s.pid}, NTP 127.0.0.1:${s.ntpPort}, NTS-KE 127.0.0.1:${s.kePort}`);
  }
  const records: NtpRunRecord[] = [];
  const timeoutS = o.durationS + 90;
  const maxSockets = Math.max(1, Math.round((o.sockets * o.threads) / o.maxThreads));
  const args = (s: ServerUnderTest, durationS: number, rate: number | undefined): string[] => [
    '--mode',
    'nts',
    '--ke',
    `127.0.0.1:${s.kePort}`,
    '--ca',
    deps.caPath,
    '--duration-s',
    String(durationS),
    '--warmup-s',
    String(o.warmupS),
    '--threads',
    String(rate === undefined ? o.maxThreads : o.threads),
    '--sockets',
    String(rate === undefined ? maxSockets : o.sockets),
    '--max-requests',
    '2000000000',
    ...(rate === undefined ? ['--window', String(o.window)] : ['--rate', String(Math.round(rate))]),
  ];
  const run = async (pair: number, variant: NtpVariant, kind: RunKind, rate: number | undefined): Promise<NtpRunRecord> => {
    const s = servers.get(variant);
    if (s === undefined) throw new Error(`no server for ${variant}`);
    const { report, serverCpuS, rssMaxBytes, samples } = await deps.runGenerator(args(s, o.durationS, rate), s, timeoutS);
    const rec: NtpRunRecord = { pair, variant, kind, offeredRatePerS: rate ?? null, report, serverCpuS, rssMaxBytes, rssSamplesBytes: samples };
    records.push(rec);
    const off = report.offsetAbsUs;
    const res = report.residenceUs;
    deps.log(
      `pair ${pair} ${kind.padEnd(6)} ${variant.padEnd(12)} ${fmtInt(report.ratePerS)}/s${rate === undefined ? '' : ` (offered ${fmtInt(rate)})`}, ` +
        `|offset| p50/p99/p99.9 ${fmt(off?.p50 ?? Number.NaN, 1)}/${fmt(off?.p99 ?? Number.NaN, 1)}/${fmt(off?.p999 ?? Number.NaN, 1)} µs, residence p99 ${fmt(res?.p99 ?? Number.NaN, 1)} µs, ` +
        `loss ${fmt(report.lossPercent, 3)} %, invalid ${report.invalid}, ${report.timestamps ?? '?'} stamps, server CPU ${fmt(serverCpuS, 2)} s`,
    );
    return rec;
  };

  // The interleaved section: plain NTP from client exchanges on their own source addresses (bench/load --client).
  const exchangeVariants = EXCHANGE_VARIANTS.filter((v) => o.variants.includes(v));
  const exchangeArgs = (s: ServerUnderTest, client: ClientModeValue, rate: number | undefined): string[] => [
    '--mode',
    'plain',
    '--target',
    `127.0.0.1:${s.ntpPort}`,
    '--client',
    client,
    '--window',
    '4',
    '--duration-s',
    String(o.durationS),
    '--warmup-s',
    String(o.warmupS),
    '--threads',
    String(rate === undefined ? o.maxThreads : o.threads),
    '--sockets',
    String(rate === undefined ? Math.max(1, Math.round((o.interleavedSockets * o.threads) / o.maxThreads)) : o.interleavedSockets),
    '--max-requests',
    '2000000000',
    ...(rate === undefined ? [] : ['--rate', String(Math.round(rate))]),
  ];
  const runExchange = async (pair: number, variant: NtpVariant, kind: RunKind, client: ClientModeValue, rate: number | undefined): Promise<NtpRunRecord> => {
    const s = servers.get(variant);
    if (s === undefined) throw new Error(`no server for ${variant}`);
    const { report, serverCpuS, rssMaxBytes, samples } = await deps.runGenerator(exchangeArgs(s, client, rate), s, timeoutS);
    const rec: NtpRunRecord = { pair, variant, kind, client, offeredRatePerS: rate ?? null, report, serverCpuS, rssMaxBytes, rssSamplesBytes: samples };
    records.push(rec);
    const off = report.offsetAbsUs;
    deps.log(
      `pair ${pair} ${kind.padEnd(8)} ${variant.padEnd(12)} plain ${client.padEnd(11)} ${fmtInt(report.ratePerS)}/s${rate === undefined ? '' : ` (offered ${fmtInt(rate)})`}, ` +
        `|offset| p50/p99/p99.9 ${fmt(off?.p50 ?? Number.NaN, 1)}/${fmt(off?.p99 ?? Number.NaN, 1)}/${fmt(off?.p999 ?? Number.NaN, 1)} µs, ` +
        `interleaved ${fmt((report.exchanges?.interleavedFraction ?? Number.NaN) * 100, 1)} %, loss ${fmt(report.lossPercent, 3)} %, invalid ${report.invalid}`,
    );
    return rec;
  };
  const exchangeRuns = async (pair: number): Promise<void> => {
    const plainMax = new Map<NtpVariant, number>();
    for (const v of exchangeVariants) plainMax.set(v, (await runExchange(pair, v, 'plainMax', 'basic', undefined)).report.ratePerS);
    const rates: readonly [RunKind, (v: NtpVariant) => number][] = [
      ['idle', () => o.idleRatePerS],
      ['half', (v) => Math.max(100, (plainMax.get(v) ?? 0) * 0.5)],
      ['ninety', (v) => Math.max(100, (plainMax.get(v) ?? 0) * 0.9)],
    ];
    for (const [kind, rate] of rates) for (const v of exchangeVariants) for (const client of EXCHANGE_CLIENTS) await runExchange(pair, v, kind, client, rate(v));
  };

  const mains = o.variants.filter((v) => MAIN_VARIANTS.includes(v));
  for (let pair = 1; pair <= o.pairs; pair++) {
    const max = new Map<NtpVariant, number>();
    for (const v of o.variants) max.set(v, (await run(pair, v, 'max', undefined)).report.ratePerS);
    for (const v of mains) await run(pair, v, 'idle', o.idleRatePerS);
    for (const v of o.variants) await run(pair, v, 'half', Math.max(100, (max.get(v) ?? 0) * 0.5));
    for (const v of mains) await run(pair, v, 'ninety', Math.max(100, (max.get(v) ?? 0) * 0.9));
    if (o.interleaved) await exchangeRuns(pair);
  }

  let soak: NtpSoak | null = null;
  const native = servers.get('native');
  if (o.soakS > 0 && native !== undefined) {
    const maxRate = median(records.filter((r) => r.variant === 'native' && r.kind === 'max').map((r) => r.report.ratePerS));
    const rate = Number.isFinite(maxRate) ? maxRate * 0.5 : 10_000;
    deps.log(`soak: ntsd native at ${fmtInt(rate)} req/s (50 % of its maximum) for ${o.soakS} s, VmRSS every second`);
    const { report, samples } = await deps.runGenerator(args(native, o.soakS, rate), native, o.soakS + 90);
    const mb = samples.map((b) => b / 2 ** 20);
    soak = {
      durationS: report.measuredS,
      offeredRatePerS: rate,
      ratePerS: report.ratePerS,
      samplesMb: mb.map((v) => Math.round(v * 10) / 10),
      minMb: Math.min(...mb),
      maxMb: Math.max(...mb),
      driftMb: median(mb.slice(-10)) - median(mb.slice(5, 15)),
      offsetP99Us: report.offsetAbsUs?.p99 ?? Number.NaN,
    };
  }
  const endRss: Record<string, { rssMb: number; peakMb: number }> = {};
  for (const [v, s] of servers) {
    const m = residentBytes(s.pid);
    endRss[v] = { rssMb: m.rssBytes / 2 ** 20, peakMb: m.peakBytes / 2 ** 20 };
  }
  return { records, soak, endRss, labels };
}

/** One row: a value per variant, shown with `format`; `ratio` adds native/chrony. */
interface Row {
  readonly metric: string;
  readonly values: (variant: NtpVariant) => number[];
  readonly format: (values: number[]) => string;
  /** Index into values used for the native/chrony ratio; undefined = no ratio. */
  readonly ratioOf?: number;
  /** Target for ntsd native and whether its value meets it. */
  readonly target?: string;
  readonly met?: (native: number[]) => boolean;
}

/** Summary figures per variant, medians over pairs (what the table shows and the JSON keeps). */
export function summarise(result: NtpCompareResult): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  const pick = (v: NtpVariant, kind: RunKind, f: (r: NtpRunRecord) => number): number =>
    median(result.records.filter((r) => r.variant === v && r.kind === kind && r.client === undefined).map(f));
  for (const v of NTP_VARIANTS) {
    if (!result.records.some((r) => r.variant === v)) continue;
    const s: Record<string, number> = {
      maxRatePerS: pick(v, 'max', (r) => r.report.ratePerS),
      perCpuSecond: pick(v, 'max', (r) => (r.serverCpuS > 0 ? r.report.repliesTotal / r.serverCpuS : Number.NaN)),
      maxLossPercent: pick(v, 'max', (r) => r.report.lossPercent),
      generatorCpuUsPerReply: pick(v, 'max', (r) => r.report.generatorCpuUsPerReply),
      generatorCpuPerServerCpu: pick(v, 'max', (r) => (r.serverCpuS > 0 ? r.report.generatorCpuS / r.serverCpuS : Number.NaN)),
    };
    for (const kind of ['max', 'idle', 'half', 'ninety'] as const) {
      s[`${kind}AchievedPerS`] = pick(v, kind, (r) => r.report.ratePerS);
      s[`${kind}OffsetP50Us`] = pick(v, kind, (r) => r.report.offsetAbsUs?.p50 ?? Number.NaN);
      s[`${kind}OffsetP99Us`] = pick(v, kind, (r) => r.report.offsetAbsUs?.p99 ?? Number.NaN);
      s[`${kind}OffsetP999Us`] = pick(v, kind, (r) => r.report.offsetAbsUs?.p999 ?? Number.NaN);
      s[`${kind}OffsetMeanUs`] = pick(v, kind, (r) => r.report.offsetMeanUs ?? Number.NaN);
      s[`${kind}ResidenceP50Us`] = pick(v, kind, (r) => r.report.residenceUs?.p50 ?? Number.NaN);
      s[`${kind}ResidenceP99Us`] = pick(v, kind, (r) => r.report.residenceUs?.p99 ?? Number.NaN);
    }
    const mine = result.records.filter((r) => r.variant === v);
    const rss = mine.flatMap((r) => r.rssSamplesBytes).filter((b) => b > 0);
    s['rssMinMb'] = rss.length > 0 ? Math.min(...rss) / 2 ** 20 : Number.NaN;
    s['rssMaxMb'] = rss.length > 0 ? Math.max(...rss) / 2 ** 20 : Number.NaN;
    s['rssEndMb'] = result.endRss[v]?.rssMb ?? Number.NaN;
    s['rssPeakMb'] = result.endRss[v]?.peakMb ?? Number.NaN;
    s['invalid'] = mine.reduce((a, r) => a + r.report.invalid, 0);
    s['stale'] = mine.reduce((a, r) => a + (r.report.stamps?.stale ?? 0) + (r.report.stamps?.late ?? 0), 0);
    s['unstamped'] = mine.reduce((a, r) => a + (r.report.stamps === null ? 0 : r.report.stamps.noRxStamp + r.report.stamps.noTxStamp), 0);
    s['samples'] = mine.reduce((a, r) => a + (r.report.stamps?.samples ?? 0), 0);
    s['userStampRuns'] = mine.filter((r) => r.report.timestamps !== 'kernel').length;
    out[v] = s;
  }
  return out;
}

/** Renders the main table (native, dgram, chrony) and the variants table as markdown. */
export function renderNtpTables(result: NtpCompareResult, o: NtpCompareOptions): string {
  const sum = summarise(result);
  const get = (v: NtpVariant, key: string): number => sum[v]?.[key] ?? Number.NaN;
  const us = (n: number): string => fmt(n, n >= 100 ? 0 : 1);
  const triple = (ns: number[]): string => ns.map(us).join(' / ');
  const quantRow = (kind: RunKind, name: string, target?: string, met?: (n: number[]) => boolean): Row => ({
    metric: `\\|offset\\| p50 / p99 / p99.9 at ${name} (µs)`,
    values: (v) => [get(v, `${kind}OffsetP50Us`), get(v, `${kind}OffsetP99Us`), get(v, `${kind}OffsetP999Us`)],
    format: triple,
    ratioOf: 1,
    ...(target === undefined ? {} : { target }),
    ...(met === undefined ? {} : { met }),
  });
  const one = (metric: string, key: string, format: (n: number) => string, extra: Partial<Row> = {}): Row => ({
    metric,
    values: (v) => [get(v, key)],
    format: (ns) => format(ns[0] ?? Number.NaN),
    ...extra,
  });
  const rows: Row[] = [
    one(`NTS req/s, closed loop (${o.maxThreads} generator threads × ${Math.max(1, Math.round((o.sockets * o.threads) / o.maxThreads))} sockets × ${o.window})`, 'maxRatePerS', fmtInt, { ratioOf: 0, target: '≥ 0.40× chrony', met: ([n]) => (n ?? 0) / get('chrony', 'maxRatePerS') >= 0.4 }),
    one('NTS req per server CPU-second', 'perCpuSecond', fmtInt, { ratioOf: 0, target: '≥ 80,000', met: ([n]) => (n ?? 0) >= 80_000 }),
    {
      metric: 'server CPU during the max run (cores ≈ req/s ÷ req per CPU-second)',
      values: (v) => [get(v, 'maxRatePerS') / get(v, 'perCpuSecond')],
      format: (ns) => fmt(ns[0] ?? Number.NaN, 2),
    },
    one(`NTS req/s achieved at idle / 50 % / 90 % of own max`, 'idleAchievedPerS', fmtInt, {
      values: (v) => [get(v, 'idleAchievedPerS'), get(v, 'halfAchievedPerS'), get(v, 'ninetyAchievedPerS')],
      format: (ns) => ns.map(fmtInt).join(' / '),
    }),
    quantRow('idle', `idle (${fmtInt(o.idleRatePerS)}/s)`, 'p99 ≤ 20 µs', (n) => (n[1] ?? Infinity) <= 20),
    quantRow('half', '50 % of own max', 'p99 ≤ 10 µs', (n) => (n[1] ?? Infinity) <= 10),
    quantRow('ninety', '90 % of own max'),
    {
      metric: 'residence T3 − T2 p99 at idle / 50 % / 90 % (µs)',
      values: (v) => [get(v, 'idleResidenceP99Us'), get(v, 'halfResidenceP99Us'), get(v, 'ninetyResidenceP99Us')],
      format: triple,
      ratioOf: 1,
      target: '≤ 1,000 µs at 50 %',
      met: (n) => (n[1] ?? Infinity) <= 1000,
    },
    {
      metric: 'RSS sampled over all runs, min – max (MB)',
      values: (v) => [get(v, 'rssMinMb'), get(v, 'rssMaxMb')],
      format: (ns) => `${fmt(ns[0] ?? Number.NaN, 1)} – ${fmt(ns[1] ?? Number.NaN, 1)}`,
      target: '< 120 MB',
      met: (n) => (n[1] ?? Infinity) < 120,
    },
    one('RSS peak (VmHWM, MB)', 'rssPeakMb', (n) => fmt(n, 1)),
    one('NTS loss at saturation (%)', 'maxLossPercent', (n) => fmt(n, 3)),
    {
      metric: 'invalid replies / stale or late matches rejected (all runs)',
      values: (v) => [get(v, 'invalid'), get(v, 'stale')],
      format: (ns) => ns.map(fmtInt).join(' / '),
      target: '0 invalid',
      met: (n) => n[0] === 0,
    },
  ];
  const mains = MAIN_VARIANTS.filter((v) => sum[v] !== undefined);
  const hasRatio = mains.includes('native') && mains.includes('chrony');
  const header = `| metric | ${mains.map((v) => result.labels[v] ?? v).join(' | ')} |${hasRatio ? ' native / chrony |' : ''} target (ntsd native) |`;
  const lines = [header, `|---|${mains.map(() => '---:|').join('')}${hasRatio ? '---:|' : ''}---|`];
  for (const r of rows) {
    const cells = mains.map((v) => r.format(r.values(v)));
    let ratio = '';
    if (hasRatio) {
      const i = r.ratioOf;
      const a = i === undefined ? Number.NaN : (r.values('native')[i] ?? Number.NaN);
      const b = i === undefined ? Number.NaN : (r.values('chrony')[i] ?? Number.NaN);
      ratio = ` ${Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : ''} |`;
    }
    const native = mains.includes('native') ? r.values('native') : [];
    const mark = r.met === undefined || native.length === 0 || native.some((n) => !Number.isFinite(n)) ? '' : r.met(native) ? ' ✓' : ' ✗';
    lines.push(`| ${r.metric} | ${cells.join(' | ')} |${ratio} ${r.target ?? ''}${mark} |`);
  }
  const variants = (['native', 'native-2t', 'native-batch', 'native-noxleave', 'native-noclientlog'] as const).filter((v) => sum[v] !== undefined);
  if (variants.length > 1) {
    lines.push('');
    lines.push(`| ntsd native variant | NTS req/s (max) | req per server CPU-second | \\|offset\\| p50 / p99 / p99.9 at 50 % (µs) | residence p99 at 50 % (µs) |`);
    lines.push('|---|---:|---:|---:|---:|');
    for (const v of variants) {
      lines.push(
        `| ${result.labels[v] ?? v} | ${fmtInt(get(v, 'maxRatePerS'))} | ${fmtInt(get(v, 'perCpuSecond'))} | ${triple([get(v, 'halfOffsetP50Us'), get(v, 'halfOffsetP99Us'), get(v, 'halfOffsetP999Us')])} | ${us(get(v, 'halfResidenceP99Us'))} |`,
      );
    }
  }
  lines.push('');
  lines.push(
    `Generator (bench/load, kernel timestamps) in the max runs: ${mains.map((v) => `${result.labels[v] ?? v} ${fmt(get(v, 'generatorCpuUsPerReply'), 1)} µs CPU per reply`).join(', ')}. ` +
      'It shares the cores with the server, so a server much cheaper than the generator (chrony) shows a req/s limited by the generator; the per-CPU-second row does not depend on it.',
  );
  const userRuns = Object.entries(sum).filter(([, s]) => (s['userStampRuns'] ?? 0) > 0);
  if (userRuns.length > 0) {
    lines.push('');
    lines.push(`**Warning: ${userRuns.map(([v]) => v).join(', ')} ran with user-space generator stamps (the native addon did not load); their |offset| figures include the generator's own queueing.**`);
  }
  const soak = result.soak;
  if (soak !== null) {
    const flat = Math.abs(soak.driftMb) <= soak.minMb * 0.05;
    lines.push('');
    lines.push(
      `Soak: ntsd native at ${fmtInt(soak.offeredRatePerS)} req/s offered (50 % of its max; ${fmtInt(soak.ratePerS)} achieved) for ${fmt(soak.durationS, 0)} s: ` +
        `VmRSS ${fmt(soak.minMb, 1)} – ${fmt(soak.maxMb, 1)} MB, drift (last 10 s vs s 5–15) ${fmt(soak.driftMb, 1)} MB` +
        ` (target < 120 MB${soak.maxMb < 120 ? ' ✓' : ' ✗'}, flat ±5 %${flat ? ' ✓' : ' ✗'}); |offset| p99 ${us(soak.offsetP99Us)} µs.`,
    );
    lines.push('');
    lines.push(`VmRSS per second (MB): ${soak.samplesMb.join(' ')}`);
  }
  const exchangeTable = renderExchangeTable(result, o);
  if (exchangeTable !== '') lines.push('', exchangeTable);
  return lines.join('\n');
}

/**
 * The interleaved section's figures, medians over pairs, keyed `variant/client` (e.g. `native/interleaved`):
 * the plain maximum (basic clients, closed loop) and, at idle / 50 % / 90 %, the achieved rate, |offset|
 * p50 / p99 / p99.9 of every sample the client took and the fraction of interleaved replies.
 */
export function summariseExchanges(result: NtpCompareResult): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  const exchange = result.records.filter((r) => r.client !== undefined);
  for (const v of EXCHANGE_VARIANTS) {
    const plainMax = median(exchange.filter((r) => r.variant === v && r.kind === 'plainMax').map((r) => r.report.ratePerS));
    for (const client of EXCHANGE_CLIENTS) {
      const mine = exchange.filter((r) => r.variant === v && r.client === client && r.kind !== 'plainMax');
      if (mine.length === 0) continue;
      const pick = (kind: RunKind, f: (r: NtpRunRecord) => number): number => median(mine.filter((r) => r.kind === kind).map(f));
      const s: Record<string, number> = { plainMaxRatePerS: plainMax };
      for (const kind of ['idle', 'half', 'ninety'] as const) {
        s[`${kind}AchievedPerS`] = pick(kind, (r) => r.report.ratePerS);
        s[`${kind}OffsetP50Us`] = pick(kind, (r) => r.report.offsetAbsUs?.p50 ?? Number.NaN);
        s[`${kind}OffsetP99Us`] = pick(kind, (r) => r.report.offsetAbsUs?.p99 ?? Number.NaN);
        s[`${kind}OffsetP999Us`] = pick(kind, (r) => r.report.offsetAbsUs?.p999 ?? Number.NaN);
        s[`${kind}InterleavedFraction`] = pick(kind, (r) => r.report.exchanges?.interleavedFraction ?? Number.NaN);
        s[`${kind}LossPercent`] = pick(kind, (r) => r.report.lossPercent);
      }
      s['invalid'] = mine.reduce((a, r) => a + r.report.invalid, 0);
      s['userStampRuns'] = mine.filter((r) => r.report.timestamps !== 'kernel').length;
      out[`${v}/${client}`] = s;
    }
  }
  return out;
}

/** The interleaved section as a markdown table (empty when it did not run). */
export function renderExchangeTable(result: NtpCompareResult, o: NtpCompareOptions): string {
  const sum = summariseExchanges(result);
  const columns = Object.keys(sum);
  if (columns.length === 0) return '';
  const get = (col: string, key: string): number => sum[col]?.[key] ?? Number.NaN;
  // Interleaved samples are sub-microsecond at p50 and p99: two decimals below 10 µs.
  const us = (n: number): string => fmt(n, n >= 100 ? 0 : n >= 10 ? 1 : 2);
  const label = (col: string): string => {
    const [v, client] = col.split('/');
    return `${v === 'chrony' ? 'chrony' : 'ntsd native'} ${client ?? ''}`;
  };
  const lines: string[] = [];
  lines.push(
    `Interleaved section: plain NTP from bench/load client exchanges (\`--client basic|interleaved\`), ${o.threads} generator thread(s) × ${o.interleavedSockets} sockets × 4 clients, ` +
      `each socket on its own loopback source address; rates are fractions of each server's plain maximum (basic clients, closed loop, ${o.maxThreads} threads). ` +
      '|offset| covers every sample the clients took: in interleaved form the previous exchange with the server\'s transmit stamp of it (see bench/load/README.md).',
  );
  lines.push('');
  lines.push(`| metric | ${columns.map(label).join(' | ')} |`);
  lines.push(`|---|${columns.map(() => '---:|').join('')}`);
  const row = (metric: string, cell: (col: string) => string): void => {
    lines.push(`| ${metric} | ${columns.map(cell).join(' | ')} |`);
  };
  row('plain req/s, closed loop (basic clients)', (c) => (c.endsWith('/basic') ? fmtInt(get(c, 'plainMaxRatePerS')) : ''));
  row(`req/s achieved at idle (${fmtInt(o.idleRatePerS)}/s) / 50 % / 90 %`, (c) => ['idle', 'half', 'ninety'].map((k) => fmtInt(get(c, `${k}AchievedPerS`))).join(' / '));
  for (const [kind, name] of [
    ['idle', 'idle'],
    ['half', '50 %'],
    ['ninety', '90 %'],
  ] as const) {
    row(`\\|offset\\| p50 / p99 / p99.9 at ${name} (µs)`, (c) => [get(c, `${kind}OffsetP50Us`), get(c, `${kind}OffsetP99Us`), get(c, `${kind}OffsetP999Us`)].map(us).join(' / '));
  }
  row('interleaved replies at idle / 50 % / 90 % (%)', (c) => ['idle', 'half', 'ninety'].map((k) => fmt(get(c, `${k}InterleavedFraction`) * 100, 1)).join(' / '));
  row('loss at idle / 50 % / 90 % (%)', (c) => ['idle', 'half', 'ninety'].map((k) => fmt(get(c, `${k}LossPercent`), 3)).join(' / '));
  row('invalid replies (all runs)', (c) => fmtInt(get(c, 'invalid')));
  const a = 'native/interleaved';
  const b = 'chrony/interleaved';
  if (sum[a] !== undefined && sum[b] !== undefined) {
    const verdict = (kind: string): string => {
      const x = get(a, `${kind}OffsetP99Us`);
      const y = get(b, `${kind}OffsetP99Us`);
      if (!Number.isFinite(x) || !Number.isFinite(y)) return '–';
      return `${us(x)} vs ${us(y)} µs ${x <= y ? '✓' : '✗'}`;
    };
    lines.push('');
    lines.push(`Target: interleaved |offset| p99 of ntsd ≤ chrony's in the same run: idle ${verdict('idle')}, 50 % ${verdict('half')}.`);
  }
  const user = columns.filter((c) => get(c, 'userStampRuns') > 0);
  if (user.length > 0) lines.push('', `**Warning: ${user.join(', ')} ran without kernel generator stamps.**`);
  return lines.join('\n');
}
