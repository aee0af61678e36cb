/**
 * The one atomic file writer (key storage file, development certificates): a uniquely named tmp file in the
 * target's directory (created exclusively with `mode`), write, fsync, rename over the target, then fsync the
 * directory so the rename itself survives a crash. The tmp file is removed on failure.
 *
 * Two forms of the same steps: `writeFileAtomic` for the running daemon (never blocks the event loop) and
 * `writeFileAtomicSync` for start-up and CLI code that is synchronous anyway (dev certificates).
 * Outside src/io on purpose: io modules may not import each other (ARCHITECTURE.md).
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsConstants, fchmodSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Default mode of files written here: owner read/write only, as secrets need. */
export const ATOMIC_FILE_MODE = 0o600;

const CREATE_EXCLUSIVE = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL;

function tmpPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** True while a process with this id exists (EPERM: it exists but belongs to someone else). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 'EPERM';
  }
}

/**
 * Removes the tmp files that writes of `path` left behind when their process was killed between creating
 * the tmp file and the rename (SIGKILL, power loss). Only names of this module's pattern for this target
 * whose writer process no longer exists are touched, so a write in progress elsewhere is never disturbed.
 * Returns the names removed; a directory that cannot be listed removes nothing.
 */
export async function removeAbandonedTmpFiles(path: string): Promise<string[]> {
  const prefix = `.${basename(path)}.tmp-`;
  let names: string[];
  try {
    names = await readdir(dirname(path));
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const match = /^(\d+)-[0-9a-f]{12}$/.exec(name.slice(prefix.length));
    const pid = Number(match?.[1]);
    if (match === null || !Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid || processAlive(pid)) continue;
    try {
      await unlink(join(dirname(path), name));
      removed.push(name);
    } catch {
      // removed meanwhile, or not ours to remove: leave it
    }
  }
  return removed;
}

function asBytes(data: Uint8Array | string): Uint8Array {
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
}

/** Writes `data` to `path` atomically and durably (see the module comment); `mode` is set exactly, umask or not. */
export async function writeFileAtomic(path: string, data: Uint8Array | string, mode: number = ATOMIC_FILE_MODE): Promise<void> {
  const bytes = asBytes(data);
  const tmp = tmpPathFor(path);
  const handle = await open(tmp, CREATE_EXCLUSIVE, mode);
  let renamed = false;
  try {
    try {
      await handle.chmod(mode); // the umask may have narrowed `mode`; never widen beyond it either
      let written = 0;
      while (written < bytes.length) {
        const r = await handle.write(bytes, written, bytes.length - written, written);
        written += r.bytesWritten;
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
    renamed = true;
    const dirHandle = await open(dirname(path), fsConstants.O_RDONLY);
    try {
      await dirHandle.sync();
    } finally {
      await dirHandle.close();
    }
  } catch (error) {
    if (!renamed) await unlink(tmp).catch(() => undefined);
    throw error;
  }
}

/** The synchronous form of writeFileAtomic: the same steps and guarantees, blocking. */
export function writeFileAtomicSync(path: string, data: Uint8Array | string, mode: number = ATOMIC_FILE_MODE): void {
  const bytes = asBytes(data);
  const tmp = tmpPathFor(path);
  const fd = openSync(tmp, CREATE_EXCLUSIVE, mode);
  let renamed = false;
  try {
    try {
      fchmodSync(fd, mode);
      let written = 0;
      while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written, written);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    renamed = true;
    const dirFd = openSync(dirname(path), fsConstants.O_RDONLY);
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  } catch (error) {
    if (!renamed) {
      try {
        unlinkSync(tmp);
      } catch {
        // already gone
      }
    }
    throw error;
  }
}
