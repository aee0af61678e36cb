/**
 * Client log micro-benchmarks (src/core/client-log.ts): what one NTP request costs the thread that answers
 * it (ClientLog.noteNtp: mask, seeded hash, bucket lock, find, counter updates, unlock), for a client
 * already in the log, for a stream of new clients that keep evicting (a full log under a spoofed-source
 * flood), on private and shared memory; plus the rate limiter's take for the same key as a yardstick (the
 * per-packet work the limiter already does when it is on), and the view's read of a full 4096-entry log.
 * Runs on import: `node dist/bench/micro/client-log.bench.js`.
 */
import { ClientLog, clientLogBytes, clientLogView } from '../../src/core/client-log.js';
import { parseIpAddress } from '../../src/core/ip.js';
import { RateLimiter, rateLimiterBytes } from '../../src/core/limiter.js';
import { Outcome } from '../../src/core/responder.js';
import { bench, printTable, type BenchResult } from './harness.js';

const SIZE = 4096;
const results: BenchResult[] = [];

function makeLog(shared: boolean): ClientLog {
  const bytes = clientLogBytes(SIZE);
  return ClientLog.create(shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes), SIZE, 0x1234567);
}

const v4 = new Uint32Array(4);
parseIpAddress('192.0.2.77', v4);
const v6 = new Uint32Array(4);
parseIpAddress('2001:db8:5:6::77', v6);
/** 65536 distinct IPv4 clients: far more than the log holds, so every note claims and evicts. */
const many = Array.from({ length: 65_536 }, (_, i) => {
  const w = new Uint32Array(4);
  parseIpAddress(`10.${i >> 8}.${i & 255}.1`, w);
  return w;
});

for (const shared of [false, true]) {
  const memory = shared ? 'shared' : 'private';
  const log = makeLog(shared);
  let now = 1_700_000_000_000;
  results.push(bench(`noteNtp, known IPv4 client, NTS reply (${memory})`, () => log.noteNtp(v4, 4, Outcome.ntsTime, 228, (now += 1))));
  results.push(bench(`noteNtp, known IPv6 /64, plain reply (${memory})`, () => log.noteNtp(v6, 6, Outcome.ntpTime, 48, (now += 1))));
  let i = 0;
  results.push(
    bench(`noteNtp, a new client each time, evicting (${memory})`, () => {
      log.noteNtp(many[i++ & 65_535] ?? v4, 4, Outcome.ntpTime, 48, (now += 1));
    }),
  );
}

const limiter = RateLimiter.create(new SharedArrayBuffer(rateLimiterBytes(SIZE)), SIZE, 99, {
  intervalMs: 1,
  burst: 1_000_000,
  leak: 0,
  ipv4PrefixBits: 32,
  ipv6PrefixBits: 64,
});
const scratch = new Uint32Array(4);
let t = 0;
results.push(
  bench('yardstick: RateLimiter.takeWords, same IPv4 client (shared)', () => {
    scratch.set(v4);
    limiter.takeWords(scratch, 4, (t += 1));
  }),
);

const full = makeLog(true);
for (let k = 0; k < 20_000; k++) full.noteNtp(many[k] ?? v4, 4, Outcome.ntpTime, 48, k + 1);
results.push(bench(`view: read() + clientLogView() of a full ${SIZE}-client log`, () => void clientLogView(full.read(), full.capacity, 30_000), { minTimeMs: 1000 }));

printTable(results);
