#!/usr/bin/env node
/**
 * ntsd command line: run | validate | check | status | keyset inspect.
 * Maps failures to sysexits codes: 78 configuration, 64 usage, 70 internal bug.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfigFile } from './config/load.js';
import { defaultConfig, repositoryRoot } from './config/default.js';
import type { Config } from './config/schema.js';
import { decodeKeyset, keysetKeys, type Keyset } from './core/nts/keyset.js';
import { checkRatchetSeed, ratchetEpoch, ratchetKeyset, ratchetSeedTag } from './core/nts/ratchet.js';
import { ExitCode, NtsdError, exitCodeFor } from './errors.js';
import { ensureDevCertificates } from './cli/dev-certs.js';
import { runCheck } from './cli/check.js';
import { runStatus } from './cli/status.js';

const USAGE = `usage: ntsd <command> [options]

commands:
  run [-c FILE]                  run the daemon in the foreground; without -c, the embedded
                                 development configuration (loopback ports, dev certificates)
  validate -c FILE               check a configuration file: exit 0 if valid, 78 if not
  check HOST[:PORT] [--ca FILE] [--count N] [--timeout-ms MS]
                                 NTS-KE, then N authenticated NTP exchanges, against an NTS server (ntsd, chrony, …)
  status [--metrics URL | -c FILE] [--interval S] [--json]
                                 summary of a running ntsd from its metrics endpoint; exit 0 healthy,
                                 1 warning, 2 down (a monitoring check)
  keyset inspect [-c FILE]       key ids, ages and rotation schedule (never key bytes)

options:
  -c, --config FILE              configuration file (TOML)
  -h, --help                     this text
`;

type Write = (line: string) => void;

function usageError(message: string): NtsdError {
  return new NtsdError('USAGE', `${message}\n\n${USAGE}`);
}

/** Loads the configuration named by -c, or the embedded development default (creating dev certificates). */
function configFrom(path: string | undefined): Config {
  if (path !== undefined) return loadConfigFile(path);
  ensureDevCertificates(join(repositoryRoot(), 'certs'));
  return defaultConfig();
}

function formatAge(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d > 0 ? `${d}d${h}h` : h > 0 ? `${h}h${m}m` : `${m}m${s % 60}s`;
}

/** Reads a whole file for `keyset inspect`; a failure is KEYSET_UNREADABLE naming the TOML key. */
function readForInspect(path: string, key: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new NtsdError('KEYSET_UNREADABLE', `${key}: cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
}

function keysetInspect(config: Config, write: Write): number {
  const k = config.keyset;
  const nowS = Date.now() / 1000;
  const intervalS = k.keyRotationIntervalS;
  let ks: Keyset;
  let seedTag: number | undefined;
  write(`mode: ${k.mode}`);
  if (k.mode === 'ratchet') {
    if (k.sharedSecretPath === undefined) throw new NtsdError('CONFIG_INVALID', 'keyset.shared-secret-path: required when mode = "ratchet"');
    const seed = readForInspect(k.sharedSecretPath, 'keyset.shared-secret-path');
    const accept = k.acceptSharedSecretPath === undefined ? undefined : readForInspect(k.acceptSharedSecretPath, 'keyset.accept-shared-secret-path');
    for (const [key, bytes] of [['keyset.shared-secret-path', seed], ['keyset.accept-shared-secret-path', accept]] as const) {
      const problem = bytes === undefined ? undefined : checkRatchetSeed(bytes);
      if (problem !== undefined) throw new NtsdError('KEYSET_UNREADABLE', `${key}: ${problem.replaceAll('_', ' ')} (32..4096 octets)`);
    }
    seedTag = ratchetSeedTag(seed);
    ks = ratchetKeyset({ seed, acceptSeed: accept, intervalS, staleKeyCount: k.staleKeyCount, nowS });
    write(`shared seed: ${k.sharedSecretPath} (key-id tag ${seedTag.toString(16).padStart(2, '0')})`);
    if (accept !== undefined) write(`also accepted: ${k.acceptSharedSecretPath ?? ''} (key-id tag ${ratchetSeedTag(accept).toString(16).padStart(2, '0')})`);
    write(`epoch: ${ratchetEpoch(nowS, intervalS)} (floor(unix time / ${intervalS}))`);
  } else {
    const path = k.keyStoragePath;
    const decoded = decodeKeyset(readForInspect(path, 'keyset.key-storage-path'));
    if (!decoded.ok) {
      write(`${path}: corrupt or unreadable key storage file: ${decoded.error}`);
      return ExitCode.failure;
    }
    ks = decoded.keyset;
    write(`key storage file: ${path}${k.mode === 'follow' ? ' (followed: written by another node, never by this one)' : ''}`);
  }
  write(`rotation interval: ${intervalS} s; stale keys kept: ${ks.staleKeyCount}`);
  write('role     key id      created (UTC)              age');
  for (const key of keysetKeys(ks)) {
    const role = key === ks.current ? 'current' : key === ks.next ? 'next' : seedTag !== undefined && key.id >>> 24 !== seedTag ? 'accepted' : 'stale';
    const id = key.id.toString(16).padStart(8, '0');
    const age = nowS >= key.createdAtS ? formatAge(nowS - key.createdAtS) : `starts in ${formatAge(key.createdAtS - nowS)}`;
    write(`${role.padEnd(8)} ${id}    ${new Date(key.createdAtS * 1000).toISOString().padEnd(26)} ${age}`);
  }
  const nextRotationS = ks.currentSinceS + intervalS;
  write(`current key in use since ${new Date(ks.currentSinceS * 1000).toISOString()}`);
  if (k.mode === 'follow') {
    write(`the writer's next rotation is due ${new Date(nextRotationS * 1000).toISOString()} (in ${formatAge(nextRotationS - nowS)}, if its interval is ${intervalS} s)`);
  } else {
    write(`next rotation: ${new Date(nextRotationS * 1000).toISOString()} (in ${formatAge(nextRotationS - nowS)})`);
  }
  const oldest = ks.stale[ks.stale.length - 1] ?? ks.current;
  write(`cookies sealed since ${new Date(oldest.createdAtS * 1000).toISOString()} still open`);
  return ExitCode.ok;
}

/** Runs the CLI with `argv` (without node and script); resolves to the process exit code. */
export async function main(argv: readonly string[], write: Write = (l) => process.stdout.write(`${l}\n`)): Promise<number> {
  // `check` has its own option parser (src/cli/check.ts), shared with its tests.
  if (argv[0] === 'check') return runCheck(argv.slice(1), write);
  if (argv[0] === 'status') return runStatus(argv.slice(1), write);
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help === true || command === undefined) {
    write(USAGE);
    return command === undefined && values.help !== true ? ExitCode.usage : ExitCode.ok;
  }
  switch (command) {
    case 'run':
    {
      // Loaded only for `run`, so validate/check/inspect start fast and never depend on the daemon's modules.
      const { runDaemon } = await import('./daemon.js');
      return runDaemon(configFrom(values.config), {
        usingDefaultConfig: values.config === undefined,
        ...(values.config !== undefined ? { configPath: values.config } : {}),
      });
    }
    case 'validate': {
      if (values.config === undefined) throw usageError('validate needs --config FILE');
      loadConfigFile(values.config);
      write(`${values.config}: valid`);
      return ExitCode.ok;
    }
    case 'keyset': {
      if (rest[0] !== 'inspect') throw usageError('keyset takes the subcommand "inspect"');
      return keysetInspect(configFrom(values.config), write);
    }
    default:
      throw usageError(`unknown command "${command}"`);
  }
}

function reportFailure(error: unknown): number {
  const code = exitCodeFor(error);
  if (error instanceof NtsdError) {
    process.stderr.write(`ntsd: ${error.message}\n`);
  } else if (error instanceof Error && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`ntsd: ${error.message}\n\n${USAGE}`);
    return ExitCode.usage;
  } else {
    process.stderr.write(`ntsd: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  }
  return code;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.exitCode = reportFailure(error);
  },
);
