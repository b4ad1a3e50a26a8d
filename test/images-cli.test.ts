/** `godwit decode` / `godwit encode` as a user runs them. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fixturesDir } from './shared-dir';

const cli = path.resolve(__dirname, '..', 'cli', 'main.js');
const run = (args: string[], input?: string) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', input });
const fx = path.join(fixturesDir(), 'criu-4.2');

describe('godwit decode / encode', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-cli-'));
  });
  afterEach(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('decode prints what crit prints; encode turns it back into the same bytes', () => {
    for (const [dump, f] of [['sleep', 'core-16344'], ['pipeline', 'pipes-data'], ['pipeline', 'mm-16371']]) {
      const img = path.join(fx, dump, `${f}.img`);
      const d = run(['decode', img]);
      expect(d.status).toBe(0);
      expect(d.stdout).toBe(fs.readFileSync(path.join(fx, `${dump}.crit-json`, `${f}.json`), 'utf8'));
      const out = path.join(tmp, `${f}.img`);
      const e = run(['encode', '--out', out], d.stdout);
      expect(e.stderr).toBe('');
      expect(e.status).toBe(0);
      expect(fs.readFileSync(out).equals(fs.readFileSync(img))).toBe(true);
    }
  });

  test('decode --out and encode --in with files; --raw gives the typed form', () => {
    const img = path.join(fx, 'sleep', 'stats-dump');
    const json = path.join(tmp, 'stats.json');
    expect(run(['decode', img, '--out', json]).status).toBe(0);
    expect(JSON.parse(fs.readFileSync(json, 'utf8')).magic).toBe('STATS');
    const out = path.join(tmp, 'stats-dump');
    expect(run(['encode', '--in', json, '--out', out]).status).toBe(0);
    expect(fs.readFileSync(out).equals(fs.readFileSync(img))).toBe(true);
    const raw = run(['decode', '--raw', path.join(fx, 'sleep', 'pstree.img')]);
    expect(JSON.parse(raw.stdout)).toEqual({ kind: 'PSTREE', entries: [{ type: 'pstree_entry', msg: { pid: 16344, ppid: 0, pgid: 16344, sid: 16344, threads: [16344] } }] });
  });

  test('bad input: exit 1 with file, offset and what was expected; nothing half-written', () => {
    const cut = path.join(tmp, 'core-1.img');
    fs.writeFileSync(cut, fs.readFileSync(path.join(fx, 'sleep', 'core-16344.img')).subarray(0, 30));
    const d = run(['decode', cut]);
    expect(d.status).toBe(1);
    expect(d.stderr).toMatch(/core-1\.img: at offset 12: expected entry 0 \(\d+ bytes\), but the file ends/);
    const out = path.join(tmp, 'x.img');
    const e = run(['encode', '--out', out], '{"magic": "FS", "entries": [{"cwd_id": 1}]}');
    expect(e.status).toBe(1);
    expect(e.stderr).toMatch(/required field is missing/);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp)).toEqual(['core-1.img']);
    const j = run(['encode', '--out', out], '{"magic": ');
    expect(j.status).toBe(1);
    expect(j.stderr).toMatch(/<stdin>: at offset \d+: JSON syntax error/);
    expect(run(['decode']).status).toBe(2);
  });
});
