/**
 * Pipes and unix sockets through the helper on a real target: in-flight pipe bytes and socket queues are read
 * without being consumed, sock_diag finds a socketpair's peer, socket options come back, bad fds are SysErrors.
 */
import * as fs from 'node:fs';
import { Helper } from '../native/helper';
import { SysError } from '../util/errors';
import { pattern, startTarget, type Target } from './native-target';

let t: Target;
let h: Helper;

beforeAll(async () => {
  t = await startTarget(0, 'sleep');
  h = await Helper.start();
  await h.seize(t.tids());
});
afterAll(async () => {
  await h?.close();
  await t?.stop();
});

const patternBuf = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => pattern(i)));
const inode = (fd: number): bigint => BigInt(/socket:\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${t.pid}/fd/${fd}`))![1]);

test('pipe: the 1000 bytes in flight, from either end, and still there afterwards', async () => {
  const a = await h.peekPipe(t.pid, t.info.pipe[0]);
  expect(a.data).toEqual(patternBuf(1000));
  expect(a.truncated).toBe(false);
  expect(a.pipeSize).toBe(65536);
  const b = await h.peekPipe(t.pid, t.info.pipe[1]);
  expect(b.data).toEqual(patternBuf(1000));
  const limited = await h.peekPipe(t.pid, t.info.pipe[0], 100);
  expect(limited.data).toEqual(patternBuf(100));
  expect(limited.truncated).toBe(true);
});

test('stream socket: the queued 300 bytes, twice, peek offset put back', async () => {
  for (let i = 0; i < 2; i++) {
    const q = await h.peekSocket(t.pid, t.info.stream[1]);
    expect(q.packets).toHaveLength(1);
    expect(q.packets[0].data).toEqual(patternBuf(300));
    expect(q.packets[0].passedFds).toBe(0);
  }
  expect((await h.sockOpts(t.pid, t.info.stream[1])).peekOff).toBe(-1);
  expect((await h.peekSocket(t.pid, t.info.stream[0])).packets).toEqual([]);
});

test('datagram socket: one packet per queued message, in order', async () => {
  const q = await h.peekSocket(t.pid, t.info.dgram[1]);
  expect(q.packets.map((p) => p.data.toString())).toEqual(['first', 'second!']);
  const again = await h.peekSocket(t.pid, t.info.dgram[1]);
  expect(again.packets.map((p) => p.data.toString())).toEqual(['first', 'second!']);
});

test('unix diag finds both ends of the socketpair as each other\'s peers, with queue lengths', async () => {
  const a = inode(t.info.stream[0]);
  const b = inode(t.info.stream[1]);
  const socks = await h.unixDiag([a, b]);
  expect(socks.map((s) => s.inode).sort()).toEqual([a, b].sort());
  const sa = socks.find((s) => s.inode === a)!;
  const sb = socks.find((s) => s.inode === b)!;
  expect(sa.peerInode).toBe(b);
  expect(sb.peerInode).toBe(a);
  expect(sa.type).toBe(1); // SOCK_STREAM
  expect(sa.state).toBe(1); // TCP_ESTABLISHED
  expect(sb.rqlen).toBe(300);
  // The same through the target's network namespace, and unfiltered.
  const all = await h.unixDiag([], t.pid);
  expect(all.some((s) => s.inode === a)).toBe(true);
});

test('socket options of a stream socket', async () => {
  const o = await h.sockOpts(t.pid, t.info.stream[0]);
  expect(o).toMatchObject({ domain: 1, type: 1, protocol: 0, reuseaddr: false, passcred: false, lingerOnoff: 0 });
  expect(o.soErrorPending).toBe(false);
  expect(o.sndbuf).toBeGreaterThan(0);
  expect(o.rcvbuf).toBeGreaterThan(0);
  expect(o.boundName).toEqual(Buffer.alloc(0));
  expect(o.fileFlags & 3).toBe(2); // O_RDWR
});

test('a pending socket error is reported without being consumed', async () => {
  expect((await h.sockOpts(t.pid, t.info.errsock)).soErrorPending).toBe(true);
  expect((await h.sockOpts(t.pid, t.info.errsock)).soErrorPending).toBe(true);
});

test('errors name the fd: a pipe peek of a socket, a socket peek of a pipe, a missing fd', async () => {
  await expect(h.peekPipe(t.pid, t.info.stream[0])).rejects.toMatchObject({ pid: t.pid });
  const e1 = await h.peekSocket(t.pid, t.info.pipe[0]).catch((e: unknown) => e);
  expect(e1).toBeInstanceOf(SysError);
  expect((e1 as Error).message).toMatch(new RegExp(`fd ${t.info.pipe[0]}`));
  const e2 = await h.peekPipe(t.pid, 999).catch((e: unknown) => e);
  expect(e2).toMatchObject({ code: 'EBADF', syscall: 'pidfd_getfd', pid: t.pid });
});
