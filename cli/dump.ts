/** `godwit dump --pid PID --dir DIR`: checkpoint a process tree into a CRIU-layout image directory. */
import type { Command } from 'commander';
import { UsageError } from '../util/errors';
import { dump, DumpOptions, DumpSummary, refreezeText } from '../checkpoint/dump';
import { catchInterrupt } from '../util/interrupt';
import { NS_KINDS, NsKind } from '../checkpoint/proc/misc';
import { printJson } from './output';
import { TreeFlags, treeSelection } from './tree-flags';

interface DumpFlags extends TreeFlags {
  dir: string;
  leaveRunning?: boolean;
  compress: string;
  json?: boolean;
  quiet?: boolean;
  ghostLimit?: string;
  preCopy?: boolean;
  preCopyRounds?: string;
  preCopyConverge?: string;
  externalNs?: string;
}

function describe(s: DumpSummary): string {
  const mib = (b: number) => (b / 1048576).toFixed(1);
  return (
    `dumped pid ${s.pid}: ${s.pids.length} process(es), ${s.threads} thread(s), ${s.pages} pages (${mib(s.pageBytes)} MiB) ` +
    `into ${s.dir} (${mib(s.imageBytes)} MiB, ${s.compress}); frozen ${s.frozenMs.toFixed(1)} ms, total ${s.totalMs.toFixed(1)} ms; ` +
    (s.leftRunning ? 'left running' : 'killed') +
    (s.refreeze ? `\n${refreezeText(s.refreeze)}` : '') +
    (s.preCopy
      ? s.preCopy.fallback
        ? `\npre-copy not used: ${s.preCopy.fallback}`
        : `\npre-copy: ${s.preCopy.rounds.length} round(s) (${s.preCopy.rounds.map((r) => `${mib(r.bytes)} MiB`).join(', ')}; ${s.preCopy.stop}), ` +
          `${mib(s.preCopy.frozenBytes)} MiB read while frozen`
      : '')
  );
}

function positiveInt(s: string | undefined, flag: string): number | undefined {
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(s) || Number(s) < 1) throw new UsageError(`${flag} must be a positive integer, got '${s}'`);
  return Number(s);
}

/** --external-ns net,ipc: known kinds only, each once (which kinds may be external is the library's to say). */
function externalKinds(s: string): NsKind[] {
  const kinds = s.split(',').map((k) => k.trim());
  for (const k of kinds)
    if (!(NS_KINDS as readonly string[]).includes(k)) throw new UsageError(`--external-ns: '${k}' is not a namespace kind (net, ipc, uts)`);
  return [...new Set(kinds)] as NsKind[];
}

export function register(program: Command): void {
  program
    .command('dump')
    .description('checkpoint a process and all its descendants into an image directory (CRIU layout)')
    .option('--pid <pid>', 'the root of the process tree to dump (a tree with namespaces of its own is dumped as a container)')
    .option('--container <id>', 'a container run by runc or crun: found through their state directories')
    .option('--runtime <name>', 'with --container: runc or crun (default: whichever knows the id)')
    .option('--cgroup <path>', 'the process tree in this cgroup (a directory under /sys/fs/cgroup or a path inside the hierarchies)')
    .option('--rootfs <mode>', 'container rootfs: shared (left in place, digest checked on restore; the default) or diff (changes against --rootfs-base travel)')
    .option('--rootfs-base <dir>', 'with --rootfs diff: the pristine rootfs the container was started from')
    .option('--external-ns <kinds>', 'namespaces (net, ipc, uts; comma-separated) the tree shares with processes outside it: recorded by inode, not content; restore joins one with --join-ns')
    .requiredOption('--dir <dir>', 'image directory to create (must not exist or be empty)')
    .option('--leave-running', 'resume the tree after dumping (a snapshot); default: kill it once the images are safe')
    .option('--compress <kind>', 'page compression: zstd (godwit container) or none (plain CRIU pages-N.img)', 'zstd')
    .option('--ghost-limit <bytes>', 'largest deleted open file whose content is put in the image', String(64 << 20))
    .option('--pre-copy', 'copy memory while the tree runs, in rounds (writes tracked), so the freeze reads only what changed')
    .option('--pre-copy-rounds <n>', 'pre-copy: most rounds, the first full copy included', '8')
    .option('--pre-copy-converge <MiB>', 'pre-copy: stop once a round copies at most this much', '8')
    .option('--json', 'print a JSON summary (pids, threads, pages, bytes, frozen and total time)')
    .option('--quiet', 'no progress output')
    .action(async (f: DumpFlags) => {
      if (f.compress !== 'zstd' && f.compress !== 'none')
        throw new UsageError(`--compress must be zstd or none, got '${f.compress}'`);
      const ghostLimit = Number(f.ghostLimit);
      if (!Number.isSafeInteger(ghostLimit) || ghostLimit < 0)
        throw new UsageError(`--ghost-limit must be a number of bytes, got '${f.ghostLimit}'`);
      const rounds = positiveInt(f.preCopyRounds, '--pre-copy-rounds');
      const converge = positiveInt(f.preCopyConverge, '--pre-copy-converge');
      const opts: DumpOptions = {
        ...treeSelection(f),
        ...(f.externalNs !== undefined ? { externalNs: externalKinds(f.externalNs) } : {}),
        dir: f.dir,
        leaveRunning: !!f.leaveRunning,
        compress: f.compress,
        ghostLimit,
        ...(f.preCopy ? { preCopy: { maxRounds: rounds, convergeBytes: converge! * 2 ** 20 } } : {}),
      };
      const renderer = f.quiet || f.json ? 'silent' : process.stderr.isTTY ? 'default' : 'simple';
      // Ctrl-C stops the dump between steps and cleans up (listr2's own handler would exit at once, leaving the
      // tree frozen and the images half-written).
      const interrupt = catchInterrupt();
      let summary: DumpSummary;
      try {
        summary = await dump({ ...opts, signal: interrupt.signal }, renderer);
      } finally {
        interrupt.release();
      }
      if (f.json) printJson(summary);
      else if (!f.quiet) process.stderr.write(describe(summary) + '\n');
    });
}
