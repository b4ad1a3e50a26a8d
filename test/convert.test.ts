import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { convertImageDir } from '../images/convert';
import { readManifest } from '../images/manifest';
import { verifyImageDir } from '../images/verify';
import { criuFixture } from './helpers/fixtures';
import { godwit, imageFromFixture, sameFiles } from './helpers/images';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-convert-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => path.join(tmp, `d${n++}`);

describe('godwit convert', () => {
  test('--to criu gives the same CRIU files a --compress none dump writes, and --to godwit goes back', async () => {
    const packed = fresh();
    const plain = fresh();
    await imageFromFixture('pipeline', packed, { chunkSize: 8192 });
    await imageFromFixture('pipeline', plain, { compress: 'none' });
    expect(fs.readdirSync(packed).filter((f) => f.endsWith('.gwz')).length).toBe(3);

    const out = fresh();
    const r = godwit('convert', packed, '--to', 'criu', '--out', out);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/pages-1\.gwz -> pages-1\.img/);
    // Byte-identical to the uncompressed dump and to CRIU's own files.
    expect(sameFiles(plain, out)).toEqual([]);
    expect(sameFiles(criuFixture('pipeline'), out)).toEqual([]);
    expect((await verifyImageDir(out)).problems).toEqual([]);
    const m = await readManifest(out);
    expect(m.made.compression).toBe('none');
    expect(m.made.convertedFrom?.compression).toBe('zstd');
    expect(m.made.options).toEqual({ fixture: 'pipeline' });
    expect(m.made.level).toBeUndefined();

    const back = fresh();
    expect(godwit('convert', out, '--to', 'godwit', '--out', back, '--chunk-size', '8192').status).toBe(0);
    expect(sameFiles(packed, back)).toEqual([]); // same settings: the very same containers
    expect((await verifyImageDir(back)).ok).toBe(true);
  });

  test('in place, both ways; the manifest always describes complete files', async () => {
    const d = fresh();
    await imageFromFixture('sleep', d);
    const r1 = await convertImageDir(d, { to: 'criu' });
    expect(r1.converted.map((c) => c.to)).toEqual(['pages-1.img']);
    expect(fs.existsSync(path.join(d, 'pages-1.gwz'))).toBe(false);
    expect(sameFiles(criuFixture('sleep'), d)).toEqual([]);
    expect((await verifyImageDir(d)).problems).toEqual([]);
    const r2 = await convertImageDir(d, { to: 'godwit' });
    expect(r2.converted.map((c) => c.to)).toEqual(['pages-1.gwz']);
    expect((await verifyImageDir(d)).problems).toEqual([]);
    expect(fs.readdirSync(d).filter((f) => f.startsWith('.'))).toEqual([]);
    const again = godwit('convert', d, '--to', 'godwit');
    expect(again.status).toBe(0);
    expect(again.stdout).toMatch(/no pages file needed converting \(already godwit layout\)/);
  });

  test("CRIU's own dump (no manifest) converts to godwit and back to the same bytes", async () => {
    const packed = fresh();
    const r = await convertImageDir(criuFixture('pipeline'), { to: 'godwit', out: packed });
    expect(r.converted.length).toBe(3);
    expect((await verifyImageDir(packed)).problems).toEqual([]);
    const plain = fresh();
    await convertImageDir(packed, { to: 'criu', out: plain });
    expect(sameFiles(criuFixture('pipeline'), plain)).toEqual([]);
  });

  test('a damaged source is not converted, and nothing is left behind', async () => {
    const d = fresh();
    await imageFromFixture('sleep', d);
    const f = path.join(d, 'pages-1.gwz');
    const b = fs.readFileSync(f);
    b[b.length - 40]! ^= 1; // in the index
    fs.writeFileSync(f, b);
    const out = fresh();
    const r = godwit('convert', d, '--to', 'criu', '--out', out);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/pages-1\.gwz: at offset 0: crc32 is [0-9a-f]{8}, the manifest says [0-9a-f]{8}: not converting a damaged image \(run godwit verify\)/);
    expect(fs.existsSync(out)).toBe(false);
    const before = fs.readdirSync(d).sort();
    expect(godwit('convert', d, '--to', 'criu').status).toBe(1);
    expect(fs.readdirSync(d).sort()).toEqual(before);
  });

  test('bad usage', () => {
    expect(godwit('convert', tmp).status).toBe(2); // --to missing
    expect(godwit('convert', tmp, '--to', 'zip').status).toBe(2);
    const r = godwit('convert', tmp, '--to', 'criu');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/holds no image \(no inventory\.img or pages files\): nothing to convert/);
    const d = fresh();
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'x'), '');
    const src = criuFixture('sleep');
    expect(godwit('convert', src, '--to', 'godwit', '--out', d).stderr).toMatch(/is not empty \(x\)/);
    expect(godwit('convert', src, '--to', 'godwit', '--out', fresh(), '--level', 'abc').status).toBe(2);
  });
});
