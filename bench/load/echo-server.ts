/**
 * A trivial UDP echo server, run as a child process by `--mode echo`: every datagram goes back to its
 * sender unchanged. It costs one receive and one send per packet and nothing else, so the rate a
 * generator reaches against it is the ceiling of the generator (and of Node's dgram) on this machine.
 *
 * Prints one JSON line `{"port":N}` once bound to 127.0.0.1, and exits on SIGTERM, SIGINT or when its
 * standard input closes (so it never outlives the generator that started it).
 */
import { createSocket } from 'node:dgram';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** A running echo server child. */
export interface EchoServer {
  readonly pid: number;
  readonly port: number;
  /** Stops the child by its PID and waits for it to exit. */
  stop(): Promise<void>;
}

/** Starts the echo server as a child process on 127.0.0.1 and resolves once it has bound its port. */
export function startEchoServer(timeoutMs = 10_000): Promise<EchoServer> {
  const script = fileURLToPath(import.meta.url);
  const child: ChildProcess = spawn(process.execPath, [script, '--serve'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const pid = child.pid;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    if (pid === undefined) {
      reject(new Error('cannot start the echo server'));
      return;
    }
    let buffered = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('echo server did not report its port'));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`echo server exited early (code ${String(code)})`));
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      clearTimeout(timer);
      const parsed: unknown = JSON.parse(buffered.slice(0, newline));
      const port = typeof parsed === 'object' && parsed !== null ? (parsed as { port?: unknown }).port : undefined;
      if (typeof port !== 'number') {
        child.kill('SIGKILL');
        reject(new Error(`echo server said ${buffered.slice(0, newline)}`));
        return;
      }
      resolve({
        pid,
        port,
        async stop() {
          if (child.exitCode === null && child.signalCode === null) {
            process.kill(pid, 'SIGTERM');
            await exited;
          }
        },
      });
    });
  });
}

function serve(): void {
  const socket = createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    socket.send(msg, rinfo.port, rinfo.address);
  });
  socket.on('error', () => {
    // A send to a vanished client is not our problem.
  });
  socket.bind(0, '127.0.0.1', () => {
    try {
      socket.setRecvBufferSize(4 * 1024 * 1024);
      socket.setSendBufferSize(4 * 1024 * 1024);
    } catch {
      // Kernel caps; defaults work.
    }
    process.stdout.write(`${JSON.stringify({ port: socket.address().port })}\n`);
  });
  const stop = (): void => {
    socket.close(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === '--serve') serve();
