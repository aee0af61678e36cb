/**
 * The fuzz battery's bounded slice (bench/reliability/fuzz.ts runs ≥ 10 million inputs): fast-check drives
 * the mutator over each target (a failure shrinks to a short list of edits), then a few seconds of the
 * bench's own loop, which must reach the interesting outcomes of every target, and a planted bug that the
 * loop must catch.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createRng } from '../../bench/reliability/common.js';
import { applyMutations, INTERESTING_U16, type Mutation, type MutationContext } from '../../bench/reliability/fuzz-mutate.js';
import { allTargets, InvariantViolation, type FuzzTarget } from '../../bench/reliability/fuzz-targets.js';
import { DEFAULT_FUZZ_OPTIONS, formatFuzzReport, runFuzz } from '../../bench/reliability/fuzz.js';
import { Outcome } from '../../src/core/responder.js';

const bytes = (max: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ minLength: 1, maxLength: max });

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('u16' as const), at: fc.nat(), value: fc.oneof(fc.constantFrom(...INTERESTING_U16), fc.integer({ min: 0, max: 0xffff })), hinted: fc.boolean() }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('extend' as const), bytes: bytes(80) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: bytes(16) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ op: fc.constant('duplicate' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 200 }) }),
  fc.record({ op: fc.constant('splice' as const), other: fc.nat(), at: fc.nat(), otherAt: fc.nat() }),
);

function contextOf(target: FuzzTarget): MutationContext {
  return { fieldOffsets: (i) => target.fieldOffsets(i), other: (n) => target.seeds[n % target.seeds.length] ?? new Uint8Array(0), maxLength: target.maxLength };
}

for (const target of allTargets()) {
  test(`fuzz (fast-check): ${target.name} keeps its invariants on mutated valid inputs`, () => {
    const ctx = contextOf(target);
    const input = fc.record({ seed: fc.nat(), edits: fc.array(mutation, { minLength: 1, maxLength: 4 }), rngSeed: fc.nat(), custom: fc.boolean() });
    fc.assert(
      fc.property(input, (c) => {
        const base = target.seeds[c.seed % target.seeds.length] ?? new Uint8Array(0);
        const rng = createRng(c.rngSeed);
        let mutated = c.custom && target.customMutate !== undefined ? target.customMutate(rng, base) : applyMutations(base, c.edits, ctx);
        if (target.fixup !== undefined) mutated = target.fixup(rng, mutated);
        target.run(mutated);
      }),
      { numRuns: 20_000, interruptAfterTimeLimit: 2500 },
    );
  });
}

test('fuzz (bench loop, bounded slice): no defect, and every target reaches its interesting outcomes', () => {
  const report = runFuzz({ ...DEFAULT_FUZZ_OPTIONS, inputs: 300_000, maxDurationS: 8, seed: (Date.now() >>> 0) ^ 0x5eed });
  const text = formatFuzzReport(report, true);
  assert.equal(report.defectCount, 0, text);
  const sigs = (name: string): readonly string[] => report.targets.find((t) => t.name === name)?.allSignatures ?? [];
  for (const t of report.targets) assert.ok(t.inputs >= 1000, `${t.name}: only ${t.inputs} inputs\n${text}`);
  // respond(): authenticated replies, every NAK reason, plain replies, and each kind of drop.
  const outcomes = new Set(sigs('respond').map((s) => Number(s.split(':')[0])));
  for (const o of [Outcome.ntpTime, Outcome.ntsTime, Outcome.nakCookieUnknownKey, Outcome.nakCookieDecryptFailed, Outcome.nakAuthFailed, Outcome.dropMalformed, Outcome.dropPolicy, Outcome.dropRequireNts]) {
    assert.ok(outcomes.has(o), `respond never reached outcome ${o}\n${text}`);
  }
  // The refusal path: KoD RATE and DENY (to plain NTP) and both drops.
  for (const o of [Outcome.kodRate, Outcome.kodDeny, Outcome.dropRateLimited, Outcome.dropAccess]) {
    assert.ok(sigs('respond').some((s) => s.endsWith(`:r${o}`)), `respondRefused never reached outcome ${o}\n${text}`);
  }
  // NTS-KE: success for several AEADs and for pool front-end requests, both negotiation failures, both Error codes, the framing refusals.
  const ke = sigs('ke');
  for (const prefix of ['ke:success:15', 'ke:success:30', 'ke:success:support', 'ke:success:fixed_key', 'ke:no_common_protocol', 'ke:no_common_aead', 'ke:bad_request:', 'ke:unrecognized_critical', 'frame:malformed', 'frame:incomplete']) {
    assert.ok(ke.some((s) => s.startsWith(prefix)), `ke never reached ${prefix}\n${text}`);
  }
  const keyset = sigs('keyset');
  assert.ok(keyset.some((s) => s.startsWith('keyset:ok')), text);
  assert.ok(keyset.filter((s) => !s.startsWith('keyset:ok')).length >= 6, `keyset errors reached: ${keyset.join(', ')}`);
  const config = sigs('config');
  assert.ok(config.some((s) => s.startsWith('config:ok')) && config.includes('config:(toml)'), text);
  assert.ok(config.length >= 10, `config signatures: ${config.join(', ')}`);
});

test('fuzz (bench loop): a planted throw and a planted broken invariant are found and reported with the input', () => {
  const seed = new Uint8Array(64).fill(0x23);
  const planted = (name: string, bug: (input: Uint8Array) => void): FuzzTarget => ({
    name,
    seeds: [seed],
    maxLength: 256,
    fieldOffsets: () => [0, 2, 4],
    run(input) {
      bug(input);
      return `len:${input.length >> 4}`;
    },
  });
  const thrower = planted('respond', (input) => {
    if (input[3] === 0xff) throw new TypeError('planted crash');
  });
  const breaker = planted('ke', (input) => {
    if (input.length > 64 && input[0] === 0x23 && input[64] === 0x23) throw new InvariantViolation('planted reply longer than its request');
  });
  const report = runFuzz({ ...DEFAULT_FUZZ_OPTIONS, inputs: 50_000, maxDurationS: 5, seed: 7, targets: [thrower, breaker] });
  assert.ok(report.defectCount > 0, formatFuzzReport(report));
  assert.ok(report.defects.some((d) => d.startsWith('respond: threw: planted crash') && d.includes('input (base64): ')), report.defects.join('\n'));
  assert.ok(report.defects.some((d) => d.startsWith('ke: invariant: planted reply')), report.defects.join('\n'));
});
