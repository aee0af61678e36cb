/**
 * Development PKI in pure JavaScript: a private CA and a server leaf (ECDSA P-256, ecdsa-with-SHA256).
 * The X.509 v3 structures (RFC 5280) are built and DER-encoded by @peculiar/asn1-x509 and signed with
 * node:crypto, synchronously. No openssl binary is needed.
 *
 * These certificates are for development and tests only: every file name starts with `unsafe-`.
 * The CA private key is never written to disk; a CA only exists in memory while it issues leaves.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  Extension,
  Extensions,
  GeneralName,
  KeyIdentifier,
  KeyUsage,
  KeyUsageFlags,
  Name,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  id_kp_serverAuth,
} from '@peculiar/asn1-x509';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { writeFileAtomicSync } from '../runtime/fs-atomic.js';

/** Object identifiers not exported by the library (RFC 5280 §4.1.2.4 attribute types; RFC 5758 §3.2). */
const Oid = {
  commonName: '2.5.4.3',
  organizationName: '2.5.4.10',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
} as const;

/** An ArrayBuffer holding exactly `bytes` (the library's binary fields are ArrayBuffers). */
function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return copy.buffer;
}

function der(value: unknown): Uint8Array {
  return new Uint8Array(AsnConvert.serialize(value));
}

/** Name ::= RDNSequence: O=organization, CN=commonName, UTF8String values. */
function devName(commonName: string, organization: string): Name {
  const rdn = (type: string, value: string): RelativeDistinguishedName =>
    new RelativeDistinguishedName([new AttributeTypeAndValue({ type, value: new AttributeValue({ utf8String: value }) })]);
  return new Name([rdn(Oid.organizationName, organization), rdn(Oid.commonName, commonName)]);
}

function extension(extnID: string, critical: boolean, value: unknown): Extension {
  return new Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

// ---------------------------------------------------------------------------------------------
// IP literals → octets for subjectAltName iPAddress (RFC 5280 §4.2.1.6: 4 or 16 octets)
// ---------------------------------------------------------------------------------------------

function ipv4Octets(text: string): Uint8Array {
  return Uint8Array.from(text.split('.').map((s) => Number.parseInt(s, 10)));
}

/** Parses an IP literal (IPv4 dotted quad or RFC 4291 §2.2 IPv6 text) into 4 or 16 octets. */
export function ipAddressOctets(text: string): Uint8Array {
  const family = isIP(text);
  if (family === 4) return ipv4Octets(text);
  if (family !== 6) throw new NtsdError(NtsdErrorCode.TLS_MATERIAL_INVALID, `not an IP address: ${text}`);
  let body = text;
  let tail: Uint8Array = new Uint8Array(0);
  const lastColon = body.lastIndexOf(':');
  if (body.slice(lastColon + 1).includes('.')) {
    tail = ipv4Octets(body.slice(lastColon + 1));
    body = `${body.slice(0, lastColon + 1)}0:0`;
  }
  const [head = '', rest] = body.split('::');
  const words = (s: string): number[] => (s === '' ? [] : s.split(':').map((w) => Number.parseInt(w, 16)));
  const left = words(head);
  const right = rest === undefined ? [] : words(rest);
  const all = rest === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = new Uint8Array(16);
  all.forEach((w, i) => {
    out[i * 2] = (w >>> 8) & 0xff;
    out[i * 2 + 1] = w & 0xff;
  });
  if (tail.length === 4) out.set(tail, 12);
  return out;
}

/** 4 or 16 octets as the text the library's iPAddress converter reads: dotted quad, or 8 full hex groups. */
function ipAddressText(octets: Uint8Array): string {
  if (octets.length === 4) return Array.from(octets).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((octets[i] ?? 0) << 8) | (octets[i + 1] ?? 0)).toString(16));
  return groups.join(':');
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/** A certificate authority held in memory (its key is never written by this module). */
export interface DevCertificateAuthority {
  /** The CA certificate, PEM. */
  readonly certPem: string;
  /** The CA private key (kept in memory only). */
  readonly privateKey: KeyObject;
  /** Subject key identifier, used as the leaves' authority key identifier. */
  readonly keyId: Uint8Array;
  /** The CA's DER-encoded Name (issuer of every leaf). */
  readonly name: Uint8Array;
}

/** A leaf certificate and its private key. */
export interface DevLeafCertificate {
  /** The leaf certificate alone, PEM. */
  readonly certPem: string;
  /** PKCS#8 private key, PEM. */
  readonly keyPem: string;
}

/** Options shared by CA and leaf creation. */
export interface DevCertValidity {
  /** Lifetime in days from `now` (default 825 for leaves, 3650 for the CA). */
  readonly validDays?: number;
  /** Reference time (default: the current time). notBefore is one hour earlier, for clock skew. */
  readonly now?: Date;
}

/** Options for a leaf certificate. */
export interface DevLeafOptions extends DevCertValidity {
  /** DNS names for subjectAltName (dNSName). */
  readonly dnsNames: readonly string[];
  /** IP literals (v4 or v6) for subjectAltName (iPAddress). */
  readonly ipAddresses: readonly string[];
  /** Subject common name (default: the first DNS name or IP address). */
  readonly commonName?: string;
  /** The leaf's key: ECDSA P-256 (default) or RSA 2048 (e.g. to serve an RSA certificate beside an ECDSA one). */
  readonly keyType?: 'ecdsa' | 'rsa';
}

const DEV_ORGANIZATION = 'ntsd UNSAFE development';
const SKEW_MS = 3_600_000;
const DAY_MS = 86_400_000;

function newP256Key(): { readonly privateKey: KeyObject; readonly publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
}

function newRsaKey(): { readonly privateKey: KeyObject; readonly publicKey: KeyObject } {
  return generateKeyPairSync('rsa', { modulusLength: 2048 });
}

/**
 * RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bit string contents (the uncompressed point of
 * an EC key). For an RSA key, SHA-1 of the whole SubjectPublicKeyInfo (§4.2.1.2 allows other methods).
 */
function keyIdentifier(publicKey: KeyObject): Uint8Array {
  if (publicKey.asymmetricKeyType === 'rsa') return new Uint8Array(createHash('sha1').update(publicKey.export({ type: 'spki', format: 'der' })).digest());
  const jwk = publicKey.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string' || typeof jwk.y !== 'string') throw new Error('EC public key without coordinates');
  const point = Buffer.concat([Uint8Array.of(4), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
  return new Uint8Array(createHash('sha1').update(point).digest());
}

function serialNumber(): Uint8Array {
  const s = new Uint8Array(randomBytes(16));
  s[0] = ((s[0] ?? 0) & 0x7f) | 0x40; // positive, non-zero, fixed length (RFC 5280 §4.1.2.2: ≤ 20 octets)
  return s;
}

function toPem(label: string, bytes: Uint8Array): string {
  const b64 = Buffer.from(bytes).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

interface TbsInput {
  readonly issuer: Name;
  readonly subject: Name;
  readonly publicKey: KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly extensions: readonly Extension[];
}

/** Builds and signs a certificate (RFC 5280 §4.1) with ecdsa-with-SHA256, parameters absent (RFC 5758 §3.2). */
function signCertificate(input: TbsInput, signerKey: KeyObject): Uint8Array {
  const algorithm = new AlgorithmIdentifier({ algorithm: Oid.ecdsaWithSha256 });
  const spkiDer = new Uint8Array(input.publicKey.export({ type: 'spki', format: 'der' }));
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: toArrayBuffer(serialNumber()),
    signature: algorithm,
    issuer: input.issuer,
    validity: new Validity({ notBefore: input.notBefore, notAfter: input.notAfter }),
    subject: input.subject,
    subjectPublicKeyInfo: AsnConvert.parse(spkiDer, SubjectPublicKeyInfo),
    extensions: new Extensions([...input.extensions]),
  });
  const tbsDer = der(tbs);
  const signature = sign('sha256', tbsDer, { key: signerKey, dsaEncoding: 'der' });
  const certificate = new Certificate({
    tbsCertificate: tbs,
    tbsCertificateRaw: toArrayBuffer(tbsDer),
    signatureAlgorithm: algorithm,
    signatureValue: toArrayBuffer(new Uint8Array(signature)),
  });
  return der(certificate);
}

function validity(options: DevCertValidity, defaultDays: number): { notBefore: Date; notAfter: Date } {
  const now = (options.now ?? new Date()).getTime();
  const days = options.validDays ?? defaultDays;
  return { notBefore: new Date(now - SKEW_MS), notAfter: new Date(now + days * DAY_MS) };
}

/** Creates an in-memory CA (basicConstraints cA, pathLen 0; keyCertSign + cRLSign). */
export function createDevCertificateAuthority(commonName: string, options: DevCertValidity = {}): DevCertificateAuthority {
  const { privateKey, publicKey } = newP256Key();
  const keyId = keyIdentifier(publicKey);
  const name = devName(commonName, DEV_ORGANIZATION);
  const certDer = signCertificate(
    {
      issuer: name,
      subject: name,
      publicKey,
      ...validity(options, 3650),
      extensions: [
        extension(id_ce_basicConstraints, true, new BasicConstraints({ cA: true, pathLenConstraint: 0 })),
        extension(id_ce_keyUsage, true, new KeyUsage(KeyUsageFlags.digitalSignature | KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign)),
        extension(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(toArrayBuffer(keyId))),
      ],
    },
    privateKey,
  );
  return { certPem: toPem('CERTIFICATE', certDer), privateKey, keyId, name: der(name) };
}

/**
 * Issues a TLS server leaf (serverAuth, digitalSignature) with DNS and IP subjectAltNames, signed by `ca`
 * (ECDSA; the leaf's own key is ECDSA P-256 or, with `keyType: 'rsa'`, RSA 2048).
 */
export function issueDevLeafCertificate(ca: DevCertificateAuthority, options: DevLeafOptions): DevLeafCertificate {
  const names = [
    ...options.dnsNames.map((dNSName) => new GeneralName({ dNSName })),
    ...options.ipAddresses.map((ip) => new GeneralName({ iPAddress: ipAddressText(ipAddressOctets(ip)) })),
  ];
  if (names.length === 0) throw new NtsdError(NtsdErrorCode.TLS_MATERIAL_INVALID, 'a leaf certificate needs at least one name');
  const commonName = options.commonName ?? options.dnsNames[0] ?? options.ipAddresses[0] ?? 'ntsd';
  const { privateKey, publicKey } = options.keyType === 'rsa' ? newRsaKey() : newP256Key();
  const certDer = signCertificate(
    {
      issuer: AsnConvert.parse(ca.name, Name),
      subject: devName(commonName, DEV_ORGANIZATION),
      publicKey,
      ...validity(options, 825),
      extensions: [
        extension(id_ce_basicConstraints, true, new BasicConstraints({ cA: false })),
        extension(id_ce_keyUsage, true, new KeyUsage(KeyUsageFlags.digitalSignature)),
        extension(id_ce_extKeyUsage, false, new ExtendedKeyUsage([id_kp_serverAuth])),
        extension(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(toArrayBuffer(keyIdentifier(publicKey)))),
        extension(id_ce_authorityKeyIdentifier, false, new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(toArrayBuffer(ca.keyId)) })),
        extension(id_ce_subjectAltName, false, new SubjectAlternativeName(names)),
      ],
    },
    ca.privateKey,
  );
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' });
  return { certPem: toPem('CERTIFICATE', certDer), keyPem: typeof keyPem === 'string' ? keyPem : keyPem.toString('utf8') };
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/** Options for writing a development PKI to a directory. */
export interface DevPkiOptions {
  /** Output directory (created with mode 0700 when missing). */
  readonly dir: string;
  /** CA common name (default "ntsd UNSAFE development CA"). */
  readonly caName?: string;
  /** DNS names of the server. */
  readonly dnsNames: readonly string[];
  /** IP literals of the server. */
  readonly ipAddresses: readonly string[];
  /** Leaf lifetime in days (default 825). */
  readonly validDays?: number;
  /** File name prefix; must start with "unsafe-" (default "unsafe-dev"). */
  readonly prefix?: string;
  /** Reference time (default now). */
  readonly now?: Date;
}

/** Paths and contents written by generateDevPki. */
export interface DevPki {
  /** `<prefix>-ca.pem`: the CA certificate (the trust anchor for clients). */
  readonly caCertPath: string;
  /** `<prefix>-server.pem`: the leaf certificate alone. */
  readonly certPath: string;
  /** `<prefix>-fullchain.pem`: leaf then CA, the file a server may present. */
  readonly chainPath: string;
  /** `<prefix>-server.key`: the leaf's PKCS#8 private key, mode 0600. */
  readonly keyPath: string;
  /** The CA (in memory, to issue more leaves in tests). */
  readonly ca: DevCertificateAuthority;
  /** The leaf certificate and key. */
  readonly leaf: DevLeafCertificate;
}

/** Creates a CA and a leaf and writes them under `options.dir` with `unsafe-` names. */
export function generateDevPki(options: DevPkiOptions): DevPki {
  const prefix = options.prefix ?? 'unsafe-dev';
  if (!prefix.startsWith('unsafe-')) {
    throw new NtsdError(NtsdErrorCode.TLS_MATERIAL_INVALID, `development certificate prefix must start with "unsafe-": ${prefix}`);
  }
  const now = options.now ?? new Date();
  const ca = createDevCertificateAuthority(options.caName ?? 'ntsd UNSAFE development CA', { now });
  const leaf = issueDevLeafCertificate(ca, {
    dnsNames: options.dnsNames,
    ipAddresses: options.ipAddresses,
    now,
    ...(options.validDays === undefined ? {} : { validDays: options.validDays }),
  });
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  const paths = {
    caCertPath: join(options.dir, `${prefix}-ca.pem`),
    certPath: join(options.dir, `${prefix}-server.pem`),
    chainPath: join(options.dir, `${prefix}-fullchain.pem`),
    keyPath: join(options.dir, `${prefix}-server.key`),
  };
  writeFileAtomicSync(paths.keyPath, leaf.keyPem, 0o600);
  writeFileAtomicSync(paths.caCertPath, ca.certPem, 0o644);
  writeFileAtomicSync(paths.chainPath, leaf.certPem + ca.certPem, 0o644);
  writeFileAtomicSync(paths.certPath, leaf.certPem, 0o644);
  return { ...paths, ca, leaf };
}

/** Result of ensureDevCertificates. */
export interface DevCertificatePaths {
  /** `unsafe-dev-ca.pem`: trust anchor for local clients. */
  readonly caCertPath: string;
  /** `unsafe-dev-server.pem`: the leaf certificate (the chain the server presents). */
  readonly certPath: string;
  /** `unsafe-dev-server.key`: private key, 0600. */
  readonly keyPath: string;
  /** True when new files were written by this call. */
  readonly created: boolean;
}

function leafStillUsable(certPath: string, nowMs: number): boolean {
  try {
    const cert = new X509Certificate(readFileSync(certPath));
    return Date.parse(cert.validTo) > nowMs + DAY_MS && Date.parse(cert.validFrom) <= nowMs;
  } catch {
    return false;
  }
}

/**
 * Makes sure `certsDir` holds `unsafe-dev-ca.pem`, `unsafe-dev-server.pem` (leaf) and
 * `unsafe-dev-server.key` (0600) for localhost, 127.0.0.1 and ::1. Files are (re)created only when
 * one is missing or the leaf is expired or expires within a day. Used by `npm start` in development.
 */
export function ensureDevCertificates(certsDir: string, now: Date = new Date()): DevCertificatePaths {
  const caCertPath = join(certsDir, 'unsafe-dev-ca.pem');
  const certPath = join(certsDir, 'unsafe-dev-server.pem');
  const keyPath = join(certsDir, 'unsafe-dev-server.key');
  const present = existsSync(caCertPath) && existsSync(certPath) && existsSync(keyPath);
  if (present && leafStillUsable(certPath, now.getTime())) return { caCertPath, certPath, keyPath, created: false };
  generateDevPki({ dir: certsDir, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'], prefix: 'unsafe-dev', now });
  return { caCertPath, certPath, keyPath, created: true };
}
