/**
 * This process's own stdin/stdout as a Channel: how `godwit receive` talks to whoever started it (sshd's exec
 * channel or a local parent). A hang-up or termination signal drops the input, so the receiver takes its
 * normal failure path (tell the sender if it still can, remove what it wrote) instead of dying half-way.
 *
 * A pipe or socket on stdin is read by a PipeReader (pipe-reader.ts: the native frame pump) where the addon has
 * it, never also through process.stdin: both on one fd would steal each other's bytes. Otherwise process.stdin.
 */
import type { Readable } from 'node:stream';
import { growPipe } from './pipe-size';
import { readPipe, type PipeReader } from './pipe-reader';
import type { Channel } from './wire';

let input: { stream: Readable; pipe?: PipeReader } | undefined;

/** This process's stdin, opened once. */
function stdin(): { stream: Readable; pipe?: PipeReader } {
  if (!input) {
    // The stream arrives through stdin: a 1 MiB pipe instead of 64 KiB (see pipe-size.ts).
    growPipe(0);
    const pipe = readPipe(0);
    input = pipe ? { stream: pipe, pipe } : { stream: process.stdin };
  }
  return input;
}

/** Let go of stdin (it keeps the process alive) and of the frame pump, if it was opened; never opens it. */
export function closeStdin(): void {
  if (input?.pipe) input.pipe.release();
  else input?.stream.destroy();
}

export function stdioChannel(label: string): Channel {
  const { stream, pipe } = stdin();
  // When the connection goes, stderr (the same SSH channel) goes with it: a write there must not crash the clean-up
  // (an unhandled EPIPE would end the process before it removed what it received).
  process.stderr.on('error', () => undefined);
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) return;
    signalled = true;
    process.stderr.write(`godwit: ${sig} received: abandoning the stream\n`);
    process.exitCode = 1;
    stream.destroy();
  };
  // Not SIGPIPE: a listener would un-ignore it for the whole process, and then an EPIPE on any pipe (a child that
  // exits before reading its stdin: ip, godwit-nsutil during a container restore) destroyed stdin silently, and
  // the source's Commit was never read. A lost connection shows as EPIPE on stdout ('error' below) or EOF on stdin.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, onSignal);
  // EPIPE on stdout when the sender is gone: the reader sees the end too; do not crash on it.
  process.stdout.on('error', () => stream.destroy());
  return {
    label,
    toPeer: process.stdout,
    fromPeer: stream,
    ...(pipe ? { pipe } : {}),
    close() {
      stream.destroy();
    },
  };
}
