/**
 * The image's integrity before anything is created: with a godwit manifest, every listed file must be there
 * with its size, and every file but the page data must match its crc32. Page data is checked as it is read:
 * each container chunk has its own crc32 and zstd checksum (a bad chunk aborts the restore, which then tears
 * down what it made); plain pages files are checksummed here when small, size-checked when large (reading
 * a GiB twice would double the restore time).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ManifestMissing, MANIFEST_NAME, readManifest } from '../images/manifest';
import { fileCrc32 } from '../images/verify';
import { PARENT_LINK } from '../images/pagechain';
import { GodwitError } from '../util/errors';

/** Plain pages files up to this size are checksummed before restore (~20 ms per 64 MiB here). */
const PLAIN_PAGES_CRC_LIMIT = 64 << 20;

export async function checkImageFiles(dir: string): Promise<string[]> {
  const problems = await checkOne(dir);
  // The images of a pre-dump chain (images/pagechain.ts) are checked the same way, each against its own manifest;
  // a missing or broken link is reported by restore when (and if) a page needs it.
  const seen = new Set([path.resolve(dir)]);
  for (let d = dir; seen.size <= 64; ) {
    let parent: string;
    try {
      parent = fs.realpathSync(path.join(d, PARENT_LINK));
    } catch {
      break;
    }
    if (seen.has(parent)) break;
    seen.add(parent);
    for (const p of await checkOne(parent)) problems.push(`${parent} (parent image): ${p}`);
    d = parent;
  }
  return problems;
}

async function checkOne(dir: string): Promise<string[]> {
  const problems: string[] = [];
  let manifest;
  try {
    manifest = await readManifest(dir);
  } catch (e) {
    if (!(e instanceof ManifestMissing)) return [`${MANIFEST_NAME}: ${(e as Error).message}`];
    const gwz = fs.readdirSync(dir).filter((f) => f.endsWith('.gwz'));
    if (gwz.length)
      problems.push(`${dir} holds godwit page containers (${gwz[0]}) but no ${MANIFEST_NAME}: the dump did not finish; dump again`);
    return problems; // a plain CRIU directory has no manifest
  }
  for (const f of manifest.files) {
    const p = path.join(dir, f.name);
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      problems.push(`${f.name} is listed in the manifest but missing: the image directory is incomplete`);
      continue;
    }
    if (st.size !== f.size) {
      problems.push(`${f.name} is ${st.size} bytes, the manifest says ${f.size}: the file was truncated or changed since the dump`);
      continue;
    }
    const isPages = /^pages-\d+\.(img|gwz)$/.test(f.name);
    if (isPages && (f.name.endsWith('.gwz') || st.size > PLAIN_PAGES_CRC_LIMIT)) continue;
    const got = await fileCrc32(p);
    if (got.crc32 !== f.crc32)
      problems.push(`${f.name}: checksum ${got.crc32} differs from the manifest's ${f.crc32}: the file was damaged or changed since the dump`);
  }
  return problems;
}

export class ImageIntegrityError extends GodwitError {
  constructor(dir: string, problems: string[]) {
    super(`image ${dir} failed its checks (run \`godwit verify ${dir}\` for details):\n  - ${problems.join('\n  - ')}`, {
      code: 'EBADIMAGE',
    });
  }
}
