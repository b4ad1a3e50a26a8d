/**
 * A file that appears under its final name only once it is complete and on disk: written as `.NAME.partial`,
 * fsync'd, renamed. Its size and crc32 are tracked as it is written, for the manifest.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { GodwitError, SysError } from '../util/errors';
import { crc32, crc32Combine, crc32Hex } from './crc32';

export interface FileRecord {
  name: string;
  size: number;
  /** crc32 (IEEE) of the whole file, 8 hex digits. */
  crc32: string;
}

export function partialName(name: string): string {
  return `.${name}.partial`;
}

/** Node's fs errors (code, errno, syscall, path) as a SysError with what godwit was doing. */
export function toSysError(err: unknown, what: string, file?: string): unknown {
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.errno === 'number' && typeof e.syscall === 'string') {
    return new SysError({ errno: -e.errno > 0 ? -e.errno : e.errno, syscall: e.syscall, path: e.path ?? file, what }, { cause: err });
  }
  return err;
}

export class AtomicFile {
  readonly dir: string;
  readonly name: string;
  private fh: fsp.FileHandle | undefined;
  private _size = 0;
  private _crc = 0;
  private done = false;

  private constructor(dir: string, name: string, fh: fsp.FileHandle) {
    this.dir = dir;
    this.name = name;
    this.fh = fh;
  }

  get size(): number {
    return this._size;
  }

  get tempPath(): string {
    return path.join(this.dir, partialName(this.name));
  }

  get finalPath(): string {
    return path.join(this.dir, this.name);
  }

  static async create(dir: string, name: string, mode = 0o600): Promise<AtomicFile> {
    if (name.includes('/') || name === '' || name === '.' || name === '..') {
      throw new GodwitError(`image file name ${JSON.stringify(name)} must be a plain file name`);
    }
    const temp = path.join(dir, partialName(name));
    try {
      // (libuv opens every file O_CLOEXEC.) O_EXCL: two writers of the same file in one directory is a bug, not something to paper over.
      const fh = await fsp.open(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);
      await fh.chmod(mode); // the umask must not widen or narrow what was asked for
      return new AtomicFile(dir, name, fh);
    } catch (err) {
      throw toSysError(err, `create image file ${name}`, temp);
    }
  }

  /**
   * Appends buffers. `crcs[i]`, when given, is the already known crc32 of bufs[i] (computed by a worker), so the
   * bytes are not hashed again here.
   */
  async writev(bufs: Uint8Array[], crcs?: Array<number | undefined>): Promise<void> {
    const fh = this.fh;
    if (!fh || this.done) throw new GodwitError(`image file ${this.name} is already closed`);
    let total = 0;
    for (let i = 0; i < bufs.length; i++) {
      const b = bufs[i]!;
      const c = crcs?.[i];
      this._crc = c === undefined ? crc32(b, this._crc) : crc32Combine(this._crc, c, b.length);
      total += b.length;
    }
    let pending = bufs.filter((b) => b.length > 0);
    let position = this._size;
    try {
      while (pending.length > 0) {
        const { bytesWritten } = await fh.writev(pending, position);
        position += bytesWritten;
        pending = dropBytes(pending, bytesWritten);
      }
    } catch (err) {
      throw toSysError(err, `write image file ${this.name}`, this.tempPath);
    }
    this._size += total;
  }

  write(buf: Uint8Array, crc?: number): Promise<void> {
    return this.writev([buf], [crc]);
  }

  /** fsync, close, rename to the final name (mode 0600 by default). The directory is fsync'd by its owner. */
  async commit(): Promise<FileRecord> {
    const fh = this.fh;
    if (!fh || this.done) throw new GodwitError(`image file ${this.name} is already closed`);
    this.done = true;
    try {
      await fh.sync();
      await fh.close();
      this.fh = undefined;
      await fsp.rename(this.tempPath, this.finalPath);
    } catch (err) {
      await this.abort();
      throw toSysError(err, `finish image file ${this.name}`, this.tempPath);
    }
    return { name: this.name, size: this._size, crc32: crc32Hex(this._crc) };
  }

  /** Closes and removes the partial file; safe to call more than once and after a failure. */
  async abort(): Promise<void> {
    this.done = true;
    const fh = this.fh;
    this.fh = undefined;
    if (fh) await fh.close().catch(() => undefined);
    await fsp.rm(this.tempPath, { force: true }).catch(() => undefined);
  }
}

function dropBytes(bufs: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of bufs) {
    if (n >= b.length) {
      n -= b.length;
      continue;
    }
    out.push(n > 0 ? b.subarray(n) : b);
    n = 0;
  }
  return out;
}
