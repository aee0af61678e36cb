/**
 * Enforces the import rules of ARCHITECTURE.md: a pure core, thin shells, ciphers in one place.
 * It reads every src/**\/*.ts file as text, so a broken rule fails here before it reaches review.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest ancestor of this file (compiled under dist/test/) holding tsconfig.json, else cwd. */
function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'tsconfig.json')) && existsSync(join(dir, 'src'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
}
const repoRoot = findRepoRoot();
const srcRoot = join(repoRoot, 'src');

interface SourceFile {
  /** Path relative to src/, with forward slashes. */
  readonly path: string;
  readonly text: string;
  /** Import specifiers (static, dynamic, re-export, side-effect). */
  readonly imports: readonly string[];
}

function listTs(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) out.push(...listTs(full));
    else if (name.endsWith('.ts')) out.push(full);
  }
  return out;
}

const IMPORT_RE = /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;])import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

function readSources(): SourceFile[] {
  return listTs(srcRoot).map((full) => {
    const text = readFileSync(full, 'utf8');
    const imports: string[] = [];
    for (const m of text.matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2] ?? m[3];
      if (spec !== undefined) imports.push(spec);
    }
    return { path: relative(srcRoot, full).split(sep).join('/'), text, imports };
  });
}

/** Resolves a relative import to a src-relative path ("core/bytes.ts"), or undefined for packages/builtins. */
function target(file: SourceFile, spec: string): string | undefined {
  if (!spec.startsWith('.')) return undefined;
  const abs = resolve(srcRoot, dirname(file.path), spec).replace(/\.js$/, '.ts');
  return relative(srcRoot, abs).split(sep).join('/');
}

const sources = readSources();
const CIPHER_PACKAGES = /^@noble\//;

test('the source tree is not empty (the rules below would pass vacuously)', () => {
  assert.ok(sources.some((f) => f.path.startsWith('core/')), 'no files under src/core');
  assert.ok(sources.length >= 10, `only ${sources.length} source files found`);
});

test('src/core imports nothing outside src/core: no node builtins, no I/O, no logging', () => {
  const broken: string[] = [];
  for (const f of sources.filter((s) => s.path.startsWith('core/'))) {
    for (const spec of f.imports) {
      const t = target(f, spec);
      if (t === undefined) {
        if (!(CIPHER_PACKAGES.test(spec) && f.path.startsWith('core/crypto/'))) broken.push(`${f.path} imports ${spec}`);
      } else if (!t.startsWith('core/')) {
        broken.push(`${f.path} imports ${spec} (outside core)`);
      }
    }
    if (/\b(Date\.now|Math\.random|process\.|setTimeout|setInterval|setImmediate)\b/.test(f.text.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, ''))) {
      broken.push(`${f.path} uses a clock, randomness, timers or process directly`);
    }
  }
  assert.deepEqual(broken, []);
});

test('cipher packages are imported only in src/core/crypto', () => {
  const broken = sources.flatMap((f) =>
    f.imports.filter((spec) => CIPHER_PACKAGES.test(spec) && !f.path.startsWith('core/crypto/')).map((s) => `${f.path} imports ${s}`),
  );
  assert.deepEqual(broken, []);
});

test('pool/worker.ts imports only core, runtime, pool/protocol and clock', () => {
  const worker = sources.find((f) => f.path === 'pool/worker.ts');
  if (worker === undefined) return assert.fail('src/pool/worker.ts is missing');
  const allowedPackages = new Set(['node:worker_threads', 'node:crypto']);
  const broken = worker.imports.filter((spec) => {
    const t = target(worker, spec);
    if (t === undefined) return !allowedPackages.has(spec);
    return !(t.startsWith('core/') || t.startsWith('runtime/') || t === 'pool/protocol.ts' || t === 'clock.ts');
  });
  assert.deepEqual(broken, []);
});

/** The io/ subdirectory holding `path` ("io/ke/server.ts" → "io/ke/"), or undefined for a file directly in io/. */
function ioModuleDir(path: string): string | undefined {
  const parts = path.split('/');
  return parts.length > 2 && parts[0] === 'io' ? `${parts[0]}/${parts[1]}/` : undefined;
}

test('io modules do not import each other (daemon.ts wires them); files of one io/<module>/ directory may', () => {
  const broken: string[] = [];
  for (const f of sources.filter((s) => s.path.startsWith('io/'))) {
    const ownDir = ioModuleDir(f.path);
    for (const spec of f.imports) {
      const t = target(f, spec);
      if (t?.startsWith('io/') === true && (ownDir === undefined || !t.startsWith(ownDir))) broken.push(`${f.path} imports ${spec}`);
      if (t?.startsWith('config/') === true && t !== 'config/schema.ts') broken.push(`${f.path} imports ${spec} (config types only)`);
    }
  }
  assert.deepEqual(broken, []);
});

test('the io module directories exist and are covered by the rule above', () => {
  // io/ke/ holds the NTS-KE server, one file per role; it must stay a leaf that no other io file reaches into.
  const keFiles = sources.filter((s) => s.path.startsWith('io/ke/')).map((s) => s.path);
  for (const role of ['io/ke/server.ts', 'io/ke/listener.ts', 'io/ke/session.ts', 'io/ke/thread.ts']) {
    assert.ok(keFiles.includes(role), `${role} is missing`);
  }
  const reachingIn = sources.filter((f) => !f.path.startsWith('io/') && f.path !== 'ke-listeners.ts' && f.imports.some((spec) => target(f, spec)?.startsWith('io/ke/') === true));
  assert.deepEqual(reachingIn.map((f) => f.path), [], 'only ke-listeners.ts wires the KE server');
});

test('io/pool-ke/ holds the pool front end; only pool-ke-listener.ts wires it, and it does not reach into io/ke/', () => {
  const files = sources.filter((s) => s.path.startsWith('io/pool-ke/')).map((s) => s.path);
  for (const role of ['io/pool-ke/front-end.ts', 'io/pool-ke/upstream.ts']) assert.ok(files.includes(role), `${role} is missing`);
  const reachingIn = sources.filter(
    (f) => !f.path.startsWith('io/pool-ke/') && f.path !== 'pool-ke-listener.ts' && f.imports.some((spec) => target(f, spec)?.startsWith('io/pool-ke/') === true),
  );
  assert.deepEqual(reachingIn.map((f) => f.path), [], 'only pool-ke-listener.ts wires the front end');
  // The front end's protocol decisions live in the pure core (core/pool-front.ts, core/ke-pool.ts).
  assert.ok(sources.some((s) => s.path === 'core/pool-front.ts') && sources.some((s) => s.path === 'core/ke-pool.ts'));
});

test('config/schema.ts does no I/O and does not parse TOML', () => {
  const schema = sources.find((f) => f.path === 'config/schema.ts');
  if (schema === undefined) return assert.fail('src/config/schema.ts is missing');
  const broken = schema.imports.filter((s) => /^(node:)?(fs|fs\/promises|net|dgram|tls)$|^smol-toml$/.test(s));
  assert.deepEqual(broken, []);
});

test('ntp/* threads compute and count: only core, runtime, pool, ntp, clock, errors and udp-socket; never obs, io, config or loggers', () => {
  const allowed = /^(core\/|runtime\/|pool\/|ntp\/|clock\.ts$|errors\.ts$|udp-socket\.ts$)/;
  const broken: string[] = [];
  for (const f of sources.filter((s) => s.path.startsWith('ntp/'))) {
    assert.ok(!/['"]pino['"]|['"]prom-client['"]/.test(f.text), `${f.path} must not log or own metrics`);
    for (const spec of f.imports) {
      const t = target(f, spec);
      if (t === undefined) {
        if (!spec.startsWith('node:')) broken.push(`${f.path} imports ${spec}`);
      } else if (!allowed.test(t)) {
        broken.push(`${f.path} imports ${spec}`);
      }
    }
  }
  assert.ok(sources.some((s) => s.path === 'ntp/thread-native.ts'), 'the rule has files to check');
  assert.deepEqual(broken, []);
});

test('the native addon is loaded in one place (ntp/native.ts), and its C sources stay small, one concern per file', () => {
  const loaders = sources.filter((s) => /createRequire|process\.dlopen|\.node['"]/.test(s.text) && s.path !== 'ntp/native.ts');
  assert.deepEqual(loaders.map((s) => s.path), []);
  const cFiles = readdirSync(join(srcRoot, 'native')).filter((n) => n.endsWith('.c') || n.endsWith('.h'));
  assert.deepEqual(cFiles.sort(), ['addon.c', 'aead.c', 'ntsd_udp.h', 'udp_batch.c', 'udp_socket.c']);
  for (const name of cFiles) {
    const lines = readFileSync(join(srcRoot, 'native', name), 'utf8').split('\n');
    assert.ok(lines.length <= 400, `src/native/${name} has ${lines.length} lines`);
    assert.match(lines.slice(0, 3).join('\n'), /^\/\*/, `src/native/${name} starts with a comment saying what it is for`);
  }
});

test('runtime/ holds process-wide shells: it imports only core, runtime, errors and the addon loader', () => {
  const files = sources.filter((s) => s.path.startsWith('runtime/'));
  assert.ok(files.some((f) => f.path === 'runtime/aead-openssl.ts'), 'runtime/aead-openssl.ts is missing');
  // The addon loader is ntp/native.ts until it moves to runtime/ (then the last alternative goes).
  const allowed = /^(core\/|runtime\/|errors\.ts$|ntp\/native\.ts$)/;
  const broken = files.flatMap((f) =>
    f.imports.filter((spec) => {
      const t = target(f, spec);
      return t === undefined ? !spec.startsWith('node:') : !allowed.test(t);
    }).map((spec) => `${f.path} imports ${spec}`),
  );
  assert.deepEqual(broken, []);
});

test('no `any` in src', () => {
  const broken = sources
    .filter((f) => /:\s*any\b|\bas any\b|<any>/.test(f.text.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')))
    .map((f) => f.path);
  assert.deepEqual(broken, []);
});

test('one atomic file writer: only src/fs-atomic.ts renames a tmp file over a target', () => {
  const broken = sources
    .filter((f) => f.path !== 'fs-atomic.ts')
    .filter((f) => /function\s+writeFileAtomic|\.tmp-\$\{process\.pid\}/.test(f.text))
    .map((f) => f.path);
  assert.deepEqual(broken, [], 'import writeFileAtomic / writeFileAtomicSync from src/fs-atomic.ts');
});
