/**
 * The embedded development configuration: what `npm start` runs with when no `-c FILE` is given.
 *
 * Everything listens on 127.0.0.1 only, so nothing here is reachable from the network. Relative paths
 * resolve against the repository root, found from this module's location (never the current directory),
 * so `npm start` behaves the same from any working directory.
 *
 * Time source: `static`, stratum 10, reference ID "LOCL". A dev box usually has no time daemon on
 * 127.0.0.1:123, and in "follow" mode every reply would then say "unsynchronised" and local NTS clients
 * (chrony, NTPsec) would refuse every sample. Claiming a local stratum is harmless on loopback. Stratum 10
 * is the customary "local clock of last resort" value (chrony's `local` default), far enough below real
 * servers that no client would prefer it. Production configs should use the default `mode = "follow"`.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NtsdError } from '../errors.js';
import { parseConfig } from './load.js';
import type { Config } from './schema.js';

/** The embedded development configuration as TOML (also a readable example of every section). */
export const DEFAULT_CONFIG_TOML = `# ntsd embedded development configuration (loopback only).
# Relative paths resolve against the repository root.

[[server]]
listen = "127.0.0.1:11123"

[[nts-ke-server]]
listen = "127.0.0.1:14460"
certificate-chain-path = "certs/unsafe-dev-server.pem"
private-key-path = "certs/unsafe-dev-server.key"
# ntp-port is unset: the KE server advertises 11123, the port of server[0] (Port Negotiation record).
# Per-client rate limiting is off here: every local test client and benchmark shares 127.0.0.1.
client-rate-limit-interval-s = 0

[keyset]
key-storage-path = "keyset/ntsd.keys"

[observability]
log-level = "info"
log-format = "auto"
metrics-listen = "127.0.0.1:9975"

[time-source]
mode = "static"
local-stratum = 10
reference-id = "LOCL"
`;

/** The repository root: the nearest ancestor of this module that holds package.json. */
export function repositoryRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) {
      throw new NtsdError('CONFIG_INVALID', `cannot locate the repository root above ${fileURLToPath(import.meta.url)}`);
    }
    dir = parent;
  }
}

/** The embedded development configuration, validated, with paths resolved against the repository root. */
export function defaultConfig(): Config {
  const result = parseConfig(DEFAULT_CONFIG_TOML, repositoryRoot());
  if (!result.ok) {
    // A bug in this file, not an operator error.
    throw new Error(`embedded default configuration is invalid: ${result.errors.join('; ')}`);
  }
  return result.config;
}
