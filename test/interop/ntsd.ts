/**
 * Runs the real ntsd daemon for interop tests: `node dist/src/main.js run --config FILE` in a temp
 * directory, under `setpriv --bounding-set -sys_time` like every other peer, waits for its
 * "ntsd started" log line and stops it with SIGTERM.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freeTcpPort, freeUdpPort, makeWorkDir, spawnPeer, waitFor, type PeerProcess } from './peers.js';

/** The compiled CLI next to this compiled helper (dist/test/interop/ntsd.js → dist/src/main.js). */
export const NTSD_MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

/** A running ntsd. */
export interface NtsdProcess extends PeerProcess {
  /** The parsed JSON "ntsd started" log line (its fields list the bound addresses). */
  readonly started: Record<string, unknown>;
  /** Path of the config file it was started with. */
  readonly configPath: string;
}

/** The parsed JSON log lines ntsd has printed so far (non-JSON lines are skipped). */
export function ntsdLogLines(output: string): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const parsed: unknown = JSON.parse(line);
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) lines.push(parsed as Record<string, unknown>);
    } catch {
      // A partial line (still being written) or not JSON.
    }
  }
  return lines;
}

/**
 * A loopback test configuration (OPERATIONS.md keys): NTP on 127.0.0.1:ntpPort, NTS-KE on 127.0.0.1:kePort
 * with a Port Negotiation record for ntpPort, a static stratum, metrics off, one worker thread.
 */
export function ntsdTestConfig(options: {
  readonly ntpPort: number;
  readonly kePort: number;
  readonly certPath: string;
  readonly keyPath: string;
  readonly keyStoragePath: string;
  readonly threads?: number;
  /** Further certificate pairs of the KE listener, as `[[nts-ke-server.certificate]]` tables. */
  readonly moreCertificates?: readonly { readonly certPath: string; readonly keyPath: string }[];
}): string {
  return [
    '[[server]]',
    `listen = "127.0.0.1:${options.ntpPort}"`,
    '',
    '[[nts-ke-server]]',
    `listen = "127.0.0.1:${options.kePort}"`,
    `certificate-chain-path = "${options.certPath}"`,
    `private-key-path = "${options.keyPath}"`,
    `ntp-port = ${options.ntpPort}`,
    ...(options.moreCertificates ?? []).flatMap((p) => [
      '[[nts-ke-server.certificate]]',
      `certificate-chain-path = "${p.certPath}"`,
      `private-key-path = "${p.keyPath}"`,
    ]),
    '',
    '[keyset]',
    `key-storage-path = "${options.keyStoragePath}"`,
    '',
    '[observability]',
    'log-level = "info"',
    'metrics-listen = ""',
    '',
    '[worker-pool]',
    `threads = ${options.threads ?? 1}`,
    '',
    '[time-source]',
    'mode = "static"',
    'local-stratum = 2',
    '',
  ].join('\n');
}

/**
 * Writes `configToml` to a temp directory, starts ntsd with it and resolves once it logs
 * "ntsd started" (rejects with its output if it exits first or takes longer than `startTimeoutMs`).
 */
export async function startNtsd(options: { readonly configToml: string; readonly startTimeoutMs?: number }): Promise<NtsdProcess> {
  const dir = makeWorkDir('ntsd');
  const configPath = join(dir, 'ntsd.toml');
  writeFileSync(configPath, options.configToml);
  const peer = spawnPeer(dir, process.execPath, [NTSD_MAIN, 'run', '--config', configPath]);
  let started: Record<string, unknown>;
  try {
    started = await waitFor('"ntsd started" log line', options.startTimeoutMs ?? 15_000, () => {
      const line = ntsdLogLines(peer.output()).find((l) => l['msg'] === 'ntsd started');
      if (line !== undefined) return line;
      if (!peer.running()) throw new Error(`ntsd exited with ${String(peer.exitCode())} before starting:\n${peer.output()}`);
      return undefined;
    });
  } catch (err) {
    const output = peer.output();
    await peer.stop();
    throw err instanceof Error && !err.message.includes(output) ? new Error(`${err.message}\n${output}`) : err;
  }
  return { ...peer, started, configPath };
}

/** A running ntsd on free loopback ports with the test configuration. */
export interface LoopbackNtsd extends NtsdProcess {
  readonly ntpPort: number;
  readonly kePort: number;
}

/** Picks free ports, writes ntsdTestConfig (keyset inside the daemon's temp dir) and starts ntsd. */
export async function startLoopbackNtsd(options: {
  readonly certPath: string;
  readonly keyPath: string;
  readonly threads?: number;
  /** Further certificate pairs on the KE listener. */
  readonly moreCertificates?: readonly { readonly certPath: string; readonly keyPath: string }[];
}): Promise<LoopbackNtsd> {
  const ntpPort = await freeUdpPort();
  const kePort = await freeTcpPort();
  const keysetDir = makeWorkDir('ntsd-keyset');
  const configToml = ntsdTestConfig({
    ntpPort,
    kePort,
    certPath: options.certPath,
    keyPath: options.keyPath,
    keyStoragePath: join(keysetDir, 'ntsd.keys'),
    ...(options.threads === undefined ? {} : { threads: options.threads }),
    ...(options.moreCertificates === undefined ? {} : { moreCertificates: options.moreCertificates }),
  });
  let ntsd: NtsdProcess;
  try {
    ntsd = await startNtsd({ configToml });
  } catch (err) {
    rmSync(keysetDir, { recursive: true, force: true });
    throw err;
  }
  return {
    ...ntsd,
    ntpPort,
    kePort,
    async stop(): Promise<void> {
      await ntsd.stop();
      rmSync(keysetDir, { recursive: true, force: true });
    },
  };
}
