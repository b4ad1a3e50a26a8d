/**
 * Each workload's checker can fail: its state is changed from outside (memory written through /proc/PID/mem,
 * fds reached with pidfd_getfd, signals, a killed child) and the verdict must be FAIL naming what differed.
 */
import { startWorkload, type Workload } from '../scenarios/workload';
import { drainFd, lseekFd, poke, queueSignal, rearmTimerfd } from '../scenarios/tamper';

function field(w: Workload, key: string, index = 0): string {
  const v = w.info[key]?.split(' ')[index];
  if (v === undefined) throw new Error(`${w.name}: ready file has no "${key}" (info: ${JSON.stringify(w.info)})`);
  return v;
}

describe('scenario checkers notice tampering', () => {
  let w: Workload | undefined;
  afterEach(async () => {
    await w?.cleanup();
    w = undefined;
  });

  test('mem-counter: a changed byte in the random half is found at its offset', async () => {
    w = await startWorkload('mem-counter', { args: ['--mib', '8'] });
    const area = BigInt(field(w, 'area'));
    await poke(w.pid, area + 12345n, Buffer.from([0x42]));
    const r = await w.verify();
    expect(r.pass).toBe(false);
    expect(r.detail).toMatch(/^FAIL: area byte at offset 0x3039 \(page 3,/);
  });

  test('mem-counter: a changed byte in the repeated half is found', async () => {
    w = await startWorkload('mem-counter', { args: ['--mib', '8'] });
    const area = BigInt(field(w, 'area'));
    await poke(w.pid, area + 6n * 1024n * 1024n + 7n, Buffer.from([0]));
    const r = await w.verify();
    expect(r.detail).toMatch(/^FAIL: area byte at offset 0x600007 is 0x00, expected 0x[0-9a-f]{2} \(1 repeated-byte pages differ\)$/);
  });

  test('mem-counter: a counter rewritten behind the loop is caught', async () => {
    w = await startWorkload('mem-counter', { args: ['--mib', '2'] });
    // A write that lands between the loop's load and store is overwritten unseen (rarely: the loop spends most
    // of its time after the store); a few writes make sure one is seen.
    for (let i = 0; i < 5; i++) await poke(w.pid, BigInt(field(w, 'counter')), Buffer.alloc(8, 0));
    const r = await w.verify();
    expect(r.detail).toMatch(/^FAIL: counter at 0x[0-9a-f]+ was 0x[0-9a-f]+ with check word/);
  });

  test('mem-counter: a stale dirty page is caught', async () => {
    w = await startWorkload('mem-counter', { args: ['--mib', '2', '--dirty-pages', '16', '--dirty-rate', '10'] });
    // Page 5 is rewritten only every 1.6 s at this rate: a stamp of zero is one it never had.
    await poke(w.pid, BigInt(field(w, 'dirty')) + 5n * 4096n + 8n, Buffer.alloc(8, 0));
    const r = await w.verify();
    expect(r.detail).toMatch(/^FAIL: dirty page 5 word 1 holds stamp \d+, expected \d+/);
  });

  test('threads: a damaged TLS value names the thread', async () => {
    w = await startWorkload('threads');
    await poke(w.pid, BigInt(field(w, 'tls-3')), Buffer.alloc(8, 0xee));
    const r = await w.verify();
    expect(r.detail).toMatch(new RegExp(`^FAIL: thread 3 \\(tid ${w.tids[4]}\\): TLS magic is -\\d+, expected \\d+$`));
  });

  test('pipe-tree: a killed child is named', async () => {
    w = await startWorkload('pipe-tree');
    const c2 = Number(field(w, 'proc-c2'));
    process.kill(c2, 'SIGKILL');
    const r = await w.verify();
    expect(r.detail).toBe(`FAIL: c2 (pid ${c2}) was killed by signal 9`);
  });

  test('pipe-tree: a drained pipe is named with the bytes it lacks', async () => {
    w = await startWorkload('pipe-tree');
    const [pid, fd] = [Number(field(w, 'pipe-a-reader', 0)), Number(field(w, 'pipe-a-reader', 1))];
    expect(await drainFd(pid, fd)).toBe(1000);
    const r = await w.verify();
    expect(r.detail).toBe(`FAIL: pipe a (main -> c1) (fd ${fd}, pid ${pid}): 0 bytes were waiting, expected 1000`);
  });

  test('pipe-tree: the full pipe, drained, is noticed', async () => {
    w = await startWorkload('pipe-tree');
    const [pid, fd] = [Number(field(w, 'pipe-f-reader', 0)), Number(field(w, 'pipe-f-reader', 1))];
    expect(await drainFd(pid, fd)).toBe(16384);
    const r = await w.verify();
    expect(r.detail).toContain('pipe f (c2 -> main, full)');
    expect(r.detail).toContain('0 bytes were waiting, expected 16384');
  });

  test('signals: an extra pending signal and an extra queued value are both reported', async () => {
    w = await startWorkload('signals');
    process.kill(w.pid, 'SIGTTIN'); // blocked and not pending before
    await queueSignal(w.pid, Number(field(w, 'rt2')), 999);
    const r = await w.verify();
    expect(r.detail).toContain('pending set: signal 21 is pending, should not be');
    expect(r.detail).toContain('SIGRTMIN+2 was delivered 6 times (values: 100 101 102 103 104 999), expected 5');
    expect(r.detail).toContain('SIGTTIN was delivered 1 times');
  });

  test('timers: a timerfd re-armed with another interval is reported', async () => {
    w = await startWorkload('timers');
    await rearmTimerfd(w.pid, Number(field(w, 'timerfd')), 25_000_000);
    const r = await w.verify();
    expect(r.detail).toMatch(/^FAIL: timerfd interval is 25000000 ns, expected 40000000/);
  });

  test('files: a moved offset is reported, also through the dup that shares it', async () => {
    w = await startWorkload('files');
    await lseekFd(w.pid, Number(field(w, 'fd-1')), 0);
    const r = await w.verify();
    expect(r.detail).toBe(
      `FAIL: fd ${field(w, 'fd-1')} (rw.dat) offset is 0, expected 777; fd ${field(w, 'fd-5')} (rw.dat (dup)) offset is 0, expected 777`,
    );
  });

  test('unix-sockets: drained stream data is reported', async () => {
    w = await startWorkload('unix-sockets');
    const fd = Number(field(w, 'stream-s1'));
    expect(await drainFd(w.pid, fd)).toBe(3000);
    const r = await w.verify();
    expect(r.detail).toBe(`FAIL: stream pair s0->s1 (fd ${fd}): 0 bytes were queued, expected 3000`);
  });

  test('unix-sockets: a lost datagram is reported', async () => {
    w = await startWorkload('unix-sockets');
    const fd = Number(field(w, 'dgram-d1'));
    expect(await drainFd(w.pid, fd)).toBe(10 + 200 + 1); // three datagrams
    const r = await w.verify();
    expect(r.detail).toBe(`FAIL: dgram pair d0->d1 (fd ${fd}): 0 datagrams were queued, expected 3`);
  });

  test('shared-mem: a byte changed in the shared area is seen by parent and child alike', async () => {
    w = await startWorkload('shared-mem');
    const area = BigInt(field(w, 'area'));
    await poke(w.pid, area + 100n, Buffer.from([0x00, 0x01, 0x02]));
    const r = await w.verify();
    expect(r.detail).toMatch(/^FAIL: shared area, parent's half: byte 10[0-2] \(address 0x[0-9a-f]+\) differs from its pattern; child: shared area, parent's half: byte 10[0-2]/);
  });

  test('shared-mem: a changed memfd byte shows through the fd as well as the mapping', async () => {
    w = await startWorkload('shared-mem');
    const [fd, map] = [field(w, 'memfd', 0), BigInt(field(w, 'memfd', 1))];
    await poke(w.pid, map + 4096n, Buffer.from([0x00, 0xff]));
    const r = await w.verify();
    expect(r.detail).toMatch(/memfd mapping: byte 409[67] /);
    expect(r.detail).toMatch(/memfd read through its fd: byte 409[67] /);
    expect(fd).toBe('3');
  });

  test('eventfd-epoll: a consumed eventfd count shows in epoll and in the count', async () => {
    w = await startWorkload('eventfd-epoll');
    const fd = Number(field(w, 'eventfd'));
    expect(await drainFd(w.pid, fd)).toBe(8);
    const r = await w.verify();
    expect(r.detail).toContain('epoll first wait: ready set (data:events) is');
    expect(r.detail).toContain(`eventfd (fd ${fd}): read 0: Resource temporarily unavailable, expected 7`);
  });

  test('eventfd-epoll: an extra signal queued for the signalfd is reported', async () => {
    // (A signalfd read dequeues the reader's own signals, so it cannot be drained from outside: add one instead.)
    w = await startWorkload('eventfd-epoll');
    const fd = Number(field(w, 'signalfd'));
    await queueSignal(w.pid, Number(field(w, 'rt3')), 5);
    const r = await w.verify();
    expect(r.detail).toBe(`FAIL: signalfd (fd ${fd}) gave 3 signals, expected 2 (SIGUSR1, SIGRTMIN+3)`);
  });
});
