/**
 * The precomputed requests of one generator thread, with a generation per request so that a reply to an
 * earlier send of the same request is never taken for a reply to a later one.
 *
 * Request i carries the transmit timestamp (runTag, generation << indexBits | i). The server echoes it as
 * the origin timestamp (RFC 5905 §8), so a reply names its request and its generation without a lookup
 * table. The timestamp carries no clock reading (chrony's client does the same), which lets a request be
 * sealed long before it is sent. A request whose send went unanswered (declared lost, or still in flight
 * when the round robin comes back to it) is rebuilt with the next generation before it is sent again:
 * a late reply to the old send then carries the old generation and is counted stale, not matched.
 */
import { randomFillSync } from 'node:crypto';
import { getAead, type AeadCipher } from '../../src/core/crypto/aead.js';
import { buildNtsRequest, MIN_UNIQUE_ID_LENGTH, ntsRequestLength } from '../../src/cli/ntp-client.js';
import type { NtsSession } from './protocol.js';

export const NTP_HEADER_BYTES = 48;
/** LI 0, VN 4, mode 3 (client), RFC 5905 §7.3. */
const CLIENT_LI_VN_MODE = (4 << 3) | 3;
/** Offsets of the origin, receive and transmit timestamps in the NTP header (RFC 5905 §7.3). */
export const ORIGIN_OFFSET = 24;
export const RECEIVE_OFFSET = 32;
export const TRANSMIT_OFFSET = 40;
export const TWO_POW_32 = 4_294_967_296;

/** States of a pooled request, as both senders (dgram and native) track them. */
export const FREE = 0;
export const IN_FLIGHT = 1;
/** Declared lost: rebuilt with a new generation before its next send. */
export const TAINTED = 2;
/** Replies fully checked at the start of a run regardless of the sampling rate. */
export const ALWAYS_VERIFY_FIRST = 32;

/** A generation and index decoded from an echoed origin timestamp fraction. */
export interface PoolKey {
  index: number;
  generation: number;
}

/** Precomputed requests (NTS-sealed or plain NTPv4), rebuildable one at a time with a new generation. */
export class RequestPool {
  /** Number of requests. */
  readonly size: number;
  /** The random first half of every transmit timestamp of this thread's run. */
  readonly runTag: number;
  /** All request octets, `stride` apart. */
  readonly bytes: Uint8Array;
  /** Octets of request i (all the same in practice). */
  readonly lengths: Uint16Array;
  /** Unique Identifier of each request (NTS), MIN_UNIQUE_ID_LENGTH octets each. */
  readonly uniqueIds: Uint8Array;
  /** Current generation of each request (what its next send carries). */
  readonly generations: Uint16Array;
  readonly stride: number;
  readonly #indexBits: number;
  readonly #generationMask: number;
  readonly #build: (i: number) => void;
  /** Requests rebuilt with a new generation so far. */
  rebuilt = 0;

  constructor(mode: 'nts' | 'plain' | 'echo', size: number, runTag: number, session: NtsSession | undefined, placeholders: number) {
    this.size = size;
    this.runTag = runTag;
    this.#indexBits = Math.max(1, Math.ceil(Math.log2(size)));
    if (this.#indexBits > 24) throw new Error('pool too large (at most 2^24 requests)');
    // Generations use the fraction bits the index leaves free (at least 8 bits: 256 rebuilds before a wrap).
    this.#generationMask = 2 ** (32 - this.#indexBits) - 1;
    this.lengths = new Uint16Array(size);
    this.generations = new Uint16Array(size);
    if (mode !== 'nts') {
      this.stride = NTP_HEADER_BYTES;
      this.bytes = new Uint8Array(size * NTP_HEADER_BYTES);
      this.uniqueIds = new Uint8Array(0);
      this.#build = (i) => {
        const at = i * NTP_HEADER_BYTES;
        this.bytes.fill(0, at, at + NTP_HEADER_BYTES);
        this.bytes[at] = CLIENT_LI_VN_MODE;
        this.bytes[at + 2] = 4; // poll exponent
        writeU32BE(this.bytes, at + TRANSMIT_OFFSET, runTag);
        writeU32BE(this.bytes, at + TRANSMIT_OFFSET + 4, this.fraction(i));
        this.lengths[i] = NTP_HEADER_BYTES;
      };
    } else {
      if (session === undefined) throw new Error('nts mode without a session');
      const aead = getAead(session.aeadId);
      if (aead === undefined) throw new Error(`AEAD ${session.aeadId} is not implemented`);
      if (session.cookies.length === 0) throw new Error('the NTS-KE returned no cookies');
      const c2sCipher: AeadCipher = aead.newCipher(session.c2s);
      let stride = 0;
      for (const cookie of session.cookies) stride = Math.max(stride, ntsRequestLength(aead, MIN_UNIQUE_ID_LENGTH, cookie.length, placeholders));
      this.stride = stride;
      this.bytes = new Uint8Array(size * stride);
      this.uniqueIds = new Uint8Array(size * MIN_UNIQUE_ID_LENGTH);
      randomFillSync(this.uniqueIds);
      const cookies = session.cookies;
      this.#build = (i) => {
        const at = i * stride;
        const end = buildNtsRequest(
          {
            aead,
            c2sCipher,
            uniqueId: this.uniqueId(i),
            cookie: cookies[i % cookies.length] ?? new Uint8Array(0),
            placeholders,
            fillRandom: randomFillSync,
            transmitTime: { seconds: runTag, fraction: this.fraction(i) },
          },
          this.bytes,
          at,
        );
        this.lengths[i] = end - at;
      };
    }
    for (let i = 0; i < size; i++) this.#build(i);
  }

  /** The transmit timestamp fraction request i carries now. */
  fraction(i: number): number {
    return ((((this.generations[i] ?? 0) & this.#generationMask) * 2 ** this.#indexBits) + i) >>> 0;
  }

  /** Decodes an echoed fraction into `out`; false when the index is outside the pool. */
  decode(fraction: number, out: PoolKey): boolean {
    const index = fraction & (2 ** this.#indexBits - 1);
    if (index >= this.size) return false;
    out.index = index;
    out.generation = Math.floor(fraction / 2 ** this.#indexBits) & this.#generationMask;
    return true;
  }

  /** Whether a decoded generation is request i's current one. */
  isCurrent(key: PoolKey): boolean {
    return ((this.generations[key.index] ?? 0) & this.#generationMask) === key.generation;
  }

  /** The octets of request i as it is now. */
  packet(i: number): Uint8Array {
    const at = i * this.stride;
    return this.bytes.subarray(at, at + (this.lengths[i] ?? 0));
  }

  /** Unique Identifier of request i. */
  uniqueId(i: number): Uint8Array {
    return this.uniqueIds.subarray(i * MIN_UNIQUE_ID_LENGTH, (i + 1) * MIN_UNIQUE_ID_LENGTH);
  }

  /** Re-seals request i with the next generation (after its previous send went unanswered). */
  nextGeneration(i: number): void {
    this.generations[i] = ((this.generations[i] ?? 0) + 1) & 0xffff;
    this.#build(i);
    this.rebuilt++;
  }
}

/** Writes a big-endian u32. */
export function writeU32BE(buf: Uint8Array, offset: number, value: number): void {
  buf[offset] = (value >>> 24) & 0xff;
  buf[offset + 1] = (value >>> 16) & 0xff;
  buf[offset + 2] = (value >>> 8) & 0xff;
  buf[offset + 3] = value & 0xff;
}

/** Reads a big-endian u32. */
export function readU32BE(buf: Uint8Array, offset: number): number {
  return (((buf[offset] ?? 0) << 24) | ((buf[offset + 1] ?? 0) << 16) | ((buf[offset + 2] ?? 0) << 8) | (buf[offset + 3] ?? 0)) >>> 0;
}
