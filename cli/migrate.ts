/**
 * `godwit migrate --pid PID --to [user@]HOST[:port]`: move a running process tree to another host over SSH
 * (library: migrate/). Progress goes to stderr (listr2); the result to stdout, or with --json a stream of events,
 * one JSON object per line, the last one `done` (with the summary) or `error`.
 */
import type { Command } from 'commander';
import { describeSummary, migrate, MigrateEvent, MigrateOptions } from '../migrate';
import { describeError, UsageError } from '../util/errors';
import { catchInterrupt } from '../util/interrupt';
import { jsonReplacer } from './output';
import { addSshFlags, SshFlags, targetOptions } from './ssh-flags';
import { TreeFlags, treeSelection } from './tree-flags';

interface MigrateFlags extends SshFlags, TreeFlags {
  bridge?: string;
  peerAddr?: string;
  vethHostName?: string;
  cgroupRoot?: string;
  targetRootfsBase?: string;
  targetRootfsPath?: string;
  to: string;
  targetDir?: string;
  newPidns?: boolean;
  keepImages?: boolean;
  json?: boolean;
  quiet?: boolean;
  connectTimeout?: string;
  restoreTimeout?: string;
  idleTimeout?: string;
  keepalive?: string;
  preCopy?: boolean;
  /** --no-pre-copy-stream */
  preCopyStream?: boolean;
}

function seconds(flag: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`${flag} ${v}: give seconds between ${min} and ${max}`);
  return n * 1000;
}

export function migrateOptions(f: MigrateFlags): MigrateOptions {
  const { pid, ...d } = treeSelection(f);
  const o: MigrateOptions = { pid, to: f.to, ...targetOptions(f) };
  const tg = containerTargetFlags(f);
  if (tg) o.target = tg;
  if (f.targetDir) o.targetDir = f.targetDir;
  if (f.newPidns) o.newPidns = true;
  if (f.keepImages) o.keepImages = true;
  if (f.preCopy) Object.assign(d, { preCopy: true, ...(f.preCopyStream === false ? { preCopyChain: false } : {}) });
  if (Object.keys(d).length) o.dump = d;
  const t: NonNullable<MigrateOptions['timeouts']> = {};
  const connectMs = seconds('--connect-timeout', f.connectTimeout, 1, 600);
  const restoreMs = seconds('--restore-timeout', f.restoreTimeout, 1, 3600);
  const idleMs = seconds('--idle-timeout', f.idleTimeout, 1, 3600);
  const keepaliveMs = seconds('--keepalive', f.keepalive, 0.1, 600);
  if (connectMs !== undefined) t.connectMs = connectMs;
  if (restoreMs !== undefined) t.restoreMs = restoreMs;
  if (idleMs !== undefined) t.idleMs = idleMs;
  if (keepaliveMs !== undefined) t.keepaliveMs = keepaliveMs;
  if (Object.keys(t).length) o.timeouts = t;
  return o;
}

/** How the target sets a container up: its veth's host end, its cgroup root, where its rootfs is there. */
function containerTargetFlags(f: MigrateFlags): MigrateOptions['target'] {
  const tg: NonNullable<MigrateOptions['target']> = {};
  if (f.bridge !== undefined || f.peerAddr !== undefined || f.vethHostName !== undefined) {
    if (f.bridge !== undefined && f.peerAddr !== undefined) throw new UsageError('--bridge and --peer-addr exclude each other: the host end joins a bridge or gets an address');
    tg.veth = {};
    if (f.bridge !== undefined) tg.veth.bridge = f.bridge;
    if (f.peerAddr !== undefined) tg.veth.peerAddr = f.peerAddr;
    if (f.vethHostName !== undefined) tg.veth.hostName = f.vethHostName;
  }
  if (f.cgroupRoot !== undefined) tg.cgroupRoot = f.cgroupRoot;
  if (f.targetRootfsBase !== undefined) tg.rootfsBase = f.targetRootfsBase;
  if (f.targetRootfsPath !== undefined) tg.rootfsPath = f.targetRootfsPath;
  return Object.keys(tg).length ? tg : undefined;
}

export function register(program: Command): void {
  addSshFlags(program
    .command('migrate')
    .description('move a running process tree or container to another host over SSH: dump, stream, restore there, then end it here')
    .option('--pid <pid>', 'root of the process tree to move (a tree with namespaces of its own moves as a container)')
    .option('--container <id>', 'a container run by runc or crun: found through their state directories')
    .option('--cgroup <path>', 'the process tree in this cgroup, moved as a container')
    .requiredOption('--to <[user@]host[:port]>', 'the target over SSH (godwit must be installed there); "local" for this host'))
    .option('--runtime <name>', 'with --container: runc or crun (default: whichever knows the id)')
    .option('--rootfs <mode>', 'container rootfs: shared (the target has it at the same path, digest checked) or diff (the changes against --rootfs-base travel)')
    .option('--rootfs-base <dir>', 'with --rootfs diff: the pristine rootfs the container was started from (the target has it too)')
    .option('--bridge <name>', "container: its veth's host end joins this bridge on the target")
    .option('--peer-addr <cidr>', "container: its veth's host end gets this address on the target")
    .option('--veth-host-name <name>', "container: name of its veth's host end on the target")
    .option('--cgroup-root <path>', 'container: recreate its cgroup path under this cgroup directory on the target')
    .option('--target-rootfs-base <dir>', 'container with --rootfs diff: where the base is on the target (default: the same path)')
    .option('--target-rootfs-path <dir>', 'container with a shared rootfs: where it is on the target (default: the same path)')
    .option('--target-dir <dir>', 'image directory on the target, new or empty (default /var/tmp/godwit-migrate-PID-TIME)')
    .option('--new-pidns', 'restore into a new PID namespace on the target (when the PIDs may be taken there)')
    .option('--keep-images', 'keep the images on the target after the workload runs there')
    .option('--pre-copy', 'memory copied in rounds while the tree runs, each round streamed to the target; only what changed since travels while frozen')
    .option('--no-pre-copy-stream', 'with --pre-copy: keep the rounds on the source and send every page after the freeze')
    .option('--connect-timeout <s>', 'TCP connect and SSH handshake (default 15)')
    .option('--restore-timeout <s>', 'how long the target may take to restore (default 300)')
    .option('--idle-timeout <s>', 'the target gives up after this long without data from the source (default 60)')
    .option('--keepalive <s>', 'SSH keepalive period; 3 unanswered = connection lost (default 5)')
    .option('--json', 'a stream of JSON events on stdout (steps, progress, the summary last)')
    .option('--quiet', 'no progress output')
    .action(async (f: MigrateFlags) => {
      const o = migrateOptions(f);
      const emit = (e: MigrateEvent | { event: 'error'; message: string; code?: string }) =>
        process.stdout.write(JSON.stringify(e, jsonReplacer) + '\n');
      if (f.json) o.onEvent = emit;
      const interrupt = catchInterrupt();
      o.signal = interrupt.signal;
      const renderer = f.quiet || f.json ? 'silent' : process.stderr.isTTY ? 'default' : 'simple';
      try {
        const r = await migrate(o, renderer);
        if (!f.json) process.stdout.write(describeSummary(r) + '\n');
      } catch (err) {
        if (f.json) emit({ event: 'error', message: describeError(err), ...(typeof (err as { code?: unknown }).code === 'string' ? { code: (err as { code: string }).code } : {}) });
        throw err;
      } finally {
        interrupt.release();
      }
    });
}
