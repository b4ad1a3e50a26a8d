/**
 * The "ns flavor" of CRIU's zdtm, for godwit's own workloads: a scenario workload started as the init (pid 1) of
 * fresh pid, mnt, net, ipc and uts namespaces, in a small root of its own (pivot_root) with its own /proc, a tmpfs
 * /dev with a few nodes and a devpts instance of its own, loopback up, and a cgroup of its own
 * (/godwit-ctr/ID). Host directories are bound in at their host paths: /usr (bin, lib and lib64 are symlinks
 * into it, as on the host), the built workloads, and the state directory, so the harness reads the workload's
 * files at the same paths as for a plain run. `godwit dump --pid` of such a tree takes the container path.
 *
 * The workload reports its pids as its pid namespace sees them; `NsWorkload` keeps those (they are the image's
 * pids) and gives the harness the host's, before and after a restore.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GodwitError } from '../../util/errors';
import { parseReady, scenarioBinary, Workload, WorkloadName } from '../workload';
import { makeCgroups, removeCgroups } from './unshare';

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
const READY_MS = 30_000;
/** Enough for every workload (mem-counter's default size included), and a ceiling for a runaway one. */
const LIMITS = { memoryLimit: 512 << 20, pidsLimit: 64 };

export interface NsWorkload {
  workload: Workload;
  /** The workload's pids as its own pid namespace sees them (the image's pids), same order as workload.pids. */
  nsPids: number[];
  /** The host directory bound as the container's root (its content is only mount points and symlinks). */
  rootfs: string;
  /** Points the workload at the restored tree: host pids by image pid (RestoreResult.pids). */
  restored(hostByImagePid: Map<number, number>): void;
  /** Kills what is left (the workload, then the namespaces' init), removes the cgroups and directories. */
  destroy(): Promise<void>;
}

/** The host pid of every pid of `nsPids` in the pid namespace whose init is host pid INIT. */
export function hostPidsInNs(init: number, nsPids: number[]): number[] {
  const ns = fs.readlinkSync(`/proc/${init}/ns/pid`);
  const byNsPid = new Map<number, number>([[1, init]]);
  for (const e of fs.readdirSync('/proc')) {
    const p = Number(e);
    if (!Number.isInteger(p) || p <= 0) continue;
    try {
      if (fs.readlinkSync(`/proc/${p}/ns/pid`) !== ns) continue;
      const m = /^NSpid:\s*(.*)$/m.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
      const levels = (m?.[1] ?? '').trim().split(/\s+/).map(Number);
      byNsPid.set(levels[levels.length - 1]!, p);
    } catch {
      /* gone meanwhile */
    }
  }
  return nsPids.map((n) => {
    const h = byNsPid.get(n);
    if (h === undefined) throw new GodwitError(`pid ${n} of the pid namespace of ${init} has no process`);
    return h;
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

/** Starts workload NAME as the init of fresh namespaces; resolves once it wrote its ready file. */
export async function startNsWorkload(name: WorkloadName, o: { args?: string[]; readyTimeoutMs?: number } = {}): Promise<NsWorkload> {
  const bin = scenarioBinary(name);
  const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), `godwit-nsf-${name}-`)));
  const id = path.basename(base);
  const rootfs = path.join(base, 'root');
  const state = path.join(base, 'state');
  const binDir = path.dirname(bin);
  let cgroupDirs: string[] = [];
  let child: ChildProcess | undefined;
  let exited: string | undefined;
  let childExit: Promise<void> = Promise.resolve();
  let workload: Workload | undefined;
  let init = 0;
  const destroy = async (): Promise<void> => {
    await workload?.cleanup().catch(() => undefined);
    for (const p of [init, child?.pid ?? 0])
      if (p)
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([childExit, new Promise((res) => (timer = setTimeout(res, 5000)))]);
    clearTimeout(timer);
    // A cgroup empties once its killed tasks are reaped (a restored tree's reaper is the restorer): retry briefly.
    for (let i = 0; i < 100 && cgroupDirs.some((d) => fs.existsSync(d)); i++) {
      removeCgroups(cgroupDirs);
      await sleep(20);
    }
    fs.rmSync(base, { recursive: true, force: true });
  };
  try {
    for (const d of ['proc', 'dev', 'tmp', 'usr', 'etc', state.slice(1), binDir.slice(1)]) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
    for (const l of ['bin', 'lib', 'lib64', 'sbin']) fs.symlinkSync(`usr/${l}`, path.join(rootfs, l));
    fs.mkdirSync(state);
    fs.writeFileSync(path.join(state, 'stdin'), '');
    cgroupDirs = makeCgroups(id, LIMITS);
    const r = (p: string) => q(path.join(rootfs, p));
    const inner = [
      'set -e',
      `hostname ${q(id.slice(0, 60))}`,
      `mount --bind ${q(rootfs)} ${q(rootfs)}`,
      `mount --bind /usr ${r('usr')}`,
      `mount --bind ${q(binDir)} ${r(binDir)}`,
      `mount --bind ${q(state)} ${r(state)}`,
      `mount -t proc proc ${r('proc')}`,
      `mount -t tmpfs -o nosuid,mode=755 tmpfs ${r('dev')}`,
      ...['null c 1 3', 'zero c 1 5', 'urandom c 1 9', 'tty c 5 0'].map((n) => `mknod -m 666 ${r('dev/' + n.split(' ')[0])} ${n.split(' ').slice(1).join(' ')}`),
      `mkdir ${r('dev/pts')}`,
      `mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts ${r('dev/pts')}`,
      `ln -s pts/ptmx ${r('dev/ptmx')}`,
      'ip link set lo up',
      `cd ${q(rootfs)}`,
      'pivot_root . .',
      'umount -l .',
      'cd /',
      `exec ${[bin, '--state', state, ...(o.args ?? [])].map(q).join(' ')}`,
    ].join('\n');
    const outer = [...cgroupDirs.map((d) => `echo $$ > ${q(path.join(d, 'cgroup.procs'))}`), `exec unshare --fork --pid --mount --uts --ipc --net --propagation private sh -c ${q(inner)}`].join('\n');
    const log = fs.openSync(path.join(base, 'setup.log'), 'a');
    try {
      child = spawn('sh', ['-c', outer], { stdio: ['ignore', log, log], detached: true });
    } finally {
      fs.closeSync(log);
    }
    child.unref();
    childExit = new Promise<void>((res) => {
      child!.on('exit', (code, sig) => ((exited = `exited ${code ?? sig}`), res()));
      child!.on('error', (e) => ((exited = e.message), res()));
    });
    const timeout = o.readyTimeoutMs ?? READY_MS;
    const deadline = Date.now() + timeout;
    const setupLog = () => `${fs.readFileSync(path.join(base, 'setup.log'), 'utf8')}${fs.existsSync(path.join(state, 'log')) ? fs.readFileSync(path.join(state, 'log'), 'utf8') : ''}`;
    for (;;) {
      if (exited !== undefined) throw new GodwitError(`ns-flavor ${name}: ${exited} before it was ready: ${setupLog()}`);
      if (!init)
        try {
          init = Number(fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').split(' ')[0] || 0);
        } catch {
          /* unshare exited meanwhile: reported at the next look */
        }
      if (fs.existsSync(path.join(state, 'ready'))) break;
      if (Date.now() > deadline) throw new GodwitError(`ns-flavor ${name}: not ready after ${timeout} ms: ${setupLog()}`);
      await sleep(10);
    }
    const ready = parseReady(fs.readFileSync(path.join(state, 'ready'), 'utf8'), path.join(state, 'ready'));
    const nsPids = ready.pids;
    workload = new Workload(name, state, { ...ready, pids: hostPidsInNs(init, nsPids) }, child, childExit);
    const w = workload;
    return {
      workload: w,
      nsPids,
      rootfs,
      restored(hostByImagePid: Map<number, number>): void {
        w.setPids(
          nsPids.map((p) => {
            const h = hostByImagePid.get(p);
            if (h === undefined) throw new GodwitError(`ns-flavor ${name}: the restore gave no host pid for pid ${p}`);
            return h;
          }),
        );
      },
      destroy,
    };
  } catch (e) {
    await destroy();
    throw e;
  }
}
