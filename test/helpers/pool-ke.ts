/** Configurations and small probes for the NTS pool tests and bench (docs/pools.md). */
import { createSocket } from 'node:dgram';
import { request } from 'node:http';
import { createServer } from 'node:net';
import type { TestPki } from './certs.js';

/** A TCP or UDP port free on every address in `hosts`. */
export async function freePortOn(kind: 'tcp' | 'udp', hosts: readonly string[]): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 30000);
    let free = true;
    for (const host of hosts) {
      free &&= await new Promise<boolean>((resolve) => {
        if (kind === 'udp') {
          const s = createSocket('udp4');
          s.once('error', () => resolve(false));
          s.bind(port, host, () => s.close(() => resolve(true)));
        } else {
          const s = createServer();
          s.once('error', () => resolve(false));
          s.listen(port, host, () => s.close(() => resolve(true)));
        }
      });
    }
    if (free) return port;
  }
  throw new Error(`no ${kind} port free on ${hosts.join(', ')}`);
}

/** GET /metrics. */
export function scrape(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path: '/metrics', timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

/** One series' value in a scrape (0 when absent). */
export function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** A source's configuration: NTP and NTS-KE on `host`, the pool token, keep-alive for front ends. */
export function sourceToml(o: { host: string; kePort: number; ntpPort: number; metricsPort: number; pki: TestPki; token: string }): string {
  return [
    '[[server]]',
    `listen = "${o.host}:${o.ntpPort}"`,
    '',
    '[[nts-ke-server]]',
    `listen = "${o.host}:${o.kePort}"`,
    `certificate-chain-path = ${JSON.stringify(o.pki.chainPath)}`,
    `private-key-path = ${JSON.stringify(o.pki.keyPath)}`,
    'certificate-reload-interval-s = 0',
    'client-rate-limit-interval-s = 0',
    'concurrent-connections-per-source = 10000',
    `ntp-server = "${o.host}"`,
    `ntp-port = ${o.ntpPort}`,
    `accepted-pool-authentication-tokens = ["${o.token}"]`,
    'longlived-connections = 8',
    '',
    '[keyset]',
    'key-storage-path = "keyset/ntsd.keys"',
    '',
    '[worker-pool]',
    'threads = 1',
    '',
    '[time-source]',
    'mode = "static"',
    'local-stratum = 2',
    '',
    '[observability]',
    `metrics-listen = "${o.host}:${o.metricsPort}"`,
    '',
  ].join('\n');
}

/** A `[pool-ke]` front end on 127.0.0.1 for `sources` (health check once at start-up unless `healthCheckIntervalS`). */
export function frontEndToml(o: { port: number; metricsPort: number; pki: TestPki; sources: readonly { host: string; kePort: number; token: string }[]; healthCheckIntervalS?: number }): string {
  return [
    '[pool-ke]',
    `listen = "127.0.0.1:${o.port}"`,
    `certificate-chain-path = ${JSON.stringify(o.pki.chainPath)}`,
    `private-key-path = ${JSON.stringify(o.pki.keyPath)}`,
    `upstream-ca-path = ${JSON.stringify(o.pki.caCertPath)}`,
    // Every test client comes from 127.0.0.1: no per-client bucket, a per-source cap as large as the global one.
    'client-rate-limit-interval-s = 0',
    'concurrent-connections-per-source = 512',
    'certificate-reload-interval-s = 0',
    // One check at start-up (it also fills the capability cache); the test controls failures itself.
    `health-check-interval-s = ${o.healthCheckIntervalS ?? 3600}`,
    '',
    ...o.sources.flatMap((s) => ['[[pool-ke.source]]', `name = "${s.host}"`, `address = "${s.host}:${s.kePort}"`, `authentication-token = "${s.token}"`, '']),
    '[observability]',
    `metrics-listen = "127.0.0.1:${o.metricsPort}"`,
    '',
  ].join('\n');
}

