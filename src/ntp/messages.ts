/**
 * What the main thread and the NTP threads say to each other (src/ntp/threads.ts starts the threads,
 * src/ntp/thread-main.ts is their entry). Plain structured-clone messages: a thread's start data, keyset and
 * server-field broadcasts, and the thread's periodic counter reports.
 */
import type { AdmissionSpec } from '../core/admission.js';
import type { ServerFields } from '../core/responder.js';
import type { ResponderPolicy } from '../core/serve.js';
import type { PacketCountValues } from './counters.js';

/** workerData marker of NTP threads. */
export const NTP_THREAD_ROLE = 'ntsd-ntp-thread';

/** How a thread's sockets are made: the native addon or Node's dgram with reusePort. */
export type ThreadBackend = 'native' | 'dgram';

/** One listen address as a thread binds it (ports resolved, v6-only decided on main). */
export interface ThreadListen {
  readonly host: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  readonly policy: number;
  readonly ipv6Only: boolean;
}

/** A bound socket's local address. */
export interface ThreadBoundAddress {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
}

/** workerData of an NTP thread. */
export interface ThreadInit {
  readonly role: typeof NTP_THREAD_ROLE;
  readonly index: number;
  readonly backend: ThreadBackend;
  /** Native backend: one sendmsg per reply (`each`) or one sendmmsg per received batch (`batch`). */
  readonly sendMode: 'each' | 'batch';
  readonly listen: readonly ThreadListen[];
  readonly receiveBufferBytes: number | undefined;
  readonly keysetBytes: Uint8Array;
  readonly serverFields: ServerFields;
  readonly policies: readonly ResponderPolicy[];
  /** Access list and shared rate-limit table per policy index (missing = admit everything). */
  readonly admissions: readonly AdmissionSpec[];
  /** Native backend: the shared RFC 9769 interleave table (core/interleave.ts) per policy index; undefined = basic mode only. */
  readonly interleaveTables: readonly (SharedArrayBuffer | undefined)[];
  /** The client log every NTP and KE thread counts into (core/client-log.ts); undefined = off. */
  readonly clientLog: SharedArrayBuffer | undefined;
  readonly clockShared: SharedArrayBuffer;
  readonly reportIntervalMs: number;
  readonly durationBucketsS: readonly number[] | undefined;
}

/** A thread's counters since its previous report (the scalar counts are documented in counters.ts PacketCounts). */
export interface ThreadReport extends PacketCountValues {
  /** TALLY_WORDS deltas in ntp/counters.ts Tally layout (outcomes, key ages, cookies issued, respond errors). */
  readonly tally: readonly number[];
  readonly received: number;
  readonly durationCounts: readonly number[];
  readonly durationSumS: number;
}

/** Events a thread reports once per report interval (the first message of each kind). */
export type ThreadEventKind = 'respondError' | 'keysetRejected' | 'socketError' | 'sendError';

/** Main → thread. */
export type ToThread =
  | { readonly kind: 'keyset'; readonly bytes: Uint8Array }
  | { readonly kind: 'serverFields'; readonly fields: ServerFields }
  | { readonly kind: 'admissions'; readonly specs: readonly AdmissionSpec[] }
  | { readonly kind: 'stop' };

/** Thread → main. */
export type FromThread =
  | { readonly kind: 'ready'; readonly addresses: readonly ThreadBoundAddress[] }
  | { readonly kind: 'bindFailed'; readonly where: string; readonly message: string }
  | { readonly kind: 'report'; readonly report: ThreadReport }
  | { readonly kind: 'event'; readonly event: ThreadEventKind; readonly message: string }
  | { readonly kind: 'stopped' };

const TO_KINDS: ReadonlySet<string> = new Set(['keyset', 'serverFields', 'admissions', 'stop']);
const FROM_KINDS: ReadonlySet<string> = new Set(['ready', 'bindFailed', 'report', 'event', 'stopped']);

function hasKind(msg: unknown, kinds: ReadonlySet<string>): boolean {
  if (typeof msg !== 'object' || msg === null) return false;
  const kind = (msg as { kind?: unknown }).kind;
  return typeof kind === 'string' && kinds.has(kind);
}

/** Narrows a message from an NTP thread. */
export function isFromThread(msg: unknown): msg is FromThread {
  return hasKind(msg, FROM_KINDS);
}

/** Narrows a message to an NTP thread. */
export function isToThread(msg: unknown): msg is ToThread {
  return hasKind(msg, TO_KINDS);
}

/** Narrows workerData to an NTP thread's start data. */
export function isThreadInit(data: unknown): data is ThreadInit {
  return typeof data === 'object' && data !== null && (data as { role?: unknown }).role === NTP_THREAD_ROLE;
}

/** "host:port" or "[host]:port" for messages. */
export function formatWhere(host: string, port: number, family: 'IPv4' | 'IPv6'): string {
  return family === 'IPv6' ? `[${host}]:${port}` : `${host}:${port}`;
}

/** An error as one line. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
