/**
 * NTS-KE client (RFC 8915 §4): one TLS 1.3 session with ALPN "ntske/1", one request, one response,
 * then the C2S/S2C keys from the TLS exporter (§4.3, §5.1).
 *
 * Every way the exchange can fail comes back as a typed value (`{ok:false, failure}`), never as an
 * exception, so a caller (the `ntsd check` command, the load generator, tests) can report or count it.
 */
import { connect, type PeerCertificate, type TLSSocket } from 'node:tls';
import { isIP } from 'node:net';
import { getAead, SUPPORTED_AEAD_IDS } from '../core/crypto/aead.js';
import { NTS_EXPORTER_LABEL, NTSKE_ALPN, NTSKE_PORT, NTP_PORT } from '../core/nts/ids.js';
import { decodeKeMessage, encodeKeMessage, scanKeMessage } from '../core/nts/ke-record.js';
import { ntpv4ExporterContexts } from '../core/nts/exporter.js';
import { buildKeRequestRecords, checkKeResponse } from './ke-response.js';

/** A client SHOULD accept responses of at least 65536 octets (RFC 8915 §4); we accept twice that. */
export const DEFAULT_MAX_KE_RESPONSE_BYTES = 131072;

/** Options of one NTS-KE exchange. */
export interface KeyExchangeOptions {
  /** KE server host name or IP literal. */
  readonly host: string;
  /** KE server TCP port (default 4460, RFC 8915 §7.1). */
  readonly port?: number;
  /** Trusted CA certificates (PEM); default: Node's bundled roots. */
  readonly ca?: string | Uint8Array | readonly (string | Uint8Array)[];
  /** Name to send as SNI and to verify in the certificate (default: `host`; RFC 8915 §3, RFC 6125). */
  readonly servername?: string;
  /** AEAD ids to offer, in descending preference (RFC 8915 §4.1.5); default: every id this build implements. */
  readonly aeadIds?: readonly number[];
  /** Deadline for the whole session (connect, handshake, request, response). */
  readonly timeoutMs: number;
  /** Largest response accepted, in octets (default DEFAULT_MAX_KE_RESPONSE_BYTES). */
  readonly maxResponseBytes?: number;
  /** Local address to connect from (default: the system's choice). */
  readonly localAddress?: string;
}

/** What the server's certificate says, for display. */
export interface KeCertificateInfo {
  /** Subject as "CN=…, O=…" (empty when the certificate has none). */
  readonly subject: string;
  /** Issuer as "CN=…, O=…". */
  readonly issuer: string;
  /** The subjectAltName extension as Node prints it ("DNS:a, IP Address:1.2.3.4"), or "". */
  readonly subjectAltName: string;
  /** Start of validity. */
  readonly validFrom: Date;
  /** End of validity (expiry). */
  readonly validTo: Date;
  /** SHA-256 fingerprint as colon-separated hex. */
  readonly fingerprint256: string;
}

/** A successful exchange: the negotiated algorithm, both keys, the cookies and where to send NTP. */
export interface KeyExchangeResult {
  /** AEAD the server chose (RFC 8915 §4.1.5). */
  readonly aeadId: number;
  /** Client-to-server key (RFC 8915 §5.1), the AEAD's key length. */
  readonly c2s: Uint8Array;
  /** Server-to-client key (RFC 8915 §5.1). */
  readonly s2c: Uint8Array;
  /** Cookies (RFC 8915 §4.1.6), in the order received. */
  readonly cookies: readonly Uint8Array[];
  /** NTP server: the Server Negotiation record (§4.1.7) or else the KE server's address. */
  readonly ntpServer: string;
  /** NTP port: the Port Negotiation record (§4.1.8) or else 123. */
  readonly ntpPort: number;
  /** True when `ntpServer` came from a Server Negotiation record. */
  readonly ntpServerFromRecord: boolean;
  /** True when `ntpPort` came from a Port Negotiation record. */
  readonly ntpPortFromRecord: boolean;
  /** The server echoed record 1024 (chrony's compliant GCM-SIV exporter context; core/nts/exporter.ts). */
  readonly compliantGcmSivExporter: boolean;
  /** TLS version negotiated (always "TLSv1.3" or newer). */
  readonly tlsVersion: string;
  /** TLS cipher suite negotiated. */
  readonly tlsCipher: string;
  /** The server certificate. */
  readonly certificate: KeCertificateInfo;
  /** Wall time of the whole session, in milliseconds. */
  readonly durationMs: number;
}

/** Why an exchange failed. `message` is one human-readable sentence. */
export type KeyExchangeFailure =
  /** TCP connection failed (refused, unreachable, name not resolved). */
  | { readonly kind: 'connect'; readonly message: string; readonly code: string | undefined }
  /** TLS handshake or TLS-layer failure (certificate verification, version, alerts). */
  | { readonly kind: 'tls'; readonly message: string; readonly code: string | undefined }
  /** The server did not agree to ALPN "ntske/1" (RFC 8915 §3). */
  | { readonly kind: 'alpn'; readonly message: string; readonly negotiated: string | undefined }
  /** The deadline passed. */
  | { readonly kind: 'timeout'; readonly message: string; readonly phase: 'connect' | 'handshake' | 'response' }
  /** The server answered with an Error record (RFC 8915 §4.1.3). */
  | { readonly kind: 'ke_error'; readonly message: string; readonly code: number }
  /** The server sent Warning records (RFC 8915 §4.1.4). */
  | { readonly kind: 'ke_warning'; readonly message: string; readonly codes: readonly number[] }
  /** No common protocol or AEAD (RFC 8915 §4.1.2, §4.1.5). */
  | { readonly kind: 'negotiation'; readonly message: string }
  /** The response broke RFC 8915 §4 (framing, records, size, early close). */
  | { readonly kind: 'malformed'; readonly message: string };

/** The kind tag of a KeyExchangeFailure. */
export type KeyExchangeFailureKind = KeyExchangeFailure['kind'];

/** Outcome of performKeyExchange. */
export type KeyExchangeOutcome =
  | { readonly ok: true; readonly result: KeyExchangeResult }
  | { readonly ok: false; readonly failure: KeyExchangeFailure };

/** Default AEAD offer: every implemented id, AEAD_AES_SIV_CMAC_256 (15, mandatory for servers) first. */
export function defaultAeadOffer(): number[] {
  return SUPPORTED_AEAD_IDS.filter((id) => getAead(id) !== undefined);
}

function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code: unknown = err.code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function formatName(name: unknown): string {
  if (typeof name !== 'object' || name === null) return '';
  const parts: string[] = [];
  for (const [key, value] of Object.entries(name)) {
    const values: unknown[] = Array.isArray(value) ? value : [value];
    for (const v of values) if (typeof v === 'string') parts.push(`${key}=${v}`);
  }
  return parts.join(', ');
}

function certificateInfo(cert: PeerCertificate): KeCertificateInfo {
  return {
    subject: formatName(cert.subject),
    issuer: formatName(cert.issuer),
    subjectAltName: typeof cert.subjectaltname === 'string' ? cert.subjectaltname : '',
    validFrom: new Date(cert.valid_from),
    validTo: new Date(cert.valid_to),
    fingerprint256: cert.fingerprint256,
  };
}

function toCaList(ca: NonNullable<KeyExchangeOptions['ca']>): (string | Buffer)[] {
  const list = typeof ca === 'string' || ca instanceof Uint8Array ? [ca] : ca;
  return list.map((c) => (typeof c === 'string' ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength)));
}

/**
 * Performs one NTS-KE exchange (RFC 8915 §4): TLS 1.3 + ALPN ntske/1 with certificate verification,
 * sends Next Protocol [0], the AEAD offer and End of Message, checks the response and exports C2S/S2C
 * (two exporter calls, §5.1). Resolves to a typed outcome; never rejects.
 */
export function performKeyExchange(options: KeyExchangeOptions): Promise<KeyExchangeOutcome> {
  const started = performance.now();
  const port = options.port ?? NTSKE_PORT;
  const aeadIds = options.aeadIds ?? defaultAeadOffer();
  const maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_KE_RESPONSE_BYTES;
  for (const id of aeadIds) {
    if (getAead(id) === undefined) {
      return Promise.resolve({ ok: false, failure: { kind: 'negotiation', message: `AEAD ${id} is not implemented by this client` } });
    }
  }
  if (aeadIds.length === 0) {
    return Promise.resolve({ ok: false, failure: { kind: 'negotiation', message: 'no AEAD to offer' } });
  }
  const servername = options.servername ?? options.host;

  return new Promise<KeyExchangeOutcome>((resolve) => {
    let settled = false;
    let phase: 'connect' | 'handshake' | 'response' = 'connect';
    let socket: TLSSocket | undefined;
    let received = new Uint8Array(1024);
    let receivedLength = 0;
    let resumeOffset = 0;

    const finish = (outcome: KeyExchangeOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (socket !== undefined) {
        if (outcome.ok) socket.end();
        else socket.destroy();
      }
      resolve(outcome);
    };
    const fail = (failure: KeyExchangeFailure): void => finish({ ok: false, failure });

    const timer = setTimeout(() => {
      fail({ kind: 'timeout', phase, message: `NTS-KE with ${options.host}:${port} timed out after ${options.timeoutMs} ms (${phase})` });
    }, options.timeoutMs);

    const onSecure = (s: TLSSocket): void => {
      phase = 'response';
      const negotiated = s.alpnProtocol;
      if (negotiated !== NTSKE_ALPN) {
        const shown = typeof negotiated === 'string' ? negotiated : undefined;
        fail({
          kind: 'alpn',
          negotiated: shown,
          message: `server did not agree to ALPN "${NTSKE_ALPN}" (got ${shown === undefined ? 'none' : `"${shown}"`}); not an NTS-KE server (RFC 8915 §3)`,
        });
        return;
      }
      s.write(encodeKeMessage(buildKeRequestRecords(aeadIds)));
    };

    const onResponse = (s: TLSSocket, length: number): void => {
      const decoded = decodeKeMessage(received.subarray(0, length));
      if (!decoded.ok) {
        fail({ kind: 'malformed', message: `response does not decode: ${decoded.error} at octet ${decoded.offset} (RFC 8915 §4)` });
        return;
      }
      if (receivedLength > length) {
        fail({ kind: 'malformed', message: 'data after End of Message (RFC 8915 §4.1.1)' });
        return;
      }
      const checked = checkKeResponse(decoded.records, aeadIds);
      if (!checked.ok) {
        fail(checked.problem);
        return;
      }
      const { content } = checked;
      const aead = getAead(content.aeadId);
      if (aead === undefined) {
        fail({ kind: 'negotiation', message: `server chose AEAD ${content.aeadId}, which this client does not implement` });
        return;
      }
      // §4.3, §5.1: two exporter calls, one per direction, each of the AEAD's key length.
      const contexts = ntpv4ExporterContexts(content.aeadId, content.compliantGcmSivExporter);
      let c2s: Uint8Array;
      let s2c: Uint8Array;
      try {
        c2s = new Uint8Array(s.exportKeyingMaterial(aead.keyLength, NTS_EXPORTER_LABEL, Buffer.from(contexts.c2s)));
        s2c = new Uint8Array(s.exportKeyingMaterial(aead.keyLength, NTS_EXPORTER_LABEL, Buffer.from(contexts.s2c)));
      } catch (err) {
        fail({ kind: 'tls', code: errorCode(err), message: `TLS exporter failed: ${errorMessage(err)}` });
        return;
      }
      const peer = s.getPeerCertificate();
      const ntpServer = content.ntpServer ?? s.remoteAddress ?? options.host;
      finish({
        ok: true,
        result: {
          aeadId: content.aeadId,
          c2s,
          s2c,
          cookies: content.cookies,
          ntpServer,
          ntpPort: content.ntpPort ?? NTP_PORT,
          ntpServerFromRecord: content.ntpServer !== undefined,
          ntpPortFromRecord: content.ntpPort !== undefined,
          compliantGcmSivExporter: content.compliantGcmSivExporter,
          tlsVersion: s.getProtocol() ?? 'unknown',
          tlsCipher: s.getCipher().standardName,
          certificate: certificateInfo(peer),
          durationMs: performance.now() - started,
        },
      });
    };

    try {
      socket = connect({
        host: options.host,
        port,
        ...(isIP(servername) === 0 ? { servername } : {}),
        ALPNProtocols: [NTSKE_ALPN],
        minVersion: 'TLSv1.3',
        rejectUnauthorized: true,
        ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
        ...(options.ca === undefined ? {} : { ca: toCaList(options.ca) }),
      });
    } catch (err) {
      fail({ kind: 'connect', code: errorCode(err), message: `cannot connect to ${options.host}:${port}: ${errorMessage(err)}` });
      return;
    }
    const s = socket;
    s.once('connect', () => {
      phase = 'handshake';
    });
    s.once('secureConnect', () => onSecure(s));
    s.on('data', (chunk: Buffer) => {
      if (settled) return;
      if (receivedLength + chunk.length > maxResponseBytes) {
        fail({ kind: 'malformed', message: `response exceeds ${maxResponseBytes} octets` });
        return;
      }
      if (receivedLength + chunk.length > received.length) {
        const grown = new Uint8Array(Math.min(maxResponseBytes, Math.max(received.length * 2, receivedLength + chunk.length)));
        grown.set(received.subarray(0, receivedLength));
        received = grown;
      }
      received.set(chunk, receivedLength);
      receivedLength += chunk.length;
      const scan = scanKeMessage(received.subarray(0, receivedLength), { fromOffset: resumeOffset, maxLength: maxResponseBytes });
      if (scan.status === 'incomplete') resumeOffset = scan.resumeOffset;
      else if (scan.status === 'malformed') fail({ kind: 'malformed', message: `response cannot end within ${maxResponseBytes} octets` });
      else onResponse(s, scan.length);
    });
    s.on('error', (err: unknown) => {
      const code = errorCode(err);
      const message = errorMessage(err);
      if (phase === 'connect') {
        fail({ kind: 'connect', code, message: `cannot connect to ${options.host}:${port}: ${message}` });
      } else if (code === 'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL') {
        fail({ kind: 'alpn', negotiated: undefined, message: `server refused ALPN "${NTSKE_ALPN}" (no_application_protocol alert); not an NTS-KE server (RFC 8915 §3)` });
      } else {
        fail({ kind: 'tls', code, message: `TLS ${phase === 'handshake' ? 'handshake ' : ''}failed: ${message}${code === undefined ? '' : ` (${code})`}` });
      }
    });
    s.on('close', () => {
      if (phase === 'response') fail({ kind: 'malformed', message: 'server closed the connection before End of Message (RFC 8915 §4)' });
      else fail({ kind: phase === 'connect' ? 'connect' : 'tls', code: undefined, message: `connection to ${options.host}:${port} closed during ${phase}` });
    });
  });
}
