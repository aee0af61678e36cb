/**
 * Reads a TOML configuration file and validates it with schema.ts.
 * Relative paths in the file resolve against the directory that holds the file.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { NtsdError } from '../errors.js';
import { validateConfig, type Config, type ConfigResult } from './schema.js';

/** Parses TOML text and validates it; a TOML syntax error is reported as one problem with line and column. */
export function parseConfig(tomlText: string, baseDir: string, cpuCount: number = availableParallelism()): ConfigResult {
  let raw: unknown;
  try {
    raw = parse(tomlText);
  } catch (error) {
    if (error instanceof TomlError) {
      const reason = error.message.split('\n')[0]?.replace(/^Invalid TOML document: /, '') ?? 'syntax error';
      return { ok: false, errors: [`(toml) line ${error.line}, column ${error.column}: ${reason}`] };
    }
    return { ok: false, errors: [`(toml): ${error instanceof Error ? error.message : String(error)}`] };
  }
  return validateConfig(raw, { baseDir: resolve(baseDir), cpuCount });
}

/**
 * Reads and validates the configuration file at `path`.
 * @throws NtsdError CONFIG_INVALID when the file is unreadable or invalid; `details` lists every problem.
 */
export function loadConfigFile(path: string): Config {
  const absolute = resolve(path);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new NtsdError('CONFIG_INVALID', `cannot read configuration file ${absolute}: ${reason}`, {
      cause: error,
      details: [reason],
    });
  }
  const result = parseConfig(text, dirname(absolute));
  if (!result.ok) {
    const count = result.errors.length;
    throw new NtsdError(
      'CONFIG_INVALID',
      `invalid configuration file ${absolute} (${count} problem${count === 1 ? '' : 's'}):\n  ${result.errors.join('\n  ')}`,
      { details: result.errors },
    );
  }
  return result.config;
}
