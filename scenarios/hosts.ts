/**
 * The two-host (or N-host) test bed: "hosts" on this one machine, each in its own network, PID, mount, UTS and
 * IPC namespace, joined by veth links with addresses from 198.18.0.0/15, each running OpenSSH's sshd on its own
 * address. Tests, the demo and the benchmarks start one with `createHosts()` and end it with `destroy()` (or
 * use `withHosts(fn)`).
 *
 * How a host is held: `setpriv --pdeathsig KILL unshare --net --pid --mount --uts --ipc --fork --kill-child
 * --mount-proc` runs a tiny init (perl, always on Debian: perl-base is Essential) as PID 1 of the new PID
 * namespace. It sets the hostname, mounts private tmpfs on /run (for sshd's /run/sshd) and on /root (root's home
 * on a fresh machine: empty), and brings loopback up,
 * then only reaps orphans, as a PID 1 must (processes restored into the host end up as its children).
 * The namespaces are not named (no `ip netns add`): they exist exactly as long as that init, so nothing is left in
 * /run/netns if the harness is killed. And the harness cannot be outlived: if this process dies, setpriv's
 * parent-death signal kills unshare, unshare's --kill-child kills the init, and the kernel ends every process of a
 * PID namespace whose init dies (sshd included); the network namespace, its veths and the mount namespace with
 * its tmpfs go with them.
 *
 * Network: with two hosts, one veth pair, one end in each host, created directly inside the namespaces (the
 * names never exist in the root namespace). With more, a bridge in a small network-only "switch" namespace and
 * one veth per host. Bed k (a slot, bed-registry.ts) uses 198.(18 + k/256).(k%256).0/24; host i is .(i+1).
 * Hosts have no default route: they cannot send to anything but each other.
 *
 * The hosts share the machine's filesystem (their mount namespaces are copies of this one plus their own /run,
 * /root and /proc), so paths such as image directories and keys mean the same inside and out.
 */
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GodwitError } from '../util/errors';
import { claimSlot, releaseSlot, slotStillClaimed, trackBed, untrackBed, type BedSlot, type LiveBed } from './bed-registry';
import {
  HostProcess,
  childPids,
  hostExec,
  type ExecResult,
  type HostExecOptions,
  type HostSpawnOptions,
  type NamespaceTarget,
} from './host-process';
import { generateKey, startSshd, type RunningSshd, type SshdEndpoint } from './host-sshd';

export type { ExecResult, HostExecOptions, HostSpawnOptions, SshdEndpoint };
export { HostProcess };

const execFileP = promisify(execFile);

export interface CreateHostsOptions {
  /** Number of hosts, 2 to 26. Default 2. */
  count?: number;
  /** Hostnames; default godwit-a, godwit-b, ... */
  names?: string[];
  /** Which hosts run sshd: true (default) = all, false = none, or a list of host indexes. */
  sshd?: boolean | number[];
  /** Time allowed for each host's init and sshd to come up. Default 10 s. */
  readyTimeoutMs?: number;
  /** Fault injection for tests of the cleanup path: fail right after this stage of building the bed. */
  failAfter?: 'hosts' | 'link' | 'sshd';
}

export interface Host extends NamespaceTarget {
  index: number;
  /** Hostname inside the host. */
  name: string;
  /** IPv4 address on the bed's link, from 198.18.0.0/15. */
  address: string;
  prefixLength: number;
  /** The host's veth interface name (inside its network namespace). */
  interfaceName: string;
  /** PID (root PID namespace) of the host's init, which holds its namespaces. */
  initPid: number;
  /** sshd on this host, when it runs one. */
  ssh?: SshdEndpoint;
  /** /proc/INIT/ns/KIND: for setns-based tools. */
  nsPath(kind: 'net' | 'pid' | 'mnt' | 'uts' | 'ipc'): string;
  /** Run a command inside the host and collect its output. */
  exec(cmd: string, args?: readonly string[], opts?: HostExecOptions): Promise<ExecResult>;
  /** Like exec, but a non-zero exit is an error carrying stderr. */
  execOk(cmd: string, args?: readonly string[], opts?: HostExecOptions): Promise<ExecResult>;
  /** Start a command inside the host; the caller owns it (stop() it). */
  spawn(cmd: string, args?: readonly string[], opts?: HostSpawnOptions): HostProcess;
  /**
   * Fault injection: take the host's link down (every packet to or from it is dropped silently, as when a cable
   * is pulled; open TCP connections hang until keepalives give up) or bring it back up.
   */
  setLinkUp(up: boolean): Promise<void>;
  /**
   * Mount a tmpfs of `sizeBytes` on `dir` inside this host only (created if missing): a small disk for
   * disk-full tests. Gone with the host's mount namespace; put `dir` under bed.dir so the directory goes too.
   */
  mountTmpfs(dir: string, sizeBytes: number): Promise<void>;
}

/** Everything a bed created, so tests can check it is all gone after destroy(). */
export interface BedResources {
  dir: string;
  /** The slot's owner record: `dir` is ours only while its owner file says this (slots are reused). */
  owner?: string;
  /** Processes the bed started (host inits, unshare, switch holder, sshd), root PID namespace. */
  pids: number[];
  /** veth and bridge names, all inside the bed's own network namespaces. */
  linkNames: string[];
  /** Start time (clock ticks after boot, /proc/PID/stat field 22) of each pid: a recycled pid is not ours. */
  startTimes: Record<number, string>;
  /**
   * The bed's namespaces: kind, inode number (as in readlink /proc/PID/ns/KIND) and the process holding them.
   * Inode numbers are recycled once a namespace is freed, so they identify ours only while the holder lives.
   */
  namespaces: { kind: NsKind; inode: number; holderPid: number }[];
}

type NsKind = 'net' | 'pid' | 'mnt' | 'uts' | 'ipc';
const NS_KINDS: NsKind[] = ['net', 'pid', 'mnt', 'uts', 'ipc'];

export interface TestBed {
  /** Slot number k: the bed's subnet is 198.(18 + k/256).(k%256).0/24. */
  id: number;
  /** Private directory (0700) with keys, sshd configs and logs; removed by destroy(). */
  dir: string;
  subnet: string;
  hosts: Host[];
  /** hosts[0]: where `godwit migrate` runs in tests. */
  source: Host;
  /** hosts[1]: where workloads are migrated to. */
  target: Host;
  /** The client key that every bed sshd accepts for root. */
  clientKeyPath: string;
  clientPublicKey: string;
  /** known_hosts file with a line for every sshd of the bed. */
  knownHostsPath: string;
  /** argv for OpenSSH's own client (run inside a host) to reach `to` with the bed's key and known_hosts. */
  sshArgv(to: Host, remoteCommand: string, extraOptions?: string[]): string[];
  resources(): BedResources;
  /** Remove everything the bed made. Idempotent; never throws for what is already gone. */
  destroy(): Promise<void>;
}

const MAX_HOSTS = 26;
const DEFAULT_READY_TIMEOUT_MS = 10_000;
const PREFIX_LENGTH = 24;
const INIT_STOP_TIMEOUT_MS = 5_000;
const HOSTNAME_RE = /^[a-z0-9]([a-z0-9-]{0,62})$/i;

/**
 * PID 1 of a host: reap every child, ignore the signals a PID 1 would get by accident. SIGCHLD has a handler so
 * that `sleep` returns at once when a child exits; the 1 s period covers a SIGCHLD arriving just before sleep.
 */
const INIT_PERL =
  '$SIG{$_} = "IGNORE" for qw(TERM INT HUP QUIT USR1 USR2 PIPE); $SIG{CHLD} = sub {}; ' +
  'while (1) { 1 while waitpid(-1, 1) > 0; sleep 1 }';

/** Runs as the host's PID 1 first: hostname, /run, loopback, then becomes the reaper. $1 = hostname. */
const INIT_SETUP = [
  'set -e',
  'echo "$1" > /proc/sys/kernel/hostname',
  'mount -t tmpfs -o mode=0755,size=16m godwit-run /run',
  'mkdir -m 0755 /run/sshd',
  // Its own empty home for root, as a fresh machine has: no shell startup files of this machine's root (which may
  // be slow: every SSH command runs them), no ~/.ssh shared between hosts.
  'mount -t tmpfs -o mode=0700,size=16m godwit-root /root',
  'ip link set lo up',
  'echo ready',
  `exec perl -e '${INIT_PERL}'`,
].join('\n');

function subnetBase(id: number): [number, number] {
  return [18 + (id >> 8), id & 255];
}

function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function nsInode(pid: number | string, kind: NsKind): number | undefined {
  try {
    const m = /\[(\d+)\]/.exec(readlinkSync(`/proc/${pid}/ns/${kind}`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Wait for `ready` on a child's stdout (or its death, or the timeout). */
function waitReady(child: ChildProcess, what: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => finish(new GodwitError(`${what}: not ready within ${timeoutMs} ms; stderr: ${err.trim()}`)), timeoutMs);
    const finish = (e?: Error): void => {
      clearTimeout(timer);
      child.stdout?.removeAllListeners('data');
      child.removeListener('exit', onExit);
      if (e) reject(e);
      else resolve();
    };
    const onExit = (code: number | null, signal: string | null): void =>
      finish(new GodwitError(`${what}: exited (code ${code}, signal ${signal}) during setup; stderr: ${err.trim()}`));
    child.stderr?.on('data', (b: Buffer) => {
      err = (err + b.toString()).slice(-4000);
    });
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('ready\n')) finish();
    });
    child.once('exit', onExit);
    child.once('error', (e) => finish(new GodwitError(`${what}: cannot start`, { cause: e })));
  });
}

/** A namespace-holding process (host init behind unshare, or the switch). */
interface Holder {
  /** What we spawned: setpriv -> unshare (same pid). */
  child: ChildProcess;
  /** The process whose namespaces are the host's: unshare's forked child, or the holder itself. */
  nsPid: number;
}

async function startHolder(argv: string[], what: string, timeoutMs: number, forks: boolean): Promise<Holder> {
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  const holder = { child, nsPid: -1 };
  // The harness must be able to exit without destroy(): its exit handler cleans up then.
  child.unref();
  for (const s of [child.stdout, child.stderr]) (s as unknown as { unref?: () => void }).unref?.();
  try {
    await waitReady(child, what, timeoutMs);
    const pid = child.pid!;
    const nsPid = forks ? childPids(pid)[0] : pid;
    if (nsPid === undefined) throw new GodwitError(`${what}: unshare has no child after setup`);
    holder.nsPid = nsPid;
    return holder;
  } catch (err) {
    await stopHolder(holder);
    throw err;
  }
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

async function stopHolder(holder: Holder): Promise<void> {
  if (!alive(holder.child)) return;
  const exited = new Promise<void>((r) => holder.child.once('exit', () => r()));
  // SIGKILL to a PID namespace's init ends every process in that namespace; unshare, its parent, then reaps it
  // and exits, so unshare's exit means the init is gone. Killing unshare instead would leave the init to the
  // machine's PID 1, which reaps late: only done when the init is not known yet.
  const init = holder.nsPid > 0 ? holder.nsPid : childPids(holder.child.pid!)[0];
  try {
    process.kill(init ?? holder.child.pid!, 'SIGKILL');
  } catch {
    // Already gone.
  }
  // A ref'd timer: the process must not exit (and skip the rest of destroy) while we wait.
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(true), INIT_STOP_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  if (timedOut) throw new GodwitError(`pid ${holder.child.pid} (${holder.child.spawnargs.slice(3, 5).join(' ')}) did not exit after SIGKILL`);
}

async function inNetns(pid: number, args: string[], what: string): Promise<void> {
  try {
    await execFileP('nsenter', [`--target=${pid}`, '--net', '--', 'ip', ...args]);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new GodwitError(`${what}: ip ${args.join(' ')} failed${stderr ? ': ' + stderr : ''}`, { cause: err });
  }
}

class Bed implements TestBed, LiveBed {
  id: number;
  dir: string;
  subnet: string;
  hosts: Host[] = [];
  clientKeyPath = '';
  clientPublicKey = '';
  knownHostsPath = '';
  private holders: Holder[] = [];
  private switchHolder: Holder | undefined;
  private sshds: RunningSshd[] = [];
  private linkNames: string[] = [];
  private namespaces: BedResources['namespaces'] = [];
  private startTimes: Record<number, string> = {};
  private destroying: Promise<void> | undefined;

  constructor(private readonly slot: BedSlot) {
    this.id = slot.index;
    this.dir = slot.dir;
    const [b, c] = subnetBase(slot.index);
    this.subnet = `198.${b}.${c}.0/${PREFIX_LENGTH}`;
  }

  get source(): Host {
    return this.hosts[0]!;
  }

  get target(): Host {
    return this.hosts[1]!;
  }

  async build(opts: CreateHostsOptions): Promise<void> {
    // Made while the hosts come up. On any failure, wait for ssh-keygen before the caller removes the directory:
    // it must neither fail unobserved nor write into a slot that a new bed may already have taken.
    const clientKey = generateKey(join(this.dir, 'client_ed25519'), `godwit-bed-${this.id}-client`);
    try {
      await this.buildWith(opts, clientKey);
    } catch (err) {
      await clientKey.catch(() => undefined);
      throw err;
    }
  }

  private async buildWith(opts: CreateHostsOptions, clientKey: Promise<{ publicKey: string }>): Promise<void> {
    const count = opts.count ?? 2;
    const timeoutMs = opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
    const names = opts.names ?? Array.from({ length: count }, (_, i) => `godwit-${String.fromCharCode(97 + i)}`);
    const [b, c] = subnetBase(this.id);

    // Hosts come up in parallel: each is an unshare + a few shell lines.
    const starts = names.map((name) =>
      startHolder(
        ['unshare', '--net', '--pid', '--mount', '--uts', '--ipc', '--fork', '--kill-child=KILL', '--mount-proc',
          '--propagation', 'private', '--', 'sh', '-c', INIT_SETUP, 'godwit-host-init', name],
        `test host ${name}`, timeoutMs, true,
      ).then((h) => (this.holders.push(h), h)),
    );
    const settled = await Promise.allSettled(starts);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    const holders = (settled as PromiseFulfilledResult<Holder>[]).map((s) => s.value);

    this.hosts = holders.map((holder, index) => this.makeHost(holder, index, names[index]!, `198.${b}.${c}.${index + 1}`));
    for (const h of holders) {
      for (const kind of NS_KINDS) {
        const inode = nsInode(h.nsPid, kind);
        if (inode !== undefined) this.namespaces.push({ kind, inode, holderPid: h.nsPid });
      }
    }

    this.injectFault(opts, 'hosts');
    await this.link();
    this.injectFault(opts, 'link');

    const { publicKey } = await clientKey;
    this.clientKeyPath = join(this.dir, 'client_ed25519');
    this.clientPublicKey = publicKey;

    const sshdOn = opts.sshd === false ? [] : opts.sshd === true || opts.sshd === undefined
      ? this.hosts.map((h) => h.index) : opts.sshd;
    const started = await Promise.allSettled(sshdOn.map(async (i) => {
      const host = this.hosts[i]!;
      const hostDir = join(this.dir, `host-${host.index}`);
      mkdirSync(hostDir, { mode: 0o700 });
      const sshd = await startSshd(host, hostDir, publicKey, timeoutMs);
      this.sshds.push(sshd);
      host.ssh = sshd.endpoint;
    }));
    const sshdFailed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (sshdFailed) throw sshdFailed.reason;
    this.injectFault(opts, 'sshd');
    this.knownHostsPath = join(this.dir, 'known_hosts');
    writeFileSync(this.knownHostsPath, this.hosts.filter((h) => h.ssh).map((h) => h.ssh!.knownHostsLine + '\n').join(''), { mode: 0o600 });
  }

  private injectFault(opts: CreateHostsOptions, stage: NonNullable<CreateHostsOptions['failAfter']>): void {
    if (opts.failAfter === stage) throw new GodwitError(`fault injected after stage "${stage}" (failAfter option)`, { code: 'EFAULTINJECTED' });
  }

  private makeHost(holder: Holder, index: number, name: string, address: string): Host {
    const letter = String.fromCharCode(97 + index);
    const host: Host = {
      index,
      name,
      address,
      prefixLength: PREFIX_LENGTH,
      interfaceName: `gw${this.id}${letter}`,
      initPid: holder.nsPid,
      nsPath: (kind) => `/proc/${holder.nsPid}/ns/${kind}`,
      exec: (cmd, args = [], o = {}) => hostExec(host, cmd, args, o),
      execOk: async (cmd, args = [], o = {}) => {
        const r = await hostExec(host, cmd, args, o);
        if (r.code !== 0) {
          throw new GodwitError(`${[cmd, ...args].join(' ').slice(0, 200)} on host ${name} failed ` +
            `(${r.code !== null ? 'exit ' + r.code : r.signal}): ${r.stderr.trim().slice(-2000)}`);
        }
        return r;
      },
      spawn: (cmd, args = [], o = {}) => new HostProcess(host, cmd, args, o),
      mountTmpfs: async (dir, sizeBytes) => {
        if (!Number.isInteger(sizeBytes) || sizeBytes < 4096) {
          throw new GodwitError(`mountTmpfs: size ${sizeBytes} must be an integer of at least 4096 bytes`, { code: 'EUSAGE' });
        }
        await host.execOk('mkdir', ['-p', '-m', '0700', '--', dir]);
        await host.execOk('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0700`, 'godwit-small', dir]);
      },
      setLinkUp: (up) => inNetns(holder.nsPid, ['link', 'set', host.interfaceName, up ? 'up' : 'down'], `host ${name}`),
    };
    return host;
  }

  /** veth pair between two hosts, or a bridge in a switch namespace for more. */
  private async link(): Promise<void> {
    const hosts = this.hosts;
    if (hosts.length === 2) {
      const [a, z] = hosts as [Host, Host];
      this.linkNames.push(a.interfaceName, z.interfaceName);
      await execFileP('ip', ['link', 'add', a.interfaceName, 'netns', String(a.initPid), 'type', 'veth',
        'peer', 'name', z.interfaceName, 'netns', String(z.initPid)]).catch((err) => {
        throw new GodwitError(`bed ${this.id}: cannot create veth pair ${a.interfaceName}/${z.interfaceName}: ${err.stderr ?? ''}`.trim(), { cause: err });
      });
    } else {
      const bridge = `gw${this.id}br`;
      this.switchHolder = await startHolder(
        ['unshare', '--net', '--', 'sh', '-c',
          `set -e; ip link set lo up; ip link add ${bridge} type bridge; ip link set ${bridge} up; echo ready; exec sleep infinity`],
        `bed ${this.id} switch`, DEFAULT_READY_TIMEOUT_MS, false,
      );
      const inode = nsInode(this.switchHolder.nsPid, 'net');
      if (inode !== undefined) this.namespaces.push({ kind: 'net', inode, holderPid: this.switchHolder.nsPid });
      this.linkNames.push(bridge);
      const sw = this.switchHolder.nsPid;
      for (const h of hosts) {
        const port = `${h.interfaceName}s`;
        this.linkNames.push(h.interfaceName, port);
        await execFileP('ip', ['link', 'add', h.interfaceName, 'netns', String(h.initPid), 'type', 'veth',
          'peer', 'name', port, 'netns', String(sw)]).catch((err) => {
          throw new GodwitError(`bed ${this.id}: cannot create veth ${h.interfaceName}: ${err.stderr ?? ''}`.trim(), { cause: err });
        });
        await inNetns(sw, ['link', 'set', port, 'master', bridge, 'up'], `bed ${this.id} switch`);
      }
    }
    await Promise.all(hosts.map(async (h) => {
      await inNetns(h.initPid, ['addr', 'add', `${h.address}/${PREFIX_LENGTH}`, 'dev', h.interfaceName], `host ${h.name}`);
      await inNetns(h.initPid, ['link', 'set', h.interfaceName, 'up'], `host ${h.name}`);
    }));
  }

  sshArgv(to: Host, remoteCommand: string, extraOptions: string[] = []): string[] {
    if (!to.ssh) throw new GodwitError(`host ${to.name} runs no sshd in this bed`);
    return [
      'ssh', '-F', '/dev/null', '-i', this.clientKeyPath,
      '-o', `UserKnownHostsFile=${this.knownHostsPath}`, '-o', 'GlobalKnownHostsFile=/dev/null',
      '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR',
      '-p', String(to.ssh.port), ...extraOptions, `root@${to.ssh.address}`, remoteCommand,
    ];
  }

  resources(): BedResources {
    const pids: number[] = [];
    for (const h of [...this.holders, ...(this.switchHolder ? [this.switchHolder] : [])]) {
      if (h.child.pid !== undefined) pids.push(h.child.pid);
      if (h.nsPid > 0 && h.nsPid !== h.child.pid) pids.push(h.nsPid);
    }
    for (const s of this.sshds) pids.push(s.endpoint.pid);
    const startTimes: Record<number, string> = { ...this.startTimes };
    for (const pid of pids) {
      if (startTimes[pid] === undefined) {
        const t = startTime(pid);
        if (t !== undefined) startTimes[pid] = t;
      }
    }
    // Remembered: resources() after destroy() must still name the same processes.
    this.startTimes = startTimes;
    return { dir: this.dir, owner: this.slot.owner, pids, startTimes, linkNames: [...this.linkNames], namespaces: [...this.namespaces] };
  }

  cleanupSync(): void {
    for (const h of [...this.holders, ...(this.switchHolder ? [this.switchHolder] : [])]) {
      if (!alive(h.child)) continue;
      try {
        process.kill(h.nsPid > 0 ? h.nsPid : h.child.pid!, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    releaseSlot(this.slot);
  }

  destroy(): Promise<void> {
    this.destroying ??= this.teardown();
    return this.destroying;
  }

  private async teardown(): Promise<void> {
    const problems: unknown[] = [];
    // sshd first and gently, so that connected clients see a clean close; then the inits take the rest.
    await Promise.all(this.sshds.map((s) => s.process.stop('SIGTERM', 2000).catch((e) => problems.push(e))));
    await Promise.all(this.holders.map((h) => stopHolder(h).catch((e) => problems.push(e))));
    if (this.switchHolder) await stopHolder(this.switchHolder).catch((e) => problems.push(e));
    try {
      releaseSlot(this.slot);
    } catch (e) {
      problems.push(e);
    }
    untrackBed(this);
    if (problems.length > 0) {
      throw new GodwitError(`bed ${this.id}: teardown incomplete: ${problems.map((p) => (p as Error).message ?? String(p)).join('; ')}`,
        { cause: problems[0] });
    }
  }
}

/**
 * What of a bed is still there: live processes among its pids, processes in its namespaces, its links in this
 * network namespace, its directory. Empty after a complete destroy(). Scans /proc once.
 */
export function bedLeftovers(res: BedResources): string[] {
  const left: string[] = [];
  const ours = (pid: number): boolean => {
    const t = startTime(pid);
    return t !== undefined && (res.startTimes?.[pid] === undefined || res.startTimes[pid] === t);
  };
  for (const pid of res.pids) {
    // One read for the start time and the name: a process may end between two reads (it is then not left over).
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const t = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    if (res.startTimes?.[pid] !== undefined && res.startTimes[pid] !== t) continue;
    left.push(`process ${pid} (${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))})`);
  }
  // Only namespaces whose holder still lives are ours for sure: once freed, the kernel gives their inode numbers
  // to new namespaces (other beds, containers). A holder's death ends the PID namespace and everything in it; the
  // other namespaces could then be held only by processes outside it, which the bed starts only as short-lived
  // nsenter/ip calls.
  const wanted = new Set(res.namespaces.filter((n) => ours(n.holderPid)).map((n) => `${n.kind}:${n.inode}`));
  if (wanted.size > 0) {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      for (const kind of NS_KINDS) {
        const inode = nsInode(entry, kind);
        if (inode !== undefined && wanted.has(`${kind}:${inode}`)) left.push(`process ${entry} in the bed's ${kind} namespace ${inode}`);
      }
    }
  }
  let links = '';
  try {
    links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  } catch {
    // No ip: nothing to compare against.
  }
  for (const name of res.linkNames) {
    if (new RegExp(`^\\d+: ${name}[@:]`, 'm').test(links)) left.push(`link ${name} in the root network namespace`);
  }
  if (slotStillClaimed(res.dir, res.owner)) left.push(`directory ${res.dir}`);
  return left;
}

/** Start a test bed. On failure everything made so far is removed before the error is thrown. */
export async function createHosts(opts: CreateHostsOptions = {}): Promise<TestBed> {
  const count = opts.count ?? 2;
  if (!Number.isInteger(count) || count < 2 || count > MAX_HOSTS) {
    throw new GodwitError(`createHosts: count must be an integer from 2 to ${MAX_HOSTS}, got ${count}`, { code: 'EUSAGE' });
  }
  if (opts.names) {
    if (opts.names.length !== count) {
      throw new GodwitError(`createHosts: ${opts.names.length} names given for ${count} hosts`, { code: 'EUSAGE' });
    }
    const bad = opts.names.find((n) => !HOSTNAME_RE.test(n));
    if (bad !== undefined) {
      throw new GodwitError(`createHosts: "${bad}" is not a valid hostname (letters, digits, '-', at most 63)`, { code: 'EUSAGE' });
    }
  }
  if (Array.isArray(opts.sshd)) {
    const bad = opts.sshd.find((i) => !Number.isInteger(i) || i < 0 || i >= count);
    if (bad !== undefined) throw new GodwitError(`createHosts: sshd host index ${bad} is not a host of ${count}`, { code: 'EUSAGE' });
  }
  if (process.getuid?.() !== 0) {
    throw new GodwitError('createHosts: the test bed needs root (namespaces, veths, sshd)', { code: 'EPERM' });
  }
  const bed = new Bed(claimSlot());
  trackBed(bed);
  try {
    await bed.build(opts);
    return bed;
  } catch (err) {
    await bed.destroy().catch(() => undefined);
    throw new GodwitError(`cannot create the test bed (${count} hosts in ${bed.subnet})`, { cause: err });
  }
}

/** Run `fn` with a fresh bed; the bed is destroyed afterwards, whether `fn` succeeds or throws. */
export async function withHosts<T>(fn: (bed: TestBed) => Promise<T>, opts: CreateHostsOptions = {}): Promise<T> {
  const bed = await createHosts(opts);
  try {
    return await fn(bed);
  } finally {
    await bed.destroy();
  }
}
