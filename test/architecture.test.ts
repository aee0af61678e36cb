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

/** The top folder of a src-relative path ("ntp/threads.ts" → "ntp"), or "" for a loose file. */
function folderOf(path: string): string {
  const slash = path.indexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

/** Feature folders: each is the shell of one feature, and none imports another (daemon.ts wires them). */
const FEATURE_FOLDERS = new Set(['ntp', 'nts-ke', 'nts-pool', 'keys', 'cli']);

test('src/ holds only main.ts, daemon.ts and errors.ts loose; everything else lives in a folder', () => {
  const loose = sources.filter((f) => folderOf(f.path) === '').map((f) => f.path).sort();
  assert.deepEqual(loose, ['daemon.ts', 'errors.ts', 'main.ts']);
  const folders = new Set(sources.map((f) => folderOf(f.path)).filter((d) => d !== ''));
  const known = new Set([...FEATURE_FOLDERS, 'core', 'runtime', 'config', 'obs']);
  assert.deepEqual([...folders].filter((d) => !known.has(d)), [], 'a new folder needs a rule here and in ARCHITECTURE.md');
});

test('runtime/ imports only core and errors.ts', () => {
  const broken: string[] = [];
  for (const f of sources.filter((s) => folderOf(s.path) === 'runtime')) {
    for (const spec of f.imports) {
      const t = target(f, spec);
      if (t !== undefined && !(t.startsWith('core/') || t.startsWith('runtime/') || t === 'errors.ts')) broken.push(`${f.path} imports ${spec}`);
      if (t === undefined && !spec.startsWith('node:')) broken.push(`${f.path} imports the package ${spec}`);
    }
  }
  assert.deepEqual(broken, []);
});

test('feature folders import core, runtime, obs, config types, errors and themselves; never another feature folder', () => {
  const broken: string[] = [];
  for (const f of sources.filter((s) => FEATURE_FOLDERS.has(folderOf(s.path)))) {
    const own = folderOf(f.path);
    for (const spec of f.imports) {
      const t = target(f, spec);
      if (t === undefined) continue;
      const d = folderOf(t);
      if (d === own || d === 'core' || d === 'runtime' || d === 'obs' || t === 'errors.ts' || t === 'config/schema.ts') continue;
      // The command line reads configuration files the way the daemon does.
      if (own === 'cli' && d === 'config') continue;
      broken.push(`${f.path} imports ${spec}`);
    }
  }
  assert.deepEqual(broken, []);
});

test('obs/ and config/ import only core, errors.ts, config types and themselves', () => {
  const broken: string[] = [];
  for (const f of sources.filter((s) => folderOf(s.path) === 'obs' || folderOf(s.path) === 'config')) {
    for (const spec of f.imports) {
      const t = target(f, spec);
      if (t === undefined) continue;
      const d = folderOf(t);
      if (d === folderOf(f.path) || d === 'core' || t === 'errors.ts' || t === 'config/schema.ts') continue;
      broken.push(`${f.path} imports ${spec}`);
    }
  }
  assert.deepEqual(broken, []);
});

test('daemon.ts is the only file that imports more than one feature folder', () => {
  const broken: string[] = [];
  for (const f of sources.filter((s) => s.path !== 'daemon.ts')) {
    const reached = new Set(
      f.imports
        .map((spec) => target(f, spec))
        .filter((t): t is string => t !== undefined)
        .map(folderOf)
        .filter((d) => FEATURE_FOLDERS.has(d)),
    );
    if (FEATURE_FOLDERS.has(folderOf(f.path))) reached.add(folderOf(f.path));
    if (reached.size > 1) broken.push(`${f.path} reaches ${[...reached].join(', ')}`);
  }
  assert.deepEqual(broken, []);
});

test('config/schema.ts does no I/O and does not parse TOML', () => {
  const schema = sources.find((f) => f.path === 'config/schema.ts');
  if (schema === undefined) return assert.fail('src/config/schema.ts is missing');
  const broken = schema.imports.filter((s) => /^(node:)?(fs|fs\/promises|net|dgram|tls)$|^smol-toml$/.test(s));
  assert.deepEqual(broken, []);
});

/** Value imports of a file (type-only imports are erased by tsc and load nothing). */
function valueImports(file: SourceFile): string[] {
  const out: string[] = [];
  for (const m of file.text.matchAll(/(?:^|[\s;])(import|export)(\s+type)?\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|new URL\(\s*['"]([^'"]+)['"]\s*,\s*import\.meta\.url/g)) {
    if (m[2] !== undefined) continue;
    const spec = m[3] ?? m[4] ?? m[5];
    if (spec !== undefined) out.push(spec);
  }
  return out;
}

test('threads compute and count: nothing a worker thread loads (from any thread-main.ts, or a KE request handler module) logs or owns metrics', () => {
  const byPath = new Map(sources.map((s) => [s.path, s]));
  const entries = sources.filter((s) => s.path.endsWith('/thread-main.ts'));
  assert.ok(entries.length >= 2, 'the NTP and KE thread entries exist');
  // KE threads import() their listener's request handler module by URL (core/ke-request-handler.ts).
  const handlers = sources.filter((s) => /export function createKeRequestHandler\b/.test(s.text));
  assert.ok(handlers.length >= 1, 'the pool front end\'s handler module exists');
  entries.push(...handlers);
  const seen = new Set<string>();
  const queue = entries.map((e) => e.path);
  const broken: string[] = [];
  while (queue.length > 0) {
    const path = queue.pop() as string;
    if (seen.has(path)) continue;
    seen.add(path);
    const file = byPath.get(path);
    if (file === undefined) continue;
    for (const spec of valueImports(file)) {
      if (spec === 'pino' || spec === 'prom-client') broken.push(`${path} imports ${spec}`);
      const t = target(file, spec);
      if (t === undefined) continue;
      if (t.startsWith('obs/')) broken.push(`${path} imports ${spec}`);
      queue.push(t);
    }
  }
  assert.deepEqual(broken, []);
});

test('the native addon is loaded in one place (runtime/addon.ts), and its C sources stay small, one concern per file', () => {
  const loaders = sources.filter((s) => /createRequire|process\.dlopen|\.node['"]/.test(s.text) && s.path !== 'runtime/addon.ts');
  assert.deepEqual(loaders.map((s) => s.path), []);
  const cFiles = readdirSync(join(srcRoot, 'native')).filter((n) => n.endsWith('.c') || n.endsWith('.h'));
  assert.deepEqual(cFiles.sort(), ['addon.c', 'aead.c', 'aead_siv.c', 'aead_siv.h', 'ntsd_udp.h', 'udp_batch.c', 'udp_socket.c', 'udp_txstamp.c']);
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

test('one atomic file writer: only src/runtime/fs-atomic.ts renames a tmp file over a target', () => {
  const broken = sources
    .filter((f) => f.path !== 'runtime/fs-atomic.ts')
    .filter((f) => /function\s+writeFileAtomic|\.tmp-\$\{process\.pid\}/.test(f.text))
    .map((f) => f.path);
  assert.deepEqual(broken, [], 'import writeFileAtomic / writeFileAtomicSync from src/runtime/fs-atomic.ts');
});
