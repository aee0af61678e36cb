/**
 * The `[pool-ke]` role on the main thread (docs/pools.md). The front end is a KE listener like any
 * `[[nts-ke-server]]` (nts-ke: threads, TLS, PROXY v2, caps, access list, certificate reload, KE metrics)
 * with its own request handler: this file builds the spec its threads load (nts-pool/front-end.ts, with the
 * sources and the sources' CA file) and turns the handler's reports into the pool metrics. daemon.ts hands
 * the spec to nts-ke, so neither feature folder imports the other.
 */
import { readFileSync } from 'node:fs';
import type { PoolKeConfig } from '../config/schema.js';
import type { KeHandlerReport, KeHandlerSpec } from '../core/ke-request-handler.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import type { PoolKeMetrics } from '../obs/pool-metrics.js';
import type { PoolFrontEndOptions, PoolKeSeries } from './front-end.js';

/** The front end's handler for the KE threads; throws NtsdError TLS_MATERIAL_INVALID when `upstream-ca-path` cannot be read. */
export function poolKeHandlerSpec(config: PoolKeConfig): KeHandlerSpec {
  let upstreamCaPem: string | undefined;
  if (config.upstreamCaPath !== undefined) {
    try {
      upstreamCaPem = readFileSync(config.upstreamCaPath, 'utf8');
    } catch (error) {
      throw new NtsdError(NtsdErrorCode.TLS_MATERIAL_INVALID, `pool-ke.upstream-ca-path: cannot read ${config.upstreamCaPath}`, { cause: error });
    }
  }
  const options: PoolFrontEndOptions = {
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    capabilityCacheS: config.capabilityCacheS,
    healthCheckIntervalS: config.healthCheckIntervalS,
    connectionsPerSource: config.connectionsPerSource,
    upstreamCaPem,
    sources: config.sources.map((s) => ({ ...s })),
  };
  return { module: new URL('./front-end.js', import.meta.url).href, options };
}

/** Adds one KE thread's front-end samples to the pool metrics. */
export function recordPoolKeReport(report: KeHandlerReport, metrics: PoolKeMetrics): void {
  for (const { series, labels: l, value } of report) {
    const known = series as PoolKeSeries;
    if (known === 'session') metrics.session(l['outcome'] ?? '', value);
    else if (known === 'upstream') metrics.upstream(l['source'] ?? '', l['kind'] ?? '', l['result'] ?? '', value);
    else if (known === 'health') metrics.health(l['source'] ?? '', value === 1);
  }
}
