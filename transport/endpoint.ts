/**
 * Where `godwit receive` runs: an Endpoint starts godwit commands on the target (over SSH, or as a local child)
 * and sendImageDir() moves a directory there, cleaning up on the target whatever happens.
 */
import { GodwitError, describeError } from '../util/errors';
import { HandshakeError } from './handshake';
import { spawnLocal } from './local';
import { ImageSender, SendOptions, SendResult } from './send';
import type { Channel } from './wire';

export interface Endpoint {
  /** Names the target in messages ("root@198.18.0.2", "local"). */
  label: string;
  /** Run `godwit ARGS...` on the target; the channel is its stdin/stdout/stderr. */
  run(args: string[]): Promise<Channel>;
  /** Drop the connection to the target (idempotent). */
  close(): void;
}

/** The local machine: godwit runs as a child process of this one. `command` replaces `node cli/main.js`;
 *  `env` is the child's environment (default: this process's). */
export function localEndpoint(opts: { command?: string[]; env?: NodeJS.ProcessEnv } = {}): Endpoint {
  return {
    label: 'local',
    async run(args: string[]) {
      return spawnLocal({ args, label: 'local', ...(opts.command ? { command: [...opts.command, ...args] } : {}),
        ...(opts.env ? { env: opts.env } : {}) });
    },
    close() {},
  };
}

export interface SendDirOptions extends SendOptions {
  /** Flow-control window asked of the receiver (bytes). */
  window?: number;
}

/** Collect a short command's stdout (bounded), e.g. the answer of `receive --discard`. */
async function runShort(endpoint: Endpoint, args: string[], timeoutMs: number): Promise<string> {
  const ch = await endpoint.run(args);
  let out = '';
  ch.fromPeer.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-1024)));
  ch.toPeer.end();
  const exit = await Promise.race([ch.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), timeoutMs).unref())]);
  ch.close();
  if (!exit) throw new GodwitError(`godwit ${args.join(' ')} on ${endpoint.label} did not finish within ${timeoutMs / 1000} s`);
  return out.trim();
}

/**
 * Send every file of `srcDir` to `dstDir` on the endpoint (a new or empty directory there). On failure the
 * receiver removes what it wrote; if it was killed outright, `godwit receive --discard` does it afterwards.
 */
export async function sendImageDir(endpoint: Endpoint, srcDir: string, dstDir: string, opts: SendDirOptions = {}): Promise<SendResult> {
  const args = ['receive', '--dir', dstDir, '--quiet'];
  if (opts.window !== undefined) args.push('--window', String(opts.window));
  const channel = await endpoint.run(args);
  let sender: ImageSender | undefined;
  try {
    sender = await ImageSender.open(channel, opts);
    await sender.sendDirectory(srcDir);
    const result = await sender.finish();
    await sender.close();
    return result;
  } catch (err) {
    if (sender) sender.abort(describeError(err).split('\n')[0]!);
    else channel.close();
    if (err instanceof HandshakeError) throw err;
    // Wait for the receiver to finish its own clean-up (or be gone), then sweep after one that could not.
    if (channel.exited) await Promise.race([channel.exited, new Promise((r) => setTimeout(r, 15_000).unref())]);
    let swept = '';
    try {
      swept = await runShort(endpoint, ['receive', '--dir', dstDir, '--discard'], 15_000);
    } catch (sweepErr) {
      throw new GodwitError(`sending ${srcDir} to ${endpoint.label}:${dstDir} failed, and cleaning up there failed too ` +
        `(${describeError(sweepErr)}): remove ${dstDir} on ${endpoint.label} by hand`, { cause: err });
    }
    if (swept === 'busy') {
      throw new GodwitError(`sending ${srcDir} to ${endpoint.label}:${dstDir} failed; the receiver there is still running and will remove ${dstDir}`, { cause: err });
    }
    throw err;
  }
}
