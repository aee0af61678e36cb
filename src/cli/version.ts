/**
 * `ntsd --version` (`-V`): what an operator needs to know about this installation before starting it: the
 * ntsd and Node.js versions (with OpenSSL and the end-of-life warning for Node 20), the NTP datapath the
 * daemon would run ("native" when the addon loads, else "dgram" and why), and the AEAD backend.
 */
import { loadNativeUdp } from '../runtime/addon.js';
import { nodeEndOfLife, ntsdVersion } from '../runtime/version.js';

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
  lines.push('AEAD backend: JavaScript (table-driven AES, not constant-time) for AEADs 15, 16, 17 and 30');
  return lines;
}
