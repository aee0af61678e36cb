/**
 * The metrics listener: a small node:http server for `GET /metrics` (and HEAD) from the daemon's registry,
 * meant for the loopback or a management network. Slow or idle clients are timed out; a socket error after
 * the bind never takes the daemon down.
 *
 * With a `clients` view it also serves `GET /clients`: the client log as JSON (core/client-log.ts), for
 * `ntsd clients`. That document holds client addresses, which are personal data: the daemon passes the
 * view only when this listener is on a loopback address, and /clients is 404 otherwise.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { NtsdError } from '../errors.js';

/** A running metrics listener. */
export interface MetricsServer {
  /** The bound port (useful when asked for port 0). */
  readonly port: number;
  /** Stops listening and closes idle keep-alive connections. */
  close(): Promise<void>;
}

/** What the listener serves besides /metrics. */
export interface MetricsServerOptions {
  /** The client log view for `GET /clients` (any JSON value); absent = /clients is 404. */
  readonly clients?: () => unknown;
}

/**
 * Serves `GET /metrics` (and HEAD) from `registry` on host:port, and `GET /clients` when `options.clients`
 * is given; every other path is 404, other methods 405.
 * @throws NtsdError BIND_FAILED when the address cannot be bound.
 */
export function startMetricsServer(registry: Registry, host: string, port: number, options: MetricsServerOptions = {}): Promise<MetricsServer> {
  const clients = options.clients;
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/clients' && clients !== undefined) {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
        return;
      }
      const body = `${JSON.stringify(clients())}\n`;
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      () => {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('metrics collection failed\n');
      },
    );
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 5_000;
  return new Promise((resolvePromise, reject) => {
    const onError = (error: Error): void => {
      reject(new NtsdError('BIND_FAILED', `metrics listener cannot bind ${host}:${port}: ${error.message}`, { cause: error }));
    };
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      // After binding, a socket-level error (e.g. EMFILE on accept) must not take the daemon down.
      server.on('error', () => undefined);
      const address = server.address();
      const bound = typeof address === 'object' && address !== null ? address.port : port;
      resolvePromise({
        port: bound,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeIdleConnections();
          }),
      });
    });
  });
}
