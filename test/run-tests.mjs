// Runs every compiled test file under dist/test with node:test.
// A script rather than a glob: `node --test` takes directories on Node 20 but globs on 22+,
// and this works the same on every supported version.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const root = new URL('../dist/test/', import.meta.url).pathname;
const only = process.argv.slice(2);

function walk(dir) {
  const found = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...walk(path));
    else if (name.endsWith('.test.js')) found.push(path);
  }
  return found;
}

// Only tests whose TypeScript source still exists: tsc never deletes the output of a removed or moved file.
const sourceOf = (f) => f.replace('/dist/test/', '/test/').replace(/\.js$/, '.ts');
let files = walk(root).filter((f) => existsSync(sourceOf(f)));
if (only.length > 0) files = files.filter((f) => only.some((o) => f.includes(o)));
if (files.length === 0) {
  console.error('run-tests: no test files found under dist/test (did tsc run?)');
  process.exit(1);
}
// The interop tests run real chrony (4.3, and 4.6.1 in a Debian 13 root) and NTPsec, the monitoring tests real Prometheus and promtool. On a fresh
// machine (root with apt-get, as CI is) install them first, so `npm test` after a plain clone runs the whole
// suite; elsewhere the script says what is missing.
const trixie = process.env.NTSD_TRIXIE_ROOT ?? '/var/tmp/trixie-root';
const peers = ['/usr/sbin/chronyd', '/opt/ntpsec-root/usr/sbin/ntpd', '/usr/bin/prometheus', '/usr/bin/promtool', '/usr/sbin/haproxy', `${trixie}/usr/sbin/chronyd`];
if (!peers.every((p) => existsSync(p))) {
  const script = new URL('./install-peers.sh', import.meta.url).pathname;
  console.log(`run-tests: chrony, NTPsec, prometheus or promtool missing; running ${script}`);
  const install = spawnSync('bash', [script], { stdio: 'inherit' });
  if (install.status !== 0) console.error('run-tests: peers not installed; the interop tests will fail and say why');
}
const result = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
