/**
 * dgram helpers shared by the two UDP listeners (io/udp-server.ts on the main thread, ntp/thread-dgram.ts in
 * receiver threads). A module of its own because io files do not import each other.
 */
import type { Socket, SocketOptions } from 'node:dgram';
import { lookup as dnsLookup } from 'node:dns';
import { isIP } from 'node:net';

/** dgram options including `reusePort`, which @types/node 20 does not declare (Node ≥ 22.12 has it). */
export type SocketOptionsWithReusePort = SocketOptions & { reusePort?: boolean };

/**
 * dgram passes the destination of every send() through `lookup`, and the default (dns.lookup) answers
 * even an IP literal only on the next tick: every reply of a batch would leave after the whole batch was
 * handed over, each at the cost of a tick and a closure. Reply addresses come from the kernel and are
 * always literals, so they are answered at once and the datagram leaves inside send(); that keeps the
 * per-reply send time measurable for the transmit-timestamp compensation (pool/worker.ts). Anything else
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
