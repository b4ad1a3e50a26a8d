/** One thing `godwit verify` found wrong, and how an error becomes one. */
import * as path from 'node:path';
import { ImageError, describeError } from '../util/errors';
import { MANIFEST_NAME, ManifestMissing } from './manifest';

export interface VerifyProblem {
  /** File name within the image directory. */
  file: string;
  offset?: number;
  problem: string;
}

export function problemOf(err: unknown, fallbackFile: string): VerifyProblem {
  if (err instanceof ManifestMissing) return { file: MANIFEST_NAME, problem: err.message.replace(/^.*: at offset 0: /, '') };
  if (err instanceof ImageError) {
    const prefix = `${err.file}: at offset ${err.offset}: `;
    const text = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
    return { file: path.basename(err.file), offset: err.offset, problem: text };
  }
  return { file: fallbackFile, problem: describeError(err) };
}
