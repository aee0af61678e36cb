/**
 * Operational failures (files, TLS material, sockets, configuration) carry a stable `code`.
 * Bad input from a network peer is never an NtsdError: the core returns it as a value.
 */

/** Stable error codes, grouped by the exit code they map to in main.ts. */
export const NtsdErrorCode = {
  /** Configuration file unreadable or invalid (exit 78, EX_CONFIG). */
  CONFIG_INVALID: 'CONFIG_INVALID',
  /** Certificate chain or private key unusable (exit 78). */
  TLS_MATERIAL_INVALID: 'TLS_MATERIAL_INVALID',
  /** The key-storage file cannot be read or written because of permissions (exit 78). */
  KEYSET_UNREADABLE: 'KEYSET_UNREADABLE',
  /** Persisting the key set failed. */
  KEYSET_PERSIST_FAILED: 'KEYSET_PERSIST_FAILED',
  /** A listener could not bind (exit 71, EX_OSERR). */
  BIND_FAILED: 'BIND_FAILED',
  /** A worker thread could not be started or died repeatedly. */
  WORKER_FAILED: 'WORKER_FAILED',
  /** A command-line usage error (exit 64, EX_USAGE). */
  USAGE: 'USAGE',
} as const;
/** Union of the known error codes. */
export type NtsdErrorCode = (typeof NtsdErrorCode)[keyof typeof NtsdErrorCode];

/** An operational failure with a stable code and an optional cause. */
export class NtsdError extends Error {
  /** Stable machine-readable code. */
  readonly code: NtsdErrorCode;
  /** Extra human-readable lines (e.g. one per configuration problem). */
  readonly details: readonly string[];

  constructor(code: NtsdErrorCode, message: string, options?: { cause?: unknown; details?: readonly string[] }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NtsdError';
    this.code = code;
    this.details = options?.details ?? [];
  }
}

/** sysexits(3) codes used by the CLI. */
export const ExitCode = {
  ok: 0,
  /** A check or command failed for a reason it explained. */
  failure: 1,
  usage: 64,
  /** EX_SOFTWARE: an internal bug. */
  internal: 70,
  /** EX_OSERR: a socket could not be bound. */
  osError: 71,
  /** EX_CONFIG: configuration error. */
  config: 78,
} as const;

/** Maps an error to the process exit code. */
export function exitCodeFor(error: unknown): number {
  if (!(error instanceof NtsdError)) return ExitCode.internal;
  switch (error.code) {
    case NtsdErrorCode.CONFIG_INVALID:
    case NtsdErrorCode.TLS_MATERIAL_INVALID:
    case NtsdErrorCode.KEYSET_UNREADABLE:
      return ExitCode.config;
    case NtsdErrorCode.BIND_FAILED:
      return ExitCode.osError;
    case NtsdErrorCode.USAGE:
      return ExitCode.usage;
    case NtsdErrorCode.KEYSET_PERSIST_FAILED:
    case NtsdErrorCode.WORKER_FAILED:
      return ExitCode.internal;
  }
}
