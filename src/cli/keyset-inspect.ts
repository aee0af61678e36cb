/**
 * `ntsd keyset inspect [-c FILE]`: what an operator needs to know about the cookie master keys without ever
 * seeing one: the mode, each key's id, role, creation time and age, the rotation schedule, and how far back
 * cookies still open. Works on the key storage file (`local`, `follow`) or derives the keys (`ratchet`).
 */
import { readFileSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { decodeKeyset, keysetKeys, type Keyset } from '../core/nts/keyset.js';
import { checkRatchetSeed, ratchetEpoch, ratchetKeyset, ratchetSeedTag } from '../core/nts/ratchet.js';
import { ExitCode, NtsdError } from '../errors.js';

function formatAge(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d > 0 ? `${d}d${h}h` : h > 0 ? `${h}h${m}m` : `${m}m${s % 60}s`;
}

/** Reads a whole file for `keyset inspect`; a failure is KEYSET_UNREADABLE naming the TOML key. */
function readForInspect(path: string, key: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new NtsdError('KEYSET_UNREADABLE', `${key}: cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** `ntsd keyset inspect`: prints the key ids, ages and rotation schedule of `config`'s keyset (never key bytes). */
export function runKeysetInspect(config: Config, write: (line: string) => void): number {
  const k = config.keyset;
  const nowS = Date.now() / 1000;
  const intervalS = k.keyRotationIntervalS;
  let ks: Keyset;
  let seedTag: number | undefined;
  write(`mode: ${k.mode}`);
  if (k.mode === 'ratchet') {
    if (k.sharedSecretPath === undefined) throw new NtsdError('CONFIG_INVALID', 'keyset.shared-secret-path: required when mode = "ratchet"');
    const seed = readForInspect(k.sharedSecretPath, 'keyset.shared-secret-path');
    const accept = k.acceptSharedSecretPath === undefined ? undefined : readForInspect(k.acceptSharedSecretPath, 'keyset.accept-shared-secret-path');
    for (const [key, bytes] of [['keyset.shared-secret-path', seed], ['keyset.accept-shared-secret-path', accept]] as const) {
      const problem = bytes === undefined ? undefined : checkRatchetSeed(bytes);
      if (problem !== undefined) throw new NtsdError('KEYSET_UNREADABLE', `${key}: ${problem.replaceAll('_', ' ')} (32..4096 octets)`);
    }
    seedTag = ratchetSeedTag(seed);
    ks = ratchetKeyset({ seed, acceptSeed: accept, intervalS, staleKeyCount: k.staleKeyCount, nowS });
    write(`shared seed: ${k.sharedSecretPath} (key-id tag ${seedTag.toString(16).padStart(2, '0')})`);
    if (accept !== undefined) write(`also accepted: ${k.acceptSharedSecretPath ?? ''} (key-id tag ${ratchetSeedTag(accept).toString(16).padStart(2, '0')})`);
    write(`epoch: ${ratchetEpoch(nowS, intervalS)} (floor(unix time / ${intervalS}))`);
  } else {
    const path = k.keyStoragePath;
    const decoded = decodeKeyset(readForInspect(path, 'keyset.key-storage-path'));
    if (!decoded.ok) {
      write(`${path}: corrupt or unreadable key storage file: ${decoded.error}`);
      return ExitCode.failure;
    }
    ks = decoded.keyset;
    write(`key storage file: ${path}${k.mode === 'follow' ? ' (followed: written by another node, never by this one)' : ''}`);
  }
  write(`rotation interval: ${intervalS} s; stale keys kept: ${ks.staleKeyCount}`);
  write('role     key id      created (UTC)              age');
  for (const key of keysetKeys(ks)) {
    const role = key === ks.current ? 'current' : key === ks.next ? 'next' : seedTag !== undefined && key.id >>> 24 !== seedTag ? 'accepted' : 'stale';
    const id = key.id.toString(16).padStart(8, '0');
    const age = nowS >= key.createdAtS ? formatAge(nowS - key.createdAtS) : `starts in ${formatAge(key.createdAtS - nowS)}`;
    write(`${role.padEnd(8)} ${id}    ${new Date(key.createdAtS * 1000).toISOString().padEnd(26)} ${age}`);
  }
  const nextRotationS = ks.currentSinceS + intervalS;
  write(`current key in use since ${new Date(ks.currentSinceS * 1000).toISOString()}`);
  if (k.mode === 'follow') {
    write(`the writer's next rotation is due ${new Date(nextRotationS * 1000).toISOString()} (in ${formatAge(nextRotationS - nowS)}, if its interval is ${intervalS} s)`);
  } else {
    write(`next rotation: ${new Date(nextRotationS * 1000).toISOString()} (in ${formatAge(nextRotationS - nowS)})`);
  }
  const oldest = ks.stale[ks.stale.length - 1] ?? ks.current;
  write(`cookies sealed since ${new Date(oldest.createdAtS * 1000).toISOString()} still open`);
  return ExitCode.ok;
}
