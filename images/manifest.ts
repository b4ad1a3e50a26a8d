/**
 * The manifest of an image directory (godwit-manifest.json): every file with its size and crc32, and how the
 * image was made. It is written last, so a directory without a valid manifest is an unfinished (or foreign)
 * image and is never taken for a complete one.
 *
 * The manifest carries a crc32 of itself (of its JSON text as written, with the checksum field left out), so a
 * damaged or hand-edited manifest is told apart from damaged image files.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { ImageError } from '../util/errors';
import { toSysError } from './atomic-file';
import { crc32, crc32Hex } from './crc32';

export const MANIFEST_NAME = 'godwit-manifest.json';
export const MANIFEST_FORMAT = 'godwit-image-manifest';
export const MANIFEST_VERSION = 1;
/** A manifest lists file names and a few fields each: far below this even for thousands of files. */
const MAX_MANIFEST_BYTES = 16 << 20;

export interface ManifestFile {
  name: string;
  size: number;
  /** crc32 (IEEE) of the whole file, 8 hex digits. */
  crc32: string;
  /** For pages files (pages-N.img or pages-N.gwz): bytes of page data. */
  pagesBytes?: number;
}

export interface ImageProvenance {
  godwit: string;
  hostname: string;
  kernel: string;
  /** ISO 8601, UTC. */
  time: string;
  compression: 'zstd' | 'none';
  level?: number;
  chunkSize?: number;
  /** What the image is of and how it was taken, e.g. { command: 'dump', pid: 42, leaveRunning: true }. */
  options?: Record<string, unknown>;
  /** Set by `godwit convert`: where the image came from. */
  convertedFrom?: { compression: 'zstd' | 'none'; time: string };
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: number;
  made: ImageProvenance;
  files: ManifestFile[];
}

function body(m: Manifest): string {
  return JSON.stringify({ format: m.format, version: m.version, made: m.made, files: m.files }, null, 2);
}

export function encodeManifest(m: Manifest): Buffer {
  const text = body(m);
  const full = { ...(JSON.parse(text) as object), manifestCrc32: crc32Hex(crc32(Buffer.from(text))) };
  return Buffer.from(JSON.stringify(full, null, 2) + '\n');
}

export class ManifestMissing extends ImageError {
  constructor(dir: string) {
    super(
      path.join(dir, MANIFEST_NAME),
      0,
      `no ${MANIFEST_NAME}: not a complete godwit image (a dump that did not finish, or an image made by another tool such as CRIU)`,
    );
  }
}

/** Parses and checks a manifest; every problem is an ImageError naming the manifest file. */
export function decodeManifest(text: Buffer, file: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text.toString('utf8'));
  } catch (err) {
    throw new ImageError(file, 0, `manifest is not valid JSON (${(err as Error).message}): damaged or truncated`, { cause: err });
  }
  const bad = (what: string): never => {
    throw new ImageError(file, 0, `manifest ${what}`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad('is not a JSON object');
  const o = raw as Record<string, unknown>;
  if (o.format !== MANIFEST_FORMAT) bad(`format is ${JSON.stringify(o.format)}, expected "${MANIFEST_FORMAT}"`);
  if (o.version !== MANIFEST_VERSION) bad(`version ${JSON.stringify(o.version)} is not supported (expected ${MANIFEST_VERSION})`);
  const made = o.made as Record<string, unknown> | undefined;
  if (typeof made !== 'object' || made === null) bad('has no "made" object');
  for (const k of ['godwit', 'hostname', 'kernel', 'time'] as const) {
    if (typeof made![k] !== 'string') bad(`"made.${k}" is missing or not a string`);
  }
  if (made!.compression !== 'zstd' && made!.compression !== 'none') bad(`"made.compression" must be "zstd" or "none"`);
  if (!Array.isArray(o.files)) bad('has no "files" list');
  const seen = new Set<string>();
  (o.files as unknown[]).forEach((f, i) => {
    const e = f as Record<string, unknown>;
    if (typeof e !== 'object' || e === null) bad(`files[${i}] is not an object`);
    if (typeof e.name !== 'string' || e.name === '' || e.name.includes('/') || e.name === '.' || e.name === '..') {
      bad(`files[${i}].name ${JSON.stringify(e.name)} is not a plain file name`);
    }
    if (seen.has(e.name as string)) bad(`lists ${e.name} twice`);
    seen.add(e.name as string);
    if (!Number.isSafeInteger(e.size) || (e.size as number) < 0) bad(`files[${i}].size is not a byte count`);
    if (typeof e.crc32 !== 'string' || !/^[0-9a-f]{8}$/.test(e.crc32)) bad(`files[${i}].crc32 is not 8 hex digits`);
    if (e.pagesBytes !== undefined && (!Number.isSafeInteger(e.pagesBytes) || (e.pagesBytes as number) < 0)) {
      bad(`files[${i}].pagesBytes is not a byte count`);
    }
  });
  const m = raw as Manifest & { manifestCrc32?: unknown };
  if (typeof m.manifestCrc32 !== 'string') bad('has no "manifestCrc32"');
  const want = crc32Hex(crc32(Buffer.from(body(m))));
  if (m.manifestCrc32 !== want) {
    throw new ImageError(file, 0, `manifest checksum mismatch: it says ${m.manifestCrc32}, its content gives ${want} (the manifest was damaged or edited)`);
  }
  return { format: m.format, version: m.version, made: m.made, files: m.files };
}

/** Reads the manifest of `dir`; ManifestMissing when there is none. */
export async function readManifest(dir: string): Promise<Manifest> {
  const file = path.join(dir, MANIFEST_NAME);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ManifestMissing(dir);
    throw toSysError(err, 'open manifest', file);
  }
  try {
    const { size } = await fh.stat();
    if (size > MAX_MANIFEST_BYTES) throw new ImageError(file, 0, `manifest is ${size} bytes, more than ${MAX_MANIFEST_BYTES} any real image needs`);
    const buf = Buffer.alloc(size);
    const { bytesRead } = await fh.read(buf, 0, size, 0);
    return decodeManifest(buf.subarray(0, bytesRead), file);
  } finally {
    await fh.close();
  }
}
