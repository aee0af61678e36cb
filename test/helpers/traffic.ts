/**
 * Mixed, bounded traffic against a running test daemon, so its metrics have something to show:
 * each round is one NTS-KE session, a few authenticated NTS exchanges, two NAKed requests (tampered and
 * unknown-key cookies), one malformed datagram (dropped) and one plain NTP request. Loopback only; stops
 * after `rounds` rounds or `maxMs`, whichever comes first.
 */
import { createSocket } from 'node:dgram';
import { delay, keyExchange, ntsQuery, type RunningDaemon } from './daemon.js';

/** What was sent and how it went. */
export interface TrafficTally {
  keSessions: number;
  ntsOk: number;
  naks: number;
  plainReplies: number;
  malformedSent: number;
}

/** Sends one datagram to 127.0.0.1:`port`; resolves with the first reply or undefined after `waitMs`. */
export function udpOnce(port: number, datagram: Uint8Array, waitMs = 500): Promise<Uint8Array | undefined> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, waitMs);
    s.on('message', (msg) => {
      clearTimeout(timer);
      s.close();
      resolve(new Uint8Array(msg));
    });
    s.send(datagram, port, '127.0.0.1');
  });
}

/** Options of sendMixedTraffic. */
export interface TrafficOptions {
  /** Trust anchor for the KE listener. */
  readonly caPem: string;
  /** Rounds to send (default 10). */
  readonly rounds?: number;
  /** Pause between rounds (default 250 ms). */
  readonly pauseMs?: number;
  /** Hard stop (default 20 s). */
  readonly maxMs?: number;
}

/** Sends the rounds described in the module comment; throws if the daemon misbehaves (no KE, no reply). */
export async function sendMixedTraffic(daemon: RunningDaemon, options: TrafficOptions): Promise<TrafficTally> {
  const tally: TrafficTally = { keSessions: 0, ntsOk: 0, naks: 0, plainReplies: 0, malformedSent: 0 };
  const ntp = daemon.ntp[0];
  if (ntp === undefined) throw new Error('daemon reported no NTP address');
  const deadline = Date.now() + (options.maxMs ?? 20_000);
  const rounds = options.rounds ?? 10;
  for (let round = 0; round < rounds && Date.now() < deadline; round++) {
    const keys = await keyExchange(daemon, options.caPem);
    tally.keSessions++;
    const cookies = keys.cookies;
    for (const cookie of cookies.slice(0, 3)) {
      const r = await ntsQuery(keys, cookie);
      if (r.ok) tally.ntsOk++;
    }
    const tampered = (cookies[3] ?? new Uint8Array(64)).slice();
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 0x01;
    const unknownKey = (cookies[4] ?? new Uint8Array(64)).slice();
    unknownKey[0] = (unknownKey[0] ?? 0) ^ 0xff;
    for (const bad of [tampered, unknownKey]) {
      const r = await ntsQuery(keys, bad);
      if (!r.ok && r.failure.kind === 'nts_nak') tally.naks++;
    }
    await udpOnce(ntp.port, new Uint8Array(10), 50);
    tally.malformedSent++;
    const plain = new Uint8Array(48);
    plain[0] = (4 << 3) | 3; // LI 0, version 4, mode 3 (client)
    if ((await udpOnce(ntp.port, plain)) !== undefined) tally.plainReplies++;
    await delay(options.pauseMs ?? 250);
  }
  if (tally.ntsOk === 0 || tally.naks === 0 || tally.plainReplies === 0) {
    throw new Error(`traffic did not go through: ${JSON.stringify(tally)}`);
  }
  return tally;
}
