/**
 * The OpenSSL AEAD backend: the native addon's src/native/aead.c behind core's `AeadAlgorithm`/`AeadCipher`
 * interfaces, and the start-up choice between it and the built-in JavaScript AEADs (`[worker-pool]
 * aead-backend`), installed per thread with core's `setAeadProvider`.
 *
 * Why: the JavaScript AES is table-driven, so its memory accesses depend on the key (a cache-timing channel
 * on the cookie master key), and it is most of the CPU time of an NTS request. OpenSSL runs AES on the CPU's
 * AES instructions (or its vector-permute code), whose timing does not depend on the data.
 *
 * One N-API call per operation. The addon takes ArrayBuffers and offsets into them: the nonce and the
 * associated data from one, the input, the output and a new key each from its own. Regions are passed where
 * they are (a datagram's memory, a scratch buffer); only when the nonce and the associated data do not share
 * an ArrayBuffer (or a region lives in a SharedArrayBuffer) are they copied into this thread's scratch buffer,
 * which is zeroed after the call. A `rekey` only records the key (in a buffer of the cipher, zeroed once
 * handed over); the next seal or open passes it in the same call.
 *
 * Threads: module state is per thread and the addon is loaded per thread. The main thread calls
 * `installAeadBackend` and records its request with `setEnvironmentData`, so threads started after it call
 * `installInheritedAeadBackend` at their start and run the same backend.
 */
import { getEnvironmentData, setEnvironmentData } from 'node:worker_threads';
import {
  SUPPORTED_AEAD_IDS,
  getJavaScriptAead,
  regionInside,
  setAeadProvider,
  type AeadAlgorithm,
  type RegionAeadCipher,
  type RekeyableAeadCipher,
} from '../core/crypto/aead.js';
import { loadNativeUdp, type NativeAeadFunctions, type NativeAeadHandle, type NativeLoad } from './addon.js';

/** `[worker-pool] aead-backend`: OpenSSL where it can (`auto`), OpenSSL or refuse to start, or JavaScript only. */
export type AeadBackendRequest = 'auto' | 'openssl' | 'javascript';
/** The implementation one AEAD runs on. */
export type AeadBackendName = 'openssl' | 'javascript';

/** Which backend one AEAD runs on, and why not OpenSSL when it does not. */
export interface AeadBackendEntry {
  readonly aeadId: number;
  /** IANA name, e.g. "AEAD_AES_SIV_CMAC_256". */
  readonly name: string;
  readonly backend: AeadBackendName;
  /** True for OpenSSL's AES; false for the table-driven JavaScript AES (key-dependent memory accesses). */
  readonly constantTime: boolean;
  /** Why the JavaScript AEAD runs (undefined when OpenSSL does). */
  readonly reason: string | undefined;
}

/** What `installAeadBackend` installed in this thread. */
export interface AeadBackendSelection {
  readonly request: AeadBackendRequest;
  /** One entry per implemented AEAD, ascending id. */
  readonly entries: readonly AeadBackendEntry[];
}

const TAG_LENGTH = 16;
const GCM_SIV_ID = 30;

/** This thread's copy area for regions in a SharedArrayBuffer (grown on demand). */
let scratch = new Uint8Array(4096);
/** This thread's copy area for a nonce and associated data that do not share memory (grown on demand). */
let front = new Uint8Array(1024);

function scratchFor(octets: number): Uint8Array {
  if (scratch.length < octets) {
    let size = scratch.length;
    while (size < octets) size *= 2;
    scratch = new Uint8Array(size);
  }
  return scratch;
}

function checkRegions(data: Uint8Array, nonceOffset: number, nonceLength: number, adOffset: number, adLength: number, input: Uint8Array, inOffset: number, inLength: number): void {
  if (!regionInside(data, nonceOffset, nonceLength) || !regionInside(data, adOffset, adLength) || !regionInside(input, inOffset, inLength)) {
    throw new RangeError('OpenSSL AEAD: a region lies outside its array');
  }
}

/** A keyed OpenSSL AEAD instance: seal/open/rekey as core/crypto/aead.ts describes, plus an explicit wipe. */
export class OpenSslAeadCipher implements RekeyableAeadCipher, RegionAeadCipher {
  /** IANA AEAD id. */
  readonly aeadId: number;
  readonly #addon: NativeAeadFunctions;
  readonly #handle: NativeAeadHandle;
  readonly #keyLength: number;
  readonly #minNonce: number;
  readonly #maxNonce: number;
  /** A key given to rekey() and not yet handed to the addon (zeroed once it is). */
  readonly #nextKey: Uint8Array;
  #pending = false;

  /** Keys a new OpenSSL context; throws RangeError on a wrong key length. */
  constructor(addon: NativeAeadFunctions, algorithm: AeadAlgorithm, key: Uint8Array) {
    if (key.length !== algorithm.keyLength) throw new RangeError(`${algorithm.name}: key must be ${algorithm.keyLength} octets, got ${key.length}`);
    this.aeadId = algorithm.aeadId;
    this.#addon = addon;
    this.#keyLength = algorithm.keyLength;
    this.#minNonce = algorithm.minNonceLength;
    this.#maxNonce = algorithm.maxNonceLength;
    this.#nextKey = new Uint8Array(algorithm.keyLength);
    this.#handle = addon.aeadNew(algorithm.aeadId, key);
  }

  /** Replaces the key (taking effect at the next seal or open, in the same addon call); RangeError on a length change. */
  rekey(key: Uint8Array): void {
    if (key.length !== this.#keyLength) throw new RangeError('OpenSSL AEAD rekey: key length differs');
    this.#nextKey.set(key);
    this.#pending = true;
  }

  /** RFC 5116 seal; output V || C (SIV) or C || tag (GCM-SIV) at out[outOffset..]; returns the offset after it. */
  seal(nonce: Uint8Array, associatedData: Uint8Array, plaintext: Uint8Array, out: Uint8Array, outOffset: number): number {
    this.#checkSeal(nonce.length, plaintext.length, out, outOffset);
    return this.#viaViews(true, nonce, associatedData, plaintext, out, outOffset, plaintext.length + TAG_LENGTH);
  }

  /** RFC 5116 open: the offset after the plaintext written at out[outOffset..], or -1 (never throws on peer input). */
  open(nonce: Uint8Array, associatedData: Uint8Array, ciphertext: Uint8Array, out: Uint8Array, outOffset: number): number {
    if (!this.#openable(nonce.length, ciphertext.length, out, outOffset)) return -1;
    return this.#viaViews(false, nonce, associatedData, ciphertext, out, outOffset, ciphertext.length - TAG_LENGTH);
  }

  /** seal() on regions (core's RegionAeadCipher): no views, no copies. */
  sealRegions(data: Uint8Array, nonceOffset: number, nonceLength: number, adOffset: number, adLength: number, input: Uint8Array, inOffset: number, inLength: number, out: Uint8Array, outOffset: number): number {
    checkRegions(data, nonceOffset, nonceLength, adOffset, adLength, input, inOffset, inLength);
    this.#checkSeal(nonceLength, inLength, out, outOffset);
    const d = data.byteOffset;
    return this.#call(true, data, d + nonceOffset, nonceLength, d + adOffset, adLength, input, input.byteOffset + inOffset, inLength, out, outOffset, inLength + TAG_LENGTH);
  }

  /** open() on regions (core's RegionAeadCipher): no views, no copies. */
  openRegions(data: Uint8Array, nonceOffset: number, nonceLength: number, adOffset: number, adLength: number, input: Uint8Array, inOffset: number, inLength: number, out: Uint8Array, outOffset: number): number {
    checkRegions(data, nonceOffset, nonceLength, adOffset, adLength, input, inOffset, inLength);
    if (!this.#openable(nonceLength, inLength, out, outOffset)) return -1;
    const d = data.byteOffset;
    return this.#call(false, data, d + nonceOffset, nonceLength, d + adOffset, adLength, input, input.byteOffset + inOffset, inLength, out, outOffset, inLength - TAG_LENGTH);
  }

  /** Frees the OpenSSL contexts and cleanses the addon's key copy now; the cipher must not be used after. */
  wipe(): void {
    this.#addon.aeadFree(this.#handle);
    this.#nextKey.fill(0);
    this.#pending = false;
  }

  #checkSeal(nonceLength: number, plaintextLength: number, out: Uint8Array, outOffset: number): void {
    if (nonceLength < this.#minNonce || nonceLength > this.#maxNonce) throw new RangeError(`AEAD ${this.aeadId}: bad nonce length ${nonceLength}`);
    if (!(outOffset >= 0) || outOffset + plaintextLength + TAG_LENGTH > out.length) throw new RangeError(`AEAD ${this.aeadId} seal: output buffer too small`);
  }

  #openable(nonceLength: number, ciphertextLength: number, out: Uint8Array, outOffset: number): boolean {
    const outLength = ciphertextLength - TAG_LENGTH;
    return outLength >= 0 && nonceLength >= this.#minNonce && nonceLength <= this.#maxNonce && outOffset >= 0 && outOffset + outLength <= out.length;
  }

  /** seal/open with views: the nonce and the associated data are copied together only when they do not share memory. */
  #viaViews(seal: boolean, nonce: Uint8Array, ad: Uint8Array, input: Uint8Array, out: Uint8Array, outOffset: number, outLength: number): number {
    if (nonce.buffer === ad.buffer) {
      return this.#call(seal, nonce, nonce.byteOffset, nonce.length, ad.byteOffset, ad.length, input, input.byteOffset, input.length, out, outOffset, outLength);
    }
    const used = nonce.length + ad.length;
    if (front.length < used) front = new Uint8Array(Math.max(2 * front.length, used));
    const f = front;
    f.set(nonce, 0);
    f.set(ad, nonce.length);
    try {
      return this.#call(seal, f, 0, nonce.length, nonce.length, ad.length, input, input.byteOffset, input.length, out, outOffset, outLength);
    } finally {
      f.fill(0, 0, used);
    }
  }

  /**
   * One addon call. Offsets `nonceAt`, `adAt` are octets into data.buffer and `inAt` into input.buffer; the
   * output goes to out[outOffset..]. The key, the input and the output are passed in their own ArrayBuffers
   * (undefined: the data's). Memory that is not an ArrayBuffer (a SharedArrayBuffer) is copied through the scratch.
   */
  #call(seal: boolean, data: Uint8Array, nonceAt: number, nonceLength: number, adAt: number, adLength: number, input: Uint8Array, inAt: number, inLength: number, out: Uint8Array, outOffset: number, outLength: number): number {
    const addon = this.#addon;
    const pending = this.#pending;
    let b = data.buffer;
    let ib: ArrayBufferLike | undefined = input.buffer;
    let ob: ArrayBufferLike | undefined = out.buffer;
    let outAt = out.byteOffset + outOffset;
    let s: Uint8Array | undefined;
    let used = 0;
    if (!(b instanceof ArrayBuffer && ib instanceof ArrayBuffer && ob instanceof ArrayBuffer)) {
      used = nonceLength + adLength + inLength + Math.max(0, outLength);
      s = scratchFor(used);
      s.set(new Uint8Array(b, nonceAt, nonceLength), 0);
      s.set(new Uint8Array(b, adAt, adLength), nonceLength);
      s.set(new Uint8Array(ib, inAt, inLength), nonceLength + adLength);
      b = ib = ob = s.buffer;
      nonceAt = 0;
      adAt = nonceLength;
      inAt = adAt + adLength;
      outAt = inAt + inLength;
    }
    if (ib === b) ib = undefined;
    if (ob === b) ob = undefined;
    const keyBuffer = pending ? (this.#nextKey.buffer as ArrayBuffer) : undefined;
    const keyAt = pending ? this.#nextKey.byteOffset : -1;
    const h = this.#handle;
    const ab = b as ArrayBuffer;
    try {
      const end = seal
        ? addon.aeadSeal(h, ab, keyAt, nonceAt, nonceLength, adAt, adLength, inAt, inLength, outAt, keyBuffer, ib as ArrayBuffer | undefined, ob as ArrayBuffer | undefined)
        : addon.aeadOpen(h, ab, keyAt, nonceAt, nonceLength, adAt, adLength, inAt, inLength, outAt, keyBuffer, ib as ArrayBuffer | undefined, ob as ArrayBuffer | undefined);
      if (end < 0) return -1;
      if (s !== undefined) out.set(s.subarray(outAt, end), outOffset);
      return outOffset + (end - outAt);
    } finally {
      if (pending) {
        this.#pending = false;
        this.#nextKey.fill(0);
      }
      if (s !== undefined) s.fill(0, 0, used);
    }
  }
}

/** The OpenSSL implementation of one AEAD, with the parameters of the built-in JavaScript one. */
function openSslAlgorithm(addon: NativeAeadFunctions, js: AeadAlgorithm): AeadAlgorithm {
  const algorithm: AeadAlgorithm = Object.freeze({
    aeadId: js.aeadId,
    name: js.name,
    keyLength: js.keyLength,
    nonceLength: js.nonceLength,
    minNonceLength: js.minNonceLength,
    maxNonceLength: js.maxNonceLength,
    tagLength: js.tagLength,
    constantTime: true,
    newCipher: (key: Uint8Array) => new OpenSslAeadCipher(addon, algorithm, key),
  });
  return algorithm;
}

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed + 29 * i) & 0xff;
  return out;
}

/**
 * Known-answer check against the JavaScript implementation (which interoperates with chrony): plaintexts of
 * 0, 1, 16 and 100 octets, twice under one key and once after a rekey, both directions, and a flipped bit
 * refused. Returns why it failed, or undefined.
 */
function selfTest(candidate: AeadAlgorithm, js: AeadAlgorithm): string | undefined {
  try {
    const nonce = pattern(js.nonceLength, 3);
    const ad = pattern(20, 5);
    const cipher = candidate.newCipher(pattern(js.keyLength, 1));
    const reference = js.newCipher(pattern(js.keyLength, 1));
    for (const [round, length] of [0, 1, 16, 100, 0, 100].entries()) {
      if (round === 4) {
        if (!('rekey' in cipher) || !('rekey' in reference)) return 'no rekey';
        (cipher as RekeyableAeadCipher).rekey(pattern(js.keyLength, 2));
        (reference as RekeyableAeadCipher).rekey(pattern(js.keyLength, 2));
      }
      const plaintext = pattern(length, 7 + round);
      const got = new Uint8Array(length + TAG_LENGTH);
      const want = new Uint8Array(length + TAG_LENGTH);
      cipher.seal(nonce, ad, plaintext, got, 0);
      reference.seal(nonce, ad, plaintext, want, 0);
      if (got.some((b, i) => b !== want[i])) return `seal of ${length} octets differs from the JavaScript AEAD`;
      const back = new Uint8Array(length);
      if (cipher.open(nonce, ad, want, back, 0) !== length || back.some((b, i) => b !== plaintext[i])) return `open of ${length} octets failed`;
      want[round % want.length] = (want[round % want.length] ?? 0) ^ 1;
      if (cipher.open(nonce, ad, want, back, 0) !== -1) return 'a tampered ciphertext was accepted';
    }
    if (cipher instanceof OpenSslAeadCipher) cipher.wipe();
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

/** The OpenSSL AEADs that load and pass the self-test, and for the others why not. */
function openSslAlgorithms(load: () => NativeLoad): { readonly algorithms: Map<number, AeadAlgorithm>; readonly reasons: Map<number, string> } {
  const algorithms = new Map<number, AeadAlgorithm>();
  const reasons = new Map<number, string>();
  const native = load();
  const addon = native.ok ? native.addon : undefined;
  let common: string | undefined;
  if (!native.ok) common = `native addon unavailable: ${native.reason}`;
  else if (addon?.aeadAlgorithms === undefined || addon.aeadNew === undefined || addon.aeadSeal === undefined || addon.aeadOpen === undefined || addon.aeadFree === undefined) {
    common = 'the native addon was built without the OpenSSL headers';
  }
  const functions = common === undefined ? (addon as NativeAeadFunctions) : undefined;
  const fetched = functions?.aeadAlgorithms() ?? [];
  for (const id of SUPPORTED_AEAD_IDS) {
    const js = getJavaScriptAead(id);
    if (js === undefined) continue;
    if (functions === undefined) {
      reasons.set(id, common ?? 'unavailable');
      continue;
    }
    if (!fetched.includes(id)) {
      const why = id === GCM_SIV_ID ? ' (AES-GCM-SIV needs OpenSSL 3.2 or later; Node 24 links 3.5)' : '';
      reasons.set(id, `OpenSSL ${process.versions.openssl ?? ''} has no ${js.name}${why}`);
      continue;
    }
    const candidate = openSslAlgorithm(functions, js);
    const failure = selfTest(candidate, js);
    if (failure === undefined) algorithms.set(id, candidate);
    else reasons.set(id, `OpenSSL ${js.name} failed its self-test: ${failure}`);
  }
  return { algorithms, reasons };
}

/**
 * The OpenSSL AEADs this thread can run (loaded, fetched and self-tested), by id, without installing them:
 * for tests and benchmarks that compare backends.
 */
export function getOpenSslAeads(load: () => NativeLoad = loadNativeUdp): ReadonlyMap<number, AeadAlgorithm> {
  return openSslAlgorithms(load).algorithms;
}

/** Why each AEAD missing from getOpenSslAeads() is missing. */
export function openSslUnavailableReasons(load: () => NativeLoad = loadNativeUdp): ReadonlyMap<number, string> {
  return openSslAlgorithms(load).reasons;
}

const ENVIRONMENT_KEY = 'ntsd:aead-backend';

function isRequest(value: unknown): value is AeadBackendRequest {
  return value === 'auto' || value === 'openssl' || value === 'javascript';
}

/**
 * Installs in this thread, for every AEAD, OpenSSL when `request` allows it and the addon provides it, else the
 * JavaScript AEAD; records `request` for threads started later (installInheritedAeadBackend). Never throws:
 * whether `openssl` was satisfied is the caller's judgement (missingOpenSslAeads). Call it before decoding keysets.
 */
export function installAeadBackend(request: AeadBackendRequest, load: () => NativeLoad = loadNativeUdp): AeadBackendSelection {
  setEnvironmentData(ENVIRONMENT_KEY, request);
  const { algorithms, reasons } =
    request === 'javascript' ? { algorithms: new Map<number, AeadAlgorithm>(), reasons: new Map<number, string>() } : openSslAlgorithms(load);
  const entries: AeadBackendEntry[] = [];
  for (const id of SUPPORTED_AEAD_IDS) {
    const js = getJavaScriptAead(id);
    if (js === undefined) continue;
    const openssl = algorithms.get(id);
    setAeadProvider(id, openssl);
    entries.push({
      aeadId: id,
      name: js.name,
      backend: openssl === undefined ? 'javascript' : 'openssl',
      constantTime: openssl !== undefined,
      reason: openssl === undefined ? (request === 'javascript' ? 'aead-backend = "javascript"' : reasons.get(id)) : undefined,
    });
  }
  return { request, entries };
}

/** In a worker thread: installs the backend its parent asked for (`auto` when none was recorded). */
export function installInheritedAeadBackend(): AeadBackendSelection {
  const request: unknown = getEnvironmentData(ENVIRONMENT_KEY);
  return installAeadBackend(isRequest(request) ? request : 'auto');
}

/** The ids among `required` that do not run on OpenSSL in `selection` (what `aead-backend = "openssl"` refuses). */
export function missingOpenSslAeads(selection: AeadBackendSelection, required: readonly number[]): AeadBackendEntry[] {
  return selection.entries.filter((e) => required.includes(e.aeadId) && e.backend !== 'openssl');
}
