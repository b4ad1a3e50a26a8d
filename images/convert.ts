/**
 * `godwit convert DIR --to criu|godwit [--out DIR2]`: between CRIU's plain layout (pages-N.img) and godwit's
 * (pages-N.gwz containers). A container holds exactly the bytes of pages-N.img, so `--to criu` gives files
 * byte-identical to a `--compress none` dump; every other file is copied unchanged.
 *
 * With a manifest, every source file is checked against it while it is read; the conversion stops at the first
 * mismatch (a damaged image is not silently carried over). Without one (CRIU's own dumps) the files are taken as
 * they are and the result gets a manifest.
 *
 * In place (no --out): new pages files are written beside the old ones (temporary name, fsync, rename), then the
 * manifest is replaced atomically, then the old pages files are removed; an interruption at any point leaves a
 * directory whose manifest describes complete files.
 *
 * A pre-dump chain (a migration's kept image: pre-1/, pre-2/, ... linked by `parent`, images/pagechain.ts) is
 * converted round by round, each an image directory of its own; with --out the `parent` links are made again
 * as they were (relative, so the copy is a chain of its own).
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { GodwitError, ImageError, UsageError } from '../util/errors';
import { AtomicFile, toSysError } from './atomic-file';
import { crc32, crc32Hex } from './crc32';
import { CompressionPool } from './container-pool';
import { containerName, plainPagesName } from './container-format';
import { openPagesFile } from './container-reader';
import { Compression, PagesFileRecord, allocPageBuffer, createPageWriter, validatePageWriterOptions } from './container-writer';
import { ImageDirWriter, fsyncDir, provenance } from './imagedir';
import { PARENT_LINK, ROUND_DIR } from './pagechain';
import { ImageProvenance, MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, Manifest, ManifestFile, ManifestMissing, encodeManifest, readManifest } from './manifest';

export interface ConvertOptions {
  to: 'criu' | 'godwit';
  /** Write the result here (a new or empty directory) instead of converting in place. */
  out?: string;
  level?: number;
  chunkSize?: number;
  workers?: number;
}

export interface ConvertReport {
  from: string;
  to: string;
  layout: 'criu' | 'godwit';
  converted: Array<{ from: string; to: string; pagesBytes: number; size: number }>;
  copied: number;
  manifest: Manifest;
  /** The pre-dump chain's rounds (pre-1/, ...), each converted as an image directory of its own. */
  rounds?: ConvertReport[];
}

const COPY_PIECE = 1 << 20;
/** Read buffers in flight while compressing: one per job the pool can hold, so both workers stay busy. */
const COMPRESS_BUFFERS = 6;

const PAGES_RE = /^pages-(\d+)\.(img|gwz)$/;

function pagesIdOf(name: string): { id: number; packed: boolean } | undefined {
  const m = PAGES_RE.exec(name);
  return m ? { id: Number(m[1]), packed: m[2] === 'gwz' } : undefined;
}

/** The files of a source image: the manifest's list, or every regular file (CRIU dumps have no manifest). */
async function sourceFiles(dir: string): Promise<{ manifest?: Manifest; files: ManifestFile[] | string[] }> {
  try {
    const manifest = await readManifest(dir);
    return { manifest, files: manifest.files };
  } catch (err) {
    if (!(err instanceof ManifestMissing)) throw err;
  }
  const names: string[] = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    if (e.isFile() && !e.name.startsWith('.')) names.push(e.name);
  }
  return { files: names.sort() };
}

/** Checks what was read of a listed file against the manifest. */
function checkAgainst(want: ManifestFile | undefined, size: number, crc: number, file: string): void {
  if (!want) return;
  if (size !== want.size) throw new ImageError(file, size, `file is ${size} bytes, the manifest says ${want.size}: not converting a damaged image (run godwit verify)`);
  if (crc32Hex(crc) !== want.crc32) {
    throw new ImageError(file, 0, `crc32 is ${crc32Hex(crc)}, the manifest says ${want.crc32}: not converting a damaged image (run godwit verify)`);
  }
}

/** Streams a file, checking it against the manifest entry, into `sink`. */
async function copyChecked(src: string, want: ManifestFile | undefined, sink: (b: Buffer) => Promise<void>): Promise<void> {
  const fh = await fsp.open(src, 'r').catch((err) => {
    throw toSysError(err, 'open', src);
  });
  try {
    let crc = 0;
    let size = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(COPY_PIECE);
      const { bytesRead } = await fh.read(buf, 0, buf.length, size);
      if (bytesRead === 0) break;
      const piece = buf.subarray(0, bytesRead);
      crc = crc32(piece, crc);
      size += bytesRead;
      await sink(piece);
    }
    checkAgainst(want, size, crc, src);
  } finally {
    await fh.close();
  }
}

/**
 * Re-encodes one pages file into `write`. The source's whole-file checksum is checked at the end; its chunks are
 * checked as they are read.
 */
async function convertPages(src: string, want: ManifestFile | undefined, to: Compression, write: (b: Buffer) => Promise<void>): Promise<number> {
  // A container checks itself chunk by chunk; its whole-file crc is checked separately, before anything is used.
  if (want) {
    await copyChecked(src, want, async () => undefined);
  }
  const reader = await openPagesFile(src);
  try {
    if (to === 'none') {
      for await (const piece of reader.stream()) await write(piece);
    } else {
      // Read into shared buffers so the compressor takes them without a copy; several in flight.
      const bufs = Array.from({ length: COMPRESS_BUFFERS }, () => allocPageBuffer(COPY_PIECE));
      const pending: Array<Promise<void> | undefined> = new Array(COMPRESS_BUFFERS).fill(undefined);
      let k = 0;
      for (let at = 0; at < reader.size; at += COPY_PIECE, k = (k + 1) % COMPRESS_BUFFERS) {
        await pending[k];
        const b = bufs[k]!.subarray(0, Math.min(COPY_PIECE, reader.size - at));
        await reader.readInto(b, at);
        pending[k] = write(b);
        pending[k]!.catch(() => undefined); // awaited before reuse or at the end
      }
      await Promise.all(pending);
    }
    return reader.size;
  } finally {
    await reader.close();
  }
}

/** The pre-copy rounds beside an image (pre-1/, pre-2/, ...), in round order. */
async function roundDirs(dir: string): Promise<string[]> {
  const out: Array<[number, string]> = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    const m = ROUND_DIR.exec(e.name);
    if (m && e.isDirectory()) out.push([Number(m[1]), e.name]);
  }
  return out.sort((a, b) => a[0] - b[0]).map(([, name]) => name);
}

/** The image and the rounds of its pre-dump chain, if it has one; with --out, the `parent` links made again. */
export async function convertImageDir(dir: string, opts: ConvertOptions): Promise<ConvertReport> {
  const report = await convertOneDir(dir, opts);
  const rounds = await roundDirs(dir);
  if (rounds.length === 0) return report;
  report.rounds = [];
  for (const name of rounds) {
    report.rounds.push(await convertOneDir(path.join(dir, name), { ...opts, ...(opts.out !== undefined ? { out: path.join(opts.out, name) } : {}) }));
  }
  if (opts.out !== undefined) {
    for (const rel of ['', ...rounds]) {
      const link = await fsp.readlink(path.join(dir, rel, PARENT_LINK)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined; // the first round has no parent
        throw toSysError(err, 'readlink', path.join(dir, rel, PARENT_LINK));
      });
      if (link === undefined) continue;
      if (path.isAbsolute(link)) throw new ImageError(path.join(dir, rel, PARENT_LINK), 0, `points outside the chain (${link}): not copying it`);
      await fsp.symlink(link, path.join(opts.out, rel, PARENT_LINK));
    }
    await fsyncDir(opts.out);
  }
  return report;
}

async function convertOneDir(dir: string, opts: ConvertOptions): Promise<ConvertReport> {
  if (opts.to !== 'criu' && opts.to !== 'godwit') throw new UsageError(`--to must be criu or godwit, got ${JSON.stringify(opts.to)}`);
  const compress: Compression = opts.to === 'criu' ? 'none' : 'zstd';
  const po = validatePageWriterOptions({ compress, level: opts.level, chunkSize: opts.chunkSize });
  const st = await fsp.stat(dir).catch((err) => {
    throw toSysError(err, 'open image directory', dir);
  });
  if (!st.isDirectory()) throw new UsageError(`${dir} is not a directory`);
  const { manifest, files } = await sourceFiles(dir);
  const entries: Array<{ name: string; want?: ManifestFile }> = files.map((f) => (typeof f === 'string' ? { name: f } : { name: f.name, want: f }));
  if (!entries.some((e) => pagesIdOf(e.name)) && !entries.some((e) => e.name === 'inventory.img')) {
    throw new UsageError(`${dir} holds no image (no inventory.img or pages files): nothing to convert`);
  }
  const made: ImageProvenance = manifest
    ? {
        ...manifest.made,
        compression: compress,
        convertedFrom: { compression: manifest.made.compression, time: new Date().toISOString() },
      }
    : provenance(compress, { options: { source: 'an image without a godwit manifest (e.g. a CRIU dump)' } });
  delete made.level;
  delete made.chunkSize;
  if (compress === 'zstd') Object.assign(made, { level: po.level, chunkSize: po.chunkSize });

  const report: ConvertReport = { from: dir, to: opts.out ?? dir, layout: opts.to, converted: [], copied: 0, manifest: undefined as unknown as Manifest };
  const target = (name: string): string | undefined => {
    const p = pagesIdOf(name);
    if (!p || p.packed === (compress === 'zstd')) return undefined;
    return compress === 'zstd' ? containerName(p.id) : plainPagesName(p.id);
  };

  if (opts.out !== undefined) {
    if (path.resolve(opts.out) === path.resolve(dir)) throw new UsageError('--out is the source directory: leave --out away to convert in place');
    const w = await ImageDirWriter.create(opts.out, { compress, level: po.level, chunkSize: po.chunkSize, workers: opts.workers });
    try {
      for (const e of entries) {
        const src = path.join(dir, e.name);
        const to = target(e.name);
        if (to) {
          const pw = await w.createPageWriter(pagesIdOf(to)!.id);
          try {
            const pagesBytes = await convertPages(src, e.want, compress, (b) => pw.write(b));
            const r = await pw.finish();
            report.converted.push({ from: e.name, to, pagesBytes, size: r.size });
          } catch (err) {
            await pw.abort();
            throw err;
          }
        } else {
          const f = await w.createFile(e.name);
          try {
            await copyChecked(src, e.want, (b) => f.write(b));
            await f.commit();
            report.copied++;
          } catch (err) {
            await f.abort();
            throw err;
          }
        }
      }
      report.manifest = await w.finish(made);
      return report;
    } catch (err) {
      await w.abort();
      throw err;
    }
  }

  // In place.
  const newFiles: ManifestFile[] = [];
  const replaced: string[] = [];
  const pool = compress === 'zstd' ? new CompressionPool(opts.workers) : undefined;
  try {
    for (const e of entries) {
      const to = target(e.name);
      const src = path.join(dir, e.name);
      if (!to) {
        if (e.want) newFiles.push(e.want);
        else {
          // No manifest: checksum the file as it is.
          let crc = 0;
          let size = 0;
          await copyChecked(src, undefined, async (b) => {
            crc = crc32(b, crc);
            size += b.length;
          });
          newFiles.push({ name: e.name, size, crc32: crc32Hex(crc), ...(pagesIdOf(e.name) ? { pagesBytes: size } : {}) });
        }
        continue;
      }
      if (entries.some((x) => x.name === to)) throw new GodwitError(`${dir} has both ${e.name} and ${to}: convert with --out, or remove one`);
      const pw = await createPageWriter(dir, pagesIdOf(to)!.id, { compress, level: po.level, chunkSize: po.chunkSize, ...(pool ? { pool } : {}) });
      let r: PagesFileRecord;
      try {
        const pagesBytes = await convertPages(src, e.want, compress, (b) => pw.write(b));
        r = await pw.finish();
        report.converted.push({ from: e.name, to, pagesBytes, size: r.size });
      } catch (err) {
        await pw.abort();
        throw err;
      }
      newFiles.push({ name: r.name, size: r.size, crc32: r.crc32, pagesBytes: r.pagesBytes });
      replaced.push(e.name);
    }
    newFiles.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const m: Manifest = { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, made, files: newFiles };
    await fsyncDir(dir);
    const mf = await AtomicFile.create(dir, MANIFEST_NAME);
    try {
      await mf.write(encodeManifest(m));
    } catch (err) {
      await mf.abort();
      throw err;
    }
    await mf.commit(); // rename over the old manifest: atomic
    await fsyncDir(dir);
    for (const name of replaced) await fsp.rm(path.join(dir, name), { force: true });
    await fsyncDir(dir);
    report.manifest = m;
    report.copied = 0;
    return report;
  } catch (err) {
    // Remove new pages files the manifest does not list yet; the old manifest and files are untouched.
    const manifestNow = await readManifest(dir).catch(() => undefined);
    for (const c of report.converted) {
      if (!manifestNow?.files.some((f) => f.name === c.to)) await fsp.rm(path.join(dir, c.to), { force: true }).catch(() => undefined);
    }
    throw err;
  } finally {
    await pool?.close();
  }
}
