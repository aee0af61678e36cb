/**
 * The one answer to "does this Node let several sockets share a port?" (SO_REUSEPORT through
 * `dgram.createSocket({ reusePort })` and `net.Server.listen({ reusePort })`, both Node ≥ 22.12).
 *
 * A feature test, not a version check: two sockets bind the same loopback port, and the second bind either
 * works or fails with EADDRINUSE (Node 20 ignores the option). The answer per protocol is kept for the life
 * of the process, so every caller (the NTP threads, the KE threads) asks once and agrees.
 */
import { createSocket, type Socket, type SocketOptions } from 'node:dgram';
import { createServer, type ListenOptions, type Server } from 'node:net';

/** dgram socket options with `reusePort` (Node ≥ 22.12; not in @types/node 20). */
export type DgramOptionsWithReusePort = SocketOptions & { reusePort?: boolean };
/** net listen options with `reusePort` (Node ≥ 22.12; not in @types/node 20). */
export type ListenOptionsWithReusePort = ListenOptions & { reusePort?: boolean };

const answers = new Map<'udp' | 'tcp', Promise<boolean>>();

/** Whether two sockets of `protocol` may bind one port with reusePort here (probed once per process). */
export function reusePortWorks(protocol: 'udp' | 'tcp'): Promise<boolean> {
  let answer = answers.get(protocol);
  if (answer === undefined) {
    answer = protocol === 'udp' ? probeUdp() : probeTcp();
    answers.set(protocol, answer);
  }
  return answer;
}

async function probeUdp(): Promise<boolean> {
  const options: DgramOptionsWithReusePort = { type: 'udp4', reusePort: true };
  const a = createSocket(options);
  const b = createSocket(options);
  const bind = (s: Socket, port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      s.once('error', reject);
      s.bind(port, '127.0.0.1', () => {
        s.off('error', reject);
        resolve();
      });
    });
  try {
    await bind(a, 0);
    await bind(b, a.address().port);
    return true;
  } catch {
    return false;
  } finally {
    for (const s of [a, b]) {
      try {
        s.close();
      } catch {
        // never bound
      }
    }
  }
}

async function probeTcp(): Promise<boolean> {
  const a = createServer();
  const b = createServer();
  const listen = (s: Server, port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      s.once('error', reject);
      const options: ListenOptionsWithReusePort = { host: '127.0.0.1', port, reusePort: true };
      s.listen(options, () => {
        s.off('error', reject);
        resolve();
      });
    });
  try {
    await listen(a, 0);
    const address = a.address();
    if (address === null || typeof address === 'string') return false;
    await listen(b, address.port);
    return true;
  } catch {
    return false;
  } finally {
    await Promise.all([a, b].map((s) => new Promise<void>((resolve) => (s.listening ? s.close(() => resolve()) : resolve()))));
  }
}
