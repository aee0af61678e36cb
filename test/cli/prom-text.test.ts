/** src/cli/prom-text.ts: reads what prom-client writes (ntsd's own registry), escapes, special values, and bad pages. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Gauge, Registry } from 'prom-client';
import { createMetrics } from '../../src/obs/metrics.js';
import { parsePromText, parsePromValue, selectSamples, sumSamples } from '../../src/cli/prom-text.js';

test('every sample of the ntsd registry parses, with the values prom-client holds', async () => {
  const metrics = createMetrics({ version: 'test', defaultMetrics: true });
  metrics.ntp.addReceived(5);
  metrics.ntp.addNaks('cookie_unknown_key', 2);
  metrics.ke.sessionFinished('success', 0.012);
  const text = await metrics.registry.metrics();
  const parsed = parsePromText(text);
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
  const page = parsed.page;
  const expected = (await metrics.registry.getMetricsAsJSON()).reduce((n, m) => n + m.values.length, 0);
  assert.equal(page.samples.length, expected, 'one parsed sample per registry value');
  assert.equal(sumSamples(page, 'ntsd_ntp_packets_received_total'), 5);
  assert.equal(sumSamples(page, 'ntsd_nts_nak_total', { reason: 'cookie_unknown_key' }), 2);
  assert.equal(sumSamples(page, 'ntsd_nts_nak_total'), 2);
  assert.equal(sumSamples(page, 'ntsd_ke_session_duration_seconds_count'), 1);
  assert.equal(selectSamples(page, 'ntsd_ke_session_duration_seconds_bucket', { le: '+Inf' })[0]?.value, 1);
  assert.equal(page.types.get('ntsd_ke_session_duration_seconds'), 'histogram');
  assert.equal(page.types.get('ntsd_ntp_packets_received_total'), 'counter');
  assert.equal(selectSamples(page, 'ntsd_build_info')[0]?.labels['version'], 'test');
  assert.equal(sumSamples(page, 'no_such_metric'), undefined);
});

test('label values round-trip through prom-client escaping (any string)', async () => {
  await fc.assert(
    fc.asyncProperty(fc.string({ unit: 'binary', maxLength: 40 }), fc.double({ noNaN: true }), async (value, number) => {
      const registry = new Registry();
      const g = new Gauge({ name: 'rt_gauge', help: 'h', labelNames: ['v'], registers: [registry] });
      g.set({ v: value }, number);
      const parsed = parsePromText(await registry.metrics());
      assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
      const s = parsed.page.samples[0];
      assert.equal(s?.labels['v'], value);
      assert.ok(s?.value === number, `${String(s?.value)} !== ${number}`); // -0 is written as 0
    }),
    { numRuns: 200 },
  );
});

test('escapes, NaN and infinities, timestamps, comments, spaces and a trailing comma', () => {
  const parsed = parsePromText(
    [
      '# HELP a_total something',
      '# TYPE a_total counter',
      'a_total{path="C:\\\\dir",quote="say \\"hi\\"",nl="one\\ntwo",} 3 1700000000000',
      'b NaN',
      'c{x="1"} +Inf',
      'd { y = "2" } -Inf',
      'e 1.5e-3',
      '',
    ].join('\n'),
  );
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
  const [a, b, c, d, e] = parsed.page.samples;
  assert.deepEqual(a?.labels, { path: 'C:\\dir', quote: 'say "hi"', nl: 'one\ntwo' });
  assert.equal(a?.value, 3);
  assert.ok(Number.isNaN(b?.value));
  assert.equal(c?.value, Number.POSITIVE_INFINITY);
  assert.deepEqual(d?.labels, { y: '2' });
  assert.equal(d?.value, Number.NEGATIVE_INFINITY);
  assert.equal(e?.value, 0.0015);
  assert.equal(parsed.page.types.get('a_total'), 'counter');
});

test('a malformed page is a returned error naming the line', () => {
  const cases: [string, RegExp][] = [
    ['ok 1\nbroken', /^line 2: expected a value/],
    ['x{a="1} 2', /unterminated value of label a/],
    ['x{a="\\t"} 2', /bad escape/],
    ['x{a=1} 2', /quoted value/],
    ['x{1a="1"} 2', /bad label name/],
    ['x{a="1" b="2"} 2', /expected "," or "}"/],
    ['x twelve', /not a number: twelve/],
    ['x 1 soon', /bad timestamp/],
    ['x 1 2 3', /expected a value/],
    ['9x 1', /must start with a metric name/],
    ['<html>', /must start with a metric name/],
  ];
  for (const [text, error] of cases) {
    const parsed = parsePromText(text);
    assert.ok(!parsed.ok, `accepted: ${text}`);
    assert.match(parsed.error, error, text);
  }
  assert.equal(parsePromValue('0x10'), undefined);
  assert.equal(parsePromValue('1e5'), 100000);
  assert.equal(parsePromValue('-.5'), -0.5);
});
