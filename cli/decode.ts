/** `godwit decode FILE`: an image file as JSON, exactly as `crit decode --pretty` prints it. */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { imageToCrit } from '../images/critjson';
import { readImageFile } from '../images/io';
import { pyDumps } from '../images/pyjson';
import { jsonReplacer } from './output';

export interface DecodeOptions {
  file: string;
  out?: string;
  raw?: boolean;
  kind?: string;
}

/** Raw form: godwit's typed objects, bigint as decimal strings and Buffers as base64. */
function rawReplacer(key: string, value: unknown): unknown {
  if (value && typeof value === 'object' && (value as { type?: string }).type === 'Buffer' && Array.isArray((value as { data?: unknown }).data)) {
    return { base64: Buffer.from((value as { data: number[] }).data).toString('base64') };
  }
  return jsonReplacer(key, value);
}

export async function decodeCommand(opts: DecodeOptions): Promise<void> {
  const img = await readImageFile(opts.file, opts.kind !== undefined ? { kind: opts.kind } : {});
  const text = opts.raw
    ? JSON.stringify({ kind: img.kind.kind, entries: img.entries }, rawReplacer, 2) + '\n'
    : pyDumps(imageToCrit(img)) + '\n';
  if (opts.out) await fs.promises.writeFile(opts.out, text);
  else process.stdout.write(text);
}

export function register(program: Command): void {
  program
    .command('decode')
    .description('print a CRIU image file as JSON (the same JSON as `crit decode --pretty`)')
    .argument('<file>', 'image file, e.g. core-1234.img')
    .option('-o, --out <file>', 'write the JSON here instead of standard output')
    .option('--kind <kind>', 'image kind (e.g. CORE) when the file name does not tell')
    .option('--raw', "godwit's typed form instead of crit's (bigint as strings, bytes as base64)")
    .action(async (file: string, o: { out?: string; raw?: boolean; kind?: string }) => {
      await decodeCommand({ file, ...o });
    });
}
