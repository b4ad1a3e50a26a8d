/**
 * Changing a running workload's state from outside (scenarios/build/tamper), so that tests can show a workload's
 * checker notices: write into its memory, move an fd's offset, drain a queue, re-arm a timerfd, queue a signal.
 */
import { execFile } from 'node:child_process';
import { GodwitError } from '../util/errors';
import { scenarioBinary } from './workload';

function run(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(scenarioBinary('tamper'), args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new GodwitError(`tamper ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve(stdout.trim());
    });
  });
}

/** Writes BYTES at ADDR in PID's memory (/proc/PID/mem: works on read-only mappings too). */
export async function poke(pid: number, addr: bigint | number, bytes: Buffer): Promise<void> {
  await run(['poke', String(pid), '0x' + addr.toString(16), bytes.toString('hex')]);
}

/** Moves the offset of PID's fd FD (shared with the workload: same open file description). */
export async function lseekFd(pid: number, fd: number, offset: number): Promise<void> {
  await run(['lseek', String(pid), String(fd), String(offset)]);
}

/** Reads whatever is queued in PID's fd FD without blocking; returns the byte count. */
export async function drainFd(pid: number, fd: number): Promise<number> {
  return Number(await run(['drain', String(pid), String(fd)]));
}

/** Re-arms PID's timerfd FD with another interval. */
export async function rearmTimerfd(pid: number, fd: number, intervalNs: number): Promise<void> {
  await run(['timerfd', String(pid), String(fd), String(intervalNs)]);
}

/** sigqueue(PID, SIG, VALUE). */
export async function queueSignal(pid: number, sig: number, value: number): Promise<void> {
  await run(['sigqueue', String(pid), String(sig), String(value)]);
}
