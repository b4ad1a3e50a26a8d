/**
 * CRIU 4.2 dumps of real programs (shared/fixtures/criu-4.2) against crit's own decode of every file:
 * godwit's JSON must be crit's, byte for byte, and must encode back to the original image bytes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { imageFromCrit, imageToCrit } from '../images/critjson';
import { decodeImage, encodeImage } from '../images/framing';
import { ImageReader, ImageWriter, readImageFile } from '../images/io';
import { parseJson, pyDumps } from '../images/pyjson';

import { fixturesDir } from './shared-dir';

const fixtures = path.join(fixturesDir(), 'criu-4.2');

function imageFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => !f.startsWith('pages-')).sort();
}

describe('CRIU 4.2 fixtures', () => {
  test('fixtures are present', () => {
    if (!fs.existsSync(path.join(fixtures, 'sleep'))) {
      throw new Error(`CRIU fixtures missing at ${fixtures}: shared/ must sit beside the repository`);
    }
  });

  for (const dump of ['sleep', 'pipeline']) {
    const dir = path.join(fixtures, dump);
    const jsonDir = path.join(fixtures, `${dump}.crit-json`);
    const files = fs.existsSync(dir) ? imageFiles(dir) : [];
    test(`${dump}: has image files`, () => {
      expect(files.length).toBeGreaterThan(10);
    });
    for (const f of files) {
      test(`${dump}/${f}: raw decode -> encode is byte-identical`, () => {
        const bytes = fs.readFileSync(path.join(dir, f));
        const img = decodeImage(bytes, f);
        expect(encodeImage(img.kind, img.entries, f).equals(bytes)).toBe(true);
      });
      const jsonFile = path.join(jsonDir, f.replace(/\.img$/, '') + '.json');
      if (!fs.existsSync(jsonFile)) continue;
      test(`${dump}/${f}: JSON equals crit's and encodes back to the same bytes`, () => {
        const bytes = fs.readFileSync(path.join(dir, f));
        const critText = fs.readFileSync(jsonFile, 'utf8');
        const ours = pyDumps(imageToCrit(decodeImage(bytes, f))) + '\n';
        // same data (parsed, deep-equal, big integers exact) ...
        expect(parseJson(ours)).toEqual(parseJson(critText));
        // ... and the same text, as crit prints it
        expect(ours).toBe(critText);
        const back = imageFromCrit(parseJson(critText), jsonFile);
        expect(encodeImage(back.kind, back.entries, f).equals(bytes)).toBe(true);
      });
    }
  }

  test('every JSON file crit made has an image beside it', () => {
    for (const dump of ['sleep', 'pipeline']) {
      for (const j of fs.readdirSync(path.join(fixtures, `${dump}.crit-json`))) {
        const base = j.replace(/\.json$/, '');
        const img = fs.existsSync(path.join(fixtures, dump, base + '.img')) || fs.existsSync(path.join(fixtures, dump, base));
        expect(img).toBe(true);
      }
    }
  });

  test('a reader closed after the first entry releases its file', async () => {
    const r = await ImageReader.open(path.join(fixtures, 'sleep', 'core-16344.img'));
    expect((await r.next())?.type).toBe('core_entry');
    r.close();
    expect(await r.next()).toBeUndefined();
  });

  test('streaming reader and writer reproduce every fixture file', async () => {
    const tmp = fs.mkdtempSync('/tmp/godwit-images-');
    try {
      for (const dump of ['sleep', 'pipeline']) {
        for (const f of imageFiles(path.join(fixtures, dump))) {
          const src = path.join(fixtures, dump, f);
          const img = await readImageFile(src);
          const out = path.join(tmp, f);
          const w = await ImageWriter.create(out, img.kind.kind);
          for (const e of img.entries) await w.writeEntry(e);
          await w.close();
          expect(fs.readFileSync(out).equals(fs.readFileSync(src))).toBe(true);
        }
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
