/**
 * The contract between a KE session and a request handler that is not the ordinary one: the `[pool-ke]`
 * front end's, which talks to a source before it can answer, so its answer is a promise.
 *
 * How a KE thread gets one without nts-ke importing nts-pool: the main thread puts a `KeHandlerSpec` (a
 * module URL and plain options) into the thread's workerData; the thread `import()`s that URL and calls
 * the module's `createKeRequestHandler` export (a `KeHandlerFactory`). daemon.ts composes the two
 * feature folders; both type the seam through this file. The ordinary KE path (core/ke-handler.ts) stays
 * synchronous and takes no promise: a session calls it directly when its thread has no handler.
 *
 * Pure types and vocabulary: nothing here runs.
 */
import type { KeSessionOutcomeLabel } from './ke-handler.js';

/** Name of the factory a handler module exports (see KeHandlerFactory). */
export const KE_HANDLER_FACTORY_EXPORT = 'createKeRequestHandler';

/** Severity of a line a KE thread (or its handler) sends to the main thread's logger. */
export type KeLogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * The client's TLS exporter (RFC 8446 §7.5) with the NTS label (RFC 8915 §4.3): `length` octets for
 * `context`. Valid only while the answer is being computed; the caller wipes what it hands out.
 */
export type KeyingMaterialExporter = (length: number, context: Uint8Array) => Uint8Array;

/** A handler's answer to one request: the session writes it, closes, and counts `outcome`. */
export interface KeHandlerAnswer {
  /** One complete KE message, ending with End of Message. */
  readonly response: Uint8Array;
  /** The label of ntsd_ke_sessions_total this session gets. */
  readonly outcome: KeSessionOutcomeLabel;
  /** New Cookie records in `response`. */
  readonly cookiesIssued: number;
  /** The handler's own finer outcome (handed back through `settled`). */
  readonly detail: string;
}

/** One metric change a handler reports: a counter increment or a gauge value, by series and labels. */
export interface KeHandlerSample {
  readonly series: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** What a handler tells its thread (and through it the main thread) between two stats reports. */
export type KeHandlerReport = readonly KeHandlerSample[];

/** A request handler living on one KE thread (its state is that thread's). */
export interface KeRequestHandler {
  /**
   * Answers one complete request: a view into the session's buffers, to be read before the first await
   * (copy what is kept). Never rejects for peer input; a rejection is answered with Error 2 (internal_error).
   */
  answer(request: Uint8Array, exportKeys: KeyingMaterialExporter): Promise<KeHandlerAnswer>;
  /**
   * A session of this listener ended with `outcome`; `detail` is the handler's answer's detail when its
   * answer settled the session, else undefined (TLS failure, timeout, eviction, a client that left).
   */
  settled(outcome: KeSessionOutcomeLabel, detail: string | undefined): void;
  /** Samples since the last call (undefined when none), for the thread's next stats report. */
  takeReport(): KeHandlerReport | undefined;
  /** Stops timers and closes upstream connections (thread stop). */
  close(): void;
}

/** What the KE thread gives a handler. */
export interface KeHandlerEnv {
  /** 0 .. threads-1. */
  readonly threadIndex: number;
  /** Sends one line to the main thread's logger (rate-limited by the thread). */
  log(level: KeLogLevel, msg: string, fields?: Readonly<Record<string, string | number>>): void;
}

/** The `createKeRequestHandler` export of a handler module; `options` is the spec's, as cloned to the thread. */
export type KeHandlerFactory = (options: unknown, env: KeHandlerEnv) => KeRequestHandler;

/** Which handler a KE listener's threads run instead of the ordinary KE answer. */
export interface KeHandlerSpec {
  /** URL (href) of the handler module, loaded with import() on each KE thread. */
  readonly module: string;
  /** Plain data (structured-cloneable) for the factory. */
  readonly options: unknown;
}
