/**
 * Writing an image directory safely.
 *
 * - The directory is created 0700 (images hold a workload's memory); an existing non-empty one is refused.
 * - Each file is written under a temporary name, fsync'd and renamed into place, mode 0600 (atomic-file.ts).
 * - The manifest (manifest.ts) is written last, after the directory itself is fsync'd: until it exists the
 *   directory is visibly unfinished, and once it exists everything it lists is on disk.
 * - abort() removes what this writer created, the directory too if it made it.
 *
 * Page data goes through createPageWriter(), which shares one compression pool across all pages files.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { GodwitError, UsageError } from '../util/errors';
import { AtomicFile, FileRecord, partialName, toSysError } from './atomic-file';
import { CompressionPool } from './container-pool';
import {
  Compression,
  PageWriter,
  PageWriterOptions,
  PagesFileRecord,
  createPageWriter,
  pagesFileName,
  validatePageWriterOptions,
} from './container-writer';
import { ImageProvenance, MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, Manifest, ManifestFile, encodeManifest } from './manifest';

export interface ImageDirOptions {
  compress?: Compression;
  level?: number;
  chunkSize?: number;
  /** Compression workers (default: one per core). */
  workers?: number;
  /** Recorded in the manifest as made.options: what was dumped and how. */
  options?: Record<string, unknown>;
}

export function godwitVersion(): string {
  // dist/images/imagedir.js -> package.json at the repository root
  return (require('../../package.json') as { version: string }).version;
}

export function provenance(compress: Compression, extra: Partial<ImageProvenance> = {}): ImageProvenance {
  return {
    godwit: godwitVersion(),
    hostname: os.hostname(),
    kernel: os.release(),
    time: new Date().toISOString(),
    compression: compress,
    ...extra,
  };
}

/**
 * Makes `dir` ready for a new image: creates it (and missing parents) with mode 0700, or accepts an existing
 * empty directory (set to 0700). Returns whether it was created.
 */
export async function prepareImageDir(dir: string): Promise<boolean> {
  let st: fs.Stats | undefined;
  try {
    st = await fsp.stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toSysError(err, 'check image directory', dir);
  }
  if (st) {
    if (!st.isDirectory()) throw new UsageError(`image directory ${dir} exists and is not a directory: choose another path`);
    const entries = await fsp.readdir(dir).catch((err) => {
      throw toSysError(err, 'read image directory', dir);
    });
    if (entries.length > 0) {
      const shown = entries.slice(0, 3).join(', ') + (entries.length > 3 ? ', ...' : '');
      throw new UsageError(`image directory ${dir} is not empty (${shown}): give a new or empty directory, or remove the old image first`);
    }
    try {
      await fsp.access(dir, fs.constants.W_OK);
      await fsp.chmod(dir, 0o700);
    } catch (err) {
      throw new UsageError(`image directory ${dir} is not writable: ${(err as Error).message}`);
    }
    return false;
  }
  try {
    await fsp.mkdir(path.dirname(path.resolve(dir)), { recursive: true, mode: 0o755 });
    await fsp.mkdir(dir, { mode: 0o700 });
    await fsp.chmod(dir, 0o700); // mkdir's mode passes through the umask
  } catch (err) {
    throw toSysError(err, 'create image directory', dir);
  }
  return true;
}

export async function fsyncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    await fh.sync();
  } catch (err) {
    throw toSysError(err, 'fsync image directory', dir);
  } finally {
    await fh?.close();
  }
}

export class ImageDirWriter {
  readonly dir: string;
  readonly compress: Compression;
  readonly level: number;
  readonly chunkSize: number;
  private readonly options: Record<string, unknown> | undefined;
  private readonly created: boolean;
  private pool: CompressionPool | undefined;
  private readonly workers: number | undefined;
  private readonly records = new Map<string, ManifestFile>();
  private readonly open = new Map<string, { abort(): Promise<void> }>();
  private state: 'writing' | 'finished' | 'aborted' = 'writing';

  private constructor(dir: string, created: boolean, o: ImageDirOptions) {
    const v = validatePageWriterOptions(o);
    this.dir = dir;
    this.created = created;
    this.compress = v.compress;
    this.level = v.level;
    this.chunkSize = v.chunkSize;
    this.options = o.options;
    this.workers = o.workers;
  }

  /** Creates (or takes an empty) `dir` for a new image. */
  static async create(dir: string, options: ImageDirOptions = {}): Promise<ImageDirWriter> {
    validatePageWriterOptions(options); // bad options fail before the directory is touched
    const created = await prepareImageDir(dir);
    return new ImageDirWriter(dir, created, options);
  }

  private checkName(name: string): void {
    if (this.state !== 'writing') throw new GodwitError(`image directory ${this.dir} is ${this.state}: cannot add ${name}`);
    if (name === MANIFEST_NAME) throw new GodwitError(`${MANIFEST_NAME} is written by finish(), not as an image file`);
    if (this.records.has(name) || this.open.has(name)) throw new GodwitError(`image file ${name} written twice in ${this.dir}`);
  }

  /** Writes a whole file (temporary name, fsync, rename). */
  async writeFile(name: string, data: Uint8Array | Uint8Array[]): Promise<FileRecord> {
    const f = await this.createFile(name);
    try {
      await f.writev(Array.isArray(data) ? data : [data]);
    } catch (err) {
      await f.abort();
      throw err;
    }
    return f.commit();
  }

  /** Opens a file to be written piece by piece; it is listed in the manifest once committed. */
  async createFile(name: string): Promise<ImageFile> {
    this.checkName(name);
    const f = await AtomicFile.create(this.dir, name);
    const handle = new ImageFile(f, (r) => {
      this.open.delete(name);
      this.records.set(name, r);
    }, () => this.open.delete(name));
    this.open.set(name, handle);
    return handle;
  }

  /** The page writer of pages id `pagesId`, with this directory's compression settings. */
  async createPageWriter(pagesId: number, overrides: Pick<PageWriterOptions, 'level' | 'chunkSize'> = {}): Promise<PageWriter> {
    const opts: PageWriterOptions = { compress: this.compress, level: this.level, chunkSize: this.chunkSize, ...overrides };
    if (this.compress === 'zstd') {
      this.pool ??= new CompressionPool(this.workers);
      opts.pool = this.pool;
    }
    this.checkName(pagesFileName(pagesId, this.compress));
    const w = await createPageWriter(this.dir, pagesId, opts);
    const tracked: PageWriter = {
      name: w.name,
      write: (d) => w.write(d),
      finish: async () => {
        try {
          const r: PagesFileRecord = await w.finish();
          this.records.set(r.name, { name: r.name, size: r.size, crc32: r.crc32, pagesBytes: r.pagesBytes });
          return r;
        } finally {
          this.open.delete(w.name);
        }
      },
      abort: async () => {
        this.open.delete(w.name);
        await w.abort();
      },
    };
    this.open.set(w.name, tracked);
    return tracked;
  }

  /** Files committed so far. */
  get files(): ManifestFile[] {
    return [...this.records.values()];
  }

  /**
   * Completes the image: every opened file must have been committed; fsyncs the directory, then writes the
   * manifest (listing files by name order) and fsyncs the directory again.
   */
  async finish(extra: Partial<ImageProvenance> = {}): Promise<Manifest> {
    if (this.state !== 'writing') throw new GodwitError(`image directory ${this.dir} is already ${this.state}`);
    if (this.open.size > 0) {
      throw new GodwitError(`image directory ${this.dir}: ${[...this.open.keys()].join(', ')} not finished before the manifest`);
    }
    await this.closePool();
    const made = provenance(this.compress, {
      ...(this.compress === 'zstd' ? { level: this.level, chunkSize: this.chunkSize } : {}),
      ...(this.options ? { options: this.options } : {}),
      ...extra,
    });
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      version: MANIFEST_VERSION,
      made,
      files: [...this.records.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    };
    await fsyncDir(this.dir);
    const f = await AtomicFile.create(this.dir, MANIFEST_NAME);
    try {
      await f.write(encodeManifest(manifest));
    } catch (err) {
      await f.abort();
      throw err;
    }
    await f.commit();
    await fsyncDir(this.dir);
    this.state = 'finished';
    return manifest;
  }

  /** Removes everything this writer wrote (and the directory if it created it). Never throws. */
  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    const wasFinished = this.state === 'finished';
    this.state = 'aborted';
    await Promise.allSettled([...this.open.values()].map((h) => h.abort()));
    this.open.clear();
    await this.closePool().catch(() => undefined);
    const names = [...this.records.keys()];
    if (wasFinished) names.push(MANIFEST_NAME);
    // The manifest goes first: a half-removed image must not look complete.
    await fsp.rm(path.join(this.dir, MANIFEST_NAME), { force: true }).catch(() => undefined);
    for (const n of names) {
      await fsp.rm(path.join(this.dir, n), { force: true }).catch(() => undefined);
      await fsp.rm(path.join(this.dir, partialName(n)), { force: true }).catch(() => undefined);
    }
    if (this.created) await fsp.rmdir(this.dir).catch(() => undefined);
  }

  private async closePool(): Promise<void> {
    const p = this.pool;
    this.pool = undefined;
    await p?.close();
  }
}

/** A file of an image directory being written piece by piece. */
export class ImageFile {
  constructor(
    private readonly file: AtomicFile,
    private readonly onCommit: (r: FileRecord) => void,
    private readonly onAbort: () => void,
  ) {}

  get name(): string {
    return this.file.name;
  }

  get size(): number {
    return this.file.size;
  }

  write(data: Uint8Array): Promise<void> {
    return this.file.write(data);
  }

  writev(data: Uint8Array[]): Promise<void> {
    return this.file.writev(data);
  }

  async commit(): Promise<FileRecord> {
    try {
      const r = await this.file.commit();
      this.onCommit(r);
      return r;
    } catch (err) {
      this.onAbort();
      throw err;
    }
  }

  async abort(): Promise<void> {
    this.onAbort();
    await this.file.abort();
  }
}
