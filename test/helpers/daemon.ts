/**
 * Runs the real ntsd daemon for end-to-end tests: `node <dist>/src/main.js run --config FILE` as a child
 * process, waits for its "ntsd started" JSON log line, parses the bound ports from it, collects stdout
 * lines and stops it with a signal, reporting the exit code and how long the stop took.
 *
 * Why not test/interop/ntsd.ts: that launcher runs under setpriv (like the chrony/NTPsec peers), merges
 * stderr into stdout, SIGKILLs after 3 s and deletes its directory on stop — a restart on the same keyset,
 * signal timing and exit-code checks need the opposite. Its log-line parsing idea is the same.
 *
 * Also here: free loopback ports, a loopback test configuration, a CLI runner, a /metrics scraper, a
 * handful of NTS-KE/NTS client shortcuts built on src/client/*.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performKeyExchange, type KeyExchangeResult } from '../../src/cli/ke-client.js';
import { ntsExchange, type NtsExchangeOutcome } from '../../src/cli/ntp-client.js';

/** One parsed JSON log line. */
export type LogLine = Record<string, unknown>;

/** A host:port pair parsed from the "ntsd started" line. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** How a stop went. */
export interface StopResult {
  /** Process exit code (null when it died from a signal, e.g. the SIGKILL fallback). */
  readonly exitCode: number | null;
  /** Signal that ended it, if any. */
  readonly signal: NodeJS.Signals | null;
  /** Time from sending the signal to the exit event. */
  readonly durationMs: number;
}

/** A running daemon. */
export interface RunningDaemon {
  readonly pid: number;
  /** Directory the configuration was written to (not removed by stop: the caller owns it). */
  readonly dir: string;
  readonly configPath: string;
  /** The parsed "ntsd started" line. */
  readonly started: LogLine;
  /** Bound NTP addresses (`ntp` field). */
  readonly ntp: readonly HostPort[];
  /** Bound NTS-KE addresses (`ntsKe` field). */
  readonly ntsKe: readonly HostPort[];
  /** Metrics endpoint, undefined when off. */
  readonly metrics: HostPort | undefined;
  /** Every JSON line printed on stdout so far. */
  lines(): LogLine[];
  /** Raw stdout / stderr so far. */
  stdout(): string;
  stderr(): string;
  /** True while the process runs. */
  running(): boolean;
  /** Sends a signal (no-op once exited). */
  signal(sig: NodeJS.Signals): void;
  /** Resolves with the first line (after index `from`) matching `match`; rejects after `timeoutMs` or on exit. */
  waitForLine(match: (line: LogLine) => boolean, timeoutMs: number, from?: number): Promise<LogLine>;
  /** Sends `sig` (default SIGTERM), waits up to `killAfterMs` (default 8000), then SIGKILL. Idempotent per call site. */
  stop(sig?: NodeJS.Signals, killAfterMs?: number): Promise<StopResult>;
}

/** Options of startDaemon. */
export interface StartDaemonOptions {
  /** Configuration text, written to `dir/ntsd.toml` (relative paths in it resolve against `dir`). */
  readonly toml: string;
  /** Directory for the configuration (the caller creates and removes it). */
  readonly dir: string;
  /** File name of the configuration (default ntsd.toml). */
  readonly configName?: string;
  /** Longest wait for "ntsd started" (default 15 s: the machine is shared). */
  readonly startTimeoutMs?: number;
  /** Extra environment variables for the child (added to this process's environment). */
  readonly env?: Readonly<Record<string, string>>;
}

/** The repository root: nearest ancestor of `from` holding tsconfig.json, else the working directory. */
export function repoRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (;;) {
    if (existsSync(join(dir, 'tsconfig.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
}

/** The compiled CLI next to this compiled helper (<out>/test/helpers/daemon.js → <out>/src/main.js). */
export function ntsdMainPath(): string {
  const beside = fileURLToPath(new URL('../../src/main.js', import.meta.url));
  if (existsSync(beside)) return beside;
  return join(repoRoot(), 'dist', 'src', 'main.js');
}

/** Every child started here, SIGKILLed if the test process exits with one still running. */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
});

/** Parses the JSON lines of `text` (partial or non-JSON lines are skipped). */
export function parseLogLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const parsed: unknown = JSON.parse(line);
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) out.push(parsed as LogLine);
    } catch {
      // partial line
    }
  }
  return out;
}

function parseHostPort(text: unknown): HostPort | undefined {
  if (typeof text !== 'string') return undefined;
  const colon = text.lastIndexOf(':');
  if (colon < 0) return undefined;
  const host = text.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(text.slice(colon + 1));
  return Number.isInteger(port) && port > 0 ? { host, port } : undefined;
}

function parseHostPorts(value: unknown): HostPort[] {
  if (!Array.isArray(value)) return [];
  return value.map(parseHostPort).filter((h): h is HostPort => h !== undefined);
}

/** Small promise delay. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` every `intervalMs` until it returns a value; throws after `timeoutMs` with `what`. */
export async function waitUntil<T>(what: string, timeoutMs: number, probe: () => T | undefined | Promise<T | undefined>, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(intervalMs);
  }
}

/** Writes the configuration, spawns the daemon and resolves once it logged "ntsd started". */
export async function startDaemon(options: StartDaemonOptions): Promise<RunningDaemon> {
  const configPath = join(options.dir, options.configName ?? 'ntsd.toml');
  writeFileSync(configPath, options.toml);
  const child = spawn(process.execPath, [ntsdMainPath(), 'run', '--config', configPath], {
    cwd: options.dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.env === undefined ? {} : { env: { ...process.env, ...options.env } }),
  });
  if (child.pid === undefined) throw new Error('cannot spawn ntsd');
  const pid = child.pid;
  children.add(child);
  let stdout = '';
  let stderr = '';
  let parsed: LogLine[] = [];
  let pending = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    stdout += chunk;
    pending += chunk;
    const cut = pending.lastIndexOf('\n');
    if (cut >= 0) {
      parsed = parsed.concat(parseLogLines(pending.slice(0, cut)));
      pending = pending.slice(cut + 1);
    }
  });
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  let exit: { code: number | null; signal: NodeJS.Signals | null; atMs: number } | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal, atMs: performance.now() };
      children.delete(child);
      resolve();
    });
  });
  const isRunning = (): boolean => exit === undefined;

  const waitForLine = async (match: (line: LogLine) => boolean, timeoutMs: number, from = 0): Promise<LogLine> =>
    waitUntil(`a matching log line from ntsd pid ${pid}`, timeoutMs, () => {
      const hit = parsed.slice(from).find(match);
      if (hit !== undefined) return hit;
      if (!isRunning()) {
        throw new Error(`ntsd exited (code ${String(exit?.code)}, signal ${String(exit?.signal)}) before the awaited log line\nstdout:\n${stdout.slice(-4000)}\nstderr:\n${stderr.slice(-4000)}`);
      }
      return undefined;
    }, 20);

  const stop = async (sig: NodeJS.Signals = 'SIGTERM', killAfterMs = 8000): Promise<StopResult> => {
    if (exit !== undefined) return { exitCode: exit.code, signal: exit.signal, durationMs: 0 };
    const sentAt = performance.now();
    child.kill(sig);
    let timer: NodeJS.Timeout | undefined;
    const inTime = await Promise.race([
      exited.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), killAfterMs);
      }),
    ]);
    clearTimeout(timer);
    if (!inTime) {
      child.kill('SIGKILL');
      await exited;
    }
    const e = exit ?? { code: null, signal: null, atMs: performance.now() };
    return { exitCode: e.code, signal: e.signal, durationMs: e.atMs - sentAt };
  };

  let started: LogLine;
  try {
    started = await waitForLine((l) => l['msg'] === 'ntsd started', options.startTimeoutMs ?? 15_000);
  } catch (error) {
    await stop('SIGKILL', 2000);
    throw error;
  }
  return {
    pid,
    dir: options.dir,
    configPath,
    started,
    ntp: parseHostPorts(started['ntp']),
    ntsKe: parseHostPorts(started['ntsKe']),
    metrics: parseHostPort(started['metrics']),
    lines: () => parsed.slice(),
    stdout: () => stdout,
    stderr: () => stderr,
    running: isRunning,
    signal(sig) {
      if (isRunning()) child.kill(sig);
    },
    waitForLine,
    stop,
  };
}

/** A fresh 0700 temp directory. */
export function makeTempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `ntsd-e2e-${prefix}-`));
}

/** Removes a directory tree, ignoring errors. */
export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

import { freeTcpPort, freeUdpPort } from './ports.js';
export { freeTcpPort, freeUdpPort };

/** Options of testConfigToml. */
export interface TestConfigOptions {
  readonly ntpPort: number;
  readonly kePort: number;
  readonly certPath: string;
  readonly keyPath: string;
  /** Key storage file (default `keyset/ntsd.keys`, relative to the config directory). */
  readonly keyStoragePath?: string;
  /** `[keyset] key-rotation-interval-s` and `stale-key-count` (default: the daemon's). */
  readonly keyRotationIntervalS?: number;
  readonly staleKeyCount?: number;
  /** Worker threads (default 1); 0 = inline. */
  readonly threads?: number;
  /** Metrics endpoint on a free port (default true). */
  readonly metrics?: boolean;
  readonly logLevel?: string;
  /** `log-format` (default: absent, so the daemon's "auto"). */
  readonly logFormat?: string;
  readonly keyExchangeTimeoutMs?: number;
  /** Extra lines appended to the [[nts-ke-server]] table. */
  readonly keExtra?: readonly string[];
  /** `concurrent-connections-per-source` (default 1000000: every test client is 127.0.0.1). */
  readonly connectionsPerSource?: number;
}

/**
 * A loopback configuration in OPERATIONS.md keys: explicit ports from freePorts() (port 0 listens are
 * covered by their own test in cli.test.ts), certificate polling off (SIGHUP only), per-client KE rate
 * limiting and the per-source connection cap off (every test client is 127.0.0.1), metrics on a free port, static stratum 2.
 */
export function testConfigToml(o: TestConfigOptions): string {
  return [
    '[[server]]',
    `listen = "127.0.0.1:${o.ntpPort}"`,
    '',
    '[[nts-ke-server]]',
    `listen = "127.0.0.1:${o.kePort}"`,
    `certificate-chain-path = ${JSON.stringify(o.certPath)}`,
    `private-key-path = ${JSON.stringify(o.keyPath)}`,
    'certificate-reload-interval-s = 0',
    'client-rate-limit-interval-s = 0',
    `concurrent-connections-per-source = ${o.connectionsPerSource ?? 1_000_000}`,
    `key-exchange-timeout-ms = ${o.keyExchangeTimeoutMs ?? 2000}`,
    ...(o.keExtra ?? []),
    '',
    '[keyset]',
    `key-storage-path = ${JSON.stringify(o.keyStoragePath ?? 'keyset/ntsd.keys')}`,
    ...(o.keyRotationIntervalS === undefined ? [] : [`key-rotation-interval-s = ${o.keyRotationIntervalS}`]),
    ...(o.staleKeyCount === undefined ? [] : [`stale-key-count = ${o.staleKeyCount}`]),
    '',
    '[observability]',
    `log-level = ${JSON.stringify(o.logLevel ?? 'info')}`,
    ...(o.logFormat === undefined ? [] : [`log-format = ${JSON.stringify(o.logFormat)}`]),
    `metrics-listen = ${o.metrics === false ? '""' : '"127.0.0.1:0"'}`,
    '',
    '[worker-pool]',
    `threads = ${o.threads ?? 1}`,
    '',
    '[time-source]',
    'mode = "static"',
    'local-stratum = 2',
    '',
  ].join('\n');
}

/** Free NTP (UDP) and NTS-KE (TCP) ports. */
export async function freePorts(): Promise<{ ntpPort: number; kePort: number }> {
  return { ntpPort: await freeUdpPort(), kePort: await freeTcpPort() };
}

/** Result of one CLI run. */
export interface CliResult {
  /** Exit code (null if killed on timeout). */
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
}

/** Runs `node main.js ...args` to completion (SIGKILL after `timeoutMs`, default 15 s); `env` adds variables for the child. */
export function runCli(args: readonly string[], options: { cwd?: string; timeoutMs?: number; env?: Readonly<Record<string, string>> } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const startedAt = performance.now();
    const env = options.env === undefined ? {} : { env: { ...process.env, ...options.env } };
    const child = spawn(process.execPath, [ntsdMainPath(), ...args], { cwd: options.cwd ?? tmpdir(), stdio: ['ignore', 'pipe', 'pipe'], ...env });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 15_000);
    child.once('close', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, stdout, stderr, durationMs: performance.now() - startedAt });
    });
  });
}

/** GETs http://host:port/metrics and returns the body. */
export function fetchMetricsText(at: HostPort, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: at.host, port: at.port, path: '/metrics', method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics answered ${String(res.statusCode)}`))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('/metrics timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Prometheus samples by series (`name` or `name{a="x",b="y"}` exactly as exposed). */
export type MetricSamples = ReadonlyMap<string, number>;

/** Parses Prometheus text exposition into series → value. */
export function parseMetrics(text: string): MetricSamples {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    if (space < 0) continue;
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

/** Scrapes and parses /metrics. */
export async function scrapeMetrics(at: HostPort): Promise<MetricSamples> {
  return parseMetrics(await fetchMetricsText(at));
}

/** Value of one series (0 when absent). */
export function sample(samples: MetricSamples, series: string): number {
  return samples.get(series) ?? 0;
}

/** Sum of every series of metric `name` (all label sets). */
export function sumOf(samples: MetricSamples, name: string): number {
  let total = 0;
  for (const [series, value] of samples) {
    if (series === name || series.startsWith(`${name}{`)) total += value;
  }
  return total;
}

/** Scrapes until `ready(samples)` holds (the daemon folds worker counters about once a second). */
export async function waitForMetrics(at: HostPort, what: string, ready: (s: MetricSamples) => boolean, timeoutMs = 5000): Promise<MetricSamples> {
  let last: MetricSamples = new Map();
  try {
    return await waitUntil(what, timeoutMs, async () => {
      last = await scrapeMetrics(at);
      return ready(last) ? last : undefined;
    }, 100);
  } catch (error) {
    const lines = [...last].filter(([k]) => k.startsWith('ntsd_')).map(([k, v]) => `${k} ${v}`);
    throw new Error(`${error instanceof Error ? error.message : String(error)}\nlast scrape:\n${lines.join('\n')}`);
  }
}

/** NTS-KE against the daemon's first KE listener (trusting `caPem`); throws with the failure on error. */
export async function keyExchange(daemon: RunningDaemon, caPem: string, options: { aeadIds?: readonly number[]; timeoutMs?: number } = {}): Promise<KeyExchangeResult> {
  const ke = daemon.ntsKe[0];
  if (ke === undefined) throw new Error('daemon reported no NTS-KE address');
  const outcome = await performKeyExchange({
    host: ke.host,
    port: ke.port,
    ca: caPem,
    servername: 'localhost',
    timeoutMs: options.timeoutMs ?? 5000,
    ...(options.aeadIds === undefined ? {} : { aeadIds: options.aeadIds }),
  });
  if (!outcome.ok) throw new Error(`NTS-KE failed (${outcome.failure.kind}): ${outcome.failure.message}`);
  return outcome.result;
}

/** One authenticated NTS exchange with `cookie` and the keys of `keys`, against the NTP address the KE gave. */
export function ntsQuery(keys: KeyExchangeResult, cookie: Uint8Array, placeholders = 0, timeoutMs = 3000): Promise<NtsExchangeOutcome> {
  return ntsExchange({
    server: keys.ntpServer,
    port: keys.ntpPort,
    aeadId: keys.aeadId,
    c2s: keys.c2s,
    s2c: keys.s2c,
    cookie,
    placeholders,
    timeoutMs,
  });
}
