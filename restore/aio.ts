/**
 * AIO rings (checkpoint/aio.ts), made again in each task after its other mappings and before its pages are
 * written: io_setup makes a ring wherever the kernel likes, mremap moves it to the dumped address (the kernel
 * follows: the context id the process holds is that address again). The kernel keeps its own copy of the tail,
 * so requests on /dev/null are submitted and reaped until it reaches the dumped one; the ring's pages (events,
 * head, tail) are then written over it like any other memory.
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { TaskImage } from './load';
import { PAGE } from './memory';
import { Batch, runBatch } from './syscalls';
import { hostPidOf } from './tree';

const AT_FDCWD = -100;
const O_WRONLY = 1;
const O_CLOEXEC = 0o2000000;
const MREMAP_MAYMOVE = 1;
const MREMAP_FIXED = 2;
const IOCB_CMD_PWRITE = 1;
/** struct io_event */
const EVENT = 32n;
/** Submit-and-reap rounds per batch while moving the kernel's tail. */
const ROUNDS = 256;

/**
 * io_setup(n) makes a ring of ceil((32 + 32 * (2 * max(n, 4 * CPUs) + 2)) / PAGE) pages: 64 * P - 2 gives P pages
 * on any host with at most 16 * P CPUs (more would give a bigger ring: refused below).
 */
function requestsFor(ringLen: bigint): number {
  return Number((ringLen / PAGE) * 64n) - 2;
}

export async function restoreAioRings(ctx: RestoreContext, t: TaskImage): Promise<void> {
  const rings = ((t.mm.aios as Msg[] | undefined) ?? [])
    .map((r) => ({ addr: BigInt(r.id as bigint), len: BigInt(Number(r.ring_len)), tail: Number(r.tail ?? 0), slot: Number(r.ring_id ?? 0) }))
    .sort((a, b) => a.slot - b.slot);
  if (!rings.length) return;
  const hostPid = await hostPidOf(ctx, t.pid);
  // The kernel finds a context by the slot its ring's header names, and gives each new one the lowest free
  // slot: rings are made in slot order, a slot freed before the dump taken by a filler destroyed afterwards.
  const known = new Set<bigint>();
  const fillers: bigint[] = [];
  const setup = async (len: bigint, what: string): Promise<bigint> => {
    const b = new Batch();
    b.call('io_setup', [requestsFor(len), b.data(Buffer.alloc(8))], `${what}: io_setup`);
    await runBatch(ctx.restorer!, t.pid, b);
    // The context id went to scratch memory only: the new ring is the aio mapping not seen before.
    const made = aioMappings(hostPid).find((m) => !known.has(m.start));
    if (!made) throw new GodwitError(`${what}: io_setup made no ring mapping`);
    if (made.end - made.start !== len)
      throw new GodwitError(`${what}: the ring made here is ${made.end - made.start} bytes, the dumped one ${len} (another CPU count?)`);
    known.add(made.start);
    return made.start;
  };
  let slot = 0;
  for (const r of rings) {
    const what = `task ${t.pid}: AIO ring at 0x${r.addr.toString(16)}`;
    for (; slot < r.slot; slot++) fillers.push(await setup(PAGE, `${what}: filler for slot ${slot}`));
    const made = await setup(r.len, what);
    slot++;
    const m = new Batch();
    m.call('mremap', [made, r.len, r.len, MREMAP_MAYMOVE | MREMAP_FIXED, r.addr], `${what}: move the ring there`);
    await runBatch(ctx.restorer!, t.pid, m);
    known.add(r.addr);
    await advanceTail(ctx, t, r.addr, r.tail, what);
  }
  if (fillers.length) {
    const d = new Batch();
    for (const f of fillers) d.call('io_destroy', [f], `task ${t.pid}: destroy the filler AIO context`);
    await runBatch(ctx.restorer!, t.pid, d);
  }
}

/** Brings the kernel's tail of ring `ctxId` to `tail`: one write to /dev/null submitted and reaped per slot. */
async function advanceTail(ctx: RestoreContext, t: TaskImage, ctxId: bigint, tail: number, what: string): Promise<void> {
  if (!tail) return;
  const o = new Batch();
  o.call('openat', [AT_FDCWD, o.str('/dev/null'), O_WRONLY | O_CLOEXEC, 0], `${what}: open /dev/null`);
  const fd = Number((await runBatch(ctx.restorer!, t.pid, o))[0]);
  const scratchBase = ctx.trampolines.get(t.pid)! + PAGE;
  try {
    for (let done = 0; done < tail; ) {
      const b = new Batch();
      const byte = b.data(Buffer.alloc(8));
      const iocb = Buffer.alloc(64);
      iocb.writeUInt16LE(IOCB_CMD_PWRITE, 16);
      iocb.writeUInt32LE(fd, 20);
      iocb.writeBigUInt64LE(scratchBase + BigInt(byte.scratch), 24);
      iocb.writeBigUInt64LE(1n, 32);
      const iocbRef = b.data(iocb);
      const list = Buffer.alloc(8);
      list.writeBigUInt64LE(scratchBase + BigInt(iocbRef.scratch));
      const listRef = b.data(list);
      const event = b.data(Buffer.alloc(Number(EVENT)));
      const n = Math.min(ROUNDS, tail - done);
      for (let i = 0; i < n; i++) {
        b.call('io_submit', [ctxId, 1, listRef], `${what}: submit a request to move its tail`);
        b.call('io_getevents', [ctxId, 1, 1, event, 0], `${what}: reap it`);
      }
      await runBatch(ctx.restorer!, t.pid, b);
      done += n;
    }
  } finally {
    const c = new Batch();
    c.call('close', [fd], 'close /dev/null');
    await runBatch(ctx.restorer!, t.pid, c);
  }
}

function aioMappings(hostPid: number): { start: bigint; end: bigint }[] {
  return fs
    .readFileSync(`/proc/${hostPid}/maps`, 'latin1')
    .split('\n')
    .filter((l) => l.endsWith('/[aio] (deleted)'))
    .map((l) => {
      const [s, e] = l.split(' ')[0].split('-');
      return { start: BigInt('0x' + s), end: BigInt('0x' + e) };
    });
}
