/**
 * The checks every sender applies to a matched reply: a cheap one on every reply, the full NTS check
 * (`verifyNtsResponse`: Unique Identifier, origin timestamp, Authenticator with S2C, a cookie inside) on
 * a sample. Returns the reason a reply is invalid, or undefined when it passes.
 */
import type { AeadCipher } from '../../src/core/crypto/aead.js';
import { verifyNtsResponse } from '../../src/cli/ntp-client.js';
import { RECEIVE_OFFSET, readU32BE, type RequestPool } from './pool.js';

/** The cheap check: not longer than the request, mode 4 version 4, not stratum 0 (NTS NAK or Kiss-o'-Death). */
export function cheapReplyProblem(reply: Uint8Array, offset: number, length: number, requestLength: number, nts: boolean): string | undefined {
  if (length > requestLength) return 'larger_than_request';
  const first = reply[offset] ?? 0;
  if ((first & 7) !== 4 || ((first >>> 3) & 7) !== 4) return 'not_server_reply';
  if (reply[offset + 1] === 0) return nts ? 'nts_nak_or_kod' : 'kiss_of_death';
  return undefined;
}

/** The full check of a sampled reply to pool request `index`. */
export function fullReplyProblem(
  reply: Uint8Array,
  offset: number,
  length: number,
  pool: RequestPool,
  index: number,
  s2cCipher: AeadCipher | undefined,
): string | undefined {
  if (s2cCipher !== undefined) {
    const checked = verifyNtsResponse(reply.subarray(offset, offset + length), {
      uniqueId: pool.uniqueId(index),
      transmitTime: { seconds: pool.runTag, fraction: pool.fraction(index) },
      s2cCipher,
    });
    return checked.ok ? undefined : checked.error;
  }
  if (readU32BE(reply, offset + RECEIVE_OFFSET) === 0 && readU32BE(reply, offset + RECEIVE_OFFSET + 4) === 0) return 'zero_receive_timestamp';
  return undefined;
}
