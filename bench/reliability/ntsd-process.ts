/**
 * The real daemon as a child process for the reliability battery: `node dist/src/main.js run --config FILE`
 * with JSON log lines on stdout. Unlike the test helper (test/helpers/daemon.ts) the handle exists from the
 * moment of spawn, so a caller can SIGKILL it at any point of its start-up, and it waits for log lines by
 * predicate with the line index as a cursor. Also: the loopback configuration the battery runs with, and a
 * development PKI in a scratch directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateDevPki } from '../../src/cli/dev-certs.js';
import { ntsdMainPath, testConfigToml } from '../../test/helpers/daemon.js';

/** One parsed JSON log line. */
export type LogLine = Record<string, unknown>;

/** How the process ended. */
export interface ProcessExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A spawned ntsd. */
export interface NtsdProcess {
  readonly pid: number;
  /** JSON lines printed so far (a live view: do not mutate). */
  readonly lines: readonly LogLine[];
  /** Raw stderr so far (the last 64 KiB). */
  stderr(): string;
  /** Set once the process exited. */
  exit(): ProcessExit | undefined;
  /** Resolves with the first line at index ≥ `from` that matches; undefined on timeout or exit. */
  waitForLine(match: (line: LogLine) => boolean, timeoutMs: number, from?: number): Promise<LogLine | undefined>;
  /** Sends SIGKILL (if still running) and resolves once the process is gone. */
  kill9(): Promise<ProcessExit>;
  /** Sends SIGTERM, waits up to `timeoutMs`, then SIGKILL. */
  stop(timeoutMs?: number): Promise<ProcessExit>;
  /** Resolves when the process exits. */
  readonly exited: Promise<ProcessExit>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

/** Spawns `ntsd run --config <configPath>` in `cwd`. */
export function spawnNtsd(configPath: string, cwd: string, extraEnv: Readonly<Record<string, string>> = {}): NtsdProcess {
  const child = spawn(process.execPath, [ntsdMainPath(), 'run', '--config', configPath], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...extraEnv },
  });
  if (child.pid === undefined) throw new Error('cannot spawn ntsd');
  live.add(child);
  const lines: LogLine[] = [];
  let pending = '';
  let stderr = '';
  let exit: ProcessExit | undefined;
  const waiters = new Set<() => void>();
  const wake = (): void => {
    for (const w of [...waiters]) w();
  };
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    pending += chunk;
    let cut = pending.indexOf('\n');
    while (cut >= 0) {
      const text = pending.slice(0, cut);
      pending = pending.slice(cut + 1);
      if (text.startsWith('{')) {
        try {
          const parsed: unknown = JSON.parse(text);
          if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) lines.push(parsed as LogLine);
        } catch {
          // not a JSON line
        }
      }
      cut = pending.indexOf('\n');
    }
    wake();
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-65_536);
  });
  const exited = new Promise<ProcessExit>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      live.delete(child);
      resolve(exit);
      wake();
    });
  });

  const waitForLine = (match: (line: LogLine) => boolean, timeoutMs: number, from = 0): Promise<LogLine | undefined> =>
    new Promise((resolve) => {
      let index = from;
      let timer: NodeJS.Timeout | undefined;
      const check = (): void => {
        for (; index < lines.length; index++) {
          const line = lines[index];
          if (line !== undefined && match(line)) {
            done(line);
            return;
          }
        }
        if (exit !== undefined) done(undefined);
      };
      const done = (line: LogLine | undefined): void => {
        waiters.delete(check);
        if (timer !== undefined) clearTimeout(timer);
        resolve(line);
      };
      timer = setTimeout(() => done(undefined), timeoutMs);
      waiters.add(check);
      check();
    });

  const kill9 = async (): Promise<ProcessExit> => {
    if (exit === undefined) child.kill('SIGKILL');
    return exited;
  };

  return {
    pid: child.pid,
    lines,
    stderr: () => stderr,
    exit: () => exit,
    waitForLine,
    kill9,
    async stop(timeoutMs = 8000) {
      if (exit !== undefined) return exit;
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), timeoutMs);
      });
      const first = await Promise.race([exited, late]);
      clearTimeout(timer);
      if (first === 'late') return kill9();
      return first;
    },
    exited,
  };
}

/** Options of batteryConfigToml. */
export interface BatteryConfigOptions {
  readonly ntpPort: number;
  readonly kePort: number;
  readonly certPath: string;
  readonly keyPath: string;
  /** Key file path (relative to the config directory). */
  readonly keyStoragePath: string;
  readonly keyRotationIntervalS?: number;
  readonly staleKeyCount?: number;
  /** NTP threads (default 1). */
  readonly threads?: number;
  /** Metrics on 127.0.0.1:0 (default false). */
  readonly metrics?: boolean;
  readonly logLevel?: string;
}

/**
 * The tests' loopback configuration (test/helpers/daemon.ts testConfigToml: no per-client limits, every client is
 * 127.0.0.1) with JSON logs, which the battery parses, and metrics off unless asked for.
 */
export function batteryConfigToml(o: BatteryConfigOptions): string {
  return testConfigToml({ ...o, metrics: o.metrics === true, logFormat: 'json' });
}

/** Development certificates for localhost / 127.0.0.1 under `dir/certs`; returns the paths and the CA PEM. */
export function makeBatteryPki(dir: string): { certPath: string; keyPath: string; caPem: string } {
  const pki = generateDevPki({ dir: join(dir, 'certs'), dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  return { certPath: pki.chainPath, keyPath: pki.keyPath, caPem: readFileSync(pki.caCertPath, 'utf8') };
}

/** Parses "host:port" from a log field (e.g. the `metrics` field of "ntsd started"). */
export function hostPortField(value: unknown): { host: string; port: number } | undefined {
  if (typeof value !== 'string') return undefined;
  const colon = value.lastIndexOf(':');
  const port = Number(value.slice(colon + 1));
  if (colon < 0 || !Number.isInteger(port) || port <= 0) return undefined;
  return { host: value.slice(0, colon).replace(/^\[|\]$/g, ''), port };
}
