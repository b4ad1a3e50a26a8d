/**
 * The demo the README's first command runs: a workload with 128 MiB of memory is checkpointed, its images
 * inspected and verified, the workload killed, restored from the images, and then it checks its own memory
 * and counter. Everything it starts is cleaned up, also on failure.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { inspectImageDir } from '../images/inspect';
import { verifyImageDir } from '../images/verify';
import { formatInspect } from '../cli/inspect';
import { printVerifyReport } from '../cli/verify';
import { restore } from '../restore';
import { startWorkload, Workload } from './workload';
import { describeError } from '../util/errors';

const MIB = 1024 * 1024;
const say = (s: string) => process.stdout.write(`\n== ${s}\n`);

async function main(): Promise<number> {
  const mib = Number(process.env.GODWIT_DEMO_MIB ?? 128);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-demo-'));
  const dir = path.join(root, 'images');
  let workload: Workload | undefined;
  try {
    say(`starting mem-counter with ${mib} MiB (half random, half repeated bytes)`);
    workload = await startWorkload('mem-counter', { args: ['--mib', String(mib)], tmpRoot: root });
    console.log(`workload pid ${workload.pid}, state in ${workload.dir}`);

    say(`godwit dump --pid ${workload.pid} --dir ${dir}`);
    const d = await dump({ pid: workload.pid, dir }, process.stdout.isTTY ? 'default' : 'simple');
    console.log(
      `dumped ${d.pids.length} process(es), ${d.threads} thread(s): ${(d.pageBytes / MIB).toFixed(1)} MiB of pages ` +
        `in ${(d.imageBytes / MIB).toFixed(1)} MiB of images; frozen ${d.frozenMs.toFixed(0)} ms, total ${d.totalMs.toFixed(0)} ms`,
    );

    say(`godwit inspect ${dir}`);
    process.stdout.write(formatInspect(await inspectImageDir(dir)) + '\n');

    say(`godwit verify ${dir}`);
    const v = await verifyImageDir(dir);
    printVerifyReport(v);
    if (v.problems.length) throw new Error(`verify found ${v.problems.length} problem(s) in ${dir}`);

    say(`godwit restore --dir ${dir} --detach`);
    const r = await restore({ dir, detach: true }, { silent: !process.stdout.isTTY });
    console.log(`restored: root pid ${r.rootPid}`);

    say('asking the restored workload to check its memory and counter');
    const result = await workload.verify();
    console.log(result.detail);
    return result.pass ? 0 : 1;
  } finally {
    await workload?.kill().catch(() => undefined);
    await workload?.cleanup().catch(() => undefined);
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().then(
  (code) => (process.exitCode = code),
  (err) => {
    process.stderr.write(`demo failed: ${describeError(err)}\n`);
    process.exitCode = 1;
  },
);
