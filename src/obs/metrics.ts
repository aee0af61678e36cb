/**
 * Prometheus metrics (OPERATIONS.md "Metrics"): one prom-client Registry owned by the daemon and a typed facade
 * the shells call. obs/metrics-http.ts serves it.
 *
 * Rules kept here:
 * - names start with `ntsd_`, use base units, counters end in `_total`;
 * - label values come from the fixed `as const` sets below, never from a client address;
 * - every labelled counter starts at 0 for every label value, so rate() works from the first scrape;
 * - histogram buckets suit microseconds (prom-client's defaults start at 5 ms);
 * - workers own no registry: they send tallies, and the main thread adds them in bulk.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import { OUTCOME_METRICS, type OutcomeMetricLabels, type ServerFields } from '../core/responder.js';
import { KE_REJECT_REASONS, KE_SESSION_OUTCOMES, type KeRejectReasonLabel, type KeSessionOutcomeLabel } from '../core/ke-handler.js';
import type { ClientLogSummary } from '../core/client-log.js';
import { SUPPORTED_AEAD_IDS, getJavaScriptAead } from '../core/crypto/aead.js';

// ---------------------------------------------------------------------------------------------------------
// Label value sets.

/** `protocol` label of ntsd_ntp_responses_total. */
export const NTP_PROTOCOLS = ['ntp', 'nts'] as const;
/** One of NTP_PROTOCOLS. */
export type NtpProtocolLabel = (typeof NTP_PROTOCOLS)[number];
/** `kind` label of ntsd_ntp_responses_total. */
export const NTP_RESPONSE_KINDS = ['time', 'nts_nak', 'kod'] as const;
/** One of NTP_RESPONSE_KINDS. */
export type NtpResponseKindLabel = (typeof NTP_RESPONSE_KINDS)[number];
/** The (protocol, kind) pairs that can occur: a NAK is only ever an NTS answer (RFC 8915 §5.7). */
export const NTP_RESPONSE_LABELS = [
  ['ntp', 'time'],
  ['ntp', 'kod'],
  ['nts', 'time'],
  ['nts', 'nts_nak'],
  ['nts', 'kod'],
] as const satisfies readonly (readonly [NtpProtocolLabel, NtpResponseKindLabel])[];
/** `reason` label of ntsd_ntp_dropped_total. */
export const NTP_DROP_REASONS = ['malformed', 'policy', 'require_nts', 'rate_limited', 'access_denied', 'truncated'] as const;
/** One of NTP_DROP_REASONS. */
export type NtpDropReasonLabel = (typeof NTP_DROP_REASONS)[number];
/** `result` label of ntsd_ntp_transmit_timestamps_total: what became of a kernel TX stamp asked for an interleaving client. */
export const TRANSMIT_TIMESTAMP_RESULTS = ['captured', 'missing', 'late'] as const;
/** One of TRANSMIT_TIMESTAMP_RESULTS. */
export type TransmitTimestampResultLabel = (typeof TRANSMIT_TIMESTAMP_RESULTS)[number];
/** `reason` label of ntsd_nts_nak_total. */
export const NTS_NAK_REASONS = ['cookie_malformed', 'cookie_unknown_key', 'cookie_decrypt_failed', 'auth_failed'] as const;
/** One of NTS_NAK_REASONS. */
export type NtsNakReasonLabel = (typeof NTS_NAK_REASONS)[number];
/**
 * `key_age` label of ntsd_nts_cookie_decodes_total, capped so the set stays small whatever
 * stale-key-count is: "next" (pre-published key), "current", "stale1".."stale7", "stale8+".
 */
export const COOKIE_KEY_AGES = [
  'next',
  'current',
  'stale1',
  'stale2',
  'stale3',
  'stale4',
  'stale5',
  'stale6',
  'stale7',
  'stale8+',
] as const;
/** One of COOKIE_KEY_AGES. */
export type CookieKeyAgeLabel = (typeof COOKIE_KEY_AGES)[number];
/** `via` label of ntsd_nts_cookies_issued_total. */
export const COOKIE_ISSUE_PATHS = ['ke', 'ntp'] as const;
/** One of COOKIE_ISSUE_PATHS. */
export type CookieIssuePathLabel = (typeof COOKIE_ISSUE_PATHS)[number];
/** `result` label of rotation and reload counters. */
export const RESULTS = ['success', 'failure'] as const;
/** One of RESULTS. */
export type ResultLabel = (typeof RESULTS)[number];

/** Maps a keyset age (Keyset.find(): -1 = next, 0 = current, n = stale generation n) to its label. */
export function cookieKeyAgeLabel(age: number): CookieKeyAgeLabel {
  if (age < 0) return 'next';
  return COOKIE_KEY_AGES[Math.min(age, 8) + 1] ?? 'stale8+';
}

// ---------------------------------------------------------------------------------------------------------
// Buckets.

/** Upper bounds (seconds) of ntsd_ntp_request_duration_seconds: 5 µs to 50 ms. */
export const NTP_DURATION_BUCKETS_S = [
  0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
] as const;
/** Upper bounds (seconds) of ntsd_ke_session_duration_seconds: 1 ms to 10 s (the session deadline is ≤ 60 s). */
export const KE_DURATION_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** Index of the bucket that `seconds` falls in (NTP_DURATION_BUCKETS_S.length = the +Inf bucket). */
export function ntpDurationBucketIndex(seconds: number): number {
  const b = NTP_DURATION_BUCKETS_S;
  let i = 0;
  while (i < b.length && seconds > (b[i] ?? Infinity)) i++;
  return i;
}

/**
 * A label-less histogram that accepts pre-tallied bucket counts (prom-client's Histogram only takes one
 * observation at a time). Exposed in the standard `_bucket{le}` / `_sum` / `_count` form.
 */
class BulkHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #bounds: readonly number[];
  readonly #counts: Float64Array;
  #sum = 0;

  constructor(name: string, help: string, bounds: readonly number[]) {
    this.name = name;
    this.help = help;
    this.#bounds = bounds;
    this.#counts = new Float64Array(bounds.length + 1);
  }

  observe(seconds: number): void {
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && seconds > (b[i] ?? Infinity)) i++;
    this.#counts[i] = (this.#counts[i] ?? 0) + 1;
    this.#sum += seconds;
  }

  add(bucketCounts: ArrayLike<number>, sumS: number): void {
    const n = Math.min(bucketCounts.length, this.#counts.length);
    for (let i = 0; i < n; i++) this.#counts[i] = (this.#counts[i] ?? 0) + (bucketCounts[i] ?? 0);
    this.#sum += sumS;
  }

  reset(): void {
    this.#counts.fill(0);
    this.#sum = 0;
  }

  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { metricName: string; labels: Record<string, string | number>; value: number }[];
  }> {
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
    let cumulative = 0;
    this.#bounds.forEach((le, i) => {
      cumulative += this.#counts[i] ?? 0;
      values.push({ metricName: `${this.name}_bucket`, labels: { le }, value: cumulative });
    });
    cumulative += this.#counts[this.#bounds.length] ?? 0;
    values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf' }, value: cumulative });
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.#sum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: cumulative });
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }
}

function labelled<T extends string>(registry: Registry, name: string, help: string, label: T, values: readonly string[]): Counter<T> {
  const counter = new Counter<T>({ name, help, labelNames: [label], registers: [registry] });
  for (const v of values) counter.inc({ [label]: v } as Partial<Record<T, string>>, 0);
  return counter;
}

// ---------------------------------------------------------------------------------------------------------
// The facade.

/** Options of createMetrics. */
export interface MetricsOptions {
  /** ntsd version for ntsd_build_info. */
  readonly version: string;
  /** Also collect prom-client's process/Node.js metrics (event-loop lag, GC, memory). Default true. */
  readonly defaultMetrics?: boolean;
}

/** NTP responder metrics. */
export interface NtpMetrics {
  /** ntsd_ntp_packets_received_total += n. */
  addReceived(n: number): void;
  /**
   * Adds a worker's tally of responder outcomes: `counts[o]` = requests with `Outcome` value o
   * (src/core/responder.ts). Each outcome feeds responses{protocol,kind}, dropped{reason} and/or
   * nak{reason} as OUTCOME_METRICS says.
   */
  addOutcomeCounts(counts: ArrayLike<number>): void;
  /**
   * Adds a tally of cookie openings by key age: `countsByAge[0]` = opened with the next key,
   * `countsByAge[1 + a]` = opened with the key of age a (0 current, 1.. stale). Ages ≥ 8 share "stale8+".
   */
  addCookieDecodeCounts(countsByAge: ArrayLike<number>): void;
  /** ntsd_ntp_responses_total{protocol,kind} += n. */
  addResponses(protocol: NtpProtocolLabel, kind: NtpResponseKindLabel, n: number): void;
  /** ntsd_ntp_dropped_total{reason} += n. */
  addDropped(reason: NtpDropReasonLabel, n: number): void;
  /** ntsd_nts_nak_total{reason} += n. */
  addNaks(reason: NtsNakReasonLabel, n: number): void;
  /** ntsd_nts_cookie_decodes_total{key_age} += n. */
  addCookieDecodes(keyAge: CookieKeyAgeLabel, n: number): void;
  /** ntsd_nts_cookies_issued_total{via} += n. */
  addCookiesIssued(via: CookieIssuePathLabel, n: number): void;
  /** One receive-to-send duration into ntsd_ntp_request_duration_seconds (cheap: no labels, no allocation). */
  observeRequestDurationS(seconds: number): void;
  /** Pre-tallied durations: `bucketCounts[i]` per NTP_DURATION_BUCKETS_S bucket (last = +Inf), and their sum. */
  addRequestDurations(bucketCounts: ArrayLike<number>, sumS: number): void;
  /** ntsd_ntp_transmit_compensation_seconds = mean compensation added to transmit timestamps lately (ntp/transmit-estimate.ts). */
  setTransmitCompensationS(seconds: number): void;
  /** ntsd_ntp_datapath_info{datapath, timestamps} = 1 for the datapath that runs (the other series removed). */
  setDatapath(datapath: 'native' | 'dgram', timestamps: 'kernel' | 'user'): void;
  /** ntsd_ntp_interleaved_responses_total += n (RFC 9769 replies carrying the previous reply's kernel TX stamp). */
  addInterleavedResponses(n: number): void;
  /** ntsd_ntp_transmit_timestamps_total{result} += n (kernel TX stamps asked for interleaving clients). */
  addTransmitTimestamps(result: TransmitTimestampResultLabel, n: number): void;
  /** ntsd_ntp_interleave_table_evictions_total += n (entries dropped before their client came back). */
  addInterleaveEvictions(n: number): void;
}

/** NTS-KE listener metrics. */
export interface KeMetrics {
  /** ntsd_ke_connections_accepted_total += 1. */
  connectionAccepted(): void;
  /** ntsd_ke_connections_rejected_total{reason} += 1. */
  connectionRejected(reason: KeRejectReasonLabel): void;
  /** One finished session: ntsd_ke_sessions_total{outcome} and ntsd_ke_session_duration_seconds. */
  sessionFinished(outcome: KeSessionOutcomeLabel, durationS: number): void;
  /** ntsd_ke_active_connections = n. */
  setActiveConnections(n: number): void;
  /** ntsd_ke_thread_restarts_total += 1 (a dead KE thread was replaced). */
  threadRestarted(): void;
  /** Adds one stats report of a KE thread (counter deltas, session durations, the active gauge). */
  addStats(stats: KeStatsReport): void;
}

/** A KE thread's periodic report, as the metrics need it (nts-ke/messages.ts KeStats fits it). */
export interface KeStatsReport {
  readonly accepted: number;
  readonly rejected: Readonly<Partial<Record<KeRejectReasonLabel, number>>>;
  readonly sessions: Readonly<Partial<Record<KeSessionOutcomeLabel, number>>>;
  readonly sessionDurationsS: readonly number[];
  readonly cookiesIssued: number;
  /** Responses that agreed on an AEAD, by AEAD id (absent: none). */
  readonly aeads?: Readonly<Record<number, number>>;
  /** Valid PROXY v2 headers by trusted-source entry (absent when the listener is not proxied). */
  readonly proxyConnections?: Readonly<Record<string, number>>;
  readonly activeConnections: number;
}

/** Keyset and TLS material metrics. */
export interface KeyMetrics {
  /** ntsd_keyset_rotations_total{result} += 1. */
  rotation(result: ResultLabel): void;
  /**
   * ntsd_keyset_current_key_created_timestamp_seconds and ntsd_keyset_keys from a snapshot, and
   * ntsd_keyset_current_key_id when `currentKeyId` is given (key ids are public: cookies carry them in clear).
   */
  setKeyset(currentKeyCreatedUnixS: number, keyCount: number, currentKeyId?: number): void;
  /** ntsd_keyset_persist_failures_total += 1. */
  persistFailure(): void;
  /** ntsd_keyset_mode{mode} = 1 for the mode in use, 0 for the others. */
  setMode(mode: 'local' | 'follow' | 'ratchet'): void;
  /**
   * ntsd_tls_certificate_expiry_timestamp_seconds{name} = notAfter (Unix seconds), one series per name
   * (a certificate's primary name or its pair's configured `name`; the earliest when pairs share one).
   * Replaces every series: a name no longer served disappears.
   */
  setCertificateExpiries(notAfterUnixSByName: ReadonlyMap<string, number>): void;
  /** ntsd_tls_reloads_total{result} += 1. */
  tlsReload(result: ResultLabel): void;
}

/** NTP thread metrics. */
export interface NtpThreadMetrics {
  /** ntsd_worker_restarts_total += n (NTP threads replaced after dying). */
  addRestarts(n: number): void;
}

/** State of the server-fields source (ntp/server-fields.ts); not in OPERATIONS.md's list, added for alerting. */
export interface TimeSourceMetrics {
  /** Sets ntsd_time_source_synchronized (0/1), ntsd_time_source_stratum and ntsd_time_source_root_distance_seconds. */
  set(fields: ServerFields): void;
}

/** Aggregates of the client log (core/client-log.ts), read at each scrape; never an address or a per-client label. */
export interface ClientLogMetrics {
  /**
   * Sets where ntsd_clients_tracked, ntsd_clients_top_request_share and ntsd_client_log_capacity_clients
   * come from (called at each scrape).
   */
  setSource(capacity: number, summary: () => ClientLogSummary): void;
}

/** Which implementation each AEAD runs on (src/runtime/aead-openssl.ts). */
export interface AeadMetrics {
  /** ntsd_aead_backend_info{aead, backend} = 1 per AEAD (earlier series removed). */
  setBackends(backends: readonly { readonly aead: string; readonly backend: 'openssl' | 'javascript' }[]): void;
}

/** Every ntsd metric, grouped by the component that updates it. */
export interface Metrics {
  /** The registry to serve (obs/metrics-http.ts) or scrape in tests. */
  readonly registry: Registry;
  readonly aead: AeadMetrics;
  readonly ntp: NtpMetrics;
  readonly ke: KeMetrics;
  readonly keys: KeyMetrics;
  readonly ntpThreads: NtpThreadMetrics;
  readonly timeSource: TimeSourceMetrics;
  readonly clients: ClientLogMetrics;
}

/** Creates a registry holding every metric of OPERATIONS.md, labelled counters at 0. */
export function createMetrics(options: MetricsOptions): Metrics {
  const registry = new Registry();
  const registers = [registry];

  // NTP
  const received = new Counter({ name: 'ntsd_ntp_packets_received_total', help: 'NTP packets received on all [[server]] sockets.', registers });
  const responses = new Counter<'protocol' | 'kind'>({
    name: 'ntsd_ntp_responses_total',
    help: 'NTP responses sent, by protocol (ntp = unauthenticated, nts) and kind (time, nts_nak, kod).',
    labelNames: ['protocol', 'kind'],
    registers,
  });
  for (const [protocol, kind] of NTP_RESPONSE_LABELS) responses.inc({ protocol, kind }, 0);
  const dropped = labelled(registry, 'ntsd_ntp_dropped_total', 'NTP packets dropped without a response, by reason.', 'reason', NTP_DROP_REASONS);
  const naks = labelled(registry, 'ntsd_nts_nak_total', 'NTS NAK responses (RFC 8915 §5.7), by reason.', 'reason', NTS_NAK_REASONS);
  const cookieDecodes = labelled(
    registry,
    'ntsd_nts_cookie_decodes_total',
    'Cookies opened, by generation of the master key that opened them (0 = current, next = pre-published).',
    'key_age',
    COOKIE_KEY_AGES,
  );
  const cookiesIssued = labelled(registry, 'ntsd_nts_cookies_issued_total', 'NTS cookies issued, by path (ke, ntp).', 'via', COOKIE_ISSUE_PATHS);
  const ntpDuration = new BulkHistogram(
    'ntsd_ntp_request_duration_seconds',
    'Time from receiving an NTP request to sending its response, seconds.',
    NTP_DURATION_BUCKETS_S,
  );
  registry.registerMetric(ntpDuration as unknown as Metric);
  const interleavedResponses = new Counter({
    name: 'ntsd_ntp_interleaved_responses_total',
    help: 'NTP responses in RFC 9769 interleaved mode: their transmit timestamp is the kernel stamp of the previous response to that client.',
    registers,
  });
  const transmitTimestamps = labelled(
    registry,
    'ntsd_ntp_transmit_timestamps_total',
    'Kernel transmit timestamps asked for responses to interleaving clients, by result (captured, missing = never came, late = came after it could be used).',
    'result',
    TRANSMIT_TIMESTAMP_RESULTS,
  );
  const interleaveEvictions = new Counter({
    name: 'ntsd_ntp_interleave_table_evictions_total',
    help: 'Entries of the interleave tables dropped before their client came back (a full bucket, or one address over its share).',
    registers,
  });
  const transmitCompensation = new Gauge({
    name: 'ntsd_ntp_transmit_compensation_seconds',
    help: 'Mean estimated delay from reading the transmit clock to the reply leaving, added to transmit timestamps (last stats interval), seconds.',
    registers,
  });

  // Client log: aggregates only (the per-client view is GET /clients, never a label here).
  // Each gauge scans the log at its collect() (a few µs per thousand entries, once per scrape).
  let clientSource: (() => ClientLogSummary) | undefined;
  const readClients = (): ClientLogSummary | undefined => clientSource?.();
  new Gauge({
    name: 'ntsd_clients_tracked',
    help: 'Clients (IPv4 addresses, IPv6 /64 prefixes) in the client log now (ntsd clients lists them).',
    registers,
    collect() {
      this.set(readClients()?.tracked ?? 0);
    },
  });
  new Gauge({
    name: 'ntsd_clients_top_request_share',
    help: 'Share of the NTP requests counted in the client log that come from its busiest client (0..1).',
    registers,
    collect() {
      const s = readClients();
      this.set(s === undefined || s.requests === 0 ? 0 : s.topRequests / s.requests);
    },
  });
  const clientCapacity = new Gauge({ name: 'ntsd_client_log_capacity_clients', help: 'Clients the client log can hold (client-log-size; 0 = off).', registers });

  // NTS-KE
  const keAccepted = new Counter({ name: 'ntsd_ke_connections_accepted_total', help: 'NTS-KE TCP connections accepted.', registers });
  const keRejected = labelled(
    registry,
    'ntsd_ke_connections_rejected_total',
    'NTS-KE TCP connections refused before TLS, by reason.',
    'reason',
    KE_REJECT_REASONS,
  );
  const keSessions = labelled(registry, 'ntsd_ke_sessions_total', 'NTS-KE sessions finished, by outcome.', 'outcome', KE_SESSION_OUTCOMES);
  const aeadName = (id: number): string => getJavaScriptAead(id)?.name ?? `AEAD_${id}`;
  const keAeads = labelled(
    registry,
    'ntsd_ke_aead_negotiated_total',
    'NTS-KE responses that agreed on an AEAD for the client, by AEAD.',
    'aead',
    SUPPORTED_AEAD_IDS.map(aeadName),
  );
  const keDuration = new Histogram({
    name: 'ntsd_ke_session_duration_seconds',
    help: 'NTS-KE session duration from accept to close, TLS handshake included, seconds.',
    buckets: [...KE_DURATION_BUCKETS_S],
    registers,
  });
  const keActive = new Gauge({ name: 'ntsd_ke_active_connections', help: 'NTS-KE connections currently open.', registers });
  const keThreadRestarts = new Counter({ name: 'ntsd_ke_thread_restarts_total', help: 'NTS-KE threads replaced after dying.', registers });
  // Labelled by the configured proxy-trusted-sources entry (a bounded set), never by client address.
  const keProxied = new Counter({
    name: 'ntsd_ke_proxy_connections_total',
    help: 'NTS-KE connections that arrived through a trusted balancer with a valid PROXY v2 header, by trusted-source entry.',
    labelNames: ['source'],
    registers,
  });

  // Keys and TLS
  const rotations = labelled(registry, 'ntsd_keyset_rotations_total', 'Master key rotations, by result.', 'result', RESULTS);
  const keyCreated = new Gauge({
    name: 'ntsd_keyset_current_key_created_timestamp_seconds',
    help: 'Creation time (Unix seconds) of the master key that seals new cookies.',
    registers,
  });
  const keyCount = new Gauge({ name: 'ntsd_keyset_keys', help: 'Master keys held (current, next and stale).', registers });
  const currentKeyId = new Gauge({
    name: 'ntsd_keyset_current_key_id',
    help: 'Key id (u32) of the master key that seals new cookies; public, cookies carry it in clear.',
    registers,
  });
  const persistFailures = new Counter({ name: 'ntsd_keyset_persist_failures_total', help: 'Failed writes of the key storage file.', registers });
  const keysetMode = new Gauge({
    name: 'ntsd_keyset_mode',
    help: 'Where the master keys come from: 1 for the [keyset] mode in use (local, follow, ratchet), 0 for the others.',
    labelNames: ['mode'],
    registers,
  });
  const certExpiry = new Gauge({
    name: 'ntsd_tls_certificate_expiry_timestamp_seconds',
    help: 'notAfter (Unix seconds) of the certificate in use, by name (primary DNS name or configured pair name; earliest when several pairs share a name).',
    labelNames: ['name'],
    registers,
  });
  const tlsReloads = labelled(registry, 'ntsd_tls_reloads_total', 'Certificate/key reload attempts, by result.', 'result', RESULTS);

  // NTP threads
  const restarts = new Counter({ name: 'ntsd_worker_restarts_total', help: 'NTP threads replaced after dying.', registers });

  // Time source
  const synchronized = new Gauge({
    name: 'ntsd_time_source_synchronized',
    help: '1 when replies claim synchronised time (LI != 3, stratum < 16), else 0.',
    registers,
  });
  const stratum = new Gauge({ name: 'ntsd_time_source_stratum', help: 'Stratum put in replies (16 = unsynchronised).', registers });
  stratum.set(16);
  const rootDistance = new Gauge({
    name: 'ntsd_time_source_root_distance_seconds',
    help: 'Root delay / 2 + root dispersion put in replies, seconds (RFC 5905 §11.2.1).',
    registers,
  });

  const datapathInfo = new Gauge<'datapath' | 'timestamps'>({
    name: 'ntsd_ntp_datapath_info',
    help: 'Always 1; labels say which NTP datapath runs (native or dgram) and where receive timestamps come from (kernel or user).',
    labelNames: ['datapath', 'timestamps'],
    registers,
  });

  // Process
  const buildInfo = new Gauge<'version' | 'node'>({
    name: 'ntsd_build_info',
    help: 'Always 1; labels carry the ntsd and Node.js versions.',
    labelNames: ['version', 'node'],
    registers,
  });
  buildInfo.set({ version: options.version, node: process.versions.node }, 1);
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });

  const add = (counter: Counter, n: number): void => {
    if (n > 0) counter.inc(n);
  };

  const aeadBackendInfo = new Gauge<'aead' | 'backend'>({
    name: 'ntsd_aead_backend_info',
    help: 'Always 1; labels say which implementation each AEAD runs on: openssl (constant-time AES) or javascript (table-driven AES).',
    labelNames: ['aead', 'backend'],
    registers,
  });

  return {
    registry,
    aead: {
      setBackends: (backends) => {
        aeadBackendInfo.reset();
        for (const b of backends) aeadBackendInfo.set({ aead: b.aead, backend: b.backend }, 1);
      },
    },
    ntp: {
      addReceived: (n) => add(received, n),
      addOutcomeCounts: (counts) => {
        const n = Math.min(counts.length, OUTCOME_METRICS.length);
        for (let o = 0; o < n; o++) {
          const count = counts[o] ?? 0;
          const labels: OutcomeMetricLabels | undefined = OUTCOME_METRICS[o];
          if (count <= 0 || labels === undefined) continue;
          if (labels.response !== null) responses.inc({ protocol: labels.response.protocol, kind: labels.response.kind }, count);
          if (labels.dropReason !== null) dropped.inc({ reason: labels.dropReason }, count);
          if (labels.nakReason !== null) naks.inc({ reason: labels.nakReason }, count);
        }
      },
      addCookieDecodeCounts: (countsByAge) => {
        for (let i = 0; i < countsByAge.length; i++) {
          const count = countsByAge[i] ?? 0;
          if (count > 0) cookieDecodes.inc({ key_age: cookieKeyAgeLabel(i - 1) }, count);
        }
      },
      addResponses: (protocol, kind, n) => {
        if (n > 0) responses.inc({ protocol, kind }, n);
      },
      addDropped: (reason, n) => {
        if (n > 0) dropped.inc({ reason }, n);
      },
      addNaks: (reason, n) => {
        if (n > 0) naks.inc({ reason }, n);
      },
      addCookieDecodes: (keyAge, n) => {
        if (n > 0) cookieDecodes.inc({ key_age: keyAge }, n);
      },
      addCookiesIssued: (via, n) => {
        if (n > 0) cookiesIssued.inc({ via }, n);
      },
      observeRequestDurationS: (seconds) => ntpDuration.observe(seconds),
      addRequestDurations: (bucketCounts, sumS) => ntpDuration.add(bucketCounts, sumS),
      setTransmitCompensationS: (seconds) => transmitCompensation.set(seconds),
      setDatapath: (datapath, timestamps) => {
        datapathInfo.reset();
        datapathInfo.set({ datapath, timestamps }, 1);
      },
      addInterleavedResponses: (n) => add(interleavedResponses, n),
      addTransmitTimestamps: (result, n) => {
        if (n > 0) transmitTimestamps.inc({ result }, n);
      },
      addInterleaveEvictions: (n) => add(interleaveEvictions, n),
    },
    ke: {
      connectionAccepted: () => keAccepted.inc(),
      connectionRejected: (reason) => keRejected.inc({ reason }),
      sessionFinished: (outcome, durationS) => {
        keSessions.inc({ outcome });
        keDuration.observe(durationS);
      },
      setActiveConnections: (n) => keActive.set(n),
      threadRestarted: () => keThreadRestarts.inc(),
      addStats: (stats) => {
        add(keAccepted, stats.accepted);
        for (const reason of KE_REJECT_REASONS) {
          const n = stats.rejected[reason] ?? 0;
          if (n > 0) keRejected.inc({ reason }, n);
        }
        for (const outcome of KE_SESSION_OUTCOMES) {
          const n = stats.sessions[outcome] ?? 0;
          if (n > 0) keSessions.inc({ outcome }, n);
        }
        for (const d of stats.sessionDurationsS) keDuration.observe(d);
        if (stats.cookiesIssued > 0) cookiesIssued.inc({ via: 'ke' }, stats.cookiesIssued);
        for (const [id, n] of Object.entries(stats.aeads ?? {})) if (n > 0) keAeads.inc({ aead: aeadName(Number(id)) }, n);
        for (const [source, n] of Object.entries(stats.proxyConnections ?? {})) if (n > 0) keProxied.inc({ source }, n);
        keActive.set(stats.activeConnections);
      },
    },
    keys: {
      rotation: (result) => rotations.inc({ result }),
      setKeyset: (createdUnixS, count, keyId) => {
        keyCreated.set(createdUnixS);
        keyCount.set(count);
        if (keyId !== undefined) currentKeyId.set(keyId);
      },
      persistFailure: () => persistFailures.inc(),
      setMode: (mode) => {
        for (const m of ['local', 'follow', 'ratchet'] as const) keysetMode.set({ mode: m }, m === mode ? 1 : 0);
      },
      setCertificateExpiries: (byName) => {
        certExpiry.reset();
        for (const [name, notAfterUnixS] of byName) certExpiry.set({ name }, notAfterUnixS);
      },
      tlsReload: (result) => tlsReloads.inc({ result }),
    },
    ntpThreads: {
      addRestarts: (n) => add(restarts, n),
    },
    clients: {
      setSource: (capacity, summary) => {
        clientSource = summary;
        clientCapacity.set(capacity);
      },
    },
    timeSource: {
      set: (fields) => {
        synchronized.set(fields.leap !== 3 && fields.stratum < 16 ? 1 : 0);
        stratum.set(fields.stratum);
        rootDistance.set(fields.rootDelay / 65536 / 2 + fields.rootDispersion / 65536);
      },
    },
  };
}
