/**
 * Runs `bench/load` as a child process (its own Node, so its threads do not share a heap or an event loop
 * with the caller) and returns the LoadReport of its `--json` line. For benches that drive the generator
 * against servers they start themselves (bench/ke, bench/pool-ke).
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LoadReport } from './protocol.js';

const LOAD_MAIN = join(dirname(fileURLToPath(import.meta.url)), 'main.js');

/** `node dist/bench/load/main.js ARGS --json`; rejects on a non-zero exit or an unreadable report. */
export function runLoadChild(args: readonly string[]): Promise<LoadReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LOAD_MAIN, ...args, '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (out += d));
    child.once('error', reject);
    child.on('exit', (code) => {
      try {
        if (code !== 0) throw new Error(`bench/load exited ${String(code)}`);
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as LoadReport);
      } catch (error: unknown) {
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  });
}
