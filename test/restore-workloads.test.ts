/**
 * The scenario workloads through dump (`godwit dump`, the tree killed) and restore, each verifying its own state
 * afterwards: into a new PID namespace, into the host's, three cycles in a row, from compressed and plain images.
 */
import { WorkloadName } from '../scenarios/workload';
import { WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-rw-');
afterEach(() => fx.cleanup());

describe('dump, kill, restore into a new PID namespace: the workload verifies itself', () => {
  const passing: [WorkloadName, string[]][] = [
    ['mem-counter', ['--mib', '32']],
    ['threads', []],
    ['signals', []],
    ['timers', []],
    ['files', []],
    ['unix-sockets', []],
  ];
  test.each(passing)('%s', async (name, args) => {
    const w = await fx.start(name, args);
    await fx.cycle(w, { newPidns: true });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('pipe-tree: every process, pipe, FIFO, buffer size and the zombie come back', async () => {
    const w = await fx.start('pipe-tree');
    const { restored: r } = await fx.cycle(w, { newPidns: true });
    expect(r.pids.size).toBe(6); // five processes and the zombie child main has not reaped
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('eventfd-epoll: counts, epoll ready set, signalfd queue and a working inotify watch come back', async () => {
    const w = await fx.start('eventfd-epoll');
    await fx.cycle(w, { newPidns: true });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});

describe('more cycles', () => {
  test('mem-counter: three dump/restore cycles in a row, in the host PID namespace, plain CRIU pages', async () => {
    const w = await fx.start('mem-counter', ['--mib', '16']);
    // Verifying ends a workload: three cycles, then one verification of the state that went through all.
    for (let i = 0; i < 3; i++) await fx.cycle(w, { newPidns: false, compress: 'none' });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('threads: three cycles in a row in the host PID namespace (same pids and tids each time), zstd pages', async () => {
    const w = await fx.start('threads');
    for (let i = 0; i < 3; i++) await fx.cycle(w, { newPidns: false });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});
