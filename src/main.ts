#!/usr/bin/env node
/**
 * ntsd command line: run | validate | check | status | clients | keyset inspect | help, and --version.
 * The help texts live in cli/help.ts.
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
import { runClients } from './cli/clients.js';
import { runKeysetInspect } from './cli/keyset-inspect.js';
import { commandHelp, isCommand, overviewHelp } from './cli/help.js';
import { versionReport } from './cli/version.js';

/** Shown after a usage error. */
const USAGE = overviewHelp();

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
  const [first, second] = argv;
  if (first === '--version' || first === '-V') {
    for (const line of versionReport()) write(line);
    return ExitCode.ok;
  }
  if (first === 'help' || first === '--help' || first === '-h') {
    if (second === undefined) write(overviewHelp());
    else if (second === '--help' || second === '-h') write(commandHelp('help'));
    else if (isCommand(second)) write(commandHelp(second));
    else throw usageError(`unknown command "${second}"`);
    return ExitCode.ok;
  }
  // Every command answers -h/--help with its own page (check and status parse their own options).
  if (first !== undefined && isCommand(first) && argv.slice(1).some((a) => a === '--help' || a === '-h')) {
    write(commandHelp(first));
    return ExitCode.ok;
  }
  // `check` has its own option parser (src/cli/check.ts), shared with its tests.
  if (argv[0] === 'check') return runCheck(argv.slice(1), write);
  if (argv[0] === 'status') return runStatus(argv.slice(1), write);
  if (argv[0] === 'clients') return runClients(argv.slice(1), write);
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string', short: 'c' },
    },
  });
  const [command, ...rest] = positionals;
  if (command === undefined) {
    write(USAGE);
    return ExitCode.usage;
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
