/**
 * Runs every bench/micro/*.bench.js next to this file, one after another (each module runs on import).
 * `node dist/bench/micro/run.js [filter...]` — optional substrings select files by name.
 */

import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2);
const files = readdirSync(here)
  .filter((f) => f.endsWith('.bench.js'))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error(`bench: no *.bench.js files in ${here}`);
  process.exitCode = 1;
}
for (const f of files) {
  console.log(`\n# ${f}`);
  await import(pathToFileURL(join(here, f)).href);
}
