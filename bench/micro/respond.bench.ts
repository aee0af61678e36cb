/**
 * respond() micro-benchmarks (src/core/responder.ts): one NTS request with AEAD 15 and a 100-octet
 * cookie carrying 0, 1 and 7 placeholders (so 1, 2 and 8 fresh cookies), an NTS NAK (unknown key), and
 * a plain NTPv4 request. The clock is a constant so only the responder is measured. Randomness is
 * node:crypto's randomFillSync behind createPooledFillRandom (one syscall-priced call per 4 KiB); the
 * one-cookie case is also run with a bare randomFillSync per draw to show what pooling saves.
 * Target (task brief): ≤ 25 µs per request with one cookie.
 * Every case runs on each AEAD backend (src/runtime/aead-openssl.ts): the JavaScript AEADs, then OpenSSL when
 * the native addon provides it.
 * Runs on import: `node dist/bench/micro/respond.bench.js` (BENCH_MIN_TIME_MS changes the time per case).
 */
import { randomFillSync } from 'node:crypto';
import { getAead } from '../../src/core/crypto/aead.js';
import { cookieLength, sealCookie } from '../../src/core/nts/cookie.js';
import { createKeyset } from '../../src/core/nts/keyset.js';
import { encodeNtsClientRequest } from '../../src/core/nts/ntp-fields.js';
import {
  Outcome,
  OUTCOME_NAMES,
  createPooledFillRandom,
  createResponderContext,
  respond,
} from '../../src/core/responder.js';
import { installAeadBackend } from '../../src/runtime/aead-openssl.js';
import { bench, printTable, type BenchResult } from './harness.js';

function runBackend(backend: 'javascript' | 'openssl', results: BenchResult[]): void {
  const fillRandom = (b: Uint8Array): void => void randomFillSync(b);
  const now = { seconds: 0xe9a1b2c3, fraction: 0x12345678 };
  const ctx = createResponderContext({
    keyset: createKeyset(1_700_000_000, fillRandom, { staleKeyCount: 7 }),
    serverFields: {
      leap: 0,
      stratum: 2,
      precision: -20,
      rootDelay: 0x10,
      rootDispersion: 0x20,
      referenceId: 0x7f000001,
      referenceTime: { seconds: 0xe9a1b000, fraction: 0 },
    },
    now: () => now,
    fillRandom: createPooledFillRandom(fillRandom),
    requireNts: false,
    acceptNtpVersions: [3, 4],
  });

  const aead = getAead(15); // the backend installed by the caller
  if (aead === undefined) throw new Error('bench: AEAD 15 missing');
  const c2sKey = new Uint8Array(32);
  const s2cKey = new Uint8Array(32);
  fillRandom(c2sKey);
  fillRandom(s2cKey);
  const cookie = new Uint8Array(cookieLength(15));
  sealCookie(ctx.keyset, 15, c2sKey, s2cKey, fillRandom, cookie, 0);

  function ntsRequest(placeholders: number, withCookie: Uint8Array = cookie): Uint8Array {
    const header = new Uint8Array(48);
    header[0] = 0x23;
    fillRandom(header.subarray(40));
    const uniqueId = new Uint8Array(32);
    fillRandom(uniqueId);
    const out = new Uint8Array(2048);
    const n = encodeNtsClientRequest(
      { header, uniqueId, cookie: withCookie, placeholders, aead: aead!, c2s: aead!.newCipher(c2sKey) },
      fillRandom,
      out,
    );
    return out.slice(0, n);
  }

  const plain = new Uint8Array(48);
  plain[0] = 0x23;
  const unknownKeyCookie = cookie.slice();
  unknownKeyCookie[0]! ^= 0xff;

  const cases: [string, Uint8Array, number][] = [
    ['respond NTS AEAD 15, 0 placeholders (1 cookie)', ntsRequest(0), Outcome.ntsTime],
    ['respond NTS AEAD 15, 1 placeholder (2 cookies)', ntsRequest(1), Outcome.ntsTime],
    ['respond NTS AEAD 15, 7 placeholders (8 cookies)', ntsRequest(7), Outcome.ntsTime],
    ['respond NTS NAK (unknown key)', ntsRequest(0, unknownKeyCookie), Outcome.nakCookieUnknownKey],
    ['respond plain NTPv4', plain, Outcome.ntpTime],
  ];

  const receive = { seconds: 0xe9a1b2c3, fraction: 0 };
  for (const [name, request, expected] of cases) {
    const out = new Uint8Array(request.length);
    const first = respond(request, receive, ctx, out);
    if (first.outcome !== expected) throw new Error(`bench: ${name} gave ${OUTCOME_NAMES[first.outcome]}`);
    results.push(
      bench(`${name} [${request.length} B] ${backend}`, () => {
        respond(request, receive, ctx, out);
      }),
    );
  }
  ctx.fillRandom = fillRandom;
  if (backend === 'javascript') {
    const [name, request] = cases[0]!;
    const out = new Uint8Array(request.length);
    results.push(bench(`${name}, unpooled randomFillSync`, () => void respond(request, receive, ctx, out)));
  }
}

const results: BenchResult[] = [];
for (const backend of ['javascript', 'openssl'] as const) {
  const selection = installAeadBackend(backend === 'openssl' ? 'auto' : 'javascript');
  if (selection.entries.find((e) => e.aeadId === 15)?.backend !== backend) {
    console.log(`respond: no ${backend} AEAD 15 (${selection.entries[0]?.reason ?? ''}); skipped`);
    continue;
  }
  runBackend(backend, results);
}
installAeadBackend('javascript');
printTable(results);
