/**
 * The demo the README's first command runs: live migration. Two test hosts are set up on this machine (own
 * network, PID, mount and UTS namespaces, a veth pair with 198.18.x addresses, sshd on host B); a workload with
 * 128 MiB of memory and a busy counter runs on host A; `godwit migrate` moves it to host B over SSH (checkpoint
 * streamed as it is taken, restored there held stopped, committed, the source ended); then the workload, now on
 * host B, checks its own memory and counter. Everything is removed afterwards, also on failure or Ctrl-C.
 *
 * The workload and `godwit migrate` run in host A's network namespace and the machine's PID namespace (the
 * harness sees their pids as they are); host B is a separate host in every namespace that matters here.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHosts, TestBed } from './hosts';
import { findWorkloadPids, startWorkload, Workload } from './workload';
import { describeError } from '../util/errors';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');
const say = (s: string) => process.stdout.write(`\n== ${s}\n`);

function nspid(pid: number): string {
  const m = /^NSpid:\s+(.*)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? m[1]!.trim().split(/\s+/).pop()! : '?';
}

async function main(): Promise<number> {
  const mib = Number(process.env.GODWIT_DEMO_MIB ?? 128);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-demo-'));
  let bed: TestBed | undefined;
  let workload: Workload | undefined;
  try {
    say('setting up two test hosts (namespaces, veth, sshd on host B)');
    bed = await createHosts();
    const a = bed.source;
    const b = bed.target;
    console.log(`host A: ${a.name} ${a.address}    host B: ${b.name} ${b.address} (sshd, host key ${b.ssh!.hostKeyFingerprint})`);

    say(`starting mem-counter with ${mib} MiB on host A (half random, half repeated bytes, a busy counter)`);
    const netns = `--net=${a.nsPath('net')}`;
    workload = await startWorkload('mem-counter', { args: ['--mib', String(mib)], tmpRoot: root, prefix: ['nsenter', netns] });
    console.log(`workload pid ${workload.pid} on host A, state in ${workload.dir}`);

    const args = ['migrate', '--pid', String(workload.pid), '--to', `root@${b.address}`, '--identity', bed.clientKeyPath,
      '--known-hosts', bed.knownHostsPath, '--godwit-path', `${process.execPath} ${CLI}`, '--target-dir', path.join(root, 'images')];
    say(`godwit ${args.join(' ')}`);
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', 'nsenter', netns, process.execPath, CLI, ...args], { stdio: 'inherit' });
    const code = await new Promise<number | null>((r) => child.on('close', r));
    if (code !== 0) throw new Error(`godwit migrate exited with ${code}`);

    const pids = findWorkloadPids(workload.dir);
    const sourcePid = workload.pid;
    console.log(`on host A: pid ${sourcePid} is ${pids.includes(sourcePid) ? 'STILL THERE' : 'gone'}; ` +
      `on host B: ${pids.map((p) => `pid ${nspid(p)} (pid ${p} seen from this machine)`).join(', ')}`);
    workload.setPids(pids);

    say('asking the migrated workload, now on host B, to check its memory and counter');
    const result = await workload.verify();
    console.log(result.detail);
    return result.pass && !pids.includes(sourcePid) ? 0 : 1;
  } finally {
    await workload?.cleanup().catch(() => undefined);
    await bed?.destroy().catch(() => undefined);
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
