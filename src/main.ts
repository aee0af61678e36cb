#!/usr/bin/env node
/**
 * ntsd command line: run | validate | check | status | keyset inspect.
 * Maps failures to sysexits codes: 78 configuration, 64 usage, 70 internal bug.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfigFile } from './config/load.js';
import { defaultConfig, repositoryRoot } from './config/default.js';
import type { Config } from './config/schema.js';
import { ExitCode, NtsdError, exitCodeFor } from './errors.js';
import { ensureDevCertificates } from './cli/dev-certs.js';
import { runCheck } from './cli/check.js';
import { runStatus } from './cli/status.js';
import { runKeysetInspect } from './cli/keyset-inspect.js';

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

/** Where the CLI writes its output, one line per call. */
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
      return runKeysetInspect(configFrom(values.config), write);
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
