/**
 * `ntsd clients [-c FILE | --metrics URL] [--sort requests|drops|ke|last] [--limit N] [--json]`: who is
 * talking to a running ntsd, busiest first, in the spirit of `chronyc clients` (and its `-k` for NTS-KE).
 * It reads `GET /clients` next to the metrics endpoint: the daemon's client log (core/client-log.ts), served
 * only on a loopback metrics listener because it holds client addresses.
 *
 * Exit status: 0 printed, 1 the view could not be read (daemon down, view off), 64 usage.
 */
import { parseArgs } from 'node:util';
import type { ClientLogView, ClientView } from '../core/client-log.js';
import { commandHelp, synopsis } from './help.js';
import { ENDPOINT_OPTIONS, endpointOptions, formatDurationS, isUsageError, StatusUsageError } from './status.js';

/** Exit codes of `ntsd clients`. */
export const ClientsExitCode = { ok: 0, unavailable: 1, usage: 64 } as const;

/** Orders `--sort` accepts. */
export const CLIENT_SORTS = ['requests', 'drops', 'ke', 'last'] as const;
/** One of CLIENT_SORTS. */
export type ClientSort = (typeof CLIENT_SORTS)[number];

/** Drops of every reason. */
function drops(c: ClientView): number {
  return c.ntp.drops.rateLimit + c.ntp.drops.access + c.ntp.drops.other;
}

/** Sorts (busiest first for counts, most recent first for `last`) and keeps the first `limit`. */
export function selectClients(view: ClientLogView, sort: ClientSort, limit: number): ClientLogView {
  const key: (c: ClientView) => number =
    sort === 'requests' ? (c) => c.ntp.requests : sort === 'drops' ? drops : sort === 'ke' ? (c) => c.ke.sessions : (c) => -c.lastAgoS;
  const clients = [...view.clients].sort((a, b) => key(b) - key(a) || b.ntp.requests - a.ntp.requests || a.lastAgoS - b.lastAgoS);
  return { ...view, clients: clients.slice(0, limit) };
}

/** An interval in seconds, short: "31ms", "2.0s", "64s", "17m", "3h", "1d"; "-" when unknown. */
export function formatIntervalS(seconds: number | null): string {
  if (seconds === null) return '-';
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 10) return `${seconds.toFixed(1)}s`;
  if (seconds < 100) return `${Math.round(seconds)}s`;
  // Only the largest unit: "17m" for 17m4s, as a column of six characters allows.
  return formatDurationS(seconds).replace(/^(\d+[dhm])\d+[hms]$/, '$1');
}

/** The table, one string per line: a summary line, the header, one row per client. */
export function formatClientsTable(view: ClientLogView, sort: ClientSort): string[] {
  const width = Math.max(15, ...view.clients.map((c) => c.address.length));
  const columns: readonly (readonly [string, number])[] = [
    ['NTP', 8],
    ['NTS', 8],
    ['Drop', 7],
    ['NAK', 6],
    ['KoD', 6],
    ['Int', 6],
    ['Last', 6],
    ['KE', 6],
    ['KEfail', 7],
    ['KInt', 6],
    ['KLast', 6],
  ];
  const row = (address: string, cells: readonly string[]): string =>
    `${address.padEnd(width)}${cells.map((cell, i) => cell.padStart(columns[i]?.[1] ?? 6)).join('')}`.trimEnd();
  const out = [
    `${view.tracked} client${view.tracked === 1 ? '' : 's'} tracked (log holds ${view.capacity}); ${view.clients.length} shown, by ${sort}`,
    row('Address', columns.map(([name]) => name)),
    '='.repeat(width + columns.reduce((a, [, w]) => a + w, 0)),
  ];
  for (const c of view.clients) {
    out.push(
      row(c.address, [
        String(c.ntp.plain),
        String(c.ntp.nts),
        String(drops(c)),
        String(c.ntp.naks),
        String(c.ntp.kods),
        formatIntervalS(c.ntp.intervalS),
        formatIntervalS(c.ntp.lastAgoS),
        String(c.ke.sessions),
        String(c.ke.sessions - c.ke.ok),
        formatIntervalS(c.ke.intervalS),
        formatIntervalS(c.ke.lastAgoS),
      ]),
    );
  }
  return out;
}

/** True for a value shaped like a ClientLogView (the daemon's own document; checked loosely). */
function isClientLogView(value: unknown): value is ClientLogView {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { capacity?: unknown; tracked?: unknown; clients?: unknown };
  return typeof v.capacity === 'number' && typeof v.tracked === 'number' && Array.isArray(v.clients);
}

/** The /clients URL next to a metrics URL (same scheme, host and port). */
export function clientsUrl(metricsUrl: string): string {
  return new URL('/clients', metricsUrl).href;
}

/** GETs the view: the document, or why it could not be read. */
export async function fetchClientLogView(url: string, timeoutMs: number): Promise<{ ok: true; view: ClientLogView } | { ok: false; problem: string }> {
  let res: Response;
  let text: string;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    text = await res.text();
  } catch (error) {
    const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : '';
    return { ok: false, problem: `cannot read ${url}: ${error instanceof Error ? error.message : String(error)}${cause}` };
  }
  if (res.status === 404) {
    return {
      ok: false,
      problem: `${url} answered 404: this ntsd serves no client view (client-log-size = 0, or metrics-listen is not a loopback address)`,
    };
  }
  if (res.status !== 200) return { ok: false, problem: `${url} answered HTTP ${res.status}` };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, problem: `${url} did not answer JSON` };
  }
  if (!isClientLogView(parsed)) return { ok: false, problem: `${url} did not answer a client log` };
  return { ok: true, view: parsed };
}

/** Runs `ntsd clients` with its arguments (after "clients"); resolves to the exit code. */
export async function runClients(args: readonly string[], write: (line: string) => void): Promise<number> {
  let url: string;
  let sort: ClientSort;
  let limit: number;
  let json: boolean;
  let timeoutMs: number;
  try {
    const { values, positionals } = parseArgs({
      args: [...args],
      allowPositionals: true,
      strict: true,
      options: { ...ENDPOINT_OPTIONS, sort: { type: 'string' }, limit: { type: 'string' } },
    });
    if (values.help === true) {
      write(commandHelp('clients'));
      return ClientsExitCode.ok;
    }
    const endpoint = endpointOptions(values, positionals);
    const sortText = values.sort ?? 'requests';
    if (!(CLIENT_SORTS as readonly string[]).includes(sortText)) throw new StatusUsageError(`--sort takes ${CLIENT_SORTS.join(', ')}, not "${sortText}"`);
    sort = sortText as ClientSort;
    limit = Number(values.limit ?? '50');
    if (!Number.isInteger(limit) || limit < 1 || limit > 16_777_216) throw new StatusUsageError('--limit takes a whole number of clients, at least 1');
    timeoutMs = endpoint.timeoutMs;
    url = clientsUrl(endpoint.url);
    json = values.json === true;
  } catch (error) {
    if (!isUsageError(error)) throw error;
    process.stderr.write(`ntsd clients: ${error.message}\n${synopsis('clients')}\n`);
    return ClientsExitCode.usage;
  }
  const read = await fetchClientLogView(url, timeoutMs);
  if (!read.ok) {
    process.stderr.write(`ntsd clients: ${read.problem}\n`);
    return ClientsExitCode.unavailable;
  }
  const view = selectClients(read.view, sort, limit);
  if (json) write(JSON.stringify(view, null, 2));
  else for (const line of formatClientsTable(view, sort)) write(line);
  return ClientsExitCode.ok;
}
