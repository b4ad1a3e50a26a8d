/**
 * The socket option transport/ssh.ts sets through the addon on its SSH connection (TCP_QUICKACK after each read, so
 * that sshd's small replies do not wait for a delayed ACK): it works on a TCP socket, and anything else is an errno
 * error naming the call.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { loadAddon } from '../native/addon';

const quickAck = loadAddon()!.tcpQuickAck!;

test('tcpQuickAck on a connected TCP socket; a pipe and a closed fd are errno errors', async () => {
  const server = net.createServer((c) => c.pipe(c));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const c = net.connect(port, '127.0.0.1');
  try {
    await new Promise<void>((r) => c.once('connect', r));
    const fd = (c as unknown as { _handle: { fd: number } })._handle.fd;
    expect(fd).toBeGreaterThan(2);
    c.write('ping');
    const echoed = new Promise<string>((r) => c.once('data', (d) => r(String(d))));
    expect(() => quickAck(fd)).not.toThrow();
    expect(await echoed).toBe('ping');
    expect(() => quickAck(fd)).not.toThrow();
  } finally {
    c.destroy();
    await new Promise((r) => server.close(r));
  }
  const [rd, wr] = pipe();
  try {
    expect(() => quickAck(rd)).toThrow(expect.objectContaining({ code: 'ENOTSOCK', syscall: 'setsockopt(TCP_QUICKACK)' }));
  } finally {
    fs.closeSync(rd);
    fs.closeSync(wr);
  }
  expect(() => quickAck(rd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  expect(() => quickAck(-1)).toThrow('tcpQuickAck(fd)');
});

/** A pipe's two fds (Node has no pipe(2): /proc's view of a fifo made for the purpose). */
function pipe(): [number, number] {
  const dir = fs.mkdtempSync('/tmp/godwit-quickack-');
  const fifo = `${dir}/fifo`;
  require('node:child_process').execFileSync('mkfifo', [fifo]);
  const rd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const wr = fs.openSync(fifo, fs.constants.O_WRONLY);
  fs.rmSync(dir, { recursive: true });
  return [rd, wr];
}
