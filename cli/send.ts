/**
 * `godwit send DIR --to [user@]HOST:DIR`: stream an image directory to another host over SSH, where
 * `godwit receive` writes it (checked, 0600 files in a 0700 directory, nothing left behind on failure).
 */
import type { Command } from 'commander';
import { UsageError } from '../util/errors';
import { sendImageDir } from '../transport/endpoint';
import type { SendProgress, SendResult } from '../transport/send';
import { connectTarget, TargetOptions } from '../transport/ssh-endpoint';
import { catchInterrupt } from '../util/interrupt';
import { printJson } from './output';
import { addSshFlags, SshFlags, targetOptions } from './ssh-flags';

export interface SendCliOptions extends TargetOptions {
  dir: string;
  /** "[user@]host:DIR", or "local:DIR" for this machine (no SSH). */
  to: string;
  json?: boolean;
}

/** Split "[user@]host:DIR" ("[v6]:DIR" too) into the SSH target and the remote directory. */
export function parseDestination(spec: string): { target: string; dir: string } {
  const m = /^((?:[^@\s:]+@)?(?:\[[^\]]+\]|[^:\s\[\]]+)):(.+)$/.exec(spec);
  if (!m) throw new UsageError(`--to ${spec}: expected [user@]HOST:DIR (e.g. root@10.0.0.2:/var/lib/godwit/img)`);
  return { target: m[1]!, dir: m[2]! };
}

export async function runSend(o: SendCliOptions, onProgress?: (p: SendProgress) => void): Promise<SendResult> {
  const { target, dir } = parseDestination(o.to);
  const endpoint = await connectTarget(target, o);
  const interrupt = catchInterrupt();
  try {
    return await sendImageDir(endpoint, o.dir, dir, { signal: interrupt.signal, ...(onProgress ? { onProgress } : {}) });
  } finally {
    interrupt.release();
    endpoint.close();
  }
}

export function register(program: Command): void {
  addSshFlags(program
    .command('send')
    .description('stream an image directory to another host over SSH (runs `godwit receive` there)')
    .argument('<dir>', 'image directory to send')
    .requiredOption('--to <[user@]host:dir>', 'destination: SSH target and a new (or empty) directory there; local:DIR for this host'))
    .option('--json', 'print the result as JSON')
    .action(async (dir: string, opts: SshFlags & { to: string; json?: boolean }) => {
      const o: SendCliOptions = { dir, to: opts.to, ...targetOptions(opts) };
      if (opts.json) o.json = true;
      const r = await runSend(o);
      if (o.json) printJson(r);
      else {
        const mb = (n: number) => (n / 1e6).toFixed(1);
        process.stdout.write(`sent ${r.files} files, ${mb(r.rawBytes)} MB (${mb(r.wireBytes)} MB on the wire) in ${r.seconds.toFixed(2)} s, ` +
          `${mb(r.rawBytes / r.seconds)} MB/s\n`);
      }
    });
}
