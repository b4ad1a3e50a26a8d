/**
 * `godwit receive --dir DIR`: the target end of `godwit send` (run over an SSH exec channel or as a local
 * child): reads the image stream on stdin, answers on stdout, logs on stderr.
 */
import type { Command } from 'commander';
import { UsageError } from '../util/errors';
import type { ContainerTargetFlags } from '../migrate/target';
import { DEFAULT_WINDOW, discardStale, receiveImages } from '../transport/receive';
import { closeStdin, stdioChannel } from '../transport/stdio';

export interface ReceiveCliOptions {
  dir: string;
  window?: number;
  quiet?: boolean;
  /** Only clean up after a receiver into DIR that died (SIGKILL): prints removed, busy or none. */
  discard?: boolean;
  /** The target end of `godwit migrate`: receive, restore held stopped, run on the source's Commit. */
  migrate?: boolean;
  newPidns?: boolean;
  keepImages?: boolean;
  idleTimeoutMs?: number;
  /** With --migrate: bytes of memory to hold for the restore while the stream runs (migrate/reserve.ts). */
  reserveBytes?: number;
  /** With --migrate: write the images through the page cache (they arrive while the workload runs). */
  cacheImages?: boolean;
  /** With --migrate, a container: how this host sets it up (checked once the migrate code is loaded). */
  container?: ContainerTargetFlags;
}

export async function runReceive(o: ReceiveCliOptions): Promise<void> {
  if (o.discard) {
    process.stdout.write(`${await discardStale(o.dir)}\n`);
    return;
  }
  const log = o.quiet ? undefined : (line: string) => process.stderr.write(`godwit receive: ${line}\n`);
  if (o.migrate) {
    // Loaded only here: a plain receive stays light (no restore, no listr2).
    const { containerTargetFlags, receiveMigration } = await import('../migrate/target');
    const container = o.container ? containerTargetFlags(o.container) : undefined;
    try {
      await receiveMigration({ dir: o.dir, ...(log ? { log } : {}), ...(o.window !== undefined ? { window: o.window } : {}),
        ...(o.newPidns ? { newPidns: true } : {}), ...(o.keepImages ? { keepImages: true } : {}),
        ...(o.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
        ...(o.reserveBytes ? { reserveBytes: o.reserveBytes } : {}),
        ...(o.cacheImages ? { cacheImages: true } : {}),
        ...(container ? { container } : {}) });
    } finally {
      closeStdin();
    }
    return;
  }
  const channel = stdioChannel('the sender');
  const opts = { dir: o.dir, channel, log, ...(o.window !== undefined ? { window: o.window } : {}) };
  try {
    await receiveImages(opts);
  } finally {
    // stdin (the connection) keeps the process alive: let go of it so that exiting closes stdout, which is
    // how the sender sees that we are done.
    closeStdin();
  }
}

export function register(program: Command): void {
  program
    .command('receive')
    .description('receive an image stream on stdin into DIR (the target end of `godwit send`; stdout carries acks)')
    .requiredOption('--dir <dir>', 'directory to create (or an empty one) for the images')
    .option('--window <bytes>', `flow-control window in bytes (default ${DEFAULT_WINDOW})`)
    .option('--quiet', 'no log lines on stderr')
    .option('--discard', 'do not receive: remove what a receiver into DIR that died left behind (prints removed|busy|none)')
    .option('--migrate', 'the target end of `godwit migrate`: restore the tree held stopped, run it on the commit')
    .option('--new-pidns', 'with --migrate: restore into a new PID namespace')
    .option('--keep-images', 'with --migrate: keep the images once the workload runs')
    .option('--idle-timeout <s>', 'with --migrate: give up after this long without data from the source (default 60)')
    .option('--reserve-memory <bytes>', "with --migrate: hold this much memory for the restore while the stream runs (the source gives the workload's size)")
    .option('--cache-images', 'with --migrate: write large images through the page cache (the source sends them while the workload runs)')
    .option('--bridge <name>', "with --migrate, a container: its veth's host end joins this bridge here")
    .option('--peer-addr <cidr>', "with --migrate, a container: its veth's host end gets this address here")
    .option('--veth-host-name <name>', "with --migrate, a container: name of its veth's host end here")
    .option('--cgroup-root <path>', "with --migrate, a container: recreate its cgroup path under this cgroup directory here")
    .option('--rootfs-base <dir>', 'with --migrate, a container dumped with --rootfs diff: its base rootfs here')
    .option('--rootfs-path <dir>', 'with --migrate, a container with a shared rootfs: where it is here')
    .action(async (opts: { dir: string; window?: string; quiet?: boolean; discard?: boolean; migrate?: boolean; newPidns?: boolean;
      keepImages?: boolean; idleTimeout?: string; reserveMemory?: string; cacheImages?: boolean; bridge?: string; peerAddr?: string; vethHostName?: string; cgroupRoot?: string;
      rootfsBase?: string; rootfsPath?: string }) => {
      const o: ReceiveCliOptions = { dir: opts.dir };
      if (opts.quiet) o.quiet = true;
      if (opts.discard) o.discard = true;
      if (opts.migrate) o.migrate = true;
      if ((opts.newPidns || opts.keepImages || opts.idleTimeout !== undefined || opts.reserveMemory !== undefined || opts.cacheImages) &&
        !opts.migrate) {
        throw new UsageError('--new-pidns, --keep-images, --idle-timeout, --reserve-memory and --cache-images go with --migrate');
      }
      const ctrKeys = ['bridge', 'peerAddr', 'vethHostName', 'cgroupRoot', 'rootfsBase', 'rootfsPath'] as const;
      const ctr: ContainerTargetFlags = {};
      for (const k of ctrKeys) if (opts[k] !== undefined) ctr[k] = opts[k];
      if (Object.keys(ctr).length && !opts.migrate) throw new UsageError('--bridge, --peer-addr, --veth-host-name, --cgroup-root, --rootfs-base and --rootfs-path go with --migrate');
      if (Object.keys(ctr).length) o.container = ctr;
      if (opts.newPidns) o.newPidns = true;
      if (opts.keepImages) o.keepImages = true;
      if (opts.cacheImages) o.cacheImages = true;
      if (opts.idleTimeout !== undefined) {
        const t = Number(opts.idleTimeout);
        if (!Number.isFinite(t) || t < 1 || t > 3600) throw new UsageError(`--idle-timeout ${opts.idleTimeout}: give seconds between 1 and 3600`);
        o.idleTimeoutMs = t * 1000;
      }
      if (opts.reserveMemory !== undefined) {
        const b = Number(opts.reserveMemory);
        if (!Number.isSafeInteger(b) || b < 0) throw new UsageError(`--reserve-memory ${opts.reserveMemory}: give a number of bytes`);
        o.reserveBytes = b;
      }
      if (opts.window !== undefined) {
        const w = Number(opts.window);
        if (!Number.isInteger(w) || w < 16 << 20 || w > 1 << 30) throw new UsageError(`--window ${opts.window}: give bytes between ${16 << 20} and ${1 << 30}`);
        o.window = w;
      }
      await runReceive(o);
    });
}
