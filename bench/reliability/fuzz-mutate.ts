/**
 * The fuzz battery's mutator: edits of valid inputs described as data, so that the bench drives them from
 * a fast seeded PRNG and the npm-test slice from fast-check (which shrinks a failing list of edits).
 *
 * Edits: bit flips, byte sets (with boundary values), u16 edits at length fields the target names (or
 * anywhere), truncation, extension, insertion, deletion, duplication of a chunk (a repeated extension
 * field or record), and splicing two valid inputs (a prefix of one, a suffix of the other).
 */
import type { Rng } from './common.js';

/** One edit. Positions are taken modulo the current length (+1 where the end is a valid position). */
export type Mutation =
  | { readonly op: 'flip'; readonly at: number; readonly bit: number }
  | { readonly op: 'set'; readonly at: number; readonly value: number }
  | { readonly op: 'u16'; readonly at: number; readonly value: number; readonly hinted: boolean }
  | { readonly op: 'truncate'; readonly at: number }
  | { readonly op: 'extend'; readonly bytes: Uint8Array }
  | { readonly op: 'insert'; readonly at: number; readonly bytes: Uint8Array }
  | { readonly op: 'delete'; readonly at: number; readonly count: number }
  | { readonly op: 'duplicate'; readonly at: number; readonly count: number }
  | { readonly op: 'splice'; readonly other: number; readonly at: number; readonly otherAt: number };

/** The mutation kinds, for reports. */
export const MUTATION_OPS = ['flip', 'set', 'u16', 'truncate', 'extend', 'insert', 'delete', 'duplicate', 'splice'] as const;

/** Byte values that sit on boundaries. */
export const INTERESTING_BYTES: readonly number[] = [0x00, 0x01, 0x03, 0x04, 0x7f, 0x80, 0xfe, 0xff];

/** u16 values that sit on boundaries of lengths and types. */
export const INTERESTING_U16: readonly number[] = [0, 1, 2, 3, 4, 5, 8, 15, 16, 28, 31, 32, 36, 100, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff];

/** What applying edits may consult: the target's length-field offsets and the other valid inputs. */
export interface MutationContext {
  /** Offsets of u16 length/count/type fields in `input` (structure-aware edits); may be empty. */
  readonly fieldOffsets: (input: Uint8Array) => readonly number[];
  /** The n-th other input to splice with (modulo the corpus size). */
  readonly other: (n: number) => Uint8Array;
  /** Longest input the target takes (longer results are cut). */
  readonly maxLength: number;
}

function concat(...parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Applies one edit to a copy of `input`. */
export function applyMutation(input: Uint8Array, m: Mutation, ctx: MutationContext): Uint8Array {
  const n = input.length;
  switch (m.op) {
    case 'flip': {
      if (n === 0) return input;
      const out = input.slice();
      const at = m.at % n;
      out[at] = (out[at] ?? 0) ^ (1 << (m.bit & 7));
      return out;
    }
    case 'set': {
      if (n === 0) return input;
      const out = input.slice();
      out[m.at % n] = m.value & 0xff;
      return out;
    }
    case 'u16': {
      if (n < 2) return input;
      const hints = m.hinted ? ctx.fieldOffsets(input).filter((o) => o + 2 <= n) : [];
      const at = hints.length > 0 ? (hints[m.at % hints.length] ?? 0) : m.at % (n - 1);
      const out = input.slice();
      out[at] = (m.value >>> 8) & 0xff;
      out[at + 1] = m.value & 0xff;
      return out;
    }
    case 'truncate':
      return input.subarray(0, m.at % (n + 1)).slice();
    case 'extend':
      return concat(input, m.bytes).subarray(0, ctx.maxLength);
    case 'insert': {
      const at = m.at % (n + 1);
      return concat(input.subarray(0, at), m.bytes, input.subarray(at)).subarray(0, ctx.maxLength);
    }
    case 'delete': {
      if (n === 0) return input;
      const at = m.at % n;
      return concat(input.subarray(0, at), input.subarray(Math.min(n, at + Math.max(1, m.count))));
    }
    case 'duplicate': {
      if (n === 0) return input;
      const at = m.at % n;
      const chunk = input.subarray(at, Math.min(n, at + Math.max(1, m.count)));
      return concat(input.subarray(0, at + chunk.length), chunk, input.subarray(at + chunk.length)).subarray(0, ctx.maxLength);
    }
    case 'splice': {
      const other = ctx.other(m.other);
      const cut = m.at % (n + 1);
      const from = m.otherAt % (other.length + 1);
      return concat(input.subarray(0, cut), other.subarray(from)).subarray(0, ctx.maxLength);
    }
  }
}

/** Applies edits in order. */
export function applyMutations(input: Uint8Array, edits: readonly Mutation[], ctx: MutationContext): Uint8Array {
  let out = input;
  for (const m of edits) out = applyMutation(out, m, ctx);
  return out;
}

function randomBytes(rng: Rng, max: number): Uint8Array {
  const out = new Uint8Array(rng.int(1, max));
  const interesting = rng.chance(0.3);
  for (let i = 0; i < out.length; i++) out[i] = interesting ? rng.pick(INTERESTING_BYTES) : rng.u32() & 0xff;
  return out;
}

/** One random edit (the bench's generator; the test slice uses fast-check's, below in the test). */
export function randomMutation(rng: Rng): Mutation {
  const at = rng.u32();
  switch (rng.below(12)) {
    case 0:
    case 1:
    case 2:
      return { op: 'flip', at, bit: rng.below(8) };
    case 3:
      return { op: 'set', at, value: rng.chance(0.5) ? rng.pick(INTERESTING_BYTES) : rng.below(256) };
    case 4:
    case 5:
      return { op: 'u16', at, value: rng.chance(0.7) ? rng.pick(INTERESTING_U16) : rng.below(0x10000), hinted: rng.chance(0.8) };
    case 6:
      return { op: 'truncate', at };
    case 7:
      // Mostly short; sometimes to the largest datagram or record.
      return { op: 'extend', bytes: randomBytes(rng, rng.chance(0.05) ? 70_000 : 64) };
    case 8:
      return { op: 'insert', at, bytes: randomBytes(rng, 16) };
    case 9:
      return { op: 'delete', at, count: rng.int(1, rng.chance(0.5) ? 4 : 128) };
    case 10:
      return { op: 'duplicate', at, count: rng.int(1, 200) };
    default:
      return { op: 'splice', other: rng.u32(), at, otherAt: rng.u32() };
  }
}

/** 1–4 random edits, fewer more often (small edits keep the input close to valid, where bugs hide). */
export function randomMutations(rng: Rng): Mutation[] {
  const count = rng.chance(0.5) ? 1 : rng.int(2, 4);
  const out: Mutation[] = [];
  for (let i = 0; i < count; i++) out.push(randomMutation(rng));
  return out;
}
