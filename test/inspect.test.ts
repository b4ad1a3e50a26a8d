import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeImage, encodeImage } from '../images';
import { InspectReport, inspectImageDir } from '../images/inspect';
import { criuFixture } from './helpers/fixtures';
import { godwit, imageFromFixture } from './helpers/images';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-inspect-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const pagesSize = (dir: string, id: number): number => fs.statSync(path.join(dir, `pages-${id}.img`)).size;

describe('godwit inspect', () => {
  test("CRIU's pipeline dump: tree, commands, threads, files, memory, stats", async () => {
    const dir = criuFixture('pipeline');
    const r = await inspectImageDir(dir);
    expect(r.problems).toEqual([]);
    expect(r.processes.map((p) => [p.pid, p.ppid, p.pgid, p.sid, p.comm, p.state])).toEqual([
      [16368, 0, 16368, 16368, 'sh', 'alive'],
      [16371, 16368, 16368, 16368, 'sleep', 'alive'],
      [16372, 16368, 16368, 16368, 'cat', 'alive'],
    ]);
    expect(r.processes.map((p) => p.threads)).toEqual([[{ tid: 16368, comm: 'sh' }], [{ tid: 16371, comm: 'sleep' }], [{ tid: 16372, comm: 'cat' }]]);
    expect(r.processes.map((p) => p.exe)).toEqual(['/usr/bin/dash', '/usr/bin/sleep', '/usr/bin/cat']);
    expect(r.processes.map((p) => p.cwd)).toEqual(['/tmp', '/tmp', '/tmp']);
    const [sh, sleep, cat] = r.processes as [InspectReport['processes'][0], InspectReport['processes'][0], InspectReport['processes'][0]];
    // sleep writes into the pipe cat reads from.
    expect(sleep.fds).toEqual([
      { fd: 0, type: 'REG', what: '/dev/null (O_RDONLY)' },
      { fd: 1, type: 'PIPE', what: 'pipe:[194139]' },
      { fd: 2, type: 'REG', what: '/dev/null (O_WRONLY)' },
    ]);
    expect(cat.fds![0]).toEqual({ fd: 0, type: 'PIPE', what: 'pipe:[194139]' });
    expect(sh.namespaces).toEqual({ pid: 1, net: 2, ipc: 3, uts: 4, mnt: 6, user: 7, cgroup: 8, time: 5 });
    expect(sh.ownNamespaces).toEqual([]);
    expect(sh.cgroup).toEqual({ set: 1, controllers: [] });
    // Memory: every dumped byte is in the process's own pages file.
    r.processes.forEach((p, i) => {
      expect(p.memory!.pagesFile).toBe(`pages-${i + 1}.img`);
      expect(p.memory!.dumped).toBe(pagesSize(dir, i + 1));
      expect(p.memory!.mappings.reduce((s, m) => s + m.dumped, 0)).toBe(p.memory!.dumped);
    });
    expect(sh.memory!.mappings.length).toBe(24);
    const names = sh.memory!.mappings.map((m) => m.name);
    expect(names).toEqual(expect.arrayContaining(['[heap]', '[stack]', '[vdso]', '[vvar]', '[vsyscall]', '/usr/bin/dash', '/usr/lib/x86_64-linux-gnu/libc.so.6']));
    const text = sh.memory!.mappings.find((m) => m.name === '/usr/bin/dash' && m.prot === 'r-xp')!;
    expect(text).toMatchObject({ start: '55debc70e000', end: '55debc721000', resident: 4096, dumped: 4096 });
    expect(r.totals).toMatchObject({ processes: 3, threads: 3, mappings: 70, dumped: pagesSize(dir, 1) + pagesSize(dir, 2) + pagesSize(dir, 3) });
    expect(r.totals.pagesBytes).toBe(r.totals.dumped);
    expect(r.made.manifest).toBeUndefined();
    expect(r.made.inventory).toEqual({ imgVersion: 2, criuRunId: 'b608e6f5-3003-45a4-9534-5ef92bd5ae92', lsm: 0 });
    expect(r.made.criuStats).toMatchObject({ frozenTimeUs: 11244, pagesWritten: 84, pagesScanned: 131 });
  });

  test("CRIU's sleep dump, through the CLI (text and --json)", () => {
    const t = godwit('inspect', criuFixture('sleep'));
    expect(t.status).toBe(0);
    expect(t.stdout).toMatch(/: 1 process, 1 thread, \d+ mappings;/);
    expect(t.stdout).toMatch(/^\s+16344\s+\d+\s+16344\s+\d+\s+alive\s+1\s+sleep$/m);
    expect(t.stdout).toMatch(/process 16344 \(sleep\): exe \/usr\/bin\/sleep/);
    expect(t.stdout).toMatch(/no godwit manifest \(a CRIU dump, or unfinished\)/);
    const j = godwit('inspect', criuFixture('sleep'), '--json');
    expect(j.status).toBe(0);
    const r = JSON.parse(j.stdout) as InspectReport;
    expect(r.processes.map((p) => [p.pid, p.comm])).toEqual([[16344, 'sleep']]);
    expect(r.totals.dumped).toBe(pagesSize(criuFixture('sleep'), 1));
  });

  test('a godwit image: the same data, compressed pages, how it was made', async () => {
    const dir = path.join(tmp, 'img');
    await imageFromFixture('pipeline', dir);
    const r = await inspectImageDir(dir);
    const c = await inspectImageDir(criuFixture('pipeline'));
    expect(r.problems).toEqual([]);
    expect(r.processes.map((p) => ({ ...p, memory: { ...p.memory, pagesFile: undefined } }))).toEqual(
      c.processes.map((p) => ({ ...p, memory: { ...p.memory, pagesFile: undefined } })),
    );
    expect(r.processes.map((p) => p.memory!.pagesFile)).toEqual(['pages-1.gwz', 'pages-2.gwz', 'pages-3.gwz']);
    expect(r.totals.pagesBytes).toBe(c.totals.pagesBytes);
    expect(r.totals.pagesFileBytes).toBeLessThan(r.totals.pagesBytes);
    expect(r.made.manifest).toMatchObject({ compression: 'zstd', level: 1, options: { fixture: 'pipeline' } });
    const t = godwit('inspect', dir);
    expect(t.stdout).toMatch(/made by godwit .* compression zstd level 1, 256 KiB chunks/);
  });

  test('damage is listed, the rest still shown; not an image is a clear error', async () => {
    const dir = path.join(tmp, 'damaged');
    fs.cpSync(criuFixture('pipeline'), dir, { recursive: true });
    fs.chmodSync(dir, 0o755);
    for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o644);
    fs.truncateSync(path.join(dir, 'fdinfo-3.img'), 19); // inside the first entry
    const r = await inspectImageDir(dir);
    expect(r.problems).toEqual([{ file: 'fdinfo-3.img', offset: expect.any(Number), problem: expect.stringMatching(/file ends/) }]);
    expect(r.processes.length).toBe(3);
    expect(r.processes[1]!.fds).toBeUndefined();
    const e = godwit('inspect', tmp);
    expect(e.status).toBe(1);
    expect(e.stderr).toMatch(/no pstree\.img in .*: not an image directory/);
  });

  test('sockets and other fds are described: unix (path, abstract, peer), tcp, eventfd', async () => {
    const dir = path.join(tmp, 'sockets');
    fs.cpSync(criuFixture('sleep'), dir, { recursive: true });
    for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o644);
    const fown = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };
    const opts = { so_sndbuf: 212992, so_rcvbuf: 212992, so_snd_tmo_sec: 0n, so_snd_tmo_usec: 0n, so_rcv_tmo_sec: 0n, so_rcv_tmo_usec: 0n };
    const usk = (id: number, ino: number, state: number, peer: number, name: Buffer) => ({
      type: 5, id, usk: { id, ino, type: 1, state, flags: 0, uflags: 0, backlog: 16, peer, fown, opts, name },
    });
    const filesImg = path.join(dir, 'files.img');
    const files = decodeImage(fs.readFileSync(filesImg), 'files.img').entries.map((e) => e.msg);
    files.push(
      usk(100, 5000, 10, 0, Buffer.from('/tmp/test.sock')),
      usk(101, 5001, 1, 5002, Buffer.from('\0abstract', 'latin1')),
      { type: 4, id: 102, isk: { id: 102, ino: 6000, family: 2, type: 1, proto: 6, state: 1, src_port: 8080, dst_port: 40000, flags: 0, backlog: 0, src_addr: [0x0100007f], dst_addr: [0x0100007f], fown, opts } },
      { type: 6, id: 103, efd: { id: 103, flags: 0, fown, counter: 7n } },
    );
    fs.writeFileSync(filesImg, encodeImage('FILES', files));
    const fdinfoImg = path.join(dir, 'fdinfo-2.img');
    const fds = decodeImage(fs.readFileSync(fdinfoImg), 'fdinfo-2.img').entries.map((e) => e.msg);
    fds.push({ id: 100, flags: 0, type: 5, fd: 3 }, { id: 101, flags: 0, type: 5, fd: 4 }, { id: 102, flags: 0, type: 4, fd: 5 }, { id: 103, flags: 0, type: 6, fd: 6 });
    fs.writeFileSync(fdinfoImg, encodeImage('FDINFO', fds));
    const r = await inspectImageDir(dir);
    expect(r.problems).toEqual([]);
    expect(r.processes[0]!.fds!.slice(3)).toEqual([
      { fd: 3, type: 'UNIXSK', what: 'unix stream listen /tmp/test.sock ino 5000' },
      { fd: 4, type: 'UNIXSK', what: 'unix stream established @abstract ino 5001 peer 5002' },
      { fd: 5, type: 'INETSK', what: 'tcp 127.0.0.1:8080 -> 127.0.0.1:40000 established' },
      { fd: 6, type: 'EVENTFD', what: 'eventfd counter 7' },
    ]);
    expect(godwit('inspect', dir).stdout).toMatch(/^\s+5\s+INETSK\s+tcp 127\.0\.0\.1:8080 -> 127\.0\.0\.1:40000 established$/m);
  });
});
