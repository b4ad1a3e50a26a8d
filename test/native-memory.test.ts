/**
 * ReadPages through the real helper: the bytes of a target's memory match what it wrote, PROT_NONE pages come
 * through /proc/PID/mem, cancel and failing sinks leave the bulk pipe in step, unmapped memory is a SysError.
 */
import { Helper } from '../native/helper';
import { SysError } from '../util/errors';
import { pattern, startTarget, type Target } from './native-target';

let t: Target;
let h: Helper;

beforeAll(async () => {
  t = await startTarget(2, 'sleep');
  h = await Helper.start();
  await h.seize(t.tids());
});
afterAll(async () => {
  await h?.close();
  await t?.stop();
});

function expectPattern(b: Buffer, from = 0): void {
  let bad = -1;
  for (let i = 0; i < b.length && bad < 0; i++) if (b[i] !== pattern(from + i)) bad = i;
  expect(bad).toBe(-1);
}

test('4 MiB read in one range matches the pattern the target wrote', async () => {
  const b = await h.readPagesToBuffer(t.pid, [{ start: BigInt(t.info.mem), length: BigInt(t.info.memLen) }]);
  expect(b.length).toBe(t.info.memLen);
  expectPattern(b);
});

test('many small ranges come back in request order', async () => {
  const base = BigInt(t.info.mem);
  const pages = [1000, 3, 517, 2, 999, 0, 64];
  const b = await h.readPagesToBuffer(
    t.pid,
    pages.map((p) => ({ start: base + BigInt(p * 4096), length: 4096n })),
  );
  pages.forEach((p, i) => expectPattern(b.subarray(i * 4096, (i + 1) * 4096), p * 4096));
});

test('thousands of small ranges (batches smaller than the pipe) with a slow reader stay intact', async () => {
  // 16384 ranges of 256 bytes: 1024 per batch = 256 KiB batches, so both staging buffers fit in the 1 MiB pipe
  // at once and would be refilled while the pipe still references their pages; a slow sink keeps it full.
  const base = BigInt(t.info.mem);
  const ranges = Array.from({ length: 16384 }, (_, i) => ({ start: base + BigInt(i * 256), length: 256n }));
  const chunks: Buffer[] = [];
  let n = 0;
  await h.readPages(t.pid, ranges, async (c) => {
    chunks.push(Buffer.from(c));
    if (++n % 4 === 0) await new Promise((r) => setTimeout(r, 1));
  });
  const b = Buffer.concat(chunks);
  expect(b.length).toBe(t.info.memLen);
  expectPattern(b);
});

test('a PROT_NONE page is read through /proc/PID/mem', async () => {
  const chunks: Buffer[] = [];
  const r = await h.readPages(
    t.pid,
    [
      { start: BigInt(t.info.mem), length: 8192n },
      { start: BigInt(t.info.none), length: 4096n },
    ],
    (c) => void chunks.push(Buffer.from(c)),
  );
  expect(r.bytes).toBe(12288n);
  expect(r.viaProcMem).toBe(4096n);
  const b = Buffer.concat(chunks);
  expectPattern(b.subarray(0, 8192));
  expectPattern(b.subarray(8192), 0);
});

test('an unmapped range is a SysError naming the pid, and the helper stays usable', async () => {
  const err = await h.readPagesToBuffer(t.pid, [{ start: 0x1000n, length: 4096n }]).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(SysError);
  expect(err).toMatchObject({ pid: t.pid, code: 'EIO' });
  expect((err as Error).message).toMatch(/0x1000/);
  const ok = await h.readPagesToBuffer(t.pid, [{ start: BigInt(t.info.mem), length: 4096n }]);
  expectPattern(ok);
});

test('an aborted read ends with ECANCELED after delivering what was read, and the next read is in step', async () => {
  const ac = new AbortController();
  let seen = 0;
  const ranges = Array.from({ length: 256 }, () => ({ start: BigInt(t.info.mem), length: BigInt(t.info.memLen) }));
  const err = await h
    .readPages(t.pid, ranges, (c) => {
      seen += c.length;
      if (seen > 8 << 20) ac.abort();
    }, { signal: ac.signal })
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(SysError);
  expect(err).toMatchObject({ code: 'ECANCELED' });
  expect(seen).toBeLessThan(256 * t.info.memLen);
  const ok = await h.readPagesToBuffer(t.pid, [{ start: BigInt(t.info.mem), length: 65536n }]);
  expectPattern(ok);
});

test('a sink that throws fails the read with its own error, and the next read is in step', async () => {
  const boom = new Error('sink is full');
  const ranges = Array.from({ length: 64 }, () => ({ start: BigInt(t.info.mem), length: BigInt(t.info.memLen) }));
  const err = await h
    .readPages(t.pid, ranges, () => {
      throw boom;
    })
    .catch((e: unknown) => e);
  expect(err).toBe(boom);
  const ok = await h.readPagesToBuffer(t.pid, [{ start: BigInt(t.info.mem) + 4096n, length: 4096n }]);
  expectPattern(ok, 4096);
});
