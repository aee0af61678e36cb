/**
 * `ntsd check HOST[:PORT] [--ca FILE] [--count N]`: probes any NTS server (RFC 8915) the way a client
 * would — NTS-KE, then N authenticated NTPv4 exchanges — and prints what it negotiated and measured.
 * Exits 0 when everything verified, otherwise with a code from CheckExitCode and one FAIL line that
 * says why.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { commandHelp, synopsis } from './help.js';
import { isIP } from 'node:net';
import { WallClock } from '../runtime/clock.js';
import { getAead } from '../core/crypto/aead.js';
import { NTSKE_PORT } from '../core/nts/ids.js';
import { defaultAeadOffer, performKeyExchange, type KeyExchangeFailureKind, type KeyExchangeResult } from './ke-client.js';
import { kissCodeString, MAX_COOKIE_PLACEHOLDERS, ntsExchange, type NtsExchangeFailure } from './ntp-client.js';

/** Exit codes of `ntsd check`: one per failure class, so scripts can tell them apart. */
export const CheckExitCode = {
  /** NTS-KE and every NTP exchange verified. */
  ok: 0,
  /** TCP connection to the KE server failed (refused, unreachable, unknown host). */
  connect: 2,
  /** TLS failed: certificate not trusted, wrong name, expired, TLS < 1.3 (RFC 8915 §3). */
  tls: 3,
  /** The server did not agree to ALPN "ntske/1" (RFC 8915 §3). */
  alpn: 4,
  /** The server answered with an NTS-KE Error or Warning record (RFC 8915 §4.1.3, §4.1.4). */
  keRefused: 5,
  /** The KE response broke RFC 8915 §4, or no common protocol / AEAD. */
  keProtocol: 6,
  /** A deadline passed (KE session or an NTP reply). */
  timeout: 7,
  /** The NTP server sent an NTS NAK (RFC 8915 §5.7). */
  ntsNak: 8,
  /** An NTP reply failed authentication with the S2C key (RFC 8915 §5.6). */
  ntpAuth: 9,
  /** An NTP reply was malformed, a Kiss-o'-Death, or the UDP socket failed. */
  ntpProtocol: 10,
  /** Bad command line (EX_USAGE). */
  usage: 64,
  /** The CA file cannot be read (EX_NOINPUT). */
  noInput: 66,
} as const;
/** A value of CheckExitCode. */
export type CheckExitCode = (typeof CheckExitCode)[keyof typeof CheckExitCode];

/** Options of one check. */
export interface CheckOptions {
  /** "HOST", "HOST:PORT", "[IPv6]:PORT" or a bare IPv6 literal. */
  readonly target: string;
  /** PEM file of trusted CA certificates (default: Node's bundled roots). */
  readonly caFile?: string;
  /** Number of NTP exchanges (default 3). */
  readonly count?: number;
  /** Name to verify in the certificate and send as SNI (default: the host). */
  readonly servername?: string;
  /** Deadline of the KE session and of each NTP reply (default 5000 ms). */
  readonly timeoutMs?: number;
  /** Pause between NTP exchanges (default 1000 ms; public servers rate-limit). */
  readonly intervalMs?: number;
  /** AEAD ids to offer, in preference order (default: every id this build implements). */
  readonly aeadIds?: readonly number[];
}

/** Usage line of `ntsd check`. */
export const CHECK_USAGE = synopsis('check');

const DEFAULT_COUNT = 3;
const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_INTERVAL_MS = 1000;
/** Cookie stash a client keeps (RFC 8915 §5.7: placeholders + 1 bring it back to 8). */
const COOKIE_STASH_TARGET = 8;
/** Certificates expiring sooner than this get a warning line. */
const EXPIRY_WARNING_MS = 7 * 86_400_000;

/** Splits "HOST[:PORT]" (IPv6 as "[addr]:port" or bare); undefined when malformed. */
export function parseTarget(target: string): { readonly host: string; readonly port: number } | undefined {
  let host = target;
  let portText: string | undefined;
  if (target.startsWith('[')) {
    const close = target.indexOf(']');
    if (close < 0) return undefined;
    host = target.slice(1, close);
    const rest = target.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return undefined;
      portText = rest.slice(1);
    }
  } else if (isIP(target) !== 6) {
    const colon = target.lastIndexOf(':');
    if (colon >= 0) {
      host = target.slice(0, colon);
      portText = target.slice(colon + 1);
    }
  }
  if (host === '') return undefined;
  let port: number = NTSKE_PORT;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText)) return undefined;
    port = Number(portText);
    if (port < 1 || port > 65535) return undefined;
  }
  return { host, port };
}

function parseIntOption(text: string, name: string, min: number, max: number): number | string {
  if (!/^\d+$/.test(text)) return `${name} must be an integer`;
  const value = Number(text);
  if (value < min || value > max) return `${name} must be between ${min} and ${max}`;
  return value;
}

/** Parses `check` arguments (everything after the word "check"); returns options (or `help`) or a usage error. */
export function parseCheckArgs(argv: readonly string[]): { readonly ok: true; readonly options: CheckOptions; readonly help?: true } | { readonly ok: false; readonly error: string } {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        ca: { type: 'string' },
        count: { type: 'string' },
        servername: { type: 'string' },
        'timeout-ms': { type: 'string' },
        'interval-ms': { type: 'string' },
        aead: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
  const { values, positionals } = parsed;
  if (values.help === true) return { ok: true, options: { target: '' }, help: true };
  if (positionals.length !== 1 || positionals[0] === undefined) return { ok: false, error: 'expected exactly one HOST[:PORT]' };
  let options: CheckOptions = { target: positionals[0] };
  if (values.ca !== undefined) options = { ...options, caFile: values.ca };
  if (values.servername !== undefined) options = { ...options, servername: values.servername };
  if (values.count !== undefined) {
    const count = parseIntOption(values.count, '--count', 1, 1000);
    if (typeof count === 'string') return { ok: false, error: count };
    options = { ...options, count };
  }
  if (values['timeout-ms'] !== undefined) {
    const timeoutMs = parseIntOption(values['timeout-ms'], '--timeout-ms', 1, 600_000);
    if (typeof timeoutMs === 'string') return { ok: false, error: timeoutMs };
    options = { ...options, timeoutMs };
  }
  if (values['interval-ms'] !== undefined) {
    const intervalMs = parseIntOption(values['interval-ms'], '--interval-ms', 0, 600_000);
    if (typeof intervalMs === 'string') return { ok: false, error: intervalMs };
    options = { ...options, intervalMs };
  }
  if (values.aead !== undefined) {
    const ids: number[] = [];
    for (const part of values.aead.split(',')) {
      const id = parseIntOption(part.trim(), '--aead', 0, 65535);
      if (typeof id === 'string') return { ok: false, error: id };
      if (getAead(id) === undefined) return { ok: false, error: `--aead ${id}: not implemented (known: ${defaultAeadOffer().join(', ')})` };
      ids.push(id);
    }
    options = { ...options, aeadIds: ids };
  }
  return { ok: true, options };
}

function keExitCode(kind: KeyExchangeFailureKind): CheckExitCode {
  switch (kind) {
    case 'connect':
      return CheckExitCode.connect;
    case 'tls':
      return CheckExitCode.tls;
    case 'alpn':
      return CheckExitCode.alpn;
    case 'timeout':
      return CheckExitCode.timeout;
    case 'ke_error':
    case 'ke_warning':
      return CheckExitCode.keRefused;
    case 'negotiation':
    case 'malformed':
      return CheckExitCode.keProtocol;
  }
}

function ntpExitCode(failure: NtsExchangeFailure): CheckExitCode {
  switch (failure.kind) {
    case 'timeout':
      return CheckExitCode.timeout;
    case 'nts_nak':
      return CheckExitCode.ntsNak;
    case 'bad_tag':
      return CheckExitCode.ntpAuth;
    case 'network':
    case 'kiss_of_death':
    case 'malformed':
    case 'unsupported_aead':
      return CheckExitCode.ntpProtocol;
  }
}

/** Reference id as chronyc shows it: hex, plus the ASCII reading when all four octets are printable (RFC 5905 §7.3). */
function formatReferenceId(referenceId: number): string {
  const hex = (referenceId >>> 0).toString(16).toUpperCase().padStart(8, '0');
  const ascii = kissCodeString(referenceId).replace(/\?+$/, '');
  return ascii.length > 0 && !ascii.includes('?') ? `${hex} (${ascii})` : hex;
}

function signed(seconds: number): string {
  return `${seconds >= 0 ? '+' : '-'}${Math.abs(seconds).toFixed(6)}`;
}

function describeCookieSizes(cookies: readonly Uint8Array[]): string {
  const sizes = [...new Set(cookies.map((c) => c.length))].sort((a, b) => a - b);
  return `${sizes.join('/')} octets`;
}

function reportKeyExchange(ke: KeyExchangeResult, write: (line: string) => void): void {
  const cert = ke.certificate;
  write(`TLS: ${ke.tlsVersion}, ${ke.tlsCipher}, ALPN ntske/1, ${ke.durationMs.toFixed(1)} ms`);
  write(`certificate subject: ${cert.subject || '(empty)'}`);
  if (cert.subjectAltName !== '') write(`certificate names: ${cert.subjectAltName}`);
  write(`certificate issuer: ${cert.issuer || '(empty)'}`);
  const leftMs = cert.validTo.getTime() - Date.now();
  write(`certificate expires: ${cert.validTo.toISOString()} (in ${(leftMs / 86_400_000).toFixed(1)} days)`);
  if (leftMs < EXPIRY_WARNING_MS) write('warning: certificate expires within 7 days');
  write(`AEAD: ${ke.aeadId} (${getAead(ke.aeadId)?.name ?? 'unknown'})`);
  write(`cookies: ${ke.cookies.length} x ${describeCookieSizes(ke.cookies)}`);
  if (ke.cookies.length < COOKIE_STASH_TARGET) write(`warning: RFC 8915 §4.1.6 says a server SHOULD send ${COOKIE_STASH_TARGET} cookies`);
  write(
    `NTP server: ${ke.ntpServer} port ${ke.ntpPort} (server ${ke.ntpServerFromRecord ? 'from Server Negotiation record' : 'is the KE address'}, ` +
      `port ${ke.ntpPortFromRecord ? 'from Port Negotiation record' : 'default 123'})`,
  );
}

function isArgv(input: CheckOptions | readonly string[]): input is readonly string[] {
  return Array.isArray(input);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Runs `ntsd check`: NTS-KE then `count` authenticated exchanges, each result written as one line.
 * Accepts parsed options or the raw arguments after "check". Resolves to the exit code; never rejects
 * on network or peer problems.
 */
export async function runCheck(input: CheckOptions | readonly string[], write: (line: string) => void): Promise<number> {
  let options: CheckOptions;
  if (isArgv(input)) {
    const parsed = parseCheckArgs(input);
    if (parsed.ok && parsed.help === true) {
      write(commandHelp('check'));
      return CheckExitCode.ok;
    }
    if (!parsed.ok) {
      write(`error: ${parsed.error}`);
      write(CHECK_USAGE);
      return CheckExitCode.usage;
    }
    options = parsed.options;
  } else {
    options = input;
  }
  const target = parseTarget(options.target);
  if (target === undefined) {
    write(`error: cannot parse "${options.target}" as HOST[:PORT]`);
    write(CHECK_USAGE);
    return CheckExitCode.usage;
  }
  const count = options.count ?? DEFAULT_COUNT;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  let ca: string | undefined;
  if (options.caFile !== undefined) {
    try {
      ca = await readFile(options.caFile, 'utf8');
    } catch (err) {
      write(`FAIL: cannot read CA file ${options.caFile}: ${err instanceof Error ? err.message : String(err)}`);
      return CheckExitCode.noInput;
    }
  }

  const aeadIds = options.aeadIds ?? defaultAeadOffer();
  write(`NTS-KE: ${target.host} port ${target.port}, offering AEAD ${aeadIds.join(', ')}`);
  const ke = await performKeyExchange({
    host: target.host,
    port: target.port,
    timeoutMs,
    aeadIds,
    ...(ca === undefined ? {} : { ca }),
    ...(options.servername === undefined ? {} : { servername: options.servername }),
  });
  if (!ke.ok) {
    write(`FAIL (${ke.failure.kind}): ${ke.failure.message}`);
    return keExitCode(ke.failure.kind);
  }
  const keys = ke.result;
  reportKeyExchange(keys, write);

  const clock = new WallClock();
  clock.calibrate();
  const stash: Uint8Array[] = [...keys.cookies];
  let worstOffsetS = 0;
  for (let i = 1; i <= count; i++) {
    if (i > 1 && intervalMs > 0) await sleep(intervalMs);
    const cookie = stash.shift();
    if (cookie === undefined) {
      write(`FAIL (cookies): no cookie left for exchange ${i}`);
      return CheckExitCode.ntpProtocol;
    }
    const placeholders = Math.min(MAX_COOKIE_PLACEHOLDERS, Math.max(0, COOKIE_STASH_TARGET - stash.length - 1));
    const exchange = await ntsExchange({
      server: keys.ntpServer,
      port: keys.ntpPort,
      aeadId: keys.aeadId,
      c2s: keys.c2s,
      s2c: keys.s2c,
      cookie,
      placeholders,
      timeoutMs,
      clock,
    });
    if (!exchange.ok) {
      write(`FAIL (${exchange.failure.kind}): NTP exchange ${i}/${count}: ${exchange.failure.message}`);
      return ntpExitCode(exchange.failure);
    }
    const r = exchange.result;
    stash.push(...r.cookies);
    if (Math.abs(r.offsetS) > Math.abs(worstOffsetS)) worstOffsetS = r.offsetS;
    const h = r.header;
    write(
      `NTP ${i}/${count}: offset ${signed(r.offsetS)} s, delay ${r.delayS.toFixed(6)} s, stratum ${h.stratum}, leap ${h.leap}, ` +
        `refid ${formatReferenceId(h.referenceId)}, ` +
        `authenticated, ${r.cookies.length} new cookie(s) for ${placeholders} placeholder(s), ${r.requestLength}/${r.responseLength} octets`,
    );
    if (r.cookies.length !== 1 + placeholders) {
      write(`warning: ${r.cookies.length} cookie(s) for ${placeholders} placeholder(s); RFC 8915 §5.7 says 1 + placeholders`);
    }
    if (h.leap === 3 || h.stratum >= 16) write('warning: the server says its clock is unsynchronised (leap 3 / stratum 16)');
  }
  write(`OK: ${count}/${count} authenticated NTP exchanges, largest offset ${signed(worstOffsetS)} s`);
  return CheckExitCode.ok;
}
