/**
 * godwit dump of every scenario workload with --leave-running: the images are decoded and checked against what
 * the workload reported (pids, threads, addresses, fds, offsets, signals, pipe data), and the workload then
 * verifies its whole state (PASS). Workloads are always killed and their directories removed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump, DumpSummary } from '../checkpoint/dump';
import { restore } from '../restore/index';
import { readImageFile } from '../images/io';
import { openPages } from '../images/container-reader';
import type { Msg } from '../images/wire';
import { startWorkload, Workload, WorkloadName } from '../scenarios/workload';
import { readStatus } from '../checkpoint/proc/status';
import { sigactionSignals } from '../checkpoint/signals';

jest.setTimeout(120_000);

let workloads: Workload[] = [];
let dirs: string[] = [];

afterEach(async () => {
  for (const w of workloads) await w.cleanup();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  workloads = [];
  dirs = [];
});

async function start(name: WorkloadName, args: string[] = []): Promise<Workload> {
  const w = await startWorkload(name, { args });
  workloads.push(w);
  return w;
}

function imageDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-dump-'));
  dirs.push(d);
  return path.join(d, 'img');
}

/** Every image of a directory, decoded: file name -> entries' messages. */
async function loadImages(dir: string): Promise<Map<string, Msg[]>> {
  const out = new Map<string, Msg[]>();
  for (const f of fs.readdirSync(dir)) {
    if (!f.endsWith('.img') || f.startsWith('pages-')) continue;
    const img = await readImageFile(path.join(dir, f));
    out.set(f, img.entries.map((e) => e.msg));
  }
  return out;
}

async function extras(dir: string, file: string): Promise<Buffer[]> {
  const img = await readImageFile(path.join(dir, file));
  return img.entries.map((e) => e.extra as Buffer);
}

function untouched(pid: number): void {
  const st = readStatus(pid);
  expect(st.tracerPid).toBe(0);
  expect(st.state).not.toMatch(/^[tT]/);
}

async function dumpAndVerify(w: Workload, check: (imgs: Map<string, Msg[]>, dir: string, s: DumpSummary) => Promise<void> | void, compress: 'zstd' | 'none' = 'zstd') {
  const dir = imageDir();
  const s = await dump({ pid: w.pid, dir, leaveRunning: true, compress });
  expect(fs.existsSync(path.join(dir, 'godwit-manifest.json'))).toBe(true);
  for (const p of w.pids) untouched(p);
  const imgs = await loadImages(dir);
  await check(imgs, dir, s);
  const v = await w.verify();
  expect(v.detail).toBe('PASS');
}

const fdsOf = (imgs: Map<string, Msg[]>, pid: number): Msg[] => {
  const ids = imgs.get(`ids-${pid}.img`)![0]!;
  return imgs.get(`fdinfo-${ids.files_id}.img`)!;
};
const fileById = (imgs: Map<string, Msg[]>, id: number): Msg => imgs.get('files.img')!.find((f) => f.id === id)!;

test('mem-counter: pages of the known area are in the image, byte for byte; the workload continues', async () => {
  const w = await start('mem-counter', ['--mib', '16']);
  const [addrHex, lenStr] = w.info.area!.split(' ');
  const area = BigInt(addrHex!);
  const len = BigInt(lenStr!);
  const memNow = Buffer.alloc(65536);
  const fd = fs.openSync(`/proc/${w.pid}/mem`, 'r');
  fs.readSync(fd, memNow, 0, memNow.length, Number(area + len - 65536n));
  fs.closeSync(fd);
  await dumpAndVerify(w, async (imgs, dir, s) => {
    expect(s.pids).toEqual([w.pid]);
    expect(imgs.get('pstree.img')).toEqual([{ pid: w.pid, ppid: 0, pgid: expect.any(Number), sid: expect.any(Number), threads: [w.pid] }]);
    const core = imgs.get(`core-${w.pid}.img`)![0]!;
    expect(core.mtype).toBe(1);
    expect((core.tc as Msg).task_state).toBe(1);
    expect((core.tc as Msg).comm).toBe('mem-counter');
    const mm = imgs.get(`mm-${w.pid}.img`)![0]!;
    const vma = (mm.vmas as Msg[]).find((v) => (v.start as bigint) <= area && area + len <= (v.end as bigint));
    expect(vma).toBeDefined();
    expect(vma!.status).toBe((1 << 0) | (1 << 9)); // VMA_AREA_REGULAR | VMA_ANON_PRIVATE
    const pm = imgs.get(`pagemap-${w.pid}.img`)!;
    expect(pm[0]).toEqual({ pages_id: 1 });
    // Offset of the last 64 KiB of the area in the page stream.
    let off = 0;
    let found = -1;
    const want = area + len - 65536n;
    for (const e of pm.slice(1)) {
      const start = e.vaddr as bigint;
      const n = BigInt(e.nr_pages as bigint) * 4096n;
      if (start <= want && want + 65536n <= start + n) found = off + Number(want - start);
      off += Number(n);
    }
    expect(found).toBeGreaterThanOrEqual(0);
    const pages = await openPages(dir, 1);
    try {
      expect(pages.size).toBe(off);
      expect((await pages.read(found, 65536)).equals(memNow)).toBe(true);
    } finally {
      await pages.close();
    }
    expect(s.pageBytes).toBe(off);
    expect(s.frozenMs).toBeGreaterThan(0);
  });
});

test('mem-counter --compress none: plain CRIU pages-1.img', async () => {
  const w = await start('mem-counter', ['--mib', '4']);
  await dumpAndVerify(
    w,
    (imgs, dir, s) => {
      const size = fs.statSync(path.join(dir, 'pages-1.img')).size;
      expect(size).toBe(s.pageBytes);
      const pages = imgs.get(`pagemap-${w.pid}.img`)!.slice(1).reduce((n, e) => n + Number(e.nr_pages) * 4096, 0);
      expect(size).toBe(pages);
    },
    'none',
  );
});

test('threads: one core per thread, pstree lists every tid', async () => {
  const w = await start('threads');
  await dumpAndVerify(w, (imgs) => {
    const tids = w.tids;
    expect(tids.length).toBeGreaterThan(1);
    expect([...(imgs.get('pstree.img')![0]!.threads as number[])].sort()).toEqual([...tids].sort());
    for (const t of tids) {
      const core = imgs.get(`core-${t}.img`)![0]!;
      expect(((core.thread_info as Msg).gpregs as Msg).ip).not.toBe(0n);
      expect(core.thread_core).toBeDefined();
      if (t === w.pid) expect(core.tc).toBeDefined();
      else expect(core.tc).toBeUndefined();
    }
  });
});

test('pipe-tree: every process with its parent, pipes and the bytes in flight', async () => {
  const w = await start('pipe-tree');
  await dumpAndVerify(w, async (imgs, dir) => {
    const tree = imgs.get('pstree.img')!;
    const zombie = Number(w.info['proc-zombie']);
    expect(tree.map((p) => p.pid).sort()).toEqual([...w.pids, zombie].sort());
    const byPid = new Map(tree.map((p) => [p.pid as number, p]));
    for (const k of ['proc-c1', 'proc-c2', 'proc-c3', 'proc-zombie']) expect(byPid.get(Number(w.info[k]))!.ppid).toBe(w.pid);
    expect(byPid.get(Number(w.info['proc-g']))!.ppid).toBe(Number(w.info['proc-c1']));
    // c2 has its own session, c3 its own process group.
    expect(byPid.get(Number(w.info['proc-c2']))!.sid).toBe(Number(w.info['proc-c2']));
    expect(byPid.get(Number(w.info['proc-c3']))!.pgid).toBe(Number(w.info['proc-c3']));
    // The zombie: a core with task_state ZOMBIE and its exit code, and no memory images.
    const zc = imgs.get(`core-${zombie}.img`)![0]!.tc as Msg;
    expect(zc.task_state).toBe(6);
    expect(zc.exit_code).toBe(42 << 8); // the raw wait status, as CRIU keeps it
    expect(imgs.has(`mm-${zombie}.img`)).toBe(false);
    const data = imgs.get('pipes-data.img')!;
    const bytes = await extras(dir, 'pipes-data.img');
    expect(data.reduce((n, d) => n + (d.bytes as number), 0)).toBeGreaterThan(0);
    data.forEach((d, i) => expect(bytes[i]!.length).toBe(d.bytes));
    // The reader of pipe A holds a PIPE fd whose pipe_id has an entry in pipes-data.
    const [readerPid, readerFd] = w.info['pipe-a-reader']!.split(' ').map(Number);
    const fdi = fdsOf(imgs, readerPid!).find((f) => f.fd === readerFd)!;
    expect(fdi.type).toBe(2);
    const pipe = fileById(imgs, fdi.id as number).pipe as Msg;
    expect(data.some((d) => d.pipe_id === pipe.pipe_id)).toBe(true);
  });
});

test('signals: dispositions, blocked mask, pending signals and the altstack', async () => {
  const w = await start('signals');
  await dumpAndVerify(w, (imgs) => {
    const core = imgs.get(`core-${w.pid}.img`)![0]!;
    const tc = core.tc as Msg;
    const list = tc.sigactions as Msg[];
    expect(list).toHaveLength(62); // signals 1..64 but SIGKILL and SIGSTOP, as CRIU
    const sigs = sigactionSignals();
    const sa = (sig: number) => list[sigs.indexOf(sig)]!;
    const SIGUSR1 = 10, SIGPIPE = 13, SIGHUP = 1, SIGALRM = 14, SIGWINCH = 28;
    expect(sa(SIGUSR1).sigaction).not.toBe(0n);
    expect((sa(SIGUSR1).flags as bigint) & 0x10000000n).toBe(0x10000000n); // SA_RESTART
    expect(sa(SIGPIPE).sigaction).toBe(1n); // SIG_IGN
    expect((sa(SIGHUP).flags as bigint) & 4n).toBe(4n); // SA_SIGINFO
    expect((sa(SIGWINCH).flags as bigint) & 0x08000000n).toBe(0x08000000n); // SA_ONSTACK
    const blk = tc.blk_sigset as bigint;
    expect(blk & (1n << BigInt(SIGUSR1 - 1))).not.toBe(0n);
    const shared = ((tc.signals_s as Msg).signals as Msg[]) ?? [];
    const rt2 = Number(w.info.rt2);
    const signo = (m: Msg) => (m.siginfo as Buffer).readInt32LE(0);
    expect(shared.filter((m) => signo(m) === rt2)).toHaveLength(5);
    expect(shared.some((m) => signo(m) === SIGUSR1)).toBe(true);
    const thread = core.thread_core as Msg;
    expect((((thread.signals_p as Msg).signals as Msg[]) ?? []).some((m) => signo(m) === SIGALRM)).toBe(true);
    expect((thread.sas as Msg).ss_size).toBe(65536n);
  });
});

test('timers: itimers, POSIX timers and the timerfd', async () => {
  const w = await start('timers');
  await dumpAndVerify(w, (imgs) => {
    const timers = (imgs.get(`core-${w.pid}.img`)![0]!.tc as Msg).timers as Msg;
    expect(timers.real).toBeDefined();
    const posix = (timers.posix as Msg[]) ?? [];
    expect(posix.length).toBeGreaterThan(0);
    const tfd = fdsOf(imgs, w.pid).find((f) => f.fd === Number(w.info.timerfd))!;
    expect(tfd.type).toBe(17);
    const t = fileById(imgs, tfd.id as number).tfd as Msg;
    expect((t.vsec as bigint) + (t.vnsec as bigint) + (t.isec as bigint) + (t.insec as bigint)).toBeGreaterThan(0n);
  });
});

test('files: fds at their numbers and offsets, a dup shares its file, the deleted file travels as a ghost', async () => {
  const w = await start('files');
  await dumpAndVerify(w, async (imgs, dir) => {
    const fds = fdsOf(imgs, w.pid);
    const info = (k: string) => w.info[k]!.split(' ');
    const fdNo = (k: string) => Number(info(k)[0]);
    const reg = (k: string) => fileById(imgs, fds.find((f) => f.fd === fdNo(k))!.id as number).reg as Msg;
    expect(reg('fd-0').pos).toBe(1234n);
    expect((reg('fd-0').name as string).endsWith('/files/ro.dat')).toBe(true);
    expect(reg('fd-1').pos).toBe(777n);
    expect(fds.find((f) => f.fd === fdNo('fd-5'))!.id).toBe(fds.find((f) => f.fd === fdNo('fd-1'))!.id);
    expect((reg('fd-2').flags as number) & 0o2000).toBe(0o2000); // O_APPEND
    expect(reg('fd-3').pos).toBe(4000n);
    expect(fds.find((f) => f.fd === fdNo('fd-0'))!.flags).toBe(1); // close-on-exec
    const remap = imgs.get('remap-fpath.img')!;
    const deletedId = fds.find((f) => f.fd === fdNo('fd-3'))!.id;
    expect(remap).toEqual([{ orig_id: deletedId, remap_id: 1, remap_type: 1 }]);
    const ghost = await readImageFile(path.join(dir, 'ghost-file-1.img'));
    expect((ghost.entries[0]!.extra as Buffer).length).toBe(8292);
    const fsImg = imgs.get(`fs-${w.pid}.img`)![0]!;
    expect(fsImg.umask).toBe(0o027);
    expect((fileById(imgs, fsImg.cwd_id as number).reg as Msg).name).toBe(path.join(w.dir, 'files', 'sub'));
    const vmas = imgs.get(`mm-${w.pid}.img`)![0]!.vmas as Msg[];
    const shared = vmas.find((v) => v.start === BigInt(w.info['shared-map']!))!;
    expect(shared.status).toBe(1 | (1 << 7)); // VMA_AREA_REGULAR | VMA_FILE_SHARED
  });
});

test('unix-sockets: the socketpair, datagram and listener with queued data', async () => {
  const w = await start('unix-sockets');
  await dumpAndVerify(w, async (imgs, dir) => {
    const usk = imgs.get('files.img')!.filter((f) => f.type === 5).map((f) => f.usk as Msg);
    expect(usk.length).toBeGreaterThanOrEqual(3);
    const byIno = new Map(usk.map((u) => [u.ino as number, u]));
    for (const u of usk) if (u.peer) expect(byIno.has(u.peer as number)).toBe(true);
    const listener = usk.find((u) => u.state === 10)!;
    expect((listener.name as Buffer).toString()).toBe(w.info.listener!.split(' ')[1]);
    const queues = imgs.get('sk-queues.img') ?? [];
    expect(queues.length).toBeGreaterThan(0);
    const data = await extras(dir, 'sk-queues.img');
    queues.forEach((q, i) => expect(data[i]!.length).toBe(q.length));
  });
});

test('eventfd-epoll: the counter, the epoll targets and the signalfd mask', async () => {
  const w = await start('eventfd-epoll');
  await dumpAndVerify(w, (imgs) => {
    const fds = fdsOf(imgs, w.pid);
    const file = (k: string) => fileById(imgs, fds.find((f) => f.fd === Number(w.info[k]))!.id as number);
    expect(file('eventfd').type).toBe(6);
    expect((file('eventfd').efd as Msg).counter).toBeGreaterThan(0n);
    const ep = file('epoll').epfd as Msg;
    expect((ep.tfd as Msg[]).some((t) => t.tfd === Number(w.info.eventfd))).toBe(true);
    const sfd = file('signalfd').sgfd as Msg;
    expect((sfd.sigmask as bigint) & (1n << BigInt(Number(w.info.rt3) - 1))).not.toBe(0n);
  });
});

describe('dump without --leave-running, then godwit restore', () => {
  test.each([
    // The workloads whose every resource godwit restore handles today (it does not yet restore FIFOs, unix
    // sockets or ghost files; the threads workload does not come back yet).
    ['mem-counter', ['--mib', '8']],
    ['signals', []],
    ['timers', []],
  ] as [WorkloadName, string[]][])('%s: killed once the images are safe; restored, it verifies PASS', async (name, args) => {
    const w = await start(name, args);
    const dir = imageDir();
    const s = await dump({ pid: w.pid, dir });
    expect(s.leftRunning).toBe(false);
    expect(fs.existsSync(path.join(dir, 'godwit-manifest.json'))).toBe(true);
    for (let i = 0; i < 500 && w.alivePids().length; i++) await new Promise((r) => setTimeout(r, 10));
    expect(w.alivePids()).toEqual([]);
    // A new PID namespace: the dumped pids may still be held by zombies the host's init has not reaped yet.
    const r = await restore({ dir, detach: true, newPidns: true }, { silent: true });
    try {
      w.setPids(w.pids.map((p) => r.pids.get(p)!));
      const v = await w.verify();
      expect(v.detail).toBe('PASS');
    } finally {
      await w.cleanup();
      if (r.restorer) {
        r.restorer.kill();
        await r.restorer.waitExit().catch(() => undefined);
      }
    }
  });
});
