import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { ImageError, UsageError } from '../util/errors';
import { ImageDirWriter } from '../images/imagedir';
import { MANIFEST_NAME, ManifestMissing, readManifest } from '../images/manifest';
import { pageData } from './helpers/pagedata';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-imagedir-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => path.join(tmp, `img${n++}`);
const crcHex = (b: Buffer): string => (zlib.crc32(b) >>> 0).toString(16).padStart(8, '0');

describe('image directory writer', () => {
  test('writes files 0600 in a 0700 directory, manifest last with size and crc of each', async () => {
    const dir = fresh();
    const w = await ImageDirWriter.create(dir, { options: { command: 'test', pid: 42 } });
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    const inv = Buffer.from('inventory bytes');
    await w.writeFile('inventory.img', inv);
    const f = await w.createFile('core-1.img');
    await f.write(Buffer.from('abc'));
    await f.writev([Buffer.from('def'), Buffer.from('g')]);
    expect(fs.existsSync(path.join(dir, 'core-1.img'))).toBe(false);
    await f.commit();
    const pages = pageData(600 << 10);
    const pw = await w.createPageWriter(1);
    await pw.write(pages);
    expect(fs.existsSync(path.join(dir, MANIFEST_NAME))).toBe(false);
    await expect(w.finish()).rejects.toThrow(/pages-1\.gwz not finished before the manifest/);
    await pw.finish();
    const m = await w.finish();
    expect(fs.readdirSync(dir).sort()).toEqual(['core-1.img', MANIFEST_NAME, 'inventory.img', 'pages-1.gwz']);
    for (const e of fs.readdirSync(dir)) expect(fs.statSync(path.join(dir, e)).mode & 0o777).toBe(0o600);
    expect(m.files.map((x) => x.name)).toEqual(['core-1.img', 'inventory.img', 'pages-1.gwz']);
    for (const x of m.files) {
      const b = fs.readFileSync(path.join(dir, x.name));
      expect(x.size).toBe(b.length);
      expect(x.crc32).toBe(crcHex(b));
    }
    expect(m.files[2]!.pagesBytes).toBe(pages.length);
    expect(m.made.compression).toBe('zstd');
    expect(m.made.level).toBe(1);
    expect(m.made.chunkSize).toBe(256 << 10);
    expect(m.made.options).toEqual({ command: 'test', pid: 42 });
    expect(m.made.hostname).toBe(os.hostname());
    expect(m.made.kernel).toBe(os.release());
    expect(Date.now() - Date.parse(m.made.time)).toBeLessThan(60000);
    expect(await readManifest(dir)).toEqual(m);
  });

  test('--compress none: plain pages-N.img, no level in the manifest', async () => {
    const dir = fresh();
    const w = await ImageDirWriter.create(dir, { compress: 'none' });
    const pw = await w.createPageWriter(3);
    const pages = pageData(20000);
    await pw.write(pages);
    await pw.finish();
    const m = await w.finish();
    expect(fs.readFileSync(path.join(dir, 'pages-3.img')).equals(pages)).toBe(true);
    expect(m.made.compression).toBe('none');
    expect(m.made.level).toBeUndefined();
  });

  test('refuses a non-empty directory, a file, and takes an empty directory', async () => {
    const dir = fresh();
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'old.img'), 'x');
    const e = await ImageDirWriter.create(dir).catch((err) => err);
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toMatch(/image directory .* is not empty \(old\.img\): give a new or empty directory/);
    const file = path.join(tmp, 'plainfile');
    fs.writeFileSync(file, '');
    await expect(ImageDirWriter.create(file)).rejects.toThrow(/exists and is not a directory/);
    const empty = fresh();
    fs.mkdirSync(empty, { mode: 0o755 });
    const w = await ImageDirWriter.create(empty);
    expect(fs.statSync(empty).mode & 0o777).toBe(0o700);
    await w.abort();
    expect(fs.existsSync(empty)).toBe(true); // not ours to remove
    expect(fs.readdirSync(empty)).toEqual([]);
  });

  test('bad options fail before the directory is created', async () => {
    const dir = fresh();
    await expect(ImageDirWriter.create(dir, { compress: 'gzip' as never })).rejects.toThrow(/--compress must be zstd or none/);
    expect(fs.existsSync(dir)).toBe(false);
  });

  test('abort removes every file and partial file, and the directory it created', async () => {
    const dir = fresh();
    const w = await ImageDirWriter.create(dir);
    await w.writeFile('a.img', Buffer.from('a'));
    const pw = await w.createPageWriter(1);
    await pw.write(pageData(300000));
    await w.createFile('b.img');
    expect(fs.readdirSync(dir).length).toBe(3);
    await w.abort();
    expect(fs.existsSync(dir)).toBe(false);
  });

  test('the same name twice is refused', async () => {
    const w = await ImageDirWriter.create(fresh());
    await w.writeFile('a.img', Buffer.from('a'));
    await expect(w.writeFile('a.img', Buffer.from('b'))).rejects.toThrow(/a\.img written twice/);
    await expect(w.writeFile(MANIFEST_NAME, Buffer.from('b'))).rejects.toThrow(/written by finish/);
    await w.abort();
  });

  test('manifest: missing, damaged, edited', async () => {
    const dir = fresh();
    const w = await ImageDirWriter.create(dir);
    await w.writeFile('inventory.img', Buffer.from('x'));
    await w.finish();
    const mf = path.join(dir, MANIFEST_NAME);
    const text = fs.readFileSync(mf, 'utf8');
    fs.writeFileSync(mf, text.replace('"size": 1', '"size": 2'));
    await expect(readManifest(dir)).rejects.toThrow(/manifest checksum mismatch: .* \(the manifest was damaged or edited\)/);
    fs.writeFileSync(mf, text.slice(0, text.length / 2));
    await expect(readManifest(dir)).rejects.toThrow(/manifest is not valid JSON .*: damaged or truncated/);
    fs.writeFileSync(mf, JSON.stringify({ format: 'something-else' }));
    await expect(readManifest(dir)).rejects.toThrow(/format is "something-else"/);
    fs.rmSync(mf);
    const e = await readManifest(dir).catch((err) => err);
    expect(e).toBeInstanceOf(ManifestMissing);
    expect(e).toBeInstanceOf(ImageError);
    expect(e.message).toMatch(/no godwit-manifest\.json: not a complete godwit image/);
  });
});
