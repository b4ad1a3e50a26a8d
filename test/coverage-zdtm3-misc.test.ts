/**
 * Kernel objects that CRIU's conformance tests (zdtm static epoll, fd_from_pidfd, pidfd_of_thread,
 * dead_thread_posix_timer) found godwit refusing or losing on a dump + kill + restore, each reproduced by a workload
 * of ours that checks itself after the restore.
 */
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz3-misc-');
afterEach(() => fx.cleanup());

const SIGEV_THREAD_ID = 4;

test('timers --dead-thread: a SIGEV_THREAD_ID timer whose thread exited comes back (inert, its interval kept) and still signals no one', async () => {
  const w = await fx.start('timers', ['--dead-thread', '1']);
  const pid = w.pid;
  const { dir } = await fx.cycle(w);
  const posix = ((entries(dir, `core-${pid}.img`)[0].tc as { timers: { posix: { it_sigev_notify: number; notify_thread_id?: number }[] } }).timers.posix);
  // The image keeps what the kernel showed: the dead thread's id.
  expect(posix.filter((p) => p.it_sigev_notify & SIGEV_THREAD_ID && p.notify_thread_id !== pid)).toHaveLength(1);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('fd sharing --stale-epoll: epoll items under fd numbers closed or reused since come back under their numbers, each waking on its own pipe', async () => {
  const w = await fx.start('fd-sharing', ['--stale-epoll', '1']);
  const { dir } = await fx.cycle(w);
  const ep = entries(dir, 'files.img').find((e) => e.epfd)!.epfd as { tfd: { tfd: number; holder_fd?: number }[] };
  // Two items lent a holder (700 closed; 701 once closed), the third is the file number 701 holds now.
  expect(ep.tfd.map((t) => t.tfd).sort()).toEqual([700, 701, 701]);
  expect(ep.tfd.filter((t) => t.holder_fd !== undefined)).toHaveLength(2);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('fd sharing --pidfd: a pidfd of the child comes back naming the restored child, which is signalled through it', async () => {
  const w = await fx.start('fd-sharing', ['--pidfd', '1']);
  const { dir } = await fx.cycle(w);
  const pidfds = entries(dir, 'files.img').filter((e) => e.pidfd);
  expect(pidfds).toHaveLength(1);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
