#!/usr/bin/env node
/**
 * ntsd's loopback load generator (see bench/load/README.md):
 *   node dist/bench/load/main.js --mode nts --ke 127.0.0.1:4460 --ca ca.pem [--rate N | --closed-loop] ...
 * Bounded in time and count; prints a summary, or one JSON object with --json.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { runLoad } from './run.js';
import {
  CLIENTS_PER_ADDRESS,
  ClientMode,
  DEFAULT_LOAD_OPTIONS,
  LoadMode,
  Pacing,
  Timestamps,
  type ClientModeValue,
  type HostPort,
  type LoadModeValue,
  type LoadOptions,
  type LoadReport,
  type PacingValue,
  type TimestampsValue,
} from './protocol.js';

const USAGE = `usage: node dist/bench/load/main.js --mode nts|plain|ke|echo [options]

  --mode M             nts (default), plain, ke or echo
  --target HOST:PORT   NTP server (plain: required; nts: default from the KE port/server records)
  --ke HOST:PORT       NTS-KE server (nts, ke)
  --ca FILE            PEM CA certificate that signed the KE server certificate (nts, ke)
  --servername NAME    name to verify in the KE certificate (default: the KE host)
  --aead ID[,ID]       AEAD ids to offer (default: all implemented)
  --rate N             fixed offered rate, requests/s over all threads
  --closed-loop        keep --window requests outstanding per socket (default when --rate is absent)
  --window W           closed loop: outstanding requests per socket (default ${DEFAULT_LOAD_OPTIONS.window})
  --pacing tick|spin   fixed rate: 1 ms bursts (default, low CPU) or per-packet (smooth, burns a core)
  --duration-s S       stop sending after S seconds (default ${DEFAULT_LOAD_OPTIONS.durationS})
  --max-requests M     stop sending after M requests (default ${DEFAULT_LOAD_OPTIONS.maxRequests})
  --warmup-s W         send but do not count the first W seconds (default 0)
  --threads T          sender threads (default ${DEFAULT_LOAD_OPTIONS.threads})
  --sockets N          UDP sockets per thread (default ${DEFAULT_LOAD_OPTIONS.socketsPerThread})
  --concurrency C      ke: concurrent sessions (default ${DEFAULT_LOAD_OPTIONS.concurrency})
  --verify-every K     nts/plain: fully verify 1 reply in K (default ${DEFAULT_LOAD_OPTIONS.verifyEvery}; the first 32 always)
  --timeout-ms MS      a request unanswered this long is lost (default ${DEFAULT_LOAD_OPTIONS.timeoutMs})
  --pool N             precomputed requests per thread (default ${DEFAULT_LOAD_OPTIONS.poolSize})
  --placeholders P     nts: cookie placeholders per request (default 0)
  --probe-rate N       nts/plain: also run an idle probe thread at N req/s (≤ 1000) and report its
                       delay and |offset| apart: the server's timestamping error under the load
  --timestamps T       auto (default: kernel stamps when the native addon loads), kernel (or fail), user
  --tick-us U          kernel-stamped sender: longest idle sleep between socket polls (default ${DEFAULT_LOAD_OPTIONS.tickUs})
  --interleaved        plain: RFC 9769 interleaved client exchanges (same as --client interleaved)
  --client basic|interleaved
                       plain: the client-exchange sender: each socket bound to its own loopback source
                       address (127.0.0.2, .3, …) carries --window (default and most ${CLIENTS_PER_ADDRESS}) clients, each with
                       one request outstanding; interleaved requests carry the previous exchange's
                       timestamps, basic ones do not (needs kernel timestamps; no NTS, no probe)
  --json               print one JSON object (the LoadReport) instead of text
`;

class UsageError extends Error {}

/** Parses "HOST:PORT" or "[v6]:PORT". */
export function parseHostPort(text: string, what: string): HostPort {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  const host = m?.[1];
  const port = Number(m?.[2]);
  if (host === undefined || !Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`${what}: expected HOST:PORT, got "${text}"`);
  return { host, port };
}

function positive(text: string | undefined, what: string, fallback: number, allowZero = false): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new UsageError(`${what}: expected a positive number, got "${text}"`);
  return n;
}

function integer(text: string | undefined, what: string, fallback: number, min = 1): number {
  const n = positive(text, what, fallback, min === 0);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${what}: expected an integer ≥ ${min}, got "${String(text)}"`);
  return n;
}

function isMode(value: string): value is LoadModeValue {
  return Object.values(LoadMode).some((m) => m === value);
}

function isTimestamps(value: string): value is TimestampsValue {
  return Object.values(Timestamps).some((t) => t === value);
}

function isPacing(value: string): value is PacingValue {
  return Object.values(Pacing).some((p) => p === value);
}

/** Parses the command line into LoadOptions plus the --json flag. Throws UsageError with a message. */
export function parseLoadArgs(argv: readonly string[]): { options: LoadOptions; json: boolean } {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      mode: { type: 'string' },
      target: { type: 'string' },
      ke: { type: 'string' },
      ca: { type: 'string' },
      servername: { type: 'string' },
      aead: { type: 'string' },
      rate: { type: 'string' },
      'closed-loop': { type: 'boolean' },
      window: { type: 'string' },
      pacing: { type: 'string' },
      'duration-s': { type: 'string' },
      'max-requests': { type: 'string' },
      'warmup-s': { type: 'string' },
      threads: { type: 'string' },
      sockets: { type: 'string' },
      concurrency: { type: 'string' },
      'verify-every': { type: 'string' },
      'timeout-ms': { type: 'string' },
      pool: { type: 'string' },
      placeholders: { type: 'string' },
      'probe-rate': { type: 'string' },
      timestamps: { type: 'string' },
      'tick-us': { type: 'string' },
      interleaved: { type: 'boolean' },
      client: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help === true) throw new UsageError('');
  const d = DEFAULT_LOAD_OPTIONS;
  const mode = values.mode ?? d.mode;
  if (!isMode(mode)) throw new UsageError(`--mode: expected nts, plain, ke or echo, got "${mode}"`);
  const pacing = values.pacing ?? d.pacing;
  if (!isPacing(pacing)) throw new UsageError(`--pacing: expected tick or spin, got "${pacing}"`);
  if (values.rate !== undefined && values['closed-loop'] === true) throw new UsageError('--rate and --closed-loop exclude each other');
  const target = values.target === undefined ? undefined : parseHostPort(values.target, '--target');
  const ke = values.ke === undefined ? undefined : parseHostPort(values.ke, '--ke');
  for (const hp of [target, ke]) {
    if (hp !== undefined && isIP(hp.host) !== 0 && !/^(127\.|::1$)/.test(hp.host)) {
      process.stderr.write(`warning: ${hp.host} is not a loopback address; load-test only servers you run\n`);
    }
  }
  let caPem: string | undefined;
  if (values.ca !== undefined) {
    try {
      caPem = readFileSync(values.ca, 'utf8');
    } catch (err) {
      throw new UsageError(`--ca: cannot read ${values.ca}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  const aeadIds = values.aead?.split(',').map((s) => integer(s.trim(), '--aead', 0, 0));
  const timestamps = values.timestamps ?? d.timestamps;
  if (!isTimestamps(timestamps)) throw new UsageError(`--timestamps: expected auto, kernel or user, got "${timestamps}"`);
  const placeholders = integer(values.placeholders, '--placeholders', d.placeholders, 0);
  let client: ClientModeValue | undefined;
  if (values.client !== undefined) {
    const c = Object.values(ClientMode).find((m) => m === values.client);
    if (c === undefined) throw new UsageError(`--client: expected basic or interleaved, got "${values.client}"`);
    client = c;
  }
  if (values.interleaved === true) {
    if (client === 'basic') throw new UsageError('--interleaved and --client basic exclude each other');
    client = 'interleaved';
  }
  if (client !== undefined) {
    if (mode !== 'plain') throw new UsageError(`--client/--interleaved: plain NTP only (--mode plain); NTS requests would have to be sealed at send time`);
    if (values['probe-rate'] !== undefined) throw new UsageError('--client/--interleaved: no --probe-rate');
    if (timestamps === 'user') throw new UsageError('--client/--interleaved: needs kernel timestamps');
  }
  const window = integer(values.window, '--window', client === undefined ? d.window : CLIENTS_PER_ADDRESS);
  if (client !== undefined && window > CLIENTS_PER_ADDRESS) throw new UsageError(`--window: at most ${CLIENTS_PER_ADDRESS} clients per socket with --client/--interleaved`);
  if (placeholders > 7) throw new UsageError('--placeholders: at most 7 (RFC 8915 §5.7)');
  const options: LoadOptions = {
    mode,
    target,
    ke,
    caPem,
    servername: values.servername,
    aeadIds,
    ratePerS: values.rate === undefined ? undefined : positive(values.rate, '--rate', 0),
    window,
    durationS: positive(values['duration-s'], '--duration-s', d.durationS),
    maxRequests: integer(values['max-requests'], '--max-requests', d.maxRequests),
    warmupS: positive(values['warmup-s'], '--warmup-s', d.warmupS, true),
    threads: integer(values.threads, '--threads', d.threads),
    socketsPerThread: integer(values.sockets, '--sockets', d.socketsPerThread),
    concurrency: integer(values.concurrency, '--concurrency', d.concurrency),
    verifyEvery: integer(values['verify-every'], '--verify-every', d.verifyEvery),
    timeoutMs: integer(values['timeout-ms'], '--timeout-ms', d.timeoutMs),
    pacing,
    poolSize: integer(values.pool, '--pool', d.poolSize),
    placeholders,
    probeRatePerS: positive(values['probe-rate'], '--probe-rate', d.probeRatePerS, true),
    timestamps,
    tickUs: integer(values['tick-us'], '--tick-us', d.tickUs),
    client,
  };
  if (options.warmupS >= options.durationS) throw new UsageError('--warmup-s must be shorter than --duration-s');
  return { options, json: values.json === true };
}

function us(v: number): string {
  if (!Number.isFinite(v)) return '-';
  return v >= 1000 ? `${(v / 1000).toFixed(2)} ms` : `${v.toFixed(1)} µs`;
}

/** Renders a report as a few human-readable lines. */
export function formatReport(r: LoadReport): string {
  const lines: string[] = [];
  const how = r.mode === 'ke' ? `${r.window ?? 0} concurrent sessions` : r.offeredRatePerS === null ? `closed loop, window ${r.window ?? 0}/socket` : `offered ${Math.round(r.offeredRatePerS)}/s (${r.pacing ?? ''} pacing)`;
  lines.push(`mode ${r.mode}: ${r.mode === 'ke' ? (r.ke ?? '') : (r.target ?? '')}, ${r.threads} thread(s), ${how}, measured ${r.measuredS.toFixed(2)} s`);
  if (r.session !== null) lines.push(`NTS-KE: AEAD ${r.session.aeadId}, ${r.session.cookies} cookies of ${r.session.cookieBytes} octets, NTP at ${r.session.ntp}, ${r.session.keMs.toFixed(1)} ms`);
  if (r.mode === 'ke') {
    lines.push(`sessions: ${r.received} ok, ${r.invalid} failed ${JSON.stringify(r.invalidByReason)} → ${r.ratePerS.toFixed(0)} KE/s`);
    if (r.firstKeFailure !== null) lines.push(`first failure: ${r.firstKeFailure}`);
    lines.push(`session time: p50 ${us(r.delayUs.p50)}, p99 ${us(r.delayUs.p99)}, max ${us(r.delayUs.max)}`);
  } else {
    lines.push(`sent ${r.sent} (+${r.sentTotal - r.sent} warm-up), valid replies ${r.received} → ${r.ratePerS.toFixed(0)} req/s`);
    lines.push(
      `lost ${r.lost} (${r.lossPercent.toFixed(3)} %), invalid ${r.invalid}${r.invalid > 0 ? ` ${JSON.stringify(r.invalidByReason)}` : ''}, unmatched ${r.unmatched}, fully verified ${r.verified}, send errors ${r.sendErrors}`,
    );
    lines.push(`request ${r.requestBytes} octets, largest reply ${r.maxReplyBytes} octets`);
    lines.push(`delay: p50 ${us(r.delayUs.p50)}, p99 ${us(r.delayUs.p99)}, p99.9 ${us(r.delayUs.p999)}, max ${us(r.delayUs.max)}`);
    if (r.offsetAbsUs !== null) {
      lines.push(
        `|offset|: p50 ${us(r.offsetAbsUs.p50)}, p99 ${us(r.offsetAbsUs.p99)}, p99.9 ${us(r.offsetAbsUs.p999)}, max ${us(r.offsetAbsUs.max)} (mean signed ${us(r.offsetMeanUs ?? Number.NaN)})`,
      );
    }
    if (r.residenceUs !== null) lines.push(`server residence T3 − T2: p50 ${us(r.residenceUs.p50)}, p99 ${us(r.residenceUs.p99)}, p99.9 ${us(r.residenceUs.p999)}`);
    lines.push(`timestamps: ${r.timestamps ?? '-'}${r.timestampsNote === null ? '' : ` (${r.timestampsNote})`}`);
    if (r.stamps !== null) {
      const st = r.stamps;
      lines.push(
        `samples ${st.samples}; rejected: stale ${st.stale}, late ${st.late}; no RX stamp ${st.noRxStamp}, no TX stamp ${st.noTxStamp}, TX stamp outside its send ${st.txStampOutsideSend}, unmatched TX stamps ${st.txStampUnmatched}; requests re-sealed ${st.rebuilt}`,
      );
    }
  }
  if (r.exchanges !== null) {
    const e = r.exchanges;
    lines.push(
      `client exchanges (${e.client}): ${e.clients} clients on ${e.sourceAddresses} source address(es); interleaved replies ${e.interleavedReplies}/${e.replies} (${(e.interleavedFraction * 100).toFixed(1)} %), ` +
        `requests in interleaved form ${e.askedInterleaved}; samples: ${e.interleavedSamples} interleaved, ${e.basicSamples} basic, ${e.interleavedWithoutSample} interleaved replies without one`,
    );
    if (e.interleavedOffsetAbsUs.count > 0) {
      const q = e.interleavedOffsetAbsUs;
      lines.push(`|offset| of interleaved samples: p50 ${us(q.p50)}, p99 ${us(q.p99)}, p99.9 ${us(q.p999)}, max ${us(q.max)}`);
    }
    if (e.basicOffsetAbsUs.count > 0) {
      const q = e.basicOffsetAbsUs;
      lines.push(`|offset| of basic samples: p50 ${us(q.p50)}, p99 ${us(q.p99)}, p99.9 ${us(q.p999)}, max ${us(q.max)}`);
    }
  }
  if (r.probe !== null) {
    const p = r.probe;
    lines.push(
      `probe (idle thread, ${p.ratePerS.toFixed(0)}/s, ${p.received}/${p.sent} valid, lost ${p.lost}, invalid ${p.invalid}): delay p50 ${us(p.delayUs.p50)}, p99 ${us(p.delayUs.p99)}; ` +
        `|offset| p50 ${us(p.offsetAbsUs.p50)}, p99 ${us(p.offsetAbsUs.p99)}, p99.9 ${us(p.offsetAbsUs.p999)} (mean signed ${us(p.offsetMeanUs ?? Number.NaN)})`,
    );
  }
  lines.push(`generator CPU ${r.generatorCpuS.toFixed(2)} s (${r.generatorCpuUsPerReply.toFixed(1)} µs per ${r.mode === 'ke' ? 'session' : 'reply'}); clock calibrations ${r.clock.calibrations}, ±${r.clock.uncertaintyUs.toFixed(2)} µs`);
  return lines.join('\n');
}

async function main(argv: readonly string[]): Promise<number> {
  let parsed: { options: LoadOptions; json: boolean };
  try {
    parsed = parseLoadArgs(argv);
  } catch (err) {
    if (err instanceof UsageError || (err instanceof Error && 'code' in err && typeof err.code === 'string' && err.code.startsWith('ERR_PARSE_ARGS'))) {
      if (err.message !== '') process.stderr.write(`${err.message}\n\n`);
      process.stderr.write(USAGE);
      return err.message === '' ? 0 : 64;
    }
    throw err;
  }
  try {
    const report = await runLoad(parsed.options);
    process.stdout.write(parsed.json ? `${JSON.stringify(report)}\n` : `${formatReport(report)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`load: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`load: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 70;
    },
  );
}
