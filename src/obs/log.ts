/**
 * Logging: one pino root logger, child loggers per component, secrets redacted by path.
 *
 * Output is JSON lines (`"level":"info"`, epoch-millisecond `time`), or with `format: "pretty"` a compact
 * human line produced by a small formatter in this file (pino-pretty is not a dependency: one line per
 * entry with time, level, component, message and key=value fields is all a terminal needs).
 * `format: "auto"` (the default) is pretty when the destination is a terminal and JSON otherwise, so
 * journald, pipes and log files keep getting JSON.
 * Writes are synchronous: logs are low-volume (no per-packet events above debug), and a fatal line
 * written right before `process.exit(70)` must not be lost.
 * Messages are constant strings; values go in fields (`log.info({ port }, 'listening')`).
 */
import { isatty } from 'node:tty';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogFormat, LogLevel } from '../config/schema.js';

/** Field names that hold secrets. Any field with one of these names is replaced by "[redacted]" (up to 3 levels deep). */
export const SECRET_FIELD_NAMES = [
  'key',
  'keys',
  'masterKey',
  'c2s',
  's2c',
  'c2sKey',
  's2cKey',
  'cookie',
  'cookies',
  'privateKey',
  'keyMaterial',
  'secret',
  'password',
  'token',
  'tokens',
  'authenticationToken',
  'acceptedPoolAuthenticationTokens',
  'poolAuthenticationTokens',
] as const;

/** Replacement text for redacted values. */
export const REDACTED = '[redacted]';

/** pino redact paths for SECRET_FIELD_NAMES at depth 1, 2 and 3. */
export const REDACT_PATHS: readonly string[] = SECRET_FIELD_NAMES.flatMap((name) => [name, `*.${name}`, `*.*.${name}`]);

/** Where log lines go: stdout or a file, reopenable on SIGHUP (logrotate). */
export interface LogDestination extends DestinationStream {
  /** Reopens the file (same path); a no-op for standard output. */
  reopen(): void;
  /** Flushes buffered output; call before exiting. */
  flushSync(): void;
  /** True when the lines go to a terminal (decides `log-format = "auto"`); absent = not a terminal. */
  readonly isTerminal?: boolean;
}

/** The format `auto` stands for: pretty on a terminal, JSON anywhere else. */
export function resolveLogFormat(format: LogFormat, isTerminal: boolean): 'json' | 'pretty' {
  if (format === 'auto') return isTerminal ? 'pretty' : 'json';
  return format;
}

/**
 * Creates the destination: `file` undefined = standard output. The file is opened in append mode and its
 * directory is created when missing.
 */
export function createLogDestination(file?: string): LogDestination {
  const stream = file === undefined
    ? pino.destination({ dest: 1, sync: true })
    : pino.destination({ dest: file, sync: true, append: true, mkdir: true });
  return {
    isTerminal: file === undefined && isatty(1),
    write: (line: string) => {
      stream.write(line);
    },
    reopen: () => {
      if (file !== undefined) stream.reopen();
    },
    flushSync: () => {
      stream.flushSync();
    },
  };
}

/** Options of the root logger. */
export interface LoggerOptions {
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** Defaults to a synchronous standard-output destination. */
  readonly destination?: DestinationStream;
}

/** Creates the root logger. Derive one child per component: `log.child({ component: 'ke-server' })`. */
export function createLogger(options: LoggerOptions): Logger {
  const target = options.destination ?? createLogDestination();
  const isTerminal = (target as Partial<LogDestination>).isTerminal === true;
  const stream = resolveLogFormat(options.format, isTerminal) === 'pretty' ? prettyStream(target) : target;
  return pino(
    {
      level: options.level,
      base: { pid: process.pid },
      redact: { paths: [...REDACT_PATHS], censor: REDACTED },
      formatters: { level: (label) => ({ level: label }), log: hideBinary },
    },
    stream,
  );
}

/**
 * Second line of defence behind `redact`: key material is always bytes, so byte arrays are never written,
 * at any depth (up to 6 levels), whatever their field name; only their length is. Log lengths, not bytes.
 * Objects that define `toJSON` are left to it (ARCHITECTURE.md: key holders have a redacting toJSON).
 */
export function hideBinary(entry: Record<string, unknown>): Record<string, unknown> {
  const out = hideBinaryValue(entry, 0);
  return isRecord(out) ? out : entry;
}

function hideBinaryValue(value: unknown, depth: number): unknown {
  if (ArrayBuffer.isView(value)) return `[${value.byteLength} bytes]`;
  if (value instanceof ArrayBuffer || value instanceof SharedArrayBuffer) return `[${value.byteLength} bytes]`;
  if (depth >= 6 || typeof value !== 'object' || value === null || value instanceof Error) return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    value.forEach((item: unknown, i) => {
      const hidden = hideBinaryValue(item, depth + 1);
      if (hidden !== item) (copy ??= [...value] as unknown[])[i] = hidden;
    });
    return copy ?? value;
  }
  // Objects with their own toJSON (Date, redacting key holders) serialise themselves.
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return value;
  let copy: Record<string, unknown> | undefined;
  for (const [name, item] of Object.entries(value)) {
    const hidden = hideBinaryValue(item, depth + 1);
    if (hidden !== item) (copy ??= { ...value })[name] = hidden;
  }
  return copy ?? value;
}

/** The child logger for one component (adds a `component` field to every line). */
export function componentLogger(root: Logger, component: string): Logger {
  return root.child({ component });
}

// ---------------------------------------------------------------------------------------------------------
// Pretty format: `2025-01-02T03:04:05.678Z INFO  [ke-server] listening port=4460 host="127.0.0.1"`

const OMIT_IN_PRETTY = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'component']);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Formats one JSON log line for a terminal; lines that are not JSON objects pass through unchanged. */
export function formatPrettyLine(jsonLine: string): string {
  let entry: unknown;
  try {
    entry = JSON.parse(jsonLine);
  } catch {
    return jsonLine.endsWith('\n') ? jsonLine : `${jsonLine}\n`;
  }
  if (!isRecord(entry)) return jsonLine.endsWith('\n') ? jsonLine : `${jsonLine}\n`;
  const time = typeof entry['time'] === 'number' ? new Date(entry['time']).toISOString() : '-';
  const level = String(entry['level'] ?? '?').toUpperCase().padEnd(5);
  const component = typeof entry['component'] === 'string' ? ` [${entry['component']}]` : '';
  const msg = typeof entry['msg'] === 'string' ? ` ${entry['msg']}` : '';
  let fields = '';
  let stack = '';
  for (const [name, value] of Object.entries(entry)) {
    if (OMIT_IN_PRETTY.has(name)) continue;
    if (isRecord(value) && typeof value['stack'] === 'string') {
      stack += `\n    ${value['stack'].split('\n').join('\n    ')}`;
      continue;
    }
    fields += ` ${name}=${prettyValue(value)}`;
  }
  return `${time} ${level}${component}${msg}${fields}${stack}\n`;
}

/**
 * One field value on one line: multi-line strings (certificate subjects, "O=...\nCN=...") joined with ", ";
 * plain words bare, anything with spaces, quotes or `=` quoted; other values as JSON.
 */
export function prettyValue(value: unknown): string {
  if (typeof value === 'string') {
    const oneLine = value.split(/\r?\n/).filter((part) => part !== '').join(', ');
    return /^[^\s"=,]+$/.test(oneLine) ? oneLine : JSON.stringify(oneLine);
  }
  if (isRecord(value) || Array.isArray(value)) {
    return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'string' ? v.split(/\r?\n/).filter((p) => p !== '').join(', ') : v)) ?? String(value);
  }
  return JSON.stringify(value) ?? String(value);
}

function prettyStream(target: DestinationStream): DestinationStream {
  return {
    write: (line: string) => {
      target.write(formatPrettyLine(line));
    },
  };
}
