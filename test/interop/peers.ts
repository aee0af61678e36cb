/**
 * Launchers for real NTS peers on loopback (see /work/shared/PEERS.md): Debian's chrony 4.3 (and Debian 13's
 * 4.6.1 in a chroot) as an NTS server or client and NTPsec 1.2.2 as an NTS client, each in its own temp
 * directory on free ports, stopped by PID.
 *
 * Safety, always: every daemon runs under `setpriv --bounding-set -sys_time` (it cannot gain the right to
 * set the clock), chronyd gets `-x` and NTPsec gets `disable ntp` / `disable kernel`. Nothing binds off
 * loopback. A process-exit hook SIGKILLs anything a crashed test left behind.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { appendFileSync, chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** DNS name of the test certificates; mapped to 127.0.0.1 in /etc/hosts by ensureNtsTestHost. */
export const NTS_TEST_NAME = 'nts.test';
/** Where .ci/run unpacks the NTPsec .deb (PEERS.md). */
export const NTPSEC_ROOT = '/opt/ntpsec-root';
/** The NTPsec daemon inside NTPSEC_ROOT. */
export const NTPSEC_NTPD = `${NTPSEC_ROOT}/usr/sbin/ntpd`;
const CHRONYD = '/usr/sbin/chronyd';
const CHRONYC = '/usr/bin/chronyc';
const CHROOT = '/usr/sbin/chroot';
/**
 * Debian 13's chrony (4.6.1) in a debootstrap root that test/install-peers.sh builds once and keeps outside
 * the clone (PEERS.md). A chroot shares the network namespace, so its chronyd reaches ntsd on 127.0.0.1.
 */
export const TRIXIE_ROOT = process.env['NTSD_TRIXIE_ROOT'] ?? '/var/tmp/trixie-root';

/** Where chronyd runs: the host's chrony 4.3, or chrony 4.6.1 inside TRIXIE_ROOT. */
export type ChronyBuild = 'host' | 'trixie';

/** Throws a clear error unless the Debian 13 root with chrony 4.6.1 exists, and maps nts.test inside it. */
export function ensureTrixieChrony(): void {
  if (!existsSync(join(TRIXIE_ROOT, 'usr/sbin/chronyd'))) {
    throw new Error(`chrony 4.6.1 is missing: ${TRIXIE_ROOT}/usr/sbin/chronyd (test/install-peers.sh builds the Debian 13 root)`);
  }
  ensureNtsTestHost(join(TRIXIE_ROOT, 'etc/hosts'));
}

/**
 * How to run a chrony program of `build`: the command and the leading arguments, and how a path on the host
 * (inside the root for "trixie") is written for the program.
 */
function chronyCommand(build: ChronyBuild, program: 'chronyd' | 'chronyc'): { command: string; args: string[]; path: (hostPath: string) => string } {
  const binary = program === 'chronyd' ? CHRONYD : CHRONYC;
  if (build === 'host') return { command: binary, args: [], path: (p) => p };
  return {
    command: CHROOT,
    args: [TRIXIE_ROOT, binary],
    path: (p) => {
      if (!p.startsWith(`${TRIXIE_ROOT}/`)) throw new Error(`${p} is outside ${TRIXIE_ROOT}`);
      return p.slice(TRIXIE_ROOT.length);
    },
  };
}
const SETPRIV = '/usr/bin/setpriv';
/** Drop CAP_SYS_TIME from the bounding set before exec: the daemon can never set the clock. */
const NO_CLOCK = ['--bounding-set', '-sys_time'];
/** Most output kept per daemon, for failure messages. */
const MAX_OUTPUT_CHARS = 64 * 1024;

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
});

/** Adds "127.0.0.1 nts.test" to /etc/hosts (or `file`) unless a line already maps the name (idempotent; we run as root). */
export function ensureNtsTestHost(file = '/etc/hosts'): void {
  const hosts = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const mapped = hosts.split('\n').some((line) => {
    const fields = line.replace(/#.*/, '').trim().split(/\s+/);
    return fields[0] === '127.0.0.1' && fields.slice(1).includes(NTS_TEST_NAME);
  });
  if (mapped) return;
  try {
    appendFileSync(file, `${hosts.endsWith('\n') || hosts === '' ? '' : '\n'}127.0.0.1 ${NTS_TEST_NAME}\n`);
  } catch (err) {
    throw new Error(`cannot add "127.0.0.1 ${NTS_TEST_NAME}" to ${file} (run as root, or add the line yourself): ${String(err)}`);
  }
}

/** Creates a 0700 temp directory (chrony refuses socket directories others can write to). */
export function makeWorkDir(prefix: string, build: ChronyBuild = 'host'): string {
  const base = build === 'host' ? tmpdir() : join(TRIXIE_ROOT, 'tmp');
  const dir = mkdtempSync(join(base, `ntsd-interop-${prefix}-`));
  chmodSync(dir, 0o700);
  return dir;
}

import { freeTcpPort, freeUdpPort } from '../helpers/ports.js';
export { freeTcpPort, freeUdpPort };

/** A port free for both TCP and UDP on 127.0.0.1 (for daemons that bind one number twice). */
export async function freeTcpAndUdpPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await freeTcpPort();
    const udpFree = await new Promise<boolean>((resolve) => {
      const socket = createSocket('udp4');
      socket.once('error', () => resolve(false));
      socket.bind(port, '127.0.0.1', () => socket.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error('no port free for both TCP and UDP on 127.0.0.1');
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` every `intervalMs` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => T | undefined | Promise<T | undefined>, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(intervalMs);
  }
}

/** True once something accepts TCP connections on 127.0.0.1:port. */
export function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setTimeout(500);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

/** A daemon started by these helpers. */
export interface PeerProcess {
  /** Its PID (the daemon itself: setpriv execs it). */
  readonly pid: number;
  /** Its temp directory (removed by stop()). */
  readonly dir: string;
  /** stdout and stderr so far (last 64 KiB). */
  output(): string;
  /** True while it runs. */
  running(): boolean;
  /** Exit code once exited (null while running or when killed by a signal). */
  exitCode(): number | null;
  /** SIGTERM, wait up to 3 s, then SIGKILL; removes the temp directory. Idempotent. */
  stop(): Promise<void>;
}

/** Spawns `command args` under setpriv without CAP_SYS_TIME, capturing its output. */
export function spawnPeer(dir: string, command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): PeerProcess {
  const child = spawn(SETPRIV, [...NO_CLOCK, command, ...args], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`cannot start ${command}`);
  const pid = child.pid;
  running.add(child);
  let output = '';
  const keep = (chunk: Buffer): void => {
    output += chunk.toString('utf8');
    if (output.length > MAX_OUTPUT_CHARS) output = output.slice(-MAX_OUTPUT_CHARS);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    child.once('exit', () => {
      running.delete(child);
      resolve();
    });
  });
  let stopping: Promise<void> | undefined;
  return {
    pid,
    dir,
    output: () => output,
    running: () => child.exitCode === null && child.signalCode === null,
    exitCode: () => child.exitCode,
    stop(): Promise<void> {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const killed = await Promise.race([exited.then(() => true), delay(3000).then(() => false)]);
          if (!killed) {
            child.kill('SIGKILL');
            await exited;
          }
        }
        rmSync(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// chrony

/** A chrony NTS server on loopback. */
export interface ChronyServer extends PeerProcess {
  /** UDP port it answers NTP on (announced in its Port Negotiation record). */
  readonly ntpPort: number;
  /** TCP port of its NTS-KE server. */
  readonly kePort: number;
}

/**
 * Starts chronyd as an NTS server (PEERS.md): NTP on 127.0.0.1:ntpPort, NTS-KE on kePort, `local stratum 2`,
 * no upstream sources. Resolves once the KE port accepts connections.
 */
export async function startChronyServer(options: {
  readonly ntpPort: number;
  readonly kePort: number;
  readonly certPath: string;
  readonly keyPath: string;
  readonly startTimeoutMs?: number;
  /** Which chrony (default the host's 4.3). */
  readonly build?: ChronyBuild;
}): Promise<ChronyServer> {
  const build = options.build ?? 'host';
  const dir = makeWorkDir('chrony-server', build);
  const run = chronyCommand(build, 'chronyd');
  // The certificate and key go into the work directory, where a chrooted chronyd can read them.
  const certPath = join(dir, 'server.crt');
  const keyPath = join(dir, 'server.key');
  copyFileSync(options.certPath, certPath);
  copyFileSync(options.keyPath, keyPath);
  const conf = join(dir, 'server.conf');
  writeFileSync(
    conf,
    [
      `port ${options.ntpPort}`,
      'bindaddress 127.0.0.1',
      'allow 127.0.0.0/8',
      'local stratum 2',
      `ntsport ${options.kePort}`,
      `ntsserverkey ${run.path(keyPath)}`,
      `ntsservercert ${run.path(certPath)}`,
      `ntsdumpdir ${run.path(dir)}`,
      'ntsprocesses 1',
      `pidfile ${run.path(join(dir, 'chronyd.pid'))}`,
      'cmdport 0',
      'bindcmdaddress /',
      '',
    ].join('\n'),
  );
  const peer = spawnPeer(dir, run.command, [...run.args, '-x', '-d', '-u', 'root', '-f', run.path(conf)]);
  try {
    await waitFor(`chronyd NTS-KE on port ${options.kePort}`, options.startTimeoutMs ?? 10_000, async () => {
      if (!peer.running()) throw new Error(`chronyd exited early:\n${peer.output()}`);
      return (await tcpAccepts(options.kePort)) ? true : undefined;
    });
  } catch (err) {
    await peer.stop();
    throw err;
  }
  return { ...peer, ntpPort: options.ntpPort, kePort: options.kePort };
}

/** One source as `chronyc -n authdata` lists it. */
export interface ChronyAuthdata {
  readonly address: string;
  /** "NTS", "SK" or "-". */
  readonly mode: string;
  readonly keyId: number;
  /** AEAD id for NTS. */
  readonly type: number;
  readonly keyLengthBits: number;
  readonly naks: number;
  readonly cookies: number;
  readonly cookieLength: number;
}

/** Parses `chronyc -n authdata` output (one row per source after the ===== line). */
export function parseChronycAuthdata(text: string): ChronyAuthdata[] {
  const rows: ChronyAuthdata[] = [];
  let inTable = false;
  for (const line of text.split('\n')) {
    if (/^=+$/.test(line.trim())) {
      inTable = true;
      continue;
    }
    if (!inTable || line.trim() === '') continue;
    // Name/IP address, Mode, KeyID, Type, KLen, Last, Atmp, NAK, Cook, CLen
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    rows.push({
      address: f[0] ?? '',
      mode: f[1] ?? '',
      keyId: Number(f[2]),
      type: Number(f[3]),
      keyLengthBits: Number(f[4]),
      naks: Number(f[7]),
      cookies: Number(f[8]),
      cookieLength: Number(f[9]),
    });
  }
  return rows;
}

/** Parses `chronyc -n ntpdata` output: one "Key : value" map per source (blank lines separate sources). */
export function parseChronycNtpdata(text: string): Record<string, string>[] {
  const sources: Record<string, string>[] = [];
  let current: Record<string, string> | undefined;
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (line.trim() === '' || colon < 0) {
      current = undefined;
      continue;
    }
    if (current === undefined) {
      current = {};
      sources.push(current);
    }
    current[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return sources;
}

/** A chrony NTS client on loopback with its command socket. */
export interface ChronyClient extends PeerProcess {
  /** Unix command socket path (for chronyc -h). */
  readonly socketPath: string;
  /** Runs `chronyc -h SOCKET -n authdata` and parses it. */
  authdata(): ChronyAuthdata[];
  /** Runs `chronyc -h SOCKET -n ntpdata` and parses it. */
  ntpdata(): Record<string, string>[];
  /** Raw output of `chronyc -h SOCKET -n COMMAND`. */
  chronyc(command: string): string;
}

/**
 * Starts chronyd -x as an NTS client of `name` (default nts.test) with NTS-KE on kePort (PEERS.md), polling
 * every 0.25 s. Without `ntpPort` chrony sends NTP to the Port Negotiation port (else 123).
 */
export async function startChronyClient(options: {
  readonly kePort: number;
  readonly ntpPort?: number;
  readonly caPath: string;
  readonly name?: string;
  /** Which chrony (default the host's 4.3). */
  readonly build?: ChronyBuild;
  /** `ntsaeads`: the AEAD ids chrony offers, in order (chrony ≥ 4.4; default chrony's own list). */
  readonly aeads?: readonly number[];
  /** `xleave` on the server line: ask for interleaved mode (RFC 9769). */
  readonly xleave?: boolean;
  /** false: plain NTP to `name`:`ntpPort` (no `nts`); default true. */
  readonly nts?: boolean;
}): Promise<ChronyClient> {
  const build = options.build ?? 'host';
  const dir = makeWorkDir('chrony-client', build);
  const run = chronyCommand(build, 'chronyd');
  const conf = join(dir, 'client.conf');
  const socketPath = join(dir, 'chronyd.sock');
  const caPath = join(dir, 'ca.pem');
  copyFileSync(options.caPath, caPath);
  const name = options.name ?? NTS_TEST_NAME;
  const port = options.ntpPort === undefined ? '' : ` port ${options.ntpPort}`;
  const xleave = options.xleave === true ? ' xleave' : '';
  writeFileSync(
    conf,
    [
      options.nts === false
        ? `server ${name}${port} iburst minpoll -2 maxpoll -2${xleave}`
        : `server ${name}${port} nts ntsport ${options.kePort} iburst minpoll -2 maxpoll -2${xleave}`,
      `ntstrustedcerts ${run.path(caPath)}`,
      ...(options.aeads === undefined ? [] : [`ntsaeads ${options.aeads.join(' ')}`]),
      `pidfile ${run.path(join(dir, 'chronyd.pid'))}`,
      `bindcmdaddress ${run.path(socketPath)}`,
      'cmdport 0',
      '',
    ].join('\n'),
  );
  const peer = spawnPeer(dir, run.command, [...run.args, '-x', '-d', '-u', 'root', '-f', run.path(conf)]);
  const chronycRun = chronyCommand(build, 'chronyc');
  const chronyc = (command: string): string => {
    const r = spawnSync(chronycRun.command, [...chronycRun.args, '-h', chronycRun.path(socketPath), '-n', command], { encoding: 'utf8', timeout: 5000 });
    return `${r.stdout ?? ''}${r.stderr ?? ''}`;
  };
  try {
    await waitFor('chronyd command socket', 10_000, () => {
      if (!peer.running()) throw new Error(`chronyd exited early:\n${peer.output()}`);
      return existsSync(socketPath) ? true : undefined;
    });
  } catch (err) {
    await peer.stop();
    throw err;
  }
  return {
    ...peer,
    socketPath,
    chronyc,
    authdata: () => parseChronycAuthdata(chronyc('authdata')),
    ntpdata: () => parseChronycNtpdata(chronyc('ntpdata')),
  };
}

// ---------------------------------------------------------------------------------------------------
// NTPsec

/** Throws a clear error unless NTPsec's ntpd is unpacked at /opt/ntpsec-root and runs. */
export function ensureNtpsec(): void {
  const hint =
    'NTPsec is not unpacked: run `apt-get install -y python3-ntp libbsd0 libssl3 && (cd /tmp && apt-get download ntpsec) ' +
    `&& dpkg -x /tmp/ntpsec_*.deb ${NTPSEC_ROOT}` +
    '` (chrony and ntpsec conflict as packages; .ci/run does this; see PEERS.md)';
  if (!existsSync(NTPSEC_NTPD)) throw new Error(`${NTPSEC_NTPD} not found. ${hint}`);
  const r = spawnSync(NTPSEC_NTPD, ['--version'], { encoding: 'utf8', timeout: 5000 });
  if (r.status !== 0 || !/ntpsec/.test(`${r.stdout}${r.stderr}`)) {
    throw new Error(`${NTPSEC_NTPD} --version failed (exit ${String(r.status)}): ${r.stderr || r.stdout}. ${hint}`);
  }
}

function findPortshimSource(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [
    join(here, 'portshim.c'),
    // dist/test/interop/peers.js → test/interop/portshim.c
    join(here, '..', '..', '..', 'test', 'interop', 'portshim.c'),
    join(process.cwd(), 'test', 'interop', 'portshim.c'),
  ];
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`portshim.c not found (looked in ${candidates.join(', ')})`);
  return found;
}

/** Compiles test/interop/portshim.c into `dir` with gcc; returns the .so path. */
export function buildPortshim(dir: string): string {
  const out = join(dir, 'portshim.so');
  const r = spawnSync('gcc', ['-O2', '-Wall', '-shared', '-fPIC', '-o', out, findPortshimSource(), '-ldl'], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`gcc failed building portshim.so (exit ${String(r.status)}): ${r.stderr}`);
  return out;
}

/** One line of NTPsec's peerstats file (the 4th column is the peer status word in hex). */
export interface PeerstatsLine {
  readonly address: string;
  readonly status: number;
  readonly offsetS: number;
  readonly delayS: number;
}

/** Peer status bit: the association is authentic (NTPsec ntp_control.h CTL_PST_AUTHENTIC). */
export const PEER_STATUS_AUTHENTIC = 0x2000;
/** Peer status bit: the peer is reachable (CTL_PST_REACH). */
export const PEER_STATUS_REACHABLE = 0x1000;

/** Parses NTPsec peerstats lines: "MJD seconds address status offset delay dispersion jitter". */
export function parsePeerstats(text: string): PeerstatsLine[] {
  const lines: PeerstatsLine[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6) continue;
    const status = Number.parseInt(f[3] ?? '', 16);
    if (!Number.isFinite(status)) continue;
    lines.push({ address: f[2] ?? '', status, offsetS: Number(f[4]), delayS: Number(f[5]) });
  }
  return lines;
}

/** NTPsec ntpd running as an NTS client. */
export interface NtpsecClient extends PeerProcess {
  /** Parsed peerstats so far. */
  peerstats(): PeerstatsLine[];
  /** ntpd's log file so far. */
  log(): string;
}

/**
 * Starts NTPsec ntpd as an NTS client of nts.test:kePort (PEERS.md) under the port shim (its own NTP
 * socket moves off 123 to a free port), with `disable ntp` / `disable kernel`. It sends NTP to the port in
 * the server's Port Negotiation record (else 123).
 */
export async function startNtpsecClient(options: { readonly kePort: number; readonly caPath: string; readonly name?: string }): Promise<NtpsecClient> {
  ensureNtpsec();
  const dir = makeWorkDir('ntpsec-client');
  const shim = buildPortshim(dir);
  const conf = join(dir, 'ntp.conf');
  const logPath = join(dir, 'ntpd.log');
  const statsPath = join(dir, 'peerstats');
  writeFileSync(
    conf,
    [
      `server ${options.name ?? NTS_TEST_NAME}:${options.kePort} nts ca ${options.caPath} iburst minpoll 0 maxpoll 0`,
      'disable ntp',
      'disable kernel',
      'interface ignore wildcard',
      'interface ignore all',
      'interface listen 127.0.0.1',
      `statsdir ${dir}/`,
      'statistics peerstats',
      'filegen peerstats file peerstats type none enable',
      '',
    ].join('\n'),
  );
  const shimNtpPort = await freeUdpPort();
  const shimKePort = await freeTcpPort();
  const env = { ...process.env, LD_PRELOAD: shim, SHIM_NTP_PORT: String(shimNtpPort), SHIM_NTSKE_PORT: String(shimKePort) };
  const peer = spawnPeer(dir, NTPSEC_NTPD, ['-n', '-c', conf, '-l', logPath], env);
  const readText = (path: string): string => (existsSync(path) ? readFileSync(path, 'utf8') : '');
  return {
    ...peer,
    peerstats: () => parsePeerstats(readText(statsPath)),
    log: () => readText(logPath),
  };
}
