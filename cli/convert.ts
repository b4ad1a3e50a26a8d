/** `godwit convert DIR --to criu|godwit [--out DIR2]`: between CRIU's plain pages and godwit's containers. */
import { Command, Option } from 'commander';
import { UsageError } from '../util/errors';
import * as path from 'node:path';
import { convertImageDir } from '../images/convert';
import { formatBytes } from './format';
import { printJson } from './output';

function int(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(n)) throw new UsageError(`${name} must be an integer, got ${JSON.stringify(v)}`);
    return n;
  };
}

export function register(program: Command): void {
  program
    .command('convert')
    .description('convert an image directory: --to criu writes plain pages-N.img (what CRIU reads), --to godwit compresses them into pages-N.gwz')
    .argument('<dir>', 'image directory')
    .addOption(new Option('--to <layout>', 'target layout').choices(['criu', 'godwit']).makeOptionMandatory())
    .option('--out <dir>', 'write the converted image to this new or empty directory (default: convert in place)')
    .option('--level <n>', 'zstd level for --to godwit', int('--level'))
    .option('--chunk-size <bytes>', 'chunk size for --to godwit (multiple of 4096)', int('--chunk-size'))
    .option('--json', 'print what was done as JSON')
    .action(async (dir: string, o: { to: 'criu' | 'godwit'; out?: string; level?: number; chunkSize?: number; json?: boolean }) => {
      const r = await convertImageDir(dir, { to: o.to, out: o.out, level: o.level, chunkSize: o.chunkSize });
      if (o.json) {
        const brief = (x: typeof r) => ({ from: x.from, to: x.to, layout: x.layout, converted: x.converted, copied: x.copied });
        printJson({ ...brief(r), ...(r.rounds ? { rounds: r.rounds.map(brief) } : {}) });
        return;
      }
      const rounds = r.rounds ?? [];
      const all = [r, ...rounds].flatMap((x) => x.converted.map((c) => ({ ...c, dir: x === r ? '' : `${path.basename(x.from)}/` })));
      for (const c of all) {
        process.stdout.write(`${c.dir}${c.from} -> ${c.dir}${c.to}: ${formatBytes(c.pagesBytes)} of pages in ${formatBytes(c.size)}\n`);
      }
      if (all.length === 0) process.stdout.write(`no pages file needed converting (already ${r.layout} layout)\n`);
      if (rounds.length) process.stdout.write(`a pre-dump chain: ${rounds.length} round(s) converted with the image\n`);
      process.stdout.write(`${r.to}: ${r.layout} layout, manifest written${r.copied ? `, ${r.copied} other files copied` : ''}\n`);
    });
}
