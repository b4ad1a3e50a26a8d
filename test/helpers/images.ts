import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ImageDirWriter, ImageDirOptions } from '../../images/imagedir';
import { criuFixture, repoRoot } from './fixtures';

/**
 * A godwit image made from a CRIU fixture as a dump would write it: every CRIU file as it is, pages-N.img through
 * the page writer (compressed or not), the manifest last.
 */
export async function imageFromFixture(
  name: 'sleep' | 'pipeline',
  dir: string,
  opts: ImageDirOptions = {},
  /** Changes a file's bytes before it is written (to make an image that is consistent but wrong). */
  mutate?: (file: string, data: Buffer) => Buffer,
): Promise<void> {
  const src = criuFixture(name);
  const w = await ImageDirWriter.create(dir, opts);
  try {
    for (const f of fs.readdirSync(src).sort()) {
      const orig = fs.readFileSync(path.join(src, f));
      const data = mutate ? mutate(f, orig) : orig;
      const m = /^pages-(\d+)\.img$/.exec(f);
      if (m) {
        const pw = await w.createPageWriter(Number(m[1]));
        // In page-sized pieces, as a producer reading a pipe would hand them over.
        for (let at = 0; at < data.length; at += 4096) await pw.write(data.subarray(at, at + 4096));
        await pw.finish();
      } else {
        await w.writeFile(f, data);
      }
    }
    await w.finish({ options: { fixture: name } });
  } catch (err) {
    await w.abort();
    throw err;
  }
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function godwit(...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', timeout: 60000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file of `a` (except the manifest) is byte-identical in `b`, and `b` has no other files but those given. */
export function sameFiles(a: string, b: string, except: string[] = []): string[] {
  const diffs: string[] = [];
  const skip = new Set(['godwit-manifest.json', ...except]);
  const na = fs.readdirSync(a).filter((f) => !skip.has(f)).sort();
  const nb = fs.readdirSync(b).filter((f) => !skip.has(f)).sort();
  if (JSON.stringify(na) !== JSON.stringify(nb)) diffs.push(`file lists differ: ${na.join(',')} vs ${nb.join(',')}`);
  for (const f of na) {
    if (!nb.includes(f)) continue;
    if (!fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f)))) diffs.push(`${f} differs`);
  }
  return diffs;
}
