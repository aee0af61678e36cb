/**
 * IP addresses as numbers, for per-client tables and access lists: text → four 32-bit words of the
 * IPv6 form, prefix masks and a seeded hash. Pure: the shells pass the peer address strings that
 * node:net and node:dgram report ("192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", "fe80::1%eth0").
 *
 * IPv4 is held in its IPv4-mapped form (::ffff:a.b.c.d, RFC 4291 §2.5.5.2), so an IPv4 client reached
 * through a dual-stack IPv6 socket and the same client on an IPv4 socket are one key.
 */

/** Address family after normalisation: 4 for IPv4 and IPv4-mapped IPv6, 6 for other IPv6. */
export type IpFamily = 4 | 6;

/** Words 0..2 of every IPv4 address in mapped form: 0, 0, 0x0000ffff. */
const V4_MAPPED_WORD2 = 0xffff;

function parseIpv4Into(text: string, out: Uint32Array, wordIndex: number): boolean {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      if (digits === 0 || dots === 3) return false;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits === 3 || (digits > 0 && part === 0)) return false; // no leading zeros (node:net agrees)
      part = part * 10 + (c - 0x30);
      if (part > 255) return false;
      digits++;
    } else {
      return false;
    }
  }
  if (digits === 0 || dots !== 3) return false;
  out[wordIndex] = (value * 256 + part) >>> 0;
  return true;
}

/** Parses 1..4 hex digits; -1 when `text` is not such a group. */
function hexGroup(text: string): number {
  if (text.length === 0 || text.length > 4) return -1;
  let v = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    let d: number;
    if (c >= 0x30 && c <= 0x39) d = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) d = c - 0x57;
    else if (c >= 0x41 && c <= 0x46) d = c - 0x37;
    else return -1;
    v = v * 16 + d;
  }
  return v;
}

function parseIpv6Into(text: string, out: Uint32Array): boolean {
  const groups: number[] = [];
  let tailV4: Uint32Array | undefined;
  let body = text;
  const lastColon = body.lastIndexOf(':');
  if (lastColon < 0) return false;
  if (body.indexOf('.', lastColon) >= 0) {
    tailV4 = new Uint32Array(1);
    if (!parseIpv4Into(body.slice(lastColon + 1), tailV4, 0)) return false;
    // "::1.2.3.4" keeps its "::"; "1::2:1.2.3.4" drops the separator before the IPv4 part.
    body = body.slice(0, lastColon + 1);
    if (body.endsWith(':') && !body.endsWith('::')) body = body.slice(0, -1);
  }
  const halves = body.split('::');
  if (halves.length > 2) return false;
  const readGroups = (s: string): number[] | undefined => {
    if (s === '') return [];
    const parts = s.split(':');
    const values: number[] = [];
    for (const p of parts) {
      const v = hexGroup(p);
      if (v < 0) return undefined;
      values.push(v);
    }
    return values;
  };
  const head = readGroups(halves[0] ?? '');
  if (head === undefined) return false;
  const wanted = tailV4 === undefined ? 8 : 6;
  if (halves.length === 2) {
    const rest = readGroups(halves[1] ?? '');
    if (rest === undefined) return false;
    const fill = wanted - head.length - rest.length;
    if (fill < 1) return false;
    groups.push(...head);
    for (let i = 0; i < fill; i++) groups.push(0);
    groups.push(...rest);
  } else {
    if (head.length !== wanted) return false;
    groups.push(...head);
  }
  for (let w = 0; w < wanted / 2; w++) out[w] = (((groups[2 * w] ?? 0) << 16) | (groups[2 * w + 1] ?? 0)) >>> 0;
  if (tailV4 !== undefined) out[3] = tailV4[0] ?? 0;
  return true;
}

/**
 * Parses an IP literal into `out` (four words, most significant first) in IPv6 form, IPv4 as
 * IPv4-mapped. A zone id ("%eth0") is ignored. Returns the normalised family, or 0 when `text` is not an
 * IP literal (then `out` is unspecified).
 */
export function parseIpAddress(text: string, out: Uint32Array): IpFamily | 0 {
  const percent = text.indexOf('%');
  const bare = percent >= 0 ? text.slice(0, percent) : text;
  if (bare.includes(':')) {
    if (!parseIpv6Into(bare, out)) return 0;
  } else {
    out[0] = 0;
    out[1] = 0;
    out[2] = V4_MAPPED_WORD2;
    if (!parseIpv4Into(bare, out, 3)) return 0;
    return 4;
  }
  return out[0] === 0 && out[1] === 0 && out[2] === V4_MAPPED_WORD2 ? 4 : 6;
}

/**
 * Clears every bit of `words` after the first `prefixBits` of the family's own address (IPv4: 0..32
 * bits of word 3; IPv6: 0..128 bits). The mapped-IPv4 marker in words 0..2 is kept.
 */
export function maskIpPrefix(words: Uint32Array, family: IpFamily, prefixBits: number): void {
  const total = family === 4 ? 96 + prefixBits : prefixBits;
  for (let w = family === 4 ? 3 : 0; w < 4; w++) {
    const keep = total - 32 * w;
    if (keep >= 32) continue;
    words[w] = keep <= 0 ? 0 : ((words[w] ?? 0) & (0xffffffff << (32 - keep))) >>> 0;
  }
}

/** Formats four words back to text: dotted quad for family 4, RFC 5952 IPv6 otherwise (for logs and tests). */
export function formatIpAddress(words: Uint32Array, family: IpFamily): string {
  if (family === 4) {
    const v = words[3] ?? 0;
    return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
  }
  const groups: number[] = [];
  for (let w = 0; w < 4; w++) groups.push((words[w] ?? 0) >>> 16, (words[w] ?? 0) & 0xffff);
  // RFC 5952 §4.2: the longest run (≥ 2) of zero groups becomes "::", the first one on a tie.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (g: number[]): string => g.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

/** A 32-bit hash of the four words under `seed` (MurmurHash3's finalizer per word); spreads keys over a table. */
export function hashIpWords(words: Uint32Array, seed: number): number {
  let h = seed | 0;
  for (let w = 0; w < 4; w++) {
    let k = Math.imul(words[w] ?? 0, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= 16;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
