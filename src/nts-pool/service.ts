/**
 * The `[pool-ke]` role of the daemon (README "Pools"): reads the pool name's certificate and the sources'
 * CA file, starts the front end (nts-pool/front-end.ts) and wires it to the metrics. Kept out of io/
 * like nts-ke/service.ts.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { PoolKeConfig } from '../config/schema.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { PoolKeFrontEnd } from './front-end.js';
import type { PoolKeMetrics } from '../obs/pool-metrics.js';

function readPem(path: string, key: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new NtsdError(NtsdErrorCode.TLS_MATERIAL_INVALID, `pool-ke.${key}: cannot read ${path}`, { cause: error });
  }
}

/** Starts the pool front end; throws NtsdError for unusable TLS material or a failed bind. */
export async function startPoolKe(config: PoolKeConfig, logger: Logger, metrics: PoolKeMetrics): Promise<PoolKeFrontEnd> {
  const chain = readPem(config.certificateChainPath, 'certificate-chain-path');
  const key = readPem(config.privateKeyPath, 'private-key-path');
  try {
    createSecureContext({ cert: chain, key, minVersion: 'TLSv1.3' });
  } catch (error) {
    throw new NtsdError(NtsdErrorCode.TLS_MATERIAL_INVALID, 'pool-ke: the certificate chain and private key do not form a usable pair', { cause: error });
  }
  const ca = config.upstreamCaPath === undefined ? undefined : readPem(config.upstreamCaPath, 'upstream-ca-path');
  const frontEnd = new PoolKeFrontEnd({
    listen: { host: config.listen.host, port: config.listen.port },
    certificateChainPem: chain,
    privateKeyPem: key,
    keyExchangeTimeoutMs: config.keyExchangeTimeoutMs,
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    concurrentConnections: config.concurrentConnections,
    maxRequestBytes: config.maxRequestBytes,
    capabilityCacheS: config.capabilityCacheS,
    healthCheckIntervalS: config.healthCheckIntervalS,
    connectionsPerSource: config.connectionsPerSource,
    upstreamCaPem: ca,
    sources: config.sources,
    logger,
    onOutcome: (outcome) => metrics.session(outcome),
    onUpstream: (source, kind, result) => metrics.upstream(source, kind, result),
    onHealth: (source, healthy) => metrics.health(source, healthy),
  });
  try {
    await frontEnd.start();
  } catch (error) {
    await frontEnd.stop();
    throw new NtsdError(NtsdErrorCode.BIND_FAILED, `pool-ke.listen: cannot listen on ${config.listen.host}:${config.listen.port}`, { cause: error });
  }
  return frontEnd;
}
