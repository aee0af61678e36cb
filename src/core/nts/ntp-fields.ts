/**
 * NTS extension fields in NTPv4 packets (RFC 8915 §5.2–§5.6): parsing a client request and writing
 * the server's fields.
 *
 * Trust is visible in the types. A request goes through three stages:
 *   1. `parseNtsRequest` → `UntrustedNtsRequest`: the cleartext EFs before the Authenticator were found
 *      and counted, but nothing is verified yet.
 *   2. the caller opens the cookie (cookie.ts) to get the AEAD and C2S;
 *   3. `authenticateNtsRequest` → `AuthenticatedNtsRequest`: the Authenticator verified under C2S, so the
 *      cleartext EFs before it are *authenticated*, and the EFs inside its ciphertext are *encrypted*
 *      (authenticated and confidential). EFs after the Authenticator are never looked at (§5.6/§5.7:
 *      they are neither authenticated nor encrypted and MUST be discarded).
 *
 * Rules enforced here (client MUSTs the server relies on, §5.3–§5.7):
 *   - exactly one Unique Identifier, body ≥ 32 octets, before the Authenticator;
 *   - exactly one NTS Cookie, before the Authenticator (it cannot be inside: the keys to decrypt come from it);
 *   - a placeholder only counts when its body length equals the cookie's body length (§5.5);
 *   - exactly one Authenticator (the first one ends parsing), with a consistent body (§5.6);
 *   - the nonce-padding rule of §5.6 (checked in stage 3, when the AEAD is known): violations are dropped;
 *   - unknown EFs are tolerated and skipped (never echoed).
 *
 * The hot path does not allocate: one `NtsRequestScratch` is reused, results are that object (or a
 * preallocated frozen failure / plain-NTP value), and all positions are offsets into the packet. A
 * returned request is valid until the next parse with the same scratch.
 */
import { padTo4, readU16, writeU16, type FillRandom } from '../bytes.js';
import { openRegions, type AeadAlgorithm, type AeadCipher } from '../crypto/aead.js';
import { NTP_HEADER_LENGTH } from '../ntp/header.js';
import {
  EF_HEADER_LENGTH,
  EfScan,
  createExtensionFieldCursor,
  scanExtensionField,
  scanInnerExtensionField,
  type ExtensionFieldCursor,
} from '../ntp/extension.js';
import { NtsExtensionFieldType } from './ids.js';

/** Minimum Unique Identifier body length: 32 octets (RFC 8915 §5.3). */
export const UNIQUE_ID_MIN_LENGTH = 32;
/**
 * Most cookies a server puts in one reply: 8 (RFC 8915 §5.7: a client sends at most 7 placeholders,
 * so 1 + 7 refills its stash of 8; OPERATIONS.md hardening limit).
 */
export const MAX_COOKIES_PER_REPLY = 8;
/** Octets before the nonce in an Authenticator body: nonce length u16 + ciphertext length u16 (RFC 8915 §5.6). */
export const AUTHENTICATOR_LENGTHS_SIZE = 4;

/** Trust level of extension fields (RFC 8915 §5.2). */
export type Trust = 'untrusted' | 'authenticated';

/** A plain NTP request: no NTS Cookie, Placeholder or Authenticator EF. `trailer` says what ends it (RFC 7822 §3). */
export interface PlainNtpRequest {
  readonly ok: true;
  readonly kind: 'plain';
  readonly trailer: 'none' | 'legacyMac' | 'cryptoNak';
}

/** Offsets of the NTS fields of a request; every number is an offset/length within the packet. */
export interface NtsRequestFields {
  readonly ok: true;
  readonly kind: 'nts';
  /** Offset of the whole Unique Identifier EF (header included), for echoing (§5.3). */
  readonly uniqueIdFieldOffset: number;
  /** Length of the whole Unique Identifier EF. */
  readonly uniqueIdFieldLength: number;
  /** Offset of the NTS Cookie EF body. */
  readonly cookieOffset: number;
  /** Length of the NTS Cookie EF body (padding included, §5.4). */
  readonly cookieLength: number;
  /** Placeholders before the Authenticator whose body length equals the cookie's (§5.5). */
  readonly cleartextPlaceholderCount: number;
  /** Offset of the Authenticator EF: the associated data is packet[0, authenticatorOffset) (§5.6). */
  readonly authenticatorOffset: number;
  /** Offset of the nonce. */
  readonly nonceOffset: number;
  /** Unpadded nonce length (§5.6). */
  readonly nonceLength: number;
  /** Offset of the ciphertext. */
  readonly ciphertextOffset: number;
  /** Unpadded ciphertext length, tag included (§5.6). */
  readonly ciphertextLength: number;
  /** Octets of additional padding after the padded ciphertext (§5.6). */
  readonly additionalPaddingLength: number;
}

/** Stage 1: fields located, nothing verified. */
export interface UntrustedNtsRequest extends NtsRequestFields {
  readonly trust: 'untrusted';
}

/** Stage 3: the Authenticator verified; cleartext EFs are authenticated, EFs in the ciphertext are encrypted. */
export interface AuthenticatedNtsRequest extends NtsRequestFields {
  readonly trust: 'authenticated';
  /** Valid placeholders found inside the ciphertext (encrypted; §5.5 allows it). */
  readonly encryptedPlaceholderCount: number;
  /** Length of the decrypted plaintext held in the scratch object. */
  readonly plaintextLength: number;
}

/** Why an NTS request was refused. Each maps to one responder outcome. */
export type NtsRequestError =
  /** An EF before the Authenticator breaks RFC 7822 framing. */
  | 'malformed_extension_fields'
  /** No Unique Identifier before the Authenticator (§5.3, §5.7). */
  | 'missing_unique_id'
  /** More than one Unique Identifier (§5.7: exactly one). */
  | 'duplicate_unique_id'
  /** Unique Identifier body shorter than 32 octets (§5.3). */
  | 'unique_id_too_short'
  /** No NTS Cookie before the Authenticator (§5.7: exactly one). */
  | 'missing_cookie'
  /** More than one NTS Cookie (§5.7). */
  | 'duplicate_cookie'
  /** No Authenticator EF (§5.7: exactly one). */
  | 'missing_authenticator'
  /** Authenticator body lengths inconsistent, or ciphertext shorter than the tag (§5.6). */
  | 'malformed_authenticator'
  /** Nonce length not accepted by the AEAD, or the §5.6 additional-padding rule is broken (MUST drop). */
  | 'bad_nonce'
  /** The AEAD did not verify under C2S (§5.7: NAK). */
  | 'auth_failed'
  /** The decrypted plaintext is not a sequence of EFs (§5.6). */
  | 'malformed_encrypted_fields';

/** A refused request (preallocated, frozen). */
export interface NtsRequestFailure {
  readonly ok: false;
  readonly error: NtsRequestError;
}

/** Result of `parseNtsRequest`. */
export type NtsParseResult = PlainNtpRequest | UntrustedNtsRequest | NtsRequestFailure;
/** Result of `authenticateNtsRequest`. */
export type NtsAuthResult = AuthenticatedNtsRequest | NtsRequestFailure;

const FAILURES: { readonly [E in NtsRequestError]: NtsRequestFailure } = Object.freeze({
  malformed_extension_fields: Object.freeze({ ok: false, error: 'malformed_extension_fields' }),
  missing_unique_id: Object.freeze({ ok: false, error: 'missing_unique_id' }),
  duplicate_unique_id: Object.freeze({ ok: false, error: 'duplicate_unique_id' }),
  unique_id_too_short: Object.freeze({ ok: false, error: 'unique_id_too_short' }),
  missing_cookie: Object.freeze({ ok: false, error: 'missing_cookie' }),
  duplicate_cookie: Object.freeze({ ok: false, error: 'duplicate_cookie' }),
  missing_authenticator: Object.freeze({ ok: false, error: 'missing_authenticator' }),
  malformed_authenticator: Object.freeze({ ok: false, error: 'malformed_authenticator' }),
  bad_nonce: Object.freeze({ ok: false, error: 'bad_nonce' }),
  auth_failed: Object.freeze({ ok: false, error: 'auth_failed' }),
  malformed_encrypted_fields: Object.freeze({ ok: false, error: 'malformed_encrypted_fields' }),
} as const);

const PLAIN_NONE: PlainNtpRequest = Object.freeze({ ok: true, kind: 'plain', trailer: 'none' });
const PLAIN_MAC: PlainNtpRequest = Object.freeze({ ok: true, kind: 'plain', trailer: 'legacyMac' });
const PLAIN_NAK: PlainNtpRequest = Object.freeze({ ok: true, kind: 'plain', trailer: 'cryptoNak' });

/** Reusable parse state; one per responder context. Not shared between threads or re-entrant calls. */
export class NtsRequestScratch {
  readonly ok = true as const;
  readonly kind = 'nts' as const;
  /** Stage marker; the object is handed out typed as the interface of the stage it reached. */
  trust: Trust = 'untrusted';
  uniqueIdFieldOffset = 0;
  uniqueIdFieldLength = 0;
  cookieOffset = 0;
  cookieLength = 0;
  cleartextPlaceholderCount = 0;
  authenticatorOffset = 0;
  nonceOffset = 0;
  nonceLength = 0;
  ciphertextOffset = 0;
  ciphertextLength = 0;
  additionalPaddingLength = 0;
  encryptedPlaceholderCount = 0;
  plaintextLength = 0;
  /** Decrypted request plaintext (grows on demand). */
  plaintext: Uint8Array = new Uint8Array(1024);
  /** Stage reached by the last call: 0 none (or refused), 1 parsed, 2 authenticated. */
  stage = 0;
  readonly cursor: ExtensionFieldCursor = createExtensionFieldCursor();
}

/** Creates a reusable parse state. */
export function createNtsRequestScratch(): NtsRequestScratch {
  return new NtsRequestScratch();
}

/**
 * Stage 1: parses the EFs of an NTPv4 request after the 48-octet header (RFC 7822, RFC 8915 §5).
 * Returns a plain-NTP marker when no Cookie/Placeholder/Authenticator EF appears, the untrusted NTS
 * request (the scratch object), or a failure. Never throws; does not allocate.
 */
export function parseNtsRequest(packet: Uint8Array, scratch: NtsRequestScratch): NtsParseResult {
  scratch.stage = 0;
  const cursor = scratch.cursor;
  let uidCount = 0;
  let cookieCount = 0;
  let placeholderCount = 0;
  let sawNts = false;
  let at = NTP_HEADER_LENGTH;
  let authenticatorAt = -1;
  let uidTooShort = false;
  for (;;) {
    const kind = scanExtensionField(packet, at, cursor);
    if (kind !== EfScan.field) {
      if (kind === EfScan.malformed) return FAILURES.malformed_extension_fields;
      if (!sawNts) return kind === EfScan.legacyMac ? PLAIN_MAC : kind === EfScan.cryptoNak ? PLAIN_NAK : PLAIN_NONE;
      break;
    }
    const type = cursor.type;
    if (type === NtsExtensionFieldType.uniqueIdentifier) {
      uidCount++;
      if (cursor.valueLength < UNIQUE_ID_MIN_LENGTH) uidTooShort = true;
      scratch.uniqueIdFieldOffset = cursor.offset;
      scratch.uniqueIdFieldLength = cursor.length;
    } else if (type === NtsExtensionFieldType.ntsCookie) {
      sawNts = true;
      cookieCount++;
      scratch.cookieOffset = cursor.valueOffset;
      scratch.cookieLength = cursor.valueLength;
    } else if (type === NtsExtensionFieldType.ntsCookiePlaceholder) {
      sawNts = true;
      placeholderCount++;
    } else if (type === NtsExtensionFieldType.ntsAuthenticatorAndEncrypted) {
      sawNts = true;
      authenticatorAt = cursor.offset;
      break; // §5.7: whatever follows the Authenticator is discarded unread.
    }
    at = cursor.next;
  }
  if (!sawNts) return PLAIN_NONE;
  if (uidCount === 0) return FAILURES.missing_unique_id;
  if (uidCount > 1) return FAILURES.duplicate_unique_id;
  if (uidTooShort) return FAILURES.unique_id_too_short;
  if (cookieCount === 0) return FAILURES.missing_cookie;
  if (cookieCount > 1) return FAILURES.duplicate_cookie;
  if (authenticatorAt < 0) return FAILURES.missing_authenticator;

  // Authenticator body (§5.6): nonce length, ciphertext length, padded nonce, padded ciphertext, padding.
  const bodyOffset = cursor.valueOffset;
  const bodyLength = cursor.valueLength;
  const nonceLength = readU16(packet, bodyOffset);
  const ciphertextLength = readU16(packet, bodyOffset + 2);
  const nonceField = padTo4(nonceLength);
  const ciphertextField = padTo4(ciphertextLength);
  const used = AUTHENTICATOR_LENGTHS_SIZE + nonceField + ciphertextField;
  if (used > bodyLength) return FAILURES.malformed_authenticator;
  scratch.authenticatorOffset = authenticatorAt;
  scratch.nonceOffset = bodyOffset + AUTHENTICATOR_LENGTHS_SIZE;
  scratch.nonceLength = nonceLength;
  scratch.ciphertextOffset = bodyOffset + AUTHENTICATOR_LENGTHS_SIZE + nonceField;
  scratch.ciphertextLength = ciphertextLength;
  scratch.additionalPaddingLength = bodyLength - used;

  // §5.5: a placeholder counts only when its body is exactly as long as the cookie's. Placeholders
  // may precede the cookie, so they are counted in a second pass over the cleartext EFs.
  let valid = 0;
  if (placeholderCount > 0) {
    for (at = NTP_HEADER_LENGTH; at < authenticatorAt; at = cursor.next) {
      scanExtensionField(packet, at, cursor); // already validated by the first pass
      if (cursor.type === NtsExtensionFieldType.ntsCookiePlaceholder && cursor.valueLength === scratch.cookieLength) valid++;
    }
  }
  scratch.cleartextPlaceholderCount = valid;
  scratch.encryptedPlaceholderCount = 0;
  scratch.plaintextLength = 0;
  scratch.trust = 'untrusted';
  scratch.stage = 1;
  return scratch as UntrustedNtsRequest;
}

/**
 * The nonce requirement N_REQ of §5.6 for an AEAD: min(16, N_MAX) rounded up to a multiple of 4
 * (16 for AES-SIV-CMAC, 12 for AES-GCM-SIV).
 */
export function requiredNonceFieldLength(aead: AeadAlgorithm): number {
  return padTo4(Math.min(16, aead.maxNonceLength));
}

/**
 * RFC 8915 §5.6 (servers MUST drop violations): when the padded nonce field is shorter than N_REQ,
 * the client must have added at least N_REQ − N_LEN octets of additional padding.
 */
export function satisfiesNoncePadding(request: NtsRequestFields, aead: AeadAlgorithm): boolean {
  const nLen = padTo4(request.nonceLength);
  const nReq = requiredNonceFieldLength(aead);
  return nLen >= nReq || request.additionalPaddingLength >= nReq - nLen;
}

/**
 * Stage 3: checks the nonce (AEAD range and the §5.6 padding rule), verifies the Authenticator with
 * the C2S key over packet[0, authenticatorOffset) and decrypts its ciphertext into scratch.plaintext,
 * then counts valid placeholders inside it. `c2s` is a keyed cipher for the cookie's AEAD. Never throws
 * on peer input.
 */
export function authenticateNtsRequest(
  packet: Uint8Array,
  scratch: NtsRequestScratch,
  aead: AeadAlgorithm,
  c2s: AeadCipher,
): NtsAuthResult {
  if (scratch.stage !== 1) throw new Error('authenticateNtsRequest: call parseNtsRequest first');
  scratch.stage = 0;
  const n = scratch.nonceLength;
  if (n < aead.minNonceLength || n > aead.maxNonceLength || !satisfiesNoncePadding(scratch, aead)) {
    return FAILURES.bad_nonce;
  }
  const ctLength = scratch.ciphertextLength;
  if (ctLength < aead.tagLength) return FAILURES.malformed_authenticator;
  const plainLength = ctLength - aead.tagLength;
  if (scratch.plaintext.length < plainLength) scratch.plaintext = new Uint8Array(padTo4(plainLength) + 256);
  const plaintext = scratch.plaintext;
  const end = openRegions(c2s, packet, scratch.nonceOffset, n, 0, scratch.authenticatorOffset, packet, scratch.ciphertextOffset, ctLength, plaintext, 0);
  if (end < 0) return FAILURES.auth_failed;
  // §5.6: the plaintext is a run of EFs, each a multiple of 4 octets (RFC 7822 minimums waived).
  const cursor = scratch.cursor;
  let encryptedPlaceholders = 0;
  for (let at = 0; ; at = cursor.next) {
    const kind = scanInnerExtensionField(plaintext, at, cursor, end);
    if (kind === EfScan.end) break;
    if (kind !== EfScan.field) return FAILURES.malformed_encrypted_fields;
    if (cursor.type === NtsExtensionFieldType.ntsCookiePlaceholder && cursor.valueLength === scratch.cookieLength) {
      encryptedPlaceholders++;
    }
  }
  scratch.encryptedPlaceholderCount = encryptedPlaceholders;
  scratch.plaintextLength = end;
  scratch.trust = 'authenticated';
  scratch.stage = 2;
  return scratch as AuthenticatedNtsRequest;
}

/** Length of an Authenticator EF carrying `nonceLength` nonce octets and `plaintextLength` plaintext octets (§5.6), no extra padding. */
export function authenticatorFieldLength(nonceLength: number, plaintextLength: number, tagLength: number): number {
  return EF_HEADER_LENGTH + AUTHENTICATOR_LENGTHS_SIZE + padTo4(nonceLength) + padTo4(plaintextLength + tagLength);
}

/**
 * Writes an Authenticator EF header and its two lengths at out[offset..] (§5.6); returns the offset of
 * the nonce. `fieldLength` is the whole EF length (see authenticatorFieldLength plus any padding).
 */
export function writeAuthenticatorPrefix(
  out: Uint8Array,
  offset: number,
  fieldLength: number,
  nonceLength: number,
  ciphertextLength: number,
): number {
  writeU16(out, offset, NtsExtensionFieldType.ntsAuthenticatorAndEncrypted);
  writeU16(out, offset + 2, fieldLength);
  writeU16(out, offset + 4, nonceLength);
  writeU16(out, offset + 6, ciphertextLength);
  return offset + EF_HEADER_LENGTH + AUTHENTICATOR_LENGTHS_SIZE;
}

/** Writes an EF header (type, length) at out[offset..]; returns the offset of its body. */
export function writeFieldHeader(out: Uint8Array, offset: number, type: number, fieldLength: number): number {
  writeU16(out, offset, type);
  writeU16(out, offset + 2, fieldLength);
  return offset + EF_HEADER_LENGTH;
}

/** Inputs for `encodeNtsClientRequest` (client side: load generators, benchmarks, interop tools). */
export interface NtsClientRequestInput {
  /** The 48-octet NTP header to send (mode 3, version 4). */
  readonly header: Uint8Array;
  /** Unique Identifier body (≥ 32 random octets, §5.3). */
  readonly uniqueId: Uint8Array;
  /** A cookie from NTS-KE or an earlier reply. */
  readonly cookie: Uint8Array;
  /** Number of placeholders to send in cleartext (≤ 7, §5.7). */
  readonly placeholders: number;
  /** The negotiated AEAD and a cipher keyed with C2S. */
  readonly aead: AeadAlgorithm;
  readonly c2s: AeadCipher;
}

/**
 * Builds a client NTS request (RFC 8915 §5.7 client side) into out[0..); returns its length. Uses a
 * full-size nonce from `fillRandom`, so no additional padding is needed. Throws RangeError when `out`
 * is too small. Not used by the server; provided for tools and benchmarks.
 */
export function encodeNtsClientRequest(input: NtsClientRequestInput, fillRandom: FillRandom, out: Uint8Array): number {
  const cookieField = EF_HEADER_LENGTH + padTo4(input.cookie.length);
  const uidField = EF_HEADER_LENGTH + padTo4(input.uniqueId.length);
  const nonceLength = input.aead.nonceLength;
  const authField = authenticatorFieldLength(nonceLength, 0, input.aead.tagLength);
  const total = NTP_HEADER_LENGTH + uidField + cookieField * (1 + input.placeholders) + authField;
  if (out.length < total) throw new RangeError('encodeNtsClientRequest: output buffer too small');
  out.fill(0, 0, total);
  out.set(input.header.subarray(0, NTP_HEADER_LENGTH), 0);
  let at = NTP_HEADER_LENGTH;
  out.set(input.uniqueId, writeFieldHeader(out, at, NtsExtensionFieldType.uniqueIdentifier, uidField));
  at += uidField;
  out.set(input.cookie, writeFieldHeader(out, at, NtsExtensionFieldType.ntsCookie, cookieField));
  at += cookieField;
  for (let i = 0; i < input.placeholders; i++) {
    writeFieldHeader(out, at, NtsExtensionFieldType.ntsCookiePlaceholder, cookieField);
    at += cookieField;
  }
  const authOffset = at;
  const nonceAt = writeAuthenticatorPrefix(out, authOffset, authField, nonceLength, input.aead.tagLength);
  const nonce = out.subarray(nonceAt, nonceAt + nonceLength);
  fillRandom(nonce);
  input.c2s.seal(nonce, out.subarray(0, authOffset), new Uint8Array(0), out, nonceAt + padTo4(nonceLength));
  return total;
}
