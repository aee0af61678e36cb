/**
 * dgram backend of an NTP thread: one Node dgram socket per `[[server]]` address in this thread, joined
 * with the other threads' sockets through `reusePort` (Node ≥ 22.12; ntp/service.ts runs one thread where
 * Node lacks it). A packet's walk, all in the 'message' callback:
 *
 *   T2 = the clock, read first → serve() into the thread's reply buffer (ntp/thread-responder.ts,
 *   T3 read just before the final seal) → socket.send → send cost and receive-to-send duration
 *
 * T2 is read in JavaScript, so under load it is late by the time the datagram waited in the socket and
 * in the event loop; the native backend (socket-native.ts) has kernel stamps instead. T3 carries the
 * same compensation as the native "each" mode: the seal after the read plus half a send.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { lookup as dnsLookup } from 'node:dns';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { WallClock, type NtpTime } from '../runtime/clock.js';
import type { DgramOptionsWithReusePort } from '../runtime/reuse-port.js';
import { parseIpAddress } from '../core/ip.js';
import { ThreadResponder } from './thread-responder.js';
import type { ThreadCounters } from './counters.js';
import { errorMessage, formatWhere, type ThreadInit, type ThreadListen } from './messages.js';
import type { ThreadBackendStart } from './thread-main.js';

/** Largest UDP payload over IPv4 (65535 − 20 − 8): the reply buffer fits any request. */
const MAX_DATAGRAM_BYTES = 65507;
const TWO_POW_32 = 4_294_967_296;

/**
 * dgram passes every send() destination through `lookup`, and the default (dns.lookup) answers even an
 * IP literal only on a later tick. Reply addresses come from the kernel and are always literals, so they
 * are answered at once and the datagram leaves inside send(): the send cost is measurable, and the reply
 * buffer is free again afterwards unless the kernel queue was full (checked after each send).
 */
function literalLookup(hostname: string, options: unknown, callback: (error: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const literal = isIP(hostname);
  if (literal !== 0) {
    callback(null, hostname, literal);
    return;
  }
  const family = typeof options === 'number' ? options : typeof options === 'object' && options !== null ? (options as { family?: unknown }).family : undefined;
  dnsLookup(hostname, { family: family === 4 || family === 6 ? family : 0 }, callback);
}

/** Binds `socket`; rejects with the bind error. */
function bindSocket(socket: Socket, port: number, host: string): Promise<void> {
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
function closeSocket(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}

/** Binds every listen address with dgram and starts answering. */
export async function startDgramBackend(init: ThreadInit, counters: ThreadCounters): Promise<ThreadBackendStart> {
  const clock = new WallClock(init.clockShared);
  const responder = ThreadResponder.create(init, counters, (out) => clock.nowNtp(out));
  if (typeof responder === 'string') return { ok: false, where: 'responder', message: responder };
  const receiveTime: NtpTime = { seconds: 0, fraction: 0 };
  const sendTime: NtpTime = { seconds: 0, fraction: 0 };
  const peer = new Uint32Array(4);
  let reply = new Uint8Array(MAX_DATAGRAM_BYTES);
  const onSent = (error: Error | null): void => {
    if (error !== null) {
      counters.sendErrors++;
      counters.noteError('sendError', errorMessage(error));
    }
  };

  const open = async (l: ThreadListen): Promise<Socket> => {
    const options: DgramOptionsWithReusePort = {
      type: l.family === 'IPv6' ? 'udp6' : 'udp4',
      ipv6Only: l.ipv6Only,
      reusePort: true,
      ...(init.receiveBufferBytes !== undefined ? { recvBufferSize: init.receiveBufferBytes } : {}),
      lookup: literalLookup,
    };
    const socket = createSocket(options);
    const policy = l.policy;
    socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
      clock.nowNtp(receiveTime);
      const startMs = performance.now();
      responder.markMs = startMs;
      counters.received++;
      const family = parseIpAddress(rinfo.address, peer);
      const length = responder.answer(policy, msg, receiveTime, peer, family, performance.timeOrigin + startMs, reply.subarray(0, msg.length), false);
      if (length === 0) return;
      try {
        socket.send(reply.subarray(0, length), rinfo.port, rinfo.address, onSent);
        counters.sent++;
      } catch (error) {
        // The socket was closed (stopping), or a bad address.
        counters.sendErrors++;
        counters.noteError('sendError', errorMessage(error));
        return;
      }
      // A reply the kernel could not take at once stays queued on our buffer: use a fresh one.
      if (socket.getSendQueueCount() > 0) reply = new Uint8Array(MAX_DATAGRAM_BYTES);
      responder.sent();
      if (counters.measuresDurations && responder.stampedAtMs >= 0) {
        clock.nowNtp(sendTime);
        // Era-safe difference: the seconds fields are compared modulo 2^32.
        counters.observeDurationS(((sendTime.seconds - receiveTime.seconds) | 0) + (sendTime.fraction - receiveTime.fraction) / TWO_POW_32);
      }
    });
    try {
      await bindSocket(socket, l.port, l.host);
    } catch (error) {
      await closeSocket(socket);
      throw error;
    }
    socket.on('error', (error: unknown) => {
      counters.socketErrors++;
      counters.noteError('socketError', errorMessage(error));
    });
    return socket;
  };

  const sockets: Socket[] = [];
  for (const l of init.listen) {
    try {
      sockets.push(await open(l));
    } catch (error) {
      await Promise.all(sockets.map(closeSocket));
      return { ok: false, where: formatWhere(l.host, l.port, l.family), message: errorMessage(error) };
    }
  }
  return {
    ok: true,
    handle: {
      addresses: sockets.map((s) => {
        const a = s.address();
        return { address: a.address, port: a.port, family: a.family === 'IPv6' ? 'IPv6' : 'IPv4' };
      }),
      responder,
      collect() {
        // Every count is taken in the callback.
      },
      async close() {
        await Promise.all(sockets.map(closeSocket));
      },
    },
  };
}
