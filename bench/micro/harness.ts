/**
 * A tiny micro-benchmark harness shared by every bench/micro/*.bench.ts file.
 * bench() warms a function up, calibrates a batch size so the timer's own cost is negligible, then runs
 * batches until `minTimeMs` has passed and reports the median batch (robust against GC pauses and the
 * other tenants of a shared machine). Results are plain data; printTable() renders them as markdown.
 */

/** One benchmark's outcome. */
export interface BenchResult {
  /** Label as passed to bench(). */
  readonly name: string;
  /** Median nanoseconds per call over all measured batches. */
  readonly nsPerOp: number;
  /** 1e9 / nsPerOp. */
  readonly opsPerSec: number;
  /** Total calls measured (warm-up excluded). */
  readonly iterations: number;
  /** Number of timed batches. */
  readonly batches: number;
  /** Spread of batches: (p90 - p10) / median, in percent. */
  readonly spreadPercent: number;
}

/** Options for bench(). */
export interface BenchOptions {
  /** Minimum measured time in milliseconds (default 400, or BENCH_MIN_TIME_MS from the environment). */
  readonly minTimeMs?: number;
  /** Warm-up time in milliseconds before measuring (default: a quarter of minTimeMs, at least 50). */
  readonly warmupMs?: number;
}

const envMin = Number(process.env['BENCH_MIN_TIME_MS']);
const DEFAULT_MIN_TIME_MS = Number.isFinite(envMin) && envMin > 0 ? envMin : 400;
/** Target duration of one timed batch, so hrtime overhead (~50 ns) stays well under 0.1 %. */
const BATCH_TARGET_NS = 2_000_000;

function nowNs(): number {
  return Number(process.hrtime.bigint());
}

function runFor(fn: () => void, ms: number): number {
  const end = nowNs() + ms * 1e6;
  let calls = 0;
  while (nowNs() < end) {
    for (let i = 0; i < 16; i++) fn();
    calls += 16;
  }
  return calls;
}

function quantile(sorted: readonly number[], q: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
  return sorted[i] ?? Number.NaN;
}

/** Measures `fn` (warm-up, then timed batches until minTimeMs) and returns ns/op and ops/s. */
export function bench(name: string, fn: () => void, opts?: BenchOptions): BenchResult {
  const minTimeMs = opts?.minTimeMs ?? DEFAULT_MIN_TIME_MS;
  const warmupMs = opts?.warmupMs ?? Math.max(50, minTimeMs / 4);
  const warmCalls = runFor(fn, warmupMs);
  // Calibrate: calls per batch so that one batch takes about BATCH_TARGET_NS.
  const perCallNs = (warmupMs * 1e6) / Math.max(1, warmCalls);
  const batchSize = Math.max(1, Math.round(BATCH_TARGET_NS / Math.max(perCallNs, 1)));
  const perBatch: number[] = [];
  let iterations = 0;
  const deadline = nowNs() + minTimeMs * 1e6;
  do {
    const t0 = nowNs();
    for (let i = 0; i < batchSize; i++) fn();
    const t1 = nowNs();
    perBatch.push((t1 - t0) / batchSize);
    iterations += batchSize;
  } while (nowNs() < deadline || perBatch.length < 5);
  perBatch.sort((a, b) => a - b);
  const median = quantile(perBatch, 0.5);
  return {
    name,
    nsPerOp: median,
    opsPerSec: 1e9 / median,
    iterations,
    batches: perBatch.length,
    spreadPercent: (100 * (quantile(perBatch, 0.9) - quantile(perBatch, 0.1))) / median,
  };
}

function formatNs(ns: number): string {
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (ns >= 1e4) return `${(ns / 1e3).toFixed(1)} µs`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(2)} µs`;
  return `${ns.toFixed(0)} ns`;
}

/** Prints results as a markdown table (name, time/op, ops/s, spread, iterations). */
export function printTable(results: readonly BenchResult[]): void {
  const rows = results.map((r) => [
    r.name,
    formatNs(r.nsPerOp),
    Math.round(r.opsPerSec).toLocaleString('en-US'),
    `±${r.spreadPercent.toFixed(1)} %`,
    r.iterations.toLocaleString('en-US'),
  ]);
  const header = ['benchmark', 'time/op', 'ops/s', 'p10–p90', 'iterations'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join(' | ')} |`;
  const out = [line(header), `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`];
  for (const r of rows) out.push(line(r));
  console.log(out.join('\n'));
}
