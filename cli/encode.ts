/** `godwit encode --out FILE`: crit-style JSON (from --in or standard input) back into an image file. */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { imageFromCrit } from '../images/critjson';
import { encodeImage } from '../images/framing';
import { JsonSyntaxError, parseJson } from '../images/pyjson';
import { ImageError } from '../util/errors';

export interface EncodeOptions {
  in?: string;
  out: string;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function encodeCommand(opts: EncodeOptions): Promise<void> {
  const name = opts.in ?? '<stdin>';
  const text = opts.in ? await fs.promises.readFile(opts.in, 'utf8') : await readStdin();
  let json;
  try {
    json = parseJson(text);
  } catch (e) {
    if (e instanceof JsonSyntaxError) throw new ImageError(name, e.pos, e.message);
    throw e;
  }
  const img = imageFromCrit(json, name);
  const bytes = encodeImage(img.kind, img.entries, opts.out);
  // write next to the target and rename, so a failed encode never leaves half a file
  const tmp = `${opts.out}.tmp-${process.pid}`;
  try {
    await fs.promises.writeFile(tmp, bytes);
    await fs.promises.rename(tmp, opts.out);
  } catch (e) {
    await fs.promises.rm(tmp, { force: true });
    throw e;
  }
}

export function register(program: Command): void {
  program
    .command('encode')
    .description('turn crit-style JSON (as `godwit decode` prints it) back into a byte-identical image file')
    .requiredOption('-o, --out <file>', 'image file to write')
    .option('-i, --in <file>', 'JSON to read (default: standard input)')
    .action(async (o: { in?: string; out: string }) => {
      await encodeCommand(o);
    });
}
