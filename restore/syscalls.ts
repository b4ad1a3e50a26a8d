/**
 * Batches of syscalls injected into one restored thread in one round trip to the restorer. Arguments are
 * immediates, pointers into the batch's scratch data (copied into the task's trampoline scratch area), or
 * the result of an earlier call of the same batch (an fd from openat fed to mmap, say).
 */
import { Op, Restorer, RestorerError } from './restorer';
import { SysError } from '../util/errors';

/** x86_64 syscall numbers used by restore. */
export const NR = {
  read: 0, write: 1, close: 3, lseek: 8, mmap: 9, mprotect: 10, munmap: 11, rt_sigaction: 13, madvise: 28,
  setitimer: 38, fcntl: 72, chdir: 80, fchdir: 81, umask: 95, setpgid: 109, setsid: 112, setgroups: 116,
  setresuid: 117, setresgid: 119, rt_sigqueueinfo: 129, capset: 126, sigaltstack: 131, prctl: 157,
  arch_prctl: 158, chroot: 161, set_tid_address: 218, timer_create: 222, timer_settime: 223,
  set_robust_list: 273, dup3: 292, rt_tgsigqueueinfo: 297, rseq: 334, pidfd_open: 434, shmat: 30,
  close_range: 436, pidfd_getfd: 438, personality: 135, userfaultfd: 323, ioctl: 16, eventfd2: 290,
  signalfd4: 289, timerfd_create: 283, timerfd_settime: 286, inotify_init1: 294, inotify_add_watch: 254,
  inotify_rm_watch: 255, unlinkat: 263, socket: 41, connect: 42, accept4: 288, sendto: 44, bind: 49,
  listen: 50, socketpair: 53, setsockopt: 54, getsockopt: 55, shutdown: 48, epoll_create1: 291, epoll_ctl: 233, open_by_handle_at: 304, openat: 257,
  // coverage: shared memory, seccomp, ttys, locks
  memfd_create: 319, ftruncate: 77, pwrite64: 18, fchown: 93, seccomp: 317, flock: 73, mkdirat: 258,
  fchmod: 91, utimensat: 280, fchmodat: 268, fchownat: 260, sched_setscheduler: 144, sched_setaffinity: 203, setpriority: 141,
  mknodat: 259, mlock: 149, setfsuid: 122, setfsgid: 123, membarrier: 324, poll: 7,
  io_setup: 206, io_destroy: 207, io_getevents: 208, io_submit: 209, mremap: 25,
} as const;
export type SyscallName = keyof typeof NR;

/**
 * PATH as the host sees it, for a call run in the restorer itself (runLocal): its cwd stays the root it
 * started in (native/src/restore/main.c), so the relative path resolves there, also once the restorer has
 * joined a container's mount namespace, where "/" and /proc are the container's and its /proc/self does not
 * exist. Absolute paths in a batch remain the restored tree's view. Meaningless in a batch run in a task.
 */
export function hostPath(p: string): string {
  const rel = p.replace(/^\/+/, '');
  return rel || '.';
}

export interface ScratchRef {
  scratch: number;
}
export interface ResultRef {
  result: number;
}
export type Arg = bigint | number | ScratchRef | ResultRef;

const ARG_SCRATCH = 1;
const ARG_RESULT = 2;
const ALLOW_FAIL = 1 << 12;
const CALL_SIZE = 56;

interface Call {
  name: SyscallName;
  nr: number;
  flags: number;
  args: bigint[];
  what: string;
}

export class Batch {
  private parts: Buffer[] = [];
  private size = 0;
  readonly calls: Call[] = [];

  get length(): number {
    return this.calls.length;
  }

  /** Copies `b` into the scratch area (8-byte aligned) and returns a pointer argument to it. */
  data(b: Buffer): ScratchRef {
    const pad = (8 - (this.size % 8)) % 8;
    if (pad) this.parts.push(Buffer.alloc(pad));
    const at = this.size + pad;
    this.parts.push(b);
    this.size = at + b.length;
    return { scratch: at };
  }

  /** A NUL-terminated string in the scratch area. */
  str(s: string): ScratchRef {
    return this.data(Buffer.from(s + '\0'));
  }

  get scratchSize(): number {
    return this.size;
  }

  /** Adds a call; `what` says what it is for, for error messages. Returns a reference to its result. */
  call(name: SyscallName, args: Arg[], what: string, opts: { allowFail?: boolean } = {}): ResultRef {
    let flags = opts.allowFail ? ALLOW_FAIL : 0;
    const vals: bigint[] = [];
    for (let k = 0; k < 6; k++) {
      const a = args[k] ?? 0n;
      if (typeof a === 'bigint') vals.push(BigInt.asUintN(64, a));
      else if (typeof a === 'number') vals.push(BigInt.asUintN(64, BigInt(a)));
      else if ('scratch' in a) {
        flags |= ARG_SCRATCH << (2 * k);
        vals.push(BigInt(a.scratch));
      } else {
        if (a.result >= this.calls.length) throw new Error(`batch: call ${name} refers to a later result`);
        flags |= ARG_RESULT << (2 * k);
        vals.push(BigInt(a.result));
      }
    }
    this.calls.push({ name, nr: NR[name], flags, args: vals, what });
    return { result: this.calls.length - 1 };
  }

  encode(tid: number): Buffer {
    const head = Buffer.alloc(12);
    head.writeInt32LE(tid, 0);
    head.writeUInt32LE(this.calls.length, 4);
    head.writeUInt32LE(this.size, 8);
    const calls = Buffer.alloc(CALL_SIZE * this.calls.length);
    this.calls.forEach((c, i) => {
      const o = i * CALL_SIZE;
      calls.writeUInt32LE(c.nr, o);
      calls.writeUInt32LE(c.flags, o + 4);
      c.args.forEach((v, k) => calls.writeBigUInt64LE(v, o + 8 + 8 * k));
    });
    return Buffer.concat([head, ...this.parts, calls]);
  }
}

/**
 * Brings fds of the restorer into the task that runs batch `b` (pidfd_getfd), each once per batch; `closeAll()`
 * adds the closes at the end of the batch. In a container's pid namespace the restorer is invisible (pid 1 there
 * is the tree's root): `keptPidfd` is the pidfd of it that the stubs kept, which installFds closes later.
 */
export function restorerFetcher(b: Batch, restorerPid: number, keptPidfd: number | undefined) {
  let pidfd: ResultRef | number | undefined;
  const fds = new Map<number, ResultRef>();
  return {
    get(fd: number, what: string): ResultRef {
      let got = fds.get(fd);
      if (!got) {
        pidfd ??= keptPidfd ?? b.call('pidfd_open', [restorerPid, 0], 'open a pidfd of the restorer');
        got = b.call('pidfd_getfd', [pidfd, fd, 0], `fetch ${what}`);
        fds.set(fd, got);
      }
      return got;
    },
    closeAll(): void {
      for (const fd of fds.values()) b.call('close', [fd], 'close an fd fetched from the restorer');
      if (pidfd !== undefined && pidfd !== keptPidfd) b.call('close', [pidfd], 'close the pidfd of the restorer');
    },
  };
}

export type RestorerFetcher = ReturnType<typeof restorerFetcher>;

/** Runs a batch in thread `tid`; the results are the raw return values (negative errno where allowed). */
export async function runBatch(r: Restorer, tid: number, b: Batch): Promise<bigint[]> {
  if (b.length === 0) return [];
  try {
    const out = await r.request(Op.SYSCALLS, b.encode(tid), `injected syscalls in ${tid}`);
    const n = out.readUInt32LE(0);
    const res: bigint[] = [];
    for (let i = 0; i < n; i++) res.push(out.readBigInt64LE(4 + 8 * i));
    return res;
  } catch (e) {
    const payload = (e as { payload?: Buffer }).payload;
    if (e instanceof RestorerError && e.syscall === 'injected' && payload && payload.length >= 4) {
      const c = b.calls[payload.readUInt32LE(0)];
      if (c) throw new SysError({ errno: e.errno, syscall: c.name, pid: tid, what: c.what }, { cause: e });
    }
    throw e;
  }
}

/** Runs a batch in the restorer itself (objects the tasks will share); returns results and the scratch after. */
export async function runLocal(r: Restorer, b: Batch, what: string): Promise<{ results: bigint[]; scratch: Buffer }> {
  try {
    const out = await r.request(Op.LOCAL, b.encode(0), what);
    const n = out.readUInt32LE(0);
    const results: bigint[] = [];
    for (let i = 0; i < n; i++) results.push(out.readBigInt64LE(4 + 8 * i));
    return { results, scratch: out.subarray(4 + 8 * n) };
  } catch (e) {
    const payload = (e as { payload?: Buffer }).payload;
    if (e instanceof RestorerError && e.syscall === 'injected' && payload && payload.length >= 4) {
      const c = b.calls[payload.readUInt32LE(0)];
      if (c) throw new SysError({ errno: e.errno, syscall: c.name, what: `${what}: ${c.what}` }, { cause: e });
    }
    throw e;
  }
}
