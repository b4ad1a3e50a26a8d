import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ContainerReader } from '../images/container-reader';
import { CHUNK_HEADER_SIZE } from '../images/container-format';
import { MANIFEST_NAME } from '../images/manifest';
import type { VerifyReport } from '../images/verify';
import { criuFixture } from './helpers/fixtures';
import { godwit, imageFromFixture } from './helpers/images';

let tmp: string;
let good: string;
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-verify-'));
  good = path.join(tmp, 'good');
  // Small chunks so the fixture's pages span many chunks.
  await imageFromFixture('pipeline', good, { chunkSize: 4096 });
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function copyOfGood(): string {
  const d = path.join(tmp, `c${n++}`);
  fs.cpSync(good, d, { recursive: true });
  return d;
}

function verifyJson(dir: string): { status: number | null; report: VerifyReport; stderr: string } {
  const r = godwit('verify', dir, '--json');
  return { status: r.status, report: JSON.parse(r.stdout) as VerifyReport, stderr: r.stderr };
}

async function spans(file: string): Promise<Array<[number, number]>> {
  const r = await ContainerReader.open(file);
  const s = r.chunks.map((c) => [c.fileOffset, CHUNK_HEADER_SIZE + c.compressedLength] as [number, number]);
  await r.close();
  return s;
}

describe('godwit verify', () => {
  test('a good image: exit 0, every file and chunk checked', () => {
    const { status, report } = verifyJson(good);
    expect(report.problems).toEqual([]);
    expect(status).toBe(0);
    expect(report.ok).toBe(true);
    const src = fs.readdirSync(criuFixture('pipeline'));
    expect(report.checked.files).toBe(src.length);
    expect(report.checked.containers).toBe(3);
    const pagesBytes = src.filter((f) => f.startsWith('pages-')).reduce((s, f) => s + fs.statSync(path.join(criuFixture('pipeline'), f)).size, 0);
    expect(report.checked.pagesBytes).toBe(pagesBytes);
    expect(report.checked.chunks).toBe(pagesBytes / 4096);
    expect(report.made?.options).toEqual({ fixture: 'pipeline' });
    const text = godwit('verify', good);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`: OK: ${src.length} files, .*; 3 page containers \\(${pagesBytes / 4096} chunks\\)`));
  });

  test('a flipped byte in a chunk: the chunk, its offset, and the file checksum', async () => {
    const d = copyOfGood();
    const f = path.join(d, 'pages-1.gwz');
    const [off] = (await spans(f))[3]!;
    const b = fs.readFileSync(f);
    b[off + CHUNK_HEADER_SIZE + 5]! ^= 0xff;
    fs.writeFileSync(f, b);
    const { status, report, stderr } = verifyJson(d);
    expect(status).toBe(1);
    expect(stderr).toMatch(/verify: .* has 2 problems/);
    expect(report.problems).toEqual([
      { file: 'pages-1.gwz', problem: expect.stringMatching(/^crc32 is [0-9a-f]{8}, the manifest says [0-9a-f]{8} \(changed after the image was made\)$/) },
      { file: 'pages-1.gwz', offset: off + CHUNK_HEADER_SIZE, problem: expect.stringMatching(/^chunk 3 checksum mismatch: expected crc32 [0-9a-f]{8}, the \d+ bytes give [0-9a-f]{8}$/) },
    ]);
    const text = godwit('verify', d);
    expect(text.stdout).toMatch(new RegExp(`- pages-1\\.gwz at offset ${off + CHUNK_HEADER_SIZE}: chunk 3 checksum mismatch`));
  });

  test('two chunks reordered', async () => {
    const d = copyOfGood();
    const f = path.join(d, 'pages-2.gwz');
    const s = await spans(f);
    const b = fs.readFileSync(f);
    const [o1, l1] = s[0]!;
    const [o2, l2] = s[1]!;
    fs.writeFileSync(f, Buffer.concat([b.subarray(0, o1), b.subarray(o2, o2 + l2), b.subarray(o1, o1 + l1), b.subarray(o2 + l2)]));
    const { status, report } = verifyJson(d);
    expect(status).toBe(1);
    expect(report.problems).toContainEqual({ file: 'pages-2.gwz', offset: o1, problem: 'found chunk 1 where the index has chunk 0 (chunks reordered, missing or duplicated)' });
  });

  test('a truncated container', () => {
    const d = copyOfGood();
    const f = path.join(d, 'pages-3.gwz');
    const size = fs.statSync(f).size;
    fs.truncateSync(f, size - 100);
    const { status, report } = verifyJson(d);
    expect(status).toBe(1);
    expect(report.problems).toEqual([
      { file: 'pages-3.gwz', offset: size - 100, problem: `file is ${size - 100} bytes, the manifest says ${size} (truncated)` },
      { file: 'pages-3.gwz', offset: size - 132, problem: 'expected trailer magic "GWZTRAIL" in the last 32 bytes: the file is truncated or was not finished' },
    ]);
  });

  test('the manifest dropped', () => {
    const d = copyOfGood();
    fs.rmSync(path.join(d, MANIFEST_NAME));
    const { status, report } = verifyJson(d);
    expect(status).toBe(1);
    expect(report.problems).toEqual([
      { file: MANIFEST_NAME, problem: expect.stringMatching(/^no godwit-manifest\.json: not a complete godwit image/) },
    ]);
  });

  test('a file changed after the manifest: same size, other size, a file added, a file removed', () => {
    const d = copyOfGood();
    const core = path.join(d, 'core-16371.img');
    const b = fs.readFileSync(core);
    b[100]! ^= 1;
    fs.writeFileSync(core, b);
    fs.appendFileSync(path.join(d, 'files.img'), 'x');
    fs.writeFileSync(path.join(d, 'extra.img'), 'x');
    fs.writeFileSync(path.join(d, '.core-1.img.partial'), 'x');
    fs.rmSync(path.join(d, 'fs-16372.img'));
    const { status, report } = verifyJson(d);
    expect(status).toBe(1);
    const size = fs.statSync(path.join(good, 'files.img')).size;
    expect(report.problems).toEqual(
      expect.arrayContaining([
        { file: 'fs-16372.img', problem: 'listed in the manifest but missing from the directory' },
        { file: 'extra.img', problem: 'not listed in the manifest (added after the image was made?)' },
        { file: '.core-1.img.partial', problem: 'a partly written file left by an interrupted write' },
        { file: 'core-16371.img', problem: expect.stringMatching(/^crc32 is .* \(changed after the image was made\)$/) },
        { file: 'files.img', offset: size, problem: `file is ${size + 1} bytes, the manifest says ${size}` },
        // The content checks see the same damage from their side.
        { file: 'files.img', offset: size, problem: expect.stringMatching(/^expected length of entry \d+, but the file ends/) },
        { file: 'extra.img', problem: 'not an image file kind godwit knows: its content cannot be checked' },
      ]),
    );
    expect(report.problems.length).toBe(7);
  });

  test('an image file that does not decode: named with the offset', () => {
    const d = copyOfGood();
    const f = path.join(d, 'core-16372.img');
    const size = fs.statSync(f).size;
    fs.truncateSync(f, size - 10);
    const { status, report } = verifyJson(d);
    expect(status).toBe(1);
    expect(report.problems).toEqual([
      { file: 'core-16372.img', offset: size - 10, problem: `file is ${size - 10} bytes, the manifest says ${size} (truncated)` },
      { file: 'core-16372.img', offset: expect.any(Number), problem: expect.stringMatching(/^expected entry 0 .* but the file ends|file ends/) },
    ]);
  });

  test('pagemaps that do not add up to their pages, and a pages file no pagemap names', async () => {
    const d = path.join(tmp, 'short-pages');
    // A consistent image (manifest and checksums right) whose pages-2 lacks its last page.
    await imageFromFixture('pipeline', d, {}, (f, b) => (f === 'pages-2.img' ? b.subarray(0, b.length - 4096) : b));
    let r = verifyJson(d);
    expect(r.status).toBe(1);
    const size2 = fs.statSync(path.join(criuFixture('pipeline'), 'pages-2.img')).size;
    expect(r.report.problems).toEqual([
      { file: 'pagemap-16371.img', problem: `lists ${size2 / 4096} present pages (${size2} bytes) but pages-2.gwz holds ${size2 - 4096} bytes of pages` },
    ]);
    const e = path.join(tmp, 'no-pagemap');
    await imageFromFixture('pipeline', e, {}, (f, b) => b);
    fs.rmSync(path.join(e, 'pagemap-16372.img'));
    r = verifyJson(e);
    expect(r.report.problems).toEqual([
      { file: 'pagemap-16372.img', problem: 'listed in the manifest but missing from the directory' },
      { file: 'pages-3.gwz', problem: 'no pagemap refers to this pages file' },
    ]);
  });

  test("CRIU's own dump: everything decodes and adds up; only the manifest is missing", () => {
    const { status, report } = verifyJson(criuFixture('pipeline'));
    expect(status).toBe(1);
    expect(report.checked.decoded).toBe(25);
    expect(report.problems.map((p) => p.file)).toEqual([MANIFEST_NAME]);
  });

  test('not a directory, no such directory: clear errors, exit 1', () => {
    const r = godwit('verify', path.join(tmp, 'nope'));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/read image directory: stat failed: ENOENT/);
    const f = path.join(tmp, 'afile');
    fs.writeFileSync(f, '');
    expect(godwit('verify', f).stderr).toMatch(/is not a directory/);
    expect(godwit('verify').status).toBe(2);
  });
});
