/**
 * The dump's image output for `migrate`: instead of a local directory (ImageDirWriter), every image file goes
 * straight into the image stream to the target as it is produced. Pages are compressed into godwit's container by
 * the same worker pool as a local dump and passed through as they are (streamPageSink), so nothing of the
 * workload's memory is ever written to the source's disk. The manifest is sent last, like ImageDirWriter writes
 * it last: the target's directory is complete only once it has arrived and been checked.
 */
import type { ImageOutput } from '../checkpoint/dump';
import { CompressionPool } from '../images/container-pool';
import { createSinkPageWriter, pagesFileName, PageWriter, validatePageWriterOptions } from '../images/container-writer';
import { crc32Hex } from '../images/crc32';
import { provenance } from '../images/imagedir';
import { encodeManifest, ImageProvenance, Manifest, MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, ManifestFile } from '../images/manifest';
import { streamPageSink } from '../transport/page-sink';
import type { ImageSender } from '../transport/send';
import { GodwitError } from '../util/errors';

export interface StreamOutputOptions {
  level?: number;
  chunkSize?: number;
  /** Compression workers (default: one per core). */
  workers?: number;
  /** Recorded in the manifest as made.options. */
  options?: Record<string, unknown>;
}

/** What an output and its subdirectories share: one compression pool, one file at a time on the stream. */
interface Shared {
  pool?: CompressionPool;
  /** Small image files go one at a time: the receiver limits how many files may be open at once. */
  chain: Promise<unknown>;
}

export class StreamImageOutput implements ImageOutput {
  private readonly records = new Map<string, ManifestFile>();
  private readonly pageWriters = new Set<PageWriter>();
  private state: 'writing' | 'finished' | 'aborted' = 'writing';
  private readonly level: number;
  private readonly chunkSize: number;
  private readonly shared: Shared;

  /** `prefix`: a subdirectory of the target's directory ("pre-1/"), made by openSubdir(). */
  constructor(private readonly sender: ImageSender, private readonly opts: StreamOutputOptions = {}, private readonly prefix = '',
    shared?: Shared) {
    const v = validatePageWriterOptions({ compress: 'zstd', ...opts });
    this.level = v.level;
    this.chunkSize = v.chunkSize;
    this.shared = shared ?? { chain: Promise.resolve() };
  }

  /**
   * An image directory inside this one (a pre-copy round: images/pagechain.ts), with its own manifest written by
   * its finish(). The receiver makes the directory; the stream's abort removes it with everything else.
   */
  openSubdir(name: string): StreamImageOutput {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new GodwitError(`image subdirectory ${JSON.stringify(name)}: not a plain name`);
    this.check(`${name}/`);
    return new StreamImageOutput(this.sender, this.opts, `${this.prefix}${name}/`, this.shared);
  }

  private check(name: string): void {
    if (this.state !== 'writing') throw new GodwitError(`the image stream is ${this.state}: cannot add ${name}`);
    if (this.records.has(name)) throw new GodwitError(`image file ${name} written twice`);
  }

  async createPageWriter(pagesId: number): Promise<PageWriter> {
    const name = pagesFileName(pagesId, 'zstd');
    this.check(name);
    this.shared.pool ??= new CompressionPool(this.opts.workers);
    const w = createSinkPageWriter(streamPageSink(this.sender, this.prefix + name), { compress: 'zstd', level: this.level,
      chunkSize: this.chunkSize, pool: this.shared.pool });
    const tracked: PageWriter = {
      name,
      write: (d) => w.write(d),
      finish: async () => {
        try {
          const r = await w.finish();
          this.records.set(name, { name, size: r.size, crc32: r.crc32, pagesBytes: r.pagesBytes });
          return r;
        } finally {
          this.pageWriters.delete(tracked);
        }
      },
      abort: async () => {
        this.pageWriters.delete(tracked);
        await w.abort();
      },
    };
    this.pageWriters.add(tracked);
    return tracked;
  }

  writeFile(name: string, data: Uint8Array | Uint8Array[]): Promise<ManifestFile> {
    this.check(name);
    const parts = Array.isArray(data) ? data : [data];
    const run = async (): Promise<ManifestFile> => {
      const f = this.sender.openFile(this.prefix + name);
      // The encoders hand over fresh buffers: wrap, do not copy.
      for (const p of parts) if (p.byteLength) await f.write(Buffer.from(p.buffer, p.byteOffset, p.byteLength));
      const r = await f.end();
      const rec = { name, size: r.size, crc32: crc32Hex(r.crc) };
      this.records.set(name, rec);
      return rec;
    };
    const p = this.shared.chain.then(run, run);
    this.shared.chain = p.catch(() => undefined);
    return p;
  }

  get files(): ManifestFile[] {
    return [...this.records.values()];
  }

  async finish(extra: Partial<ImageProvenance> = {}): Promise<Manifest> {
    if (this.state !== 'writing') throw new GodwitError(`the image stream is already ${this.state}`);
    if (this.pageWriters.size > 0) {
      throw new GodwitError(`image stream: ${[...this.pageWriters].map((w) => w.name).join(', ')} not finished before the manifest`);
    }
    await this.shared.chain;
    const manifest = await this.sendManifest(extra);
    // The workers end on their own threads (5-10 ms for the pool here): the end of the stream does not wait for them.
    // On a failure above, abort() stops them.
    if (!this.prefix) void this.closePool().catch(() => undefined);
    return manifest;
  }

  private async sendManifest(extra: Partial<ImageProvenance>): Promise<Manifest> {
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      version: MANIFEST_VERSION,
      made: provenance('zstd', { level: this.level, chunkSize: this.chunkSize,
        ...(this.opts.options ? { options: this.opts.options } : {}), ...extra }),
      files: this.files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    };
    const f = this.sender.openFile(this.prefix + MANIFEST_NAME);
    await f.write(encodeManifest(manifest));
    await f.end();
    this.state = 'finished';
    return manifest;
  }

  /** The stream itself is aborted by the migration (the target then removes everything): stop the workers. */
  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    this.state = 'aborted';
    await Promise.allSettled([...this.pageWriters].map((w) => w.abort()));
    this.pageWriters.clear();
    if (!this.prefix) await this.closePool().catch(() => undefined);
  }

  private async closePool(): Promise<void> {
    const p = this.shared.pool;
    this.shared.pool = undefined;
    await p?.close();
  }
}
