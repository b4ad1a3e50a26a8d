/**
 * The test bed (scenarios/hosts.ts) on the real kernel: namespaces, veths, sshd, and complete teardown, also when a
 * test throws, when building fails half-way, and when the owning process is signalled or killed.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { bedLeftovers, createHosts, withHosts, type BedResources, type TestBed } from '../scenarios/hosts';
import { childPids } from '../scenarios/host-process';
import { BEDS_ROOT } from '../scenarios/bed-registry';

const FIXTURES = join(__dirname, 'fixtures');

async function waitNoLeftovers(res: BedResources, allow: (s: string) => boolean = () => false): Promise<string[]> {
  let left: string[] = [];
  for (let i = 0; i < 100; i++) {
    left = bedLeftovers(res).filter((s) => !allow(s));
    if (left.length === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return left;
}

function unshareChildren(): number[] {
  const out: number[] = [];
  for (const pid of childPids(process.pid)) {
    try {
      if (readlinkSync(`/proc/${pid}/exe`).endsWith('/unshare')) out.push(pid);
    } catch {
      // Gone.
    }
  }
  return out;
}

describe('two hosts on one machine', () => {
  let bed: TestBed;
  let res: BedResources;

  beforeAll(async () => {
    bed = await createHosts();
    res = bed.resources();
  });
  afterAll(async () => {
    await bed?.destroy();
  });

  test('each host has its own hostname, PID, network and mount namespace', async () => {
    const [a, b] = bed.hosts as [NonNullable<TestBed['hosts'][0]>, NonNullable<TestBed['hosts'][0]>];
    expect(a.name).toBe('godwit-a');
    expect(b.name).toBe('godwit-b');
    expect((await a.execOk('hostname')).stdout.trim()).toBe('godwit-a');
    expect((await b.execOk('hostname')).stdout.trim()).toBe('godwit-b');
    // A fresh PID namespace: a shell sees itself with a tiny pid, and PID 1 is the host's init.
    const pid = Number((await b.execOk('sh', ['-c', 'echo $$'])).stdout.trim());
    expect(pid).toBeGreaterThan(1);
    expect(pid).toBeLessThan(100);
    expect((await b.execOk('cat', ['/proc/1/cmdline'])).stdout).toContain('perl');
    for (const kind of ['net', 'pid', 'mnt', 'uts', 'ipc'] as const) {
      const mine = readlinkSync(`/proc/self/ns/${kind}`);
      expect(readlinkSync(a.nsPath(kind))).not.toBe(mine);
      expect(readlinkSync(a.nsPath(kind))).not.toBe(readlinkSync(b.nsPath(kind)));
    }
    // Private /run (for sshd) inside, not visible here.
    expect((await a.execOk('sh', ['-c', 'grep " /run " /proc/self/mountinfo'])).stdout).toContain('godwit-run');
  });

  test('addresses come from 198.18.0.0/15 and the hosts reach only each other', async () => {
    const [a, b] = bed.hosts as [NonNullable<TestBed['hosts'][0]>, NonNullable<TestBed['hosts'][0]>];
    for (const h of bed.hosts) {
      const [o1, o2] = h.address.split('.').map(Number) as [number, number];
      expect(o1).toBe(198);
      expect([18, 19]).toContain(o2);
      const addrs = (await h.execOk('ip', ['-4', '-o', 'addr', 'show', 'dev', h.interfaceName])).stdout;
      expect(addrs).toContain(`${h.address}/${h.prefixLength}`);
    }
    // B opens a TCP connection to A's sshd and reads the SSH banner.
    const banner = await b.execOk('timeout', ['5', 'bash', '-c', `exec 3<>/dev/tcp/${a.address}/22; head -c 8 <&3`]);
    expect(banner.stdout).toBe('SSH-2.0-');
    // No route anywhere else: the route lookup fails without a packet being sent.
    const out = await a.exec('ip', ['route', 'get', '192.0.2.1']);
    expect(out.code).not.toBe(0);
    expect(out.stderr).toMatch(/unreachable/i);
    // The veths exist only inside the hosts.
    const root = await import('node:child_process').then((cp) => cp.execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' }));
    for (const name of res.linkNames) expect(root).not.toMatch(new RegExp(`^\\d+: ${name}[@:]`, 'm'));
  });

  test('sshd answers OpenSSH with the bed key, verifying the host key', async () => {
    const out = await bed.source.execOk('ssh', bed.sshArgv(bed.target, 'hostname; id -u').slice(1));
    expect(out.stdout).toBe('godwit-b\n0\n');
    // And back: every host runs sshd on its own address only.
    const back = await bed.target.execOk('ssh', bed.sshArgv(bed.source, 'hostname').slice(1));
    expect(back.stdout).toBe('godwit-a\n');
    const listen = await bed.target.execOk('ss', ['-Htln']);
    expect(listen.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/)[3])).toEqual([`${bed.target.address}:22`]);
  });

  test('the host init reaps orphans', async () => {
    await bed.target.execOk('sh', ['-c', '(sleep 0.1 &) ; true']);
    await new Promise((r) => setTimeout(r, 1500));
    const ps = await bed.target.execOk('ps', ['-e', '-o', 'stat=,comm=']);
    expect(ps.stdout.split('\n').filter((l) => l.trim().startsWith('Z'))).toEqual([]);
  });

  test('spawn: a long command can be signalled and reports its status', async () => {
    const p = bed.target.spawn('sleep', ['30']);
    const pid = await p.pid();
    expect(pid).toBeGreaterThan(0);
    const status = await p.stop('SIGTERM');
    expect(status).toEqual({ code: null, signal: 'SIGTERM' });
    expect(bedLeftovers({ dir: '/nonexistent', pids: [pid!], startTimes: {}, linkNames: [], namespaces: [] })).toEqual([]);
  });

  test('mountTmpfs: a small disk inside one host only fills up with ENOSPC', async () => {
    const dir = join(bed.dir, 'small-disk');
    await bed.target.mountTmpfs(dir, 1 << 20);
    const fill = await bed.target.exec('dd', ['if=/dev/zero', `of=${dir}/f`, 'bs=64k', 'count=32']);
    expect(fill.code).not.toBe(0);
    expect(fill.stderr).toMatch(/No space left on device/);
    // Not mounted here or on the other host.
    expect((await bed.source.execOk('cat', ['/proc/self/mountinfo'])).stdout).not.toContain(dir);
    expect((await bed.target.execOk('cat', ['/proc/self/mountinfo'])).stdout).toContain(dir);
    await expect(bed.target.mountTmpfs(dir, 10)).rejects.toThrow(/at least 4096 bytes/);
  });

  test('exec: timeout kills the command with a clear error', async () => {
    await expect(bed.source.exec('sleep', ['30'], { timeoutMs: 200 })).rejects.toThrow(/sleep 30 on host godwit-a: timed out after 200 ms/);
  });

  test('destroy removes every process, namespace, link and directory, and is idempotent', async () => {
    const other = await createHosts();
    const r = other.resources();
    expect(bedLeftovers(r).length).toBeGreaterThan(0);
    await Promise.all([other.destroy(), other.destroy()]);
    await other.destroy();
    expect(bedLeftovers(r)).toEqual([]);
  });
});

describe('teardown on failure', () => {
  test('a throwing test body still tears the bed down (withHosts)', async () => {
    let res: BedResources | undefined;
    await expect(withHosts(async (b) => {
      res = b.resources();
      await b.source.execOk('true');
      throw new Error('test body failed');
    })).rejects.toThrow('test body failed');
    expect(bedLeftovers(res!)).toEqual([]);
  });

  test.each(['hosts', 'link', 'sshd'] as const)('a failure after stage "%s" removes what was made', async (stage) => {
    const before = unshareChildren();
    // Other test processes may create beds meanwhile: look only at slots owned by this process.
    const mine = (): string[] => readdirSync(BEDS_ROOT).filter((d) => {
      try {
        return readFileSync(join(BEDS_ROOT, d, 'owner'), 'utf8').startsWith(`${process.pid} `);
      } catch {
        return false;
      }
    });
    const dirsBefore = mine();
    const err = await createHosts({ failAfter: stage }).then(() => undefined, (e: Error & { cause?: Error }) => e);
    expect(err?.message).toMatch(/cannot create the test bed/);
    expect(err?.cause?.message).toContain(`after stage "${stage}"`);
    expect(unshareChildren().filter((p) => !before.includes(p))).toEqual([]);
    expect(mine()).toEqual(dirsBefore);
  });

  test('a host that does not come up in time is reported and removed', async () => {
    const before = unshareChildren();
    await expect(createHosts({ readyTimeoutMs: 1 })).rejects.toThrow(/cannot create the test bed/);
    expect(unshareChildren().filter((p) => !before.includes(p))).toEqual([]);
  });

  test('bad options are refused before anything is created', async () => {
    await expect(createHosts({ count: 1 })).rejects.toThrow(/count must be an integer from 2 to 26/);
    await expect(createHosts({ names: ['a b', 'c'] })).rejects.toThrow(/"a b" is not a valid hostname/);
    await expect(createHosts({ sshd: [5] })).rejects.toThrow(/sshd host index 5/);
  });

  test.each(['SIGTERM', 'SIGINT', 'SIGKILL'] as const)('the owning process gets %s: nothing of the bed survives', async (signal) => {
    const child = spawn(process.execPath, [join(FIXTURES, 'bed-holder.js')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<[number | null, string | null]>((r) => child.once('exit', (c, s) => r([c, s])));
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        let err = '';
        child.stderr.on('data', (b) => (err += b));
        child.stdout.on('data', (b) => {
          out += b;
          if (out.includes('\n')) resolve(out.split('\n')[0]!);
        });
        child.once('exit', () => reject(new Error(`bed holder exited early: ${err}`)));
      });
      const res = JSON.parse(line) as BedResources;
      expect(bedLeftovers(res).length).toBeGreaterThan(0);
      child.kill(signal);
      expect(await exited).toEqual([null, signal]);
      // SIGKILL leaves no chance to run code: the kernel's parent-death signals end the processes and with them
      // the namespaces; the directory stays until the next createHosts reclaims the stale slot.
      const left = await waitNoLeftovers(res, signal === 'SIGKILL' ? (s) => s.startsWith('directory') : undefined);
      expect(left).toEqual([]);
      if (signal === 'SIGKILL') {
        await withHosts(async () => undefined);
        expect(bedLeftovers(res)).toEqual([]);
      }
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('more than two hosts', () => {
  test('three hosts on a bridge reach each other', async () => {
    await withHosts(async (bed) => {
      expect(bed.hosts.map((h) => h.name)).toEqual(['godwit-a', 'godwit-b', 'godwit-c']);
      for (const from of bed.hosts) {
        for (const to of bed.hosts) {
          if (from === to) continue;
          const r = await from.execOk('timeout', ['5', 'bash', '-c', `exec 3<>/dev/tcp/${to.address}/22; head -c 8 <&3`]);
          expect(r.stdout).toBe('SSH-2.0-');
        }
      }
      const res = bed.resources();
      expect(res.linkNames).toContain(`gw${bed.id}br`);
    }, { count: 3 });
  });
});
