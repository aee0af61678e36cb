/**
 * AEAD micro-benchmarks at NTS sizes, for every AEAD in the registry, plus noble's high-level
 * `aessiv` / `gcmsiv` on the same shapes as the baseline the keyed implementations replace.
 *
 * Shapes (RFC 8915 §5.6 with a 32-octet Unique Identifier and ~100-octet cookies):
 *  (a) request verify: AD 188 octets (header + UID EF + cookie EF), empty plaintext;
 *  (b) reply seal: AD 84 octets (header + UID EF), plaintext 104 (one cookie EF) and 832 (eight);
 *  (c) cookie master-key seal/open: AD 4, plaintext 68 (AEAD id + C2S + S2C for AEAD 15), long-lived key;
 *  plus newCipher() cost and two composites of one NTS request: open(a) + open(c) + seal(c) + seal(b, 104),
 *  and the same with the two per-request newCipher() (or rekey()) calls for C2S and S2C.
 * Each AEAD runs on both backends: the JavaScript one (`js`) and OpenSSL through the native addon (`openssl`,
 * when built; src/runtime/aead-openssl.ts).
 * Runs on import: `node dist/bench/micro/aead.bench.js` (BENCH_MIN_TIME_MS shortens or lengthens each case).
 */

import { randomBytes } from 'node:crypto';
import { aessiv, gcmsiv } from '@noble/ciphers/aes.js';
import { getJavaScriptAead, isRekeyable, SUPPORTED_AEAD_IDS } from '../../src/core/crypto/aead.js';
import { getOpenSslAeads } from '../../src/runtime/aead-openssl.js';
import type { AeadAlgorithm, AeadCipher } from '../../src/core/crypto/aead.js';
import { bench, printTable } from './harness.js';
import type { BenchResult } from './harness.js';

const SHORT_NAMES: Record<number, string> = { 15: 'SIV-CMAC-256', 16: 'SIV-CMAC-384', 17: 'SIV-CMAC-512', 30: 'AES-128-GCM-SIV' };

function bytes(n: number): Uint8Array {
  return new Uint8Array(randomBytes(n));
}

interface Shape {
  readonly label: string;
  readonly ad: Uint8Array;
  readonly pt: Uint8Array;
}

const SHAPES: readonly Shape[] = [
  { label: '(a) request AD 188 / pt 0', ad: bytes(188), pt: bytes(0) },
  { label: '(b) reply AD 84 / pt 104', ad: bytes(84), pt: bytes(104) },
  { label: '(b) reply AD 84 / pt 832', ad: bytes(84), pt: bytes(832) },
  { label: '(c) cookie AD 4 / pt 68', ad: bytes(4), pt: bytes(68) },
];

function sealed(c: AeadCipher, nonce: Uint8Array, s: Shape): Uint8Array {
  const out = new Uint8Array(s.pt.length + 16);
  c.seal(nonce, s.ad, s.pt, out, 0);
  return out;
}

function benchAlgorithm(alg: AeadAlgorithm, backend: string, results: BenchResult[]): void {
  const tag = `${alg.aeadId} ${SHORT_NAMES[alg.aeadId] ?? alg.name} ${backend}`;
  const key = bytes(alg.keyLength);
  const nonce = bytes(alg.nonceLength);
  const c = alg.newCipher(key);
  const out = new Uint8Array(2048);
  results.push(bench(`${tag} newCipher`, () => void alg.newCipher(key)));
  for (const s of SHAPES) {
    const ct = sealed(c, nonce, s);
    results.push(bench(`${tag} seal ${s.label}`, () => void c.seal(nonce, s.ad, s.pt, out, 0)));
    results.push(
      bench(`${tag} open ${s.label}`, () => {
        if (c.open(nonce, s.ad, ct, out, 0) < 0) throw new Error('bench: open failed');
      }),
    );
  }
  // One NTS request as the server sees it: verify the request, open its cookie, mint one new cookie, seal the reply.
  const [req, reply104, , cookie] = SHAPES;
  if (!req || !reply104 || !cookie) throw new Error('bench: shapes');
  const reqCt = sealed(c, nonce, req);
  const cookieCt = sealed(c, nonce, cookie);
  results.push(
    bench(`${tag} NTS request: 4 AEAD ops (2 open + 2 seal)`, () => {
      c.open(nonce, req.ad, reqCt, out, 0);
      c.open(nonce, cookie.ad, cookieCt, out, 0);
      c.seal(nonce, cookie.ad, cookie.pt, out, 0);
      c.seal(nonce, reply104.ad, reply104.pt, out, 0);
    }),
  );
  // As the responder does it: the cookie key is long-lived, C2S and S2C come out of the cookie, so two keyed
  // instances are created per request.
  const c2s = bytes(alg.keyLength);
  const s2c = bytes(alg.keyLength);
  const reqCtC2s = sealed(alg.newCipher(c2s), nonce, req);
  results.push(
    bench(`${tag} NTS request: 4 AEAD ops + 2 newCipher`, () => {
      c.open(nonce, cookie.ad, cookieCt, out, 0);
      if (alg.newCipher(c2s).open(nonce, req.ad, reqCtC2s, out, 0) < 0) throw new Error('bench: open failed');
      c.seal(nonce, cookie.ad, cookie.pt, out, 0);
      alg.newCipher(s2c).seal(nonce, reply104.ad, reply104.pt, out, 0);
    }),
  );
  const perThread = alg.newCipher(c2s);
  if (isRekeyable(perThread)) {
    results.push(
      bench(`${tag} NTS request: 4 AEAD ops + 2 rekey`, () => {
        c.open(nonce, cookie.ad, cookieCt, out, 0);
        perThread.rekey(c2s);
        if (perThread.open(nonce, req.ad, reqCtC2s, out, 0) < 0) throw new Error('bench: open failed');
        c.seal(nonce, cookie.ad, cookie.pt, out, 0);
        perThread.rekey(s2c);
        perThread.seal(nonce, reply104.ad, reply104.pt, out, 0);
      }),
    );
  }
}

function benchNobleBaseline(results: BenchResult[]): void {
  const sivKey = bytes(32);
  const sivNonce = bytes(16);
  const gcmKey = bytes(16);
  const gcmNonce = bytes(12);
  for (const s of SHAPES.slice(0, 2)) {
    const sivCt = aessiv(sivKey, s.ad, sivNonce).encrypt(s.pt);
    results.push(bench(`noble aessiv-256 seal ${s.label}`, () => void aessiv(sivKey, s.ad, sivNonce).encrypt(s.pt)));
    results.push(bench(`noble aessiv-256 open ${s.label}`, () => void aessiv(sivKey, s.ad, sivNonce).decrypt(sivCt)));
    const gcmCt = gcmsiv(gcmKey, gcmNonce, s.ad).encrypt(s.pt);
    results.push(bench(`noble gcmsiv-128 seal ${s.label}`, () => void gcmsiv(gcmKey, gcmNonce, s.ad).encrypt(s.pt)));
    results.push(bench(`noble gcmsiv-128 open ${s.label}`, () => void gcmsiv(gcmKey, gcmNonce, s.ad).decrypt(gcmCt)));
  }
  const [req, reply104, , cookie] = SHAPES;
  if (!req || !reply104 || !cookie) throw new Error('bench: shapes');
  const reqCt = aessiv(sivKey, req.ad, sivNonce).encrypt(req.pt);
  const cookieCt = aessiv(sivKey, cookie.ad, sivNonce).encrypt(cookie.pt);
  results.push(
    bench('noble aessiv-256 NTS request: 4 AEAD ops (2 open + 2 seal)', () => {
      aessiv(sivKey, req.ad, sivNonce).decrypt(reqCt);
      aessiv(sivKey, cookie.ad, sivNonce).decrypt(cookieCt);
      aessiv(sivKey, cookie.ad, sivNonce).encrypt(cookie.pt);
      aessiv(sivKey, reply104.ad, sivNonce).encrypt(reply104.pt);
    }),
  );
}

const results: BenchResult[] = [];
const openssl = getOpenSslAeads();
for (const id of SUPPORTED_AEAD_IDS) {
  const js = getJavaScriptAead(id);
  if (js) benchAlgorithm(js, 'js', results);
  const ossl = openssl.get(id);
  if (ossl) benchAlgorithm(ossl, 'openssl', results);
}
benchNobleBaseline(results);
console.log(`\n## AEAD (node ${process.version}, ${process.arch})\n`);
printTable(results);
