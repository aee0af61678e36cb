/**
 * `ntsd status [--metrics URL | -c FILE] [--interval S] [--json]`: a summary of a running ntsd read from its
 * metrics endpoint, in the spirit of `chronyc serverstats`. Two scrapes `--interval` seconds apart (default 1)
 * give the rates over that interval.
 *
 * The exit status works as a monitoring check (Nagios convention): 0 healthy; 1 warning (certificate expiring
 * within 7 days, unsynchronised, a thread restarted); 2 down (endpoint
 * unreachable, not an ntsd, certificate expired); 64 usage.
 */
import { parseArgs } from 'node:util';
import { commandHelp, synopsis } from './help.js';
import { loadConfigFile } from '../config/load.js';
import { parsePromText, selectSamples, sumSamples, type PromPage } from './prom-text.js';

/** Exit codes of `ntsd status`. */
export const StatusExitCode = { ok: 0, warning: 1, down: 2, usage: 64 } as const;

/** Overall state of the server. */
export type Health = 'ok' | 'warning' | 'down';

/** Usage text of `ntsd status`. */
export const STATUS_USAGE = synopsis('status');

/** Default endpoint: metrics-listen's default. */
export const DEFAULT_METRICS_URL = 'http://127.0.0.1:9975/metrics';

/** Certificates expiring sooner than this make the status a warning. */
export const CERT_WARNING_S = 7 * 86_400;

/** A counter's value now and its rate over the interval (null with one scrape, or after a counter reset). */
export interface Counted {
  readonly total: number;
  readonly perS: number | null;
}

/** Counters split by one label. */
export type CountedBy = Readonly<Record<string, Counted>>;

/** What `ntsd status --json` prints; the text form shows the same data. */
export interface StatusReport {
  readonly endpoint: string;
  readonly health: Health;
  /** Why the health is not "ok", one sentence each. */
  readonly problems: readonly string[];
  /** Seconds between the two scrapes, null with one scrape or when the endpoint is down. */
  readonly intervalS: number | null;
  readonly server: {
    readonly version: string | null;
    readonly node: string | null;
    readonly uptimeS: number | null;
  } | null;
  readonly ntp: {
    readonly received: Counted;
    /** Keyed "protocol/kind": ntp/time, nts/time, nts/nts_nak, ntp/kod, nts/kod. */
    readonly responses: CountedBy;
    readonly dropped: Counted;
    readonly droppedByReason: CountedBy;
    readonly naks: Counted;
    readonly naksByReason: CountedBy;
    readonly cookiesIssuedVia: CountedBy;
    readonly cookieDecodesByKeyAge: CountedBy;
    /** Over the interval when it saw requests, else over the whole uptime. */
    readonly requestDuration: DurationSummary | null;
  } | null;
  readonly ke: {
    readonly accepted: Counted;
    readonly rejectedByReason: CountedBy;
    readonly sessionsByOutcome: CountedBy;
    /** Responses by the AEAD they agreed on (label: the IANA name); empty when this ntsd does not export it. */
    readonly aeadsNegotiated: CountedBy;
    readonly activeConnections: number | null;
    readonly sessionDuration: DurationSummary | null;
  } | null;
  /** The certificate that expires first; null when no NTS-KE listener reports one. */
  readonly certificate: CertificateExpiry | null;
  /** Every certificate name the daemon reports, the one expiring first first. */
  readonly certificates: readonly CertificateExpiry[];
  readonly keys: {
    /** [keyset] mode (local, follow, ratchet), when this ntsd exports it. */
    readonly mode: string | null;
    /** Hex key id of the current master key, when this ntsd exports it. */
    readonly currentKeyId: string | null;
    readonly currentKeyCreated: string | null;
    readonly currentKeyAgeS: number | null;
    readonly keysHeld: number | null;
    readonly rotationsByResult: CountedBy;
    readonly persistFailures: Counted;
    readonly tlsReloadsByResult: CountedBy;
  } | null;
  readonly timeSource: { readonly synchronised: boolean | null; readonly stratum: number | null; readonly rootDistanceS: number | null } | null;
  /** The labels of each ntsd_ntp_datapath_info series; null when this ntsd does not export it. */
  readonly datapath: readonly Readonly<Record<string, string>>[] | null;
  /** AEAD name → backend (openssl or javascript) from ntsd_aead_backend_info; null when this ntsd does not export it. */
  readonly aead?: Readonly<Record<string, string>> | null;
  /** Threads replaced after dying: NTP threads and NTS-KE threads. */
  readonly threads: { readonly ntpRestarts: Counted; readonly keRestarts: Counted } | null;
  /**
   * The client log's aggregates (`ntsd clients` has the per-client view): clients tracked, the log's
   * capacity (0 = off) and the busiest client's share of the NTP requests counted; null when this ntsd
   * does not export them.
   */
  readonly clients?: { readonly tracked: number; readonly capacity: number; readonly topRequestShare: number } | null;
}

/** One ntsd_tls_certificate_expiry_timestamp_seconds series. */
export interface CertificateExpiry {
  /** Its `name` label (a certificate's primary name or a configured pair name); null from an ntsd without it. */
  readonly name: string | null;
  readonly notAfter: string;
  readonly expiresInS: number;
}

/** Mean and a bucket bound for p99 of a histogram, over the interval or the uptime. */
export interface DurationSummary {
  readonly over: 'interval' | 'uptime';
  readonly count: number;
  readonly meanS: number;
  /** Upper bound of the bucket holding the 99th percentile (Infinity: above the last bound). */
  readonly p99AtMostS: number;
}

// ---------------------------------------------------------------------------------------------------------
// From two pages to a report.

function counted(now: PromPage, before: PromPage | undefined, dtS: number | null, name: string, match: Record<string, string> = {}): Counted {
  const total = sumSamples(now, name, match) ?? 0;
  if (before === undefined || dtS === null || dtS <= 0) return { total, perS: null };
  const earlier = sumSamples(before, name, match) ?? 0;
  return { total, perS: total >= earlier ? (total - earlier) / dtS : null };
}

function countedBy(now: PromPage, before: PromPage | undefined, dtS: number | null, name: string, label: string): Record<string, Counted> {
  const out: Record<string, Counted> = {};
  for (const s of selectSamples(now, name)) {
    const value = s.labels[label];
    if (value !== undefined && out[value] === undefined) out[value] = counted(now, before, dtS, name, { [label]: value });
  }
  return out;
}

function gauge(page: PromPage, name: string): number | null {
  return sumSamples(page, name) ?? null;
}

/** Cumulative `le` buckets → (bounds, counts), sorted by bound. */
function buckets(page: PromPage, name: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const s of selectSamples(page, `${name}_bucket`)) {
    const le = s.labels['le'];
    if (le === undefined) continue;
    const bound = le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le);
    out.set(bound, (out.get(bound) ?? 0) + s.value);
  }
  return out;
}

function durationSummary(now: PromPage, before: PromPage | undefined, name: string): DurationSummary | null {
  const countNow = sumSamples(now, `${name}_count`) ?? 0;
  const sumNow = sumSamples(now, `${name}_sum`) ?? 0;
  const bNow = buckets(now, name);
  const countBefore = before === undefined ? 0 : (sumSamples(before, `${name}_count`) ?? 0);
  const useInterval = before !== undefined && countNow > countBefore;
  const bBefore = useInterval ? buckets(before, name) : new Map<number, number>();
  const count = useInterval ? countNow - countBefore : countNow;
  if (count <= 0) return null;
  const sum = useInterval ? sumNow - (sumSamples(before, `${name}_sum`) ?? 0) : sumNow;
  let p99AtMostS = Number.POSITIVE_INFINITY;
  for (const bound of [...bNow.keys()].sort((a, b) => a - b)) {
    const cumulative = (bNow.get(bound) ?? 0) - (bBefore.get(bound) ?? 0);
    if (cumulative >= 0.99 * count) {
      p99AtMostS = bound;
      break;
    }
  }
  return { over: useInterval ? 'interval' : 'uptime', count, meanS: sum / count, p99AtMostS };
}

function isoSeconds(unixS: number): string {
  return new Date(unixS * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Builds the report from the latest page, the one before it (undefined: rates unknown) and the time between. */
export function buildStatusReport(endpoint: string, now: PromPage, before: PromPage | undefined, dtS: number | null, nowUnixS: number): StatusReport {
  const problems: string[] = [];
  let down = false;
  let warn = false;
  const build = selectSamples(now, 'ntsd_build_info')[0];
  if (build === undefined) {
    return {
      endpoint, health: 'down', problems: [`${endpoint} answers, but not with ntsd metrics (no ntsd_build_info)`], intervalS: dtS,
      server: null, ntp: null, ke: null, certificate: null, certificates: [], keys: null, timeSource: null, datapath: null, threads: null,
    };
  }
  const start = gauge(now, 'process_start_time_seconds');
  const by = (name: string, label: string): Record<string, Counted> => countedBy(now, before, dtS, name, label);
  const c = (name: string, match: Record<string, string> = {}): Counted => counted(now, before, dtS, name, match);

  const responses: Record<string, Counted> = {};
  for (const s of selectSamples(now, 'ntsd_ntp_responses_total')) {
    const protocol = s.labels['protocol'] ?? '?';
    const kind = s.labels['kind'] ?? '?';
    responses[`${protocol}/${kind}`] = c('ntsd_ntp_responses_total', { protocol, kind });
  }

  // One series per certificate name (an older ntsd exports one series without labels).
  const certificates: CertificateExpiry[] = selectSamples(now, 'ntsd_tls_certificate_expiry_timestamp_seconds')
    .filter((s) => s.value > 0)
    .map((s) => ({ name: s.labels['name'] ?? null, notAfter: isoSeconds(s.value), expiresInS: s.value - nowUnixS }))
    .sort((a, b) => a.expiresInS - b.expiresInS);
  const certificate = certificates[0] ?? null;
  for (const cert of certificates) {
    const name = cert.name === null ? '' : ` (${cert.name})`;
    if (cert.expiresInS <= 0) {
      down = true;
      problems.push(`the NTS-KE certificate expired at ${cert.notAfter}${name}`);
    } else if (cert.expiresInS < CERT_WARNING_S) {
      warn = true;
      problems.push(`the NTS-KE certificate expires within 7 days${name}: ${cert.notAfter}`);
    }
  }

  const created = gauge(now, 'ntsd_keyset_current_key_created_timestamp_seconds');
  const keyId = gauge(now, 'ntsd_keyset_current_key_id');
  const synchronised = gauge(now, 'ntsd_time_source_synchronized');
  if (synchronised === 0) {
    warn = true;
    problems.push('ntsd answers "unsynchronised" (leap indicator 3 or stratum 16): check the host time daemon');
  }
  const ntpRestarts = c('ntsd_worker_restarts_total');
  const keRestarts = c('ntsd_ke_thread_restarts_total');
  if ((ntpRestarts.perS ?? 0) > 0 || (keRestarts.perS ?? 0) > 0) {
    warn = true;
    problems.push('a thread died and was restarted in the last interval');
  }
  const datapath = selectSamples(now, 'ntsd_ntp_datapath_info');
  const clientsTracked = gauge(now, 'ntsd_clients_tracked');
  const aeadSamples = selectSamples(now, 'ntsd_aead_backend_info');
  const aead: Record<string, string> = {};
  for (const sample of aeadSamples) if (sample.labels['aead'] !== undefined) aead[sample.labels['aead']] = sample.labels['backend'] ?? '?';

  return {
    endpoint,
    health: down ? 'down' : warn ? 'warning' : 'ok',
    problems,
    intervalS: before === undefined ? null : dtS,
    server: { version: build.labels['version'] ?? null, node: build.labels['node'] ?? null, uptimeS: start === null ? null : nowUnixS - start },
    ntp: {
      received: c('ntsd_ntp_packets_received_total'),
      responses,
      dropped: c('ntsd_ntp_dropped_total'),
      droppedByReason: by('ntsd_ntp_dropped_total', 'reason'),
      naks: c('ntsd_nts_nak_total'),
      naksByReason: by('ntsd_nts_nak_total', 'reason'),
      cookiesIssuedVia: by('ntsd_nts_cookies_issued_total', 'via'),
      cookieDecodesByKeyAge: by('ntsd_nts_cookie_decodes_total', 'key_age'),
      requestDuration: durationSummary(now, before, 'ntsd_ntp_request_duration_seconds'),
    },
    ke: {
      accepted: c('ntsd_ke_connections_accepted_total'),
      rejectedByReason: by('ntsd_ke_connections_rejected_total', 'reason'),
      sessionsByOutcome: by('ntsd_ke_sessions_total', 'outcome'),
      aeadsNegotiated: by('ntsd_ke_aead_negotiated_total', 'aead'),
      activeConnections: gauge(now, 'ntsd_ke_active_connections'),
      sessionDuration: durationSummary(now, before, 'ntsd_ke_session_duration_seconds'),
    },
    certificate,
    certificates,
    keys: {
      mode: selectSamples(now, 'ntsd_keyset_mode').find((m) => m.value === 1)?.labels['mode'] ?? null,
      // The gauges read 0 until the daemon has a keyset.
      currentKeyId: keyId === null || created === null || created <= 0 ? null : keyId.toString(16).padStart(8, '0'),
      currentKeyCreated: created !== null && created > 0 ? isoSeconds(created) : null,
      currentKeyAgeS: created !== null && created > 0 ? nowUnixS - created : null,
      keysHeld: gauge(now, 'ntsd_keyset_keys'),
      rotationsByResult: by('ntsd_keyset_rotations_total', 'result'),
      persistFailures: c('ntsd_keyset_persist_failures_total'),
      tlsReloadsByResult: by('ntsd_tls_reloads_total', 'result'),
    },
    timeSource: {
      synchronised: synchronised === null ? null : synchronised === 1,
      stratum: gauge(now, 'ntsd_time_source_stratum'),
      rootDistanceS: gauge(now, 'ntsd_time_source_root_distance_seconds'),
    },
    datapath: datapath.length === 0 ? null : datapath.map((s) => ({ ...s.labels })),
    aead: aeadSamples.length === 0 ? null : aead,
    threads: { ntpRestarts, keRestarts },
    clients: clientsTracked === null ? null : { tracked: clientsTracked, capacity: gauge(now, 'ntsd_client_log_capacity_clients') ?? 0, topRequestShare: gauge(now, 'ntsd_clients_top_request_share') ?? 0 },
  };
}

/** The report for an endpoint that could not be read. */
export function downReport(endpoint: string, problem: string): StatusReport {
  return {
    endpoint, health: 'down', problems: [problem], intervalS: null,
    server: null, ntp: null, ke: null, certificate: null, certificates: [], keys: null, timeSource: null, datapath: null, threads: null,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Text.

/** "3d4h", "2h5m", "4m10s", "12s". */
export function formatDurationS(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${s % 60}s`;
  return `${s}s`;
}

/** Seconds as µs / ms / s with 3 significant digits. */
export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return seconds > 0 ? '+Inf' : 'n/a';
  const abs = Math.abs(seconds);
  if (abs < 1e-3) return `${Number((seconds * 1e6).toPrecision(3))} µs`;
  if (abs < 1) return `${Number((seconds * 1e3).toPrecision(3))} ms`;
  return `${Number(seconds.toPrecision(3))} s`;
}

function rate(perS: number | null): string {
  if (perS === null) return '-';
  return perS === 0 ? '0' : perS < 10 ? perS.toFixed(2) : perS.toFixed(1);
}

const LABEL_WIDTH = 34;

function row(label: string, value: Counted): string {
  return `  ${label.padEnd(LABEL_WIDTH)}${String(value.total).padStart(10)}${rate(value.perS).padStart(10)}`;
}

/** Rows for a by-label map: every key with a non-zero total (or all of `always`). */
function rows(prefix: string, values: CountedBy, always: readonly string[] = []): string[] {
  return Object.entries(values)
    .filter(([key, v]) => v.total > 0 || always.includes(key))
    .map(([key, v]) => row(`${prefix}${key}`, v));
}

function durationLine(label: string, d: DurationSummary | null): string {
  if (d === null) return `  ${label.padEnd(LABEL_WIDTH)}no samples yet`;
  const over = d.over === 'interval' ? 'in the last interval' : 'since start';
  return `  ${label.padEnd(LABEL_WIDTH)}mean ${formatSeconds(d.meanS)}, p99 ≤ ${formatSeconds(d.p99AtMostS)} (${d.count} ${over})`;
}

/** The human summary, one string per line. */
export function formatStatusReport(r: StatusReport): string[] {
  const out: string[] = [];
  const server = r.server;
  if (server === null) {
    out.push(`ntsd at ${r.endpoint}: DOWN`);
    for (const p of r.problems) out.push(`  ${p}`);
    return out;
  }
  out.push(
    `ntsd ${server.version ?? '?'} on Node.js ${server.node ?? '?'}, up ${server.uptimeS === null ? '?' : formatDurationS(server.uptimeS)}, at ${r.endpoint}`,
  );
  out.push(`health: ${r.health.toUpperCase()}${r.problems.length > 0 ? ` (${r.problems.length} problem${r.problems.length > 1 ? 's' : ''})` : ''}`);
  for (const p of r.problems) out.push(`  - ${p}`);
  out.push('');
  const perLabel = r.intervalS === null ? '' : `  per s, last ${r.intervalS.toFixed(1)} s`;
  if (r.ntp !== null) {
    out.push(`${'NTP / NTS'.padEnd(LABEL_WIDTH + 2)}${'total'.padStart(10)}${perLabel}`);
    out.push(row('packets received', r.ntp.received));
    out.push(...rows('replies ', r.ntp.responses, ['ntp/time', 'nts/time', 'nts/nts_nak']));
    out.push(row('dropped', r.ntp.dropped));
    out.push(...rows('  ', r.ntp.droppedByReason));
    out.push(row('NTS NAKs', r.ntp.naks));
    out.push(...rows('  ', r.ntp.naksByReason));
    out.push(...rows('cookies issued via ', r.ntp.cookiesIssuedVia, ['ke', 'ntp']));
    out.push(...rows('cookies opened, key ', r.ntp.cookieDecodesByKeyAge));
    out.push(durationLine('request time', r.ntp.requestDuration));
  }
  if (r.ke !== null) {
    out.push('NTS-KE');
    out.push(row('connections accepted', r.ke.accepted));
    out.push(...rows('connections rejected: ', r.ke.rejectedByReason));
    out.push(...rows('sessions: ', r.ke.sessionsByOutcome, ['success']));
    out.push(...rows('agreed ', Object.fromEntries(Object.entries(r.ke.aeadsNegotiated).map(([name, v]) => [name.replace(/^AEAD_/, ''), v]))));
    out.push(`  ${'active connections'.padEnd(LABEL_WIDTH)}${String(r.ke.activeConnections ?? '-').padStart(10)}`);
    out.push(durationLine('session time', r.ke.sessionDuration));
  }
  out.push('');
  if (r.certificates.length === 0) out.push(`${'certificate'.padEnd(14)}none reported (no NTS-KE listener?)`);
  for (const cert of r.certificates) {
    const name = cert.name === null ? '' : `${cert.name}: `;
    out.push(`${'certificate'.padEnd(14)}${name}expires ${cert.notAfter}, in ${formatDurationS(cert.expiresInS)}`);
  }
  const k = r.keys;
  if (k !== null) {
    const id = k.currentKeyId === null ? 'current key' : `current key ${k.currentKeyId}`;
    const age = k.currentKeyAgeS === null ? 'not created yet' : `created ${k.currentKeyCreated ?? '?'}, ${formatDurationS(k.currentKeyAgeS)} old`;
    out.push(`${'keys'.padEnd(14)}${id} ${age}; ${k.keysHeld ?? '?'} keys held${k.mode === null ? '' : `; mode ${k.mode}`}`);
    const rot = (key: string): number => k.rotationsByResult[key]?.total ?? 0;
    const rel = (key: string): number => k.tlsReloadsByResult[key]?.total ?? 0;
    out.push(`${''.padEnd(14)}rotations ${rot('success')} ok / ${rot('failure')} failed; keyset write failures ${k.persistFailures.total}; TLS reloads ${rel('success')} ok / ${rel('failure')} failed`);
  }
  const ts = r.timeSource;
  if (ts !== null) {
    const state = ts.synchronised === null ? 'unknown' : ts.synchronised ? 'synchronised' : 'UNSYNCHRONISED';
    out.push(`${'time source'.padEnd(14)}${state}, stratum ${ts.stratum ?? '?'}, root distance ${ts.rootDistanceS === null ? '?' : formatSeconds(ts.rootDistanceS)}`);
  }
  const dp = r.datapath;
  out.push(`${'datapath'.padEnd(14)}${dp === null ? 'not reported by this ntsd' : dp.map((l) => Object.entries(l).map(([a, b]) => `${a}=${b}`).join(' ')).join('; ')}`);
  const aead = r.aead;
  if (aead !== undefined) {
    const names = aead === null ? [] : Object.keys(aead).sort();
    const text = names.map((n) => `${n.replace(/^AEAD_/, '')}=${aead?.[n] ?? '?'}`).join(' ');
    const table = names.some((n) => aead?.[n] === 'javascript') ? ' (javascript: table-driven AES, not constant-time)' : '';
    out.push(`${'aead'.padEnd(14)}${aead === null ? 'not reported by this ntsd' : `${text}${table}`}`);
  }
  const t = r.threads;
  if (t !== null) {
    out.push(`${'threads'.padEnd(14)}restarts: NTP ${t.ntpRestarts.total} (${rate(t.ntpRestarts.perS)}/s), NTS-KE ${t.keRestarts.total} (${rate(t.keRestarts.perS)}/s)`);
  }
  const c = r.clients;
  if (c !== undefined) {
    const text =
      c === null
        ? 'not reported by this ntsd'
        : c.capacity === 0
          ? 'client log off (client-log-size = 0)'
          : `${c.tracked} tracked (log holds ${c.capacity}); busiest client ${(100 * c.topRequestShare).toFixed(1)} % of NTP requests (ntsd clients)`;
    out.push(`${'clients'.padEnd(14)}${text}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Scraping and the command.

/** One GET of the endpoint: the parsed page, or why it could not be read. */
export async function scrapePage(url: string, timeoutMs: number): Promise<{ ok: true; page: PromPage } | { ok: false; problem: string }> {
  let text: string;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    text = await res.text();
    if (res.status !== 200) return { ok: false, problem: `${url} answered HTTP ${res.status}` };
  } catch (error) {
    const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : '';
    const message = error instanceof Error ? error.message : String(error);
    return { ok: false, problem: `cannot read ${url}: ${message}${cause === '' ? '' : ` (${cause})`}` };
  }
  const parsed = parsePromText(text);
  if (!parsed.ok) return { ok: false, problem: `${url} is not Prometheus text: ${parsed.error}` };
  return { ok: true, page: parsed.page };
}

/** The endpoint to read: --metrics, else the config file's metrics-listen, else the default. */
function endpointFrom(metrics: string | undefined, configPath: string | undefined): string {
  if (metrics !== undefined) return metrics;
  if (configPath === undefined) return DEFAULT_METRICS_URL;
  const listen = loadConfigFile(configPath).observability.metricsListen;
  if (listen === undefined) throw new StatusUsageError(`${configPath}: metrics are off ([observability] metrics-listen = "")`);
  const wildcard = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '::1' : listen.host;
  const host = wildcard.includes(':') ? `[${wildcard}]` : wildcard;
  return `http://${host}:${listen.port}/metrics`;
}

/** A usage problem found while reading the options (exit 64). */
export class StatusUsageError extends Error {}

/** A bad command line: ours, or node:util parseArgs's (unknown option, missing value). */
export function isUsageError(error: unknown): error is Error {
  return error instanceof StatusUsageError || (error instanceof Error && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS'));
}

/** parseArgs options of every command that reads a running ntsd's metrics listener (status, clients). */
export const ENDPOINT_OPTIONS = {
  metrics: { type: 'string' },
  config: { type: 'string', short: 'c' },
  'timeout-ms': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** The metrics URL (from --metrics, or -c's metrics-listen) and --timeout-ms; a StatusUsageError when they are wrong. */
export function endpointOptions(
  values: { readonly metrics?: string | undefined; readonly config?: string | undefined; readonly 'timeout-ms'?: string | undefined },
  positionals: readonly string[],
): { url: string; timeoutMs: number } {
  if (positionals.length > 0) throw new StatusUsageError(`unexpected argument "${positionals[0] ?? ''}"`);
  if (values.metrics !== undefined && values.config !== undefined) throw new StatusUsageError('give --metrics or -c, not both');
  const timeoutMs = Number(values['timeout-ms'] ?? '3000');
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) throw new StatusUsageError('--timeout-ms takes whole milliseconds, 1 to 600000');
  const url = endpointFrom(values.metrics, values.config);
  if (!/^https?:\/\//.test(url)) throw new StatusUsageError(`--metrics takes an http:// URL, not "${url}"`);
  return { url, timeoutMs };
}

/** Options of collectStatus. */
export interface StatusOptions {
  readonly url: string;
  /** Seconds between the two scrapes; 0 = one scrape, no rates. */
  readonly intervalS: number;
  readonly timeoutMs: number;
}

/** Scrapes once or twice and builds the report. */
export async function collectStatus(options: StatusOptions): Promise<StatusReport> {
  const first = await scrapePage(options.url, options.timeoutMs);
  if (!first.ok) return downReport(options.url, first.problem);
  const firstAt = performance.now();
  if (options.intervalS <= 0) return buildStatusReport(options.url, first.page, undefined, null, Date.now() / 1000);
  await new Promise((resolve) => setTimeout(resolve, options.intervalS * 1000));
  const second = await scrapePage(options.url, options.timeoutMs);
  if (!second.ok) return downReport(options.url, second.problem);
  const dtS = (performance.now() - firstAt) / 1000;
  return buildStatusReport(options.url, second.page, first.page, dtS, Date.now() / 1000);
}

/** Exit code for a health. */
export function statusExitCode(health: Health): number {
  return health === 'ok' ? StatusExitCode.ok : health === 'warning' ? StatusExitCode.warning : StatusExitCode.down;
}

/** Runs `ntsd status` with its arguments (after "status"); resolves to the exit code. */
export async function runStatus(args: readonly string[], write: (line: string) => void): Promise<number> {
  let options: StatusOptions;
  let json: boolean;
  try {
    const { values, positionals } = parseArgs({
      args: [...args],
      allowPositionals: true,
      strict: true,
      options: { ...ENDPOINT_OPTIONS, interval: { type: 'string' } },
    });
    if (values.help === true) {
      write(commandHelp('status'));
      return StatusExitCode.ok;
    }
    const { url, timeoutMs } = endpointOptions(values, positionals);
    const intervalS = Number(values.interval ?? '1');
    if (!Number.isFinite(intervalS) || intervalS < 0 || intervalS > 3600) throw new StatusUsageError('--interval takes seconds, 0 to 3600');
    options = { url, intervalS, timeoutMs };
    json = values.json === true;
  } catch (error) {
    if (!isUsageError(error)) throw error;
    process.stderr.write(`ntsd status: ${error.message}\n${STATUS_USAGE}\n`);
    return StatusExitCode.usage;
  }
  const report = await collectStatus(options);
  if (json) write(JSON.stringify({ ...report, exitCode: statusExitCode(report.health) }, null, 2));
  else for (const line of formatStatusReport(report)) write(line);
  return statusExitCode(report.health);
}
