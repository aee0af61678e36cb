/**
 * UDP listeners for NTP/NTS (RFC 5905, RFC 8915 §5): receive, timestamp, hand to the pool, send the reply
 * from the same socket to the same address and port.
 *
 * The receive timestamp is the first statement of the 'message' callback. Any datagram (0 to 65507 octets)
 * is submitted: the responder answers with a reply no longer than the request, or the pool counts a drop.
 * Socket errors are reported and counted, never thrown: nothing a peer sends can stop a listener.
 *
 * Several receiving sockets per address (SO_REUSEPORT, Node's dgram `reusePort`, added in Node 22.12) are
 * supported but optional: `probeReusePort()` feature-tests it by binding two sockets to one port instead
 * of sniffing the version. Choice made here: with `socketsPerListen` > 1 and reusePort available we bind
 * that many sockets per address (the kernel spreads clients across them by flow hash); without it (Node 20)
 * we fall back to one socket per address. All sockets live on the main thread today, where one socket
 * already suffices; the option keeps the door open for per-worker sockets later.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import type { WallClock, NtpTime } from '../runtime/clock.js';
import type { Pool } from './batch-pool.js';
import { NtsdError, NtsdErrorCode } from '../errors.js';
import { bindSocket, closeSocket, createDgramRefuser, literalLookup, type SocketOptionsWithReusePort } from './udp-socket.js';
import type { Admission } from '../core/admission.js';
import { OUTCOME_COUNT, type RefusalPolicy } from '../core/responder.js';

/** One address to listen on (the daemon maps `[[server]] listen` to it). */
export interface UdpListenOptions {
  /** IP literal, e.g. "0.0.0.0", "::", "127.0.0.1". */
  readonly host: string;
  /** Port; 0 = any free port (tests). */
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  /** Pool policy index for packets from this listener (the `[[server]]` index; default 0). */
  readonly policy?: number;
}

/** Where a reply goes: the receiving socket and the client's address. */
export interface ReplyTarget {
  readonly socket: Socket;
  readonly address: string;
  readonly port: number;
}

/** Options for {@link startUdpServer}. */
export interface UdpServerOptions {
  readonly listen: readonly UdpListenOptions[];
  /** The pool that answers; the server installs its reply callback. */
  readonly pool: Pool<ReplyTarget>;
  /** Clock for receive timestamps (the same clock the pool uses for transmit timestamps). */
  readonly clock: WallClock;
  /** Receiving sockets per address when reusePort is available (default 1). */
  readonly socketsPerListen?: number;
  /** SO_RCVBUF in octets (default: the OS default). */
  readonly receiveBufferBytes?: number;
  /** Socket errors and send failures, for the caller to log (at most debug level per packet). */
  readonly onError?: (error: unknown, where: 'socket' | 'send') => void;
  /** Receive-to-send duration of each reply, seconds (`ntsd_ntp_request_duration_seconds`). */
  readonly onReplySent?: (durationS: number) => void;
  /** `[[server]]` access lists and rate limits per policy index, checked before a request is queued. */
  readonly admissions?: () => readonly (Admission | undefined)[];
  /** Policy and precision of a KoD for a refused plain NTP request, per policy index. */
  readonly refusalPolicy?: (policyIndex: number) => RefusalPolicy;
}

/** A bound socket's local address. */
export interface BoundAddress {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
}

/** Counters of the UDP server. */
export interface UdpServerStats {
  /** Datagrams received (`ntsd_ntp_packets_received_total`). */
  readonly received: number;
  /** Replies handed to the kernel. */
  readonly sent: number;
  /** Send calls that failed. */
  readonly sendErrors: number;
  /** Socket 'error' events. */
  readonly socketErrors: number;
  /** Requests refused by admission (access list, rate limit) per responder Outcome value. */
  readonly refusedOutcomes: readonly number[];
}

/** Running UDP listeners. */
export interface UdpServer {
  /** Local addresses, one per socket, in listen order. */
  readonly addresses: readonly BoundAddress[];
  /** Whether several sockets per address were possible (reusePort feature test). */
  readonly reusePort: boolean;
  stats(): UdpServerStats;
  /** Closes every socket. The pool is left to its owner. */
  close(): Promise<void>;
}



/**
 * Feature test for dgram `reusePort`: binds two loopback sockets with it to one port. True when both bind
 * (Node ≥ 22.12 on Linux); false when the option is ignored (Node 20: the second bind fails) or refused.
 */
export async function probeReusePort(): Promise<boolean> {
  const opts: SocketOptionsWithReusePort = { type: 'udp4', reusePort: true };
  const a = createSocket(opts);
  const b = createSocket(opts);
  try {
    await bindSocket(a, 0, '127.0.0.1');
    await bindSocket(b, a.address().port, '127.0.0.1');
    return true;
  } catch {
    return false;
  } finally {
    await Promise.all([closeSocket(a), closeSocket(b)]);
  }
}

const TWO_POW_32 = 4_294_967_296;

/** Binds every listen address and starts answering. Throws NtsdError BIND_FAILED if any bind fails. */
export async function startUdpServer(options: UdpServerOptions): Promise<UdpServer> {
  const { pool, clock } = options;
  const onError = options.onError;
  const onReplySent = options.onReplySent;
  const wanted = Math.max(1, Math.floor(options.socketsPerListen ?? 1));
  const reusePort = wanted > 1 ? await probeReusePort() : false;
  const perListen = reusePort ? wanted : 1;

  let received = 0;
  let sent = 0;
  let sendErrors = 0;
  let socketErrors = 0;
  const refusedOutcomes = new Array<number>(OUTCOME_COUNT).fill(0);
  // Reused: the receive stamp is copied into the pool's batch at once; the send stamp is read at once.
  const receiveTime: NtpTime = { seconds: 0, fraction: 0 };
  const sendTime: NtpTime = { seconds: 0, fraction: 0 };

  // One shared send callback: no closure per packet.
  const onSent = (error: Error | null): void => {
    if (error !== null) {
      sendErrors++;
      onError?.(error, 'send');
    }
  };

  pool.onReply((reply, target, receiveSeconds, receiveFraction) => {
    try {
      target.socket.send(reply, target.port, target.address, onSent);
      sent++;
    } catch (error) {
      // The socket was closed while the reply was in the pool (shutdown), or a bad address.
      sendErrors++;
      onError?.(error, 'send');
      return;
    }
    if (onReplySent !== undefined) {
      clock.nowNtp(sendTime);
      // Era-safe difference: the seconds fields are compared modulo 2^32.
      const ds = (sendTime.seconds - receiveSeconds) | 0;
      onReplySent(ds + (sendTime.fraction - receiveFraction) / TWO_POW_32);
    }
  });

  const admissions = options.admissions;
  const refusalPolicy = options.refusalPolicy;
  const refuse =
    admissions === undefined || refusalPolicy === undefined
      ? undefined
      : createDgramRefuser({
          admissions,
          refusalPolicy,
          count: (outcome) => {
            refusedOutcomes[outcome] = (refusedOutcomes[outcome] ?? 0) + 1;
          },
          onKodSent: () => sent++,
          onSent,
        });

  const sockets: Socket[] = [];
  const addresses: BoundAddress[] = [];
  const v4Ports = new Set(options.listen.filter((l) => l.family === 'IPv4').map((l) => l.port));

  const open = async (listen: UdpListenOptions, port: number): Promise<Socket> => {
    const socketOptions: SocketOptionsWithReusePort = {
      type: listen.family === 'IPv6' ? 'udp6' : 'udp4',
      // A v6 wildcard next to a v4 listener on the same port must not claim the v4 side as well.
      ipv6Only: listen.family === 'IPv6' && v4Ports.has(listen.port),
      ...(options.receiveBufferBytes !== undefined ? { recvBufferSize: options.receiveBufferBytes } : {}),
      ...(reusePort ? { reusePort: true } : {}),
      lookup: literalLookup,
    };
    const socket = createSocket(socketOptions);
    const policy = listen.policy ?? 0;
    socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
      clock.nowNtp(receiveTime);
      received++;
      if (refuse?.(msg, rinfo, socket, policy, receiveTime) === true) return;
      pool.submit(msg, receiveTime, { socket, address: rinfo.address, port: rinfo.port }, policy);
    });
    try {
      await bindSocket(socket, port, listen.host);
    } catch (error) {
      await closeSocket(socket);
      const where = listen.family === 'IPv6' ? `[${listen.host}]:${port}` : `${listen.host}:${port}`;
      throw new NtsdError(NtsdErrorCode.BIND_FAILED, `cannot bind UDP ${where}`, { cause: error });
    }
    socket.on('error', (error: unknown) => {
      socketErrors++;
      onError?.(error, 'socket');
    });
    return socket;
  };

  try {
    for (const listen of options.listen) {
      const first = await open(listen, listen.port);
      sockets.push(first);
      // Further sockets share the port the first one got (matters when the configured port is 0).
      for (let i = 1; i < perListen; i++) sockets.push(await open(listen, first.address().port));
    }
  } catch (error) {
    await Promise.all(sockets.map(closeSocket));
    throw error;
  }
  for (const s of sockets) {
    const a = s.address();
    addresses.push({ address: a.address, port: a.port, family: a.family === 'IPv6' ? 'IPv6' : 'IPv4' });
  }

  return {
    addresses,
    reusePort,
    stats() {
      return { received, sent, sendErrors, socketErrors, refusedOutcomes: refusedOutcomes.slice() };
    },
    async close() {
      await Promise.all(sockets.map(closeSocket));
    },
  };
}
