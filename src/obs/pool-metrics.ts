/**
 * Metrics of the NTS pool roles (docs/pools.md), registered on the daemon's registry:
 *  - front end: sessions by outcome, upstream exchanges by source, kind and result, source health (counted
 *    on the KE threads, nts-pool/front-end.ts, and added here from their stats reports);
 *  - this node as a pool's source: pool requests (support / fixed key) by outcome.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

/** The pool metrics of one daemon. */
export interface PoolKeMetrics {
  /** `count` client sessions at the front end ended with `outcome`. */
  session(outcome: string, count: number): void;
  /** `count` exchanges with a source ended. */
  upstream(source: string, kind: string, result: string, count: number): void;
  /** A source's health changed. */
  health(source: string, healthy: boolean): void;
  /** This node, as a pool's source, answered `count` pool requests of `kind` with `outcome`. */
  sourceRequests(kind: string, outcome: string, count: number): void;
}

/** Registers the pool metrics on `registry`. */
export function createPoolKeMetrics(registry: Registry): PoolKeMetrics {
  const registers = [registry];
  const sessions = new Counter<'outcome'>({
    name: 'ntsd_pool_ke_sessions_total',
    help: 'Client sessions at the pool KE front end, by outcome (one per connection).',
    labelNames: ['outcome'],
    registers,
  });
  const upstream = new Counter<'source' | 'kind' | 'result'>({
    name: 'ntsd_pool_ke_upstream_exchanges_total',
    help: 'Exchanges of the pool KE front end with its sources, by source, kind (capabilities, cookies, health_check) and result.',
    labelNames: ['source', 'kind', 'result'],
    registers,
  });
  const healthy = new Gauge<'source'>({
    name: 'ntsd_pool_ke_source_healthy',
    help: '1 while a source of the pool KE front end passes its health checks (latest report of any KE thread; each checks on its own), else 0.',
    labelNames: ['source'],
    registers,
  });
  const poolRequests = new Counter<'kind' | 'outcome'>({
    name: 'ntsd_ke_pool_requests_total',
    help: 'Pool front-end requests answered by this source, by kind (support, fixed_key) and outcome.',
    labelNames: ['kind', 'outcome'],
    registers,
  });
  return {
    session: (outcome, count) => sessions.inc({ outcome }, count),
    upstream: (source, kind, result, count) => upstream.inc({ source, kind, result }, count),
    health: (source, ok) => healthy.set({ source }, ok ? 1 : 0),
    sourceRequests: (kind, outcome, count) => {
      if (count > 0) poolRequests.inc({ kind, outcome }, count);
    },
  };
}
