#!/usr/bin/env node
/**
 * Fuzz battery: mutated valid inputs against respond(), NTS-KE framing and handling, keyset decoding and
 * configuration parsing (the targets and their invariants: fuzz-targets.ts).
 *
 *   node dist/bench/reliability/fuzz.js --inputs 10000000 [--max-minutes 20] [--seed N] [--targets respond,ke]
 *
 * Not coverage-guided: @jazzer.js/core 4.0.0 installs from the registry with its libFuzzer addon prebuilt
 * inside the package, but that binary needs glibc 2.38 and this Debian 12 host has 2.36 (ERR_DLOPEN_FAILED);
 * the older releases fetch their addon from GitHub at install time. Instead: a mutator of valid inputs
 * (fuzz-mutate.ts) with outcome feedback: an input whose signature (outcome, error, key age, …) was not
 * seen before joins its target's corpus and is mutated further. Inputs are shared out by weight; bounded by
 * count and time; prints the count, rate and signatures per target; exits 1 on any defect (a throw or a
 * broken invariant), printing the input in base64 so it can be replayed.
 */
import { parseArgs } from 'node:util';
import { DefectLog, UsageError, createRng, defaultSeed, grouped, isMain, numberOption, runMain, type Rng } from './common.js';
import { applyMutations, randomMutations, type MutationContext } from './fuzz-mutate.js';
import { InvariantViolation, allTargets, type FuzzTarget } from './fuzz-targets.js';

/** Options of one fuzz run. */
export interface FuzzOptions {
  /** Inputs to run over all targets. */
  readonly inputs: number;
  /** Stop after this long even if fewer inputs ran. */
  readonly maxDurationS: number;
  readonly seed: number;
  /** Share of the inputs per target name (normalised); targets not named get none. */
  readonly weights: Readonly<Record<string, number>>;
  /** Largest corpus per target (seeds included). */
  readonly maxCorpus: number;
  /** Targets to use (default: all four). */
  readonly targets?: readonly FuzzTarget[];
  readonly progress?: (line: string) => void;
}

/** Default shares: respond() is the hot path exposed to every datagram, the configuration the slowest input. */
export const DEFAULT_FUZZ_WEIGHTS: Readonly<Record<string, number>> = { respond: 0.5, ke: 0.25, keyset: 0.15, config: 0.1 };

/** Defaults of FuzzOptions. */
export const DEFAULT_FUZZ_OPTIONS: FuzzOptions = { inputs: 10_000_000, maxDurationS: 25 * 60, seed: 0, weights: DEFAULT_FUZZ_WEIGHTS, maxCorpus: 4096 };

/** Per-target figures. */
export interface FuzzTargetReport {
  readonly name: string;
  readonly inputs: number;
  readonly seeds: number;
  /** Corpus size at the end (seeds plus inputs with a new signature). */
  readonly corpus: number;
  /** Distinct signatures seen. */
  readonly signatures: number;
  /** Inputs per signature, most frequent first (at most 40). */
  readonly topSignatures: readonly (readonly [string, number])[];
  /** Every signature seen. */
  readonly allSignatures: readonly string[];
  readonly defects: number;
  readonly inputsPerS: number;
}

/** What a run did. */
export interface FuzzReport {
  readonly seed: number;
  readonly inputs: number;
  readonly stoppedBy: 'inputs' | 'time';
  readonly durationS: number;
  readonly targets: readonly FuzzTargetReport[];
  readonly defectCount: number;
  readonly defects: readonly string[];
}

interface TargetState {
  readonly target: FuzzTarget;
  readonly corpus: Uint8Array[];
  readonly signatures: Map<string, number>;
  readonly ctx: MutationContext;
  inputs: number;
  defects: number;
  busyMs: number;
}

function base64Of(input: Uint8Array): string {
  return input.length <= 4096 ? Buffer.from(input).toString('base64') : `${Buffer.from(input.subarray(0, 4096)).toString('base64')}… (${input.length} octets)`;
}

/** Produces one input for `state`: a corpus entry, edited generically or by the target's own mutator. */
function nextInput(state: TargetState, rng: Rng): Uint8Array {
  const base = state.corpus[rng.below(state.corpus.length)] ?? new Uint8Array(0);
  const t = state.target;
  let input = t.customMutate !== undefined && rng.chance(0.6) ? t.customMutate(rng, base) : applyMutations(base, randomMutations(rng), state.ctx);
  if (t.fixup !== undefined) input = t.fixup(rng, input);
  return input;
}

/** Runs one input; returns its signature, or records a defect and returns undefined. */
export function runOne(target: FuzzTarget, input: Uint8Array, defects: DefectLog): string | undefined {
  try {
    return target.run(input);
  } catch (error) {
    const kind = error instanceof InvariantViolation ? 'invariant' : 'threw';
    const message = error instanceof Error ? error.message : String(error);
    defects.add(`${target.name}: ${kind}: ${message}\n      input (base64): ${base64Of(input)}`);
    return undefined;
  }
}

/** Runs the battery. */
export function runFuzz(options: FuzzOptions): FuzzReport {
  const rng = createRng(options.seed);
  // The first messages of each target are kept, so one noisy target cannot hide another's.
  const logs = new Map<string, DefectLog>();
  const logOf = (name: string): DefectLog => {
    let log = logs.get(name);
    if (log === undefined) logs.set(name, (log = new DefectLog(10)));
    return log;
  };
  const targets = (options.targets ?? allTargets()).filter((t) => (options.weights[t.name] ?? 0) > 0);
  if (targets.length === 0) throw new UsageError('no target selected');
  const states: TargetState[] = targets.map((target) => {
    const corpus = target.seeds.map((s) => s.slice());
    return {
      target,
      corpus,
      signatures: new Map<string, number>(),
      inputs: 0,
      defects: 0,
      busyMs: 0,
      ctx: {
        fieldOffsets: (input) => target.fieldOffsets(input),
        other: (n) => corpus[n % corpus.length] ?? new Uint8Array(0),
        maxLength: target.maxLength,
      },
    };
  });
  // Weighted schedule: a repeating list of 100 slots, interleaved (smooth weighted round robin).
  const total = states.reduce((sum, s) => sum + (options.weights[s.target.name] ?? 0), 0);
  const schedule: TargetState[] = [];
  const credit = states.map(() => 0);
  for (let slot = 0; slot < 100; slot++) {
    let best = 0;
    states.forEach((s, i) => {
      credit[i] = (credit[i] ?? 0) + (options.weights[s.target.name] ?? 0) / total;
      if ((credit[i] ?? 0) > (credit[best] ?? 0)) best = i;
    });
    credit[best] = (credit[best] ?? 0) - 1;
    const chosen = states[best];
    if (chosen !== undefined) schedule.push(chosen);
  }

  const startedAt = performance.now();
  const deadline = startedAt + options.maxDurationS * 1000;
  let done = 0;
  let stoppedBy: FuzzReport['stoppedBy'] = 'inputs';
  // Every seed as given, first: they are valid and must pass the invariants unchanged.
  for (const s of states) {
    for (const seed of s.target.seeds) {
      const sig = runOne(s.target, seed, logOf(s.target.name));
      if (sig !== undefined) s.signatures.set(sig, (s.signatures.get(sig) ?? 0) + 1);
      else s.defects++;
      s.inputs++;
      done++;
    }
  }
  let nextProgress = 1_000_000;
  while (done < options.inputs) {
    const batchEnd = Math.min(options.inputs, done + 1000);
    // One target per batch of 1000 keeps the clock reads cheap; the schedule interleaves them.
    const s = schedule[Math.floor(done / 1000) % schedule.length] ?? states[0];
    if (s === undefined) break;
    const t0 = performance.now();
    for (; done < batchEnd; done++) {
      const input = nextInput(s, rng);
      s.inputs++;
      const sig = runOne(s.target, input, logOf(s.target.name));
      if (sig === undefined) {
        s.defects++;
        continue;
      }
      const seen = s.signatures.get(sig);
      if (seen === undefined) {
        s.signatures.set(sig, 1);
        if (s.corpus.length < options.maxCorpus) s.corpus.push(input);
        else s.corpus[s.target.seeds.length + rng.below(options.maxCorpus - s.target.seeds.length)] = input;
      } else {
        s.signatures.set(sig, seen + 1);
      }
    }
    const t1 = performance.now();
    s.busyMs += t1 - t0;
    if (done >= nextProgress) {
      nextProgress += 1_000_000;
      options.progress?.(`fuzz: ${grouped(done)} inputs, ${((t1 - startedAt) / 1000).toFixed(0)} s, ${[...logs.values()].reduce((n, l) => n + l.count, 0)} defects`);
    }
    if (t1 >= deadline) {
      stoppedBy = 'time';
      break;
    }
  }
  const durationS = (performance.now() - startedAt) / 1000;
  return {
    seed: options.seed,
    inputs: done,
    stoppedBy: done >= options.inputs ? 'inputs' : stoppedBy,
    durationS,
    targets: states.map((s) => {
      const sorted = [...s.signatures].sort((a, b) => b[1] - a[1]);
      return {
        name: s.target.name,
        inputs: s.inputs,
        seeds: s.target.seeds.length,
        corpus: s.corpus.length,
        signatures: s.signatures.size,
        topSignatures: sorted.slice(0, 40),
        allSignatures: sorted.map(([sig]) => sig),
        defects: s.defects,
        inputsPerS: s.busyMs > 0 ? s.inputs / (s.busyMs / 1000) : 0,
      };
    }),
    defectCount: [...logs.values()].reduce((n, l) => n + l.count, 0),
    defects: [...logs.values()].flatMap((l) => l.messages),
  };
}

/** The figures as printed lines. */
export function formatFuzzReport(r: FuzzReport, verbose = false): string {
  const lines = [
    `fuzz battery: ${grouped(r.inputs)} inputs in ${r.durationS.toFixed(1)} s (${grouped(r.inputs / Math.max(r.durationS, 1e-9))}/s; stopped by ${r.stoppedBy}; seed ${r.seed})`,
  ];
  for (const t of r.targets) {
    lines.push(
      `  ${t.name.padEnd(8)} ${grouped(t.inputs).padStart(12)} inputs  ${grouped(t.inputsPerS).padStart(9)}/s  ${String(t.signatures).padStart(4)} signatures  corpus ${t.corpus} (${t.seeds} seeds)  defects ${t.defects}`,
    );
    if (verbose) for (const [sig, n] of t.topSignatures) lines.push(`      ${sig}: ${grouped(n)}`);
  }
  lines.push(`  defects: ${r.defectCount}`);
  for (const d of r.defects) lines.push(`    - ${d}`);
  return lines.join('\n');
}

const USAGE = `usage: node dist/bench/reliability/fuzz.js [--inputs N] [--max-minutes M] [--seed S] [--targets a,b] [--verbose] [--json]

  --inputs N        inputs over all targets (default ${grouped(DEFAULT_FUZZ_OPTIONS.inputs)})
  --max-minutes M   stop after M minutes even if fewer inputs ran (default ${DEFAULT_FUZZ_OPTIONS.maxDurationS / 60})
  --targets LIST    respond, ke, keyset, config (default: all, shares ${Object.entries(DEFAULT_FUZZ_WEIGHTS).map(([k, v]) => `${k} ${v}`).join(', ')})
  --seed S          PRNG seed (default: from the clock; printed)
  --verbose         also print the most frequent signatures of each target
  --json            print the report as one JSON object
`;

async function main(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      inputs: { type: 'string' },
      'max-minutes': { type: 'string' },
      targets: { type: 'string' },
      seed: { type: 'string' },
      verbose: { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  let weights = DEFAULT_FUZZ_WEIGHTS;
  if (values.targets !== undefined) {
    const names = values.targets.split(',').map((n) => n.trim());
    for (const n of names) if (!(n in DEFAULT_FUZZ_WEIGHTS)) throw new UsageError(`--targets: unknown target "${n}"`);
    weights = Object.fromEntries(names.map((n) => [n, DEFAULT_FUZZ_WEIGHTS[n] ?? 0]));
  }
  const report = runFuzz({
    ...DEFAULT_FUZZ_OPTIONS,
    inputs: numberOption(values.inputs, 'inputs', DEFAULT_FUZZ_OPTIONS.inputs, 1, 10_000_000_000),
    maxDurationS: numberOption(values['max-minutes'], 'max-minutes', DEFAULT_FUZZ_OPTIONS.maxDurationS / 60, 0.01, 24 * 60, false) * 60,
    seed: numberOption(values.seed, 'seed', defaultSeed(), 0, 0xffff_ffff),
    weights,
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(values.json === true ? `${JSON.stringify(report)}\n` : `${formatFuzzReport(report, values.verbose === true)}\n`);
  return report.defectCount === 0 ? 0 : 1;
}

if (isMain(import.meta.url)) runMain(USAGE, async (argv) => main(argv));
