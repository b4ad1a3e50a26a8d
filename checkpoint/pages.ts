/**
 * The page path: for each process, the ranges chosen from pagemap go to the helper (process_vm_readv in large
 * batches), its bulk pipe streams the bytes here, and the page writer compresses them on the worker pool and
 * writes pages-N. pagemap-N.img lists the same ranges in the same order. Reading is what keeps the tree
 * frozen; compression and fsync may finish after the tree is resumed.
 */
import type { Helper } from '../native/helper';
import type { ImageSet } from './imageset';
import type { ProcessPlan } from './collect';
import { PAGE_SIZE } from './proc/pagemap';

/** Ranges per ReadPages request: bounds the request size while keeping round trips rare. */
const RANGES_PER_REQUEST = 4096;

export function addPagemap(images: ImageSet, plan: ProcessPlan): void {
  images.add('PAGEMAP', plan.pid, { pages_id: plan.pagesId });
  for (const r of plan.ranges)
    images.add('PAGEMAP', plan.pid, { vaddr: r.start, compat_nr_pages: 0, flags: r.flags, nr_pages: BigInt(r.nrPages) });
}

/** Reads the pages of one process into `sink`; resolves once every byte has left the target. */
export async function readProcessPages(
  helper: Helper,
  plan: ProcessPlan,
  sink: (chunk: Buffer) => Promise<void> | void,
): Promise<bigint> {
  let total = 0n;
  for (let i = 0; i < plan.ranges.length; i += RANGES_PER_REQUEST) {
    const batch = plan.ranges.slice(i, i + RANGES_PER_REQUEST);
    const r = await helper.readPages(
      plan.pid,
      batch.map((x) => ({ start: x.start, length: BigInt(x.nrPages * PAGE_SIZE) })),
      sink,
    );
    total += r.bytes;
  }
  return total;
}

/** The plan's ranges in bytes, for the /proc/PID/mem reader. */
export function pageRangesBytes(plan: ProcessPlan): { start: bigint; bytes: number }[] {
  return plan.ranges.map((r) => ({ start: r.start, bytes: r.nrPages * PAGE_SIZE }));
}
