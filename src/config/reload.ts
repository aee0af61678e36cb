/**
 * What a SIGHUP may change in a running daemon (OPERATIONS.md "Signals"). The re-read file is validated as
 * at start; then the settings that apply at runtime are taken from it (log level, NTP access lists and rate
 * limits, KE client rate limits, connection caps and access lists) and every other difference is listed as
 * needing a restart. No I/O but reading the file; the daemon applies the result.
 */
import { loadConfigFile } from './load.js';
import type { Config, KeListenerConfig, KeRuntimeSettings } from './schema.js';
import { NtsdError } from '../errors.js';

/** The part of a KE listener's table (`[[nts-ke-server]]`, `[pool-ke]`) a SIGHUP applies at runtime (the rest needs a restart). */
export function keRuntimeSettings(config: KeListenerConfig): KeRuntimeSettings {
  return {
    clientRateLimit: config.clientRateLimit,
    concurrentConnections: config.concurrentConnections,
    concurrentConnectionsPerSource: config.concurrentConnectionsPerSource,
    access: config.access,
  };
}

/**
 * Settings that a SIGHUP reload cannot apply (OPERATIONS.md "Signals": such a change is refused with a
 * warning). Returns the key paths that differ between the running and the re-read configuration; an empty
 * list means the new file can be applied at runtime (log level, KE limits and rate limits, certificate
 * paths, AEAD list, ntp-server/ntp-port, key rotation interval and stale-key-count).
 */
export function changesRequiringRestart(running: Config, next: Config): string[] {
  const changed: string[] = [];
  const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
  if (running.servers.length !== next.servers.length) changed.push('server');
  running.servers.forEach((s, i) => {
    const n = next.servers[i];
    if (n !== undefined && !same(s.listen, n.listen)) changed.push(`server[${i}].listen`);
  });
  if (running.ntsKeServers.length !== next.ntsKeServers.length) changed.push('nts-ke-server');
  running.ntsKeServers.forEach((k, i) => {
    const n = next.ntsKeServers[i];
    if (n !== undefined && !same(k.listen, n.listen)) changed.push(`nts-ke-server[${i}].listen`);
  });
  if (running.keyset.mode !== next.keyset.mode) changed.push('keyset.mode');
  if (running.keyset.keyStoragePath !== next.keyset.keyStoragePath) changed.push('keyset.key-storage-path');
  if (running.keyset.sharedSecretPath !== next.keyset.sharedSecretPath) changed.push('keyset.shared-secret-path');
  if (running.keyset.acceptSharedSecretPath !== next.keyset.acceptSharedSecretPath) changed.push('keyset.accept-shared-secret-path');
  if (running.observability.logFormat !== next.observability.logFormat) changed.push('observability.log-format');
  if (running.observability.logFile !== next.observability.logFile) changed.push('observability.log-file');
  if (!same(running.observability.metricsListen, next.observability.metricsListen)) changed.push('observability.metrics-listen');
  if (running.observability.clientLogSize !== next.observability.clientLogSize) changed.push('observability.client-log-size');
  if (!same(running.workerPool, next.workerPool)) changed.push('worker-pool');
  if (!same(running.timeSource, next.timeSource)) changed.push('time-source');
  // [pool-ke]: what keRuntimeSettings takes applies at runtime (as for [[nts-ke-server]]); any other difference does not.
  const poolKeChanged =
    running.poolKe === undefined || next.poolKe === undefined
      ? running.poolKe !== next.poolKe
      : !same({ ...running.poolKe, ...keRuntimeSettings(next.poolKe) }, next.poolKe);
  if (poolKeChanged) changed.push('pool-ke');
  return changed;
}

/** The outcome of re-reading the configuration: what to apply now and what waits for a restart. */
export type ConfigReload =
  | { readonly ok: true; readonly applied: Config; readonly notApplied: readonly string[] }
  | { readonly ok: false; readonly problems: readonly string[] };

/** Merges the runtime-changeable settings of `next` into `running`, listing the changes that need a restart. */
export function mergeReloadedConfig(running: Config, next: Config): { applied: Config; notApplied: string[] } {
  const applied: Config = {
    ...running,
    observability: { ...running.observability, logLevel: next.observability.logLevel },
    ntsKeServers: running.ntsKeServers.map((k, i) => {
      const n = next.ntsKeServers[i];
      return n === undefined ? k : { ...k, ...keRuntimeSettings(n) };
    }),
    poolKe: running.poolKe === undefined || next.poolKe === undefined ? running.poolKe : { ...running.poolKe, ...keRuntimeSettings(next.poolKe) },
    // NTP access lists and rate limits apply at runtime; the rate-limit table keeps its size until a restart,
    // and interleaved mode (socket options and its table, made at start) its settings.
    servers: running.servers.map((s, i) => {
      const n = next.servers[i];
      return n === undefined ? s : { ...s, access: n.access, rateLimit: { ...n.rateLimit, tableSize: s.rateLimit.tableSize } };
    }),
  };
  const needRestart = changesRequiringRestart(running, next);
  const sections = ['servers', 'ntsKeServers', 'keyset', 'observability', 'workerPool', 'timeSource'] as const;
  const otherSections = sections.filter((k) => JSON.stringify(applied[k]) !== JSON.stringify(next[k]));
  return { applied, notApplied: needRestart.length > 0 ? needRestart : otherSections };
}

/** Re-reads `path` and merges it into `running`; an invalid file is reported and changes nothing. */
export function reloadConfig(path: string, running: Config): ConfigReload {
  let next: Config;
  try {
    next = loadConfigFile(path);
  } catch (error) {
    return { ok: false, problems: error instanceof NtsdError ? error.details : [String(error)] };
  }
  return { ok: true, ...mergeReloadedConfig(running, next) };
}
