/**
 * A bounded dudect-style constant-time check of cookie opening (RFC 8915 §6 cookies, AEAD_AES_SIV_CMAC_256
 * under the master key) for each AEAD backend: the JavaScript AEAD and OpenSSL through the native addon.
 *
 * Method (Reparaz, Balasch, Verbauwhede, "Dude, is my code constant time?", 2017): two input classes, randomly
 * interleaved, one timing per call (process.hrtime.bigint around one open), then Welch's t-test between the
 * classes, on all timings and on timings cropped at a ladder of upper percentiles (as dudect does, to take out
 * interrupts and other long outliers). |t| above 4.5 is dudect's threshold for "probably not constant time";
 * the more measurements, the smaller the difference |t| can reveal.
 *
 * Experiments, each per backend:
 *  - ciphertext: fixed master key; class 0 always opens one fixed cookie ciphertext, class 1 a fresh random one
 *    (all fail authentication, so both classes take the same path; AES's inputs differ);
 *  - key: fixed cookie ciphertext; class 0 re-keys with one fixed master key, class 1 with a fresh random one
 *    before the open (both re-key, so both take the same path; the key differs).
 *
 * Usage: node dist/bench/ct/main.js [--measurements N] [--max-seconds S] [--backend js|openssl]... [--aa]
 * (`--aa` makes both classes random: the |t| an A/A run shows is the noise floor to compare against).
 * Defaults: 1,000,000 measurements per experiment and backend, at most 120 s per experiment.
 */
import { randomBytes } from 'node:crypto';
import { getJavaScriptAead, type AeadAlgorithm, type RekeyableAeadCipher } from '../../src/core/crypto/aead.js';
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

/** `--aa`: both classes random (an A/A run: what |t| the harness and the machine show with no real difference). */
const AA = process.argv.includes('--aa');

/** Input slots cycled through (a power of two). */
const POOL = 1 << 14;

/** dudect's crop ladder: the 1 − 0.5^(10(i+1)/N) percentiles, N = PERCENTILES. */
const PERCENTILES = 20;

interface Result {
  readonly measurements: number;
  readonly seconds: number;
  readonly tRaw: number;
  readonly tCroppedMax: number;
  readonly meanNs: readonly [number, number];
}

/**
 * Runs `measure(slot)` once per measurement over a ring of POOL input slots whose classes (`classOf`) were drawn
 * at random, then the t-tests. Both classes read their inputs from the ring (class 0 holds copies of the fixed
 * input), so memory and cache behaviour are the same for both; `measure` returns one operation's duration in ns.
 */
function runExperiment(measurements: number, maxSeconds: number, classOf: Uint8Array, measure: (slot: number) => number): Result {
  const warm = Math.min(10_000, Math.floor(measurements / 10));
  const warmTimes: number[] = [];
  for (let i = 0; i < warm; i++) warmTimes.push(measure(i & (POOL - 1)));
  warmTimes.sort((x, y) => x - y);
  const thresholds = Array.from({ length: PERCENTILES }, (_, i) => warmTimes[Math.min(warm - 1, Math.floor(warm * (1 - 0.5 ** ((10 * (i + 1)) / PERCENTILES))))] ?? Infinity);
  const raw: [Moments, Moments] = [new Moments(), new Moments()];
  const cropped = thresholds.map((): [Moments, Moments] => [new Moments(), new Moments()]);
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(maxSeconds * 1e9));
  let done = 0;
  for (let i = warm; i < measurements; i++) {
    const slot = i & (POOL - 1);
    const cls = classOf[slot] ?? 0;
    const ns = measure(slot);
    raw[cls]?.push(ns);
    for (let k = 0; k < PERCENTILES; k++) if (ns < (thresholds[k] ?? Infinity)) cropped[k]?.[cls]?.push(ns);
    done++;
    if ((done & 0xfff) === 0 && process.hrtime.bigint() > deadline) break;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  let tCroppedMax = 0;
  for (const [a, b] of cropped) {
    if (a.n + b.n < done / 10) continue; // dudect ignores tests with too few samples
    tCroppedMax = Math.max(tCroppedMax, Math.abs(welchT(a, b)));
  }
  return { measurements: done, seconds, tRaw: Math.abs(welchT(raw[0], raw[1])), tCroppedMax, meanNs: [raw[0].mean, raw[1].mean] };
}

/** A ring of POOL inputs of `length` octets: class 0 slots hold copies of one fixed value, class 1 slots random values. */
function inputRing(length: number): { readonly classOf: Uint8Array; readonly inputs: Uint8Array[] } {
  const classOf = new Uint8Array(randomBytes(POOL)).map((b) => b & 1);
  const fixed = new Uint8Array(randomBytes(length));
  const inputs = Array.from(classOf, (cls) => (cls === 0 && !AA ? fixed.slice() : new Uint8Array(randomBytes(length))));
  return { classOf, inputs };
}

/** Cookie-shaped inputs: key id (AD, 4 octets), 12-octet nonce, SIV tag + sealed keys for AEAD 15 (84 octets). */
const AD = new Uint8Array([0, 0, 0, 1]);
const NONCE = new Uint8Array(randomBytes(12));
const CIPHERTEXT_LENGTH = 84;

function ciphertextExperiment(alg: AeadAlgorithm, measurements: number, maxSeconds: number): Result {
  const cipher = alg.newCipher(new Uint8Array(randomBytes(32)));
  const { classOf, inputs } = inputRing(CIPHERTEXT_LENGTH);
  const out = new Uint8Array(CIPHERTEXT_LENGTH);
  return runExperiment(measurements, maxSeconds, classOf, (slot) => {
    const ct = inputs[slot] as Uint8Array;
    const t0 = process.hrtime.bigint();
    cipher.open(NONCE, AD, ct, out, 0);
    return Number(process.hrtime.bigint() - t0);
  });
}

function keyExperiment(alg: AeadAlgorithm, measurements: number, maxSeconds: number): Result {
  const cipher = alg.newCipher(new Uint8Array(randomBytes(32))) as RekeyableAeadCipher;
  const { classOf, inputs } = inputRing(32);
  const ct = new Uint8Array(randomBytes(CIPHERTEXT_LENGTH));
  const out = new Uint8Array(CIPHERTEXT_LENGTH);
  return runExperiment(measurements, maxSeconds, classOf, (slot) => {
    const key = inputs[slot] as Uint8Array;
    const t0 = process.hrtime.bigint();
    cipher.rekey(key);
    cipher.open(NONCE, AD, ct, out, 0);
    return Number(process.hrtime.bigint() - t0);
  });
}

function argument(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  const value = at >= 0 ? Number(process.argv[at + 1]) : fallback;
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} needs a positive number`);
  return value;
}

const measurements = Math.floor(argument('--measurements', 1_000_000));
const maxSeconds = argument('--max-seconds', 120);
const wanted = process.argv.flatMap((a, i) => (process.argv[i - 1] === '--backend' ? [a] : []));
const backends: [string, AeadAlgorithm | undefined][] = [
  ['js', getJavaScriptAead(15)],
  ['openssl', getOpenSslAeads().get(15)],
];
console.log(`# cookie opening, dudect-style Welch t-test${AA ? ' (A/A: both classes random)' : ''} (node ${process.version}, OpenSSL ${process.versions.openssl ?? '?'}); |t| > 4.5: timing depends on the class`);
console.log('| backend | experiment | measurements | seconds | mean ns (class 0 / 1) | abs t, all | max abs t, cropped |');
console.log('|---|---|--:|--:|--:|--:|--:|');
for (const [name, alg] of backends) {
  if (wanted.length > 0 && !wanted.includes(name)) continue;
  if (alg === undefined) {
    console.log(`| ${name} | (unavailable) | | | | | |`);
    continue;
  }
  for (const [label, run] of [['ciphertext', ciphertextExperiment], ['master key', keyExperiment]] as const) {
    const r = run(alg, measurements, maxSeconds);
    console.log(
      `| ${name} | ${label} | ${r.measurements} | ${r.seconds.toFixed(1)} | ${r.meanNs[0].toFixed(0)} / ${r.meanNs[1].toFixed(0)} | ${r.tRaw.toFixed(2)} | ${r.tCroppedMax.toFixed(2)} |`,
    );
  }
}
