/**
 * The container scenario: a minimal OCI bundle (a rootfs from Debian's busybox-static plus the static C
 * workload ctr-workload.c, and a runc-spec-like config.json) run by runc with its own pid, mnt, uts, ipc and
 * net namespaces, a hostname, a tmpfs on /tmp, and memory/pids/cpu limits under a cgroupsPath of its own.
 * `destroy()` (idempotent; also run on process exit) deletes the container, the cgroup directories it made and
 * the bundle directory, whatever state things were left in, after runc has reaped the container's init.
 */
import { execFile, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { promisify } from 'util';
import { GodwitError } from '../../util/errors';

const run = promisify(execFile);
const BUSYBOX = '/bin/busybox';
const WORKLOAD_SRC = path.join(__dirname, '../../../scenarios/container/ctr-workload.c');
/** The parent of every scenario container's cgroup: removed when the last scenario container goes. */
export const CGROUP_PARENT = 'godwit-ctr';

export interface BundleOptions {
  id?: string;
  hostname?: string;
  memoryLimit?: number;
  pidsLimit?: number;
  cpuQuota?: number;
  cpuPeriod?: number;
  cpuShares?: number;
  cpus?: string;
  tmpfsBytes?: number;
  shmKey?: number;
  shmBytes?: number;
  seed?: number;
  /** MiB of anonymous memory the workload holds and checks (0: none). */
  memMib?: number;
  /** ctr-workload's FEATURES argument (comma-separated: msg, mono=S, boot=S; see ctr-workload.c); '' for none. */
  features?: string;
  /** Override the container's command (default: the counting workload). */
  args?: string[];
  /** Parent directory of the bundle directory. Default os.tmpdir(). */
  tmpRoot?: string;
  /** Join this existing net namespace (config.json linux.namespaces "path", as a pod's containers do) instead of a new one. */
  netnsPath?: string;
}

export interface Bundle {
  id: string;
  dir: string;
  rootfs: string;
  configPath: string;
  config: OciConfig;
  /** cgroupsPath from config.json, absolute (/godwit-ctr/ID). */
  cgroupsPath: string;
  opts: Required<Omit<BundleOptions, 'args' | 'tmpRoot' | 'netnsPath'>>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type OciConfig = Record<string, any>;

let seq = 0;

function need(file: string, pkg: string): void {
  if (!fs.existsSync(file)) throw new GodwitError(`${file} is missing: install ${pkg} (scripts/setup.sh does)`);
}

/** Builds the rootfs and config.json in a fresh temp directory. */
export async function buildBundle(o: BundleOptions = {}): Promise<Bundle> {
  need(BUSYBOX, 'busybox-static');
  const id = o.id ?? `gwctr-${process.pid}-${++seq}`;
  const opts: Bundle['opts'] = {
    id,
    hostname: o.hostname ?? `ctr-${seq}`,
    memoryLimit: o.memoryLimit ?? 64 << 20,
    pidsLimit: o.pidsLimit ?? 32,
    cpuQuota: o.cpuQuota ?? 50000,
    cpuPeriod: o.cpuPeriod ?? 100000,
    cpuShares: o.cpuShares ?? 512,
    cpus: o.cpus ?? '0',
    tmpfsBytes: o.tmpfsBytes ?? 4 << 20,
    shmKey: o.shmKey ?? 0x60d817,
    shmBytes: o.shmBytes ?? 256 << 10,
    seed: o.seed ?? 7,
    memMib: o.memMib ?? 0,
    features: o.features ?? '',
  };
  const dir = await fs.promises.mkdtemp(path.join(o.tmpRoot ?? os.tmpdir(), 'godwit-bundle-'));
  try {
    const rootfs = path.join(dir, 'rootfs');
    for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'root']) await fs.promises.mkdir(path.join(rootfs, d), { recursive: true });
    await fs.promises.copyFile(BUSYBOX, path.join(rootfs, 'bin/busybox'));
    await fs.promises.chmod(path.join(rootfs, 'bin/busybox'), 0o755);
    const { stdout } = await run(BUSYBOX, ['--list']);
    for (const applet of stdout.split('\n').filter((a) => a && a !== 'busybox'))
      await fs.promises.symlink('busybox', path.join(rootfs, 'bin', applet));
    // -static: the rootfs has no libc; busybox has no SysV IPC tools to make a shm segment.
    await run('gcc', ['-static', '-O2', '-o', path.join(rootfs, 'bin/ctr-workload'), WORKLOAD_SRC]).catch((e: Error) => {
      throw new GodwitError(`cannot build the static container workload (gcc -static needs libc6-dev): ${e.message}`, { cause: e });
    });
    await fs.promises.writeFile(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    const cgroupsPath = `/${CGROUP_PARENT}/${id}`;
    const config = ociConfig(opts, cgroupsPath, o.args, o.netnsPath);
    const configPath = path.join(dir, 'config.json');
    await fs.promises.writeFile(configPath, JSON.stringify(config, null, 2));
    return { id, dir, rootfs, configPath, config, cgroupsPath, opts };
  } catch (e) {
    await fs.promises.rm(dir, { recursive: true, force: true });
    throw e;
  }
}

function ociConfig(o: Bundle['opts'], cgroupsPath: string, args?: string[], netnsPath?: string): OciConfig {
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: args ?? [
        '/bin/ctr-workload',
        String(o.shmKey),
        String(o.shmBytes),
        String(o.seed),
        ...(o.memMib || o.features ? [String(o.memMib)] : []),
        ...(o.features ? [o.features] : []),
      ],
      env: ['PATH=/bin', 'HOME=/root'],
      cwd: '/',
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: false },
    hostname: o.hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', `size=${o.tmpfsBytes}`] },
    ],
    linux: {
      cgroupsPath,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        memory: { limit: o.memoryLimit },
        pids: { limit: o.pidsLimit },
        cpu: { quota: o.cpuQuota, period: o.cpuPeriod, shares: o.cpuShares, cpus: o.cpus },
      },
      namespaces: [{ type: 'pid' }, netnsPath ? { type: 'network', path: netnsPath } : { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

export interface RunningContainer {
  bundle: Bundle;
  id: string;
  /** Init pid in the host's pid namespace. */
  pid: number;
  /** The workload's /tmp, seen from the host through /proc/PID/root. */
  tmpPath(file: string): string;
  /** The last count the workload wrote (0 before the first). */
  count(): number;
  /** "FAIL: ..." when the workload found its state changed, else undefined. */
  failure(): string | undefined;
  destroy(): Promise<void>;
}

const live = new Set<() => void>();
let exitHook = false;

/** Builds a bundle and starts it with a foreground `runc run` (its own session); waits until the workload is ready. */
export async function runContainer(o: BundleOptions & { readyTimeoutMs?: number } = {}): Promise<RunningContainer> {
  need('/usr/sbin/runc', 'runc');
  const bundle = await buildBundle(o);
  const id = bundle.id;
  let destroyed = false;
  const destroySync = (): void => {
    if (destroyed) return;
    destroyed = true;
    live.delete(destroySync);
    try {
      execFileSync('runc', ['delete', '-f', id], { stdio: 'ignore', timeout: 10000 });
    } catch {
      /* not created, or already gone */
    }
    removeScenarioCgroups(bundle.cgroupsPath);
    fs.rmSync(bundle.dir, { recursive: true, force: true });
  };
  live.add(destroySync);
  let runtimeExited: Promise<void> | undefined;
  /** Deletes everything, after runc (our child) has reaped the container's init and exited. */
  const destroy = async (): Promise<void> => {
    if (!destroyed) {
      try {
        await run('runc', ['delete', '-f', id], { timeout: 10000 });
      } catch {
        /* never created, or already gone */
      }
      if (runtimeExited) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([runtimeExited, new Promise((r) => (timer = setTimeout(r, 10000)))]);
        clearTimeout(timer);
      }
    }
    destroySync();
  };
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => [...live].forEach((f) => f()));
  }
  try {
    const log = fs.openSync(path.join(bundle.dir, 'container.log'), 'a');
    // Foreground `runc run` (not -d): runc stays the container init's parent and reaps it. With -d the init is
    // orphaned to PID 1, which reaps late on these machines, so a deleted container would linger as a zombie.
    // Its stdio is a log file, never a pipe the container would keep open; its own session keeps jest's
    // process-group signals away from it.
    const child = spawn('runc', ['run', '--bundle', bundle.dir, '--pid-file', path.join(bundle.dir, 'pid'), id], { stdio: ['ignore', log, log], detached: true });
    fs.closeSync(log);
    let exit: string | undefined;
    runtimeExited = new Promise<void>((resolve) => {
      child.on('error', (err) => ((exit = err.message), resolve()));
      child.on('exit', (code, sig) => ((exit = `exited ${code ?? sig}`), resolve()));
    });
    const logText = (): string => readOr(path.join(bundle.dir, 'container.log')) ?? '';
    const deadline = Date.now() + (o.readyTimeoutMs ?? 10000);
    let pid = 0;
    const tmpPath = (f: string): string => `/proc/${pid}/root/tmp/${f}`;
    for (;;) {
      if (exit !== undefined) throw new GodwitError(`runc run ${id} ${exit} before the workload was ready: ${logText()}`);
      if (!pid) pid = Number(readOr(path.join(bundle.dir, 'pid')) ?? 0);
      if (pid && fs.existsSync(tmpPath('ready'))) break;
      const fail = pid ? readOr(tmpPath('result')) : undefined;
      if (fail) throw new GodwitError(`container ${id}: workload failed to start: ${fail}`);
      if (Date.now() > deadline) throw new GodwitError(`container ${id}: workload not ready after ${o.readyTimeoutMs ?? 10000} ms: ${logText()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return {
      bundle,
      id,
      pid,
      tmpPath,
      count: () => Number(readOr(tmpPath('count')) ?? 0),
      failure: () => readOr(tmpPath('result')),
      destroy,
    };
  } catch (e) {
    await destroy();
    throw e;
  }
}

function readOr(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** runc delete removes the leaf; the parent godwit-ctr directory goes once empty (EBUSY: another is alive). */
function removeScenarioCgroups(cgroupsPath: string): void {
  for (const root of cgroupRoots()) {
    for (const rel of [cgroupsPath, path.dirname(cgroupsPath)]) {
      try {
        fs.rmdirSync(path.join(root, rel));
      } catch {
        /* gone, or still used by another scenario container */
      }
    }
  }
}

/** Mount points of every cgroup hierarchy (v1 controllers and v2). */
export function cgroupRoots(): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => / - cgroup2? /.test(l))
    .map((l) => l.split(' ')[4]);
}
