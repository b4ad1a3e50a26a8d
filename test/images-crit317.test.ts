/**
 * godwit's crit-style JSON against CRIU's crit 3.17 itself, for every image kind (see
 * test/data/crit-3.17/README.md): same text, same data, and crit's JSON encodes to the same bytes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { imageFromCrit, imageToCrit } from '../images/critjson';
import { decodeImage, encodeImage } from '../images/framing';
import { parseJson, pyDumps } from '../images/pyjson';
import { repoRoot } from './shared-dir';

const dir = path.join(repoRoot, 'test', 'data', 'crit-3.17');
const names = fs.readdirSync(dir).filter((f) => f.endsWith('.img')).map((f) => f.slice(0, -4)).sort();

describe("crit 3.17's decode of every image kind", () => {
  test('the reference set covers the kinds', () => {
    expect(names.length).toBeGreaterThan(100);
    expect(new Set(names.map((n) => n.replace(/-\d+$/, ''))).size).toBeGreaterThan(60);
  });

  for (const name of names) {
    test(name, () => {
      const bytes = fs.readFileSync(path.join(dir, `${name}.img`));
      const critText = fs.readFileSync(path.join(dir, `${name}.json`), 'utf8');
      const ours = pyDumps(imageToCrit(decodeImage(bytes, `${name}.img`)));
      expect(ours).toBe(critText.replace(/\n$/, ''));
      const back = imageFromCrit(parseJson(critText), `${name}.json`);
      expect(encodeImage(back.kind, back.entries, name).equals(bytes)).toBe(true);
    });
  }
});
