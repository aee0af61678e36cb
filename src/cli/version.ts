/**
 * `ntsd --version` (`-V`): what an operator needs to know about this installation before starting it: the
 * ntsd and Node.js versions (with OpenSSL and the end-of-life warning for Node 20), the NTP datapath the
 * daemon would run ("native" when the addon loads, else "dgram" and why), and per AEAD the backend that
 * `aead-backend = "auto"` would install (OpenSSL where the addon provides it, else JavaScript and why).
 */
import { loadNativeUdp } from '../runtime/addon.js';
import { nodeEndOfLife, ntsdVersion } from '../runtime/version.js';
import { openSslUnavailableReasons } from '../runtime/aead-openssl.js';
import { SUPPORTED_AEAD_IDS, getJavaScriptAead } from '../core/crypto/aead.js';

/** The lines of `ntsd --version`. */
export function versionReport(): string[] {
  const lines = [`ntsd ${ntsdVersion()}`];
  const eol = nodeEndOfLife(process.versions.node);
  const node = `Node.js ${process.versions.node} (OpenSSL ${process.versions.openssl})`;
  lines.push(eol === undefined ? node : `${node}: past end of life since ${eol.endOfLife}, no security fixes; move to ${eol.moveTo}`);
  const native = loadNativeUdp();
  lines.push(
    native.ok
      ? 'NTP datapath: native (kernel receive timestamps, recvmmsg; build/ntsd_udp.node)'
      : `NTP datapath: dgram (Node sockets; the native addon is not used: ${native.reason})`,
  );
  // What aead-backend = "auto" would install: OpenSSL per AEAD where the addon provides it.
  // Every AEAD is either available or has a reason: one load and self-test of the OpenSSL AEADs serves both.
  const reasons = openSslUnavailableReasons();
  for (const id of SUPPORTED_AEAD_IDS) {
    const name = getJavaScriptAead(id)?.name ?? `AEAD ${id}`;
    lines.push(
      !reasons.has(id)
        ? `AEAD ${id} ${name}: OpenSSL (constant-time AES)`
        : `AEAD ${id} ${name}: JavaScript (table-driven AES, not constant-time: ${reasons.get(id) ?? 'no OpenSSL AEAD'})`,
    );
  }
  return lines;
}
