/**
 * Runs one bounded load run: (nts) one NTS-KE with the project's own client, then sender threads with
 * precomputed requests; (plain) plain NTPv4; (echo) against an echo server child it starts itself;
 * (ke) back-to-back NTS-KE sessions. Every thread stops by itself after the duration or the request
 * count; the main thread merges their counts into one LoadReport.
 */
import { Worker } from 'node:worker_threads';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { loadNativeUdp } from '../../src/runtime/addon.js';
import { startClockCalibrator, WallClock, monotonicS } from '../../src/runtime/clock.js';
import { performKeyExchange } from '../../src/cli/ke-client.js';
import { startEchoServer, type EchoServer } from './echo-server.js';
import { UsHistogram } from './histogram.js';
import { CLIENTS_PER_ADDRESS } from './protocol.js';
import type {
  ExchangeReport,
  HostPort,
  KeWorkerData,
  KeWorkerResult,
  LoadOptions,
  LoadReport,
  NtsSession,
  ProbeReport,
  UdpWorkerData,
  StampCounts,
  UdpWorkerResult,
  WorkerMessage,
} from './protocol.js';

/** Time given to threads to open sockets and precompute requests. */
const READY_TIMEOUT_MS = 60_000;

function isWorkerMessage(value: unknown): value is WorkerMessage {
  if (typeof value !== 'object' || value === null) return false;
  const type: unknown = (value as { type?: unknown }).type;
  return type === 'ready' || type === 'failed' || type === 'udp-result' || type === 'ke-result';
}

/** Formats host:port (brackets for IPv6). */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** Splits the share `total` over `parts` as evenly as possible; part i gets the i-th share. */
function share(total: number, parts: number, i: number): number {
  const base = Math.floor(total / parts);
  return base + (i < total - base * parts ? 1 : 0);
}

interface Thread {
  readonly worker: Worker;
  ready: Promise<void>;
  result: Promise<WorkerMessage>;
}

function startThread(data: UdpWorkerData | KeWorkerData): Thread {
  const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: data });
  let readyResolve: () => void = () => undefined;
  let readyReject: (err: Error) => void = () => undefined;
  const ready = new Promise<void>((resolve, reject) => {
    readyResolve = resolve;
    readyReject = reject;
  });
  const result = new Promise<WorkerMessage>((resolve, reject) => {
    worker.on('message', (message: unknown) => {
      if (!isWorkerMessage(message)) return;
      if (message.type === 'ready') readyResolve();
      else if (message.type === 'failed') {
        const err = new Error(`generator thread ${data.index}: ${message.message}`);
        readyReject(err);
        reject(err);
      } else resolve(message);
    });
    worker.on('error', (err) => {
      readyReject(err);
      reject(err);
    });
    worker.on('exit', (code) => {
      const err = new Error(`generator thread ${data.index} exited (code ${code}) before reporting`);
      readyReject(err);
      reject(err);
    });
  });
  // Both promises may settle unobserved when a sibling thread fails first.
  ready.catch(() => undefined);
  result.catch(() => undefined);
  return { worker, ready, result };
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function emptyQuantiles(): LoadReport['delayUs'] {
  return new UsHistogram().quantiles();
}

function probeReport(r: UdpWorkerResult): ProbeReport {
  const delay = new UsHistogram();
  delay.merge(r.delay);
  const offset = new UsHistogram();
  offset.merge(r.offset);
  return {
    ratePerS: r.measuredS > 0 ? r.received / r.measuredS : 0,
    sent: r.sent,
    received: r.received,
    lost: r.lost,
    invalid: Object.values(r.invalid).reduce((a, b) => a + b, 0),
    delayUs: delay.quantiles(),
    offsetAbsUs: offset.quantiles(),
    offsetMeanUs: offset.count > 0 ? r.offsetSumUs / offset.count : null,
    residenceUs: histogramOf(r.residence).quantiles(),
  };
}

/** The client-exchange figures of all bulk threads. */
function exchangeReport(options: LoadOptions, results: readonly UdpWorkerResult[]): ExchangeReport {
  const interleavedOffset = new UsHistogram();
  const basicOffset = new UsHistogram();
  const sum = { replies: 0, interleaved: 0, askedInterleaved: 0, basicSamples: 0, interleavedSamples: 0, interleavedWithoutSample: 0 };
  for (const r of results) {
    const e = r.exchanges;
    if (e === undefined) continue;
    interleavedOffset.merge(e.interleavedOffset);
    basicOffset.merge(e.basicOffset);
    for (const k of Object.keys(sum) as (keyof typeof sum)[]) sum[k] += e[k];
  }
  const sockets = options.threads * options.socketsPerThread;
  return {
    client: options.client ?? 'basic',
    sourceAddresses: Math.min(sockets, LOOPBACK_SOURCES),
    clients: sockets * options.window,
    replies: sum.replies,
    interleavedReplies: sum.interleaved,
    interleavedFraction: sum.replies > 0 ? sum.interleaved / sum.replies : 0,
    askedInterleaved: sum.askedInterleaved,
    basicSamples: sum.basicSamples,
    interleavedSamples: sum.interleavedSamples,
    interleavedWithoutSample: sum.interleavedWithoutSample,
    interleavedOffsetAbsUs: interleavedOffset.quantiles(),
    basicOffsetAbsUs: basicOffset.quantiles(),
  };
}

function histogramOf(snapshot: UdpWorkerResult['residence']): UsHistogram {
  const h = new UsHistogram();
  h.merge(snapshot);
  return h;
}

/**
 * Which timestamps the UDP senders use: kernel ones when the addon loads (nts and plain modes), unless
 * asked for user space; `kernel` without the addon is an error. The note says why user space was used.
 */
export function chooseTimestamps(options: Pick<LoadOptions, 'mode' | 'timestamps'>): { kernel: boolean; note: string | null } {
  if (options.mode === 'echo' || options.mode === 'ke') return { kernel: false, note: `${options.mode} mode stamps in user space` };
  if (options.timestamps === 'user') return { kernel: false, note: 'user-space stamps requested (--timestamps user)' };
  const loaded = loadNativeUdp();
  if (loaded.ok) return { kernel: true, note: null };
  if (options.timestamps === 'kernel') throw new Error(`--timestamps kernel: the native addon is unavailable: ${loaded.reason}`);
  return { kernel: false, note: `native addon unavailable (${loaded.reason}): user-space stamps, which include the generator's own queueing` };
}

/** Loopback source addresses the client-exchange sender spreads its sockets over: 127.0.0.2 … 127.0.0.254. */
export const LOOPBACK_SOURCES = 253;

/**
 * The local address of every socket of the client-exchange sender, per thread: one loopback address per
 * socket (127.0.0.2, .3, …) when the target is IPv4 loopback, else the wildcard (""). Throws when a
 * source address would hold more than CLIENTS_PER_ADDRESS clients (ntsd's interleave entries per address).
 */
export function sourceAddressPlan(targetAddress: string, threads: number, socketsPerThread: number, clientsPerSocket: number): string[][] {
  if (clientsPerSocket > CLIENTS_PER_ADDRESS) throw new Error(`client exchanges: at most ${CLIENTS_PER_ADDRESS} clients per socket (--window), got ${clientsPerSocket}`);
  const loopback4 = /^127\./.test(targetAddress);
  const total = threads * socketsPerThread;
  if (loopback4 && Math.ceil(total / LOOPBACK_SOURCES) * clientsPerSocket > CLIENTS_PER_ADDRESS) {
    throw new Error(`client exchanges: ${total} sockets × ${clientsPerSocket} clients put more than ${CLIENTS_PER_ADDRESS} clients on one of the ${LOOPBACK_SOURCES} loopback source addresses`);
  }
  return Array.from({ length: threads }, (_, t) =>
    Array.from({ length: socketsPerThread }, (_, j) => (loopback4 ? `127.0.0.${2 + ((t * socketsPerThread + j) % LOOPBACK_SOURCES)}` : '')),
  );
}

/** Runs one load run as described by `options` and returns its report. Throws on setup failures (KE refused, bad options). */
export async function runLoad(options: LoadOptions): Promise<LoadReport> {
  if (options.threads < 1) throw new Error('threads must be at least 1');
  if (options.client !== undefined) {
    if (options.mode !== 'plain') throw new Error(`client exchanges (${options.client}) run plain NTP only (--mode plain)`);
    if (options.probeRatePerS > 0) throw new Error('client exchanges run without a probe thread');
    if (options.timestamps === 'user') throw new Error('client exchanges need kernel timestamps (the native addon)');
  }
  const clock = new WallClock();
  const native = loadNativeUdp();
  const calibrator = startClockCalibrator(clock, undefined, native.ok ? (out) => native.addon.realtime(out) : undefined);
  let echo: EchoServer | undefined;
  const threads: Thread[] = [];
  let stampChoice: { kernel: boolean; note: string | null } = { kernel: false, note: null };
  try {
    let target = options.target;
    let session: NtsSession | undefined;
    let sessionInfo: LoadReport['session'] = null;

    if (options.mode === 'nts') {
      if (options.ke === undefined || options.caPem === undefined) throw new Error('nts mode needs --ke HOST:PORT and --ca FILE');
      const outcome = await performKeyExchange({
        host: options.ke.host,
        port: options.ke.port,
        ca: options.caPem,
        ...(options.servername === undefined ? {} : { servername: options.servername }),
        ...(options.aeadIds === undefined ? {} : { aeadIds: options.aeadIds }),
        timeoutMs: Math.max(2000, options.timeoutMs),
      });
      if (!outcome.ok) throw new Error(`NTS-KE with ${formatHostPort(options.ke)} failed (${outcome.failure.kind}): ${outcome.failure.message}`);
      const r = outcome.result;
      session = { aeadId: r.aeadId, c2s: r.c2s, s2c: r.s2c, cookies: r.cookies };
      target ??= { host: r.ntpServer, port: r.ntpPort };
      sessionInfo = {
        aeadId: r.aeadId,
        cookies: r.cookies.length,
        cookieBytes: r.cookies[0]?.length ?? 0,
        ntp: formatHostPort({ host: r.ntpServer, port: r.ntpPort }),
        keMs: r.durationMs,
      };
    } else if (options.mode === 'echo') {
      echo = await startEchoServer();
      target = { host: '127.0.0.1', port: echo.port };
    } else if (options.mode === 'ke') {
      if (options.ke === undefined || options.caPem === undefined) throw new Error('ke mode needs --ke HOST:PORT and --ca FILE');
    } else if (target === undefined) {
      throw new Error('plain mode needs --target HOST:PORT');
    }

    if (options.mode === 'ke') {
      const ke = options.ke;
      const caPem = options.caPem;
      if (ke === undefined || caPem === undefined) throw new Error('unreachable');
      const count = Math.min(options.threads, options.concurrency);
      for (let i = 0; i < count; i++) {
        threads.push(
          startThread({
            role: 'ke',
            index: i,
            ke,
            caPem,
            servername: options.servername,
            aeadIds: options.aeadIds,
            lanes: share(options.concurrency, count, i),
            timeoutMs: Math.max(1000, options.timeoutMs * 4),
          }),
        );
      }
    } else {
      if (target === undefined) throw new Error('no NTP target');
      const mode = options.mode;
      stampChoice = chooseTimestamps(options);
      if (options.client !== undefined && !stampChoice.kernel) throw new Error(`client exchanges need kernel timestamps: ${stampChoice.note ?? ''}`);
      // The kernel-stamped sender connects by IP literal: resolve a name (the KE's Server record may be one) once here.
      const targetAddress = isIP(target.host) !== 0 || !stampChoice.kernel ? target.host : (await lookup(target.host)).address;
      const kernelStamps = stampChoice.kernel;
      const sources = options.client === undefined ? [] : sourceAddressPlan(targetAddress, options.threads, options.socketsPerThread, options.window);
      const udpThread = (index: number, ratePerS: number | undefined, maxRequests: number, extra: Partial<UdpWorkerData>): Thread =>
        startThread({
          role: 'udp',
          mode,
          index,
          target: target ?? { host: '127.0.0.1', port: 0 },
          clockShared: clock.shared,
          session,
          ratePerS,
          window: options.window,
          maxRequests,
          socketsPerThread: options.socketsPerThread,
          verifyEvery: Math.max(1, options.verifyEvery),
          timeoutMs: options.timeoutMs,
          pacing: options.pacing,
          poolSize: Math.max(options.window * options.socketsPerThread * 2, Math.min(options.poolSize, Math.max(1024, maxRequests))),
          placeholders: options.placeholders,
          kernelStamps,
          targetAddress,
          tickUs: options.tickUs,
          client: options.client,
          sourceAddresses: sources[index] ?? [],
          ...extra,
        });
      for (let i = 0; i < options.threads; i++) {
        threads.push(udpThread(i, options.ratePerS === undefined ? undefined : options.ratePerS / options.threads, share(options.maxRequests, options.threads, i), {}));
      }
      if (options.probeRatePerS > 0 && mode !== 'echo') {
        // One socket, one packet per millisecond tick at most, every reply fully verified.
        const probeMax = Math.ceil(options.probeRatePerS * options.durationS) + 16;
        threads.push(
          udpThread(options.threads, options.probeRatePerS, probeMax, { socketsPerThread: 1, verifyEvery: 1, pacing: 'tick', poolSize: Math.min(probeMax, 65_536), client: undefined, sourceAddresses: [] }),
        );
      }
    }

    await withTimeout(Promise.all(threads.map((t) => t.ready)), READY_TIMEOUT_MS, 'generator threads getting ready');
    const cpuBefore = process.cpuUsage();
    const startMono = monotonicS();
    const go = { type: 'go' as const, measureFromMonoS: startMono + options.warmupS, stopMonoS: startMono + options.durationS };
    for (const t of threads) t.worker.postMessage(go);
    const results = await withTimeout(
      Promise.all(threads.map((t) => t.result)),
      (options.durationS + 30) * 1000 + options.timeoutMs * 8,
      'generator threads finishing',
    );
    const cpu = process.cpuUsage(cpuBefore);
    const generatorCpuS = (cpu.user + cpu.system) / 1e6;
    const calibration = clock.calibrationState();
    const clockInfo = { calibrations: calibration.calibrations, uncertaintyUs: calibration.uncertaintyS * 1e6 };

    if (options.mode === 'ke') {
      const keResults = results.filter((r): r is KeWorkerResult => r.type === 'ke-result');
      const hist = new UsHistogram();
      const failures: Record<string, number> = {};
      let succeeded = 0;
      let succeededTotal = 0;
      let measuredS = 0;
      let firstFailure: string | undefined;
      for (const r of keResults) {
        hist.merge(r.duration);
        succeeded += r.succeeded;
        succeededTotal += r.succeededTotal;
        measuredS = Math.max(measuredS, r.measuredS);
        for (const [k, v] of Object.entries(r.failed)) failures[k] = (failures[k] ?? 0) + v;
        firstFailure ??= r.firstFailure;
      }
      const failedCount = Object.values(failures).reduce((a, b) => a + b, 0);
      return {
        mode: 'ke',
        target: undefined,
        ke: options.ke === undefined ? undefined : formatHostPort(options.ke),
        threads: keResults.length,
        socketsPerThread: 0,
        offeredRatePerS: null,
        window: options.concurrency,
        pacing: null,
        measuredS,
        sentTotal: succeeded + failedCount,
        sent: succeeded + failedCount,
        received: succeeded,
        repliesTotal: succeededTotal,
        lost: 0,
        lossPercent: 0,
        unmatched: 0,
        invalid: failedCount,
        invalidByReason: failures,
        verified: succeeded,
        sendErrors: 0,
        ratePerS: measuredS > 0 ? succeeded / measuredS : 0,
        requestBytes: 0,
        maxReplyBytes: 0,
        delayUs: hist.quantiles(),
        offsetAbsUs: null,
        offsetMeanUs: null,
        residenceUs: null,
        timestamps: null,
        timestampsNote: null,
        stamps: null,
        probe: null,
        exchanges: null,
        session: null,
        keFailures: failures,
        firstKeFailure: firstFailure ?? null,
        generatorCpuS,
        generatorCpuUsPerReply: succeededTotal > 0 ? (generatorCpuS / succeededTotal) * 1e6 : Number.NaN,
        clock: clockInfo,
      };
    }

    const allUdp = results.filter((r): r is UdpWorkerResult => r.type === 'udp-result');
    const udpResults = allUdp.slice(0, options.threads);
    const probeResult = allUdp[options.threads];
    const delay = new UsHistogram();
    const offset = new UsHistogram();
    const residence = new UsHistogram();
    const stamps: Record<keyof StampCounts, number> = { samples: 0, stale: 0, late: 0, noRxStamp: 0, noTxStamp: 0, txStampOutsideSend: 0, txStampUnmatched: 0, rebuilt: 0 };
    const invalidByReason: Record<string, number> = {};
    let sentTotal = 0;
    let sent = 0;
    let received = 0;
    let repliesTotal = 0;
    let lost = 0;
    let unmatched = 0;
    let verified = 0;
    let sendErrors = 0;
    let measuredS = 0;
    let offsetSumUs = 0;
    let maxReplyBytes = 0;
    let requestBytes = 0;
    for (const r of udpResults) {
      delay.merge(r.delay);
      offset.merge(r.offset);
      residence.merge(r.residence);
      for (const k of Object.keys(stamps) as (keyof StampCounts)[]) stamps[k] += r.stamps[k];
      for (const [k, v] of Object.entries(r.invalid)) invalidByReason[k] = (invalidByReason[k] ?? 0) + v;
      sentTotal += r.sentTotal;
      sent += r.sent;
      received += r.received;
      repliesTotal += r.repliesTotal;
      lost += r.lost;
      unmatched += r.unmatched;
      verified += r.verified;
      sendErrors += r.sendErrors;
      measuredS = Math.max(measuredS, r.measuredS);
      offsetSumUs += r.offsetSumUs;
      maxReplyBytes = Math.max(maxReplyBytes, r.maxReplyBytes);
      requestBytes = Math.max(requestBytes, r.requestBytes);
    }
    const invalid = Object.values(invalidByReason).reduce((a, b) => a + b, 0);
    const hasOffset = options.mode !== 'echo';
    return {
      mode: options.mode,
      target: formatHostPort(target ?? { host: '?', port: 0 }),
      ke: options.ke === undefined || options.mode !== 'nts' ? undefined : formatHostPort(options.ke),
      threads: udpResults.length,
      socketsPerThread: options.socketsPerThread,
      offeredRatePerS: options.ratePerS ?? null,
      window: options.ratePerS === undefined ? options.window : null,
      pacing: options.ratePerS === undefined ? null : options.pacing,
      measuredS,
      sentTotal,
      sent,
      received,
      repliesTotal,
      lost,
      lossPercent: sent > 0 ? (lost / sent) * 100 : 0,
      unmatched,
      invalid,
      invalidByReason,
      verified,
      sendErrors,
      ratePerS: measuredS > 0 ? received / measuredS : 0,
      requestBytes,
      maxReplyBytes,
      delayUs: delay.count > 0 ? delay.quantiles() : emptyQuantiles(),
      offsetAbsUs: hasOffset ? offset.quantiles() : null,
      offsetMeanUs: hasOffset && offset.count > 0 ? offsetSumUs / offset.count : null,
      residenceUs: hasOffset ? residence.quantiles() : null,
      timestamps: stampChoice.kernel ? 'kernel' : 'user-space',
      timestampsNote: stampChoice.note,
      stamps,
      probe: probeResult === undefined ? null : probeReport(probeResult),
      exchanges: options.client === undefined ? null : exchangeReport(options, udpResults),
      session: sessionInfo,
      keFailures: null,
      firstKeFailure: null,
      generatorCpuS,
      generatorCpuUsPerReply: repliesTotal > 0 ? (generatorCpuS / repliesTotal) * 1e6 : Number.NaN,
      clock: clockInfo,
    };
  } finally {
    await Promise.all(threads.map((t) => t.worker.terminate().catch(() => undefined)));
    await calibrator.stop();
    if (echo !== undefined) await echo.stop();
  }
}
