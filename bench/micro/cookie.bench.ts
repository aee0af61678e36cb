/**
 * Cookie micro-benchmarks (src/core/nts/cookie.ts): sealing a 100-octet AEAD-15 cookie under the
 * current master key, opening it with the allocation-free openCookieInto (the responder's path) and
 * with openCookie (the allocating convenience form), plus opening under the oldest stale key and a
 * failed open (bad tag). Runs on import: `node dist/bench/micro/cookie.bench.js`.
 */
import { randomFillSync } from 'node:crypto';
import {
  CookieStatus,
  cookieLength,
  createCookieOpenScratch,
  openCookie,
  openCookieInto,
  sealCookie,
} from '../../src/core/nts/cookie.js';
import { createKeyset, rotateKeyset } from '../../src/core/nts/keyset.js';
import { bench, printTable, type BenchResult } from './harness.js';

const fillRandom = (b: Uint8Array): void => void randomFillSync(b);
let keyset = createKeyset(1_700_000_000, fillRandom, { staleKeyCount: 7 });
const c2s = new Uint8Array(32);
const s2c = new Uint8Array(32);
fillRandom(c2s);
fillRandom(s2c);

const oldest = new Uint8Array(cookieLength(15));
sealCookie(keyset, 15, c2s, s2c, fillRandom, oldest, 0);
for (let i = 1; i <= 7; i++) keyset = rotateKeyset(keyset, 1_700_000_000 + i * 86_400, fillRandom);

const cookie = new Uint8Array(cookieLength(15));
sealCookie(keyset, 15, c2s, s2c, fillRandom, cookie, 0);
const broken = cookie.slice();
broken[40]! ^= 1;
const scratch = createCookieOpenScratch();
const out = new Uint8Array(cookie.length);

function mustOpen(c: Uint8Array): void {
  if (openCookieInto(keyset, c, scratch) !== CookieStatus.ok) throw new Error('bench: cookie did not open');
}
mustOpen(oldest);

const results: BenchResult[] = [
  bench('sealCookie AEAD 15 (100 B)', () => void sealCookie(keyset, 15, c2s, s2c, fillRandom, out, 0)),
  bench('openCookieInto current key', () => mustOpen(cookie)),
  bench('openCookieInto stale key (age 7)', () => mustOpen(oldest)),
  bench('openCookie (allocating) current key', () => void openCookie(keyset, cookie)),
  bench('openCookieInto bad tag', () => void openCookieInto(keyset, broken, scratch)),
];
printTable(results);
