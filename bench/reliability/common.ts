/**
 * Small pieces shared by the reliability battery (crash, fuzz, soak): a seeded PRNG, free loopback ports,
 * a "run as a script" check, number options and the defect list every script prints and exits on.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** A seeded pseudo-random source (not for secrets): reproducible runs from `--seed`. */
export interface Rng {
  /** The seed it started from. */
  readonly seed: number;
  /** Uniform 32-bit unsigned integer. */
  u32(): number;
  /** Uniform integer in [0, n) (n ≥ 1). */
  below(n: number): number;
  /** Uniform integer in [min, max] inclusive. */
  int(min: number, max: number): number;
  /** Uniform float in [0, 1). */
  float(): number;
  /** True with probability p. */
  chance(p: number): boolean;
  /** One element of a non-empty list. */
  pick<T>(items: readonly T[]): T;
}

/** sfc32 (Chris Doty-Humphrey's small fast counter generator), seeded through splitmix32. */
export function createRng(seed: number): Rng {
  let s = seed >>> 0;
  const split = (): number => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = split();
  let b = split();
  let c = split();
  let d = split();
  const u32 = (): number => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t;
  };
  for (let i = 0; i < 12; i++) u32();
  const below = (n: number): number => (n <= 1 ? 0 : Math.floor((u32() / 0x1_0000_0000) * n));
  return {
    seed: seed >>> 0,
    u32,
    below,
    int: (min, max) => min + below(max - min + 1),
    float: () => u32() / 0x1_0000_0000,
    chance: (p) => u32() / 0x1_0000_0000 < p,
    pick<T>(items: readonly T[]): T {
      const item = items[below(items.length)];
      if (item === undefined) throw new RangeError('pick from an empty list');
      return item;
    },
  };
}

/** A seed from the clock when none is given (printed by every script so a run can be repeated). */
export function defaultSeed(): number {
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}

/** True when the module at `moduleUrl` is the script node was started with (not imported by a test). */
export function isMain(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}

// The same free-port probes as the tests use.
export { freeTcpPort, freeUdpPort } from '../../test/helpers/ports.js';

/** Promise delay. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/** A command-line mistake: printed with the usage text, exit 64 (EX_USAGE). */
export class UsageError extends Error {}

/** Parses an option value as a number within [min, max]; `fallback` when absent. */
export function numberOption(text: string | undefined, name: string, fallback: number, min: number, max: number, integer = true): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name}: expected ${integer ? 'an integer' : 'a number'} between ${min} and ${max}, got "${text}"`);
  }
  return n;
}

/** Collects defects (what a script exits non-zero on), keeping the first `keep` messages in full. */
export class DefectLog {
  #count = 0;
  readonly #messages: string[] = [];
  constructor(private readonly keep = 50) {}
  /** Records one defect. */
  add(message: string): void {
    this.#count++;
    if (this.#messages.length < this.keep) this.#messages.push(message);
  }
  /** Defects recorded. */
  get count(): number {
    return this.#count;
  }
  /** The first messages kept. */
  get messages(): readonly string[] {
    return this.#messages;
  }
}

/** Formats an integer with thousands separators (for the printed figures). */
export function grouped(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** Runs a script's main: prints UsageError with the usage text (exit 64), other errors with exit 70. */
export function runMain(usage: string, main: (argv: readonly string[]) => Promise<number>): void {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      if (error instanceof UsageError) {
        process.stderr.write(`${error.message}\n\n${usage}`);
        process.exitCode = 64;
        return;
      }
      process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exitCode = 70;
    },
  );
}
