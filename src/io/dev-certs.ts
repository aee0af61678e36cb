/**
 * Development PKI in pure Node: a private CA and a server leaf (ECDSA P-256, ecdsa-with-SHA256),
 * built with a minimal DER encoder for X.509 v3 (RFC 5280). No openssl binary is needed.
 *
 * These certificates are for development and tests only: every file name starts with `unsafe-`.
 * The CA private key is never written to disk; a CA only exists in memory while it issues leaves.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { writeFileAtomicSync } from '../fs-atomic.js';

// ---------------------------------------------------------------------------------------------
// Minimal DER encoder (ITU-T X.690 §8, §10)
// ---------------------------------------------------------------------------------------------

/** DER tags used here (X.690 §8; context tags per RFC 5280 §4.1, §4.2.1.1, §4.2.1.6). */
const Tag = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  oid: 0x06,
  utf8String: 0x0c,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
  /** [0] EXPLICIT, constructed (TBSCertificate.version). */
  context0Constructed: 0xa0,
  /** [3] EXPLICIT, constructed (TBSCertificate.extensions). */
  context3Constructed: 0xa3,
  /** [0] IMPLICIT primitive (AuthorityKeyIdentifier.keyIdentifier). */
  context0Primitive: 0x80,
  /** [2] IMPLICIT IA5String (GeneralName.dNSName). */
  dnsName: 0x82,
  /** [7] IMPLICIT OCTET STRING (GeneralName.iPAddress). */
  ipAddress: 0x87,
} as const;

function derLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function tlv(tag: number, ...content: readonly Uint8Array[]): Uint8Array {
  const body = concat(content);
  return concat([Uint8Array.of(tag), derLength(body.length), body]);
}

function derSequence(...items: readonly Uint8Array[]): Uint8Array {
  return tlv(Tag.sequence, ...items);
}

/** INTEGER from unsigned big-endian magnitude bytes (minimal, positive). */
function derUnsignedInteger(magnitude: Uint8Array): Uint8Array {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  const needsZero = ((trimmed[0] ?? 0) & 0x80) !== 0;
  return tlv(Tag.integer, needsZero ? Uint8Array.of(0) : new Uint8Array(0), trimmed.length === 0 ? Uint8Array.of(0) : trimmed);
}

function derSmallInteger(n: number): Uint8Array {
  return derUnsignedInteger(Uint8Array.of(n));
}

function derBoolean(value: boolean): Uint8Array {
  return tlv(Tag.boolean, Uint8Array.of(value ? 0xff : 0x00));
}

function derOid(dotted: string): Uint8Array {
  const arcs = dotted.split('.').map((s) => Number.parseInt(s, 10));
  const [first = 0, second = 0, ...rest] = arcs;
  const out: number[] = [];
  const push = (arc: number): void => {
    const septets: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) septets.unshift((v & 0x7f) | 0x80);
    out.push(...septets);
  };
  push(first * 40 + second);
  for (const arc of rest) push(arc);
  return tlv(Tag.oid, Uint8Array.from(out));
}

function derOctetString(bytes: Uint8Array): Uint8Array {
  return tlv(Tag.octetString, bytes);
}

function derBitString(bytes: Uint8Array, unusedBits = 0): Uint8Array {
  return tlv(Tag.bitString, Uint8Array.of(unusedBits), bytes);
}

function derUtf8(s: string): Uint8Array {
  return tlv(Tag.utf8String, new TextEncoder().encode(s));
}

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; always Zulu, with seconds. */
function derTime(date: Date): Uint8Array {
  const year = date.getUTCFullYear();
  const two = (n: number): string => n.toString().padStart(2, '0');
  const rest = `${two(date.getUTCMonth() + 1)}${two(date.getUTCDate())}${two(date.getUTCHours())}${two(date.getUTCMinutes())}${two(date.getUTCSeconds())}Z`;
  if (year < 2050) return tlv(Tag.utcTime, new TextEncoder().encode(`${two(year % 100)}${rest}`));
  return tlv(Tag.generalizedTime, new TextEncoder().encode(`${year.toString().padStart(4, '0')}${rest}`));
}

/** Object identifiers (RFC 5280 §4.1.2.4, §4.2.1.x; RFC 5758 §3.2; RFC 5480 §2.1.1). */
const Oid = {
  commonName: '2.5.4.3',
  organizationName: '2.5.4.10',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

function derName(commonName: string, organization: string): Uint8Array {
  const rdn = (oid: string, value: string): Uint8Array => tlv(Tag.set, derSequence(derOid(oid), derUtf8(value)));
  return derSequence(rdn(Oid.organizationName, organization), rdn(Oid.commonName, commonName));
}

function derExtension(oid: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical
    ? derSequence(derOid(oid), derBoolean(true), derOctetString(value))
    : derSequence(derOid(oid), derOctetString(value));
}

/** keyUsage bits (RFC 5280 §4.2.1.3), numbered from the most significant bit of the first octet. */
const KeyUsageBit = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;

/** DER BIT STRING for a set of named bits: trailing zero bits removed (X.690 §11.2.2). */
function derNamedBits(bits: readonly number[]): Uint8Array {
  const highest = Math.max(...bits);
  const bytes = new Uint8Array((highest >> 3) + 1);
  for (const b of bits) bytes[b >> 3] = (bytes[b >> 3] ?? 0) | (0x80 >> (b & 7));
  return derBitString(bytes, 7 - (highest & 7));
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
}

const DEV_ORGANIZATION = 'ntsd UNSAFE development';
const SKEW_MS = 3_600_000;
const DAY_MS = 86_400_000;

function newP256Key(): { readonly privateKey: KeyObject; readonly publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bit string contents (uncompressed point). */
function keyIdentifier(publicKey: KeyObject): Uint8Array {
  const jwk = publicKey.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string' || typeof jwk.y !== 'string') throw new Error('EC public key without coordinates');
  const point = concat([Uint8Array.of(4), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
  return new Uint8Array(createHash('sha1').update(point).digest());
}

function serialNumber(): Uint8Array {
  const s = new Uint8Array(randomBytes(16));
  s[0] = ((s[0] ?? 0) & 0x7f) | 0x40; // positive, non-zero, fixed length (RFC 5280 §4.1.2.2: ≤ 20 octets)
  return s;
}

function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

interface TbsInput {
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
  readonly publicKey: KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly extensions: readonly Uint8Array[];
}

/** Builds and signs a certificate (RFC 5280 §4.1) with ecdsa-with-SHA256 (RFC 5758 §3.2). */
function signCertificate(input: TbsInput, signerKey: KeyObject): Uint8Array {
  const algorithm = derSequence(derOid(Oid.ecdsaWithSha256)); // parameters absent (RFC 5758 §3.2)
  const spki = new Uint8Array(input.publicKey.export({ type: 'spki', format: 'der' }));
  const tbs = derSequence(
    tlv(Tag.context0Constructed, derSmallInteger(2)), // v3
    derUnsignedInteger(serialNumber()),
    algorithm,
    input.issuer,
    derSequence(derTime(input.notBefore), derTime(input.notAfter)),
    input.subject,
    spki,
    tlv(Tag.context3Constructed, derSequence(...input.extensions)),
  );
  const signature = sign('sha256', tbs, { key: signerKey, dsaEncoding: 'der' });
  return derSequence(tbs, algorithm, derBitString(new Uint8Array(signature)));
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
  const name = derName(commonName, DEV_ORGANIZATION);
  const der = signCertificate(
    {
      issuer: name,
      subject: name,
      publicKey,
      ...validity(options, 3650),
      extensions: [
        derExtension(Oid.basicConstraints, true, derSequence(derBoolean(true), derSmallInteger(0))),
        derExtension(
          Oid.keyUsage,
          true,
          derNamedBits([KeyUsageBit.digitalSignature, KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
        ),
        derExtension(Oid.subjectKeyIdentifier, false, derOctetString(keyId)),
      ],
    },
    privateKey,
  );
  return { certPem: toPem('CERTIFICATE', der), privateKey, keyId, name };
}

/** Issues a TLS server leaf (serverAuth, digitalSignature) with DNS and IP subjectAltNames, signed by `ca`. */
export function issueDevLeafCertificate(ca: DevCertificateAuthority, options: DevLeafOptions): DevLeafCertificate {
  const names = [
    ...options.dnsNames.map((n) => tlv(Tag.dnsName, new TextEncoder().encode(n))),
    ...options.ipAddresses.map((ip) => tlv(Tag.ipAddress, ipAddressOctets(ip))),
  ];
  if (names.length === 0) throw new NtsdError(NtsdErrorCode.TLS_MATERIAL_INVALID, 'a leaf certificate needs at least one name');
  const commonName = options.commonName ?? options.dnsNames[0] ?? options.ipAddresses[0] ?? 'ntsd';
  const { privateKey, publicKey } = newP256Key();
  const der = signCertificate(
    {
      issuer: ca.name,
      subject: derName(commonName, DEV_ORGANIZATION),
      publicKey,
      ...validity(options, 825),
      extensions: [
        derExtension(Oid.basicConstraints, true, derSequence()),
        derExtension(Oid.keyUsage, true, derNamedBits([KeyUsageBit.digitalSignature])),
        derExtension(Oid.extKeyUsage, false, derSequence(derOid(Oid.serverAuth))),
        derExtension(Oid.subjectKeyIdentifier, false, derOctetString(keyIdentifier(publicKey))),
        derExtension(Oid.authorityKeyIdentifier, false, derSequence(tlv(Tag.context0Primitive, ca.keyId))),
        derExtension(Oid.subjectAltName, false, derSequence(...names)),
      ],
    },
    ca.privateKey,
  );
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' });
  return { certPem: toPem('CERTIFICATE', der), keyPem: typeof keyPem === 'string' ? keyPem : keyPem.toString('utf8') };
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
