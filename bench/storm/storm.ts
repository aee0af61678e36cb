/**
 * A malformed-datagram storm against the native datapath, with the addon built under AddressSanitizer.
 *
 * The server (server.ts) runs in a child process with a `-fsanitize=address` build of the addon
 * (src/native/build.mjs with NTSD_NATIVE_CFLAGS / NTSD_NATIVE_OUT) and libasan preloaded, so any
 * out-of-bounds access in the C code aborts it with a report. The storm sends, from several client
 * sockets: random octets of random sizes (0 to 65,507), valid NTS requests with bit flips, truncations,
 * extensions and edited extension-field lengths, and now and then a valid probe. It checks:
 *  - every reply is no longer than the datagram it answers (matched by the echoed transmit timestamp);
 *  - no reply answers a datagram shorter than an NTP header;
 *  - the server stays up and answers valid probes after the storm;
 *  - the sanitizer reported nothing and the server exited cleanly.
 * Bounded by a datagram count and a time limit; loopback only.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomFillSync, randomInt } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getAead } from '../../src/core/crypto/aead.js';
import { cookieLength, sealCookie } from '../../src/core/nts/cookie.js';
import { createKeyset, encodeKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { buildNtsRequest, ntsRequestLength } from '../../src/cli/ntp-client.js';

/** Storm parameters. */
export interface StormOptions {
  /** Datagrams to send (the storm also stops at `seconds`). */
  readonly datagrams: number;
  readonly seconds: number;
  /** Build and preload the AddressSanitizer addon (default true). */
  readonly sanitize?: boolean;
}

/** What a storm found. */
export interface StormResult {
  readonly sent: number;
  readonly replies: number;
  /** Replies longer than their request (must be 0). */
  readonly oversize: number;
  /** Replies that matched no request of at least 48 octets (must be 0). */
  readonly unmatched: number;
  /** Valid probes answered during the storm / sent. */
  readonly probesAnswered: number;
  readonly probesSent: number;
  /** Valid probes answered after the storm, out of AFTER_PROBES (must be all). */
  readonly afterAnswered: number;
  readonly afterSent: number;
  readonly serverExitCode: number | null;
  /** AddressSanitizer reports in the server's stderr (must be 0). */
  readonly sanitizerReports: number;
  readonly truncatedCounted: number;
  readonly elapsedS: number;
  readonly sanitized: boolean;
  /** Defects found, empty when the run is clean. */
  readonly defects: readonly string[];
}

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const AFTER_PROBES = 20;
const CLIENTS = 8;

/** libasan as gcc knows it, or undefined. */
function findLibasan(): string | undefined {
  const r = spawnSync('gcc', ['-print-file-name=libasan.so'], { encoding: 'utf8' });
  const path = r.status === 0 ? r.stdout.trim() : '';
  return path !== '' && path !== 'libasan.so' && existsSync(path) ? path : undefined;
}

/** Whether a sanitizer storm can run here (cc and libasan present). */
export function sanitizerAvailable(): boolean {
  return spawnSync('cc', ['--version']).status === 0 && findLibasan() !== undefined;
}

interface Session {
  readonly c2s: Uint8Array;
  readonly cookie: Uint8Array;
}

function newSession(keyset: Keyset): Session {
  const c2s = randomFillSync(new Uint8Array(32));
  const cookie = new Uint8Array(cookieLength(15));
  sealCookie(keyset, 15, c2s, randomFillSync(new Uint8Array(32)), (b) => randomFillSync(b), cookie, 0);
  return { c2s, cookie };
}

function ntsRequest(session: Session, placeholders: number): Uint8Array {
  const aead = getAead(15);
  if (aead === undefined) throw new Error('AEAD 15 missing');
  const out = new Uint8Array(ntsRequestLength(aead, 32, session.cookie.length, placeholders));
  buildNtsRequest(
    {
      uniqueId: randomFillSync(new Uint8Array(32)),
      cookie: session.cookie,
      placeholders,
      aead,
      c2sCipher: aead.newCipher(session.c2s),
      transmitTime: { seconds: randomInt(2 ** 32), fraction: randomInt(2 ** 32) },
      fillRandom: (b) => randomFillSync(b),
    },
    out,
  );
  return out;
}

/** A random datagram size: mostly small, sometimes up to the IPv4 maximum. */
function randomSize(): number {
  const r = Math.random();
  if (r < 0.5) return randomInt(0, 200);
  if (r < 0.8) return randomInt(200, 2000);
  if (r < 0.95) return randomInt(2000, 5000);
  return randomInt(5000, 65508);
}

/** One hostile datagram: random octets, or a valid request mutated in one of several ways. */
function hostile(template: Uint8Array): Uint8Array {
  const kind = randomInt(6);
  switch (kind) {
    case 0:
      return randomFillSync(new Uint8Array(randomSize()));
    case 1: {
      const p = template.slice();
      for (let i = randomInt(1, 9); i > 0; i--) {
        const at = randomInt(p.length);
        p[at] = (p[at] ?? 0) ^ (1 << randomInt(8));
      }
      return p;
    }
    case 2:
      return template.slice(0, randomInt(template.length));
    case 3: {
      const p = new Uint8Array(Math.min(65507, template.length + randomSize()));
      p.set(template);
      randomFillSync(p.subarray(template.length));
      return p;
    }
    case 4: {
      // An extension field length edited to something impossible.
      const p = template.slice();
      const at = 48 + 4 * randomInt(Math.max(1, (p.length - 48) >> 2));
      const v = [0, 1, 3, 4, 16, 0xfffc, 0xffff, randomInt(0x10000)][randomInt(8)] ?? 0;
      if (at + 3 < p.length) {
        p[at + 2] = v >>> 8;
        p[at + 3] = v & 0xff;
      }
      return p;
    }
    default: {
      const p = template.slice();
      p[0] = randomInt(256); // any LI/VN/mode
      return p;
    }
  }
}

function bindClient(): Promise<Socket> {
  const s = createSocket({ type: 'udp4', recvBufferSize: 1 << 22 });
  return new Promise((resolve) => s.bind(0, '127.0.0.1', () => resolve(s)));
}

function keyOf(p: Uint8Array, at: number): string {
  return Buffer.from(p.buffer, p.byteOffset + at, 8).toString('hex');
}

/** Runs one storm; never throws for a defect, which is reported in `defects`. */
export async function runStorm(options: StormOptions): Promise<StormResult> {
  const sanitize = options.sanitize ?? true;
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-storm-'));
  const defects: string[] = [];
  try {
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (sanitize) {
      const libasan = findLibasan();
      if (libasan === undefined) throw new Error('no libasan (gcc -print-file-name=libasan.so)');
      const addon = join(dir, 'ntsd_udp_asan.node');
      const build = spawnSync(process.execPath, [join(repo, 'src', 'native', 'build.mjs')], {
        env: { ...process.env, NTSD_NATIVE_OUT: addon, NTSD_NATIVE_CFLAGS: '-g -O1 -fsanitize=address -fno-omit-frame-pointer' },
        encoding: 'utf8',
      });
      if (!existsSync(addon)) throw new Error(`sanitizer build failed: ${build.stdout}${build.stderr}`);
      env['NTSD_NATIVE_ADDON'] = addon;
      env['LD_PRELOAD'] = libasan;
      // Node itself is not built with ASan: leak checks would report V8's own allocations.
      env['ASAN_OPTIONS'] = 'detect_leaks=0:abort_on_error=1:halt_on_error=1';
    }
    const keyset = createKeyset(Date.now() / 1000, (b) => randomFillSync(b), { staleKeyCount: 7 });
    const keysetPath = join(dir, 'keyset');
    writeFileSync(keysetPath, encodeKeyset(keyset));
    const server = spawn(process.execPath, [join(repo, 'dist', 'bench', 'storm', 'server.js'), keysetPath], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    server.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    server.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => server.once('exit', (code) => resolve(code)));
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 20_000);
      const check = (): void => {
        const line = stdout.split('\n')[0];
        if (line !== undefined && stdout.includes('\n')) {
          clearTimeout(timer);
          resolve((JSON.parse(line) as { port: number }).port);
        } else setTimeout(check, 20);
      };
      check();
    });

    const sessions = Array.from({ length: 4 }, () => newSession(keyset));
    const pending = new Map<string, number>();
    const probes = new Set<string>();
    let replies = 0;
    let oversize = 0;
    let unmatched = 0;
    let probesAnswered = 0;
    const clients = await Promise.all(Array.from({ length: CLIENTS }, bindClient));
    for (const c of clients) {
      c.on('message', (reply: Buffer) => {
        replies++;
        const key = reply.length >= 32 ? keyOf(reply, 24) : '';
        const requestLength = pending.get(key);
        if (requestLength === undefined) {
          unmatched++;
          return;
        }
        pending.delete(key);
        if (reply.length > requestLength) oversize++;
        if (probes.delete(key)) probesAnswered++;
      });
    }

    const started = performance.now();
    const deadline = started + options.seconds * 1000;
    let sent = 0;
    let probesSent = 0;
    while (sent < options.datagrams && performance.now() < deadline) {
      for (let burst = 0; burst < 32 && sent < options.datagrams; burst++, sent++) {
        const session = sessions[sent % sessions.length];
        if (session === undefined) continue;
        let packet: Uint8Array;
        let probe = false;
        if (sent % 200 === 0) {
          packet = ntsRequest(session, randomInt(0, 3));
          probe = true;
        } else {
          packet = hostile(ntsRequest(session, randomInt(0, 8)));
        }
        if (packet.length >= 48) {
          // A fresh transmit timestamp makes the echoed origin identify this datagram.
          randomFillSync(packet.subarray(40, 48));
          const key = keyOf(packet, 40);
          pending.set(key, packet.length);
          if (probe) {
            probes.add(key);
            probesSent++;
          }
        }
        clients[sent % CLIENTS]?.send(packet, port, '127.0.0.1');
      }
      await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 500));

    // Liveness after the storm: sequential valid probes, each answered.
    let afterAnswered = 0;
    for (let i = 0; i < AFTER_PROBES; i++) {
      const session = sessions[i % sessions.length];
      if (session === undefined) continue;
      const packet = ntsRequest(session, 1);
      const key = keyOf(packet, 40);
      pending.set(key, packet.length);
      probes.add(key);
      const before = probesAnswered;
      clients[0]?.send(packet, port, '127.0.0.1');
      const until = performance.now() + 2000;
      while (probesAnswered === before && performance.now() < until) await new Promise((r) => setTimeout(r, 2));
      if (probesAnswered > before) afterAnswered++;
    }
    const elapsedS = (performance.now() - started) / 1000;
    for (const c of clients) c.close();
    server.kill('SIGTERM');
    const serverExitCode = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
    if (serverExitCode === null) server.kill('SIGKILL');
    const statsLine = stdout.trim().split('\n')[1];
    const truncatedCounted = statsLine === undefined ? -1 : (JSON.parse(statsLine) as { truncated: number }).truncated;
    const sanitizerReports = (stderr.match(/ERROR: AddressSanitizer/g) ?? []).length;

    if (oversize > 0) defects.push(`${oversize} replies longer than their request`);
    if (unmatched > 0) defects.push(`${unmatched} replies matched no request of at least 48 octets`);
    if (afterAnswered < AFTER_PROBES) defects.push(`only ${afterAnswered}/${AFTER_PROBES} valid probes answered after the storm`);
    if (sanitizerReports > 0) defects.push(`${sanitizerReports} AddressSanitizer reports:\n${stderr}`);
    if (serverExitCode !== 0) defects.push(`server exited with ${String(serverExitCode)}: ${stderr.slice(-2000)}`);
    if (/storm server event/.test(stderr)) defects.push(`server thread events: ${stderr.slice(0, 2000)}`);
    return {
      sent,
      replies,
      oversize,
      unmatched,
      probesAnswered: probesAnswered - afterAnswered,
      probesSent,
      afterAnswered,
      afterSent: AFTER_PROBES,
      serverExitCode,
      sanitizerReports,
      truncatedCounted,
      elapsedS,
      sanitized: sanitize,
      defects,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
