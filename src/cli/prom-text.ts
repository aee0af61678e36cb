/**
 * A small parser for the Prometheus text exposition format (version 0.0.4), enough to read any /metrics page:
 * `# HELP` / `# TYPE` comments, `name{label="value",...} value [timestamp]` samples, label values with the
 * escapes `\\`, `\"` and `\n`, and the values `NaN`, `+Inf` and `-Inf` (case-insensitive). A malformed page is a returned
 * error naming the line, never a throw.
 */

/** One sample line. */
export interface PromSample {
  /** Series name as exposed (histograms keep their `_bucket`, `_sum` and `_count` suffixes). */
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** A parsed page: every sample in order, and the `# TYPE` of each metric family that declared one. */
export interface PromPage {
  readonly samples: readonly PromSample[];
  readonly types: ReadonlyMap<string, string>;
}

/** Result of parsePromText. */
export type PromParseResult = { readonly ok: true; readonly page: PromPage } | { readonly ok: false; readonly error: string };

const NAME_START = /[a-zA-Z_:]/;
const NAME_CHAR = /[a-zA-Z0-9_:]/;
const LABEL_START = /[a-zA-Z_]/;
const LABEL_CHAR = /[a-zA-Z0-9_]/;

/** Parses a float the way the exposition format writes one; undefined when it is not a number. */
export function parsePromValue(text: string): number | undefined {
  // Case-insensitive, as Prometheus reads them (prom-client writes NaN as "Nan").
  const lower = text.toLowerCase();
  if (lower === 'nan') return Number.NaN;
  if (lower === '+inf' || lower === 'inf' || lower === '+infinity' || lower === 'infinity') return Number.POSITIVE_INFINITY;
  if (lower === '-inf' || lower === '-infinity') return Number.NEGATIVE_INFINITY;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) return undefined;
  return Number(text);
}

/** Parses one sample line; a string is the reason it is malformed. */
function parseSampleLine(line: string): PromSample | string {
  let i = 0;
  const n = line.length;
  if (!NAME_START.test(line[0] ?? '')) return 'a sample must start with a metric name';
  while (i < n && NAME_CHAR.test(line[i] ?? '')) i++;
  const name = line.slice(0, i);
  const labels: Record<string, string> = {};
  while (line[i] === ' ' || line[i] === '\t') i++;
  if (line[i] === '{') {
    i++;
    for (;;) {
      while (line[i] === ' ') i++;
      if (line[i] === '}') {
        i++;
        break;
      }
      const start = i;
      if (!LABEL_START.test(line[i] ?? '')) return `bad label name at column ${i + 1}`;
      while (i < n && LABEL_CHAR.test(line[i] ?? '')) i++;
      const label = line.slice(start, i);
      while (line[i] === ' ') i++;
      if (line[i] !== '=') return `expected "=" after label ${label}`;
      i++;
      while (line[i] === ' ') i++;
      if (line[i] !== '"') return `expected a quoted value for label ${label}`;
      i++;
      let value = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) return `unterminated value of label ${label}`;
        i++;
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i];
          i++;
          if (e === 'n') value += '\n';
          else if (e === '\\' || e === '"') value += e;
          else return `bad escape in the value of label ${label}`;
        } else {
          value += c;
        }
      }
      labels[label] = value;
      while (line[i] === ' ') i++;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') return `expected "," or "}" after label ${label}`;
    }
  }
  const rest = line.slice(i).trim().split(/[ \t]+/);
  if (rest.length < 1 || rest.length > 2 || rest[0] === '') return 'expected a value (and an optional timestamp) after the series';
  const value = parsePromValue(rest[0] ?? '');
  if (value === undefined) return `not a number: ${rest[0] ?? ''}`;
  if (rest.length === 2 && !/^-?\d+$/.test(rest[1] ?? '')) return `bad timestamp: ${rest[1] ?? ''}`;
  return { name, labels, value };
}

/** Parses a /metrics page. */
export function parsePromText(text: string): PromParseResult {
  const samples: PromSample[] = [];
  const types = new Map<string, string>();
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = (lines[index] ?? '').replace(/\r$/, '').trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^#\s*TYPE\s+(\S+)\s+(\S+)/.exec(line);
      if (m?.[1] !== undefined && m[2] !== undefined) types.set(m[1], m[2]);
      continue;
    }
    const parsed = parseSampleLine(line);
    if (typeof parsed === 'string') return { ok: false, error: `line ${index + 1}: ${parsed}` };
    samples.push(parsed);
  }
  return { ok: true, page: { samples, types } };
}

/** The samples of `name` whose labels include every pair of `match`. */
export function selectSamples(page: PromPage, name: string, match: Readonly<Record<string, string>> = {}): PromSample[] {
  return page.samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
}

/** Sum of the values of selectSamples; undefined when no sample matched. */
export function sumSamples(page: PromPage, name: string, match: Readonly<Record<string, string>> = {}): number | undefined {
  const found = selectSamples(page, name, match);
  if (found.length === 0) return undefined;
  return found.reduce((total, s) => total + s.value, 0);
}
