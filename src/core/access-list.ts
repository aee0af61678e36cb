/**
 * Access lists in the manner of chrony's `allow`/`deny` and ntpd-rs's allow/deny lists: CIDR prefixes,
 * each with an action, and the most specific (longest) matching prefix decides. Pure, for NTP
 * (`[[server]]`) and NTS-KE (`[[nts-ke-server]]`) alike.
 *
 * Actions:
 *  - `allow`: served as usual;
 *  - `deny`: refused with an answer where the protocol has one (a KoD DENY for plain NTP; NTS requests and
 *    KE connections are dropped or closed, as a KoD could be forged);
 *  - `ignore`: dropped silently (NTP), closed before TLS (KE).
 * Prefixes are core/cidr.ts prefixes; addresses are compared in the IPv6 form of core/ip.ts, IPv4 as
 * IPv4-mapped, so an IPv4 prefix matches a client on an IPv4 socket and the same client on a dual-stack
 * IPv6 socket alike. An address no prefix
 * matches gets the list's default action (`allow` unless configured).
 */
import { parseCidr } from './cidr.js';
import { maskIpPrefix, parseIpAddress, type IpFamily } from './ip.js';

/** What an access list says about an address. */
export type AccessAction = 'allow' | 'deny' | 'ignore';
/** The actions, for validation. */
export const ACCESS_ACTIONS = ['allow', 'deny', 'ignore'] as const;

/** One configured prefix: "192.0.2.0/24", "2001:db8::/32", or a bare address (a full-length prefix). */
export interface AccessEntry {
  readonly prefix: string;
  readonly action: AccessAction;
}

interface Rule {
  readonly words: Uint32Array;
  readonly family: IpFamily;
  readonly bits: number;
  readonly action: AccessAction;
}

/** A compiled access list; decide() allocates nothing. */
export class AccessList {
  readonly #rules: readonly Rule[];
  readonly #default: AccessAction;
  readonly #scratch = new Uint32Array(4);

  private constructor(rules: readonly Rule[], defaultAction: AccessAction) {
    this.#rules = rules;
    this.#default = defaultAction;
  }

  /**
   * Compiles entries; fails on a bad prefix or one prefix listed with two actions, with the index in
   * `entries` of the entry at fault (the second listing of a conflict).
   */
  static compile(entries: readonly AccessEntry[], defaultAction: AccessAction = 'allow'): { ok: true; list: AccessList } | { ok: false; error: string; index: number } {
    const rules: Rule[] = [];
    for (const [index, entry] of entries.entries()) {
      const p = parseCidr(entry.prefix);
      if (p === undefined) return { ok: false, index, error: `not a CIDR prefix (e.g. "192.0.2.0/24", "2001:db8::/32" or one address): ${JSON.stringify(entry.prefix)}` };
      const same = rules.find((r) => r.family === p.family && r.bits === p.prefixBits && r.words.every((w, i) => w === p.words[i]));
      if (same !== undefined) {
        if (same.action === entry.action) continue;
        return { ok: false, index, error: `${entry.prefix} is listed as both ${same.action} and ${entry.action}` };
      }
      rules.push({ words: p.words, family: p.family, bits: p.prefixBits, action: entry.action });
    }
    // Longest prefix first, so the first match is the most specific one.
    rules.sort((a, b) => b.bits + (b.family === 4 ? 96 : 0) - (a.bits + (a.family === 4 ? 96 : 0)));
    return { ok: true, list: new AccessList(rules, defaultAction) };
  }

  /** True when every address gets `allow` (nothing to check per request). */
  get allowsAll(): boolean {
    return this.#default === 'allow' && this.#rules.every((r) => r.action === 'allow');
  }

  /** The action for an address in core/ip.ts words (not modified). */
  decideWords(words: Uint32Array, family: IpFamily): AccessAction {
    const scratch = this.#scratch;
    for (const rule of this.#rules) {
      // An IPv4 rule matches only IPv4 (and mapped) addresses; an IPv6 rule of /96 or shorter could cover
      // the mapped range too, and does, since both are compared in IPv6 form.
      if (rule.family === 4 && family !== 4) continue;
      scratch.set(words);
      maskIpPrefix(scratch, rule.family, rule.bits);
      if (scratch[0] === rule.words[0] && scratch[1] === rule.words[1] && scratch[2] === rule.words[2] && scratch[3] === rule.words[3]) return rule.action;
    }
    return this.#default;
  }

  /** The action for an IP literal; a string that is not one gets the default action. */
  decide(address: string): AccessAction {
    const words = new Uint32Array(4);
    const family = parseIpAddress(address, words);
    return family === 0 ? this.#default : this.decideWords(words, family);
  }
}
