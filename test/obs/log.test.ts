import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REDACTED, componentLogger, createLogDestination, createLogger, formatPrettyLine, prettyValue, resolveLogFormat } from '../../src/obs/log.js';

function capture(): { lines: string[]; destination: { write(line: string): void } } {
  const lines: string[] = [];
  return { lines, destination: { write: (line: string) => lines.push(line) } };
}

const SECRET_HEX = 'c0ffee00deadbeef';
const SECRET_BYTES = new Uint8Array([0xc0, 0xff, 0xee, 0x00, 0xde, 0xad, 0xbe, 0xef]);

for (const format of ['json', 'pretty'] as const) {
  test(`secrets never reach the output (${format})`, () => {
    const { lines, destination } = capture();
    const log = createLogger({ level: 'trace', format, destination });
    const child = componentLogger(log, 'ke-server');
    child.info({ key: SECRET_HEX }, 'a');
    child.info({ session: { c2s: SECRET_HEX, s2c: SECRET_HEX } }, 'b');
    child.info({ keyset: { current: { id: 7, key: SECRET_HEX } } }, 'c');
    child.info({ cookie: SECRET_HEX, cookies: [SECRET_HEX] }, 'd');
    child.info({ tls: { privateKey: SECRET_HEX }, masterKey: SECRET_HEX, keys: [SECRET_HEX] }, 'e');
    // Bytes are hidden whatever their field name and depth.
    child.warn({ a: { b: { c: { d: { material: SECRET_BYTES } } } }, blob: Buffer.from(SECRET_BYTES) }, 'f');
    child.error({ list: [SECRET_BYTES] }, 'g');
    // NTS pool tokens, as config fields and as a KE policy field.
    child.info({ nts: { acceptedPoolAuthenticationTokens: [SECRET_HEX] }, policy: { poolAuthenticationTokens: [SECRET_HEX] } }, 'h');
    child.info({ source: { name: 'ts1', authenticationToken: SECRET_HEX }, token: SECRET_HEX }, 'i');
    const out = lines.join('');
    assert.equal(lines.length, 9);
    assert.ok(!out.includes(SECRET_HEX), out);
    assert.ok(!out.includes('"0":192'), out);
    assert.ok(!/192,\s*255/.test(out), out);
    assert.ok(out.includes(REDACTED));
    assert.ok(out.includes('[8 bytes]'));
    // Non-secret fields survive.
    assert.ok(out.includes('"id":7'), out);
  });
}

test('json lines carry level label, time, component and message', () => {
  const { lines, destination } = capture();
  const log = createLogger({ level: 'info', format: 'json', destination });
  componentLogger(log, 'udp-server').info({ port: 123 }, 'listening');
  log.debug('not shown');
  assert.equal(lines.length, 1);
  const entry: unknown = JSON.parse(lines[0] ?? '');
  assert.ok(typeof entry === 'object' && entry !== null);
  const e = entry as Record<string, unknown>;
  assert.equal(e['level'], 'info');
  assert.equal(e['component'], 'udp-server');
  assert.equal(e['msg'], 'listening');
  assert.equal(e['port'], 123);
  assert.equal(typeof e['time'], 'number');
});

test('the level can change at runtime (SIGHUP re-reads log-level)', () => {
  const { lines, destination } = capture();
  const log = createLogger({ level: 'warn', format: 'json', destination });
  log.info('hidden');
  log.level = 'info';
  log.info('shown');
  assert.equal(lines.length, 1);
});

test('pretty lines are one readable line per entry, with fields and stack', () => {
  const line = formatPrettyLine(
    JSON.stringify({ level: 'warn', time: Date.UTC(2025, 0, 2, 3, 4, 5, 678), pid: 1, component: 'ke', msg: 'slow', ms: 12, host: 'a' }),
  );
  assert.equal(line, '2025-01-02T03:04:05.678Z WARN  [ke] slow ms=12 host=a\n');
  const { lines, destination } = capture();
  createLogger({ level: 'info', format: 'pretty', destination }).error({ err: new Error('boom') }, 'failed');
  assert.match(lines[0] ?? '', /ERROR failed\n {4}Error: boom\n/);
  assert.equal(formatPrettyLine('not json'), 'not json\n');
});

test('pretty values stay on one line: multi-line subjects joined, words bare, the rest quoted or JSON', () => {
  const subject = 'C=DE\nO=ntsd UNSAFE development\nCN=localhost';
  const line = formatPrettyLine(JSON.stringify({ level: 'info', time: 0, component: 'nts-ke', msg: 'certificate loaded', subject, listen: '127.0.0.1:4460', ntp: ['127.0.0.1:123'], nested: { issuer: 'O=a\nCN=b' } }));
  assert.equal(line, '1970-01-01T00:00:00.000Z INFO  [nts-ke] certificate loaded subject="C=DE, O=ntsd UNSAFE development, CN=localhost" listen=127.0.0.1:4460 ntp=["127.0.0.1:123"] nested={"issuer":"O=a, CN=b"}\n');
  assert.equal(line.split('\n').length, 2, 'one line');
  assert.equal(prettyValue('a b'), '"a b"');
  assert.equal(prettyValue('x=y'), '"x=y"');
  assert.equal(prettyValue(''), '""');
  assert.equal(prettyValue(12), '12');
  assert.equal(prettyValue(true), 'true');
  assert.equal(prettyValue(null), 'null');
});

test('log-format "auto": pretty on a terminal, JSON elsewhere; "json" and "pretty" are forced', () => {
  assert.equal(resolveLogFormat('auto', true), 'pretty');
  assert.equal(resolveLogFormat('auto', false), 'json');
  assert.equal(resolveLogFormat('json', true), 'json');
  assert.equal(resolveLogFormat('pretty', false), 'pretty');
  for (const isTerminal of [true, false, undefined]) {
    const lines: string[] = [];
    const destination = { write: (l: string) => lines.push(l), reopen: () => undefined, flushSync: () => undefined, ...(isTerminal === undefined ? {} : { isTerminal }) };
    createLogger({ level: 'info', format: 'auto', destination }).info({ port: 1 }, 'hello');
    if (isTerminal === true) assert.match(lines[0] ?? '', /^\S+Z INFO  hello port=1\n$/);
    else assert.equal((JSON.parse(lines[0] ?? '') as Record<string, unknown>)['msg'], 'hello');
  }
  // Standard output of this test runner is a pipe, not a terminal.
  assert.equal(createLogDestination().isTerminal, false);
});

test('a file destination appends and reopens after rotation', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-log-'));
  try {
    const file = join(dir, 'sub', 'ntsd.log');
    const destination = createLogDestination(file);
    const log = createLogger({ level: 'info', format: 'json', destination });
    log.info('before');
    renameSync(file, `${file}.1`);
    log.info('still old file');
    destination.reopen();
    log.info('after');
    destination.flushSync();
    assert.match(readFileSync(`${file}.1`, 'utf8'), /before[\s\S]*still old file/);
    const fresh = readFileSync(file, 'utf8');
    assert.match(fresh, /after/);
    assert.doesNotMatch(fresh, /before/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
