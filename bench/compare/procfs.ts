/**
 * CPU time and memory of a server process, read from /proc (Linux only).
 *
 * CPU is utime + stime of /proc/PID/stat, which covers every thread of the process (ntsd's worker
 * threads included), summed over the process and its live descendants (chrony forks its NTS-KE helper
 * when `ntsprocesses` is set). Memory is VmRSS (now) and VmHWM (peak) of /proc/PID/status, summed the
 * same way.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

let clockTicksPerS: number | undefined;

/** The kernel's USER_HZ (`getconf CLK_TCK`), normally 100. */
export function clockTicks(): number {
  if (clockTicksPerS === undefined) {
    const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(out.stdout.trim());
    clockTicksPerS = out.status === 0 && Number.isInteger(n) && n > 0 ? n : 100;
  }
  return clockTicksPerS;
}

interface StatFields {
  readonly ppid: number;
  /** utime + stime, clock ticks. */
  readonly ticks: number;
}

function readStat(pid: number): StatFields | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
  const ppid = Number(rest[1]);
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(ppid) || !Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return { ppid, ticks: utime + stime };
}

/** PIDs of `pid` and all its live descendants. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(Number(name));
    if (stat === undefined) continue;
    const list = children.get(stat.ppid) ?? [];
    list.push(Number(name));
    children.set(stat.ppid, list);
  }
  const tree: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift();
    if (p === undefined) break;
    tree.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return tree;
}

/** CPU seconds (user + system, all threads) used so far by `pid` and its live descendants. */
export function cpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) ticks += readStat(p)?.ticks ?? 0;
  return ticks / clockTicks();
}

/** Resident memory of `pid` and its live descendants, in bytes: now (VmRSS) and peak (VmHWM). */
export function residentBytes(pid: number): { rssBytes: number; peakBytes: number } {
  let rss = 0;
  let peak = 0;
  for (const p of processTree(pid)) {
    let text: string;
    try {
      text = readFileSync(`/proc/${p}/status`, 'utf8');
    } catch {
      continue;
    }
    rss += Number(/^VmRSS:\s+(\d+) kB/m.exec(text)?.[1] ?? 0) * 1024;
    peak += Number(/^VmHWM:\s+(\d+) kB/m.exec(text)?.[1] ?? 0) * 1024;
  }
  return { rssBytes: rss, peakBytes: peak };
}

/** CPU seconds (user + system) used so far by each thread of `pid`, by TID (threads that exited are gone). */
export function threadCpuSeconds(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(rest[11]) + Number(rest[12]);
    if (Number.isFinite(ticks)) out.set(Number(tid), ticks / clockTicks());
  }
  return out;
}
