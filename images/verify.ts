/**
 * `godwit verify DIR`: checks an image directory end to end and lists everything that is wrong.
 *
 * 1. the manifest is present and valid (manifest.ts);
 * 2. every listed file exists with the listed size and crc32, and no file is there that the manifest does not list;
 * 3. every page container is whole: header, index, trailer, and each chunk's checksums and decompression;
 * 4. every CRIU image file decodes, and the pagemaps' page counts add up to the page data of their pages files
 *    (these two use the image decoders: see imagecheck.ts).
 *
 * Each problem names the file and, where there is one, the offset. Checks go on after a problem so the user sees
 * the whole picture; per file the list is capped so a badly damaged file does not bury the others.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { GodwitError } from '../util/errors';
import { partialName, toSysError } from './atomic-file';
import { crc32, crc32Hex } from './crc32';
import { CONTAINER_SUFFIX } from './container-format';
import { ContainerReader } from './container-reader';
import { checkImageFiles } from './imagecheck';
import { PARENT_LINK, ROUND_DIR } from './pagechain';
import { ImageProvenance, MANIFEST_NAME, Manifest, ManifestFile, readManifest } from './manifest';
import { VerifyProblem, problemOf } from './verify-problem';

export type { VerifyProblem } from './verify-problem';

export interface VerifyReport {
  dir: string;
  ok: boolean;
  /** How the image was made, when the manifest could be read. */
  made?: ImageProvenance;
  checked: {
    files: number;
    bytes: number;
    containers: number;
    chunks: number;
    /** Bytes of page data behind all pages files. */
    pagesBytes: number;
    /** CRIU image files decoded. */
    decoded: number;
  };
  problems: VerifyProblem[];
}

/** Problems reported per file before the rest is summarised. */
const MAX_PROBLEMS_PER_FILE = 16;
const READ_PIECE = 1 << 20;

/** crc32 and size of a whole file, read in pieces. */
export async function fileCrc32(file: string): Promise<{ size: number; crc32: string }> {
  const fh = await fsp.open(file, 'r').catch((err) => {
    throw toSysError(err, 'open', file);
  });
  try {
    const buf = Buffer.allocUnsafe(READ_PIECE);
    let crc = 0;
    let size = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, size);
      if (bytesRead === 0) break;
      crc = crc32(buf.subarray(0, bytesRead), crc);
      size += bytesRead;
    }
    return { size, crc32: crc32Hex(crc) };
  } finally {
    await fh.close();
  }
}

/** Reads and checks every chunk of a page container; returns its chunk count and page bytes. */
export async function verifyContainer(file: string, problems: VerifyProblem[]): Promise<{ chunks: number; pagesBytes: number } | undefined> {
  const name = path.basename(file);
  let r: ContainerReader;
  try {
    r = await ContainerReader.open(file);
  } catch (err) {
    problems.push(problemOf(err, name));
    return undefined;
  }
  try {
    let bad = 0;
    for (let i = 0; i < r.chunks.length; i++) {
      try {
        await r.loadChunk(i);
      } catch (err) {
        if (++bad <= MAX_PROBLEMS_PER_FILE) problems.push(problemOf(err, name));
      }
    }
    if (bad > MAX_PROBLEMS_PER_FILE) problems.push({ file: name, problem: `${bad - MAX_PROBLEMS_PER_FILE} more bad chunks` });
    return { chunks: r.chunks.length, pagesBytes: r.size };
  } finally {
    await r.close();
  }
}

export async function verifyImageDir(dir: string, depth = 0): Promise<VerifyReport> {
  const report: VerifyReport = {
    dir,
    ok: false,
    checked: { files: 0, bytes: 0, containers: 0, chunks: 0, pagesBytes: 0, decoded: 0 },
    problems: [],
  };
  const problems = report.problems;
  let entries: string[];
  try {
    const st = await fsp.stat(dir);
    if (!st.isDirectory()) throw new GodwitError(`${dir} is not a directory`);
    entries = (await fsp.readdir(dir)).sort();
  } catch (err) {
    throw err instanceof GodwitError ? err : toSysError(err, 'read image directory', dir);
  }

  let manifest: Manifest | undefined;
  try {
    manifest = await readManifest(dir);
    report.made = manifest.made;
  } catch (err) {
    problems.push(problemOf(err, MANIFEST_NAME));
  }

  // Which files there are, against which the manifest lists. A pre-dump chain's `parent` link and the rounds a
  // streamed pre-copy left beside the image (pre-N/) are images of their own: verified below, not listed here.
  const chained = await chainEntries(dir, entries);
  const present = new Set(entries.filter((e) => e !== MANIFEST_NAME && !chained.has(e)));
  const listed = new Map<string, ManifestFile>((manifest?.files ?? []).map((f) => [f.name, f]));
  if (manifest) {
    for (const name of listed.keys()) {
      if (!present.has(name)) problems.push({ file: name, problem: 'listed in the manifest but missing from the directory' });
    }
    for (const name of present) {
      if (listed.has(name)) continue;
      const partial = /^\.(.+)\.partial$/.exec(name);
      problems.push({
        file: name,
        problem: partial && partialName(partial[1]!) === name
          ? 'a partly written file left by an interrupted write'
          : 'not listed in the manifest (added after the image was made?)',
      });
    }
  }

  // Sizes and checksums of everything there.
  const pagesBytesOf = new Map<string, number | undefined>();
  for (const name of [...present].sort()) {
    const file = path.join(dir, name);
    const st = await fsp.lstat(file);
    if (!st.isFile()) {
      problems.push({ file: name, problem: `is a ${st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'special file'}, not an image file` });
      continue;
    }
    const want = listed.get(name);
    const got = await fileCrc32(file);
    report.checked.files++;
    report.checked.bytes += got.size;
    if (want) {
      if (got.size !== want.size) {
        problems.push({ file: name, offset: Math.min(got.size, want.size), problem: `file is ${got.size} bytes, the manifest says ${want.size}${got.size < want.size ? ' (truncated)' : ''}` });
      } else if (got.crc32 !== want.crc32) {
        problems.push({ file: name, problem: `crc32 is ${got.crc32}, the manifest says ${want.crc32} (changed after the image was made)` });
      }
    }
    if (name.endsWith(CONTAINER_SUFFIX)) {
      const c = await verifyContainer(file, problems);
      pagesBytesOf.set(name, c?.pagesBytes);
      if (c) {
        report.checked.containers++;
        report.checked.chunks += c.chunks;
        if (want?.pagesBytes !== undefined && want.pagesBytes !== c.pagesBytes) {
          problems.push({ file: name, problem: `holds ${c.pagesBytes} bytes of pages, the manifest says ${want.pagesBytes}` });
        }
      }
    } else if (/^pages-\d+\.img$/.test(name)) {
      pagesBytesOf.set(name, got.size);
    }
  }
  for (const b of pagesBytesOf.values()) report.checked.pagesBytes += b ?? 0;

  // CRIU image files: each decodes; pagemaps agree with the page data.
  report.checked.decoded = await checkImageFiles(dir, [...present].sort(), pagesBytesOf, problems);

  // The parent image of a chain, each against its own manifest (depth bounded by the link chain itself).
  if (chained.has(PARENT_LINK) && depth < 64) {
    const parent = await fsp.realpath(path.join(dir, PARENT_LINK)).catch(() => undefined);
    if (!parent) problems.push({ file: PARENT_LINK, problem: 'the parent link points to nothing: the pre-dump chain is broken' });
    else {
      const up = await verifyImageDir(parent, depth + 1);
      for (const p of up.problems) problems.push({ ...p, file: `${PARENT_LINK}/${p.file}` });
    }
  }

  report.ok = problems.length === 0;
  return report;
}

/** The `parent` symlink and pre-N/ round directories of a pre-dump chain among a directory's entries. */
async function chainEntries(dir: string, entries: string[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (const e of entries) {
    if (e !== PARENT_LINK && !ROUND_DIR.test(e)) continue;
    const st = await fsp.lstat(path.join(dir, e));
    if ((e === PARENT_LINK && st.isSymbolicLink()) || (e !== PARENT_LINK && st.isDirectory())) out.add(e);
  }
  return out;
}
