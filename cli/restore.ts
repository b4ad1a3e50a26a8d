/**
 * `godwit restore --dir DIR`: bring a dumped process tree back. Without --detach it waits for the root task
 * and exits with its exit status (like `criu restore` without -d); with --detach it returns once the tree runs.
 */
import type { Command } from 'commander';
import { restore, RestoreOptions, RestoreResult } from '../restore';
import { catchInterrupt } from '../util/interrupt';
import { UsageError } from '../util/errors';
import { NS_KINDS, NsKind } from '../checkpoint/proc/misc';
import { printJson } from './output';
import { warningText } from '../restore/creds';

export interface RestoreCliOptions extends Omit<RestoreOptions, 'joinNs'> {
  json?: boolean;
  /** --join-ns KIND:PATH, repeated. */
  joinNs?: string[];
}

/** --join-ns KIND:PATH (repeatable) as kind -> path; each kind once. */
function joinNsOf(list: string[] | undefined): Partial<Record<NsKind, string>> | undefined {
  if (!list?.length) return undefined;
  const out: Partial<Record<NsKind, string>> = {};
  for (const item of list) {
    const m = /^(\w+):(.+)$/.exec(item);
    if (!m || !(NS_KINDS as readonly string[]).includes(m[1]!))
      throw new UsageError(`--join-ns must be KIND:PATH with KIND one of ${NS_KINDS.join(', ')} (e.g. net:/proc/PID/ns/net), got '${item}'`);
    const k = m[1] as NsKind;
    if (out[k] !== undefined) throw new UsageError(`--join-ns ${k} given twice`);
    out[k] = m[2]!;
  }
  return out;
}

export async function restoreCommand(opts: RestoreCliOptions): Promise<number> {
  // Ctrl-C while restoring: the half-restored tree is killed and godwit exits (listr2's own handler would exit
  // at once and leave it). Once the tree runs, SIGINT and SIGTERM act as before.
  const interrupt = catchInterrupt();
  let r: RestoreResult;
  try {
    r = await restore(
      { dir: opts.dir, detach: opts.detach, pidfile: opts.pidfile, newPidns: opts.newPidns, rootfsBase: opts.rootfsBase,
        rootfsPath: opts.rootfsPath, joinNs: joinNsOf(opts.joinNs), signal: interrupt.signal, onRunning: interrupt.release },
      { silent: opts.json || !process.stderr.isTTY },
    );
  } finally {
    interrupt.release();
  }
  const report = {
    rootPid: r.rootPid,
    pids: Object.fromEntries(r.pids),
    ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}),
    pageBytes: r.pageBytes,
    pagesReadDirect: r.pagesReadDirect,
    timingsMs: r.timings,
    warnings: r.warnings.map(warningText),
    ...(r.runc ? { runc: r.runc } : {}),
  };
  if (opts.json) printJson(report);
  else {
    for (const w of report.warnings) process.stderr.write(`godwit: warning: ${w}\n`);
    if (r.runc && !r.runc.listed) process.stderr.write(`godwit: note: runc list will not show the container: ${r.runc.why}\n`);
    if (opts.detach) process.stdout.write(`restored: root task ${r.rootPid} (${r.pids.size} tasks) is running\n`);
  }
  return r.exitCode ?? 0;
}

export function register(program: Command): void {
  program
    .command('restore')
    .description('restore a dumped process tree from an image directory (godwit or plain CRIU layout)')
    .requiredOption('-D, --dir <dir>', 'image directory written by `godwit dump` or `criu dump`')
    .option('-d, --detach', 'return once the tree runs instead of waiting for the root task to exit')
    .option('--pidfile <file>', "write the root task's PID (in this host's PID namespace) to this file")
    .option('--new-pidns', 'restore into a new PID namespace (when the dumped PIDs are taken on this host)')
    .option('--rootfs-base <dir>', 'container dumped with --rootfs diff: the base rootfs on this host (default: the path recorded at dump)')
    .option('--rootfs-path <dir>', 'container with a shared rootfs: where it is on this host (default: the path recorded at dump)')
    .option('--join-ns <kind:path>', 'tree dumped with --external-ns KIND: join this existing namespace (/proc/PID/ns/KIND or a bind-mounted file) instead of making one; repeatable', (v: string, acc: string[] = []) => [...acc, v])
    .option('--json', 'print the result as JSON')
    .action(async (o: RestoreCliOptions) => {
      const code = await restoreCommand(o);
      // The root task's exit status is ours: flush what we printed, then leave with it.
      if (!o.detach) await new Promise<void>((res) => process.stdout.write('', () => res()));
      if (!o.detach) process.exit(code);
    });
}
