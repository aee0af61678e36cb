/**
 * dgram helpers shared by the two UDP listeners (ntp/udp-server.ts on the main thread, ntp/socket-dgram.ts in
 * receiver threads). A module of its own because io files do not import each other.
 */
import type { RemoteInfo, Socket, SocketOptions } from 'node:dgram';
import { admit, type Admission } from '../core/admission.js';
import { parseIpAddress } from '../core/ip.js';
import type { NtpTimestamp } from '../core/ntp/timestamp.js';
import { Outcome, respondRefused, type OutcomeValue, type RefusalPolicy, type RefusedResult } from '../core/responder.js';
import { lookup as dnsLookup } from 'node:dns';
import { isIP } from 'node:net';

/** dgram options including `reusePort`, which @types/node 20 does not declare (Node ≥ 22.12 has it). */
export type SocketOptionsWithReusePort = SocketOptions & { reusePort?: boolean };

/**
 * dgram passes the destination of every send() through `lookup`, and the default (dns.lookup) answers
 * even an IP literal only on the next tick: every reply of a batch would leave after the whole batch was
 * handed over, each at the cost of a tick and a closure. Reply addresses come from the kernel and are
 * always literals, so they are answered at once and the datagram leaves inside send(); that keeps the
 * per-reply send time measurable for the transmit-timestamp compensation (ntp/batch-worker.ts). Anything else
 * (a configured host name) goes to dns.lookup.
 */
export function literalLookup(
  hostname: string,
  options: unknown,
  callback: (error: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  const literal = isIP(hostname);
  if (literal !== 0) {
    callback(null, hostname, literal);
    return;
  }
  const family = typeof options === 'number' ? options : typeof options === 'object' && options !== null ? (options as { family?: unknown }).family : undefined;
  dnsLookup(hostname, { family: family === 4 || family === 6 ? family : 0 }, callback);
}

/** Binds `socket` (exclusively: no cluster sharing); rejects with the bind error. */
export function bindSocket(socket: Socket, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: unknown): void => reject(error);
    socket.once('error', onError);
    socket.bind({ port, address: host, exclusive: true }, () => {
      socket.off('error', onError);
      resolve();
    });
  });
}

/** Closes `socket`, resolving also when it was already closed. */
export function closeSocket(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}

/** What a dgram listener needs to apply `[[server]]` admission checks. */
export interface DgramRefuserOptions {
  /** Current checks per policy index (replaced on SIGHUP). */
  readonly admissions: () => readonly (Admission | undefined)[];
  /** Policy and precision for a KoD, per policy index. */
  readonly refusalPolicy: (policyIndex: number) => RefusalPolicy;
  /** Counts one refused request by its outcome. */
  readonly count: (outcome: OutcomeValue) => void;
  /** Counts a KoD handed to the kernel. */
  readonly onKodSent: () => void;
  /** The listener's send callback (errors). */
  readonly onSent: (error: Error | null) => void;
}

/**
 * The admission step of both dgram listeners (ntp/udp-server.ts, ntp/socket-dgram.ts), before a request
 * is queued for respond(): the access list and rate limit (core/admission.ts), and for a refused plain
 * NTP client a KoD sent at once (core/responder.ts respondRefused). Returns true when the request was
 * refused (answered or dropped here, and counted).
 */
export function createDgramRefuser(options: DgramRefuserOptions): (msg: Uint8Array, rinfo: RemoteInfo, socket: Socket, policyIndex: number, receiveTime: NtpTimestamp) => boolean {
  const peer = new Uint32Array(4);
  const scratch = new Uint32Array(4);
  const refused: RefusedResult = { outcome: Outcome.dropAccess, length: 0 };
  const kod = new Uint8Array(48);
  return (msg, rinfo, socket, policyIndex, receiveTime) => {
    const admission = options.admissions()[policyIndex];
    if (admission === undefined || (admission.access === undefined && admission.limiter === undefined)) return false;
    const family = parseIpAddress(rinfo.address, peer);
    if (family === 0) return false;
    const decision = admit(admission, peer, family, performance.timeOrigin + performance.now(), scratch);
    if (decision === 'admit') return false;
    if (decision === 'limit') {
      options.count(Outcome.dropRateLimited);
      return true;
    }
    const r = respondRefused(msg, receiveTime, decision, options.refusalPolicy(policyIndex), kod, refused);
    // The literal lookup makes the datagram leave inside send(), so `kod` is free again afterwards.
    if (r.length > 0) {
      socket.send(kod.subarray(0, r.length), rinfo.port, rinfo.address, options.onSent);
      options.onKodSent();
    }
    options.count(r.outcome);
    return true;
  };
}
