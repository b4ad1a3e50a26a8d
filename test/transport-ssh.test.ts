import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHosts, TestBed } from '../scenarios/hosts';
import { makeTree, readTree, tempDir } from './transport-helpers';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');
let bed: TestBed | undefined;
let work: string;
let src: string;
let files: Record<string, Buffer>;

beforeAll(async () => {
  work = tempDir('ssh');
  src = path.join(work, 'src');
  fs.mkdirSync(src);
  files = makeTree(src);
  bed = await createHosts();
}, 60_000);

afterAll(async () => {
  await bed?.destroy();
  fs.rmSync(work, { recursive: true, force: true });
});

/** `godwit send` run inside the source host, to the target's sshd. */
async function send(dst: string, extra: string[] = []) {
  const ssh = bed!.target.ssh!;
  return bed!.source.exec(process.execPath, [CLI, 'send', src, '--to', `root@${ssh.address}:${dst}`, '--port', String(ssh.port),
    '--identity', bed!.clientKeyPath, '--godwit-path', `${process.execPath} ${CLI}`, '--json', ...extra], { timeoutMs: 60_000 });
}

describe('godwit send between two test hosts over sshd', () => {
  test('a directory arrives byte for byte, host key verified against known_hosts', async () => {
    const dst = path.join(work, 'dst');
    const r = await send(dst, ['--known-hosts', bed!.knownHostsPath]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.files).toBe(Object.keys(files).length);
    const got = readTree(dst);
    expect(Object.keys(got).sort()).toEqual(Object.keys(files).sort());
    for (const [n, d] of Object.entries(files)) expect([n, got[n]!.equals(d)]).toEqual([n, true]);
    expect(fs.statSync(dst).mode & 0o777).toBe(0o700);
  });

  test('a large incompressible file arrives byte for byte: read buffers are reused only once ssh2 has taken them', async () => {
    // 24 chunks of random bytes through sshd's 2 MiB window: ssh2 holds chunks while it waits for window, and a
    // buffer reused too early would arrive with another chunk's bytes (a crc mismatch on the target).
    const big = path.join(work, 'big');
    fs.mkdirSync(big);
    const data = randomBytes(24 << 20);
    fs.writeFileSync(path.join(big, 'pages-9.gwz'), data);
    const dst = path.join(work, 'big-dst');
    const ssh = bed!.target.ssh!;
    const r = await bed!.source.exec(process.execPath, [CLI, 'send', big, '--to', `root@${ssh.address}:${dst}`, '--port', String(ssh.port),
      '--identity', bed!.clientKeyPath, '--known-hosts', bed!.knownHostsPath, '--godwit-path', `${process.execPath} ${CLI}`, '--json'], { timeoutMs: 60_000 });
    expect({ code: r.code, err: r.stderr }).toEqual({ code: 0, err: '' });
    expect(fs.readFileSync(path.join(dst, 'pages-9.gwz')).equals(data)).toBe(true);
  });

  test('the pinned fingerprint must match: a wrong one is refused before anything moves', async () => {
    const dst = path.join(work, 'wrongkey');
    const r = await send(dst, ['--fingerprint', 'SHA256:' + 'A'.repeat(43)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/host key|fingerprint/i);
    expect(fs.existsSync(dst)).toBe(false);
  });

  test('the right pinned fingerprint works', async () => {
    const dst = path.join(work, 'pinned');
    const r = await send(dst, ['--fingerprint', bed!.target.ssh!.hostKeyFingerprint]);
    expect(r.code).toBe(0);
    expect(fs.readFileSync(path.join(dst, 'manifest')).equals(files['manifest']!)).toBe(true);
  });

  test('godwit missing on the target is a clear error naming the host', async () => {
    const dst = path.join(work, 'missing');
    const ssh = bed!.target.ssh!;
    const r = await bed!.source.exec(process.execPath, [CLI, 'send', src, '--to', `root@${ssh.address}:${dst}`, '--port', String(ssh.port),
      '--identity', bed!.clientKeyPath, '--known-hosts', bed!.knownHostsPath, '--godwit-path', '/nonexistent/godwit'], { timeoutMs: 60_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`godwit: command not found on root@${ssh.address.replace(/\./g, '\\.')} — install godwit`));
    expect(fs.existsSync(dst)).toBe(false);
  });
});
