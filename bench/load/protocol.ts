/**
 * Messages between the load generator's main thread and its worker threads, and the options and report
 * shapes shared by the CLI, the compare script and the smoke test.
 */
import type { HistogramSnapshot, QuantilesUs } from './histogram.js';

/** What the generator sends. */
export const LoadMode = {
  /** NTS-protected NTPv4 requests (RFC 8915 §5) after one NTS-KE. */
  nts: 'nts',
  /** Plain NTPv4 client requests (RFC 5905). */
  plain: 'plain',
  /** Full NTS-KE sessions (TLS 1.3 + request + response parse), N at a time. */
  ke: 'ke',
  /** Plain-sized packets to a trivial UDP echo server the tool starts itself: the generator's own ceiling. */
  echo: 'echo',
} as const;
/** One of LoadMode. */
export type LoadModeValue = (typeof LoadMode)[keyof typeof LoadMode];

/** How a fixed-rate sender spaces its packets. */
export const Pacing = {
  /** Wake every millisecond and send what is due (low CPU; packets leave in 1 ms bursts). */
  tick: 'tick',
  /** Poll the clock continuously and send each packet when due (smooth; burns the sender's core). */
  spin: 'spin',
} as const;
/** One of Pacing. */
export type PacingValue = (typeof Pacing)[keyof typeof Pacing];

/** Where the generator's t1 and t4 come from. */
export const Timestamps = {
  /** Kernel stamps when the native addon loads (nts and plain modes), else user space (the default). */
  auto: 'auto',
  /** Kernel stamps or fail: SO_TIMESTAMPING TX stamp of each request, RX stamp of each reply. */
  kernel: 'kernel',
  /** Clock reads in JavaScript around Node's dgram calls (measures the generator's own queueing too). */
  user: 'user',
} as const;
/** One of Timestamps. */
export type TimestampsValue = (typeof Timestamps)[keyof typeof Timestamps];

/** A host and port. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Everything one load run needs. */
export interface LoadOptions {
  readonly mode: LoadModeValue;
  /** NTP target (plain: required; nts: default from the KE Server/Port Negotiation records; echo: ignored). */
  readonly target: HostPort | undefined;
  /** NTS-KE server (nts and ke modes). */
  readonly ke: HostPort | undefined;
  /** PEM of the CA that signed the KE server's certificate. */
  readonly caPem: string | undefined;
  /** Name to verify in the KE certificate (default: the KE host). */
  readonly servername: string | undefined;
  /** AEAD ids to offer (default: every id the client implements). */
  readonly aeadIds: readonly number[] | undefined;
  /** Offered rate in requests per second over all threads; undefined = closed loop. */
  readonly ratePerS: number | undefined;
  /** Closed loop: requests outstanding per socket. */
  readonly window: number;
  /** Sending stops after this long (warm-up included). */
  readonly durationS: number;
  /** Sending stops after this many requests (warm-up included), over all threads. */
  readonly maxRequests: number;
  /** Leading part of the run whose requests are sent but not counted. */
  readonly warmupS: number;
  /** Sender threads. */
  readonly threads: number;
  /** UDP sockets per thread (each its own source port). */
  readonly socketsPerThread: number;
  /** KE mode: concurrent sessions over all threads. */
  readonly concurrency: number;
  /** NTS mode: fully verify one reply in this many (1 = every reply). */
  readonly verifyEvery: number;
  /** A request unanswered this long is lost (closed loop: replaced); also the drain time and the KE deadline. */
  readonly timeoutMs: number;
  readonly pacing: PacingValue;
  /** Precomputed requests per thread (reused round-robin when a run sends more). */
  readonly poolSize: number;
  /** NTS mode: Cookie Placeholders per request (RFC 8915 §5.5). */
  readonly placeholders: number;
  /**
   * nts/plain: rate of an extra, otherwise idle probe thread (0 = none). Its replies are measured apart
   * from the bulk load: an idle client reads each reply as soon as it arrives, so its |offset| shows the
   * server's timestamping error under load rather than the generator's own queueing.
   */
  readonly probeRatePerS: number;
  /** Where t1 and t4 come from. */
  readonly timestamps: TimestampsValue;
  /** Kernel-stamped sender: longest sleep between polls of its sockets, µs (fixed rate: also the burst spacing). */
  readonly tickUs: number;
  /**
   * plain mode only: the client-exchange sender (exchange-sender.ts) instead of the pooled one. Each socket
   * carries `window` (≤ 4) clients, each with one request outstanding and the previous exchange kept;
   * `interleaved` puts its timestamps into the next request (RFC 9769), `basic` sends origin and receive
   * zero (a client without xleave). undefined = the pooled sender.
   */
  readonly client: ClientModeValue | undefined;
}

/** Request forms of the client-exchange sender (LoadOptions.client). */
export const ClientMode = {
  /** Origin and receive zero: RFC 5905 basic client/server mode. */
  basic: 'basic',
  /** RFC 9769 interleaved: origin = the server's receive timestamp of the previous reply, receive = our T4 of it. */
  interleaved: 'interleaved',
} as const;
/** One of ClientMode. */
export type ClientModeValue = (typeof ClientMode)[keyof typeof ClientMode];

/** Clients one source address may hold with the client-exchange sender: ntsd keeps 4 interleave entries per address. */
export const CLIENTS_PER_ADDRESS = 4;

/** Defaults of LoadOptions (the CLI starts from these). */
export const DEFAULT_LOAD_OPTIONS: LoadOptions = {
  mode: 'nts',
  target: undefined,
  ke: undefined,
  caPem: undefined,
  servername: undefined,
  aeadIds: undefined,
  ratePerS: undefined,
  window: 64,
  durationS: 5,
  maxRequests: 50_000_000,
  warmupS: 0,
  threads: 1,
  socketsPerThread: 1,
  concurrency: 8,
  verifyEvery: 16,
  timeoutMs: 500,
  pacing: 'tick',
  poolSize: 32_768,
  placeholders: 0,
  probeRatePerS: 0,
  timestamps: 'auto',
  tickUs: 200,
  client: undefined,
};

/** Keys and cookies from the one NTS-KE of an nts run, handed to every sender thread. */
export interface NtsSession {
  readonly aeadId: number;
  readonly c2s: Uint8Array;
  readonly s2c: Uint8Array;
  readonly cookies: readonly Uint8Array[];
}

/** workerData of a UDP sender thread. */
export interface UdpWorkerData {
  readonly role: 'udp';
  readonly mode: 'nts' | 'plain' | 'echo';
  readonly index: number;
  readonly target: HostPort;
  readonly clockShared: SharedArrayBuffer;
  readonly session: NtsSession | undefined;
  /** This thread's share of the offered rate; undefined = closed loop. */
  readonly ratePerS: number | undefined;
  readonly window: number;
  readonly maxRequests: number;
  readonly socketsPerThread: number;
  readonly verifyEvery: number;
  readonly timeoutMs: number;
  readonly pacing: PacingValue;
  readonly poolSize: number;
  readonly placeholders: number;
  /** Kernel-stamped sender (the native addon's client mode) instead of Node's dgram. */
  readonly kernelStamps: boolean;
  /** Kernel-stamped sender: the target's IP literal (resolved by the main thread). */
  readonly targetAddress: string;
  readonly tickUs: number;
  /** The client-exchange sender's request form; undefined = the pooled sender. */
  readonly client: ClientModeValue | undefined;
  /** Client-exchange sender: the local address of each of this thread's sockets (IP literals; "" = any). */
  readonly sourceAddresses: readonly string[];
}

/** workerData of a KE thread. */
export interface KeWorkerData {
  readonly role: 'ke';
  readonly index: number;
  readonly ke: HostPort;
  readonly caPem: string;
  readonly servername: string | undefined;
  readonly aeadIds: readonly number[] | undefined;
  readonly lanes: number;
  readonly timeoutMs: number;
}

/** workerData of any generator thread. */
export type LoadWorkerData = UdpWorkerData | KeWorkerData;

/** Main → worker: start now; stop sending at `stopMonoS` (process monotonic seconds); count from `measureFromMonoS`. */
export interface GoMessage {
  readonly type: 'go';
  readonly measureFromMonoS: number;
  readonly stopMonoS: number;
}

/** Worker → main: precomputation finished (or failed). */
export type ReadyMessage = { readonly type: 'ready' } | { readonly type: 'failed'; readonly message: string };

/** Worker → main: counts of a UDP thread (all counts cover the measured part only, except `sentTotal`). */
export interface UdpWorkerResult {
  readonly type: 'udp-result';
  readonly sentTotal: number;
  readonly sent: number;
  readonly received: number;
  /** Replies matched to a request in the whole run (warm-up and invalid ones included). */
  readonly repliesTotal: number;
  /** Replies that matched no outstanding request (late after being declared lost, duplicates, foreign). */
  readonly unmatched: number;
  /** Requests declared lost (timed out, or still outstanding at the end of the drain). */
  readonly lost: number;
  readonly invalid: Readonly<Record<string, number>>;
  /** Replies that went through the full check (authenticator included in nts mode). */
  readonly verified: number;
  readonly sendErrors: number;
  /** Length of the measured sending window, seconds. */
  readonly measuredS: number;
  readonly requestBytes: number;
  readonly maxReplyBytes: number;
  readonly delay: HistogramSnapshot;
  readonly offset: HistogramSnapshot;
  /** Sum of signed offsets, µs (for the mean). */
  readonly offsetSumUs: number;
  /** Sender loop iterations (pacing diagnostics). */
  readonly loops: number;
  /** Server residence T3 − T2 of the measured valid replies, µs. */
  readonly residence: HistogramSnapshot;
  readonly stamps: StampCounts;
  /** The client-exchange sender's counts; undefined for the pooled sender. */
  readonly exchanges?: ExchangeCounts;
}

/** What the client-exchange sender counts (measured replies only). */
export interface ExchangeCounts {
  /** Valid measured replies. */
  readonly replies: number;
  /** Of those, replies in interleaved mode (origin = the receive field of our request). */
  readonly interleaved: number;
  /** Requests sent in interleaved form (origin and receive from the previous exchange), measured ones. */
  readonly askedInterleaved: number;
  /** Samples from basic replies (this exchange's T1..T4). */
  readonly basicSamples: number;
  /** Samples from interleaved replies (the previous exchange, with this reply's transmit as its T3). */
  readonly interleavedSamples: number;
  /** Interleaved replies that gave no sample: the previous exchange already gave a basic one (chrony's rule), or lacked a stamp. */
  readonly interleavedWithoutSample: number;
  /** |offset| of the interleaved samples alone, µs. */
  readonly interleavedOffset: HistogramSnapshot;
  /** |offset| of the basic samples alone, µs. */
  readonly basicOffset: HistogramSnapshot;
}

/** The client-exchange sender's figures in a report. */
export interface ExchangeReport {
  readonly client: ClientModeValue;
  /** Distinct source addresses the sockets were bound to. */
  readonly sourceAddresses: number;
  /** Clients (one exchange outstanding each) over all threads. */
  readonly clients: number;
  readonly replies: number;
  readonly interleavedReplies: number;
  /** interleavedReplies / replies (0 when there were none). */
  readonly interleavedFraction: number;
  readonly askedInterleaved: number;
  readonly basicSamples: number;
  readonly interleavedSamples: number;
  readonly interleavedWithoutSample: number;
  readonly interleavedOffsetAbsUs: QuantilesUs;
  readonly basicOffsetAbsUs: QuantilesUs;
}

/** How the timestamps and matches of a sender's replies went. */
export interface StampCounts {
  /** Valid measured replies that gave an offset sample. */
  readonly samples: number;
  /** Replies whose origin timestamp named an earlier generation of the request (a resend's old reply). */
  readonly stale: number;
  /** Replies to a request already declared lost (same generation, after the timeout). */
  readonly late: number;
  /** Valid replies without a kernel receive stamp (no sample). */
  readonly noRxStamp: number;
  /** Valid replies whose request had no transmit stamp (none came, or the send batch was ambiguous). */
  readonly noTxStamp: number;
  /** Transmit stamps outside the clock reads around their send call (rejected). */
  readonly txStampOutsideSend: number;
  /** Transmit stamps that named no request in flight (already answered, lost or unknown id). */
  readonly txStampUnmatched: number;
  /** Requests rebuilt with a new generation before a resend. */
  readonly rebuilt: number;
}

/** Worker → main: counts of a KE thread. */
export interface KeWorkerResult {
  readonly type: 'ke-result';
  readonly succeeded: number;
  /** Successful sessions in the whole run (warm-up included). */
  readonly succeededTotal: number;
  readonly failed: Readonly<Record<string, number>>;
  readonly measuredS: number;
  readonly duration: HistogramSnapshot;
  /** First failure message seen, for the report. */
  readonly firstFailure: string | undefined;
}

/** Worker → main. */
export type WorkerMessage = ReadyMessage | UdpWorkerResult | KeWorkerResult;

/** What the probe thread measured. */
export interface ProbeReport {
  readonly ratePerS: number;
  readonly sent: number;
  readonly received: number;
  readonly lost: number;
  readonly invalid: number;
  readonly delayUs: QuantilesUs;
  readonly offsetAbsUs: QuantilesUs;
  readonly offsetMeanUs: number | null;
  readonly residenceUs: QuantilesUs;
}

/** The outcome of one run: what the CLI prints and what compare reads (`--json`). */
export interface LoadReport {
  readonly mode: LoadModeValue;
  readonly target: string | undefined;
  readonly ke: string | undefined;
  readonly threads: number;
  readonly socketsPerThread: number;
  /** Offered rate, req/s; null for closed loop. */
  readonly offeredRatePerS: number | null;
  readonly window: number | null;
  readonly pacing: PacingValue | null;
  /** Measured sending window, seconds (warm-up excluded). */
  readonly measuredS: number;
  /** Requests sent in the whole run (warm-up included). */
  readonly sentTotal: number;
  readonly sent: number;
  readonly received: number;
  /** Replies (KE: successful sessions) in the whole run, warm-up included: divide by the server's CPU delta. */
  readonly repliesTotal: number;
  readonly lost: number;
  readonly lossPercent: number;
  readonly unmatched: number;
  readonly invalid: number;
  readonly invalidByReason: Readonly<Record<string, number>>;
  readonly verified: number;
  readonly sendErrors: number;
  /** Valid replies per second over the measured window (KE mode: successful sessions per second). */
  readonly ratePerS: number;
  readonly requestBytes: number;
  readonly maxReplyBytes: number;
  /** Client-observed round-trip delay (KE mode: whole-session duration), µs. */
  readonly delayUs: QuantilesUs;
  /** |offset| from RFC 5905 §8 (true offset on loopback is 0), µs; null in echo and KE modes. */
  readonly offsetAbsUs: QuantilesUs | null;
  /** Mean signed offset, µs. */
  readonly offsetMeanUs: number | null;
  /** Server residence T3 − T2 (receive to transmit timestamp), µs; null in echo and KE modes. */
  readonly residenceUs: QuantilesUs | null;
  /** "kernel": t1 is the TX stamp of that datagram and t4 the RX stamp of its reply; "user-space": clock reads in JavaScript. */
  readonly timestamps: 'kernel' | 'user-space' | null;
  /** Why user-space stamps were used (null with kernel stamps). */
  readonly timestampsNote: string | null;
  /** Match and stamp counts over all bulk threads (null in KE mode). */
  readonly stamps: StampCounts | null;
  /** The probe thread's own measurements (see LoadOptions.probeRatePerS); null without a probe. */
  readonly probe: ProbeReport | null;
  /** The client-exchange sender's figures (LoadOptions.client); null for the pooled sender. */
  readonly exchanges: ExchangeReport | null;
  /** The one NTS-KE of an nts run. */
  readonly session: { readonly aeadId: number; readonly cookies: number; readonly cookieBytes: number; readonly ntp: string; readonly keMs: number } | null;
  /** KE mode only. */
  readonly keFailures: Readonly<Record<string, number>> | null;
  readonly firstKeFailure: string | null;
  /** CPU seconds the generator process used during the run (all threads). */
  readonly generatorCpuS: number;
  /** generatorCpuS per reply in the whole run, µs: 1e6 over it is the most one generator core can drive. */
  readonly generatorCpuUsPerReply: number;
  /** Clock state: how many calibrations and their uncertainty, µs. */
  readonly clock: { readonly calibrations: number; readonly uncertaintyUs: number };
}
