/**
 * Streamed pre-copy (migrate): each pre-copy round goes to the target as soon as it ends, while the tree runs, as
 * one image of a CRIU pre-dump chain (images/pagechain.ts):
 *
 *   pre-k/pagemap-ID.img   every page the source's store holds a copy of: the ones round k copied PE_PRESENT
 *                          (their bytes in pre-k/pages-N.gwz), the others PE_PARENT (sent, unchanged, earlier)
 *   pre-k/pages-N.gwz      the bytes round k copied, straight from the store (compressed in place)
 *   pre-k/godwit-manifest.json
 *
 * The final image marks every page whose stored copy is still clean PE_PARENT and carries only what was written
 * since its copy or never copied (FrozenPages.fresh): that is all that travels after the freeze. The receiver links
 * the chain itself (pre-k/parent -> ../pre-(k-1), parent -> pre-K): no received name is ever a link.
 *
 * Memory: a round's bytes are handed to the writer from the store and the next round starts only once the round's
 * files are sent (the transport's credit), so a page is never re-read while its previous copy is being compressed
 * and the store stays the only copy. Any failure aborts the stream: the target removes every round with the rest.
 */
import { encodeHeader, EntryEncoder } from '../images/framing';
import { PE_PARENT, PE_PRESENT } from '../images/pagemap';
import { roundDirName } from '../images/pagechain';
import { fileNameFor, kindByName } from '../images/registry';
import { GodwitError } from '../util/errors';
import type { ImageOutput } from './dump';
import type { PageRange } from './pageranges';
import type { PreCopy } from './precopy';
import { PAGE_SIZE } from './proc/pagemap';
import { Span, spanBytes, subtractSpans } from './pagestore';

/** What one streamed round sent. */
export interface RoundSent {
  round: number;
  /** Page bytes the round copied (and sent). */
  pageBytes: number;
  /** Bytes of the round's image files (pages compressed). */
  imageBytes: number;
  /** Writing and sending the round's files (the next round waits for it). */
  sendMs: number;
}

/** pagemap-ID.img: pages_id, then runs in address order. */
export function encodePagemap(imageId: number, pagesId: number, runs: { start: number; end: number; flags: number }[]): Buffer[] {
  const kind = kindByName('PAGEMAP')!;
  const enc = new EntryEncoder(kind, fileNameFor('PAGEMAP', imageId));
  const parts: Buffer[] = [encodeHeader(kind), ...enc.encode({ pages_id: pagesId })];
  for (const r of runs)
    parts.push(...enc.encode({ vaddr: BigInt(r.start), compat_nr_pages: 0, flags: r.flags, nr_pages: BigInt((r.end - r.start) / PAGE_SIZE) }));
  return parts;
}

/**
 * Sends the round that just ended as the image directory pre-<round>/ of `out`. `imageId` maps a pid to the id its
 * image files carry (the pid inside a container's pid namespace).
 */
export async function sendRound(out: ImageOutput, pc: PreCopy, round: number, imageId: (pid: number) => number): Promise<RoundSent> {
  if (!out.openSubdir) throw new GodwitError('a streamed pre-copy needs an image output with subdirectories (migrate)');
  const t0 = process.hrtime.bigint();
  const dir = out.openSubdir(roundDirName(round));
  let pageBytes = 0;
  try {
    let pagesId = 0;
    for (const pid of pc.trackedPids) {
      const { copied, stored } = pc.roundImage(pid);
      if (!stored.length) continue;
      const id = ++pagesId;
      const w = await dir.createPageWriter(id);
      await Promise.all(pc.storedData(pid, copied).map((b) => w.write(b)));
      await w.finish();
      pageBytes += spanBytes(copied);
      const runs = [
        ...copied.map((s) => ({ ...s, flags: PE_PRESENT })),
        ...subtractSpans(stored, copied).map((s) => ({ ...s, flags: PE_PARENT })),
      ].sort((a, b) => a.start - b.start);
      await dir.writeFile(fileNameFor('PAGEMAP', imageId(pid)), encodePagemap(imageId(pid), id, runs));
    }
    await dir.finish({});
  } catch (err) {
    await dir.abort();
    throw err;
  }
  return { round, pageBytes, imageBytes: dir.files.reduce((n, f) => n + f.size, 0),
    sendMs: Number(process.hrtime.bigint() - t0) / 1e6 };
}

/**
 * The final image's pagemap runs of a process: the parts of `ranges` in `fresh` (read while frozen: their bytes are
 * in the final pages file) keep their flags, the rest is PE_PARENT (a clean copy already sent in a round). Both
 * lists are in address order.
 */
export function chainPagemap(ranges: PageRange[], fresh: Span[]): PageRange[] {
  const out: PageRange[] = [];
  const push = (a: number, b: number, flags: number) => {
    if (b > a) out.push({ start: BigInt(a), nrPages: (b - a) / PAGE_SIZE, flags });
  };
  let j = 0;
  for (const r of ranges) {
    const a = Number(r.start);
    const b = a + r.nrPages * PAGE_SIZE;
    let pos = a;
    while (j < fresh.length && fresh[j]!.end <= pos) j++;
    for (let k = j; k < fresh.length && fresh[k]!.start < b; k++) {
      const s = Math.max(pos, fresh[k]!.start);
      const e = Math.min(b, fresh[k]!.end);
      push(pos, s, PE_PARENT);
      push(s, e, r.flags);
      pos = Math.max(pos, e);
    }
    push(pos, b, PE_PARENT);
  }
  return out;
}
