/**
 * Runs one KE flood (bench/flood/ke-floods.ts startKeFlood) on its own thread, so the attacker's event
 * loop is not the honest client's: on a real network they are different machines. Messages: 'open' →
 * {open}, 'stop' → {stats}.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { startKeFlood, type KeFloodOptions } from './ke-floods.js';

/** Sets this thread's nice value (Linux: per thread, through its TID); best effort. */
function niceThisThread(niceness: number): void {
  try {
    const link = readlinkSync('/proc/thread-self');
    setPriority(Number(link.slice(link.lastIndexOf('/') + 1)), niceness);
  } catch {
    // not Linux, or not allowed: the flood runs at the caller's priority
  }
}

const port = parentPort;
if (port !== null) {
  const options = workerData as KeFloodOptions;
  if (options.attackerNice !== undefined && options.attackerNice > 0) niceThisThread(options.attackerNice);
  const flood = startKeFlood(options);
  port.on('message', (message: unknown) => {
    if (message === 'open') port.postMessage({ open: flood.open() });
    if (message === 'stop') {
      port.postMessage({ stats: flood.stop() });
      port.close();
    }
  });
}
