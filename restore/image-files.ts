/**
 * Reads one image file of the directory through images/ (decodeImage), as plain messages. An entry's raw
 * payload (pipe data) is attached as `extra`. `null` when the file does not exist.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeImage, type Msg } from '../images';

export type { Msg };

export function readEntries(dir: string, file: string): Msg[] | null {
  const p = path.join(dir, file);
  let b: Buffer;
  try {
    b = fs.readFileSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  return decodeImage(b, p).entries.map((e) => (e.extra !== undefined ? { ...e.msg, extra: e.extra } : e.msg));
}
