/**
 * PROXY protocol v2 in front of TLS on a KE listener (`[[nts-ke-server]] proxy-protocol = true`): the
 * peer must be a trusted balancer and must send a complete, valid v2 header (core/proxy-v2.ts) within
 * the header deadline; the octets after the header are handed back to the socket for TLS to read.
 * Nothing is guessed: other first bytes end the connection.
 */
import type * as net from 'node:net';
import { parseProxyHeader, PROXY_V2_FIXED_LENGTH, PROXY_V2_MAX_LENGTH, type ProxyHeaderDefect } from '../core/proxy-v2.js';

/**
 * Deadline for the header, milliseconds. The spec asks receivers to allow for at least one TCP
 * retransmit (3 s) before giving up on a header that has not fully arrived.
 */
export const PROXY_HEADER_DEADLINE_MS = 3000;

/** How reading a header ended. */
export type ProxyReadResult =
  | { readonly kind: 'proxy'; readonly clientAddress: string }
  | { readonly kind: 'local' }
  | { readonly kind: 'invalid'; readonly reason: ProxyHeaderDefect | 'timeout' | 'closed' };

/**
 * Reads one PROXY v2 header from `raw` (paused-mode reads, so nothing is lost), unshifts the octets that
 * follow it, and calls `done` once. On `invalid` the caller destroys the socket.
 */
export function readProxyHeader(raw: net.Socket, deadlineMs: number, done: (result: ProxyReadResult) => void): void {
  const buffer = new Uint8Array(PROXY_V2_FIXED_LENGTH + PROXY_V2_MAX_LENGTH);
  let length = 0;
  let finished = false;
  const finish = (result: ProxyReadResult): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    raw.off('readable', onReadable);
    raw.off('end', onEnd);
    raw.off('close', onEnd);
    done(result);
  };
  const onEnd = (): void => finish({ kind: 'invalid', reason: 'closed' });
  const onReadable = (): void => {
    for (;;) {
      if (finished) return;
      const chunk = raw.read() as Buffer | null;
      if (chunk === null) return;
      const take = Math.min(chunk.length, buffer.length - length);
      buffer.set(chunk.subarray(0, take), length);
      length += take;
      const parsed = parseProxyHeader(buffer.subarray(0, length));
      if (parsed.kind === 'incomplete') {
        if (take < chunk.length) return finish({ kind: 'invalid', reason: 'too_long' }); // cannot happen: the cap is the buffer
        continue;
      }
      if (parsed.kind === 'invalid') return finish({ kind: 'invalid', reason: parsed.reason });
      // Octets after the header belong to TLS: the ones already copied, then the rest of this chunk.
      const rest = Buffer.concat([buffer.subarray(parsed.headerLength, length), chunk.subarray(take)]);
      if (rest.length > 0) raw.unshift(rest);
      return finish(parsed.kind === 'proxy' ? { kind: 'proxy', clientAddress: parsed.source.address } : { kind: 'local' });
    }
  };
  const timer = setTimeout(() => finish({ kind: 'invalid', reason: 'timeout' }), Math.max(PROXY_HEADER_DEADLINE_MS, deadlineMs));
  raw.on('readable', onReadable);
  raw.once('end', onEnd);
  raw.once('close', onEnd);
}
