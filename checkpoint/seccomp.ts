/**
 * seccomp.img: every seccomp filter of the tree once, as CRIU writes it: a list of filters (struct
 * sock_filter[] bytes, flags), each naming the filter installed before it (`prev`, an index into the list);
 * thread_core.seccomp_filter is the index of a thread's newest filter. Threads synchronised with TSYNC and
 * children that inherited their parent's filters share the chain, so equal chains (same filters, same order)
 * are stored once.
 *
 * The helper reads the filters with PTRACE_SECCOMP_GET_FILTER (index 0 is the oldest) and their flags with
 * PTRACE_SECCOMP_GET_METADATA while the tree is seized with PTRACE_O_SUSPEND_SECCOMP.
 */
import { GodwitError } from '../util/errors';
import type { ThreadRegs } from '../native/helper';

export const SECCOMP_MODE_STRICT = 1;
export const SECCOMP_MODE_FILTER = 2;
/** A filter made with this flag hands its notifications to a listener fd, which cannot be recreated. */
const SECCOMP_FILTER_FLAG_NEW_LISTENER = 1n << 3n;

interface Filter {
  filter: Buffer;
  flags: bigint;
  prev?: number;
}

export class SeccompTable {
  private filters: Filter[] = [];
  /** `${prev}:${flags}:${hex}` -> index: one entry per distinct chain link. */
  private byKey = new Map<string, number>();

  get size(): number {
    return this.filters.length;
  }

  /**
   * Sets thread_core.seccomp_mode / seccomp_filter of one thread from its status and its filters. `mode` is
   * /proc's Seccomp field (0 none, 1 strict, 2 filter).
   */
  assign(pid: number, tid: number, mode: number, regs: ThreadRegs, threadCore: Record<string, unknown>): void {
    if (mode === 0) return;
    threadCore.seccomp_mode = mode;
    if (mode !== SECCOMP_MODE_FILTER) return;
    const oldestFirst = regs.seccompFilters ?? [];
    if (oldestFirst.length === 0)
      throw new GodwitError(`pid ${pid} thread ${tid}: in seccomp filter mode but the kernel returned no filter (PTRACE_SECCOMP_GET_FILTER needs CAP_SYS_ADMIN and a kernel with CONFIG_CHECKPOINT_RESTORE)`);
    const flags = regs.seccompFlags ?? [];
    let prev: number | undefined;
    for (let i = 0; i < oldestFirst.length; i++) {
      const f = oldestFirst[i];
      const fl = flags[i] ?? 0n;
      if (fl & SECCOMP_FILTER_FLAG_NEW_LISTENER)
        throw new GodwitError(`pid ${pid} thread ${tid}: seccomp filter ${i} has a user-notification listener (SECCOMP_FILTER_FLAG_NEW_LISTENER), which cannot be checkpointed yet`);
      if (f.length === 0 || f.length % 8 !== 0)
        throw new GodwitError(`pid ${pid} thread ${tid}: seccomp filter ${i} is ${f.length} bytes, not whole BPF instructions`);
      const key = `${prev ?? ''}:${fl}:${f.toString('hex')}`;
      let id = this.byKey.get(key);
      if (id === undefined) {
        id = this.filters.length;
        this.filters.push({ filter: f, flags: fl, ...(prev !== undefined ? { prev } : {}) });
        this.byKey.set(key, id);
      }
      prev = id;
    }
    threadCore.seccomp_filter = prev;
  }

  /** The seccomp.img entry (an empty one when no thread has filters, as CRIU writes it). */
  entry(): Record<string, unknown> {
    if (!this.filters.length) return {};
    return {
      seccomp_filters: this.filters.map((f) => ({
        filter: f.filter,
        ...(f.prev !== undefined ? { prev: f.prev } : {}),
        ...(f.flags ? { flags: Number(f.flags) } : {}),
      })),
    };
  }
}
