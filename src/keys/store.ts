/**
 * The key file: loads (or creates) the master-key set for cookies (RFC 8915 §6), persists it atomically,
 * and rotates it on a schedule that survives restarts.
 *
 * Durability rules (OPERATIONS.md, "Key storage"):
 *  - every write is tmp file in the same directory → write → fsync(file) → rename → fsync(dir), mode 0600;
 *    the directory is created 0700 when missing;
 *  - a file readable by group/others is used but warned about;
 *  - a corrupt file is renamed aside to `<name>.corrupt-<unix ms>` (its bytes are preserved), logged at
 *    error level, and replaced by a fresh keyset: it is never silently overwritten;
 *  - a permission error (EACCES/EPERM) refuses to start: NtsdError KEYSET_UNREADABLE;
 *  - tmp files of writes interrupted by a crash (their writer process is gone) are removed on open;
 *  - a rotation persists the new snapshot (whose `next` key is new) BEFORE publishing it, so a crash at any
 *    moment loses no key that could have sealed a live cookie.
 *
 * Schedule: the next rotation is due at `currentSinceS + rotationIntervalS` of the snapshot on disk, so a
 * restart keeps the rhythm. After downtime of several intervals the store catches up with one rotation per
 * missed interval (at most staleKeyCount + 2, beyond which every key would be replaced anyway), each stamped
 * with its scheduled time, so cookie ages match what a daemon that never stopped would have produced.
 * Those catch-up keys therefore carry a scheduled, not actual, creation time.
 */
import { mkdir, readFile, rename, stat } from 'node:fs/promises';
import { randomFillSync } from 'node:crypto';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { FillRandom } from '../core/bytes.js';
import {
  createKeyset,
  decodeKeyset,
  encodeKeyset,
  keysetKeys,
  resizeKeyset,
  rotateKeyset,
  type Keyset,
} from '../core/nts/keyset.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { removeAbandonedTmpFiles, writeFileAtomic } from '../runtime/fs-atomic.js';

/** Label values of `ntsd_keyset_rotations_total{result}`. */
export const KeysetRotationResult = {
  success: 'success',
  failure: 'failure',
} as const;
/** One rotation result label. */
export type KeysetRotationResult = (typeof KeysetRotationResult)[keyof typeof KeysetRotationResult];

/** File mode of the key file: owner read/write only. */
export const KEY_FILE_MODE = 0o600;
/** Mode of a key directory the store creates. */
export const KEY_DIR_MODE = 0o700;
/** Delay before retrying a rotation whose persist failed, seconds. */
export const ROTATION_RETRY_S = 60;
/** setTimeout's largest delay (2^31 − 1 ms); longer waits are split. */
const MAX_TIMER_MS = 0x7fff_ffff;

/** What every keyset source takes besides its own settings: where to log and whom to tell. */
export interface KeysetSourceHooks {
  /** Component logger (e.g. `root.child({ component: 'keyset' })`). */
  readonly logger: Logger;
  /** Current Unix time in seconds; defaults to Date.now() / 1000. */
  readonly nowS?: () => number;
  /** Called with every published snapshot and its encoding (the NTP and KE threads take the bytes). */
  readonly onSnapshot?: (keyset: Keyset, bytes: Uint8Array) => void;
  /** Called after every rotation attempt or swap (`ntsd_keyset_rotations_total{result}`). */
  readonly onRotation?: (result: KeysetRotationResult) => void;
}

/** Options for {@link openKeysetStore}. */
export interface KeysetStoreOptions extends KeysetSourceHooks {
  /** Path of the key file. */
  readonly path: string;
  /** Seconds between rotations (> 0). */
  readonly rotationIntervalS: number;
  /** Old keys still accepted after rotation. */
  readonly staleKeyCount: number;
  /** CSPRNG; defaults to node:crypto randomFillSync. */
  readonly fillRandom?: FillRandom;
  /** Called when writing the key file failed (`ntsd_keyset_persist_failures_total`). */
  readonly onPersistFailure?: (error: unknown) => void;
}

/** A loaded key file with its rotation schedule. */
export interface KeysetStore {
  /** The published snapshot. */
  readonly keyset: Keyset;
  /** Encoding of the published snapshot (the key file's exact content). */
  readonly bytes: Uint8Array;
  /** Unix seconds at which the next rotation is due. */
  readonly nextRotationS: number;
  /** Arms the rotation timer (unref'd: it never keeps the process alive). Idempotent. */
  start(): void;
  /** Rotates now, regardless of the schedule; persists before publishing. Resolves with the result. */
  rotateNow(): Promise<KeysetRotationResult>;
  /** Writes the published snapshot to disk again (shutdown). Throws NtsdError KEYSET_PERSIST_FAILED. */
  persist(): Promise<void>;
  /** SIGHUP: `follow` re-reads the key file now; `local` and `ratchet` have nothing to re-read. */
  reload(): Promise<void>;
  /** Stops the timer; waits for a rotation or persist in progress. */
  close(): Promise<void>;
}

function errnoCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

function isPermissionError(error: unknown): boolean {
  const code = errnoCode(error);
  return code === 'EACCES' || code === 'EPERM';
}

function defaultFillRandom(target: Uint8Array): void {
  randomFillSync(target);
}

function defaultNowS(): number {
  return Date.now() / 1000;
}

/** Creates the key directory (0700) when missing; an existing directory is left as it is. */
async function ensureDirectory(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: KEY_DIR_MODE });
  } catch (error) {
    throw new NtsdError(NtsdErrorCode.KEYSET_UNREADABLE, `cannot create key directory ${dir}`, { cause: error });
  }
}

/** Loads the key file; undefined when it does not exist. Permission problems throw KEYSET_UNREADABLE. */
async function readKeyFile(path: string, logger: Logger): Promise<Uint8Array | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    if (isPermissionError(error)) {
      throw new NtsdError(NtsdErrorCode.KEYSET_UNREADABLE, `permission denied reading key file ${path}`, { cause: error });
    }
    throw new NtsdError(NtsdErrorCode.KEYSET_UNREADABLE, `cannot read key file ${path}`, { cause: error });
  }
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) {
      logger.warn(
        { path, mode: (st.mode & 0o777).toString(8) },
        'key file is readable or writable by group or others; chmod 600 it',
      );
    }
  } catch {
    // The read succeeded; a failing stat only costs the warning.
  }
  return bytes;
}

/** Copies a snapshot (fresh key buffers), so rotating the copy cannot wipe keys of the published one. */
function cloneKeyset(ks: Keyset): Keyset {
  const decoded = decodeKeyset(encodeKeyset(ks));
  if (!decoded.ok) throw new Error(`keyset re-decode failed: ${decoded.error}`);
  return decoded.keyset;
}

/** Wipes (best effort) keys of `old` that `current` no longer holds. */
function wipeRetired(old: Keyset, current: Keyset): void {
  for (const k of keysetKeys(old)) {
    if (current.find(k.id) === undefined) k.key.fill(0);
  }
}

/** Applies missed rotations (one per interval, at most staleKeyCount + 2), each stamped with its due time. */
function catchUp(ks: Keyset, nowS: number, intervalS: number, fillRandom: FillRandom): { keyset: Keyset; rotations: number } {
  const missed = Math.floor((nowS - ks.currentSinceS) / intervalS);
  if (!(missed >= 1)) return { keyset: ks, rotations: 0 };
  const cap = ks.staleKeyCount + 2;
  const first = missed > cap ? missed - cap + 1 : 1;
  let out = ks;
  for (let k = first; k <= missed; k++) out = rotateKeyset(out, ks.currentSinceS + k * intervalS, fillRandom);
  return { keyset: out, rotations: missed - first + 1 };
}

/**
 * Opens the key file at `options.path` (creating it, or replacing a corrupt one), applies missed rotations,
 * persists when anything changed, and publishes the snapshot through `onSnapshot` before returning.
 */
export async function openKeysetStore(options: KeysetStoreOptions): Promise<KeysetStore> {
  const { path, logger } = options;
  const nowS = options.nowS ?? defaultNowS;
  const fillRandom = options.fillRandom ?? defaultFillRandom;
  const intervalS = options.rotationIntervalS;
  if (!(intervalS > 0) || !Number.isFinite(intervalS)) throw new RangeError('keyset store: rotationIntervalS must be > 0');

  await ensureDirectory(dirname(path));
  // A daemon killed in the middle of a write leaves its tmp file; this store is the file's only writer.
  const abandoned = await removeAbandonedTmpFiles(path);
  if (abandoned.length > 0) logger.warn({ path, removed: abandoned }, 'removed tmp files of key file writes interrupted by a crash');
  const existing = await readKeyFile(path, logger);

  let keyset: Keyset | undefined;
  let dirty = false;
  if (existing !== undefined) {
    const decoded = decodeKeyset(existing);
    if (decoded.ok) {
      keyset = decoded.keyset;
    } else {
      const aside = `${path}.corrupt-${Date.now()}`;
      try {
        await rename(path, aside);
      } catch (error) {
        throw new NtsdError(NtsdErrorCode.KEYSET_UNREADABLE, `key file ${path} is corrupt and cannot be moved aside`, {
          cause: error,
        });
      }
      logger.error(
        { path, movedTo: aside, reason: decoded.error },
        'key file is corrupt: moved aside and replaced by a fresh keyset; cookies issued under the old keys will be refused',
      );
    }
  }
  if (keyset === undefined) {
    keyset = createKeyset(nowS(), fillRandom, { staleKeyCount: options.staleKeyCount });
    dirty = true;
    logger.info({ path, currentKeyId: keyset.current.id }, 'created a new keyset');
  } else if (keyset.staleKeyCount !== options.staleKeyCount) {
    keyset = resizeKeyset(keyset, options.staleKeyCount);
    dirty = true;
  }
  const caught = catchUp(keyset, nowS(), intervalS, fillRandom);
  if (caught.rotations > 0) {
    logger.info({ rotations: caught.rotations }, 'keyset rotations caught up after downtime');
    keyset = caught.keyset;
    dirty = true;
  }

  let bytes = encodeKeyset(keyset);
  if (dirty) {
    try {
      await writeFileAtomic(path, bytes);
    } catch (error) {
      options.onPersistFailure?.(error);
      const code = isPermissionError(error) ? NtsdErrorCode.KEYSET_UNREADABLE : NtsdErrorCode.KEYSET_PERSIST_FAILED;
      throw new NtsdError(code, `cannot write key file ${path}`, { cause: error });
    }
  }
  for (let i = 0; i < caught.rotations; i++) options.onRotation?.(KeysetRotationResult.success);

  let published: Keyset = keyset;
  let timer: NodeJS.Timeout | undefined;
  let started = false;
  let closed = false;
  let retryAtS: number | undefined;
  /** Serialises rotations and persists. */
  let chain: Promise<unknown> = Promise.resolve();

  const publish = (ks: Keyset, encoded: Uint8Array): void => {
    const old = published;
    published = ks;
    bytes = encoded;
    options.onSnapshot?.(ks, encoded);
    if (old !== ks) wipeRetired(old, ks);
  };

  const dueS = (): number => retryAtS ?? published.currentSinceS + intervalS;

  const rotateOnce = async (stampS: number): Promise<KeysetRotationResult> => {
    let candidate: Keyset;
    let encoded: Uint8Array;
    try {
      candidate = rotateKeyset(cloneKeyset(published), stampS, fillRandom);
      encoded = encodeKeyset(candidate);
      await writeFileAtomic(path, encoded);
    } catch (error) {
      options.onPersistFailure?.(error);
      options.onRotation?.(KeysetRotationResult.failure);
      retryAtS = nowS() + Math.min(ROTATION_RETRY_S, intervalS);
      logger.error({ path, err: error, retryInS: Math.min(ROTATION_RETRY_S, intervalS) }, 'keyset rotation failed; keeping the current keyset');
      return KeysetRotationResult.failure;
    }
    retryAtS = undefined;
    publish(candidate, encoded);
    options.onRotation?.(KeysetRotationResult.success);
    logger.info({ currentKeyId: candidate.current.id, nextKeyId: candidate.next.id }, 'keyset rotated');
    return KeysetRotationResult.success;
  };

  const enqueue = <T>(job: () => Promise<T>): Promise<T> => {
    const run = chain.then(job, job);
    chain = run.catch(() => undefined);
    return run;
  };

  const onTimer = (): void => {
    timer = undefined;
    if (closed) return;
    void enqueue(async () => {
      const now = nowS();
      if (now >= dueS()) {
        // Stamp with the scheduled time (keeps the rhythm) unless this is a retry or we are far behind.
        const scheduled = published.currentSinceS + intervalS;
        const stamp = retryAtS === undefined && now - scheduled < intervalS ? scheduled : now;
        await rotateOnce(stamp);
      }
    }).finally(arm);
  };

  function arm(): void {
    if (closed || !started || timer !== undefined) return;
    const delayMs = Math.max(0, Math.min(MAX_TIMER_MS, Math.ceil((dueS() - nowS()) * 1000)));
    timer = setTimeout(onTimer, delayMs);
    timer.unref();
  }

  options.onSnapshot?.(published, bytes);

  return {
    get keyset() {
      return published;
    },
    get bytes() {
      return bytes;
    },
    get nextRotationS() {
      return dueS();
    },
    start() {
      started = true;
      arm();
    },
    rotateNow() {
      return enqueue(() => rotateOnce(nowS()));
    },
    reload() {
      return Promise.resolve();
    },
    persist() {
      return enqueue(async () => {
        try {
          await writeFileAtomic(path, bytes);
        } catch (error) {
          options.onPersistFailure?.(error);
          throw new NtsdError(NtsdErrorCode.KEYSET_PERSIST_FAILED, `cannot write key file ${path}`, { cause: error });
        }
      });
    },
    async close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      await chain;
    },
  };
}
