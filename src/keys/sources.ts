/**
 * The two shared-key sources of a fleet (docs/fleet.md), next to keys/store.ts (`mode = "local"`):
 *  - `[keyset] mode = "follow"`: another ntsd writes the key file; this node only reads it, re-reads it
 *    when it changes and swaps it in only after validating it;
 *  - `[keyset] mode = "ratchet"`: keys derived from a shared seed file and the wall-clock epoch
 *    (core/nts/ratchet.ts), re-derived at every epoch boundary; nothing is written.
 * Both publish immutable snapshots exactly as the local store does (`onSnapshot` with the encoding).
 */
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { decodeKeyset, encodeKeyset, keysetKeys, type Keyset } from '../core/nts/keyset.js';
import { checkRatchetSeed, ratchetEpoch, ratchetKeyset, ratchetSeedTag, RATCHET_MAX_SEED_LENGTH, RATCHET_MIN_SEED_LENGTH } from '../core/nts/ratchet.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import type { KeysetSourceHooks } from './store.js';

/** What the daemon needs from any master-key source (keys/store.ts's KeysetStore has the same shape). */
export interface KeysetSource {
  /** The published snapshot. */
  readonly keyset: Keyset;
  /** Its encoding. */
  readonly bytes: Uint8Array;
  /** Unix seconds of the next expected change. */
  readonly nextRotationS: number;
  /** Arms the timer (unref'd). Idempotent. */
  start(): void;
  /** Checks for a change now. */
  rotateNow(): Promise<'success' | 'failure'>;
  /** SIGHUP: re-reads what can be re-read. */
  reload(): Promise<void>;
  /** Writes nothing here (the local store persists). */
  persist(): Promise<void>;
  /** Stops the timer and waits for work in progress. */
  close(): Promise<void>;
}


/** setTimeout's largest delay (2^31 − 1 ms). */
const MAX_TIMER_MS = 0x7fff_ffff;

function errnoCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

function defaultNowS(): number {
  return Date.now() / 1000;
}

/** Reads a secret file; undefined when missing; warns when group or others may read or write it (as the key file). */
async function readSecretFile(path: string, logger: Logger): Promise<Uint8Array | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) {
      logger.warn({ path, mode: (st.mode & 0o777).toString(8) }, 'secret file is readable or writable by group or others; chmod 600 it');
    }
  } catch {
    // The read succeeded; a failing stat only costs the warning.
  }
  return bytes;
}

/** Wipes (best effort) keys of `old` that `current` no longer holds. */
function wipeRetired(old: Keyset, current: Keyset): void {
  for (const k of keysetKeys(old)) {
    if (current.find(k.id) === undefined) k.key.fill(0);
  }
}

// ---------------------------------------------------------------------------------------------------------
// `[keyset] mode = "follow"`: another ntsd writes the key file; this node only reads it.

/** Why a followed key file was not swapped in (log field `reason`). */
export type FollowRefusal = 'unreadable' | 'corrupt' | 'older' | 'conflicting';

/** Options for {@link openFollowKeysetStore}. */
export interface FollowKeysetStoreOptions extends KeysetSourceHooks {
  /** The key file another ntsd (mode local) writes, copied here by the operator's tooling. */
  readonly path: string;
  /** Seconds between checks of the file. */
  readonly pollIntervalS: number;
  /** The writer's rotation interval: a file older than two intervals is warned about (its copy stopped). */
  readonly rotationIntervalS: number;
}

/**
 * Opens a followed key file. The file must exist and decode at start (else NtsdError KEYSET_UNREADABLE:
 * a follower has no keys of its own). Afterwards, every `pollIntervalS` and on reload(), a changed file is
 * decoded and swapped in only if it is valid and not older than the published one (its currentSinceS is
 * later, or equal with the same current key); anything else is refused and logged once, and the old keys
 * keep serving. Never writes the file.
 */
export async function openFollowKeysetStore(options: FollowKeysetStoreOptions): Promise<KeysetSource> {
  const { path, logger } = options;
  const nowS = options.nowS ?? defaultNowS;
  let first: Uint8Array | undefined;
  try {
    first = await readSecretFile(path, logger);
  } catch (error) {
    throw new NtsdError(NtsdErrorCode.KEYSET_UNREADABLE, `keyset.key-storage-path: cannot read the followed key file ${path}`, { cause: error });
  }
  if (first === undefined) {
    throw new NtsdError(NtsdErrorCode.KEYSET_UNREADABLE, `keyset.key-storage-path: the followed key file ${path} does not exist (mode = "follow" never creates it; copy it from the node that writes it)`);
  }
  const decoded = decodeKeyset(first);
  if (!decoded.ok) {
    throw new NtsdError(NtsdErrorCode.KEYSET_UNREADABLE, `keyset.key-storage-path: the followed key file ${path} is not a valid keyset (${decoded.error})`);
  }
  let published = decoded.keyset;
  let bytes: Uint8Array = first;
  /** The last refused content, so one bad file is logged and counted once, not at every poll. */
  let refused: Uint8Array | undefined;
  let staleWarned = false;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let chain: Promise<unknown> = Promise.resolve();

  const refuse = (reason: FollowRefusal, candidate: Uint8Array, extra: Record<string, unknown> = {}): void => {
    if (refused !== undefined && sameBytes(refused, candidate)) return;
    refused = candidate;
    options.onRotation?.('failure');
    logger.error({ path, reason, currentKeyId: published.current.id, ...extra }, 'followed key file refused; the keys in use keep serving');
  };

  const check = async (): Promise<void> => {
    let candidate: Uint8Array;
    try {
      candidate = await readFile(path);
    } catch (error) {
      const marker = new TextEncoder().encode(`unreadable:${errnoCode(error) ?? 'error'}`);
      refuse('unreadable', marker, { err: error });
      return;
    }
    if (sameBytes(candidate, bytes)) {
      refused = undefined;
    } else {
      const next = decodeKeyset(candidate);
      if (!next.ok) {
        refuse('corrupt', candidate, { error: next.error });
      } else if (next.keyset.currentSinceS < published.currentSinceS) {
        refuse('older', candidate, { fileCurrentSinceS: next.keyset.currentSinceS, currentSinceS: published.currentSinceS });
      } else if (next.keyset.currentSinceS === published.currentSinceS && next.keyset.current.id !== published.current.id) {
        refuse('conflicting', candidate, { fileCurrentKeyId: next.keyset.current.id });
      } else {
        const old = published;
        published = next.keyset;
        bytes = candidate;
        refused = undefined;
        staleWarned = false;
        options.onSnapshot?.(published, bytes);
        wipeRetired(old, published);
        options.onRotation?.('success');
        logger.info({ path, currentKeyId: published.current.id, nextKeyId: published.next.id }, 'followed key file swapped in');
      }
    }
    if (!staleWarned && nowS() > published.currentSinceS + 2 * options.rotationIntervalS) {
      staleWarned = true;
      logger.warn(
        { path, currentSinceS: published.currentSinceS, rotationIntervalS: options.rotationIntervalS },
        'followed key file is older than two rotation intervals: its writer or the copy has stopped; new cookies from the writer will be refused',
      );
    }
  };
  const enqueue = (): Promise<void> => {
    const run = chain.then(check, check);
    chain = run.catch(() => undefined);
    return run;
  };

  options.onSnapshot?.(published, bytes);
  logger.info({ path, currentKeyId: published.current.id }, 'following key file');
  return {
    get keyset() {
      return published;
    },
    get bytes() {
      return bytes;
    },
    get nextRotationS() {
      return nowS() + options.pollIntervalS;
    },
    start() {
      if (timer !== undefined || closed) return;
      timer = setInterval(() => void enqueue(), options.pollIntervalS * 1000);
      timer.unref();
    },
    async rotateNow() {
      const before = published;
      await enqueue();
      return published !== before ? 'success' : 'failure';
    },
    reload() {
      return enqueue();
    },
    persist() {
      return Promise.resolve(); // a follower never writes the file
    },
    async close() {
      closed = true;
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
      await chain;
    },
  };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// `[keyset] mode = "ratchet"`: keys derived from a shared seed and the wall-clock epoch (core/nts/ratchet.ts).

/** Options for {@link openRatchetKeysetStore}. */
export interface RatchetKeysetStoreOptions extends KeysetSourceHooks {
  /** The shared seed file (`keyset.shared-secret-path`). */
  readonly seedPath: string;
  /** A second seed accepted but never sealing (`keyset.accept-shared-secret-path`). */
  readonly acceptSeedPath?: string | undefined;
  /** The epoch length, seconds. */
  readonly rotationIntervalS: number;
  readonly staleKeyCount: number;
}

/** Reads a seed file: exists, is readable, 32..4096 octets; warns when group or others may read it (as for the key file). */
export async function readSeedFile(path: string, key: string, logger: Logger): Promise<Uint8Array> {
  let seed: Uint8Array | undefined;
  try {
    seed = await readSecretFile(path, logger);
  } catch (error) {
    throw new NtsdError(NtsdErrorCode.KEYSET_UNREADABLE, `${key}: cannot read the seed file ${path}`, { cause: error });
  }
  if (seed === undefined) {
    throw new NtsdError(NtsdErrorCode.KEYSET_UNREADABLE, `${key}: the seed file ${path} does not exist (make it on one node with \`head -c 32 /dev/urandom > ${path}; chmod 600 ${path}\` and copy it to every node)`);
  }
  const problem = checkRatchetSeed(seed);
  if (problem !== undefined) {
    throw new NtsdError(
      NtsdErrorCode.KEYSET_UNREADABLE,
      `${key}: the seed file ${path} holds ${seed.length} octets; it must hold ${RATCHET_MIN_SEED_LENGTH} to ${RATCHET_MAX_SEED_LENGTH} random octets`,
    );
  }
  return seed;
}

/**
 * Derives the keyset of the current epoch from the seed(s), publishes it, and re-derives it at every epoch
 * boundary. Nothing is written. Keys that leave the window are wiped (best effort). The seed bytes stay
 * in memory for the lifetime of the store (they are needed at every boundary).
 */
export async function openRatchetKeysetStore(options: RatchetKeysetStoreOptions): Promise<KeysetSource> {
  const { logger } = options;
  const nowS = options.nowS ?? defaultNowS;
  const intervalS = options.rotationIntervalS;
  const seed = await readSeedFile(options.seedPath, 'keyset.shared-secret-path', logger);
  const acceptSeed =
    options.acceptSeedPath === undefined ? undefined : await readSeedFile(options.acceptSeedPath, 'keyset.accept-shared-secret-path', logger);
  if (acceptSeed !== undefined && ratchetSeedTag(acceptSeed) === ratchetSeedTag(seed)) {
    throw new NtsdError(
      NtsdErrorCode.KEYSET_UNREADABLE,
      'keyset.accept-shared-secret-path: this seed and shared-secret-path give the same key-id tag (1 in 256); make another new seed',
    );
  }
  const derive = (): Keyset => ratchetKeyset({ seed, acceptSeed, intervalS, staleKeyCount: options.staleKeyCount, nowS: nowS() });
  let published = derive();
  let bytes = encodeKeyset(published);
  let timer: NodeJS.Timeout | undefined;
  let started = false;
  let closed = false;

  const advance = (): void => {
    const epoch = ratchetEpoch(nowS(), intervalS);
    if (epoch * intervalS === published.currentSinceS) return;
    const old = published;
    published = derive();
    bytes = encodeKeyset(published);
    options.onSnapshot?.(published, bytes);
    wipeRetired(old, published);
    options.onRotation?.('success');
    logger.info({ currentKeyId: published.current.id, nextKeyId: published.next.id, epoch }, 'keyset ratcheted');
  };
  const arm = (): void => {
    if (closed || !started) return;
    // Wake at the next boundary (a little after it, so the clock has surely crossed it).
    const dueS = published.currentSinceS + intervalS;
    const delayMs = Math.max(0, Math.min(MAX_TIMER_MS, Math.ceil((dueS - nowS()) * 1000) + 5));
    timer = setTimeout(() => {
      timer = undefined;
      try {
        advance();
      } catch (error) {
        logger.error({ err: error }, 'keyset ratchet failed; keeping the current keyset');
      }
      arm();
    }, delayMs);
    timer.unref();
  };

  options.onSnapshot?.(published, bytes);
  logger.info({ currentKeyId: published.current.id, seedTag: ratchetSeedTag(seed), acceptSeed: acceptSeed !== undefined }, 'keyset derived from the shared seed');
  return {
    get keyset() {
      return published;
    },
    get bytes() {
      return bytes;
    },
    get nextRotationS() {
      return published.currentSinceS + intervalS;
    },
    start() {
      if (started) return;
      started = true;
      arm();
    },
    rotateNow() {
      advance();
      return Promise.resolve('success');
    },
    reload() {
      advance();
      return Promise.resolve();
    },
    persist() {
      return Promise.resolve(); // derived keys are never stored
    },
    close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      return Promise.resolve();
    },
  };
}
