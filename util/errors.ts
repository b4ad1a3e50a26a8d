/**
 * Errors used across godwit.
 *
 * - SysError: a failed system call, shaped like Node's errno errors (code, errno, syscall, pid/path).
 *   The native helper reports failures this way and TypeScript code that calls the kernel does too.
 * - ImageError: bad bytes in an image file or on the wire: names the file, the offset and what was expected.
 * - UsageError: the user asked for something that cannot work; the CLI exits with code 2.
 *
 * Context is added on the way up with `new GodwitError(msg, { cause })`, never by rewriting the message.
 */
import { constants as osConstants } from 'node:os';

const errnoNames: Record<number, string> = Object.fromEntries(
  Object.entries(osConstants.errno).map(([name, num]) => [num, name]),
);

export function errnoName(errno: number): string {
  return errnoNames[errno] ?? `E${errno}`;
}

export class GodwitError extends Error {
  code: string;
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    this.code = options?.code ?? 'EGODWIT';
  }
}

export interface SysErrorInfo {
  errno: number;
  syscall: string;
  pid?: number;
  path?: string;
  /** What godwit was doing, e.g. "seize thread", "read memory 0x7f00..-0x7f10..". */
  what?: string;
}

export class SysError extends GodwitError {
  errno: number;
  syscall: string;
  pid?: number;
  path?: string;
  constructor(info: SysErrorInfo, options?: { cause?: unknown }) {
    const code = errnoName(info.errno);
    const where = [info.pid !== undefined ? `pid ${info.pid}` : '', info.path ?? ''].filter(Boolean).join(' ');
    const msg = `${info.what ? info.what + ': ' : ''}${info.syscall} failed: ${code}${where ? ' (' + where + ')' : ''}`;
    super(msg, { ...options, code });
    this.errno = info.errno;
    this.syscall = info.syscall;
    if (info.pid !== undefined) this.pid = info.pid;
    if (info.path !== undefined) this.path = info.path;
  }
}

export class ImageError extends GodwitError {
  file: string;
  offset: number;
  constructor(file: string, offset: number, problem: string, options?: { cause?: unknown }) {
    super(`${file}: at offset ${offset}: ${problem}`, { ...options, code: 'EBADIMAGE' });
    this.file = file;
    this.offset = offset;
  }
}

export class UsageError extends GodwitError {
  constructor(message: string) {
    super(message, { code: 'EUSAGE' });
  }
}

/** One line per cause, outermost first: what a person reads when something fails. */
export function describeError(err: unknown): string {
  const lines: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e !== undefined && e !== null && depth < 8; depth++) {
    lines.push(e instanceof Error ? e.message : String(e));
    e = e instanceof Error ? (e as Error & { cause?: unknown }).cause : undefined;
  }
  return lines.join('\n  caused by: ');
}
