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
