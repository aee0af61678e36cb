/**
 * Versions: ntsd's own (package.json), and which Node.js lines still get security fixes. ntsd supports
 * Node ≥ 20.19 because Debian 13 ships 20, but Node 20 reached end of life on 2026-04-30: the daemon says
 * so once at start and names the line to move to.
 */
import { readFileSync } from 'node:fs';

/** ntsd's version from package.json (for logs, ntsd_build_info and `ntsd --version`); "0.0.0" if unreadable. */
export function ntsdVersion(): string {
  try {
    const pkg: unknown = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'));
    if (typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string') return pkg.version;
  } catch {
    // fall through
  }
  return '0.0.0';
}

/** Node.js major lines past their end of life, with the date it came (upstream release schedule). */
const END_OF_LIFE: ReadonlyMap<number, string> = new Map([[20, '2026-04-30']]);

/** The line an operator should move to (the current LTS). */
export const RECOMMENDED_NODE_MAJOR = 24;

/** Why `version` (e.g. "20.20.2") is unsupported upstream, or undefined while its line gets fixes. */
export function nodeEndOfLife(version: string): { readonly major: number; readonly endOfLife: string; readonly moveTo: string } | undefined {
  const major = Number.parseInt(version.replace(/^v/, ''), 10);
  const endOfLife = END_OF_LIFE.get(major);
  return endOfLife === undefined ? undefined : { major, endOfLife, moveTo: `Node.js ${RECOMMENDED_NODE_MAJOR} LTS` };
}
