/**
 * Entry point of an NTS-KE thread (loaded by nts-ke/server.ts with `workerData.role === 'ke'`). It sets
 * the thread's nice value, builds the TLS context, holds the keyset snapshot, runs a KeListener, batches
 * metric tallies to the main thread and answers its messages (keyset, certificate reload, new limiter
 * table, stop). It never logs per connection; its rare error reports go to main as messages.
 *
 * Isolation (RFC 8915 §8.3: a KE flood should not hurt clients that already have cookies): on Linux the
 * thread raises its own nice value (`threadNiceness`, default 10) so that, when the CPUs are busy, the
 * threads that receive, timestamp and answer NTP packets win over handshakes.
 *
 * Per-handshake cost (profiled under a KE flood, see bench/README.md): most of it is OpenSSL (X25519,
 * ECDSA P-256 signature, key schedule), TCP set-up/teardown in the kernel and Node's socket/stream
 * objects. What this thread trims: stateful (tiny) TLS session tickets instead of encrypted ones, a
 * SHA-256 cipher suite when the client allows it, one randomFillSync per ~30 sessions instead of one per
 * cookie, and no copy of a request that arrives in one TLS record (nts-ke/session.ts).
 *
 * With a request handler (`workerData.handler`, the `[pool-ke]` front end) the thread import()s it before
 * it listens and holds no keyset; the handler's samples ride along in the stats reports.
 */
import { constants as cryptoConstants, randomFillSync } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import type * as tls from 'node:tls';
import { isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { FillRandom } from '../core/bytes.js';
import { KE_HANDLER_FACTORY_EXPORT, type KeHandlerFactory, type KeHandlerSpec, type KeLogLevel, type KeRequestHandler } from '../core/ke-request-handler.js';
import { parseCidr, type CidrPrefix } from '../core/cidr.js';
import { AccessList } from '../core/access-list.js';
import type { AccessConfig } from '../config/schema.js';
import { ClientLog } from '../core/client-log.js';
import { ConcurrencyLimiter } from '../core/concurrency.js';
import { RateLimiter } from '../core/limiter.js';
import { decodeKeyset, retireMasterKeys, type Keyset } from '../core/nts/keyset.js';
import { createPooledFillRandom } from '../core/responder.js';
import { installInheritedAeadBackend } from '../runtime/aead-openssl.js';
import { CertificateSelector, type KeCertificatePem } from './certificates.js';
import { KeListener, ListenFailure } from './listener.js';
import {
  errorText,
  hasType,
  KE_WORKER_ROLE,
  keepAliveSlots,
  newKeTallies,
  type FromKeThread,
  type KeWorkerInit,
  type ToKeThread,
} from './messages.js';

/** What `lowerThreadPriority` did, for one debug line. */
export type ThreadPriorityResult =
  | { readonly ok: true; readonly tid: number; readonly niceness: number; readonly previous: number }
  | { readonly ok: false; readonly reason: string };

/**
 * Raises the nice value of the calling thread to `niceness` (Linux only: the thread finds its own TID
 * through /proc/thread-self; elsewhere the nice value is per process and nothing is done). Never lowers a
 * nice value, so a daemon started with `nice -n 15` keeps its KE thread at 15. Best effort: every failure is
 * returned, not thrown.
 */
export function lowerThreadPriority(niceness: number): ThreadPriorityResult {
  if (process.platform !== 'linux') return { ok: false, reason: `per-thread nice values are Linux-only (${process.platform})` };
  if (!Number.isInteger(niceness) || niceness < 0 || niceness > 19) return { ok: false, reason: `niceness out of range: ${niceness}` };
  try {
    const link = readlinkSync('/proc/thread-self'); // "PID/task/TID"
    const tid = Number(link.slice(link.lastIndexOf('/') + 1));
    if (!Number.isInteger(tid) || tid <= 0) return { ok: false, reason: `unexpected /proc/thread-self target "${link}"` };
    const previous = getPriority(tid);
    if (previous >= niceness) return { ok: true, tid, niceness: previous, previous };
    setPriority(tid, niceness);
    return { ok: true, tid, niceness: getPriority(tid), previous };
  } catch (error: unknown) {
    return { ok: false, reason: errorText(error) };
  }
}

/** Most durations kept per stats interval (memory bound under a connection flood). */
const MAX_DURATIONS_PER_REPORT = 65_536;
/** Most log lines per stats interval; the rest are summarised. */
const MAX_LOGS_PER_REPORT = 20;
/** TLS 1.3 cipher suites in the server's order of preference (see secureContextOptions). */
const KE_TLS13_CIPHER_SUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';
/** Octets of randomness fetched per randomFillSync call for cookie nonces (one call per ~30 sessions). */
const RANDOM_POOL_BYTES = 4096;

/** Options of a context holding `pairs` (at most one per key type: nts-ke/certificates.ts). */
function secureContextOptions(pairs: readonly KeCertificatePem[]): tls.SecureContextOptions {
  return {
    cert: pairs.map((p) => p.chainPem),
    key: pairs.map((p) => p.keyPem),
    // RFC 8915 §3: TLS 1.3 or newer only. Every context we build carries this, reloads included.
    minVersion: 'TLSv1.3',
    // A TLS 1.3 server sends two NewSessionTicket messages after every handshake, and Node offers no
    // way to send none (SSL_CTX_set_num_tickets). NTS clients never resume (RFC 8915 §4: one request per
    // connection; the cookies are what they keep). With SSL_OP_NO_TICKET, OpenSSL 3 sends "stateful"
    // tickets: a bare session ID instead of the whole session serialized, encrypted and MACed. Node's
    // session cache mode stores nothing (SSL_SESS_CACHE_NO_INTERNAL), so such a ticket can never resume
    // and costs no memory. Measured: ~350 fewer octets and ~5 % less KE-thread CPU per handshake.
    //
    // Cipher suite: our order, AES-128-GCM-SHA256 first. Its key schedule runs on SHA-256 (SHA-NI on
    // current x86 and ARM) instead of SHA-384: ~4 % less KE-thread CPU. Every TLS 1.3 client implements
    // it (RFC 8446 §9.1), X25519/P-256 already cap the channel at 128-bit security, and the exported NTS
    // keys keep the AEAD's full length (RFC 8915 §5.1). A client that lists ChaCha20 first keeps it
    // (SSL_OP_PRIORITIZE_CHACHA: it likely lacks AES hardware).
    ciphers: KE_TLS13_CIPHER_SUITES,
    secureOptions:
      cryptoConstants.SSL_OP_NO_TICKET | cryptoConstants.SSL_OP_CIPHER_SERVER_PREFERENCE | cryptoConstants.SSL_OP_PRIORITIZE_CHACHA,
  };
}

/** Loads a handler module's factory; throws when the module has none. */
async function loadHandlerFactory(spec: KeHandlerSpec): Promise<KeHandlerFactory> {
  const factory = ((await import(spec.module)) as Record<string, unknown>)[KE_HANDLER_FACTORY_EXPORT];
  if (typeof factory !== 'function') throw new Error(`${spec.module} has no ${KE_HANDLER_FACTORY_EXPORT} export`);
  return factory as KeHandlerFactory;
}

async function runKeThread(init: KeWorkerInit, port: MessagePort): Promise<void> {
  installInheritedAeadBackend(); // before the keyset is decoded: cookies are sealed with the installed AEAD
  const post = (message: FromKeThread): void => port.postMessage(message);

  let logsThisReport = 0;
  let logsSuppressed = 0;
  const log = (level: KeLogLevel, msg: string, fields: Readonly<Record<string, string | number>> = {}): void => {
    if (logsThisReport >= MAX_LOGS_PER_REPORT) {
      logsSuppressed++;
      return;
    }
    logsThisReport++;
    post({ type: 'log', level, msg, fields });
  };

  if (init.threadNiceness > 0) {
    const priority = lowerThreadPriority(init.threadNiceness);
    if (priority.ok) log('debug', 'NTS-KE thread nice value set', { tid: priority.tid, niceness: priority.niceness, previous: priority.previous });
    else log('debug', 'NTS-KE thread nice value left unchanged', { reason: priority.reason });
  }

  // Cookie nonces (8 per session) come from a pool refilled 4 KiB at a time: one randomFillSync call per
  // ~30 sessions instead of 8 per session. Nonces are public; every pooled octet is handed out once.
  const fillRandom: FillRandom = createPooledFillRandom((target) => {
    randomFillSync(target);
  }, RANDOM_POOL_BYTES);
  let certificates = init.certificates.map((p) => ({ chainPem: p.chainPem, keyPem: p.keyPem }));
  let selector = new CertificateSelector(certificates, secureContextOptions);

  let keyset: Keyset | undefined;
  if (init.keysetBytes !== undefined) {
    const decoded = decodeKeyset(init.keysetBytes);
    init.keysetBytes.fill(0);
    if (decoded.ok) keyset = decoded.keyset;
    else log('error', 'initial keyset snapshot did not decode', { error: decoded.error });
  }
  // A failure here is reported as startError by the entry's catch below.
  const spec = init.handler;
  const handler: KeRequestHandler | undefined = spec === undefined ? undefined : (await loadHandlerFactory(spec))(spec.options, { threadIndex: init.threadIndex, log });

  let limiter = RateLimiter.attach(init.rateLimitTable);
  let concurrency = ConcurrencyLimiter.attach(init.concurrencyTable);
  const compile = (config: AccessConfig): AccessList | undefined => {
    const compiled = AccessList.compile(config.entries, config.defaultAction);
    if (compiled.ok) return compiled.list;
    log('error', 'access list does not compile; keeping the previous one', { problem: compiled.error });
    return undefined;
  };
  let accessList = compile(init.accessList) ?? compileEmpty();
  let tallies = newKeTallies();
  let stopping = false;
  let lastReportedActive = -1;

  const listener: KeListener = new KeListener({
    concurrency: () => concurrency,
    reusePort: init.reusePort,
    listenFds: init.listenFds,
    limiter: () => limiter,
    accessList: () => accessList,
    tallies: () => tallies,
    clientLog: init.clientLog === undefined ? undefined : ClientLog.attach(init.clientLog),
    session: {
      keyExchangeTimeoutMs: init.keyExchangeTimeoutMs,
      maxRequestBytes: init.maxRequestBytes,
      policy: init.policy,
      fillRandom,
      secureContext: () => selector.defaultContext,
      keyset: () => keyset,
      log,
      handler,
      keepAlive: init.keepAlive === undefined ? undefined : keepAliveSlots(init.keepAlive),
      poolAnswered: (kind, outcome, extraCookies) => {
        const key = `${kind}/${outcome}`;
        tallies.poolRequests[key] = (tallies.poolRequests[key] ?? 0) + 1;
        tallies.cookiesIssued += extraCookies;
      },
      negotiated: (aeadId) => {
        tallies.aeads[aeadId] = (tallies.aeads[aeadId] ?? 0) + 1;
      },
      settled: (outcome, durationS, cookiesIssued, detail) => {
        handler?.settled(outcome, detail);
        tallies.sessions[outcome]++;
        tallies.cookiesIssued += cookiesIssued;
        if (tallies.sessionDurationsS.length < MAX_DURATIONS_PER_REPORT) tallies.sessionDurationsS.push(durationS);
      },
    },
    sessionClosed: () => maybeFinishStop(),
    chooseSecureContext: () => {
      const current = selector;
      return current.needsServerName ? (serverName) => current.contextFor(serverName) : undefined;
    },
    proxyTrustedSources: init.proxyTrustedSources?.map((text) => parseCidr(text)).filter((p): p is CidrPrefix => p !== undefined),
    proxyHeaderDeadlineMs: init.keyExchangeTimeoutMs,
  });

  const flushStats = (): void => {
    const t = tallies;
    // The gauge is the listener's, over all its threads: the shared count, whichever thread reports it.
    const active = concurrency.open;
    const handlerReport = handler?.takeReport();
    const quiet =
      handlerReport === undefined &&
      t.accepted === 0 &&
      t.cookiesIssued === 0 &&
      t.sessionDurationsS.length === 0 &&
      Object.keys(t.proxyConnections).length === 0 &&
      Object.keys(t.aeads).length === 0 &&
      Object.keys(t.poolRequests).length === 0 &&
      Object.values(t.rejected).every((n) => n === 0) &&
      active === lastReportedActive;
    if (logsSuppressed > 0) {
      post({ type: 'log', level: 'warn', msg: 'NTS-KE thread suppressed log lines', fields: { suppressed: logsSuppressed } });
      logsSuppressed = 0;
    }
    logsThisReport = 0;
    if (quiet) return;
    tallies = newKeTallies();
    lastReportedActive = active;
    post({ type: 'stats', stats: { ...t, activeConnections: active, thread: init.threadIndex, handlerReport } });
  };
  const statsTimer = setInterval(flushStats, init.statsIntervalMs);

  function maybeFinishStop(): void {
    if (!stopping || listener.activeConnections > 0) return;
    clearInterval(statsTimer);
    handler?.close();
    flushStats();
    post({ type: 'stopped' });
  }

  port.on('message', (message: unknown) => {
    if (!hasType<ToKeThread>(message)) return;
    switch (message.type) {
      case 'keyset': {
        const next = decodeKeyset(message.bytes);
        message.bytes.fill(0);
        if (!next.ok) {
          log('error', 'keyset snapshot did not decode; keeping the previous one', { error: next.error });
          return;
        }
        const previous = keyset;
        keyset = next.keyset;
        if (previous !== undefined) retireMasterKeys(previous, keyset); // key bytes and OpenSSL contexts, at once
        return;
      }
      case 'reloadCertificate': {
        try {
          if (!(message.index >= 0 && message.index < certificates.length)) throw new RangeError(`no certificate pair ${message.index}`);
          const next = certificates.map((p, i) => (i === message.index ? { chainPem: message.chainPem, keyPem: message.keyPem } : p));
          selector = new CertificateSelector(next, secureContextOptions);
          certificates = next;
          post({ type: 'reloaded', requestId: message.requestId, ok: true, error: '' });
        } catch (error: unknown) {
          post({ type: 'reloaded', requestId: message.requestId, ok: false, error: errorText(error) });
        }
        return;
      }
      case 'concurrencyTable':
        concurrency = ConcurrencyLimiter.attach(message.table);
        listener.recount(concurrency);
        return;
      case 'accessList':
        accessList = compile(message.config) ?? accessList;
        return;
      case 'rateLimitTable':
        limiter = RateLimiter.attach(message.table);
        return;
      case 'stop':
        stopping = true;
        listener.close();
        maybeFinishStop();
        return;
    }
  });

  void listener.listen(init.listen).then(
    (addresses) => post({ type: 'ready', addresses }),
    (failure: unknown) => {
      clearInterval(statsTimer);
      handler?.close();
      const f = failure instanceof ListenFailure ? failure : new ListenFailure('?', 0, failure);
      const cause = f.error;
      const code = typeof cause === 'object' && cause !== null && 'code' in cause ? String(cause.code) : 'UNKNOWN';
      post({ type: 'listenError', host: f.host, port: f.port, code, message: errorText(cause) });
    },
  );
}

/** The list that allows everyone. */
function compileEmpty(): AccessList {
  const compiled = AccessList.compile([], 'allow');
  if (!compiled.ok) throw new Error('an empty access list must compile');
  return compiled.list;
}

function isKeWorkerInit(value: unknown): value is KeWorkerInit {
  return typeof value === 'object' && value !== null && (value as { role?: unknown }).role === KE_WORKER_ROLE;
}

if (!isMainThread && parentPort !== null && isKeWorkerInit(workerData)) {
  const port = parentPort;
  runKeThread(workerData, port).catch((error: unknown) => port.postMessage({ type: 'startError', message: errorText(error) } satisfies FromKeThread));
}
