/**
 * dgram backend of an NTP thread: one Node dgram socket with `reusePort` (Node ≥ 22.12) per listen
 * address, answered by the pool's inline mode (`threads = 0`): the same batching, queue limit and
 * `createBatchProcessor` code the pool workers run, flushed at the end of the I/O turn.
 *
 * The receive timestamp is the first statement of the 'message' callback, so under load it includes
 * none of the time the datagram waited in the socket buffer: a saturated thread stamps a packet only
 * after the crypto queued before it. The native backend (thread-native.ts) has kernel timestamps instead.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { WallClock, type NtpTime } from '../runtime/clock.js';
import { createAdmissions } from '../core/admission.js';
import { OUTCOME_COUNT, type ServerFields } from '../core/responder.js';
import { createPool, type PoolStats } from './batch-pool.js';
import { KEY_AGE_BUCKETS, Tally } from './tally.js';
import { bindSocket, closeSocket, createDgramRefuser, literalLookup, type SocketOptionsWithReusePort } from './udp-socket.js';
import { errorMessage, formatWhere, type ThreadInit, type ThreadListen } from './messages.js';
import type { ThreadBackendStart, ThreadCounters } from './thread-main.js';

/** Where a reply goes: the receiving socket and the client's address. */
interface ReplyTarget {
  readonly socket: Socket;
  readonly address: string;
  readonly port: number;
}

const TWO_POW_32 = 4_294_967_296;

/** Binds every listen address with dgram and starts answering. */
export async function startDgramBackend(init: ThreadInit, counters: ThreadCounters): Promise<ThreadBackendStart> {
  const clock = new WallClock(init.clockShared);
  const pool = createPool<ReplyTarget>({
    threads: 0,
    batchSize: init.batchSize,
    flushIntervalUs: init.flushIntervalUs,
    queueLimit: init.queueLimit,
    keysetBytes: init.keysetBytes,
    serverFields: init.serverFields,
    policies: init.policies,
    clock,
    onEvent: (event) => {
      switch (event.kind) {
        case 'respondError':
          counters.noteError('respondError', event.message);
          return;
        case 'replyCallbackError':
          counters.noteError('sendError', errorMessage(event.error));
          return;
        case 'keysetRejected':
          counters.noteError('keysetRejected', event.reason);
          return;
        case 'workerExit':
          return; // inline mode has no workers
        default: {
          const unreachable: never = event;
          return unreachable;
        }
      }
    },
  });

  // Reused: the receive stamp is copied into the pool's batch at once; the send stamp is read at once.
  const receiveTime: NtpTime = { seconds: 0, fraction: 0 };
  const sendTime: NtpTime = { seconds: 0, fraction: 0 };
  const onSent = (error: Error | null): void => {
    if (error !== null) {
      counters.sendErrors++;
      counters.noteError('sendError', errorMessage(error));
    }
  };
  pool.onReply((reply, target, receiveSeconds, receiveFraction) => {
    try {
      target.socket.send(reply, target.port, target.address, onSent);
      counters.sent++;
    } catch (error) {
      // The socket was closed while the reply was in the batch (stopping), or a bad address.
      counters.sendErrors++;
      counters.noteError('sendError', errorMessage(error));
      return;
    }
    if (counters.measuresDurations) {
      clock.nowNtp(sendTime);
      // Era-safe difference: the seconds fields are compared modulo 2^32.
      counters.observeDurationS(((sendTime.seconds - receiveSeconds) | 0) + (sendTime.fraction - receiveFraction) / TWO_POW_32);
    }
  });

  // Access lists and the shared rate-limit tables, per policy; replaced on SIGHUP.
  let admissions = createAdmissions(init.admissions, init.policies.length);
  let precision = init.serverFields.precision;
  const refuse = createDgramRefuser({
    admissions: () => admissions,
    refusalPolicy: (i) => {
      const p = init.policies[i] ?? init.policies[0];
      return { requireNts: p?.requireNts ?? false, acceptNtpVersions: p?.acceptNtpVersions ?? [], precision };
    },
    count: (outcome) => {
      counters.tally[Tally.outcomes + outcome] = (counters.tally[Tally.outcomes + outcome] ?? 0) + 1;
    },
    onKodSent: () => counters.sent++,
    onSent,
  });

  const sockets: Socket[] = [];
  const open = async (l: ThreadListen): Promise<Socket> => {
    const socketOptions: SocketOptionsWithReusePort = {
      type: l.family === 'IPv6' ? 'udp6' : 'udp4',
      ipv6Only: l.ipv6Only,
      reusePort: true,
      ...(init.receiveBufferBytes !== undefined ? { recvBufferSize: init.receiveBufferBytes } : {}),
      lookup: literalLookup,
    };
    const socket = createSocket(socketOptions);
    const policy = l.policy;
    socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
      clock.nowNtp(receiveTime);
      counters.received++;
      if (refuse(msg, rinfo, socket, policy, receiveTime)) return;
      pool.submit(msg, receiveTime, { socket, address: rinfo.address, port: rinfo.port }, policy);
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

  for (const l of init.listen) {
    try {
      sockets.push(await open(l));
    } catch (error) {
      await Promise.all(sockets.map(closeSocket));
      await pool.close();
      return { ok: false, where: formatWhere(l.host, l.port, l.family), message: errorMessage(error) };
    }
  }

  let last: PoolStats = pool.stats();
  return {
    ok: true,
    handle: {
      addresses: sockets.map((s) => {
        const a = s.address();
        return { address: a.address, port: a.port, family: a.family === 'IPv6' ? 'IPv6' : 'IPv4' };
      }),
      setKeyset(bytes) {
        try {
          pool.setKeyset(bytes);
          return undefined;
        } catch (error) {
          return errorMessage(error);
        }
      },
      setServerFields(fields: ServerFields) {
        precision = fields.precision;
        pool.setServerFields(fields);
      },
      setAdmissions(specs) {
        admissions = createAdmissions(specs, init.policies.length);
      },
      collect() {
        const now = pool.stats();
        const t = counters.tally;
        for (let i = 0; i < OUTCOME_COUNT; i++) t[Tally.outcomes + i] = (t[Tally.outcomes + i] ?? 0) + (now.outcomes[i] ?? 0) - (last.outcomes[i] ?? 0);
        for (let i = 0; i < KEY_AGE_BUCKETS; i++) t[Tally.keyAges + i] = (t[Tally.keyAges + i] ?? 0) + (now.keyAges[i] ?? 0) - (last.keyAges[i] ?? 0);
        t[Tally.cookiesIssued] = (t[Tally.cookiesIssued] ?? 0) + now.cookiesIssued - last.cookiesIssued;
        t[Tally.respondErrors] = (t[Tally.respondErrors] ?? 0) + now.respondErrors - last.respondErrors;
        counters.queueRejected += now.queueRejected - last.queueRejected;
        counters.transmitStamps += now.transmitStamps - last.transmitStamps;
        counters.transmitCompensationSumS += now.transmitCompensationSumS - last.transmitCompensationSumS;
        counters.queueDepth = now.queueDepth;
        last = now;
      },
      async close() {
        await Promise.all(sockets.map(closeSocket));
        await pool.close();
      },
    },
  };
}
