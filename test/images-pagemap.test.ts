/**
 * The pagemap + pages reader on CRIU's own dumps (the command line of the dumped programs sits in
 * their dumped stack pages) and on hand-made pagemaps with parent, lazy and absent runs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeImage } from '../images/framing';
import { readImageFile } from '../images/io';
import { PAGE_SIZE, PageReader, Pagemap, type PageSource, PE_LAZY, PE_PARENT, PE_PRESENT } from '../images/pagemap';
import { ImageError } from '../util/errors';
import { imageFromFixture } from './helpers/images';
import { fixturesDir } from './shared-dir';
import * as os from 'node:os';

const base = path.join(fixturesDir(), 'criu-4.2');

class MemorySource implements PageSource {
  reads: Array<[number, number]> = [];
  constructor(private readonly data: Buffer) {}
  get size(): number {
    return this.data.length;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    this.reads.push([offset, length]);
    if (offset + length > this.data.length) throw new ImageError('<memory>', offset, 'short');
    return this.data.subarray(offset, offset + length);
  }
}

describe('pagemap reader', () => {
  test.each([
    ['sleep', '16344', ['/usr/bin/sleep', '10000']],
    ['pipeline', '16368', ['/bin/sh', '-c', 'sleep 10000 | cat']],
  ])('%s: the argv in the dumped stack is the program\'s command line', async (dump, pid, argv) => {
    const dir = path.join(base, dump);
    const mm = (await readImageFile(path.join(dir, `mm-${pid}.img`))).entries[0].msg;
    const reader = await PageReader.open(dir, pid);
    try {
      const start = mm.mm_arg_start as bigint;
      const end = mm.mm_arg_end as bigint;
      const args = await reader.read(start, Number(end - start));
      expect(args.toString('latin1').split('\0').filter((s) => s !== '')).toEqual(argv);
      expect(reader.pagemap.lookup(start).where).toBe('pages');
      const env = await reader.read(mm.mm_env_start as bigint, Number((mm.mm_env_end as bigint) - (mm.mm_env_start as bigint)));
      expect(env.toString('latin1')).toMatch(/=/);
      // the pages file holds exactly the present runs, in order
      const pagesFile = path.join(dir, `pages-${reader.pagemap.pagesId}.img`);
      expect(fs.statSync(pagesFile).size).toBe(reader.pagemap.presentBytes);
      let total = 0;
      for await (const { run, data } of reader.runs()) {
        expect(data.length).toBe(run.nrPages * PAGE_SIZE);
        total += data.length;
      }
      expect(total).toBe(reader.pagemap.presentBytes);
    } finally {
      await reader.close();
    }
  });

  test('the same reads through godwit\'s compressed page container', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-pagemap-'));
    try {
      await imageFromFixture('sleep', dir, { chunkSize: 8192 });
      expect(fs.existsSync(path.join(dir, 'pages-1.img'))).toBe(false);
      const mm = (await readImageFile(path.join(dir, 'mm-16344.img'))).entries[0].msg;
      const packed = await PageReader.open(dir, 16344);
      const plain = await PageReader.open(path.join(base, 'sleep'), 16344);
      try {
        const start = mm.mm_arg_start as bigint;
        const n = Number((mm.mm_arg_end as bigint) - start);
        expect((await packed.read(start, n)).toString('latin1')).toBe('/usr/bin/sleep\u000010000\u0000');
        for (const run of packed.pagemap.runs) {
          if (run.pagesOffset === undefined) continue;
          expect((await packed.read(run.vaddr, run.nrPages * PAGE_SIZE)).equals(await plain.read(run.vaddr, run.nrPages * PAGE_SIZE))).toBe(true);
        }
      } finally {
        await packed.close();
        await plain.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('present, parent, lazy and absent runs; reads across runs; old-style entries', async () => {
    const P = BigInt(PAGE_SIZE);
    const img = encodeImage('PAGEMAP', [
      { type: 'pagemap_head', msg: { pages_id: 7 } },
      { type: 'pagemap_entry', msg: { vaddr: 0x10000n, compat_nr_pages: 0, flags: PE_PRESENT, nr_pages: 2n } },
      { type: 'pagemap_entry', msg: { vaddr: 0x12000n, compat_nr_pages: 0, flags: PE_PRESENT | PE_LAZY, nr_pages: 1n } },
      { type: 'pagemap_entry', msg: { vaddr: 0x20000n, compat_nr_pages: 0, flags: PE_PARENT, nr_pages: 1n } },
      { type: 'pagemap_entry', msg: { vaddr: 0x30000n, compat_nr_pages: 0, flags: PE_LAZY, nr_pages: 4n } },
      // an old image: no flags, no nr_pages
      { type: 'pagemap_entry', msg: { vaddr: 0x40000n, compat_nr_pages: 1 } },
      { type: 'pagemap_entry', msg: { vaddr: 0x50000n, compat_nr_pages: 1, in_parent: true } },
    ]);
    const { decodeImage } = await import('../images/framing');
    const pm = Pagemap.fromEntries(decodeImage(img, 'pagemap-1.img').entries, 'pagemap-1.img');
    expect(pm.pagesId).toBe(7);
    expect(pm.presentBytes).toBe(4 * PAGE_SIZE);
    const pages = Buffer.alloc(4 * PAGE_SIZE);
    for (let i = 0; i < 4; i++) pages.fill(0x41 + i, i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
    const src = new MemorySource(pages);
    const r = new PageReader(pm, src);
    expect(pm.lookup(0x10000n)).toMatchObject({ where: 'pages', offset: 0 });
    expect(pm.lookup(0x12fffn)).toMatchObject({ where: 'pages', offset: 3 * PAGE_SIZE - 1 });
    expect(pm.lookup(0x20010n).where).toBe('parent');
    expect(pm.lookup(0x33000n).where).toBe('lazy');
    expect(pm.lookup(0x34000n).where).toBe('none');
    expect(pm.lookup(0x40000n)).toMatchObject({ where: 'pages', offset: 3 * PAGE_SIZE });
    expect(pm.lookup(0x50000n).where).toBe('parent');
    expect(pm.lookup(0).where).toBe('none');
    // 8 bytes straddling the first two runs (adjacent in memory and in the pages file)
    const b = await r.read(0x11ffcn, 8);
    expect(b.toString()).toBe('BBBBCCCC');
    expect(src.reads).toEqual([[2 * PAGE_SIZE - 4, 4], [2 * PAGE_SIZE, 4]]);
    await expect(r.read(0x12000n + P - 1n, 2)).rejects.toThrow(/address 0x13000 is not in this image's pages \(not dumped\)/);
    await expect(r.read(0x20000n, 1)).rejects.toThrow(/in the parent image/);
    // a pages file shorter than the pagemap says
    expect(() => new PageReader(pm, new MemorySource(Buffer.alloc(PAGE_SIZE)))).toThrow(/needs 16384 bytes of pages but the pages file has 4096/);
  });

  test('overlapping runs and unaligned addresses are refused', async () => {
    const { decodeImage } = await import('../images/framing');
    const overlap = encodeImage('PAGEMAP', [
      { type: 'pagemap_head', msg: { pages_id: 1 } },
      { type: 'pagemap_entry', msg: { vaddr: 0x10000n, compat_nr_pages: 0, flags: PE_PRESENT, nr_pages: 2n } },
      { type: 'pagemap_entry', msg: { vaddr: 0x11000n, compat_nr_pages: 0, flags: PE_PRESENT, nr_pages: 1n } },
    ]);
    expect(() => Pagemap.fromEntries(decodeImage(overlap, 'pagemap-1.img').entries, 'pagemap-1.img')).toThrow(/overlap at 0x11000/);
    const unaligned = encodeImage('PAGEMAP', [
      { type: 'pagemap_head', msg: { pages_id: 1 } },
      { type: 'pagemap_entry', msg: { vaddr: 0x10001n, compat_nr_pages: 1 } },
    ]);
    expect(() => Pagemap.fromEntries(decodeImage(unaligned, 'pagemap-1.img').entries, 'pagemap-1.img')).toThrow(ImageError);
  });
});
