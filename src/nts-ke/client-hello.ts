/**
 * Reads the ClientHello's server name off an accepted socket before TLS starts, for a listener with
 * several certificates (nts-ke/certificates.ts explains why the context is chosen here). Paused-mode
 * reads; every octet read is handed back with unshift, so TLS then reads the ClientHello as if nothing
 * had happened. The caller owns the deadline and may cancel.
 */
import type * as net from 'node:net';
import { CLIENT_HELLO_PEEK_MAX_BYTES, peekClientHello } from '../core/tls-client-hello.js';

/** How peeking ended: the server name (undefined when none was sent or the octets are no ClientHello), or the peer left. */
export type ClientHelloResult = { readonly kind: 'hello'; readonly serverName: string | undefined } | { readonly kind: 'closed' };

/** Starts peeking; `done` is called once unless the returned cancel function runs first. */
export function readClientHelloServerName(raw: net.Socket, done: (result: ClientHelloResult) => void): () => void {
  const chunks: Buffer[] = [];
  let length = 0;
  let finished = false;
  const stop = (): void => {
    finished = true;
    raw.off('readable', onReadable);
    raw.off('end', onEnd);
    raw.off('close', onEnd);
  };
  const onEnd = (): void => {
    if (finished) return;
    stop();
    done({ kind: 'closed' });
  };
  const onReadable = (): void => {
    for (;;) {
      if (finished) return;
      const chunk = raw.read() as Buffer | null;
      if (chunk === null) return;
      chunks.push(chunk);
      length += chunk.length;
      const seen = chunks.length === 1 ? chunk : Buffer.concat(chunks, length);
      if (chunks.length > 1) chunks.splice(0, chunks.length, seen); // concatenate each octet once
      const peek = peekClientHello(seen.length > CLIENT_HELLO_PEEK_MAX_BYTES ? seen.subarray(0, CLIENT_HELLO_PEEK_MAX_BYTES) : seen);
      if (peek.kind === 'incomplete' && length < CLIENT_HELLO_PEEK_MAX_BYTES) continue;
      stop();
      raw.unshift(seen);
      done({ kind: 'hello', serverName: peek.kind === 'done' ? peek.serverName : undefined });
      return;
    }
  };
  raw.on('readable', onReadable);
  raw.once('end', onEnd);
  raw.once('close', onEnd);
  return stop;
}
