/**
 * TLS certificate hot reload (OPERATIONS.md "Certificate hot reload"), main thread.
 *
 * Loads the PEM chain and key, validates them as a pair before any swap (every certificate parses,
 * the key matches the leaf, the leaf has not expired, a TLS 1.3 context builds), and hands the pair
 * to a callback (the daemon forwards it to the KE thread). The files are re-read every
 * `intervalS` seconds (0 = only on reload(), i.e. SIGHUP) and compared by content hash, so a
 * certbot deploy hook, a `cp -p` or an editor save are all noticed. A bad new pair is refused and
 * the old one keeps serving. A listener with several pairs has one watcher per pair, so each pair is
 * validated and reloaded on its own.
 */
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as tls from 'node:tls';
import type { Logger } from 'pino';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { leafIdentity, type CertificateIdentity } from './certificates.js';

/** A validated chain + key pair. */
export interface CertificatePair {
  /** PEM chain as read (leaf first). */
  readonly chainPem: string;
  /** PEM private key as read. */
  readonly keyPem: string;
  /** Leaf notAfter, Unix seconds (ntsd_tls_certificate_expiry_timestamp_seconds). */
  readonly notAfterS: number;
  /** Leaf notBefore, Unix seconds. */
  readonly notBeforeS: number;
  /** Leaf subject, as Node formats it (e.g. "CN=nts.example.org"). */
  readonly subject: string;
  /** Leaf subjectAltName, as Node formats it, or "" when absent. */
  readonly subjectAltName: string;
  /** SHA-256 fingerprint of the leaf (colon-separated hex). */
  readonly fingerprint256: string;
  /** The leaf's first DNS name, else its first IP address, else its subject CN (a metric label by default). */
  readonly primaryName: string;
  /** Key type of the leaf (`ec`, `rsa`, ...): one certificate per type and name is served. */
  readonly keyType: string;
  /** Certificates in the chain, leaf included. */
  readonly chainLength: number;
  /** Non-fatal findings (chain order, not yet valid), for the log. */
  readonly warnings: readonly string[];
}

/** Validation result: a value, never an exception. */
export type CertificatePairResult =
  | { readonly ok: true; readonly pair: CertificatePair }
  | { readonly ok: false; readonly error: string };

/** Outcome of one reload attempt (ntsd_tls_reloads_total{result} counts success and failure). */
export type CertificateReloadResult = 'success' | 'failure' | 'unchanged';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Validates a chain and key as a pair (at `nowMs`), without touching any file. */
export function validateCertificatePair(chainPem: string, keyPem: string, nowMs: number = Date.now()): CertificatePairResult {
  const blocks = chainPem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) return { ok: false, error: 'no PEM certificate in the chain file' };
  const certs: X509Certificate[] = [];
  for (const [i, block] of blocks.entries()) {
    try {
      certs.push(new X509Certificate(block));
    } catch (error: unknown) {
      return { ok: false, error: `certificate ${i} does not parse: ${errorText(error)}` };
    }
  }
  const leaf = certs[0];
  if (leaf === undefined) return { ok: false, error: 'no leaf certificate' };
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(keyPem));
  } catch (error: unknown) {
    return { ok: false, error: `private key does not parse: ${errorText(error)}` };
  }
  if (!matches) return { ok: false, error: 'private key does not match the leaf certificate' };
  const notAfterMs = Date.parse(leaf.validTo);
  const notBeforeMs = Date.parse(leaf.validFrom);
  if (!(notAfterMs > nowMs)) return { ok: false, error: `leaf certificate expired at ${leaf.validTo}` };
  const warnings: string[] = [];
  if (notBeforeMs > nowMs) warnings.push(`leaf certificate is not valid before ${leaf.validFrom}`);
  for (let i = 0; i + 1 < certs.length; i++) {
    const child = certs[i];
    const parent = certs[i + 1];
    if (child !== undefined && parent !== undefined && !child.checkIssued(parent)) {
      warnings.push(`chain certificate ${i + 1} did not issue certificate ${i} (chain order)`);
    }
  }
  try {
    // RFC 8915 §3: the KE thread builds the same TLS 1.3-only context; prove it builds here first.
    tls.createSecureContext({ cert: chainPem, key: keyPem, minVersion: 'TLSv1.3' });
  } catch (error: unknown) {
    return { ok: false, error: `TLS context does not build: ${errorText(error)}` };
  }
  let identity: CertificateIdentity;
  try {
    identity = leafIdentity(leaf);
  } catch (error: unknown) {
    return { ok: false, error: `leaf certificate names do not parse: ${errorText(error)}` };
  }
  return {
    ok: true,
    pair: {
      chainPem,
      keyPem,
      primaryName: identity.primaryName,
      keyType: identity.keyType,
      notAfterS: Math.floor(notAfterMs / 1000),
      notBeforeS: Math.floor(notBeforeMs / 1000),
      subject: leaf.subject,
      subjectAltName: leaf.subjectAltName ?? '',
      fingerprint256: leaf.fingerprint256,
      chainLength: certs.length,
      warnings,
    },
  };
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Reads and validates the two files; failures (unreadable file, bad pair) come back as values. */
export async function loadCertificatePair(chainPath: string, keyPath: string, nowMs: number = Date.now()): Promise<CertificatePairResult> {
  let chainPem: string;
  let keyPem: string;
  try {
    [chainPem, keyPem] = await Promise.all([readFile(chainPath, 'utf8'), readFile(keyPath, 'utf8')]);
  } catch (error: unknown) {
    return { ok: false, error: `cannot read certificate files: ${errorText(error)}` };
  }
  return validateCertificatePair(chainPem, keyPem, nowMs);
}

function contentHash(chainPem: string, keyPem: string): string {
  return createHash('sha256').update(chainPem).update('\0').update(keyPem).digest('hex');
}

/** Options for CertWatcher. */
export interface CertWatcherOptions {
  /** PEM chain file (leaf first), e.g. certbot's fullchain.pem. */
  readonly chainPath: string;
  /** PEM key file, e.g. certbot's privkey.pem. */
  readonly keyPath: string;
  /** Seconds between content checks; 0 = reload() (SIGHUP) only. Fractions allowed (tests). */
  readonly intervalS: number;
  /**
   * Installs a validated new pair (the daemon: `keServer.reloadCertificate`). A rejection counts as a
   * failure and the previous pair stays current.
   */
  readonly onReload: (pair: CertificatePair) => void | Promise<void>;
  /** Called after every attempt that was not `unchanged`, with the error text on failure (metrics). */
  readonly onResult?: (result: CertificateReloadResult, pair: CertificatePair | undefined, error: string | undefined) => void;
  /** Logger for reload successes (info) and failures (warn). */
  readonly logger?: Logger;
  /** Clock, for tests (default Date.now). */
  readonly nowMs?: () => number;
}

/** Watches a certificate chain and key and installs valid changes through `onReload`. */
export class CertWatcher {
  readonly #options: CertWatcherOptions;
  #current: CertificatePair | undefined;
  /** Hash of the files at the last attempt (successful or not), so a bad pair is reported once. */
  #lastAttemptHash = '';
  #timer: NodeJS.Timeout | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  /** Creates the watcher; call load() to read the initial pair. */
  constructor(options: CertWatcherOptions) {
    this.#options = options;
  }

  /** The pair currently installed (undefined before load()). */
  get current(): CertificatePair | undefined {
    return this.#current;
  }

  /**
   * Loads and validates the initial pair (not passed to onReload: the caller starts its listener
   * with it) and starts polling. Throws NtsdError TLS_MATERIAL_INVALID when the pair is unusable.
   */
  async load(): Promise<CertificatePair> {
    const { chainPath, keyPath } = this.#options;
    const result = await loadCertificatePair(chainPath, keyPath, this.#now());
    if (!result.ok) {
      throw new NtsdError(NtsdErrorCode.TLS_MATERIAL_INVALID, `TLS certificate ${chainPath} / key ${keyPath}: ${result.error}`);
    }
    this.#current = result.pair;
    this.#lastAttemptHash = contentHash(result.pair.chainPem, result.pair.keyPem);
    for (const warning of result.pair.warnings) this.#options.logger?.warn({ chainPath, warning }, 'TLS certificate warning');
    this.#startPolling();
    return result.pair;
  }

  /**
   * Re-reads the files now (SIGHUP). `force` (default true) retries a pair that failed before;
   * unchanged content that is already installed is `unchanged`.
   */
  reload(force = true): Promise<CertificateReloadResult> {
    const run = this.#queue.then(() => this.#attempt(force));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Stops polling. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #now(): number {
    return this.#options.nowMs?.() ?? Date.now();
  }

  #startPolling(): void {
    this.stop();
    const { intervalS } = this.#options;
    if (!(intervalS > 0)) return;
    this.#timer = setInterval(() => {
      void this.reload(false);
    }, intervalS * 1000);
    this.#timer.unref();
  }

  async #attempt(force: boolean): Promise<CertificateReloadResult> {
    const { chainPath, keyPath, logger } = this.#options;
    let chainPem: string;
    let keyPem: string;
    try {
      [chainPem, keyPem] = await Promise.all([readFile(chainPath, 'utf8'), readFile(keyPath, 'utf8')]);
    } catch (error: unknown) {
      // A file briefly missing during a non-atomic copy is reported once per distinct state.
      const marker = `unreadable:${errorText(error)}`;
      if (!force && marker === this.#lastAttemptHash) return 'unchanged';
      this.#lastAttemptHash = marker;
      return this.#fail(`cannot read certificate files: ${errorText(error)}`);
    }
    const hash = contentHash(chainPem, keyPem);
    const current = this.#current;
    const installed = current !== undefined && hash === contentHash(current.chainPem, current.keyPem);
    if (installed || (!force && hash === this.#lastAttemptHash)) return 'unchanged';
    this.#lastAttemptHash = hash;
    const result = validateCertificatePair(chainPem, keyPem, this.#now());
    if (!result.ok) return this.#fail(result.error);
    try {
      await this.#options.onReload(result.pair);
    } catch (error: unknown) {
      return this.#fail(`installing the new pair failed: ${errorText(error)}`);
    }
    this.#current = result.pair;
    logger?.info(
      { chainPath, subject: result.pair.subject, notAfter: new Date(result.pair.notAfterS * 1000).toISOString() },
      'TLS certificate reloaded',
    );
    for (const warning of result.pair.warnings) logger?.warn({ chainPath, warning }, 'TLS certificate warning');
    this.#options.onResult?.('success', result.pair, undefined);
    return 'success';
  }

  #fail(error: string): CertificateReloadResult {
    this.#options.logger?.warn(
      { chainPath: this.#options.chainPath, keyPath: this.#options.keyPath, error },
      'TLS certificate reload refused; keeping the current certificate',
    );
    this.#options.onResult?.('failure', undefined, error);
    return 'failure';
  }
}
