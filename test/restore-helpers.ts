/** Helpers for restore tests: reading /proc of restored tasks, waiting, and cleaning up by pid. */
import * as fs from 'node:fs';

export const sleepMs = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface ProcStat {
  comm: string;
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
}

export function procStat(pid: number): ProcStat | null {
  let s: string;
  try {
    s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return {
    comm: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')),
    state: f[0],
    ppid: Number(f[1]),
    pgrp: Number(f[2]),
    session: Number(f[3]),
  };
}

/** The pid of `pid` in the innermost PID namespace it lives in. */
export function innerPid(pid: number): number {
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('NSpid:'))!;
  const ns = line.split(/\s+/).slice(1).filter(Boolean);
  return Number(ns[ns.length - 1]);
}

export function fdLinks(pid: number): Record<number, string> {
  const out: Record<number, string> = {};
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) out[Number(fd)] = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
  return out;
}

export async function waitFor(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleepMs(20);
  }
}

export function killPid(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}
