/**
 * The keyset source that `[keyset] mode` names (docs/fleet.md): `local` (keys/store.ts, this node writes
 * and rotates the key file), `follow` or `ratchet` (keys/sources.ts). Each publishes immutable snapshots
 * through `onSnapshot`; rotations and persist failures are counted in the metrics.
 */
import type { Logger } from 'pino';
import type { KeysetConfig } from '../config/schema.js';
import type { Keyset } from '../core/nts/keyset.js';
import { NtsdError } from '../errors.js';
import type { Metrics } from '../obs/metrics.js';
import { openKeysetStore } from './store.js';
import { openFollowKeysetStore, openRatchetKeysetStore, type KeysetSource } from './sources.js';

/** Opens the master-key source that `[keyset] mode` names (docs/fleet.md). */
export function openKeysetSource(
  k: KeysetConfig,
  logger: Logger,
  metrics: Metrics,
  onSnapshot: (keyset: Keyset, bytes: Uint8Array) => void,
): Promise<KeysetSource> {
  const onRotation = (result: 'success' | 'failure'): void => metrics.keys.rotation(result);
  switch (k.mode) {
    case 'local':
      return openKeysetStore({
        path: k.keyStoragePath,
        rotationIntervalS: k.keyRotationIntervalS,
        staleKeyCount: k.staleKeyCount,
        logger,
        onSnapshot,
        onRotation,
        onPersistFailure: () => metrics.keys.persistFailure(),
      });
    case 'follow':
      return openFollowKeysetStore({
        path: k.keyStoragePath,
        pollIntervalS: k.followPollIntervalS,
        rotationIntervalS: k.keyRotationIntervalS,
        logger,
        onSnapshot,
        onRotation,
      });
    case 'ratchet':
      if (k.sharedSecretPath === undefined) throw new NtsdError('CONFIG_INVALID', 'keyset.shared-secret-path: required when mode = "ratchet"');
      return openRatchetKeysetStore({
        seedPath: k.sharedSecretPath,
        acceptSeedPath: k.acceptSharedSecretPath,
        rotationIntervalS: k.keyRotationIntervalS,
        staleKeyCount: k.staleKeyCount,
        logger,
        onSnapshot,
        onRotation,
      });
  }
}
