import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { OUTCOME_COUNT, OUTCOME_METRICS, Outcome } from '../../src/core/responder.js';
import { KE_REJECT_REASONS, KE_SESSION_OUTCOMES } from '../../src/core/ke-handler.js';
import {
  COOKIE_KEY_AGES,
  NTP_DROP_REASONS,
  NTP_DURATION_BUCKETS_S,
  NTP_RESPONSE_LABELS,
  NTS_NAK_REASONS,
  cookieKeyAgeLabel,
  createMetrics,
  ntpDurationBucketIndex,
  type Metrics,
} from '../../src/obs/metrics.js';
import { startMetricsServer } from '../../src/obs/metrics-http.js';

/** Every metric name of OPERATIONS.md "Metrics". */
const REQUIRED = {
  ntsd_ntp_packets_received_total: 'counter',
  ntsd_ntp_responses_total: 'counter',
  ntsd_ntp_dropped_total: 'counter',
  ntsd_nts_nak_total: 'counter',
  ntsd_nts_cookie_decodes_total: 'counter',
  ntsd_nts_cookies_issued_total: 'counter',
  ntsd_ntp_request_duration_seconds: 'histogram',
  ntsd_ntp_interleaved_responses_total: 'counter',
  ntsd_ntp_transmit_timestamps_total: 'counter',
  ntsd_ntp_interleave_table_evictions_total: 'counter',
  ntsd_ke_connections_accepted_total: 'counter',
  ntsd_ke_connections_rejected_total: 'counter',
  ntsd_ke_sessions_total: 'counter',
  ntsd_ke_session_duration_seconds: 'histogram',
  ntsd_ke_active_connections: 'gauge',
  ntsd_keyset_rotations_total: 'counter',
  ntsd_keyset_current_key_created_timestamp_seconds: 'gauge',
  ntsd_keyset_keys: 'gauge',
  ntsd_keyset_persist_failures_total: 'counter',
  ntsd_keyset_mode: 'gauge',
  ntsd_keyset_current_key_id: 'gauge',
  ntsd_tls_certificate_expiry_timestamp_seconds: 'gauge',
  ntsd_tls_reloads_total: 'counter',
  ntsd_worker_restarts_total: 'counter',
  ntsd_build_info: 'gauge',
} as const;

interface Scrape {
  status: number;
  contentType: string;
  body: string;
}

function get(port: number, path: string, method = 'GET'): Promise<Scrape> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Value of one sample line, e.g. `ntsd_ntp_dropped_total{reason="policy"}`. */
function sample(body: string, series: string): number {
  const line = body.split('\n').find((l) => l.startsWith(`${series} `));
  if (line === undefined) return assert.fail(`series ${series} not found`);
  return Number(line.slice(series.length + 1));
}

async function withServer(fn: (m: Metrics, port: number) => Promise<void>): Promise<void> {
  const m = createMetrics({ version: '9.9.9-test' });
  const server = await startMetricsServer(m.registry, '127.0.0.1', 0);
  try {
    await fn(m, server.port);
  } finally {
    await server.close();
  }
}

test('GET /metrics over real HTTP exposes every required metric with its type', () =>
  withServer(async (_m, port) => {
    const r = await get(port, '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.contentType, /^text\/plain; version=0\.0\.4/);
    for (const [name, type] of Object.entries(REQUIRED)) {
      assert.ok(r.body.includes(`# TYPE ${name} ${type}\n`), `missing ${name} (${type})`);
    }
    assert.equal(sample(r.body, `ntsd_build_info{version="9.9.9-test",node="${process.versions.node}"}`), 1);
    // prom-client default metrics share the registry (event-loop lag included).
    assert.match(r.body, /^nodejs_eventloop_lag_seconds /m);
    assert.match(r.body, /^process_cpu_seconds_total /m);
  }));

test('labelled counters start at 0 for every label value', () =>
  withServer(async (_m, port) => {
    const { body } = await get(port, '/metrics');
    for (const [protocol, kind] of NTP_RESPONSE_LABELS) assert.equal(sample(body, `ntsd_ntp_responses_total{protocol="${protocol}",kind="${kind}"}`), 0);
    for (const reason of NTP_DROP_REASONS) assert.equal(sample(body, `ntsd_ntp_dropped_total{reason="${reason}"}`), 0);
    for (const reason of NTS_NAK_REASONS) assert.equal(sample(body, `ntsd_nts_nak_total{reason="${reason}"}`), 0);
    for (const age of COOKIE_KEY_AGES) assert.equal(sample(body, `ntsd_nts_cookie_decodes_total{key_age="${age}"}`), 0);
    for (const via of ['ke', 'ntp']) assert.equal(sample(body, `ntsd_nts_cookies_issued_total{via="${via}"}`), 0);
    for (const reason of KE_REJECT_REASONS) assert.equal(sample(body, `ntsd_ke_connections_rejected_total{reason="${reason}"}`), 0);
    for (const outcome of KE_SESSION_OUTCOMES) assert.equal(sample(body, `ntsd_ke_sessions_total{outcome="${outcome}"}`), 0);
    for (const result of ['success', 'failure']) {
      assert.equal(sample(body, `ntsd_keyset_rotations_total{result="${result}"}`), 0);
      assert.equal(sample(body, `ntsd_tls_reloads_total{result="${result}"}`), 0);
    }
  }));

test('every responder outcome maps onto pre-initialised labels', () => {
  assert.equal(OUTCOME_METRICS.length, OUTCOME_COUNT);
  for (const labels of OUTCOME_METRICS) {
    if (labels.response !== null) {
      assert.ok(NTP_RESPONSE_LABELS.some(([p, k]) => p === labels.response?.protocol && k === labels.response.kind));
    }
    if (labels.dropReason !== null) assert.ok((NTP_DROP_REASONS as readonly string[]).includes(labels.dropReason));
    if (labels.nakReason !== null) assert.ok((NTS_NAK_REASONS as readonly string[]).includes(labels.nakReason));
    assert.ok(labels.response !== null || labels.dropReason !== null, 'an outcome either answers or drops');
  }
});

test('bulk outcome tallies from workers land in the right series', () =>
  withServer(async (m, port) => {
    const counts = new Uint32Array(OUTCOME_COUNT);
    counts[Outcome.ntpTime] = 5;
    counts[Outcome.ntsTime] = 7;
    counts[Outcome.nakCookieUnknownKey] = 2;
    counts[Outcome.nakAuthFailed] = 1;
    counts[Outcome.dropRequireNts] = 3;
    m.ntp.addOutcomeCounts(counts);
    m.ntp.addOutcomeCounts(counts);
    m.ntp.addReceived(36);
    m.ntp.addCookieDecodeCounts([1, 10, 2, 0, 0, 0, 0, 0, 0, 0, 0, 4]); // next, age 0, age 1, ..., age 10
    m.ntp.addCookiesIssued('ntp', 14);
    m.ntp.addDropped('truncated', 4);
    const { body } = await get(port, '/metrics');
    assert.equal(sample(body, 'ntsd_ntp_packets_received_total'), 36);
    assert.equal(sample(body, 'ntsd_ntp_responses_total{protocol="ntp",kind="time"}'), 10);
    assert.equal(sample(body, 'ntsd_ntp_responses_total{protocol="nts",kind="time"}'), 14);
    assert.equal(sample(body, 'ntsd_ntp_responses_total{protocol="nts",kind="nts_nak"}'), 6);
    assert.equal(sample(body, 'ntsd_nts_nak_total{reason="cookie_unknown_key"}'), 4);
    assert.equal(sample(body, 'ntsd_nts_nak_total{reason="auth_failed"}'), 2);
    assert.equal(sample(body, 'ntsd_ntp_dropped_total{reason="require_nts"}'), 6);
    assert.equal(sample(body, 'ntsd_ntp_dropped_total{reason="truncated"}'), 4);
    assert.equal(sample(body, 'ntsd_nts_cookie_decodes_total{key_age="next"}'), 1);
    assert.equal(sample(body, 'ntsd_nts_cookie_decodes_total{key_age="current"}'), 10);
    assert.equal(sample(body, 'ntsd_nts_cookie_decodes_total{key_age="stale1"}'), 2);
    assert.equal(sample(body, 'ntsd_nts_cookie_decodes_total{key_age="stale8+"}'), 4);
    assert.equal(sample(body, 'ntsd_nts_cookies_issued_total{via="ntp"}'), 14);
  }));

test('cookie key ages map to a small fixed label set', () => {
  assert.equal(cookieKeyAgeLabel(-1), 'next');
  assert.equal(cookieKeyAgeLabel(0), 'current');
  assert.equal(cookieKeyAgeLabel(7), 'stale7');
  assert.equal(cookieKeyAgeLabel(8), 'stale8+');
  assert.equal(cookieKeyAgeLabel(999), 'stale8+');
});

test('request duration buckets span 5 µs to 50 ms and accept bulk tallies', () =>
  withServer(async (m, port) => {
    assert.equal(NTP_DURATION_BUCKETS_S[0], 0.000005);
    assert.equal(NTP_DURATION_BUCKETS_S.at(-1), 0.05);
    assert.equal(ntpDurationBucketIndex(0.000001), 0);
    assert.equal(ntpDurationBucketIndex(0.000005), 0);
    assert.equal(ntpDurationBucketIndex(0.000006), 1);
    assert.equal(ntpDurationBucketIndex(1), NTP_DURATION_BUCKETS_S.length);
    m.ntp.observeRequestDurationS(0.000003);
    m.ntp.observeRequestDurationS(0.00004);
    const tally = new Array<number>(NTP_DURATION_BUCKETS_S.length + 1).fill(0);
    tally[ntpDurationBucketIndex(0.00002)] = 10;
    tally[NTP_DURATION_BUCKETS_S.length] = 1;
    m.ntp.addRequestDurations(tally, 10 * 0.00002 + 2);
    const { body } = await get(port, '/metrics');
    const h = 'ntsd_ntp_request_duration_seconds';
    assert.equal(sample(body, `${h}_bucket{le="0.000005"}`), 1);
    assert.equal(sample(body, `${h}_bucket{le="0.000025"}`), 11);
    assert.equal(sample(body, `${h}_bucket{le="0.00005"}`), 12);
    assert.equal(sample(body, `${h}_bucket{le="0.05"}`), 12);
    assert.equal(sample(body, `${h}_bucket{le="+Inf"}`), 13);
    assert.equal(sample(body, `${h}_count`), 13);
    assert.ok(Math.abs(sample(body, `${h}_sum`) - (0.000003 + 0.00004 + 0.0002 + 2)) < 1e-9);
  }));

test('KE, keyset, TLS, pool and time-source setters', () =>
  withServer(async (m, port) => {
    m.ke.connectionAccepted();
    m.ke.connectionRejected('rate_limited');
    m.ke.sessionFinished('success', 0.004);
    m.ke.sessionFinished('timeout', 2);
    m.ke.setActiveConnections(3);
    m.keys.rotation('success');
    m.keys.setKeyset(1_700_000_000, 9);
    m.keys.persistFailure();
    m.keys.setMode('ratchet');
    m.keys.setCertificateExpiries(new Map([['old.example.org', 1_700_000_000]]));
    m.keys.setCertificateExpiries(new Map([['nts.example.org', 1_800_000_000], ['time.example.org', 1_900_000_000]]));
    m.keys.tlsReload('failure');
    m.ntpThreads.addRestarts(1);
    m.timeSource.set({ leap: 0, stratum: 3, precision: -22, rootDelay: 65536, rootDispersion: 32768, referenceId: 0, referenceTime: { seconds: 0, fraction: 0 } });
    const { body } = await get(port, '/metrics');
    assert.equal(sample(body, 'ntsd_ke_connections_accepted_total'), 1);
    assert.equal(sample(body, 'ntsd_ke_connections_rejected_total{reason="rate_limited"}'), 1);
    assert.equal(sample(body, 'ntsd_ke_sessions_total{outcome="success"}'), 1);
    assert.equal(sample(body, 'ntsd_ke_sessions_total{outcome="timeout"}'), 1);
    assert.equal(sample(body, 'ntsd_ke_session_duration_seconds_bucket{le="0.005"}'), 1);
    assert.equal(sample(body, 'ntsd_ke_session_duration_seconds_count'), 2);
    assert.equal(sample(body, 'ntsd_ke_active_connections'), 3);
    assert.equal(sample(body, 'ntsd_keyset_rotations_total{result="success"}'), 1);
    assert.equal(sample(body, 'ntsd_keyset_current_key_created_timestamp_seconds'), 1_700_000_000);
    assert.equal(sample(body, 'ntsd_keyset_keys'), 9);
    assert.equal(sample(body, 'ntsd_keyset_persist_failures_total'), 1);
    assert.equal(sample(body, 'ntsd_keyset_mode{mode="ratchet"}'), 1);
    assert.equal(sample(body, 'ntsd_keyset_mode{mode="local"}'), 0);
    assert.equal(sample(body, 'ntsd_tls_certificate_expiry_timestamp_seconds{name="nts.example.org"}'), 1_800_000_000);
    assert.equal(sample(body, 'ntsd_tls_certificate_expiry_timestamp_seconds{name="time.example.org"}'), 1_900_000_000);
    assert.ok(!body.includes('old.example.org'), 'a name no longer served loses its series');
    assert.equal(sample(body, 'ntsd_tls_reloads_total{result="failure"}'), 1);
    assert.equal(sample(body, 'ntsd_worker_restarts_total'), 1);
    assert.equal(sample(body, 'ntsd_time_source_synchronized'), 1);
    assert.equal(sample(body, 'ntsd_time_source_stratum'), 3);
    assert.equal(sample(body, 'ntsd_time_source_root_distance_seconds'), 1);
    m.timeSource.set({ leap: 3, stratum: 16, precision: -22, rootDelay: 0, rootDispersion: 0, referenceId: 0, referenceTime: { seconds: 0, fraction: 0 } });
    assert.equal(sample((await get(port, '/metrics')).body, 'ntsd_time_source_synchronized'), 0);
  }));

test('only /metrics is served: other paths 404, other methods 405, HEAD has no body', () =>
  withServer(async (_m, port) => {
    assert.equal((await get(port, '/')).status, 404);
    assert.equal((await get(port, '/metrics/x')).status, 404);
    assert.equal((await get(port, '/metrics', 'POST')).status, 405);
    const head = await get(port, '/metrics', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal((await get(port, '/metrics?name[]=x')).status, 200);
  }));

test('a busy port fails with BIND_FAILED; registries are independent', async () => {
  const a = createMetrics({ version: 'a', defaultMetrics: false });
  const b = createMetrics({ version: 'b', defaultMetrics: false });
  a.ntp.addReceived(1);
  assert.match(await b.registry.metrics(), /^ntsd_ntp_packets_received_total 0$/m);
  const first = await startMetricsServer(a.registry, '127.0.0.1', 0);
  try {
    await assert.rejects(startMetricsServer(b.registry, '127.0.0.1', first.port), (e: unknown) => (e as { code?: unknown }).code === 'BIND_FAILED');
  } finally {
    await first.close();
  }
});

test('client log aggregates: read at each scrape, 0 without a log; /clients only with a view', async () => {
  const m = createMetrics({ version: '9.9.9-test' });
  const plain = await startMetricsServer(m.registry, '127.0.0.1', 0);
  try {
    const r = await get(plain.port, '/metrics');
    assert.equal(sample(r.body, 'ntsd_clients_tracked'), 0);
    assert.equal(sample(r.body, 'ntsd_clients_top_request_share'), 0);
    assert.equal(sample(r.body, 'ntsd_client_log_capacity_clients'), 0);
    assert.equal((await get(plain.port, '/clients')).status, 404);
  } finally {
    await plain.close();
  }
  let summary = { tracked: 3, requests: 40, topRequests: 30 };
  m.clients.setSource(4096, () => summary);
  const viewing = await startMetricsServer(m.registry, '127.0.0.1', 0, { clients: () => ({ capacity: 4096, tracked: 0, clients: [] }) });
  try {
    let r = await get(viewing.port, '/metrics');
    assert.equal(sample(r.body, 'ntsd_clients_tracked'), 3);
    assert.equal(sample(r.body, 'ntsd_clients_top_request_share'), 0.75);
    assert.equal(sample(r.body, 'ntsd_client_log_capacity_clients'), 4096);
    summary = { tracked: 5, requests: 0, topRequests: 0 };
    r = await get(viewing.port, '/metrics');
    assert.equal(sample(r.body, 'ntsd_clients_tracked'), 5);
    assert.equal(sample(r.body, 'ntsd_clients_top_request_share'), 0, 'no requests: no share');
    const c = await get(viewing.port, '/clients');
    assert.equal(c.status, 200);
    assert.match(c.contentType, /^application\/json/);
    assert.deepEqual(JSON.parse(c.body), { capacity: 4096, tracked: 0, clients: [] });
  } finally {
    await viewing.close();
  }
});
