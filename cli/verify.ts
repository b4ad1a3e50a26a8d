/** `godwit verify DIR`: checks an image directory end to end; exit 1 with the list of problems. */
import type { Command } from 'commander';
import { GodwitError } from '../util/errors';
import { VerifyReport, verifyImageDir } from '../images/verify';
import { formatBytes } from './format';
import { printJson } from './output';

export function printVerifyReport(r: VerifyReport): void {
  const c = r.checked;
  const what = `${c.files} files, ${formatBytes(c.bytes)}; ${c.containers} page containers (${c.chunks} chunks), ${formatBytes(c.pagesBytes)} of pages`;
  const made = r.made ? `made by godwit ${r.made.godwit} on ${r.made.hostname} (${r.made.kernel}) at ${r.made.time}, compression ${r.made.compression}` : '';
  if (r.ok) {
    process.stdout.write(`${r.dir}: OK: ${what}\n${made ? '  ' + made + '\n' : ''}`);
    return;
  }
  process.stdout.write(`${r.dir}: ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'} (checked ${what})\n`);
  for (const p of r.problems) {
    process.stdout.write(`  - ${p.file}${p.offset !== undefined ? ` at offset ${p.offset}` : ''}: ${p.problem}\n`);
  }
}

export function register(program: Command): void {
  program
    .command('verify')
    .description('check an image directory end to end: manifest, file sizes and checksums, page containers, image files')
    .argument('<dir>', 'image directory')
    .option('--json', 'print the report as JSON')
    .action(async (dir: string, o: { json?: boolean }) => {
      const report = await verifyImageDir(dir);
      if (o.json) printJson(report);
      else printVerifyReport(report);
      if (!report.ok) throw new GodwitError(`verify: ${dir} has ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}`);
    });
}
