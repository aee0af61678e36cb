/**
 * The one thread supervisor: every worker thread of ntsd (NTP threads, NTS-KE threads) is started,
 * watched, replaced and stopped here.
 *
 *  - start: `start(index)` spawns the thread with `workerData(index)` and resolves with what its first
 *    "ready" message carries (bound addresses), or rejects when it reports a start failure or exits first;
 *    a thread that failed to start is terminated.
 *  - restart: once the owner calls `supervise()` (after its own start-up), a thread that exits is
 *    replaced with the workerData of that moment and counted. A thread that dies young (before it was
 *    ready, or within YOUNG_THREAD_MS) is restarted with exponential back-off, so a crash loop cannot spin.
 *  - stop: every ready thread is sent `stopMessage` and given `stopGraceMs` (default STOP_GRACE_MS) to
 *    answer "stopped" (its last counters) before it is terminated.
 * The supervisor neither logs nor counts metrics itself; it tells the owner through callbacks.
 */
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';

/** A thread that lived shorter than this is "dying young" and restarted with back-off. */
export const YOUNG_THREAD_MS = 1000;
/** First and largest back-off before a young thread's replacement starts. */
export const RESTART_BACKOFF_FIRST_MS = 100;
export const RESTART_BACKOFF_MAX_MS = 5000;
/** Longest wait for a stopping thread's "stopped" answer before it is terminated. */
export const STOP_GRACE_MS = 1000;

/** What a thread's message means to the supervisor; `undefined` hands it to the owner's onMessage. */
export type LifecycleMessage<Ready> = { kind: 'ready'; value: Ready } | { kind: 'failed'; error: Error } | { kind: 'stopped' } | undefined;

/** A thread exit after start-up, and when its replacement will start. */
export interface ThreadExit {
  readonly index: number;
  readonly exitCode: number;
  /** The last 'error' event of the thread, or the start failure it reported. */
  readonly error: unknown;
  /** Delay before the replacement starts (0 = at once). */
  readonly restartInMs: number;
}

/** Options of {@link ThreadSupervisor}. */
export interface SupervisorOptions<Ready> {
  /** Thread names are `ntsd-<name>-<index>`; errors say "<name> thread <index>". */
  readonly name: string;
  /** The thread entry module. */
  readonly entry: URL;
  /** workerData for thread `index`, asked again for every replacement. */
  workerData(index: number): unknown;
  /** Sorts a thread's message into the lifecycle (ready, failed, stopped) or the owner's business. */
  classify(message: unknown): LifecycleMessage<Ready>;
  /** Every message that is not a lifecycle message. */
  onMessage(index: number, message: unknown): void;
  /** A supervised thread exited and a replacement is scheduled. */
  onExit?(exit: ThreadExit): void;
  /** A replacement is ready. */
  onReplaced?(index: number, value: Ready): void;
  /** The message that asks a thread to finish and answer "stopped". */
  readonly stopMessage: unknown;
  /** Longest wait for "stopped" (default STOP_GRACE_MS); KE threads let open sessions finish first. */
  readonly stopGraceMs?: number;
}

interface Handle {
  readonly index: number;
  readonly worker: Worker;
  readonly startedAtMs: number;
  ready: boolean;
  exited: boolean;
  lastError: unknown;
  onReady: ((result: { ok: true; value: unknown } | { ok: false; error: unknown }) => void) | undefined;
  onStopped: (() => void) | undefined;
}

/** Back-off after `deaths` young deaths in a row (0 = at once). */
export function restartDelayMs(deaths: number): number {
  return deaths === 0 ? 0 : Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_FIRST_MS * 2 ** (deaths - 1));
}

/** Starts, replaces and stops a set of worker threads indexed 0..N-1. */
export class ThreadSupervisor<Ready> {
  readonly #o: SupervisorOptions<Ready>;
  readonly #handles = new Map<number, Handle>();
  readonly #timers = new Map<number, NodeJS.Timeout>();
  readonly #youngDeaths = new Map<number, number>();
  #supervising = false;
  #closed = false;
  #restarts = 0;

  constructor(options: SupervisorOptions<Ready>) {
    this.#o = options;
  }

  /** Threads replaced since start. */
  get restarts(): number {
    return this.#restarts;
  }

  /** Threads running and ready now. */
  get alive(): number {
    let n = 0;
    for (const h of this.#handles.values()) if (h.ready && !h.exited) n++;
    return n;
  }

  /** Starts thread `index`; resolves with its ready value, rejects (thread ended) when it cannot start. */
  start(index: number): Promise<Ready> {
    return new Promise<Ready>((resolve, reject) => {
      const h = this.#spawn(index, (result) => (result.ok ? resolve(result.value as Ready) : reject(result.error)));
      if (h === undefined) reject(new Error(`${this.#o.name} thread ${index} could not be created`));
    });
  }

  /** From now on, a thread that exits is replaced (call after the owner's start-up succeeded). */
  supervise(): void {
    this.#supervising = true;
  }

  /** Sends `message` to every running thread. */
  broadcast(message: unknown): void {
    for (const h of this.#handles.values()) if (!h.exited) h.worker.postMessage(message);
  }

  /** Sends `message` to thread `index`; false when it is not running. */
  post(index: number, message: unknown): boolean {
    const h = this.#handles.get(index);
    if (h === undefined || h.exited) return false;
    h.worker.postMessage(message);
    return true;
  }

  /** Ends thread `index` as if it had crashed (tests); false when there is none. */
  async terminate(index: number): Promise<boolean> {
    const h = this.#handles.get(index);
    if (h === undefined) return false;
    await h.worker.terminate();
    return true;
  }

  /** Stops every thread (stop message, grace, terminate); no thread is replaced afterwards. */
  async stop(): Promise<void> {
    this.#closed = true;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    const running = [...this.#handles.values()];
    this.#handles.clear();
    await Promise.all(running.map((h) => this.#stopOne(h)));
  }

  async #stopOne(h: Handle): Promise<void> {
    if (h.ready && !h.exited) {
      const stopped = new Promise<void>((resolve) => {
        h.onStopped = resolve;
      });
      h.worker.postMessage(this.#o.stopMessage);
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.#o.stopGraceMs ?? STOP_GRACE_MS);
      });
      await Promise.race([stopped, grace]);
      clearTimeout(timer);
    }
    await h.worker.terminate();
  }

  #spawn(index: number, onReady: Handle['onReady']): Handle | undefined {
    this.#timers.delete(index);
    if (this.#closed) return undefined;
    let worker: Worker;
    try {
      worker = new Worker(this.#o.entry, { workerData: this.#o.workerData(index), name: `ntsd-${this.#o.name}-${index}` });
    } catch (error) {
      if (!this.#supervising) throw error;
      // Creating the thread failed (resource limits): count it as a young death and try again later.
      this.#died(index, -1, error, true);
      return undefined;
    }
    const h: Handle = { index, worker, startedAtMs: performance.now(), ready: false, exited: false, lastError: undefined, onReady, onStopped: undefined };
    this.#handles.set(index, h);
    worker.on('message', (message: unknown) => {
      if (!h.exited) this.#onMessage(h, message);
    });
    worker.on('error', (error: unknown) => {
      h.lastError = error;
    });
    worker.on('exit', (exitCode: number) => this.#onExit(h, exitCode));
    return h;
  }

  #onMessage(h: Handle, message: unknown): void {
    const lifecycle = this.#o.classify(message);
    if (lifecycle === undefined) {
      this.#o.onMessage(h.index, message);
      return;
    }
    switch (lifecycle.kind) {
      case 'ready':
        h.ready = true;
        h.onReady?.({ ok: true, value: lifecycle.value });
        h.onReady = undefined;
        return;
      case 'failed':
        h.lastError = lifecycle.error;
        h.onReady?.({ ok: false, error: lifecycle.error });
        h.onReady = undefined;
        // A thread that could not start waits to be ended; when supervised this counts as a death.
        void h.worker.terminate();
        return;
      case 'stopped':
        h.onStopped?.();
        h.onStopped = undefined;
        return;
      default: {
        const unreachable: never = lifecycle;
        return unreachable;
      }
    }
  }

  #onExit(h: Handle, exitCode: number): void {
    h.exited = true;
    if (this.#handles.get(h.index) === h) this.#handles.delete(h.index);
    h.onStopped?.();
    h.onStopped = undefined;
    if (h.onReady !== undefined) {
      h.onReady({ ok: false, error: h.lastError ?? new Error(`${this.#o.name} thread ${h.index} exited (${exitCode}) before it was ready`) });
      h.onReady = undefined;
    }
    if (this.#closed || !this.#supervising) return;
    this.#died(h.index, exitCode, h.lastError, !h.ready || performance.now() - h.startedAtMs < YOUNG_THREAD_MS);
  }

  /** Counts a death after start-up and schedules the replacement. */
  #died(index: number, exitCode: number, error: unknown, young: boolean): void {
    this.#restarts++;
    const deaths = young ? (this.#youngDeaths.get(index) ?? 0) + 1 : 0;
    this.#youngDeaths.set(index, deaths);
    const restartInMs = restartDelayMs(deaths);
    this.#o.onExit?.({ index, exitCode, error, restartInMs });
    const replace = (): void => {
      this.#spawn(index, (result) => {
        if (result.ok) this.#o.onReplaced?.(index, result.value as Ready);
      });
    };
    if (restartInMs === 0) {
      replace();
      return;
    }
    const timer = setTimeout(replace, restartInMs);
    timer.unref();
    this.#timers.set(index, timer);
  }
}
