/**
 * The OpenSSL AEAD backend (src/native/aead.c through src/runtime/aead-openssl.ts) against RFC vectors and
 * against the JavaScript AEADs (which interoperate with chrony): each seals, the other opens, both ways.
 *
 * Without the addon these tests skip; `NTSD_REQUIRE_NATIVE=1` (set by .ci/run) turns that into a failure, and
 * then AES-SIV-CMAC 15/16/17 must run on OpenSSL, and AES-128-GCM-SIV too when Node's OpenSSL is 3.2 or later
 * (Node 24 links 3.5: there it must be present).
 *
 * RFC 5297 A.2 has two associated-data strings before its nonce; the RFC 5116 interface NTS uses has one, so
 * A.2 cannot be expressed here. A.1 (deterministic, no nonce) can, through the addon directly (nonce length 0).
 * The JavaScript AES-SIV passes both (test/core/crypto/aes-siv.test.ts) and is the reference of the property
 * tests below.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SUPPORTED_AEAD_IDS, getAead, getJavaScriptAead, setAeadProvider, type AeadAlgorithm, type RekeyableAeadCipher } from '../../src/core/crypto/aead.js';
import { AesSiv } from '../../src/core/crypto/aes-siv.js';
import { createCookieOpenScratch, openCookieInto, sealCookie, CookieStatus, cookieLength } from '../../src/core/nts/cookie.js';
import { createKeyset, decodeKeyset, encodeKeyset, rotateKeyset, type Keyset } from '../../src/core/nts/keyset.js';
import { chooseAead } from '../../src/core/ke-handler.js';
import { createResponderContext, type ResponderContext } from '../../src/core/responder.js';
import { loadNativeUdp, type NativeAeadFunctions } from '../../src/runtime/addon.js';
import { OpenSslAeadCipher, getOpenSslAeads, installAeadBackend, missingOpenSslAeads, openSslUnavailableReasons } from '../../src/runtime/aead-openssl.js';
import { RFC5297_VECTORS } from '../vectors/rfc5297.js';
import { RFC8452_C1_VECTORS } from '../vectors/rfc8452.js';
import { fromHex, toHex } from '../vectors/hex.js';

const requireNative = process.env['NTSD_REQUIRE_NATIVE'] === '1';
const native = loadNativeUdp();
const addon: NativeAeadFunctions | undefined = native.ok && native.addon.aeadSeal !== undefined ? (native.addon as NativeAeadFunctions) : undefined;
const openssl = getOpenSslAeads();
const skip = addon === undefined ? `OpenSSL AEADs unavailable: ${native.ok ? 'addon built without OpenSSL headers' : native.reason}` : false;
/** Time budget of each property, milliseconds (fast-check stops early, counting what it ran). */
const BUDGET_MS = 1500;

function opensslAtLeast(major: number, minor: number): boolean {
  const [a = 0, b = 0] = (process.versions.openssl ?? '0.0').split('.').map((x) => parseInt(x, 10));
  return a > major || (a === major && b >= minor);
}

function both(id: number): { readonly ossl: AeadAlgorithm; readonly js: AeadAlgorithm } {
  const ossl = openssl.get(id);
  const js = getJavaScriptAead(id);
  assert.ok(ossl !== undefined && js !== undefined);
  return { ossl, js };
}

after(() => {
  for (const id of SUPPORTED_AEAD_IDS) setAeadProvider(id, undefined);
});

describe('OpenSSL AEAD backend: availability', () => {
  it('the addon is built with the OpenSSL AEADs where CI requires the native addon', () => {
    if (requireNative) assert.ok(addon !== undefined, `NTSD_REQUIRE_NATIVE=1 but ${String(skip)}`);
  });

  it('AES-SIV-CMAC 15/16/17 run on OpenSSL; AES-128-GCM-SIV exactly when OpenSSL is 3.2 or later (Node 24: 3.5)', { skip }, () => {
    const reasons = openSslUnavailableReasons();
    for (const id of [15, 16, 17]) assert.ok(openssl.has(id), `AEAD ${id}: ${reasons.get(id) ?? ''}`);
    const nodeMajor = parseInt(process.versions.node.split('.')[0] ?? '0', 10);
    if (opensslAtLeast(3, 2) || nodeMajor >= 24) assert.ok(openssl.has(30), `AEAD 30: ${reasons.get(30) ?? ''}`);
    else assert.ok(!openssl.has(30), 'OpenSSL < 3.2 has no AES-GCM-SIV');
  });

  it('installAeadBackend: "javascript" installs none, "auto" installs what OpenSSL has; "openssl" is judged by the caller', { skip }, () => {
    const js = installAeadBackend('javascript');
    assert.ok(js.entries.every((e) => e.backend === 'javascript' && !e.constantTime));
    assert.ok(!(getAead(15)?.newCipher(new Uint8Array(32)) instanceof OpenSslAeadCipher));
    const auto = installAeadBackend('auto');
    for (const e of auto.entries) assert.equal(e.backend === 'openssl', openssl.has(e.aeadId), e.name);
    assert.ok(getAead(15)?.newCipher(new Uint8Array(32)) instanceof OpenSslAeadCipher);
    assert.deepEqual(
      missingOpenSslAeads(auto, [15, 30]).map((e) => e.aeadId),
      openssl.has(30) ? [] : [30],
    );
    installAeadBackend('javascript');
  });

  it('NTS-KE with the real backends: chrony\'s default offer "30 15" gets 30 only where OpenSSL runs it (Node 24), else 15', { skip }, () => {
    const accepted = [15, 16, 17, 30];
    try {
      const auto = installAeadBackend('auto');
      for (const e of auto.entries) assert.equal(getAead(e.aeadId)?.constantTime, e.constantTime, e.name);
      assert.equal(chooseAead([30, 15], accepted), openssl.has(30) ? 30 : 15);
      assert.equal(chooseAead([30], accepted), 30, 'offered alone, 30 is still served');
      assert.equal(chooseAead([16, 15], accepted), 16);
      installAeadBackend('javascript');
      assert.equal(chooseAead([30, 15], accepted), 30, 'all on JavaScript: the client order');
    } finally {
      installAeadBackend('javascript');
    }
  });
});

describe('OpenSSL AEAD backend: known answers', () => {
  it('RFC 5297 Appendix A.1 (deterministic AES-SIV, no nonce) through the addon', { skip }, () => {
    const v = RFC5297_VECTORS[0];
    assert.ok(v !== undefined && addon !== undefined && v.components.length === 1);
    const key = fromHex(v.key);
    const ad = fromHex(v.components[0] ?? '');
    const pt = fromHex(v.plaintext);
    const buf = new ArrayBuffer(256);
    const u = new Uint8Array(buf);
    u.set(ad, 0);
    u.set(pt, 64);
    const handle = addon.aeadNew(15, key);
    const end = addon.aeadSeal(handle, buf, -1, 0, 0, 0, ad.length, 64, pt.length, 128);
    assert.equal(toHex(u.subarray(128, end)), v.output, v.name);
    const back = addon.aeadOpen(handle, buf, -1, 0, 0, 0, ad.length, 128, end - 128, 200);
    assert.equal(toHex(u.subarray(200, back)), v.plaintext);
    // The same without the plaintext exercises the empty-plaintext S2V (computed from OpenSSL CMAC calls).
    const tagEnd = addon.aeadSeal(handle, buf, -1, 0, 0, 0, ad.length, 64, 0, 128);
    const js = new Uint8Array(16);
    new AesSiv(key).sealComponents([ad], new Uint8Array(0), js, 0);
    assert.equal(tagEnd, 144);
    assert.equal(toHex(u.subarray(128, 144)), toHex(js));
    assert.equal(addon.aeadOpen(handle, buf, -1, 0, 0, 0, ad.length, 128, 16, 200), 200);
    addon.aeadFree(handle);
  });

  it('RFC 8452 Appendix C.1 (AEAD_AES_128_GCM_SIV), each vector both ways', { skip: skip || (openssl.has(30) ? false : 'no OpenSSL AES-GCM-SIV') }, () => {
    const alg = openssl.get(30);
    assert.ok(alg !== undefined);
    for (const v of RFC8452_C1_VECTORS) {
      const c = alg.newCipher(fromHex(v.key));
      const pt = fromHex(v.plaintext);
      const out = new Uint8Array(pt.length + 16);
      assert.equal(c.seal(fromHex(v.nonce), fromHex(v.aad), pt, out, 0), out.length);
      assert.equal(toHex(out), v.result, v.name);
      const back = new Uint8Array(pt.length);
      assert.equal(c.open(fromHex(v.nonce), fromHex(v.aad), fromHex(v.result), back, 0), pt.length, v.name);
      assert.equal(toHex(back), v.plaintext);
    }
  });
});

/** Random inputs for one AEAD: key, nonce within its bounds, associated data and plaintext (both may be empty). */
function inputs(alg: AeadAlgorithm): fc.Arbitrary<{ key: Uint8Array; nonce: Uint8Array; ad: Uint8Array; pt: Uint8Array; flip: number }> {
  const nonceMax = Math.min(alg.maxNonceLength, alg.minNonceLength + 40);
  return fc.record({
    key: fc.uint8Array({ minLength: alg.keyLength, maxLength: alg.keyLength }),
    nonce: fc.uint8Array({ minLength: alg.minNonceLength, maxLength: nonceMax }),
    ad: fc.uint8Array({ maxLength: 300 }),
    pt: fc.uint8Array({ maxLength: 400 }),
    flip: fc.nat(),
  });
}

describe('OpenSSL AEAD backend: cross-tests with the JavaScript AEADs (fast-check, time-budgeted)', () => {
  for (const id of SUPPORTED_AEAD_IDS) {
    it(`AEAD ${id}: OpenSSL seals what JavaScript seals, each opens the other's, a flipped bit is refused by both`, { skip: skip || (openssl.has(id) ? false : `no OpenSSL AEAD ${id}`) }, () => {
      const { ossl, js } = both(id);
      fc.assert(
        fc.property(inputs(js), ({ key, nonce, ad, pt, flip }) => {
          const a = new Uint8Array(pt.length + 16);
          const b = new Uint8Array(pt.length + 16);
          const o = ossl.newCipher(key);
          const j = js.newCipher(key);
          assert.equal(o.seal(nonce, ad, pt, a, 0), a.length);
          j.seal(nonce, ad, pt, b, 0);
          assert.equal(toHex(a), toHex(b));
          const back = new Uint8Array(pt.length + 3);
          assert.equal(o.open(nonce, ad, b, back, 3), back.length);
          assert.deepEqual(back.subarray(3), pt);
          assert.equal(j.open(nonce, ad, a, back, 0), pt.length);
          const bit = flip % (8 * a.length);
          a[bit >>> 3] = (a[bit >>> 3] ?? 0) ^ (1 << (bit & 7));
          assert.equal(o.open(nonce, ad, a, back, 0), -1);
          assert.equal(j.open(nonce, ad, a, back, 0), -1);
          if (o instanceof OpenSslAeadCipher) o.wipe();
        }),
        { interruptAfterTimeLimit: BUDGET_MS, numRuns: 100_000 },
      );
    });

    it(`AEAD ${id}: one ArrayBuffer for every region (no copies) and a re-keyed instance give the same bytes`, { skip: skip || (openssl.has(id) ? false : `no OpenSSL AEAD ${id}`) }, () => {
      const { ossl, js } = both(id);
      const shared = ossl.newCipher(new Uint8Array(js.keyLength)) as RekeyableAeadCipher;
      fc.assert(
        fc.property(inputs(js), fc.nat(64), ({ key, nonce, ad, pt }, gap) => {
          const buf = new Uint8Array(gap + nonce.length + ad.length + pt.length + pt.length + 16 + 8);
          let at = gap;
          const place = (x: Uint8Array): Uint8Array => {
            buf.set(x, at);
            const view = buf.subarray(at, at + x.length);
            at += x.length;
            return view;
          };
          const n = place(nonce);
          const a = place(ad);
          const p = place(pt);
          const out = buf.subarray(at);
          const want = new Uint8Array(pt.length + 16);
          js.newCipher(key).seal(nonce, ad, pt, want, 0);
          const direct = ossl.newCipher(key);
          assert.equal(direct.seal(n, a, p, out, 4), 4 + want.length);
          assert.equal(toHex(out.subarray(4, 4 + want.length)), toHex(want));
          shared.rekey(key);
          const again = new Uint8Array(want.length);
          shared.seal(nonce, ad, pt, again, 0);
          assert.equal(toHex(again), toHex(want));
          shared.rekey(key);
          const back = new Uint8Array(pt.length);
          assert.equal(shared.open(nonce, ad, want, back, 0), pt.length);
          assert.deepEqual(back, pt);
        }),
        { interruptAfterTimeLimit: BUDGET_MS, numRuns: 100_000 },
      );
    });

    it(`AEAD ${id}: the responder's layout (nonce and AD in one buffer, input and output in their own), a long-lived key seeing short AD repeat, and a pending rekey give the JavaScript bytes`, { skip: skip || (openssl.has(id) ? false : `no OpenSSL AEAD ${id}`) }, () => {
      const { ossl, js } = both(id);
      const longKey = new Uint8Array(js.keyLength).fill(7);
      const longLived = ossl.newCipher(longKey);
      const reference = js.newCipher(longKey);
      const rekeyed = ossl.newCipher(new Uint8Array(js.keyLength)) as RekeyableAeadCipher;
      // Short associated data from a small set (a cookie's key id), so that the AD step the addon keeps per key
      // is both reused and replaced; AD of the same length with other octets must not hit it.
      const adPool = [new Uint8Array([0, 0, 0, 1]), new Uint8Array([0, 0, 0, 2]), new Uint8Array([1, 0, 0, 1]), new Uint8Array(0), new Uint8Array(16).fill(9)];
      fc.assert(
        fc.property(inputs(js), fc.nat(adPool.length), fc.boolean(), ({ key, nonce, ad, pt }, pick, useRekey) => {
          const useAd = pick < adPool.length ? (adPool[pick] as Uint8Array) : ad;
          const front = new Uint8Array(3 + nonce.length + useAd.length);
          front.set(nonce, 3);
          front.set(useAd, 3 + nonce.length);
          const n = front.subarray(3, 3 + nonce.length);
          const a = front.subarray(3 + nonce.length);
          const p = new Uint8Array(pt.length + 5).subarray(5);
          p.set(pt);
          const out = new Uint8Array(pt.length + 16 + 2);
          const want = new Uint8Array(pt.length + 16);
          const cipher = useRekey ? rekeyed : longLived;
          if (useRekey) {
            rekeyed.rekey(key);
            js.newCipher(key).seal(nonce, useAd, pt, want, 0);
          } else {
            reference.seal(nonce, useAd, pt, want, 0);
          }
          assert.equal(cipher.seal(n, a, p, out, 2), 2 + want.length);
          assert.equal(toHex(out.subarray(2)), toHex(want));
          const back = new Uint8Array(pt.length + 1);
          if (useRekey) rekeyed.rekey(key);
          assert.equal(cipher.open(n, a, out.subarray(2), back, 1), 1 + pt.length);
          assert.deepEqual(back.subarray(1), pt);
          if (useAd.length > 0) {
            const other = front.slice();
            other[other.length - 1] = (other[other.length - 1] ?? 0) ^ 1;
            if (useRekey) rekeyed.rekey(key);
            assert.equal(cipher.open(other.subarray(3, 3 + nonce.length), other.subarray(3 + nonce.length), out.subarray(2), back, 1), -1);
          }
        }),
        { interruptAfterTimeLimit: BUDGET_MS, numRuns: 100_000 },
      );
    });
  }
});

describe('OpenSSL AEAD backend: cookies (RFC 8915 §6) across backends', () => {
  function keysetWith(bytes: Uint8Array, backend: 'openssl' | 'javascript'): Keyset {
    setAeadProvider(15, backend === 'openssl' ? openssl.get(15) : undefined);
    const decoded = decodeKeyset(bytes);
    assert.ok(decoded.ok);
    return decoded.keyset;
  }

  it('a cookie sealed by one backend opens with the other, for every AEAD it can carry; a tampered one does not', { skip }, () => {
    let seed = 1;
    const fill = (b: Uint8Array): void => {
      for (let i = 0; i < b.length; i++) b[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    };
    const bytes = encodeKeyset(createKeyset(1_700_000_000, fill, { staleKeyCount: 1 }));
    const byBackend = { openssl: keysetWith(bytes, 'openssl'), javascript: keysetWith(bytes, 'javascript') };
    setAeadProvider(15, undefined);
    const scratch = createCookieOpenScratch();
    for (const [from, to] of [['openssl', 'javascript'], ['javascript', 'openssl']] as const) {
      for (const aeadId of SUPPORTED_AEAD_IDS) {
        const k = getJavaScriptAead(aeadId)?.keyLength ?? 0;
        const c2s = new Uint8Array(k).fill(aeadId);
        const s2c = new Uint8Array(k).fill(0xa5);
        const cookie = new Uint8Array(cookieLength(aeadId));
        assert.equal(sealCookie(byBackend[from], aeadId, c2s, s2c, fill, cookie, 0), cookie.length);
        assert.equal(openCookieInto(byBackend[to], cookie, scratch), CookieStatus.ok, `${from} → ${to}, AEAD ${aeadId}`);
        assert.equal(scratch.aeadId, aeadId);
        assert.deepEqual(scratch.plaintext.subarray(4, 4 + k), c2s);
        assert.deepEqual(scratch.plaintext.subarray(4 + k, 4 + 2 * k), s2c);
        cookie[cookie.length - 1] = (cookie[cookie.length - 1] ?? 0) ^ 1;
        assert.equal(openCookieInto(byBackend[to], cookie, scratch), CookieStatus.decryptFailed);
      }
    }
  });
});

describe('OpenSSL AEAD backend: empty outputs', () => {
  it('an empty plaintext opens into an empty array (an empty ArrayBuffer has no data pointer) for every OpenSSL AEAD', { skip }, () => {
    for (const [id, alg] of openssl) {
      const js = getJavaScriptAead(id);
      assert.ok(js !== undefined);
      const key = new Uint8Array(alg.keyLength).fill(id);
      const nonce = new Uint8Array(alg.nonceLength).fill(1);
      const ad = new Uint8Array(20).fill(2);
      const sealed = new Uint8Array(16);
      js.newCipher(key).seal(nonce, ad, new Uint8Array(0), sealed, 0);
      const ossl = alg.newCipher(key);
      assert.equal(ossl.open(nonce, ad, sealed, new Uint8Array(0), 0), 0, `AEAD ${id}`);
      sealed[3] = (sealed[3] ?? 0) ^ 1;
      assert.equal(ossl.open(nonce, ad, sealed, new Uint8Array(0), 0), -1, `AEAD ${id} tampered`);
    }
  });
});

describe('retired master keys are wiped when a responder context takes a new keyset (not at garbage collection)', () => {
  function context(keyset: Keyset): ResponderContext {
    return createResponderContext({
      keyset,
      serverFields: { leap: 0, stratum: 2, precision: -20, rootDelay: 0, rootDispersion: 0, referenceId: 0, referenceTime: { seconds: 0, fraction: 0 } },
      now: () => ({ seconds: 0, fraction: 0 }),
      fillRandom: (b: Uint8Array) => b.fill(3),
      requireNts: false,
      acceptNtpVersions: [4],
    });
  }
  const fill = (b: Uint8Array): void => void b.forEach((_, i) => (b[i] = (i * 31 + b.length) & 0xff));

  for (const backend of ['openssl', 'javascript'] as const) {
    it(`${backend}: every key of a replaced decoded snapshot is zeroed and its cipher wiped; a rotation wipes only the key it drops`, { skip: backend === 'openssl' ? skip : false }, () => {
      setAeadProvider(15, backend === 'openssl' ? openssl.get(15) : undefined);
      try {
        let seed = 7;
        const random = (b: Uint8Array): void => {
          for (let i = 0; i < b.length; i++) b[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
        };
        const first = createKeyset(1_700_000_000, random, { staleKeyCount: 0 });
        const ctx = context(first);
        const cookie = new Uint8Array(cookieLength(15));
        sealCookie(first, 15, new Uint8Array(32).fill(1), new Uint8Array(32).fill(2), fill, cookie, 0);
        const decoded = decodeKeyset(encodeKeyset(first));
        assert.ok(decoded.ok);
        const oldKeys = [first.current, first.next];
        const probe = new Uint8Array(32);
        ctx.keyset = decoded.keyset; // a snapshot that arrived from another thread: its own copies of the same keys
        for (const k of oldKeys) {
          assert.ok(k.key.every((b) => b === 0), 'the old JavaScript key copy is zeroed at once');
          if (backend === 'openssl') {
            assert.throws(() => k.cipher.seal(new Uint8Array(16), new Uint8Array(4), probe, new Uint8Array(48), 0), /released/, 'the OpenSSL handle is freed at once');
          } else {
            // The JavaScript schedules are zeroed: the wiped cipher no longer computes the key's SIV.
            const want = new Uint8Array(48);
            const got = new Uint8Array(48);
            decoded.keyset.current.cipher.seal(new Uint8Array(16), new Uint8Array(4), probe, want, 0);
            k.cipher.seal(new Uint8Array(16), new Uint8Array(4), probe, got, 0);
            assert.notDeepEqual(got, want);
          }
        }
        const scratch = createCookieOpenScratch();
        assert.equal(openCookieInto(ctx.keyset, cookie, scratch), CookieStatus.ok, 'the new snapshot still opens cookies of the same keys');
        // A rotation shares the surviving key objects: only the dropped one (staleKeyCount 0: the old current) goes.
        const before = ctx.keyset;
        const rotated = rotateKeyset(before, 1_700_000_100, random);
        ctx.keyset = rotated;
        assert.ok(before.current.key.every((b) => b === 0), 'the dropped key is zeroed');
        assert.ok(rotated.current.key.some((b) => b !== 0), 'the key that became current is kept');
        const fresh = new Uint8Array(cookieLength(15));
        sealCookie(rotated, 15, new Uint8Array(32).fill(1), new Uint8Array(32).fill(2), fill, fresh, 0);
        assert.equal(openCookieInto(ctx.keyset, fresh, scratch), CookieStatus.ok);
        ctx.keyset = rotated; // the same snapshot again: nothing is wiped
        assert.equal(openCookieInto(ctx.keyset, fresh, scratch), CookieStatus.ok);
      } finally {
        setAeadProvider(15, undefined);
      }
    });
  }
});

describe('OpenSSL AEAD backend: bounds checks (a bad offset from JavaScript is a thrown bug, never a stray access)', () => {
  it('regions outside the buffer, negative or non-numeric offsets, and a released handle throw; short ciphertexts give -1', { skip }, () => {
    assert.ok(addon !== undefined);
    const handle = addon.aeadNew(15, new Uint8Array(32));
    const buf = new ArrayBuffer(128);
    const ok = (f: () => number): number => f();
    assert.equal(ok(() => addon.aeadSeal(handle, buf, -1, 0, 16, 16, 4, 20, 8, 40)), 64);
    const bad: [number, number, number, number, number, number, number, number][] = [
      [-1, 0, 16, 16, 4, 20, 40, 200], // output past the end
      [-1, -5, 16, 16, 4, 20, 8, 40], // negative nonce offset
      [-1, 0, 16, 16, 4, 20, 200, 0], // input past the end
      [-1, 0, 16, 16, -4, 20, 8, 40], // negative length
      [120, 0, 16, 16, 4, 20, 8, 40], // key past the end
      [-1, 0, 16, 16, 4, 20, 0x7fffffff, 40], // huge length
      [-1, 0x7fffffff, 16, 16, 4, 20, 8, 40], // offset + length overflows 32 bits
    ];
    for (const [i, args] of bad.entries()) {
      assert.throws(() => addon.aeadSeal(handle, buf, ...args), RangeError, `seal case ${i}`);
      assert.throws(() => addon.aeadOpen(handle, buf, ...args), RangeError, `open case ${i}`);
    }
    assert.equal(addon.aeadOpen(handle, buf, -1, 0, 16, 16, 4, 20, 15, 40), -1, 'ciphertext shorter than the tag');
    assert.equal(addon.aeadOpen(handle, buf, -1, 0, 16, 16, 4, 20, 16, 40), -1, 'a tag that does not verify');
    const call = addon.aeadSeal as unknown as (...args: unknown[]) => number;
    assert.throws(() => call(handle, new Uint8Array(128), -1, 0, 16, 16, 4, 20, 8, 40), TypeError, 'a Uint8Array is not an ArrayBuffer');
    assert.throws(() => call(handle, buf, -1, '0', 16, 16, 4, 20, 8, 40), TypeError);
    assert.throws(() => call({}, buf, -1, 0, 16, 16, 4, 20, 8, 40), TypeError);
    assert.throws(() => addon.aeadNew(15, new Uint8Array(31)), RangeError);
    assert.throws(() => addon.aeadNew(99, new Uint8Array(32)), RangeError);
    addon.aeadFree(handle);
    addon.aeadFree(handle);
    assert.throws(() => addon.aeadSeal(handle, buf, -1, 0, 16, 16, 4, 20, 8, 40), RangeError, 'released handle');
  });

  it('the wrapper keeps the RFC 5116 contract: seal throws on a bad nonce or a short output, open returns -1', { skip }, () => {
    const alg = openssl.get(15);
    assert.ok(alg !== undefined);
    const c = alg.newCipher(new Uint8Array(32));
    assert.throws(() => c.seal(new Uint8Array(0), new Uint8Array(4), new Uint8Array(8), new Uint8Array(64), 0), RangeError);
    assert.throws(() => c.seal(new Uint8Array(16), new Uint8Array(4), new Uint8Array(8), new Uint8Array(23), 0), RangeError);
    assert.equal(c.open(new Uint8Array(0), new Uint8Array(4), new Uint8Array(24), new Uint8Array(64), 0), -1);
    assert.equal(c.open(new Uint8Array(16), new Uint8Array(4), new Uint8Array(24), new Uint8Array(7), 0), -1);
    assert.throws(() => (c as RekeyableAeadCipher).rekey(new Uint8Array(16)), RangeError);
    assert.throws(() => alg.newCipher(new Uint8Array(16)), RangeError);
  });
});
