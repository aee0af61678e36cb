/**
 * Metrics of the NTS pool roles (README "Pools"), registered on the daemon's registry:
 *  - front end: sessions by outcome, upstream exchanges by source, kind and result, source health;
 *  - time source: pool requests (support / fixed key) by outcome.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

/** The pool metrics of one daemon. */
export interface PoolKeMetrics {
  /** One client session at the front end ended. */
  session(outcome: string): void;
  /** One exchange with a source ended. */
  upstream(source: string, kind: string, result: string): void;
  /** A source's health changed. */
  health(source: string, healthy: boolean): void;
  /** A time source answered `count` pool requests of `kind` with `outcome`. */
  timeSourceRequests(kind: string, outcome: string, count: number): void;
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
    help: 'Exchanges of the pool KE front end with its time sources, by source, kind (capabilities, cookies, health_check) and result.',
    labelNames: ['source', 'kind', 'result'],
    registers,
  });
  const healthy = new Gauge<'source'>({
    name: 'ntsd_pool_ke_source_healthy',
    help: '1 while a time source of the pool KE front end passes its health checks, else 0.',
    labelNames: ['source'],
    registers,
  });
  const poolRequests = new Counter<'kind' | 'outcome'>({
    name: 'ntsd_ke_pool_requests_total',
    help: 'Pool front-end requests answered by this time source, by kind (support, fixed_key) and outcome.',
    labelNames: ['kind', 'outcome'],
    registers,
  });
  return {
    session: (outcome) => sessions.inc({ outcome }),
    upstream: (source, kind, result) => upstream.inc({ source, kind, result }),
    health: (source, ok) => healthy.set({ source }, ok ? 1 : 0),
    timeSourceRequests: (kind, outcome, count) => {
      if (count > 0) poolRequests.inc({ kind, outcome }, count);
    },
  };
}
