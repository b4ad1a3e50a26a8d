/**
 * The pre-dump chain on its own (images/pagechain.ts, checkpoint/precopy-chain.ts): pagemaps written by the streamed
 * pre-copy's encoder, resolved through real `parent` links on disk; the final pagemap's split; the receiver's linking.
 * The whole path (migrate, restore of the chain, a broken chain) runs in test/migrate.test.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chainPagemap, encodePagemap } from '../checkpoint/precopy-chain';
import { linkPreDumpChain, PageChain, pagemapOf } from '../images/pagechain';
import { decodeImage } from '../images/framing';
import { PE_LAZY, PE_PARENT, PE_PRESENT } from '../images/pagemap';

const P = 4096;
let root: string;

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-pagechain-'));
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

type Run = [start: number, pages: number, flags: number];

function writeLevel(dir: string, pagesId: number, runs: Run[]): void {
  fs.mkdirSync(dir, { recursive: true });
  const parts = encodePagemap(7, pagesId, runs.map(([s, n, flags]) => ({ start: s * P, end: (s + n) * P, flags })));
  fs.writeFileSync(path.join(dir, 'pagemap-7.img'), Buffer.concat(parts));
}

function resolveTop(dir: string) {
  const file = 'pagemap-7.img';
  const msgs = decodeImage(fs.readFileSync(path.join(dir, file)), file).entries.map((e) => e.msg);
  const r = new PageChain(dir).resolve(pagemapOf(msgs, file), file);
  return {
    pieces: r.pieces.map((p) => [Number(p.addr) / P, Number(p.len) / P, Number(p.off) / P, p.level]),
    levels: r.levels.map((l) => [path.relative(root, l.dir), l.pagesId]),
  };
}

test('runs resolve through three images to the one holding each page, at its offset there', () => {
  // pre-1 copied pages 100-109; pre-2 re-copied 102-103 (written since); the final image holds 105 (written again).
  writeLevel(path.join(root, 'pre-1'), 1, [[100, 10, PE_PRESENT]]);
  writeLevel(path.join(root, 'pre-2'), 3, [[100, 2, PE_PARENT], [102, 2, PE_PRESENT], [104, 6, PE_PARENT]]);
  writeLevel(root, 1, [[90, 2, PE_PRESENT | PE_LAZY], [100, 5, PE_PARENT], [105, 1, PE_PRESENT], [106, 4, PE_PARENT]]);
  fs.symlinkSync('../pre-1', path.join(root, 'pre-2', 'parent'));
  fs.symlinkSync('pre-2', path.join(root, 'parent'));
  expect(resolveTop(root)).toEqual({
    pieces: [[90, 2, 0, 0], [100, 2, 0, 2], [102, 2, 0, 1], [104, 1, 4, 2], [105, 1, 2, 0], [106, 4, 6, 2]],
    levels: [['', 1], ['pre-2', 3], ['pre-1', 1]],
  });
});

test('a broken chain is an error naming the directory and the pages', () => {
  writeLevel(root, 1, [[100, 4, PE_PARENT]]);
  expect(() => resolveTop(root)).toThrow(/pagemap-7\.img marks pages 0x64000-0x68000 as in the parent image, but \S+ has no `parent` link/);
  fs.symlinkSync('pre-9', path.join(root, 'parent'));
  expect(() => resolveTop(root)).toThrow(/parent -> pre-9 is not an image directory: the pre-dump chain is broken/);
  fs.unlinkSync(path.join(root, 'parent'));
  fs.mkdirSync(path.join(root, 'pre-1'));
  fs.symlinkSync('pre-1', path.join(root, 'parent'));
  expect(() => resolveTop(root)).toThrow(/but the parent \S+pre-1 has no pagemap-7\.img/);
  writeLevel(path.join(root, 'pre-1'), 1, [[100, 2, PE_PRESENT]]);
  expect(() => resolveTop(root)).toThrow(/marks pages 0x66000-0x68000 as in the parent image, but \S+pre-1\/pagemap-7\.img does not hold them/);
  writeLevel(path.join(root, 'pre-1'), 1, [[100, 4, PE_PARENT]]);
  fs.symlinkSync('..', path.join(root, 'pre-1', 'parent'));
  expect(() => resolveTop(root)).toThrow(/the parent chain loops/);
});

test("the final pagemap: what was read while frozen keeps its flags, the rest is the parent's", () => {
  const r = (s: number, n: number, flags = PE_PRESENT | PE_LAZY) => ({ start: BigInt(s * P), nrPages: n, flags });
  const span = (a: number, b: number) => ({ start: a * P, end: b * P });
  expect(chainPagemap([r(10, 10), r(30, 2), r(40, 1)], [span(12, 14), span(19, 31), span(50, 60)])).toEqual([
    r(10, 2, PE_PARENT), r(12, 2), r(14, 5, PE_PARENT), r(19, 1), r(30, 1), r(31, 1, PE_PARENT), r(40, 1, PE_PARENT),
  ]);
  expect(chainPagemap([r(10, 4)], [])).toEqual([r(10, 4, PE_PARENT)]);
  expect(chainPagemap([r(10, 4)], [span(0, 100)])).toEqual([r(10, 4)]);
});

test('the receiver links rounds pre-1..pre-K and refuses anything else named like a round', async () => {
  expect(await linkPreDumpChain(root)).toBe(0);
  expect(fs.existsSync(path.join(root, 'parent'))).toBe(false);
  for (const k of [1, 2, 3]) fs.mkdirSync(path.join(root, `pre-${k}`));
  expect(await linkPreDumpChain(root)).toBe(3);
  expect(fs.readlinkSync(path.join(root, 'parent'))).toBe('pre-3');
  expect(fs.readlinkSync(path.join(root, 'pre-3', 'parent'))).toBe('../pre-2');
  expect(fs.readlinkSync(path.join(root, 'pre-2', 'parent'))).toBe('../pre-1');
  expect(fs.existsSync(path.join(root, 'pre-1', 'parent'))).toBe(false);

  const gap = fs.mkdtempSync(path.join(root, 'gap-'));
  fs.mkdirSync(path.join(gap, 'pre-1'));
  fs.mkdirSync(path.join(gap, 'pre-3'));
  await expect(linkPreDumpChain(gap)).rejects.toThrow(/pre-copy rounds 1, 3 are not 1\.\.2: round 2 is missing/);
  const file = fs.mkdtempSync(path.join(root, 'file-'));
  fs.writeFileSync(path.join(file, 'pre-1'), '');
  await expect(linkPreDumpChain(file)).rejects.toThrow(/pre-1 is not a directory/);
});
