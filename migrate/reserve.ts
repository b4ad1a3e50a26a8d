/**
 * Memory a migration's target gets ready while the stream runs, and frees just before the restore.
 *
 * Why: the restore writes every page into memory the kernel allocates then and there (UFFDIO_COPY), inside the
 * downtime. On a VM whose free memory goes back to the hypervisor (virtio-balloon free page reporting, as on these
 * machines) the first write to such a page waits for the host: measured here, 1 GiB restored from the same image
 * in 2.7-4.4 s when only such memory was free against 0.3-0.7 s right after 1 GiB had been freed. A local restore
 * usually follows the end of some other big process; a migration's target instead needs the memory while the
 * source still holds its own copy, so it was paying the host's price in the downtime (rebuild memory 1.2-2.2 s for
 * 1 GiB). The reserve (`godwit-restorer --reserve MIB`, native/src/restore/reserve.c) faults the memory in while
 * the source still runs (a streamed pre-copy) or while the stream is on its way, and exits when the restore
 * starts: the restore's pages come from what it freed. The source gives the size (`--reserve-memory`): the tree's
 * memory as it is before the dump.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { restorerPath } from '../restore/restorer';

const MiB = 1 << 20;
/** Below this a reserve is not worth a process. */
const MIN_RESERVE = 32 * MiB;
/** Always left free on the target: a quarter of MemAvailable and at least this. */
const KEEP_FREE = 256 * MiB;

/** MemAvailable of this host, bytes (0 when unknown). */
export function memAvailable(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'latin1'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** How much of `wanted` to reserve with `available` bytes free: never so much that the host runs short. */
export function reserveSize(wanted: number, available = memAvailable()): number {
  const room = available - Math.max(KEEP_FREE, available / 4);
  const n = Math.floor(Math.min(wanted, room) / MiB) * MiB;
  return n >= MIN_RESERVE ? n : 0;
}

export class MemoryReserve {
  private readonly exited: Promise<void>;
  private done = false;
  private readonly complete: Promise<number>;
  /** Bytes faulted in, once the reserve is complete (undefined until then). */
  reserved: number | undefined;

  private constructor(private readonly child: ChildProcess, readonly bytes: number) {
    this.exited = new Promise((res) => child.once('close', () => res()));
    child.once('exit', () => (this.done = true));
    let out = '';
    this.complete = new Promise((res) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString('latin1');
        const m = /reserved (\d+)/.exec(out);
        if (m) res((this.reserved = Number(m[1])));
      });
      child.once('close', () => res(this.reserved ?? 0));
      child.once('error', () => res(0));
    });
    // Nothing of ours depends on it: a reserve that fails (cannot start, killed by the oom killer) just ends.
    child.on('error', () => (this.done = true));
  }

  /** Resolves once the memory is faulted in, with the bytes held (0 if the reserve ended without). */
  ready(): Promise<number> {
    return this.complete;
  }

  /**
   * Starts holding up to `wanted` bytes (capped by what this host can spare; undefined when that is too little).
   * The process dies with this one's main thread (PDEATHSIG) and is the oom killer's first choice.
   */
  static start(wanted: number, log?: (line: string) => void): MemoryReserve | undefined {
    const bytes = reserveSize(wanted);
    if (!bytes) {
      log?.(`no memory reserved for the restore (${(wanted / MiB).toFixed(0)} MiB wanted, ${(memAvailable() / MiB).toFixed(0)} MiB available)`);
      return undefined;
    }
    // The restorer's binary in a role of its own, named so in ps (argv0 and comm): it is not a restorer.
    const child = spawn(restorerPath(), ['--reserve', String(bytes / MiB)], { argv0: 'godwit-reserve', stdio: ['pipe', 'pipe', 'ignore'] });
    child.stdin!.on('error', () => undefined); // EPIPE once it is gone
    return new MemoryReserve(child, bytes);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Bytes held when release() was called (what the restore found ready), undefined before. */
  heldAtRelease: number | undefined;

  /** Frees the memory now (the process is killed and reaped: its pages are free when this resolves). Idempotent. */
  async release(): Promise<void> {
    if (this.heldAtRelease === undefined) this.heldAtRelease = this.reserved ?? 0;
    if (!this.done) {
      try {
        this.child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    if (this.child.pid !== undefined) await this.exited;
  }
}
