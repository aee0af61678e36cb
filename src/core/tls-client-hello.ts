/**
 * Reads the server name (RFC 6066 §3 server_name extension) out of the first octets a TLS client sends,
 * without doing any TLS: a KE listener with several certificates picks the TLS context for a connection
 * before it starts the handshake (nts-ke/client-hello.ts explains why Node's SNICallback is not enough).
 *
 * Only what is needed is checked. Anything that is not a well-formed ClientHello yields `serverName:
 * undefined`, and the TLS library then fails the handshake on its own terms. Pure: no I/O, never throws.
 */

/** TLS record content type of handshake messages (RFC 8446 §5.1). */
const CONTENT_TYPE_HANDSHAKE = 22;
/** Handshake message type of a ClientHello (RFC 8446 §4). */
const HANDSHAKE_CLIENT_HELLO = 1;
/** Extension type server_name (RFC 6066 §3). */
const EXTENSION_SERVER_NAME = 0;
/** NameType host_name (RFC 6066 §3). */
const NAME_TYPE_HOST_NAME = 0;
/** Largest plaintext record fragment (RFC 8446 §5.1: 2^14). */
const MAX_RECORD_FRAGMENT = 16_384;
/** TLS record header: type, legacy version, length. */
const RECORD_HEADER_LENGTH = 5;
/** Handshake header: type and a 24-bit length. */
const HANDSHAKE_HEADER_LENGTH = 4;
/** Longest DNS name (RFC 1035 §2.3.4 in text form). */
const MAX_HOST_NAME_LENGTH = 253;

/**
 * The most octets a caller needs to buffer: a ClientHello of up to 16 KiB, split over records. A
 * ClientHello longer than that is not looked into (the default context serves it).
 */
export const CLIENT_HELLO_PEEK_MAX_BYTES = 4 * (RECORD_HEADER_LENGTH + MAX_RECORD_FRAGMENT);

/** What the octets received so far tell. */
export type ClientHelloPeek =
  | { readonly kind: 'incomplete' }
  /** The ClientHello is complete (or the octets are not one): its host name, lower case, without a trailing dot. */
  | { readonly kind: 'done'; readonly serverName: string | undefined };

const INCOMPLETE: ClientHelloPeek = { kind: 'incomplete' };
const NO_NAME: ClientHelloPeek = { kind: 'done', serverName: undefined };

/** Peeks at the start of a TLS connection: the ClientHello's server name once every record of it is in. */
export function peekClientHello(bytes: Uint8Array): ClientHelloPeek {
  // Reassemble the handshake message from the records' fragments (it may span several records).
  const message = new Uint8Array(Math.min(bytes.length, CLIENT_HELLO_PEEK_MAX_BYTES));
  let messageLength = 0;
  let offset = 0;
  for (;;) {
    if (offset + RECORD_HEADER_LENGTH > bytes.length) return INCOMPLETE;
    const type = bytes[offset] ?? 0;
    const versionMajor = bytes[offset + 1] ?? 0;
    const fragmentLength = ((bytes[offset + 3] ?? 0) << 8) | (bytes[offset + 4] ?? 0);
    if (type !== CONTENT_TYPE_HANDSHAKE || versionMajor !== 3 || fragmentLength === 0 || fragmentLength > MAX_RECORD_FRAGMENT) return NO_NAME;
    const start = offset + RECORD_HEADER_LENGTH;
    if (start + fragmentLength > bytes.length) return bytes.length >= CLIENT_HELLO_PEEK_MAX_BYTES ? NO_NAME : INCOMPLETE;
    if (messageLength + fragmentLength > message.length) return NO_NAME;
    message.set(bytes.subarray(start, start + fragmentLength), messageLength);
    messageLength += fragmentLength;
    offset = start + fragmentLength;
    if (messageLength < HANDSHAKE_HEADER_LENGTH) continue;
    if (message[0] !== HANDSHAKE_CLIENT_HELLO) return NO_NAME;
    const bodyLength = ((message[1] ?? 0) << 16) | ((message[2] ?? 0) << 8) | (message[3] ?? 0);
    if (HANDSHAKE_HEADER_LENGTH + bodyLength > CLIENT_HELLO_PEEK_MAX_BYTES) return NO_NAME;
    if (messageLength >= HANDSHAKE_HEADER_LENGTH + bodyLength) {
      return { kind: 'done', serverName: serverNameOf(message.subarray(HANDSHAKE_HEADER_LENGTH, HANDSHAKE_HEADER_LENGTH + bodyLength)) };
    }
  }
}

/** Bounds-checked reads over one ClientHello body. */
class Reader {
  offset = 0;
  constructor(readonly bytes: Uint8Array) {}
  get left(): number {
    return this.bytes.length - this.offset;
  }
  skip(n: number): boolean {
    if (n > this.left) return false;
    this.offset += n;
    return true;
  }
  u8(): number | undefined {
    if (this.left < 1) return undefined;
    return this.bytes[this.offset++];
  }
  u16(): number | undefined {
    if (this.left < 2) return undefined;
    const v = ((this.bytes[this.offset] ?? 0) << 8) | (this.bytes[this.offset + 1] ?? 0);
    this.offset += 2;
    return v;
  }
  /** A vector with a `lengthOctets`-octet length prefix, as a view. */
  vector(lengthOctets: 1 | 2): Uint8Array | undefined {
    const length = lengthOctets === 1 ? this.u8() : this.u16();
    if (length === undefined || length > this.left) return undefined;
    const view = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return view;
  }
}

/** RFC 8446 §4.1.2 ClientHello → the first host_name of its server_name extension. */
function serverNameOf(body: Uint8Array): string | undefined {
  const r = new Reader(body);
  // legacy_version, random, legacy_session_id, cipher_suites, legacy_compression_methods
  if (!r.skip(2 + 32)) return undefined;
  if (r.vector(1) === undefined || r.vector(2) === undefined || r.vector(1) === undefined) return undefined;
  const extensions = r.vector(2);
  if (extensions === undefined) return undefined;
  const e = new Reader(extensions);
  while (e.left > 0) {
    const type = e.u16();
    const data = e.vector(2);
    if (type === undefined || data === undefined) return undefined;
    if (type !== EXTENSION_SERVER_NAME) continue;
    const list = new Reader(data).vector(2);
    if (list === undefined) return undefined;
    const names = new Reader(list);
    while (names.left > 0) {
      const nameType = names.u8();
      const name = names.vector(2);
      if (nameType === undefined || name === undefined) return undefined;
      if (nameType === NAME_TYPE_HOST_NAME) return hostName(name);
    }
    return undefined;
  }
  return undefined;
}

/** An ASCII host name (letters, digits, '-', '.', '_'), lower case, without a trailing dot; else undefined. */
function hostName(octets: Uint8Array): string | undefined {
  if (octets.length === 0 || octets.length > MAX_HOST_NAME_LENGTH + 1) return undefined;
  let text = '';
  for (const o of octets) {
    const ok = (o >= 0x61 && o <= 0x7a) || (o >= 0x41 && o <= 0x5a) || (o >= 0x30 && o <= 0x39) || o === 0x2d || o === 0x2e || o === 0x5f;
    if (!ok) return undefined;
    text += String.fromCharCode(o >= 0x41 && o <= 0x5a ? o + 0x20 : o);
  }
  if (text.endsWith('.')) text = text.slice(0, -1);
  return text.length === 0 || text.length > MAX_HOST_NAME_LENGTH ? undefined : text;
}
