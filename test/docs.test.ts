/**
 * The documentation stays true to the code:
 * - docs/configuration.md documents every key the configuration schema accepts, and nothing else. The
 *   accepted keys are observed, not listed: validateConfig runs over sample configurations whose tables are
 *   Proxies that record every key the schema looks up, in every mode. A documented key is then put into a
 *   configuration and must not come back as "unknown key"; the retired keys must come back as "removed".
 * - every relative link in README.md and docs/ (and the READMEs beside the code) reaches an existing file,
 *   and every `#anchor` a heading of that file (GitHub's slug rules);
 * - README.md stays a front door: short, with `npm start` and `npm test` in its first 40 lines.
 * No network; files are read from the repository.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { validateConfig } from '../src/config/schema.js';
import { repoRoot } from './helpers/daemon.js';

const ROOT = repoRoot();
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

// ---------------------------------------------------------------------------------------------------------
// The keys the schema accepts, observed.

type Table = Record<string, unknown>;
const isTable = (v: unknown): v is Table => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);

/**
 * Wraps `value` so that every key looked up on it (or on a table inside it) is added to `seen` as a dotted
 * path without array indexes (`server.listen`, `pool-ke.source.name`).
 */
function recording(value: unknown, path: string, seen: Set<string>): unknown {
  if (Array.isArray(value)) {
    return new Proxy(value, {
      get(target, key, receiver) {
        const v: unknown = Reflect.get(target, key, receiver);
        return typeof key === 'string' && /^\d+$/.test(key) ? recording(v, path, seen) : v;
      },
    });
  }
  if (!isTable(value)) return value;
  const at = (key: string): string => (path === '' ? key : `${path}.${key}`);
  return new Proxy(value, {
    get(target, key, receiver) {
      const v: unknown = Reflect.get(target, key, receiver);
      if (typeof key !== 'string') return v;
      seen.add(at(key));
      return recording(v, at(key), seen);
    },
    getOwnPropertyDescriptor(target, key) {
      if (typeof key === 'string') seen.add(at(key));
      return Reflect.getOwnPropertyDescriptor(target, key);
    },
    has(target, key) {
      if (typeof key === 'string') seen.add(at(key));
      return Reflect.has(target, key);
    },
  });
}

const OPTIONS = { baseDir: '/etc/ntsd', cpuCount: 4 };

/** Configurations that between them take every branch of the schema: each keyset and time-source mode, PROXY on and off, a pool front end. */
function samples(): Table[] {
  const server = { listen: '127.0.0.1:123' };
  const ke = { listen: '127.0.0.1:4460', 'certificate-chain-path': 'c.pem', 'private-key-path': 'k.pem' };
  const poolKe = {
    listen: '127.0.0.1:4461',
    'certificate-chain-path': 'p.pem',
    'private-key-path': 'pk.pem',
    'proxy-protocol': true,
    'proxy-trusted-sources': ['10.0.0.0/24'],
    source: [{ name: 'ts1.example.net', address: 'ts1.example.net:4460', 'authentication-token': 'token-token-token' }],
    certificate: [{ 'certificate-chain-path': 'p2.pem', 'private-key-path': 'pk2.pem', name: 'rsa' }],
  };
  const rest = { observability: {}, 'worker-pool': {} };
  return [
    { server: [server], 'nts-ke-server': [ke], 'pool-ke': poolKe, keyset: { mode: 'local' }, 'time-source': { mode: 'follow' }, ...rest },
    {
      server: [server],
      'nts-ke-server': [{ ...ke, 'proxy-protocol': true, 'proxy-trusted-sources': ['10.0.0.2'] }],
      keyset: { mode: 'ratchet', 'shared-secret-path': 'seed' },
      'time-source': { mode: 'static', 'local-stratum': 1 },
      ...rest,
    },
    {
      server: [server],
      'nts-ke-server': [{ ...ke, certificate: [{ 'certificate-chain-path': 'c2.pem', 'private-key-path': 'k2.pem', name: 'second' }] }],
      keyset: { mode: 'follow' },
      'time-source': {},
      ...rest,
    },
  ];
}

/** Every key path the schema looked up over the samples; `sections` are the paths that hold tables. */
function schemaPaths(): { keys: Set<string>; sections: Set<string> } {
  const seen = new Set<string>();
  for (const sample of samples()) {
    const result = validateConfig(recording(structuredClone(sample), '', seen), OPTIONS);
    assert.ok(result.ok, `sample configuration invalid: ${result.ok ? '' : result.errors.join('; ')}`);
  }
  const sections = new Set([...seen].filter((p) => [...seen].some((q) => q.startsWith(`${p}.`))));
  const keys = new Set([...seen].filter((p) => !sections.has(p) && p.includes('.')));
  return { keys, sections };
}

/** The errors validateConfig reports when `path` (`section.key`, `pool-ke.source.key`) is set in the first sample. */
function errorsWith(path: string, value: unknown): { errors: string[]; at: string } {
  const config = samples()[0] as Table;
  const parts = path.split('.');
  const key = parts.pop() as string;
  let table: Table = config;
  let at = '';
  for (const part of parts) {
    const next = table[part];
    if (Array.isArray(next)) {
      table = next[0] as Table;
      at = `${at === '' ? '' : `${at}.`}${part}[0]`;
    } else {
      if (!isTable(next)) table[part] = {};
      table = table[part] as Table;
      at = `${at === '' ? '' : `${at}.`}${part}`;
    }
  }
  table[key] = value;
  const result = validateConfig(config, OPTIONS);
  return { errors: result.ok ? [] : result.errors, at: `${at}.${key}` };
}

// ---------------------------------------------------------------------------------------------------------
// The keys docs/configuration.md documents.

interface DocumentedKeys {
  readonly keys: Set<string>;
  readonly retired: Set<string>;
  readonly sections: Set<string>;
}

/**
 * Convention of docs/configuration.md: a `## \`[table]\`` or `## \`[[table]]\`` heading opens a TOML table's
 * section; in the Markdown tables below it, the first cell names keys in backticks; a second cell of
 * `removed` marks retired keys. Any other `##` heading closes the section.
 */
function documentedKeys(text: string): DocumentedKeys {
  const keys = new Set<string>();
  const retired = new Set<string>();
  const sections = new Set<string>();
  let section: string | undefined;
  let fenced = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    if (fenced) continue;
    const heading = /^##\s/.test(line);
    if (heading) {
      section = /^##\s+`\[\[?([a-z0-9.-]+)\]\]?`\s*$/.exec(line)?.[1];
      if (section !== undefined) sections.add(section);
      continue;
    }
    if (section === undefined || !line.startsWith('|')) continue;
    const cells = line.split('|').slice(1).map((c) => c.trim());
    const first = cells[0] ?? '';
    if (first === 'key' || /^-+$/.test(first)) continue;
    const names = [...first.matchAll(/`([^`]+)`/g)].map((m) => m[1] ?? '');
    assert.ok(names.length > 0, `docs/configuration.md [${section}]: a table row without a key in backticks: ${line}`);
    for (const name of names) {
      assert.match(name, /^[a-z0-9-]+$/, `docs/configuration.md [${section}]: not a key name: \`${name}\``);
      (cells[1] === 'removed' ? retired : keys).add(`${section}.${name}`);
    }
  }
  return { keys, retired, sections };
}

/** Key names scraped from schema.ts's source (`r.integer('name', ...)`, the `*_ONLY` lists): a second, independent opinion. */
function scrapedKeyNames(): Set<string> {
  const source = read('src/config/schema.ts');
  const names = new Set<string>();
  for (const m of source.matchAll(/\br\.(?:integer|number|boolean|string|oneOf|listen|path|intList|stringList|raw|has|reject)\('([a-z0-9-]+)'/g)) {
    if (m[1] !== undefined) names.add(m[1]);
  }
  for (const m of source.matchAll(/_ONLY = \[([^\]]*)\]/g)) {
    for (const q of (m[1] ?? '').matchAll(/'([a-z0-9-]+)'/g)) if (q[1] !== undefined) names.add(q[1]);
  }
  return names;
}

test('the recorder sees every key name that appears in schema.ts, in some table', () => {
  const { keys } = schemaPaths();
  const leaves = new Set([...keys].map((p) => p.slice(p.lastIndexOf('.') + 1)));
  const scraped = scrapedKeyNames();
  assert.ok(scraped.size >= 25, `scraped only ${scraped.size} key names from schema.ts`);
  const unseen = [...scraped].filter((name) => !leaves.has(name));
  assert.deepEqual(unseen, [], 'schema.ts names these keys but no sample configuration reaches them: extend samples()');
});

test('docs/configuration.md documents every key the schema accepts, in its table', () => {
  const schema = schemaPaths();
  const doc = documentedKeys(read('docs/configuration.md'));
  assert.deepEqual([...schema.sections].sort(), [...doc.sections].sort(), 'one `## `[table]`` section per TOML table');
  const documented = new Set([...doc.keys, ...doc.retired]);
  const missing = [...schema.keys].filter((p) => !documented.has(p)).sort();
  assert.deepEqual(missing, [], 'document these keys in docs/configuration.md (first column, in backticks, under their table)');
});

test('every key docs/configuration.md documents is accepted by the schema; the retired ones are refused as removed', () => {
  const doc = documentedKeys(read('docs/configuration.md'));
  assert.ok(doc.keys.size >= 60, `only ${doc.keys.size} keys found in docs/configuration.md: is the table format intact?`);
  for (const path of doc.keys) {
    const { errors, at } = errorsWith(path, 'x');
    const bad = errors.filter((e) => e.startsWith(`${at}: unknown key`) || e.startsWith(`${at}: removed`));
    assert.deepEqual(bad, [], `docs/configuration.md documents ${path}, which the schema does not accept`);
  }
  assert.deepEqual(
    [...doc.retired].sort(),
    ['worker-pool.batch-size', 'worker-pool.flush-interval-us', 'worker-pool.queue-limit', 'worker-pool.receive-threads'],
  );
  for (const path of doc.retired) {
    const { errors, at } = errorsWith(path, 1);
    assert.ok(errors.some((e) => e.startsWith(`${at}: removed`)), `${path} is documented as removed, but the schema says: ${errors.join('; ')}`);
  }
});

// ---------------------------------------------------------------------------------------------------------
// Links.

/** GitHub's anchor for a heading: lowercase, formatting and punctuation dropped, spaces to '-'. */
function slug(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** The anchors of a Markdown file's headings (outside fenced code), duplicates numbered as GitHub does. */
function anchorsOf(text: string): Set<string> {
  const anchors = new Set<string>();
  const counts = new Map<string, number>();
  let fenced = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (m === null) continue;
    const base = slug(m[1] ?? '');
    const n = counts.get(base) ?? 0;
    counts.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** Relative link targets of a Markdown file, outside fenced code and inline code spans. */
function linksOf(text: string): string[] {
  const links: string[] = [];
  let fenced = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    if (fenced) continue;
    const prose = line.replace(/`[^`]*`/g, '');
    for (const m of prose.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      const target = m[1] ?? '';
      if (!/^[a-z][a-z0-9+.-]*:/i.test(target)) links.push(target);
    }
  }
  return links;
}

function markdownFiles(): string[] {
  const docs = readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`);
  const besides = ['README.md', 'bench/README.md', 'certs/README.md', 'keyset/README.md'].filter((f) => existsSync(join(ROOT, f)));
  return [...besides, ...docs.sort()];
}

test('slug follows GitHub', () => {
  assert.equal(slug('3. Host time daemon on a private loopback port'), '3-host-time-daemon-on-a-private-loopback-port');
  assert.equal(slug('`[[pool-ke.source]]`'), 'pool-kesource');
  assert.equal(slug('KE under a connection flood'), 'ke-under-a-connection-flood');
  assert.equal(slug('Reload and signals (SIGHUP, SIGTERM)'), 'reload-and-signals-sighup-sigterm');
  assert.equal(slug('`ntsd status`'), 'ntsd-status');
});

test('every relative link in README.md and docs/ reaches a file, and every #anchor a heading in it', () => {
  const problems: string[] = [];
  for (const file of markdownFiles()) {
    for (const link of linksOf(read(file))) {
      const [pathPart = '', anchor] = link.split('#', 2);
      const target = pathPart === '' ? join(ROOT, file) : resolve(dirname(join(ROOT, file)), decodeURIComponent(pathPart));
      if (!existsSync(target)) {
        problems.push(`${file}: ${link}: no such file`);
        continue;
      }
      if (anchor === undefined || anchor === '') continue;
      if (statSync(target).isDirectory() || !target.endsWith('.md')) {
        problems.push(`${file}: ${link}: an anchor into a file that is not Markdown`);
      } else if (!anchorsOf(readFileSync(target, 'utf8')).has(anchor)) {
        problems.push(`${file}: ${link}: no heading "#${anchor}" in ${relative(ROOT, target)}`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

test('README.md links every page in docs/', () => {
  const readme = read('README.md');
  const linked = new Set(linksOf(readme).map((l) => l.split('#')[0]));
  const pages = readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md'));
  assert.deepEqual(pages.filter((p) => !linked.has(`docs/${p}`)), []);
});

test('README.md is a front door: under 200 lines, `npm start` and `npm test` in the first 40', () => {
  const lines = read('README.md').split('\n');
  assert.ok(lines.length < 200, `README.md has ${lines.length} lines; move detail into docs/`);
  const head = lines.slice(0, 40).join('\n');
  assert.match(head, /npm start/);
  assert.match(head, /npm test/);
});
