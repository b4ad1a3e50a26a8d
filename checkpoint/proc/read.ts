/**
 * Reading /proc/PID/... files. Synchronous on purpose: these reads are tiny, happen while the tree is frozen,
 * and a round trip through libuv's thread pool per file would cost more than the read itself.
 */
import * as fs from 'node:fs';
import { SysError } from '../../util/errors';

export function procPath(pid: number, name: string): string {
  return `/proc/${pid}/${name}`;
}

/** An fs error from Node turned into godwit's SysError (keeps errno, syscall and path). */
export function toSysError(err: unknown, what: string, pid?: number): unknown {
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.errno === 'number') {
    return new SysError(
      { errno: -e.errno > 0 ? -e.errno : e.errno, syscall: e.syscall ?? 'read', path: e.path, pid, what },
      { cause: err },
    );
  }
  return err;
}

export function readProcText(pid: number, name: string): string {
  try {
    return fs.readFileSync(procPath(pid, name), 'latin1');
  } catch (err) {
    throw toSysError(err, `read /proc/${pid}/${name}`, pid);
  }
}

export function readProcBytes(pid: number, name: string): Buffer {
  try {
    return fs.readFileSync(procPath(pid, name));
  } catch (err) {
    throw toSysError(err, `read /proc/${pid}/${name}`, pid);
  }
}

export function readProcLink(pid: number, name: string): string {
  try {
    return fs.readlinkSync(procPath(pid, name), 'latin1');
  } catch (err) {
    throw toSysError(err, `readlink /proc/${pid}/${name}`, pid);
  }
}

export function listProcDir(pid: number, name: string): string[] {
  try {
    return fs.readdirSync(procPath(pid, name));
  } catch (err) {
    throw toSysError(err, `list /proc/${pid}/${name}`, pid);
  }
}

/** Numeric entries of a /proc directory (task/, fd/, fdinfo/), sorted ascending. */
export function listProcNumbers(pid: number, name: string): number[] {
  return listProcDir(pid, name)
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);
}

export function isNoEntry(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return code === 'ENOENT' || code === 'ESRCH';
}
