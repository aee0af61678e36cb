/**
 * Several certificate pairs on one KE listener (docs/install.md "Several certificates on one listener"): which TLS context a
 * connection gets, by the server name its ClientHello asks for (RFC 6066 §3) and, among the pairs for that
 * name, by the client's signature algorithms.
 *
 * For a name, the context holds every pair whose certificate names it, at most one per key type (the
 * first configured wins): OpenSSL keeps one certificate per key type in a context and picks the one the
 * client's signature_algorithms allow, so ECDSA and RSA pairs for one name live side by side. A
 * connection without a server name, or with a name no pair lists, gets the default context: the first
 * pair, with the later pairs of other key types that also name the first pair's primary name.
 *
 * Why the context is chosen before the handshake (nts-ke/client-hello.ts) rather than in an SNICallback:
 * Node copies only one certificate (the context's last one) from an SNICallback's context into the
 * connection and leaves the other key types' slots from the first context in place, so an RSA-only client
 * could be handed another name's certificate. Verified on Node 20 with OpenSSL 3.0.
 */
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';

/** One chain + key, as the KE thread receives it. */
export interface KeCertificatePem {
  readonly chainPem: string;
  readonly keyPem: string;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/;

/** What a pair's leaf says about itself: the names SNI can select and its key type (one context slot each). */
export interface CertificateIdentity {
  /** DNS names (subjectAltName dNSName, lower case; `*.` wildcards kept), or the subject CN when there is none. */
  readonly dnsNames: readonly string[];
  /** IP addresses of the subjectAltName (never sent as SNI, RFC 6066 §3). */
  readonly ipAddresses: readonly string[];
  /** `ec`, `rsa`, `rsa-pss`, `ed25519`, ... (KeyObject.asymmetricKeyType). */
  readonly keyType: string;
  /** The first DNS name, else the first IP address, else the subject CN, else "". */
  readonly primaryName: string;
}

/** Reads a leaf's names and key type; throws when the chain's first certificate does not parse. */
export function certificateIdentity(chainPem: string): CertificateIdentity {
  const block = PEM_CERTIFICATE.exec(chainPem)?.[0];
  if (block === undefined) throw new Error('no PEM certificate in the chain');
  return leafIdentity(new X509Certificate(block));
}

/** The names and key type of a parsed leaf certificate. */
export function leafIdentity(leaf: X509Certificate): CertificateIdentity {
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const entry of splitSubjectAltName(leaf.subjectAltName ?? '')) {
    if (entry.startsWith('DNS:')) dnsNames.push(entry.slice(4).toLowerCase());
    else if (entry.startsWith('IP Address:')) ipAddresses.push(entry.slice('IP Address:'.length));
  }
  const commonName = /(?:^|\n)CN=([^\n]*)/.exec(leaf.subject)?.[1] ?? '';
  // RFC 6125 §6.4.4: the CN counts only when there is no DNS subjectAltName.
  if (dnsNames.length === 0 && ipAddresses.length === 0 && /^[A-Za-z0-9*][A-Za-z0-9.-]*$/.test(commonName)) dnsNames.push(commonName.toLowerCase());
  return {
    dnsNames,
    ipAddresses,
    keyType: leaf.publicKey.asymmetricKeyType ?? 'unknown',
    primaryName: dnsNames[0] ?? ipAddresses[0] ?? commonName,
  };
}

/** Node's subjectAltName text ("DNS:a, DNS:b, IP Address:1.2.3.4") split into entries (quoted entries kept whole). */
function splitSubjectAltName(text: string): string[] {
  return text === '' ? [] : (text.match(/(?:[^,"]|"(?:[^"\\]|\\.)*")+/g) ?? []).map((s) => s.trim().replaceAll('"', ''));
}

/** RFC 6125 §6.4.3: exact, or `*.rest` for one more left-most label. */
export function certificateNameMatches(pattern: string, serverName: string): boolean {
  if (pattern === serverName) return true;
  if (!pattern.startsWith('*.')) return false;
  const dot = serverName.indexOf('.');
  return dot > 0 && serverName.slice(dot + 1) === pattern.slice(2);
}

/** Chooses the TLS context of each new connection of one listener. */
export class CertificateSelector {
  readonly #pairs: readonly KeCertificatePem[];
  readonly #identities: readonly CertificateIdentity[];
  readonly #contextOptions: (pairs: readonly KeCertificatePem[]) => tls.SecureContextOptions;
  /** Contexts by the set of pair indices they hold ("0,2"). */
  readonly #contexts = new Map<string, tls.SecureContext>();
  readonly #defaultKey: string;
  /** True when some server name gets another context than the default: connections must be peeked at. */
  readonly needsServerName: boolean;

  /**
   * Builds the default context and one per name any pair lists, so that a broken set fails here (on
   * reload) and not in a handshake. Throws what tls.createSecureContext throws.
   */
  constructor(pairs: readonly KeCertificatePem[], contextOptions: (pairs: readonly KeCertificatePem[]) => tls.SecureContextOptions) {
    if (pairs.length === 0) throw new Error('a KE listener needs at least one certificate pair');
    this.#pairs = pairs;
    this.#identities = pairs.map((p) => certificateIdentity(p.chainPem));
    this.#contextOptions = contextOptions;
    this.#defaultKey = this.#defaultSet().join(',');
    this.#context(this.#defaultKey);
    let distinct = false;
    for (const identity of this.#identities) {
      for (const name of identity.dnsNames) {
        // A wildcard stands for a name one label longer.
        const set = this.#setFor(name.startsWith('*.') ? `x${name.slice(1)}` : name);
        const key = set.join(',');
        this.#context(key);
        if (key !== this.#defaultKey) distinct = true;
      }
    }
    this.needsServerName = distinct;
  }

  /** The context for connections without a (known) server name. */
  get defaultContext(): tls.SecureContext {
    return this.#context(this.#defaultKey);
  }

  /** The context for a ClientHello's server name (lower case; undefined = none sent). */
  contextFor(serverName: string | undefined): tls.SecureContext {
    if (serverName === undefined) return this.defaultContext;
    const set = this.#setFor(serverName);
    return this.#context(set.length === 0 ? this.#defaultKey : set.join(','));
  }

  /** Pairs naming `serverName`, the first of each key type, in configured order. */
  #setFor(serverName: string): number[] {
    const set: number[] = [];
    const types = new Set<string>();
    this.#identities.forEach((identity, i) => {
      if (types.has(identity.keyType)) return;
      if (!identity.dnsNames.some((pattern) => certificateNameMatches(pattern, serverName))) return;
      types.add(identity.keyType);
      set.push(i);
    });
    return set;
  }

  /** Pair 0, and the first later pair of each other key type that names pair 0's primary name. */
  #defaultSet(): number[] {
    const first = this.#identities[0];
    if (first === undefined) return [];
    const set = [0];
    const types = new Set([first.keyType]);
    const name = first.primaryName;
    this.#identities.forEach((identity, i) => {
      if (i === 0 || types.has(identity.keyType)) return;
      const names = identity.dnsNames.some((pattern) => certificateNameMatches(pattern, name)) || identity.ipAddresses.includes(name);
      if (!names) return;
      types.add(identity.keyType);
      set.push(i);
    });
    return set;
  }

  #context(key: string): tls.SecureContext {
    const cached = this.#contexts.get(key);
    if (cached !== undefined) return cached;
    const pairs = key.split(',').map((i) => this.#pairs[Number(i)]).filter((p): p is KeCertificatePem => p !== undefined);
    const context = tls.createSecureContext(this.#contextOptions(pairs));
    this.#contexts.set(key, context);
    return context;
  }
}
