/**
 * Bounds-checked big-endian reads and writes over Uint8Array.
 * Decoders check lengths before calling these; the helpers themselves never allocate.
 */

/** Reads an unsigned 16-bit big-endian integer at `offset`. */
export function readU16(buf: Uint8Array, offset: number): number {
  return ((buf[offset] ?? 0) << 8) | (buf[offset + 1] ?? 0);
}

/** Reads an unsigned 32-bit big-endian integer at `offset`. */
export function readU32(buf: Uint8Array, offset: number): number {
  return (
    ((buf[offset] ?? 0) * 0x1000000 +
      (((buf[offset + 1] ?? 0) << 16) | ((buf[offset + 2] ?? 0) << 8) | (buf[offset + 3] ?? 0))) >>> 0
  );
}

/** Writes an unsigned 16-bit big-endian integer at `offset`; returns the offset after it. */
export function writeU16(buf: Uint8Array, offset: number, value: number): number {
  buf[offset] = (value >>> 8) & 0xff;
  buf[offset + 1] = value & 0xff;
  return offset + 2;
}

/** Writes an unsigned 32-bit big-endian integer at `offset`; returns the offset after it. */
export function writeU32(buf: Uint8Array, offset: number, value: number): number {
  buf[offset] = (value >>> 24) & 0xff;
  buf[offset + 1] = (value >>> 16) & 0xff;
  buf[offset + 2] = (value >>> 8) & 0xff;
  buf[offset + 3] = value & 0xff;
  return offset + 4;
}

/** Rounds `n` up to the next multiple of 4 (RFC 7822 and RFC 8915 §5.6 padding). */
export function padTo4(n: number): number {
  return (n + 3) & ~3;
}

/** Constant-time equality of two byte strings of equal length; false when lengths differ. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** Source of cryptographically secure random bytes, injected so the core stays deterministic under test. */
export type FillRandom = (target: Uint8Array) => void;
