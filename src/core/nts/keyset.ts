/**
 * CONTRACT STUB — owned by the core-protocol helper, who replaces the bodies (keep the exported names).
 * Master-key set for cookie sealing (RFC 8915 §6): immutable snapshots; rotation returns a new one.
 */
import type { AeadCipher } from '../crypto/aead.js';
import type { FillRandom } from '../bytes.js';

/** One master key. `cipher` is the cached keyed AEAD instance (never serialised). */
export interface MasterKey {
  /** Public key identifier I (u32), unique within a keyset. */
  readonly id: number;
  /** Secret key K (AES-SIV-CMAC-256, 32 octets). */
  readonly key: Uint8Array;
  /** Creation time, Unix seconds. */
  readonly createdAtS: number;
  /** Keyed AEAD instance for `key`. */
  readonly cipher: AeadCipher;
}

/** Immutable keyset snapshot. */
export interface Keyset {
  /** Key that seals new cookies. */
  readonly current: MasterKey;
  /** Key that becomes current at the next rotation; already persisted, already accepted. */
  readonly next: MasterKey;
  /** Older keys still accepted, newest first, at most `staleKeyCount`. */
  readonly stale: readonly MasterKey[];
  /** How many stale keys are kept. */
  readonly staleKeyCount: number;
  /** Looks a key up by id: age 0 = current, 1..n = stale generations, -1 = next. */
  find(id: number): { readonly key: MasterKey; readonly age: number } | undefined;
}

/** Options for creating a keyset. */
export interface KeysetOptions {
  readonly staleKeyCount: number;
}

/** Creates a fresh keyset (current + next) at `nowS`. */
export declare function createKeyset(nowS: number, fillRandom: FillRandom, options: KeysetOptions): Keyset;
