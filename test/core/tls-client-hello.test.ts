import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as tls from 'node:tls';
import fc from 'fast-check';
import { CLIENT_HELLO_PEEK_MAX_BYTES, peekClientHello } from '../../src/core/tls-client-hello.js';

/** The first octets Node's TLS client sends (its ClientHello), captured on a plain TCP server. */
async function captureClientHello(servername: string | undefined): Promise<Uint8Array> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  try {
    const captured = new Promise<Uint8Array>((resolve) => {
      server.once('connection', (socket) => {
        let bytes = new Uint8Array(0);
        socket.on('data', (chunk: Buffer) => {
          bytes = Uint8Array.from([...bytes, ...chunk]);
          if (peekClientHello(bytes).kind === 'done') {
            resolve(bytes);
            socket.destroy();
          }
        });
      });
    });
    const client = tls.connect({ port: address.port, host: '127.0.0.1', ...(servername === undefined ? {} : { servername }), minVersion: 'TLSv1.3' });
    client.on('error', () => undefined);
    const bytes = await captured;
    client.destroy();
    return bytes;
  } finally {
    server.close();
  }
}

/** Splits one TLS record into records of at most `size` fragment octets (a legal re-fragmentation). */
function refragment(record: Uint8Array, size: number): Uint8Array {
  const body = record.subarray(5);
  const out: number[] = [];
  for (let i = 0; i < body.length; i += size) {
    const part = body.subarray(i, i + size);
    out.push(record[0] ?? 0, record[1] ?? 0, record[2] ?? 0, part.length >> 8, part.length & 0xff, ...part);
  }
  return Uint8Array.from(out);
}

test('RFC 6066 §3: the server_name of a real ClientHello, lower case and without a trailing dot', async () => {
  const hello = await captureClientHello('Time.Example.ORG');
  assert.deepEqual(peekClientHello(hello), { kind: 'done', serverName: 'time.example.org' });
  const noName = await captureClientHello(undefined); // Node sends no SNI to an IP address
  assert.deepEqual(peekClientHello(noName), { kind: 'done', serverName: undefined });
});

test('every prefix of a ClientHello is incomplete; a ClientHello split over several records is reassembled', async () => {
  const hello = await captureClientHello('nts.example.org');
  for (let n = 0; n < hello.length; n++) assert.deepEqual(peekClientHello(hello.subarray(0, n)), { kind: 'incomplete' }, `prefix ${n}`);
  const split = refragment(hello, 37);
  for (let n = 0; n < split.length; n++) assert.equal(peekClientHello(split.subarray(0, n)).kind, 'incomplete');
  assert.deepEqual(peekClientHello(split), { kind: 'done', serverName: 'nts.example.org' });
});

test('octets that are not a TLS handshake are done at once, without a name', () => {
  assert.deepEqual(peekClientHello(new TextEncoder().encode('GET / HTTP/1.1\r\n')), { kind: 'done', serverName: undefined });
  assert.deepEqual(peekClientHello(Uint8Array.of(22, 3, 1, 0, 0)), { kind: 'done', serverName: undefined }); // empty fragment
  assert.deepEqual(peekClientHello(Uint8Array.of(22, 3, 1, 0, 4, 2, 0, 0, 0)), { kind: 'done', serverName: undefined }); // ServerHello
});

test('property: never throws, and a verdict on octets past the peek limit is never "incomplete"', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (tail, handshake) => {
      const bytes = handshake ? Uint8Array.from([22, 3, 1, ...tail]) : tail;
      const peek = peekClientHello(bytes);
      assert.ok(peek.kind === 'incomplete' || peek.kind === 'done');
    }),
    { numRuns: 3000 },
  );
  const huge = new Uint8Array(CLIENT_HELLO_PEEK_MAX_BYTES);
  for (let i = 0; i < huge.length; i += 5 + 16_384) huge.set([22, 3, 1, 0x40, 0x00], i);
  huge.set([1, 0xff, 0xff, 0xff], 5); // claims a 16 MiB ClientHello
  assert.equal(peekClientHello(huge).kind, 'done');
});
