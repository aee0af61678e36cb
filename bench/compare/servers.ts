/**
 * The two servers of the comparison, both on loopback, unprivileged ports, in their own temp dirs, and
 * both under `setpriv --bounding-set -sys_time` (neither can ever set the clock):
 *  - ntsd through its CLI (`node dist/src/main.js run --config FILE`), static time source, stratum 2;
 *  - chronyd through test/interop/peers.ts `startChronyServer` (`-x`, `local stratum 2`, `ntsprocesses 1`).
 * Both present the same ECDSA P-256 chain. Installing chrony with apt-get when it is missing lives here too.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { makeWorkDir, spawnPeer, startChronyServer, tcpAccepts, waitFor, type PeerProcess } from '../../test/interop/peers.js';

/** A server under test. */
export interface ServerUnderTest {
  /** "ntsd" or "chrony". */
  readonly name: string;
  /** PID whose /proc entries are read (the daemon itself; setpriv execs it). */
  readonly pid: number;
  readonly ntpPort: number;
  readonly kePort: number;
  /** Output so far (for error messages). */
  output(): string;
  running(): boolean;
  /** Stops it by PID and removes its temp directory. */
  stop(): Promise<void>;
}

/** Where certificates live for both servers. */
export interface ServerTls {
  /** Leaf + CA chain, PEM. */
  readonly chainPath: string;
  /** Leaf private key (PKCS#8 PEM). */
  readonly keyPath: string;
}

const CHRONYD = '/usr/sbin/chronyd';

/** Installs Debian's chrony with apt-get when /usr/sbin/chronyd is missing. Throws when that fails. */
export function ensureChronyInstalled(log: (line: string) => void): void {
  if (existsSync(CHRONYD)) return;
  log('chronyd not found: installing chrony with apt-get (it starts no service here)');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let result = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'chrony'], { stdio: 'inherit', env });
  if (result.status !== 0) {
    spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
    result = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'chrony'], { stdio: 'inherit', env });
  }
  if (result.status !== 0 || !existsSync(CHRONYD)) throw new Error('cannot install chrony (apt-get install -y chrony failed)');
}

/** Starts ntsd from its built CLI with a loopback-only configuration; resolves once its KE port accepts. */
export async function startNtsd(options: {
  /** Path of dist/src/main.js. */
  readonly mainJs: string;
  readonly ntpPort: number;
  readonly kePort: number;
  readonly tls: ServerTls;
  /** `[worker-pool] threads`; undefined = ntsd's default. */
  readonly threads?: number | undefined;
  /** `[[nts-ke-server]] thread-niceness`; undefined = ntsd's default. */
  readonly threadNiceness?: number | undefined;
  /** `[worker-pool] datapath`; undefined = ntsd's default (auto). "native" fails when the addon is missing. */
  readonly datapath?: 'native' | 'dgram' | 'auto' | undefined;
  /** `[worker-pool] send-mode` (native datapath); undefined = ntsd's default. */
  readonly sendMode?: 'each' | 'batch' | undefined;
  /** `[[server]] interleaved` (RFC 9769); undefined = ntsd's default (on). */
  readonly interleaved?: boolean | undefined;
  /** `[observability] client-log-size` (the `ntsd clients` table); undefined = ntsd's default. */
  readonly clientLogSize?: number | undefined;
  /** Name reported in results (default "ntsd"). */
  readonly label?: string | undefined;
  /** More lines for the `[[nts-ke-server]]` table (e.g. `concurrent-connections = 512`). */
  readonly keExtra?: readonly string[];
  /** Node options before the script (e.g. `--cpu-prof`). */
  readonly nodeArgs?: readonly string[];
  readonly startTimeoutMs?: number;
}): Promise<ServerUnderTest> {
  const dir = makeWorkDir('bench-ntsd');
  const config = join(dir, 'ntsd.toml');
  const lines = [
    '# Written by bench/compare: loopback only, unprivileged ports.',
    '[[server]]',
    `listen = "127.0.0.1:${options.ntpPort}"`,
    ...(options.interleaved === undefined ? [] : [`interleaved = ${String(options.interleaved)}`]),
    '',
    '[[nts-ke-server]]',
    `listen = "127.0.0.1:${options.kePort}"`,
    `certificate-chain-path = ${JSON.stringify(options.tls.chainPath)}`,
    `private-key-path = ${JSON.stringify(options.tls.keyPath)}`,
    '# One client address produces all the load: per-client KE limits would measure the limiter.',
    'client-rate-limit-interval-s = 0',
    'concurrent-connections-per-source = 1000000',
    ...(options.threadNiceness === undefined ? [] : [`thread-niceness = ${options.threadNiceness}`]),
    ...(options.keExtra ?? []),
    '',
    '[keyset]',
    `key-storage-path = ${JSON.stringify(join(dir, 'keyset', 'ntsd.keys'))}`,
    '',
    '[observability]',
    'log-level = "info"',
    'metrics-listen = ""',
    ...(options.clientLogSize === undefined ? [] : [`client-log-size = ${options.clientLogSize}`]),
    '',
    '[worker-pool]',
    ...(options.threads === undefined ? [] : [`threads = ${options.threads}`]),
    ...(options.datapath === undefined ? [] : [`datapath = "${options.datapath}"`]),
    ...(options.sendMode === undefined ? [] : [`send-mode = "${options.sendMode}"`]),
    '',
    '[time-source]',
    'mode = "static"',
    'local-stratum = 2',
    '',
  ];
  writeFileSync(config, lines.join('\n'));
  const peer: PeerProcess = spawnPeer(dir, process.execPath, [...(options.nodeArgs ?? []), options.mainJs, 'run', '--config', config]);
  try {
    await waitFor(`ntsd NTS-KE on port ${options.kePort}`, options.startTimeoutMs ?? 15_000, async () => {
      if (!peer.running()) throw new Error(`ntsd exited early:\n${peer.output()}`);
      if (!peer.output().includes('"msg":"ntsd started"')) return undefined;
      return (await tcpAccepts(options.kePort)) ? true : undefined;
    });
  } catch (err) {
    await peer.stop();
    throw err;
  }
  const datapath = /"datapath":"(\w+)"[^\n]*"msg":"NTP datapath"/.exec(peer.output())?.[1];
  if (options.datapath !== undefined && options.datapath !== 'auto' && datapath !== options.datapath) {
    await peer.stop();
    throw new Error(`ntsd was asked for datapath ${options.datapath} but runs ${datapath ?? 'an unknown one'}:\n${peer.output()}`);
  }
  return {
    name: options.label ?? 'ntsd',
    pid: peer.pid,
    ntpPort: options.ntpPort,
    kePort: options.kePort,
    output: peer.output,
    running: peer.running,
    stop: peer.stop,
  };
}

/** Starts Debian's chronyd as an NTS server (PEERS.md) presenting the same chain. */
export async function startChrony(options: { readonly ntpPort: number; readonly kePort: number; readonly tls: ServerTls }): Promise<ServerUnderTest> {
  const chrony = await startChronyServer({ ntpPort: options.ntpPort, kePort: options.kePort, certPath: options.tls.chainPath, keyPath: options.tls.keyPath });
  return { name: 'chrony', pid: chrony.pid, ntpPort: chrony.ntpPort, kePort: chrony.kePort, output: chrony.output, running: chrony.running, stop: chrony.stop };
}
