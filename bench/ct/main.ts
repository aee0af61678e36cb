/**
 * A bounded dudect-style constant-time check of cookie opening (RFC 8915 §6 cookies, AEAD_AES_SIV_CMAC_256
 * under the master key) for each AEAD backend: the JavaScript AEAD and OpenSSL through the native addon.
 *
 * Method (Reparaz, Balasch, Verbauwhede, "Dude, is my code constant time?", 2017, and its reference code):
 *  - measurements run in batches; before each batch every input is prepared in one array, one slot per
 *    measurement, and each measurement's class is drawn at random. Class 0 slots hold copies of the fixed
 *    value, class 1 slots fresh random values: both classes read their input from the same array positions,
 *    through the same code, so memory footprint and cache behaviour do not depend on the class, only the values;
 *  - one timing per call (process.hrtime.bigint around one operation), written to a preallocated array; the
 *    statistics run after the batch, outside the timed code;
 *  - Welch's t-test between the classes on all timings, and on timings cropped below a ladder of upper
 *    percentiles (dudect's 1 − 0.5^(10(i+1)/20)) that are computed once, from a calibration batch of both classes
 *    mixed that is then discarded; each crop level applies the same threshold to both classes. A first batch warms
 *    the JIT and is discarded too. |t| above 4.5 is dudect's threshold for "probably not constant time".
 *
 * Experiments, each per backend:
 *  - ciphertext: fixed master key; class 0 opens the fixed cookie ciphertext, class 1 a random one (all fail
 *    authentication, so both take the same path; only AES's inputs differ);
 *  - master key: fixed cookie ciphertext; class 0 re-keys with the fixed master key, class 1 with a random one,
 *    right before the open (both re-key, so both take the same path; only the key differs);
 *  - and for each, an A/A control: both classes random (the |t| the harness and the machine show with no real
 *    difference).
 * Two baselines (`--baseline`) show the instrument itself on the same schedule, fixed vs random: an empty timed
 * region, and one N-API call into the addon that does no cryptography (an open of a 15-octet ciphertext, shorter
 * than the tag: the addon checks the regions and returns -1).
 *
 * Usage: node dist/bench/ct/main.js [--measurements N] [--max-seconds S] [--backend js|openssl]... [--no-aa] [--baseline]
 * Defaults: 1,000,000 measurements per experiment and backend (plus the calibration and warm-up batches), at
 * most 120 s per experiment.
 */
import { randomBytes, randomFillSync } from 'node:crypto';
import { getJavaScriptAead, isRekeyable, openRegions, type AeadAlgorithm, type AeadCipher } from '../../src/core/crypto/aead.js';
import { getOpenSslAeads } from '../../src/runtime/aead-openssl.js';

/** Online mean and variance (Welford). */
class Moments {
  n = 0;
  mean = 0;
  m2 = 0;
  push(x: number): void {
    this.n++;
    const d = x - this.mean;
    this.mean += d / this.n;
    this.m2 += d * (x - this.mean);
  }
  variance(): number {
    return this.n > 1 ? this.m2 / (this.n - 1) : 0;
  }
}

/** Welch's t between two classes; 0 while either class has fewer than 2 samples. */
function welchT(a: Moments, b: Moments): number {
  if (a.n < 2 || b.n < 2) return 0;
  const se = Math.sqrt(a.variance() / a.n + b.variance() / b.n);
  return se === 0 ? 0 : (a.mean - b.mean) / se;
}

/** Measurements per batch: inputs for one batch are prepared at once. */
const BATCH = 1 << 16;
/** dudect's crop ladder has this many levels. */
const PERCENTILES = 20;

/** One experiment: how long one input slot's operation takes, and how to fill a slot. */
interface Experiment {
  /** Octets of input per measurement. */
  readonly inputLength: number;
  /** Runs the operation on inputs[slot·inputLength ..] and returns its duration in ns. */
  measure(inputs: Uint8Array, slot: number): number;
}

interface Result {
  readonly measurements: number;
  readonly seconds: number;
  readonly tAll: number;
  readonly tCroppedMax: number;
  readonly meanNs: readonly [number, number];
}

/** Fills one batch: a random class per slot, class 0 slots get `fixed` (or random in an A/A run), class 1 random. */
function prepare(inputs: Uint8Array, classes: Uint8Array, fixed: Uint8Array, aa: boolean): void {
  randomFillSync(classes);
  randomFillSync(inputs);
  const n = fixed.length;
  for (let i = 0; i < classes.length; i++) {
    classes[i] = (classes[i] ?? 0) & 1;
    if (classes[i] === 0 && !aa) inputs.set(fixed, i * n);
  }
}

function runBatch(e: Experiment, inputs: Uint8Array, times: Float64Array): void {
  for (let i = 0; i < times.length; i++) times[i] = e.measure(inputs, i);
}

function run(e: Experiment, fixed: Uint8Array, aa: boolean, measurements: number, maxSeconds: number): Result {
  const inputs = new Uint8Array(BATCH * e.inputLength);
  const classes = new Uint8Array(BATCH);
  const times = new Float64Array(BATCH);
  // Warm-up batch (JIT, caches), then the calibration batch whose distribution sets the crop thresholds.
  prepare(inputs, classes, fixed, aa);
  runBatch(e, inputs, times);
  prepare(inputs, classes, fixed, aa);
  runBatch(e, inputs, times);
  const sorted = Float64Array.from(times).sort();
  const thresholds = Array.from({ length: PERCENTILES }, (_, i) => sorted[Math.floor(BATCH * (1 - 0.5 ** ((10 * (i + 1)) / PERCENTILES)))] ?? Infinity);
  const all: [Moments, Moments] = [new Moments(), new Moments()];
  const cropped = thresholds.map((): [Moments, Moments] => [new Moments(), new Moments()]);
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(maxSeconds * 1e9));
  let done = 0;
  while (done < measurements && process.hrtime.bigint() < deadline) {
    prepare(inputs, classes, fixed, aa);
    runBatch(e, inputs, times);
    const n = Math.min(BATCH, measurements - done);
    for (let i = 0; i < n; i++) {
      const cls = classes[i] ?? 0;
      const t = times[i] ?? 0;
      all[cls]?.push(t);
      for (let k = 0; k < PERCENTILES; k++) if (t < (thresholds[k] ?? Infinity)) cropped[k]?.[cls]?.push(t);
    }
    done += n;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  let tCroppedMax = 0;
  for (const [a, b] of cropped) {
    if (a.n + b.n < done / 10) continue; // too few samples below this threshold to judge
    tCroppedMax = Math.max(tCroppedMax, Math.abs(welchT(a, b)));
  }
  return { measurements: done, seconds, tAll: Math.abs(welchT(all[0], all[1])), tCroppedMax, meanNs: [all[0].mean, all[1].mean] };
}

/** Cookie-shaped inputs: key id (AD, 4 octets) and 12-octet nonce in `front`; SIV tag + sealed keys for AEAD 15 (84). */
const FRONT = new Uint8Array(randomBytes(16));
const NONCE_AT = 4;
const NONCE_LENGTH = 12;
const AD_LENGTH = 4;
const CIPHERTEXT_LENGTH = 84;
const OUT = new Uint8Array(CIPHERTEXT_LENGTH);

function ciphertextExperiment(cipher: AeadCipher): Experiment {
  return {
    inputLength: CIPHERTEXT_LENGTH,
    measure(inputs, slot) {
      const t0 = process.hrtime.bigint();
      openRegions(cipher, FRONT, NONCE_AT, NONCE_LENGTH, 0, AD_LENGTH, inputs, slot * CIPHERTEXT_LENGTH, CIPHERTEXT_LENGTH, OUT, 0);
      return Number(process.hrtime.bigint() - t0);
    },
  };
}

function keyExperiment(cipher: AeadCipher, ciphertext: Uint8Array): Experiment {
  if (!isRekeyable(cipher)) throw new Error('bench/ct: the cipher cannot re-key');
  const keyView: Uint8Array[] = [];
  let viewsOf: Uint8Array | undefined;
  return {
    inputLength: 32,
    measure(inputs, slot) {
      if (viewsOf !== inputs) {
        // One view per slot, made once for both classes alike, so that the timed code makes none.
        viewsOf = inputs;
        keyView.length = 0;
        for (let i = 0; i < BATCH; i++) keyView.push(inputs.subarray(32 * i, 32 * i + 32));
      }
      const key = keyView[slot] as Uint8Array;
      const t0 = process.hrtime.bigint();
      cipher.rekey(key);
      openRegions(cipher, FRONT, NONCE_AT, NONCE_LENGTH, 0, AD_LENGTH, ciphertext, 0, CIPHERTEXT_LENGTH, OUT, 0);
      return Number(process.hrtime.bigint() - t0);
    },
  };
}

function emptyExperiment(): Experiment {
  let sink = 0;
  return {
    inputLength: 1,
    measure(inputs, slot) {
      const t0 = process.hrtime.bigint();
      sink ^= inputs[slot] ?? 0;
      return Number(process.hrtime.bigint() - t0) + (sink & 0);
    },
  };
}

function argument(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  const value = at >= 0 ? Number(process.argv[at + 1]) : fallback;
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} needs a positive number`);
  return value;
}

const measurements = Math.floor(argument('--measurements', 1_000_000));
const maxSeconds = argument('--max-seconds', 120);
const withAa = !process.argv.includes('--no-aa');
const wanted = process.argv.flatMap((a, i) => (process.argv[i - 1] === '--backend' ? [a] : []));
const backends: [string, AeadAlgorithm | undefined][] = [
  ['js', getJavaScriptAead(15)],
  ['openssl', getOpenSslAeads().get(15)],
];

function row(backend: string, label: string, r: Result): void {
  console.log(
    `| ${backend} | ${label} | ${r.measurements} | ${r.seconds.toFixed(1)} | ${r.meanNs[0].toFixed(0)} / ${r.meanNs[1].toFixed(0)} | ${r.tAll.toFixed(2)} | ${r.tCroppedMax.toFixed(2)} |`,
  );
}

console.log(`# cookie opening, dudect-style Welch t-test (node ${process.version}, OpenSSL ${process.versions.openssl ?? '?'}); |t| > 4.5: timing depends on the class`);
console.log('| backend | experiment | measurements | seconds | mean ns (class 0 / 1) | abs t, all | max abs t, cropped |');
console.log('|---|---|--:|--:|--:|--:|--:|');
if (process.argv.includes('--baseline')) {
  row('-', 'empty timed region (fixed vs random)', run(emptyExperiment(), new Uint8Array([0x5a]), false, measurements, maxSeconds));
  const alg = getOpenSslAeads().get(15);
  if (alg !== undefined) {
    const cipher = alg.newCipher(new Uint8Array(randomBytes(32)));
    const refused: Experiment = {
      inputLength: 15,
      measure(inputs, slot) {
        const t0 = process.hrtime.bigint();
        openRegions(cipher, FRONT, NONCE_AT, NONCE_LENGTH, 0, AD_LENGTH, inputs, slot * 15, 15, OUT, 0);
        return Number(process.hrtime.bigint() - t0);
      },
    };
    row('openssl', 'N-API call, no work (15-octet ciphertext)', run(refused, new Uint8Array(randomBytes(15)), false, measurements, maxSeconds));
  }
}
for (const [name, alg] of backends) {
  if (wanted.length > 0 && !wanted.includes(name)) continue;
  if (alg === undefined) {
    console.log(`| ${name} | (unavailable) | | | | | |`);
    continue;
  }
  const fixedCiphertext = new Uint8Array(randomBytes(CIPHERTEXT_LENGTH));
  const fixedKey = new Uint8Array(randomBytes(32));
  const experiments: [string, () => Experiment, Uint8Array][] = [
    ['ciphertext', () => ciphertextExperiment(alg.newCipher(fixedKey)), fixedCiphertext],
    ['master key', () => keyExperiment(alg.newCipher(fixedKey), fixedCiphertext), fixedKey],
  ];
  for (const [label, make, fixed] of experiments) {
    row(name, label, run(make(), fixed, false, measurements, maxSeconds));
    if (withAa) row(name, `${label}, A/A control`, run(make(), fixed, true, measurements, maxSeconds));
  }
}
