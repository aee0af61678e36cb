/**
 * CIDR prefixes ("10.0.0.0/8", "2001:db8::/32", or a bare address = one host) for access lists such as
 * `proxy-trusted-sources`. Pure; addresses are compared in the IPv4-mapped form of core/ip.ts, so an
 * IPv4 peer seen as ::ffff:a.b.c.d on a dual-stack socket matches an IPv4 prefix.
 */
import { maskIpPrefix, parseIpAddress, type IpFamily } from './ip.js';

/** A parsed prefix. */
export interface CidrPrefix {
  /** The text as configured (for logs and metric labels). */
  readonly text: string;
  readonly family: IpFamily;
  readonly prefixBits: number;
  /** The network in four words, host bits cleared. */
  readonly words: Uint32Array;
}

/** Parses "address/bits" or a bare address; undefined when it is neither, or the bits exceed the family's. */
export function parseCidr(text: string): CidrPrefix | undefined {
  const slash = text.indexOf('/');
  const addressText = slash < 0 ? text : text.slice(0, slash);
  if (addressText.includes('%')) return undefined;
  const words = new Uint32Array(4);
  const family = parseIpAddress(addressText, words);
  if (family === 0) return undefined;
  // "::ffff:10.0.0.0/104" would be an IPv6 spelling of an IPv4 prefix: ask for the IPv4 form instead.
  if (family === 4 && addressText.includes(':')) return undefined;
  const maxBits = family === 4 ? 32 : 128;
  let prefixBits = maxBits;
  if (slash >= 0) {
    const bitsText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(bitsText)) return undefined;
    prefixBits = Number(bitsText);
    if (prefixBits > maxBits) return undefined;
  }
  maskIpPrefix(words, family, prefixBits);
  return { text, family, prefixBits, words };
}

/** The first prefix in `prefixes` that holds `address` (an IP literal as node:net reports it), or undefined. */
export function matchCidr(prefixes: readonly CidrPrefix[], address: string): CidrPrefix | undefined {
  const words = new Uint32Array(4);
  const family = parseIpAddress(address, words);
  if (family === 0) return undefined;
  const masked = new Uint32Array(4);
  for (const p of prefixes) {
    if (p.family !== family) continue;
    masked.set(words);
    maskIpPrefix(masked, family, p.prefixBits);
    if (masked[0] === p.words[0] && masked[1] === p.words[1] && masked[2] === p.words[2] && masked[3] === p.words[3]) return p;
  }
  return undefined;
}
