/**
 * Test support for test/native-*.test.ts: starts native/build/test-target (native/test/target.c) and reads
 * the READY line it prints, and small /proc readers. Not a test file itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const TARGET = path.resolve(__dirname, '..', '..', 'native', 'build', 'test-target');

export interface TargetInfo {
  pid: number;
  mem: string;
  memLen: number;
  none: string;
  counters: string;
  pipe: [number, number];
  stream: [number, number];
  dgram: [number, number];
  errsock: number;
  altstack: string;
  altstackSize: number;
  usr1: string;
  alrm: string;
}

export interface Target {
  child: ChildProcess;
  info: TargetInfo;
  pid: number;
  tids(): number[];
  /** SIGKILL (if still there) and wait for its exit; safe to call twice. */
  stop(): Promise<void>;
}

/** pattern(i) of target.c: the byte at offset i of its memory area. */
export function pattern(i: number): number {
  return (i * 131 + Math.floor(i / 4096) * 7 + 0x5a) & 0xff;
}

export async function startTarget(threads: number, mode: 'spin' | 'sleep'): Promise<Target> {
  const child = spawn(TARGET, [String(threads), mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => reject(new Error('test-target did not say READY within 10 s')), 10000);
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        const nl = buf.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(timer);
          resolve(buf.slice(0, nl));
        }
      });
      child.once('exit', (code) => reject(new Error(`test-target exited (${code}) before READY`)));
    });
    if (!line.startsWith('READY ')) throw new Error(`test-target said ${line}`);
    const info = JSON.parse(line.slice(6)) as TargetInfo;
    return { child, info, pid: info.pid, tids: () => listTids(info.pid), stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

export function listTids(pid: number): number[] {
  return fs
    .readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .sort((a, b) => a - b);
}

/** State letter and TracerPid of a task from /proc/<tid>/status. */
export function taskStatus(tid: number): { state: string; tracerPid: number } {
  const s = fs.readFileSync(`/proc/${tid}/status`, 'utf8');
  return {
    state: /^State:\s+(\S)/m.exec(s)![1],
    tracerPid: Number(/^TracerPid:\s+(\d+)/m.exec(s)![1]),
  };
}

/** Executable mappings of pid as [start, end) pairs. */
export function execMappings(pid: number): [bigint, bigint][] {
  return fs
    .readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter((l) => /^\S+ ..x/.test(l))
    .map((l) => {
      const [a, b] = l.split(' ')[0].split('-');
      return [BigInt('0x' + a), BigInt('0x' + b)] as [bigint, bigint];
    });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
