/**
 * NTPv4 extension fields (RFC 7822, updating RFC 5905 §7.5).
 *
 * One EF: u16 field type | u16 length | value | zero padding. The length counts the whole field,
 * header included, and is a multiple of 4. RFC 7822 §3: every EF is at least 16 octets, and when no
 * legacy MAC follows the last EF is at least 28 octets. That lets a parser tell the trailer apart:
 *   remaining 0 octets        → end of packet
 *   remaining 4 octets        → crypto-NAK (a MAC with only a key id, RFC 5905 §7.5)
 *   remaining 20 or 24 octets → legacy MAC (4-octet key id + 16/20-octet digest)
 *   remaining ≥ 28 octets     → an extension field
 *   anything else             → malformed
 * Inside the NTS encrypted plaintext (RFC 8915 §5.6) the minimums do not apply: EFs there only need
 * a length that is a multiple of 4 and at least the 4-octet header; there is no MAC.
 *
 * Scanning does not allocate: the caller reuses one cursor object, and values are offsets into the packet.
 */
import { readU16, writeU16 } from '../bytes.js';

/** Length of an EF header (type + length), RFC 7822 §3. */
export const EF_HEADER_LENGTH = 4;
/** Minimum length of any EF outside NTS ciphertext (RFC 7822 §3). */
export const EF_MIN_LENGTH = 16;
/** Minimum length of the last EF when no legacy MAC follows (RFC 7822 §3). */
export const EF_MIN_LAST_LENGTH = 28;
/** Length of a crypto-NAK trailer: key id 0 and no digest (RFC 5905 §7.5, RFC 7822 §3). */
export const CRYPTO_NAK_LENGTH = 4;
/** Legacy MAC lengths: 4-octet key id + 16-octet (MD5) or 20-octet (SHA-1) digest (RFC 5905 §7.3, RFC 7822 §3). */
export const LEGACY_MAC_LENGTHS: readonly number[] = Object.freeze([20, 24]);

/** What `scanExtensionField` found at an offset. */
export const EfScan = {
  /** An extension field; the cursor describes it. */
  field: 0,
  /** No octets remain. */
  end: 1,
  /** The remaining 20 or 24 octets are a legacy MAC (RFC 7822 §3); the cursor spans it. */
  legacyMac: 2,
  /** The remaining 4 octets are a crypto-NAK (RFC 5905 §7.5); the cursor spans it. */
  cryptoNak: 3,
  /** The octets here are neither an EF nor a MAC; the cursor's `offset` says where. */
  malformed: 4,
} as const;
/** A value of `EfScan`. */
export type EfScanValue = (typeof EfScan)[keyof typeof EfScan];

/** Reusable cursor describing the last item `scanExtensionField` found. All numbers are packet offsets. */
export interface ExtensionFieldCursor {
  /** Field type (meaningful for `EfScan.field`). */
  type: number;
  /** Offset of the EF header (or of the MAC / malformed octets). */
  offset: number;
  /** Whole EF length from its length field, header and padding included. */
  length: number;
  /** Offset of the value (offset + 4). */
  valueOffset: number;
  /** Value length including padding (length − 4). */
  valueLength: number;
  /** Offset just after this item: where the next scan starts. */
  next: number;
}

/** Creates a cursor to reuse across scans. */
export function createExtensionFieldCursor(): ExtensionFieldCursor {
  return { type: 0, offset: 0, length: 0, valueOffset: 0, valueLength: 0, next: 0 };
}

/** Points the cursor at packet[offset..end) as one item that is not a field, and returns its class. */
function span(cursor: ExtensionFieldCursor, offset: number, end: number, scan: EfScanValue): EfScanValue {
  cursor.type = 0;
  cursor.offset = offset;
  cursor.length = end - offset;
  cursor.valueOffset = offset;
  cursor.valueLength = end - offset;
  cursor.next = end;
  return scan;
}

/**
 * Classifies the octets at packet[offset..end) per RFC 7822 §3 (see the file header) and describes the
 * item in `cursor`. `end` defaults to packet.length. Never throws.
 */
export function scanExtensionField(
  packet: Uint8Array,
  offset: number,
  cursor: ExtensionFieldCursor,
  end: number = packet.length,
): EfScanValue {
  const remaining = end - offset;
  if (remaining === 0) return span(cursor, offset, offset, EfScan.end);
  if (remaining === CRYPTO_NAK_LENGTH) return span(cursor, offset, end, EfScan.cryptoNak);
  if (remaining === 20 || remaining === 24) return span(cursor, offset, end, EfScan.legacyMac);
  if (remaining < EF_MIN_LAST_LENGTH) return span(cursor, offset, end, EfScan.malformed);
  // RFC 7822 §3: multiple of 4, at least 16, inside the packet. A field that ends the packet is ≥ 28
  // automatically: anything shorter left 16..27 octets, which the checks above have already refused.
  return checkedField(cursor, packet, offset, end, EF_MIN_LENGTH);
}

/**
 * Reads the Length of the field at `offset` and points the cursor at the field when that length is a multiple
 * of 4, at least `minLength` and inside packet[offset..end); otherwise marks the rest malformed.
 */
function checkedField(cursor: ExtensionFieldCursor, packet: Uint8Array, offset: number, end: number, minLength: number): EfScanValue {
  const length = readU16(packet, offset + 2);
  if ((length & 3) !== 0 || length < minLength || length > end - offset) return span(cursor, offset, end, EfScan.malformed);
  cursor.type = readU16(packet, offset);
  cursor.offset = offset;
  cursor.length = length;
  cursor.valueOffset = offset + EF_HEADER_LENGTH;
  cursor.valueLength = length - EF_HEADER_LENGTH;
  cursor.next = offset + length;
  return EfScan.field;
}

/**
 * Scans one EF inside NTS encrypted plaintext (RFC 8915 §5.6): the RFC 7822 minimums are waived, the
 * length only has to be a multiple of 4, at least 4, and inside packet[offset..end). No MAC exists there.
 * Returns `EfScan.field`, `EfScan.end` or `EfScan.malformed`.
 */
export function scanInnerExtensionField(
  packet: Uint8Array,
  offset: number,
  cursor: ExtensionFieldCursor,
  end: number = packet.length,
): EfScanValue {
  const remaining = end - offset;
  if (remaining === 0) return span(cursor, offset, offset, EfScan.end);
  if (remaining < EF_HEADER_LENGTH) return span(cursor, offset, end, EfScan.malformed);
  return checkedField(cursor, packet, offset, end, EF_HEADER_LENGTH);
}

/** One decoded EF (allocating form for tests and tools): `value` is a view including any padding. */
export interface ExtensionField {
  readonly type: number;
  readonly offset: number;
  readonly value: Uint8Array;
}

/** What follows the last EF. */
export type ExtensionTrailer = 'none' | 'legacyMac' | 'cryptoNak';

/** Why an EF sequence did not decode. */
export type ExtensionDecodeError = 'malformed_extension_field';

/** Result of decoding every EF from an offset to the end of the packet. */
export type ExtensionDecodeResult =
  | {
      readonly ok: true;
      readonly fields: readonly ExtensionField[];
      readonly trailer: ExtensionTrailer;
      /** Offset where the trailer starts (packet length when `trailer` is 'none'). */
      readonly trailerOffset: number;
    }
  | { readonly ok: false; readonly error: ExtensionDecodeError; readonly offset: number };

/** Decodes all EFs in packet[offset..] per RFC 7822 (allocating; not for the hot path). Never throws. */
export function decodeExtensionFields(packet: Uint8Array, offset: number): ExtensionDecodeResult {
  const cursor = createExtensionFieldCursor();
  const fields: ExtensionField[] = [];
  let at = offset;
  for (;;) {
    const kind = scanExtensionField(packet, at, cursor);
    switch (kind) {
      case EfScan.field:
        fields.push({ type: cursor.type, offset: cursor.offset, value: packet.subarray(cursor.valueOffset, cursor.next) });
        at = cursor.next;
        break;
      case EfScan.end:
        return { ok: true, fields, trailer: 'none', trailerOffset: at };
      case EfScan.legacyMac:
        return { ok: true, fields, trailer: 'legacyMac', trailerOffset: at };
      case EfScan.cryptoNak:
        return { ok: true, fields, trailer: 'cryptoNak', trailerOffset: at };
      case EfScan.malformed:
        return { ok: false, error: 'malformed_extension_field', offset: at };
      default: {
        const unreachable: never = kind;
        return unreachable;
      }
    }
  }
}

/** Total EF length for a value of `valueLength` octets: header + value, padded to 4, at least `minLength`. */
export function extensionFieldLength(valueLength: number, minLength: number = EF_MIN_LENGTH): number {
  const natural = (EF_HEADER_LENGTH + valueLength + 3) & ~3;
  return natural < minLength ? minLength : natural;
}

/**
 * Writes one EF (type, value, zero padding up to `extensionFieldLength(value.length, minLength)`) at
 * out[offset..]; returns the offset after it. Throws RangeError when it does not fit or exceeds 65532
 * octets (caller bugs).
 */
export function writeExtensionField(
  out: Uint8Array,
  offset: number,
  type: number,
  value: Uint8Array,
  minLength: number = EF_MIN_LENGTH,
): number {
  const length = extensionFieldLength(value.length, minLength);
  if (length > 0xfffc) throw new RangeError('writeExtensionField: field longer than 65532 octets');
  if (offset < 0 || offset + length > out.length) throw new RangeError('writeExtensionField: output buffer too small');
  writeU16(out, offset, type);
  writeU16(out, offset + 2, length);
  out.set(value, offset + EF_HEADER_LENGTH);
  out.fill(0, offset + EF_HEADER_LENGTH + value.length, offset + length);
  return offset + length;
}
