#!/usr/bin/env node
/**
 * Crash battery: the real daemon is killed with SIGKILL at random moments, over and over, on one key file
 * with a short rotation interval, and every restart is checked.
 *
 *   node dist/bench/reliability/crash.js --cycles 1000 [--max-minutes 25] [--seed N]
 *
 * Kill moments, chosen per cycle by a seeded PRNG (the seed is printed):
 *  - start:     a random instant between spawn and the end of a typical start-up (before, during or after
 *               the key file is read);
 *  - catch-up:  the start-up catch-up rotation (the daemon was down across a due rotation), killed as soon as
 *               it logs the catch-up, i.e. while it writes the key file;
 *  - rotation:  around a scheduled rotation of the running daemon (−30 … +60 ms of its due time);
 *  - before-due: shortly before a due rotation, so that the next start has to catch up;
 *  - running:   a random instant after the daemon served NTS-KE and NTS.
 * Checks on every start that reached "ntsd started":
 *  - the existing key file was loaded: no "created a new keyset" once a key file exists, no error-level log
 *    line, no `*.corrupt-*` file and no leftover temp file in the key directory, and no master key of the
 *    file as it was after the crash is missing (the stale window is large enough that none expires);
 *  - cookies from before the crash still authenticate: a few from the pool (from NTS-KE and from NTS replies
 *    of earlier cycles) get an authenticated NTS reply whenever the key that sealed them is still in the key
 *    file, and an NTS NAK only when it is not (counted as expired, none expected with the default window);
 *  - NTS-KE works and its fresh cookies authenticate.
 * After every kill the key file must decode. Bounded by --cycles and --max-minutes; exits 1 on any defect.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { performKeyExchange, type KeyExchangeResult } from '../../src/cli/ke-client.js';
import { ntsExchange, type NtsExchangeOutcome } from '../../src/cli/ntp-client.js';
import { readU32 } from '../../src/core/bytes.js';
import { decodeKeyset, keysetKeys, type Keyset } from '../../src/core/nts/keyset.js';
import { DefectLog, UsageError, createRng, defaultSeed, delay, freeTcpPort, freeUdpPort, grouped, isMain, numberOption, runMain, type Rng } from './common.js';
import { batteryConfigToml, makeBatteryPki, spawnNtsd, type LogLine, type NtsdProcess } from './ntsd-process.js';

/** Where in its life the daemon was killed. */
export const KILL_KINDS = ['start', 'catch-up', 'rotation', 'before-due', 'running'] as const;
/** One of KILL_KINDS. */
export type KillKind = (typeof KILL_KINDS)[number];

/** Options of one crash battery run. */
export interface CrashOptions {
  /** Kill/restart cycles to run. */
  readonly cycles: number;
  /** Stop starting new cycles after this long (the report says which bound stopped it). */
  readonly maxDurationS: number;
  readonly seed: number;
  /** `[keyset] key-rotation-interval-s` (10 is the local-mode minimum). */
  readonly rotationIntervalS: number;
  /** `[keyset] stale-key-count`: the window in which pre-crash cookies must still authenticate. */
  readonly staleKeyCount: number;
  /** Share of cycles that wait for a scheduled rotation to kill around it (the rest kill when one is near anyway). */
  readonly rotationKillShare: number;
  /** Cookies from the pool checked after each start. */
  readonly cookiesPerCheck: number;
  /** Progress lines (every `progressEvery` cycles); none when undefined. */
  readonly progress?: (line: string) => void;
  readonly progressEvery?: number;
}

/** Defaults of CrashOptions (the CLI starts from these). */
export const DEFAULT_CRASH_OPTIONS: CrashOptions = {
  cycles: 1000,
  maxDurationS: 25 * 60,
  seed: 0,
  rotationIntervalS: 10,
  staleKeyCount: 1000,
  rotationKillShare: 0.08,
  cookiesPerCheck: 3,
};

/** What a run saw. */
export interface CrashReport {
  readonly seed: number;
  /** Cycles completed (one kill each). */
  readonly cycles: number;
  readonly stoppedBy: 'cycles' | 'time' | 'defects';
  readonly durationS: number;
  /** Kills by moment. */
  readonly kills: Readonly<Record<KillKind, number>>;
  /** Starts that reached "ntsd started". */
  readonly startsCompleted: number;
  /** Starts that logged a catch-up rotation (the daemon was down across a due rotation). */
  readonly catchUpStarts: number;
  /** Rotations the daemons logged ("keyset rotated" plus caught-up ones). */
  readonly rotationsLogged: number;
  /** Kills that left a tmp file behind (they interrupted a key file write; the next start must remove it). */
  readonly interruptedWrites: number;
  /** Master keys in the final key file. */
  readonly keysInFile: number;
  readonly keyExchanges: number;
  /** Pre-crash cookies queried after a restart. */
  readonly oldCookiesChecked: number;
  /** Of those, authenticated NTS replies. */
  readonly oldCookiesAuthenticated: number;
  /** Of those, NAKs for cookies whose key had left the key file (expected outside the stale window). */
  readonly oldCookiesExpired: number;
  /** Fresh cookies (from this start's NTS-KE) queried. */
  readonly freshCookiesChecked: number;
  /** Median spawn → "ntsd started", ms. */
  readonly startMsP50: number;
  readonly defectCount: number;
  readonly defects: readonly string[];
}

/** A cookie with the session keys it belongs to. */
interface PooledCookie {
  readonly session: KeyExchangeResult;
  readonly cookie: Uint8Array;
  /** Cycle in which it was obtained. */
  readonly cycle: number;
  readonly keyId: number;
}

const MAX_POOL = 400;
const START_TIMEOUT_MS = 30_000;

function readKeyFile(path: string): { keyset: Keyset } | { error: string } {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    return { error: `cannot read the key file: ${error instanceof Error ? error.message : String(error)}` };
  }
  const decoded = decodeKeyset(bytes);
  return decoded.ok ? { keyset: decoded.keyset } : { error: `the key file does not decode (${decoded.error})` };
}

function keyIds(ks: Keyset): Set<number> {
  return new Set(keysetKeys(ks).map((k) => k.id));
}

function median(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

/** Strangers in the key directory: temp files of an interrupted write, files a corrupt key file was moved to. */
function strayFiles(dir: string, keyFileName: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => n !== keyFileName);
}

/** Runs the battery; never throws for a daemon defect (it is in the report), only for setup failures. */
export async function runCrash(options: CrashOptions): Promise<CrashReport> {
  const rng: Rng = createRng(options.seed);
  const startedAt = performance.now();
  const defects = new DefectLog();
  const kills: Record<KillKind, number> = { start: 0, 'catch-up': 0, rotation: 0, 'before-due': 0, running: 0 };
  const dir = mkdtempSync(join(tmpdir(), 'ntsd-crash-'));
  const keyDir = join(dir, 'keyset');
  const keyFileName = 'ntsd.keys';
  const keyPath = join(keyDir, keyFileName);
  const pki = makeBatteryPki(dir);
  const ntpPort = await freeUdpPort();
  const kePort = await freeTcpPort();
  const configPath = join(dir, 'ntsd.toml');
  writeFileSync(
    configPath,
    batteryConfigToml({
      ntpPort,
      kePort,
      certPath: pki.certPath,
      keyPath: pki.keyPath,
      keyStoragePath: `keyset/${keyFileName}`,
      keyRotationIntervalS: options.rotationIntervalS,
      staleKeyCount: options.staleKeyCount,
    }),
  );

  const pool: PooledCookie[] = [];
  /** Cookies obtained since the last kill: the ones "from before the crash" that must authenticate next. */
  let lastBatch: PooledCookie[] = [];
  let keyFileCreated = false;
  let afterKill: Set<number> | undefined;
  let catchUpDue = false;
  let cycles = 0;
  let startsCompleted = 0;
  let catchUpStarts = 0;
  let rotationsLogged = 0;
  let keyExchanges = 0;
  let oldChecked = 0;
  let oldAuthenticated = 0;
  let oldExpired = 0;
  let freshChecked = 0;
  let rotationKills = 0;
  let interruptedWrites = 0;
  const tmpSeen = new Set<string>();
  const startMs: number[] = [];
  let stoppedBy: CrashReport['stoppedBy'] = 'cycles';
  let current: NtsdProcess | undefined;

  const addCookie = (entry: PooledCookie): void => {
    pool.push(entry);
    lastBatch.push(entry);
    if (pool.length > MAX_POOL) pool.splice(rng.below(pool.length - 16), 1);
  };

  /** One NTS query; a timeout is retried once (loopback UDP under a loaded machine). */
  const query = async (session: KeyExchangeResult, cookie: Uint8Array): Promise<NtsExchangeOutcome> => {
    let outcome: NtsExchangeOutcome = { ok: false, failure: { kind: 'timeout', message: 'not sent', ignoredPackets: 0 } };
    for (let attempt = 0; attempt < 2; attempt++) {
      outcome = await ntsExchange({
        server: session.ntpServer,
        port: session.ntpPort,
        aeadId: session.aeadId,
        c2s: session.c2s,
        s2c: session.s2c,
        cookie,
        placeholders: 0,
        timeoutMs: 2000,
      });
      if (outcome.ok || outcome.failure.kind !== 'timeout') return outcome;
    }
    return outcome;
  };

  const kill = async (proc: NtsdProcess, kind: KillKind, cycle: number): Promise<void> => {
    await proc.kill9();
    kills[kind]++;
    if (kind === 'rotation' || kind === 'before-due') rotationKills++;
    rotationsLogged += countRotations(proc.lines);
    if (strayFiles(keyDir, keyFileName).some((n) => n.startsWith(`.${keyFileName}.tmp-`) && !tmpSeen.has(n))) interruptedWrites++;
    for (const n of strayFiles(keyDir, keyFileName)) tmpSeen.add(n);
    const read = readKeyFile(keyPath);
    if ('error' in read) {
      if (keyFileCreated) defects.add(`cycle ${cycle}: after a kill (${kind}): ${read.error}`);
      afterKill = undefined;
    } else {
      keyFileCreated = true;
      afterKill = keyIds(read.keyset);
      // A kill just before a due rotation (or one during the catch-up) leaves one to catch up at the next start,
      // which reads the key file about 0.3 s after its spawn.
      catchUpDue = Date.now() / 1000 + 0.3 >= read.keyset.currentSinceS + options.rotationIntervalS;
    }
  };

  try {
    for (let cycle = 1; cycle <= options.cycles; cycle++) {
      if ((performance.now() - startedAt) / 1000 >= options.maxDurationS) {
        stoppedBy = 'time';
        break;
      }
      if (defects.count >= 20) {
        stoppedBy = 'defects';
        break;
      }
      const fileExisted = keyFileCreated;
      const spawnedAt = performance.now();
      const proc = spawnNtsd(configPath, dir);
      current = proc;
      const typicalStartMs = Math.max(300, median(startMs) || 600);

      // Kill during start-up, at a random instant.
      if (cycle > 1 && (cycle % 5 === 2 || rng.chance(0.1))) {
        await delay(rng.float() * typicalStartMs * 1.1);
        await kill(proc, 'start', cycle);
        cycles++;
        continue;
      }

      const catchUpLine = (l: LogLine): boolean => l['msg'] === 'keyset rotations caught up after downtime';
      const startedLine = (l: LogLine): boolean => l['msg'] === 'ntsd started';
      if (catchUpDue && rng.chance(0.5)) {
        // Kill as soon as the start-up catch-up rotation is logged: its key file write is under way.
        const seen = await proc.waitForLine((l) => catchUpLine(l) || startedLine(l), START_TIMEOUT_MS);
        if (seen !== undefined && catchUpLine(seen)) {
          await delay(rng.float() * 3);
          await kill(proc, 'catch-up', cycle);
          cycles++;
          continue;
        }
      }

      const started = await proc.waitForLine(startedLine, START_TIMEOUT_MS);
      if (started === undefined) {
        const exit = proc.exit();
        defects.add(
          `cycle ${cycle}: no "ntsd started" within ${START_TIMEOUT_MS} ms (exit ${JSON.stringify(exit)}); stderr: ${proc.stderr().slice(-2000)}; last lines: ${JSON.stringify(proc.lines.slice(-5))}`,
        );
        await kill(proc, 'start', cycle);
        cycles++;
        continue;
      }
      startsCompleted++;
      startMs.push(performance.now() - spawnedAt);
      if (proc.lines.some(catchUpLine)) catchUpStarts++;

      // The existing key file was loaded.
      if (fileExisted && proc.lines.some((l) => l['msg'] === 'created a new keyset')) {
        defects.add(`cycle ${cycle}: the daemon created a new keyset although a key file existed`);
      }
      for (const l of proc.lines) {
        if (l['level'] === 'error' || l['level'] === 'fatal') defects.add(`cycle ${cycle}: ${String(l['level'])} log line at start-up: ${JSON.stringify(l)}`);
      }
      // The running daemon's own write in progress (a rotation due right now) is not a leftover.
      const strays = strayFiles(keyDir, keyFileName).filter((n) => !n.startsWith(`.${keyFileName}.tmp-${proc.pid}-`));
      if (strays.length > 0) defects.add(`cycle ${cycle}: stray files in the key directory after start-up: ${strays.join(', ')}`);
      const read = readKeyFile(keyPath);
      if ('error' in read) {
        defects.add(`cycle ${cycle}: after start-up: ${read.error}`);
        await kill(proc, 'running', cycle);
        cycles++;
        continue;
      }
      keyFileCreated = true;
      const onDisk = read.keyset;
      const idsNow = keyIds(onDisk);
      if (afterKill !== undefined && onDisk.stale.length < onDisk.staleKeyCount) {
        const lost = [...afterKill].filter((id) => !idsNow.has(id));
        if (lost.length > 0) defects.add(`cycle ${cycle}: master keys of the key file before the restart are gone: ${lost.join(', ')}`);
      }

      // Cookies from before the crash: the newest batch first, then random older ones.
      const candidates: PooledCookie[] = [];
      const newest = lastBatch[lastBatch.length - 1];
      if (newest !== undefined) candidates.push(newest);
      for (let i = 0; i < options.cookiesPerCheck * 3 && candidates.length < options.cookiesPerCheck && pool.length > 0; i++) {
        const c = pool[rng.below(pool.length)];
        if (c !== undefined && !candidates.includes(c)) candidates.push(c);
      }
      lastBatch = [];
      for (const c of candidates) {
        oldChecked++;
        // Keys may rotate during the check: judge by the key file as it is right after the answer.
        const outcome = await query(c.session, c.cookie);
        const stillKnown = (() => {
          const again = readKeyFile(keyPath);
          return 'keyset' in again ? again.keyset.find(c.keyId) !== undefined : idsNow.has(c.keyId);
        })();
        if (outcome.ok) {
          oldAuthenticated++;
          const fresh = outcome.result.cookies[0];
          if (fresh !== undefined) addCookie({ session: c.session, cookie: fresh, cycle, keyId: readU32(fresh, 0) });
        } else if (outcome.failure.kind === 'nts_nak' && !stillKnown) {
          oldExpired++;
        } else {
          defects.add(
            `cycle ${cycle}: a cookie from cycle ${c.cycle} (key ${c.keyId}, ${stillKnown ? 'still in the key file' : 'gone from the key file'}) did not authenticate after the restart: ${outcome.failure.kind}: ${outcome.failure.message}`,
          );
        }
      }

      // Fresh cookies from this daemon: NTS-KE, then one NTS query (whose reply cookie joins the pool).
      const ke = await performKeyExchange({ host: '127.0.0.1', port: kePort, ca: pki.caPem, servername: 'localhost', timeoutMs: 5000 });
      if (!ke.ok) {
        defects.add(`cycle ${cycle}: NTS-KE failed after the restart: ${ke.failure.kind}: ${ke.failure.message}`);
      } else {
        keyExchanges++;
        const session = ke.result;
        for (const cookie of session.cookies) addCookie({ session, cookie, cycle, keyId: readU32(cookie, 0) });
        const first = session.cookies[0];
        if (first !== undefined) {
          freshChecked++;
          const outcome = await query(session, first);
          if (!outcome.ok) defects.add(`cycle ${cycle}: a fresh cookie did not authenticate: ${outcome.failure.kind}: ${outcome.failure.message}`);
          else for (const cookie of outcome.result.cookies) addCookie({ session, cookie, cycle, keyId: readU32(cookie, 0) });
        }
      }

      // Pick the kill moment relative to the next scheduled rotation.
      const dueMs = (onDisk.currentSinceS + options.rotationIntervalS) * 1000;
      const untilDueMs = dueMs - Date.now();
      const wantRotation = rotationKills < options.rotationKillShare * cycle;
      let kind: KillKind = 'running';
      let waitMs = rng.float() * 800;
      if (untilDueMs > 0 && (wantRotation || untilDueMs < 1500)) {
        if (rng.chance(0.5)) {
          kind = 'rotation';
          waitMs = untilDueMs - 30 + rng.float() * 90;
        } else {
          kind = 'before-due';
          waitMs = untilDueMs - 20 - rng.float() * 280;
        }
      }
      await delay(waitMs);
      await kill(proc, kind, cycle);
      cycles++;
      if (options.progress !== undefined && cycles % (options.progressEvery ?? 50) === 0) {
        options.progress(
          `crash: ${cycles} cycles, ${Math.round((performance.now() - startedAt) / 1000)} s, ${oldAuthenticated}/${oldChecked} old cookies authenticated, ${rotationsLogged} rotations, ${defects.count} defects`,
        );
      }
    }

    // A clean start and stop at the end: the file still loads and serves.
    if (defects.count < 20) {
      const proc = spawnNtsd(configPath, dir);
      current = proc;
      const started = await proc.waitForLine((l) => l['msg'] === 'ntsd started', START_TIMEOUT_MS);
      if (started === undefined) defects.add('final start: no "ntsd started"');
      else if (proc.lines.some((l) => l['msg'] === 'created a new keyset')) defects.add('final start: the daemon created a new keyset');
      await proc.stop();
      rotationsLogged += countRotations(proc.lines);
    }
    const final = readKeyFile(keyPath);
    if ('error' in final) defects.add(`final: ${final.error}`);
    const strays = strayFiles(keyDir, keyFileName);
    if (strays.length > 0) defects.add(`final: stray files in the key directory: ${strays.join(', ')}`);
    return {
      seed: options.seed,
      cycles,
      stoppedBy,
      durationS: (performance.now() - startedAt) / 1000,
      kills,
      startsCompleted,
      catchUpStarts,
      rotationsLogged,
      interruptedWrites,
      keysInFile: 'keyset' in final ? keysetKeys(final.keyset).length : 0,
      keyExchanges,
      oldCookiesChecked: oldChecked,
      oldCookiesAuthenticated: oldAuthenticated,
      oldCookiesExpired: oldExpired,
      freshCookiesChecked: freshChecked,
      startMsP50: median(startMs),
      defectCount: defects.count,
      defects: defects.messages,
    };
  } finally {
    if (current !== undefined) await current.kill9();
    rmSync(dir, { recursive: true, force: true });
  }
}

function countRotations(lines: readonly LogLine[]): number {
  let n = 0;
  for (const l of lines) {
    if (l['msg'] === 'keyset rotated') n++;
    else if (l['msg'] === 'keyset rotations caught up after downtime' && typeof l['rotations'] === 'number') n += l['rotations'];
  }
  return n;
}

/** The figures as printed lines. */
export function formatCrashReport(r: CrashReport): string {
  const lines = [
    `crash battery: ${grouped(r.cycles)} kill -9 cycles in ${r.durationS.toFixed(0)} s (stopped by ${r.stoppedBy}; seed ${r.seed})`,
    `  kills: ${KILL_KINDS.map((k) => `${k} ${r.kills[k]}`).join(', ')}`,
    `  starts completed ${r.startsCompleted} (median ${r.startMsP50.toFixed(0)} ms to "ntsd started"), with a catch-up rotation ${r.catchUpStarts}; rotations logged ${r.rotationsLogged} (a catch-up killed before its write is redone); keys in the file ${r.keysInFile}`,
    `  kills that interrupted a key file write (tmp file left, removed by the next start): ${r.interruptedWrites}`,
    `  cookies from before a crash: ${r.oldCookiesAuthenticated} of ${r.oldCookiesChecked} authenticated, ${r.oldCookiesExpired} expired (NAK, key gone from the file); fresh cookies checked ${r.freshCookiesChecked}; NTS-KE ${r.keyExchanges}`,
    `  defects: ${r.defectCount}`,
    ...r.defects.map((d) => `    - ${d}`),
  ];
  return lines.join('\n');
}

const USAGE = `usage: node dist/bench/reliability/crash.js [--cycles N] [--max-minutes M] [--seed S] [--json]

  --cycles N            kill/restart cycles (default ${DEFAULT_CRASH_OPTIONS.cycles})
  --max-minutes M       stop starting cycles after M minutes (default ${DEFAULT_CRASH_OPTIONS.maxDurationS / 60})
  --rotation-s S        key-rotation-interval-s of the daemon (default ${DEFAULT_CRASH_OPTIONS.rotationIntervalS}, minimum 10)
  --stale-keys K        stale-key-count (default ${DEFAULT_CRASH_OPTIONS.staleKeyCount})
  --seed S              PRNG seed (default: from the clock; printed)
  --json                print the report as one JSON object
`;

async function main(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      cycles: { type: 'string' },
      'max-minutes': { type: 'string' },
      'rotation-s': { type: 'string' },
      'stale-keys': { type: 'string' },
      seed: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  const options: CrashOptions = {
    ...DEFAULT_CRASH_OPTIONS,
    cycles: numberOption(values.cycles, 'cycles', DEFAULT_CRASH_OPTIONS.cycles, 1, 1_000_000),
    maxDurationS: numberOption(values['max-minutes'], 'max-minutes', DEFAULT_CRASH_OPTIONS.maxDurationS / 60, 0.1, 24 * 60, false) * 60,
    rotationIntervalS: numberOption(values['rotation-s'], 'rotation-s', DEFAULT_CRASH_OPTIONS.rotationIntervalS, 10, 86_400),
    staleKeyCount: numberOption(values['stale-keys'], 'stale-keys', DEFAULT_CRASH_OPTIONS.staleKeyCount, 1, 1000),
    seed: numberOption(values.seed, 'seed', defaultSeed(), 0, 0xffff_ffff),
    progress: (line) => process.stderr.write(`${line}\n`),
  };
  if (options.cycles < 1) throw new UsageError('--cycles must be at least 1');
  const report = await runCrash(options);
  process.stdout.write(values.json === true ? `${JSON.stringify(report)}\n` : `${formatCrashReport(report)}\n`);
  return report.defectCount === 0 ? 0 : 1;
}

if (isMain(import.meta.url)) runMain(USAGE, main);
