/**
 * The content checks of `godwit verify` (verify.ts): every CRIU image file of a directory decodes, and each
 * pagemap's present pages add up to exactly the page data of the pages file it names.
 */
import * as path from 'node:path';
import { ImageReader } from './io';
import { critMagicName, kindByFileName } from './registry';
import { MANIFEST_NAME } from './manifest';
import { containerName, plainPagesName } from './container-format';
import { VerifyProblem, problemOf } from './verify-problem';

const PAGE_SIZE = 4096;
// pmap.flags (see pagemap.ts): only runs present here and not in a parent image have bytes in this pages file.
const PE_PARENT = 1;
const PE_PRESENT = 4;

interface PagemapSummary {
  file: string;
  pagesId: number;
  presentPages: number;
}

/**
 * Decodes each file of `names` (in `dir`) that is a CRIU image; returns how many were decoded. `pagesBytesOf`
 * maps pages file names (pages-N.img / pages-N.gwz) to the bytes of page data they hold (undefined: unreadable).
 */
export async function checkImageFiles(
  dir: string,
  names: string[],
  pagesBytesOf: Map<string, number | undefined>,
  problems: VerifyProblem[],
): Promise<number> {
  let decoded = 0;
  const pagemaps: PagemapSummary[] = [];
  for (const name of names) {
    if (name === MANIFEST_NAME || name.startsWith('.')) continue;
    const kind = kindByFileName(name);
    if (!kind) {
      problems.push({ file: name, problem: 'not an image file kind godwit knows: its content cannot be checked' });
      continue;
    }
    if (kind.magic === 0) continue; // raw data (pages are checked by size against the pagemaps)
    const isPagemap = critMagicName(kind) === 'PAGEMAP';
    let summary: PagemapSummary | undefined;
    let reader: ImageReader | undefined;
    try {
      reader = await ImageReader.open(path.join(dir, name));
      let index = 0;
      for await (const e of reader) {
        if (isPagemap) {
          const m = e.msg;
          if (index === 0) summary = { file: name, pagesId: Number(m.pages_id), presentPages: 0 };
          else if (summary) {
            const flags = m.flags !== undefined ? Number(m.flags) : m.in_parent === true ? PE_PARENT : PE_PRESENT;
            const nr = m.nr_pages !== undefined ? Number(m.nr_pages as bigint) : Number(m.compat_nr_pages);
            if (flags & PE_PRESENT && !(flags & PE_PARENT)) summary.presentPages += nr;
          }
        }
        index++;
      }
      decoded++;
      if (summary) pagemaps.push(summary);
    } catch (err) {
      problems.push(problemOf(err, name));
    }
  }

  const used = new Set<string>();
  for (const pm of pagemaps) {
    const candidates = [plainPagesName(pm.pagesId), containerName(pm.pagesId)].filter((n) => pagesBytesOf.has(n));
    if (candidates.length === 0) {
      problems.push({ file: pm.file, problem: `refers to pages id ${pm.pagesId}, but neither ${plainPagesName(pm.pagesId)} nor ${containerName(pm.pagesId)} is there` });
      continue;
    }
    for (const c of candidates) {
      used.add(c);
      const have = pagesBytesOf.get(c);
      if (have === undefined) continue; // unreadable: reported already
      const want = pm.presentPages * PAGE_SIZE;
      if (have !== want) {
        problems.push({ file: pm.file, problem: `lists ${pm.presentPages} present pages (${want} bytes) but ${c} holds ${have} bytes of pages` });
      }
    }
  }
  for (const name of pagesBytesOf.keys()) {
    if (!used.has(name) && pagemaps.length > 0) problems.push({ file: name, problem: 'no pagemap refers to this pages file' });
  }
  return decoded;
}
