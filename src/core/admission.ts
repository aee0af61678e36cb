/**
 * Admission of one NTP request before any work is done for it: the `[[server]]` access list, then the
 * per-client rate limit. Pure; core/serve.ts calls it with the peer address the kernel reported and acts
 * on the answer:
 *  - `admit`: respond() as usual;
 *  - `limit`: over the rate limit, drop (Outcome.dropRateLimited);
 *  - a RefusalReason: respondRefused() decides between a KoD (plain NTP only) and a drop.
 * One limiter table (a SharedArrayBuffer) serves every NTP thread of a `[[server]]`, so a client whose
 * packets the kernel spreads over N threads by source port still gets one budget.
 */
import { AccessList, type AccessAction, type AccessEntry } from './access-list.js';
import type { IpFamily } from './ip.js';
import { RateLimiter } from './limiter.js';
import type { RefusalReason } from './responder.js';

/** What admit() says. */
export type AdmissionDecision = 'admit' | 'limit' | RefusalReason;

/** The checks of one `[[server]]`; either may be absent (nothing to check). */
export interface Admission {
  access: AccessList | undefined;
  limiter: RateLimiter | undefined;
}

/**
 * Decides for a peer in core/ip.ts words (left untouched; `scratch` is overwritten). Access lists come
 * first: an ignored or denied client does not spend rate-limit tokens or table slots.
 */
export function admit(admission: Admission, words: Uint32Array, family: IpFamily, nowMs: number, scratch: Uint32Array): AdmissionDecision {
  const access = admission.access;
  if (access !== undefined) {
    const action = access.decideWords(words, family);
    if (action === 'ignore') return 'ignored';
    if (action === 'deny') return 'denied';
  }
  const limiter = admission.limiter;
  if (limiter === undefined) return 'admit';
  scratch.set(words);
  const decision = limiter.takeWords(scratch, family, nowMs);
  return decision === 'admit' ? 'admit' : decision === 'leak' ? 'rateLimited' : 'limit';
}

/** The admission of one `[[server]]` in a form that crosses threads (structured clone). */
export interface AdmissionSpec {
  readonly accessEntries: readonly AccessEntry[];
  readonly accessDefault: AccessAction;
  /** The shared limiter table (core/limiter.ts), or undefined for none. */
  readonly limiterBuffer: SharedArrayBuffer | undefined;
}

/** Builds the checks from a spec; throws RangeError on an access list that does not compile (validated config never does). */
export function createAdmission(spec: AdmissionSpec): Admission {
  const compiled = AccessList.compile(spec.accessEntries, spec.accessDefault);
  if (!compiled.ok) throw new RangeError(`admission: ${compiled.error}`);
  return {
    access: compiled.list.allowsAll ? undefined : compiled.list,
    limiter: spec.limiterBuffer === undefined ? undefined : RateLimiter.attach(spec.limiterBuffer),
  };
}

/** One Admission per policy index from their specs (a missing spec admits everything). */
export function createAdmissions(specs: readonly AdmissionSpec[], policies: number): Admission[] {
  return Array.from({ length: policies }, (_, i) => {
    const spec = specs[i];
    return spec === undefined ? { access: undefined, limiter: undefined } : createAdmission(spec);
  });
}
