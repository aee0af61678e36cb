/**
 * The native UDP addon (src/native/*.c, built into build/ntsd_udp.node by src/native/build.mjs), typed.
 *
 * The addon only moves datagrams and timestamps; everything it returns is checked here or by the
 * caller. `loadNativeUdp()` never throws: when the addon is missing (no compiler at install time, not
 * Linux), fails to load, or disagrees with the layout below, it says why and the daemon runs the dgram
 * datapath instead (or refuses to start when `datapath = "native"` was asked for).
 *
 * The shared block of a socket (ntsd_udp.h): counters, then per-slot metadata, then receive payloads,
 * then transmit payloads. One block per socket, allocated once, never transferred.
 */
import { constants as osConstants } from 'node:os';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import type { IpFamily } from '../core/ip.js';

/**
 * Where the build script puts the addon, relative to this module (dist/src/ntp/); `NTSD_NATIVE_ADDON`
 * names another build (the sanitizer build of bench/storm).
 */
function addonPath(): string {
  return process.env['NTSD_NATIVE_ADDON'] ?? new URL('../../../build/ntsd_udp.node', import.meta.url).pathname;
}

/** Block layout constants; must equal the addon's own `layout` export. */
export const NativeLayout = {
  slots: 64,
  slotBytes: 4096,
  metaBytes: 64,
  metaOffset: 64,
  rxOffset: 64 + 64 * 64,
  txOffset: 64 + 64 * 64 + 64 * 4096,
  blockBytes: 64 + 64 * 64 + 2 * 64 * 4096,
  txLengthWord: 12,
  addrWord: 8,
  txStampWord: 13,
  txIdWord: 14,
} as const;

/** u32 words of one slot's metadata (ntsd_udp.h `enum ntsd_meta`). */
export const MetaWord = {
  rxLength: 0,
  rxFlags: 1,
  stampSecondsLow: 2,
  stampSecondsHigh: 3,
  stampNanoseconds: 4,
  family: 5,
  port: 6,
  scope: 7,
  address: 8,
  txLength: 12,
  /** In: TxStampFlag.wanted asks for the reply's kernel TX stamp; out: TxStampFlag.asked once it was sent so. */
  txStamp: 13,
  /** Out: the OPT_ID that reply's TX stamp will carry (when txStamp is TxStampFlag.asked). */
  txId: 14,
} as const;

/** Values of MetaWord.txStamp (ntsd_udp.h NTSD_TX_*). */
export const TxStampFlag = {
  wanted: 1,
  asked: 2,
} as const;
/** u32 words per slot. */
export const META_WORDS = NativeLayout.metaBytes / 4;

/** Bits of MetaWord.rxFlags. */
export const RxFlag = {
  truncated: 1,
  kernelStamp: 2,
} as const;

/** Float64 counters at the start of a block (ntsd_udp.h `enum ntsd_counter`). */
export const NativeCounter = {
  received: 0,
  truncated: 1,
  recvErrors: 2,
  sent: 3,
  sendErrors: 4,
  noStamp: 5,
  txStamps: 6,
  /** The OPT_ID the next stamped reply will get (servers in StampMode.receiveTransmitOnRequest). */
  txNextId: 7,
} as const;
/** Number of counter slots. */
export const NATIVE_COUNTERS = 8;

/** Timestamping of a socket (ntsd_udp.h `enum ntsd_stamp_mode`). */
export const StampMode = {
  none: 0,
  /** SO_TIMESTAMPNS receive stamps (servers). */
  receive: 1,
  /** SO_TIMESTAMPING software receive and transmit stamps (load generator). */
  receiveTransmit: 2,
  /** SO_TIMESTAMPING software receive stamps; a software transmit stamp only for replies whose txStamp word asks (interleaved mode). */
  receiveTransmitOnRequest: 3,
} as const;

/** An opaque socket handle owned by the addon. */
export type NativeHandle = { readonly __nativeUdpHandle: unique symbol };

/** An opaque AEAD key handle owned by the addon (src/native/aead.c, SIV in aead_siv.c). */
export type NativeAeadHandle = { readonly __nativeAeadHandle: unique symbol };

/**
 * One seal or open: regions of `buffer` by octet offset (the key, input and output may instead live in their
 * own buffers); returns the offset after the output, or -1 when authentication fails (open).
 */
export type NativeAeadOperation = (
  handle: NativeAeadHandle,
  buffer: ArrayBuffer,
  keyOffset: number,
  nonceOffset: number,
  nonceLength: number,
  adOffset: number,
  adLength: number,
  inOffset: number,
  inLength: number,
  outOffset: number,
  keyBuffer?: ArrayBuffer,
  inBuffer?: ArrayBuffer,
  outBuffer?: ArrayBuffer,
) => number;

/**
 * The addon's OpenSSL AEADs (src/native/aead.c); absent when it was built without the OpenSSL headers.
 * Offsets are octets into `buffer` (nonce, associated data) and into `keyBuffer`, `inBuffer`, `outBuffer` (the new
 * key, the input, the output; each defaults to `buffer`); aeadSeal/aeadOpen return the offset after the output,
 * or -1 when open does not authenticate; a region outside its buffer throws RangeError. `keyOffset` >= 0
 * re-keys first.
 */
export interface NativeAeadFunctions {
  /** AEAD ids whose OpenSSL cipher can be fetched. */
  aeadAlgorithms(): number[];
  /** A keyed handle; throws on an unknown id or a wrong key length. */
  aeadNew(aeadId: number, key: Uint8Array): NativeAeadHandle;
  aeadSeal: NativeAeadOperation;
  aeadOpen: NativeAeadOperation;
  /** Cleanses the key copies and frees the OpenSSL contexts now (the finalizer does it otherwise). */
  aeadFree(handle: NativeAeadHandle): void;
}

/** The addon's functions (src/native/addon.c). Negative numbers are -errno. */
export interface NativeUdpAddon extends Partial<NativeAeadFunctions> {
  openUdp(
    family: 4 | 6,
    address: Uint8Array,
    port: number,
    v6only: number,
    reusePort: number,
    receiveBufferBytes: number,
    stampMode: number,
    peer: Uint8Array | null,
    peerPort: number,
    block: ArrayBuffer,
  ): NativeHandle | number;
  localPort(handle: NativeHandle): number;
  /** recvmmsg into the block: number of slots filled (0 = nothing waiting). */
  recv(handle: NativeHandle): number;
  /** sendmsg of transmit slot `slot` (length in its txLength word) to its peer: 1 sent, 0 not. */
  sendOne(handle: NativeHandle, slot: number): number;
  /** sendmmsg of transmit slots [0, count) whose txLength is non-zero: number attempted. */
  sendBatch(handle: NativeHandle, count: number): number;
  /** Transmit stamps from the error queue (batched recvmmsg) as (id, seconds, nanoseconds) triples: the count written. */
  readTxStamps(handle: NativeHandle, out: Float64Array): number;
  /** Restarts OPT_ID numbering at 0 for us and the kernel (after they disagreed), dropping queued stamps: 0 or -errno. */
  resetTxIds(handle: NativeHandle): number;
  /**
   * Calls `onReadable` on this thread's event loop whenever the socket is readable, with `errorQueue` true when
   * the wake-up was POLLERR (queued transmit stamps: read them, or the wake-ups repeat); 0 or a libuv error.
   */
  start(handle: NativeHandle, onReadable: (errorQueue: boolean) => void): number;
  close(handle: NativeHandle): void;
  /** CLOCK_REALTIME: out[0] seconds, out[1] nanoseconds. */
  realtime(out: Float64Array): void;
  /** A listening TCP socket with SO_REUSEPORT: fd or -errno. */
  openTcpListener(family: 4 | 6, address: Uint8Array, port: number, v6only: number, backlog: number): number;
  readonly layout: Readonly<Record<keyof typeof NativeLayout, number>>;
}

/** Result of loading the addon. */
export type NativeLoad = { readonly ok: true; readonly addon: NativeUdpAddon } | { readonly ok: false; readonly reason: string };

let cached: NativeLoad | undefined;

/** Loads the addon once per thread; explains why when it cannot be used. `NTSD_NATIVE=0` disables it. */
export function loadNativeUdp(): NativeLoad {
  cached ??= load();
  return cached;
}

function load(): NativeLoad {
  if (process.env['NTSD_NATIVE'] === '0') return { ok: false, reason: 'disabled by NTSD_NATIVE=0' };
  if (process.platform !== 'linux') return { ok: false, reason: `the native datapath is Linux-only (this is ${process.platform})` };
  const path = addonPath();
  if (!existsSync(path)) return { ok: false, reason: `${path} was not built (see the npm install output; needs cc and Node headers)` };
  let addon: NativeUdpAddon;
  try {
    addon = createRequire(import.meta.url)(path) as NativeUdpAddon;
  } catch (error) {
    return { ok: false, reason: `build/ntsd_udp.node does not load: ${error instanceof Error ? error.message : String(error)}` };
  }
  for (const [key, value] of Object.entries(NativeLayout)) {
    const theirs = (addon.layout as Record<string, number | undefined>)[key];
    if (theirs !== value) return { ok: false, reason: `build/ntsd_udp.node is stale: layout.${key} is ${String(theirs)}, expected ${value} (run npm install)` };
  }
  return { ok: true, addon };
}

/** Raw octets of an IP literal, or undefined when it is none. */
export function addressBytes(host: string): { family: 4 | 6; bytes: Uint8Array } | undefined {
  if (isIPv4(host)) return { family: 4, bytes: Uint8Array.from(host.split('.').map(Number)) };
  if (!isIPv6(host)) return undefined;
  const bytes = new Uint8Array(16);
  let text = host;
  const percent = text.indexOf('%');
  if (percent >= 0) text = text.slice(0, percent);
  // A trailing dotted quad (::ffff:1.2.3.4) becomes two groups.
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad !== null && quad[1] !== undefined) {
    const q = quad[1].split('.').map(Number);
    text = `${text.slice(0, -quad[1].length)}${(((q[0] ?? 0) << 8) | (q[1] ?? 0)).toString(16)}:${(((q[2] ?? 0) << 8) | (q[3] ?? 0)).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? headGroups : [...headGroups, ...new Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    bytes[i * 2] = v >>> 8;
    bytes[i * 2 + 1] = v & 0xff;
  });
  return { family: 6, bytes };
}

/** A socket's peer address from its slot metadata, as text (IPv4-mapped IPv6 shown as IPv4). */
export function peerAddressText(meta: Uint32Array, base: number): string {
  const bytes = new Uint8Array(meta.buffer, meta.byteOffset + (base + MetaWord.address) * 4, 16);
  if (meta[base + MetaWord.family] === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  let mapped = true;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) mapped = false;
  if (mapped && bytes[10] === 0xff && bytes[11] === 0xff) return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return groups.join(':');
}

/** Name of an errno value returned negated by the addon, e.g. -98 → "EADDRINUSE". */
export function errnoName(negated: number): string {
  const errno = -negated;
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/**
 * A slot's peer address as core/ip.ts words (IPv6 form, most significant word first, IPv4 as
 * IPv4-mapped) without allocating: `metaBytes` is a Uint8Array over the same memory as `meta`.
 */
export function peerWords(metaBytes: Uint8Array, meta: Uint32Array, base: number, out: Uint32Array): IpFamily {
  const at = (base + MetaWord.address) * 4;
  const be32 = (i: number): number => (((metaBytes[i] ?? 0) << 24) | ((metaBytes[i + 1] ?? 0) << 16) | ((metaBytes[i + 2] ?? 0) << 8) | (metaBytes[i + 3] ?? 0)) >>> 0;
  if (meta[base + MetaWord.family] === 4) {
    out[0] = 0;
    out[1] = 0;
    out[2] = 0xffff;
    out[3] = be32(at);
    return 4;
  }
  for (let w = 0; w < 4; w++) out[w] = be32(at + 4 * w);
  return out[0] === 0 && out[1] === 0 && out[2] === 0xffff ? 4 : 6;
}
