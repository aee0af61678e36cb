/**
 * The server side of bench/storm: two native NTP threads on 127.0.0.1 (src/ntp/threads.ts), started in
 * their own process so the storm can load a sanitizer build of the addon into it (LD_PRELOAD libasan,
 * NTSD_NATIVE_ADDON). Reads the keyset from the file named by argv[2], prints `{"port":N}` once bound,
 * and on SIGTERM closes the threads, prints their counters as one JSON line and exits 0.
 */
import { readFileSync } from 'node:fs';
import { WallClock } from '../../src/runtime/clock.js';
import { startNtpThreads } from '../../src/ntp/threads.js';

const keysetPath = process.argv[2];
if (keysetPath === undefined) throw new Error('usage: server.js KEYSET_FILE');
const threads = await startNtpThreads({
  threads: 2,
  backend: 'native',
  listen: [{ host: '127.0.0.1', port: 0, family: 'IPv4' }],
  keysetBytes: new Uint8Array(readFileSync(keysetPath)),
  serverFields: { leap: 0, stratum: 2, precision: -20, rootDelay: 0, rootDispersion: 0, referenceId: 0x7f000001, referenceTime: { seconds: 0, fraction: 0 } },
  policies: [{ requireNts: false, acceptNtpVersions: [3, 4] }],
  clock: new WallClock(),
  reportIntervalMs: 100,
  onEvent: (event) => process.stderr.write(`storm server event: ${JSON.stringify(event, (_k, v: unknown) => (v instanceof Error ? v.message : v))}\n`),
});
process.stdout.write(`${JSON.stringify({ port: threads.addresses[0]?.port ?? 0 })}\n`);
process.once('SIGTERM', () => {
  void (async () => {
    // One more report interval so the last counts arrive.
    await new Promise((r) => setTimeout(r, 250));
    const stats = threads.stats();
    await threads.close();
    process.stdout.write(`${JSON.stringify(stats)}\n`);
    process.exit(0);
  })();
});
