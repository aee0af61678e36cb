/**
 * Types of the seam between a KE session and a request handler other than the ordinary (synchronous,
 * core/ke-handler.ts) one: the `[pool-ke]` front end's, which asks a source first, so it answers with a
 * promise. KE threads get a KeHandlerSpec (module URL, plain options) in workerData, import() the URL and
 * call its `createKeRequestHandler`; daemon.ts composes nts-ke and nts-pool, both typed through this file.
 */
import type { KeSessionOutcomeLabel } from './ke-handler.js';

/** Name of the factory a handler module exports (see KeHandlerFactory). */
export const KE_HANDLER_FACTORY_EXPORT = 'createKeRequestHandler';

/** Severity of a line a KE thread (or its handler) sends to the main thread's logger. */
export type KeLogLevel = 'debug' | 'info' | 'warn' | 'error';

/** The client's TLS exporter with the NTS label (RFC 8915 §4.3): `length` octets for `context`; the caller wipes them. */
export type KeyingMaterialExporter = (length: number, context: Uint8Array) => Uint8Array;

/** A handler's answer: the session writes `response`, closes, and counts `outcome` (`detail` returns through `settled`). */
export interface KeHandlerAnswer {
  readonly response: Uint8Array;
  readonly outcome: KeSessionOutcomeLabel;
  readonly cookiesIssued: number;
  readonly detail: string;
}

/** One metric change of a handler: a counter increment or a gauge value, by series and labels. */
export interface KeHandlerSample {
  readonly series: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** What a handler reports between two stats reports of its KE thread. */
export type KeHandlerReport = readonly KeHandlerSample[];

/** A request handler on one KE thread (its state is that thread's). */
export interface KeRequestHandler {
  /**
   * Answers one complete request, a view to read before the first await. Never rejects for peer input; a
   * rejection is answered with Error 2 (internal_error).
   */
  answer(request: Uint8Array, exportKeys: KeyingMaterialExporter): Promise<KeHandlerAnswer>;
  /** A session ended; `detail` is the handler's when its answer settled it (else a TLS failure, timeout, …). */
  settled(outcome: KeSessionOutcomeLabel, detail: string | undefined): void;
  /** Samples since the last call, or undefined when there are none. */
  takeReport(): KeHandlerReport | undefined;
  /** Stops timers and closes upstream connections. */
  close(): void;
}

/** What the KE thread gives a handler: its index and its (rate-limited) log. */
export interface KeHandlerEnv {
  readonly threadIndex: number;
  log(level: KeLogLevel, msg: string, fields?: Readonly<Record<string, string | number>>): void;
}

/** The `createKeRequestHandler` export of a handler module; `options` as cloned to the thread. */
export type KeHandlerFactory = (options: unknown, env: KeHandlerEnv) => KeRequestHandler;

/** Which handler a KE listener's threads load: a module URL (href) and plain, cloneable options. */
export interface KeHandlerSpec {
  readonly module: string;
  readonly options: unknown;
}
