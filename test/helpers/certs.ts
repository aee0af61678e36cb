/**
 * Test PKI for engineers' tests: a private CA plus a server leaf in a fresh temp directory, all files
 * named `unsafe-*`. Example: `const pki = makeTestPki(['nts.test', '127.0.0.1']); ... pki.cleanup();`
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createDevCertificateAuthority,
  generateDevPki,
  issueDevLeafCertificate,
  type DevCertificateAuthority,
  type DevLeafCertificate,
} from '../../src/cli/dev-certs.js';

/** A leaf written by TestPki.writeLeaf. */
export interface TestLeafFiles {
  readonly chainPath: string;
  readonly keyPath: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/** A CA and leaf on disk for one test file. */
export interface TestPki {
  /** Temp directory holding every file (removed by cleanup). */
  readonly dir: string;
  /** CA certificate path (what clients trust, e.g. chrony's `ntstrustedcerts`). */
  readonly caCertPath: string;
  /** Leaf certificate path. */
  readonly certPath: string;
  /** Leaf + CA path. */
  readonly chainPath: string;
  /** Leaf private key path (0600). */
  readonly keyPath: string;
  /** CA certificate PEM (pass as `ca` to tls.connect). */
  readonly caPem: string;
  /** Leaf certificate PEM. */
  readonly certPem: string;
  /** Leaf private key PEM. */
  readonly keyPem: string;
  /** The in-memory CA, to issue more leaves. */
  readonly ca: DevCertificateAuthority;
  /** Issues another leaf from the same CA (defaults to the same names; ECDSA unless `keyType` is 'rsa'). */
  issueLeaf(names?: readonly string[], validDays?: number, keyType?: 'ecdsa' | 'rsa'): DevLeafCertificate;
  /**
   * Issues a leaf for `names` and writes it as `unsafe-<label>-fullchain.pem` (leaf + CA) and
   * `unsafe-<label>.key` (0600) in `dir`: a second pair for a multi-certificate listener.
   */
  writeLeaf(label: string, names: readonly string[], keyType?: 'ecdsa' | 'rsa'): TestLeafFiles;
  /** Removes the temp directory. */
  cleanup(): void;
}

function splitNames(names: readonly string[]): { dnsNames: string[]; ipAddresses: string[] } {
  return {
    dnsNames: names.filter((n) => isIP(n) === 0),
    ipAddresses: names.filter((n) => isIP(n) !== 0),
  };
}

/**
 * Creates a test PKI in a new temp directory. `names` mixes DNS names and IP literals
 * (default: localhost, 127.0.0.1, ::1). Chrony interop uses ['nts.test', '127.0.0.1'].
 */
export function makeTestPki(names: readonly string[] = ['localhost', '127.0.0.1', '::1']): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'unsafe-ntsd-pki-'));
  const pki = generateDevPki({ dir, ...splitNames(names), prefix: 'unsafe-test', caName: 'ntsd UNSAFE test CA' });
  return {
    dir,
    caCertPath: pki.caCertPath,
    certPath: pki.certPath,
    chainPath: pki.chainPath,
    keyPath: pki.keyPath,
    caPem: pki.ca.certPem,
    certPem: pki.leaf.certPem,
    keyPem: pki.leaf.keyPem,
    ca: pki.ca,
    issueLeaf(other: readonly string[] = names, validDays?: number, keyType?: 'ecdsa' | 'rsa'): DevLeafCertificate {
      return issueDevLeafCertificate(pki.ca, {
        ...splitNames(other),
        ...(validDays === undefined ? {} : { validDays }),
        ...(keyType === undefined ? {} : { keyType }),
      });
    },
    writeLeaf(label: string, other: readonly string[], keyType?: 'ecdsa' | 'rsa'): TestLeafFiles {
      const leaf = issueDevLeafCertificate(pki.ca, { ...splitNames(other), ...(keyType === undefined ? {} : { keyType }) });
      const chainPath = join(dir, `unsafe-${label}-fullchain.pem`);
      const keyPath = join(dir, `unsafe-${label}.key`);
      writeFileSync(chainPath, leaf.certPem + pki.ca.certPem, { mode: 0o644 });
      writeFileSync(keyPath, leaf.keyPem, { mode: 0o600 });
      return { chainPath, keyPath, certPem: leaf.certPem, keyPem: leaf.keyPem };
    },
    cleanup(): void {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An unrelated CA (for "wrong trust anchor" tests). */
export function makeOtherCa(): DevCertificateAuthority {
  return createDevCertificateAuthority('ntsd UNSAFE other CA');
}
