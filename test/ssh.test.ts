/**
 * transport/ssh.ts against Debian's sshd in the test bed. The client runs inside host A (test/fixtures/ssh-probe),
 * where `godwit migrate` will run: the jest process itself has no route into the bed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, bedLeftovers, type BedResources, type TestBed } from '../scenarios/hosts';
import { parseSshTarget, sshConnect, type SshConnectOptions } from '../transport/ssh';
import {
  checkHostKey,
  entryMatchesHost,
  fingerprintSha256,
  parseKnownHosts,
  parsePublicKeyLine,
} from '../transport/known-hosts';

const PROBE = join(__dirname, 'fixtures', 'ssh-probe.js');

type ProbeResult =
  | { ok: true; result: Record<string, unknown> & { code: number | null; stdout: string; stderr: string } }
  | { ok: false; error: string; code?: string };

let bed: TestBed;
let res: BedResources;
let scratch: string;

beforeAll(async () => {
  bed = await createHosts();
  res = bed.resources();
  scratch = mkdtempSync(join(tmpdir(), 'godwit-ssh-test-'));
});

afterAll(async () => {
  await bed?.destroy();
  if (res) expect(bedLeftovers(res)).toEqual([]);
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Run ssh2 operations from host A. SSH_AUTH_SOCK is cleared: only the given key may be used. */
async function probe(ops: object[], extraEnv: Record<string, string> = {}): Promise<ProbeResult[]> {
  const env = { ...process.env, ...extraEnv };
  delete env.SSH_AUTH_SOCK;
  const r = await bed.source.exec(process.execPath, [PROBE, JSON.stringify(ops)], { env, timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`ssh probe failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as ProbeResult);
}

/** The result of a probe op that must have succeeded; a failure shows its whole error. */
function okResult(r: ProbeResult | undefined): Record<string, unknown> & { code: number | null; stdout: string; stderr: string } {
  if (!r) throw new Error('probe returned no result');
  if (!r.ok) throw new Error(`ssh probe op failed: ${r.error} (${r.code})`);
  return r.result;
}

function conn(extra: Partial<SshConnectOptions> = {}): SshConnectOptions {
  return {
    host: bed.target.ssh!.address,
    port: bed.target.ssh!.port,
    privateKeyPath: bed.clientKeyPath,
    knownHostsFiles: [bed.knownHostsPath],
    // The suite shares 2 cores with everything else: allow a slow handshake (the default is 15 s).
    connectTimeoutMs: 30_000,
    ...extra,
  };
}

describe('ssh2 client against the bed sshd', () => {
  test('exec with known_hosts verification: exit code, stdout, stderr, stdin', async () => {
    const [r1, r2] = await probe([
      { op: 'exec', conn: conn(), command: 'hostname; echo oops >&2; exit 3' },
      { op: 'exec', conn: conn(), command: 'tr a-z A-Z', input: 'hello over ssh\n' },
    ]);
    expect(okResult(r1)).toMatchObject({ code: 3, stdout: 'godwit-b\n', stderr: 'oops\n' });
    expect(r1!.ok && r1!.result.fingerprint).toBe(bed.target.ssh!.hostKeyFingerprint);
    expect(okResult(r2)).toMatchObject({ code: 0, stdout: 'HELLO OVER SSH\n' });
  });

  test('pinned fingerprint: the right one connects, a wrong one is refused naming host and fingerprint', async () => {
    const wrong = bed.source.ssh!.hostKeyFingerprint;
    const [ok, bad] = await probe([
      { op: 'exec', conn: conn({ knownHostsFiles: [], fingerprint: bed.target.ssh!.hostKeyFingerprint }), command: 'echo pinned' },
      { op: 'exec', conn: conn({ knownHostsFiles: [], fingerprint: wrong }), command: 'echo never' },
    ]);
    expect(okResult(ok)).toMatchObject({ code: 0, stdout: 'pinned\n' });
    expect(bad).toMatchObject({ ok: false, code: 'ESSHHOSTKEY' });
    const msg = (bad as { error: string }).error;
    expect(msg).toContain(`ssh ${bed.target.address}:22: host key mismatch`);
    expect(msg).toContain(bed.target.ssh!.hostKeyFingerprint);
    expect(msg).toContain(wrong);
  });

  test('unknown host and changed host key are refused', async () => {
    const empty = join(scratch, 'empty_known_hosts');
    writeFileSync(empty, '');
    // B's address recorded with A's key: what a changed (or spoofed) host key looks like.
    const changed = join(scratch, 'changed_known_hosts');
    writeFileSync(changed, `# old key\n${bed.target.address} ${bed.source.ssh!.hostPublicKey}\n`);
    const [unknown, mismatch] = await probe([
      { op: 'exec', conn: conn({ knownHostsFiles: [empty] }), command: 'echo never' },
      { op: 'exec', conn: conn({ knownHostsFiles: [changed] }), command: 'echo never' },
    ]);
    expect(unknown).toMatchObject({ ok: false, code: 'ESSHHOSTKEY' });
    expect((unknown as { error: string }).error).toMatch(
      new RegExp(`unknown host: its key ssh-ed25519 ${bed.target.ssh!.hostKeyFingerprint.replace(/\+/g, '\\+')} is not in ${empty}`));
    expect(mismatch).toMatchObject({ ok: false, code: 'ESSHHOSTKEY' });
    expect((mismatch as { error: string }).error).toContain(`(${changed}:2)`);
    expect((mismatch as { error: string }).error).toContain(bed.source.ssh!.hostKeyFingerprint);
  });

  test('hashed known_hosts (ssh-keygen -H) verify too', async () => {
    const hashed = join(scratch, 'hashed_known_hosts');
    writeFileSync(hashed, readFileSync(bed.knownHostsPath));
    execFileSync('ssh-keygen', ['-q', '-H', '-f', hashed], { stdio: 'ignore' });
    expect(readFileSync(hashed, 'utf8')).toMatch(/^\|1\|/);
    const [r] = await probe([{ op: 'exec', conn: conn({ knownHostsFiles: [hashed] }), command: 'echo hashed' }]);
    expect(okResult(r)).toMatchObject({ code: 0, stdout: 'hashed\n' });
  });

  test('ssh-agent: the key held by an agent (SSH_AUTH_SOCK) logs in; no key file given', async () => {
    const sock = join(scratch, 'agent.sock');
    const agent = bed.source.spawn('ssh-agent', ['-D', '-a', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 20));
      await bed.source.execOk('ssh-add', ['-q', bed.clientKeyPath], { env: { ...process.env, SSH_AUTH_SOCK: sock } });
      const [r] = await probe([{ op: 'exec', conn: conn({ privateKeyPath: undefined, agent: sock }), command: 'echo via agent' }]);
      expect(okResult(r)).toMatchObject({ code: 0, stdout: 'via agent\n' });
    } finally {
      await agent.stop('SIGTERM');
    }
  });

  test('a key the host does not accept fails as authentication, without any password attempt', async () => {
    const other = join(scratch, 'other_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const [r] = await probe([{ op: 'exec', conn: conn({ privateKeyPath: other }), command: 'echo never' }]);
    expect(r).toMatchObject({ ok: false, code: 'ESSHAUTH' });
    expect((r as { error: string }).error).toContain(`login as root refused with key ${other}`);
  });

  test('connection refused and connect timeout are clear errors', async () => {
    // Port 23: nothing listens (RST at once). .200 of the bed subnet: nobody answers ARP.
    const unused = bed.target.address.replace(/\.\d+$/, '.200');
    const [refused, timeout] = await probe([
      { op: 'exec', conn: conn({ port: 23 }), command: 'true' },
      { op: 'exec', conn: conn({ host: unused, connectTimeoutMs: 500 }), command: 'true' },
    ]);
    expect(refused).toMatchObject({ ok: false, code: 'ESSHCONNECT' });
    expect((refused as { error: string }).error).toMatch(new RegExp(`ssh ${bed.target.address}:23: cannot connect: .*ECONNREFUSED`));
    expect(timeout).toMatchObject({ ok: false, code: 'ETIMEDOUT' });
    expect((timeout as { error: string }).error).toContain(`ssh ${unused}:22: no SSH connection within 500 ms`);
  });

  test('execStream: 32 MiB through sha256sum arrive intact, with bounded buffering (backpressure)', async () => {
    const [r] = await probe([{ op: 'stream', conn: conn(), command: 'sha256sum', bytes: 32 << 20, chunk: 1 << 20 }]);
    expect(r!.ok).toBe(true);
    const out = (r as unknown as { result: { code: number; stdout: string; localSha256: string; waits: number; maxBuffered: number;
      cipher: string; packetsPooled: boolean } }).result;
    expect(out.code).toBe(0);
    // AES-GCM with ssh2's binding here: the packets were padded from the pool (transport/ssh-packets.ts).
    expect({ cipher: out.cipher, pooled: out.packetsPooled }).toEqual({ cipher: 'aes128-gcm@openssh.com', pooled: true });
    expect(out.stdout.split(' ')[0]).toBe(out.localSha256);
    // The sender had to wait for 'drain', and never had more than the channel's 2 MiB high-water mark plus one
    // chunk queued.
    expect(out.waits).toBeGreaterThan(0);
    expect(out.maxBuffered).toBeLessThanOrEqual((2 << 20) + (1 << 20));
  });

  test('channel data sealed natively (transport/ssh-seal.ts) arrives intact across a rekey mid-stream; without it too', async () => {
    const op = { op: 'stream', conn: conn(), command: 'sha256sum', bytes: 24 << 20, chunk: 1 << 20, rekeyAt: 8 << 20 };
    type Out = { code: number; stdout: string; localSha256: string; sealedAtStart: boolean; sealedAtEnd: boolean; rekeyed: boolean };
    const [sealed] = await probe([op]);
    const a = okResult(sealed) as unknown as Out;
    // sshd checks every packet's tag and the order of their nonces: one sealed wrongly ends the connection.
    expect({ code: a.code, sha: a.stdout.split(' ')[0], rekeyed: a.rekeyed, start: a.sealedAtStart, end: a.sealedAtEnd })
      .toEqual({ code: 0, sha: a.localSha256, rekeyed: true, start: true, end: true });
    const [plain] = await probe([op], { GODWIT_SSH_SEAL: '0' });
    const b = okResult(plain) as unknown as Out;
    expect({ code: b.code, sha: b.stdout.split(' ')[0], start: b.sealedAtStart, end: b.sealedAtEnd })
      .toEqual({ code: 0, sha: b.localSha256, start: false, end: false });
  });
});

describe('connection loss mid-stream', () => {
  /** Start an until-lost probe in host A, call `cut` once data flows, return the probe's result. */
  async function streamUntilLost(extra: Partial<SshConnectOptions>, command: string, cut: () => Promise<void>): Promise<ProbeResult & { msAfterStreaming?: number }> {
    const env = { ...process.env };
    delete env.SSH_AUTH_SOCK;
    const p = bed.source.spawn(process.execPath, [PROBE, JSON.stringify([{ op: 'until-lost', conn: conn(extra), command }])], { env });
    try {
      let out = '';
      await new Promise<void>((resolve, reject) => {
        p.child.stdout!.on('data', (b: Buffer) => {
          out += b.toString();
          if (out.includes('streaming\n')) resolve();
        });
        p.exited.then(() => reject(new Error(`probe ended before streaming: ${out}`)), reject);
      });
      await cut();
      await p.exited;
      return JSON.parse(out.trim().split('\n').pop()!);
    } finally {
      await p.stop('SIGKILL', 1000);
    }
  }

  test('the link cut (packets dropped silently): keepalives declare it lost', async () => {
    try {
      const r = await streamUntilLost({ keepaliveIntervalMs: 200, keepaliveCountMax: 2 }, 'cat >/dev/null',
        () => bed.target.setLinkUp(false));
      expect(r).toMatchObject({ ok: false, code: 'ESSHLOST' });
      expect((r as { error: string }).error).toContain(`ssh ${bed.target.address}:22: connection lost while running "cat >/dev/null"`);
      expect((r as { error: string }).error).toContain('stopped answering keepalives');
      // 2 x 200 ms of silence, plus the time to get there: well under the default 15 s.
      expect(r.msAfterStreaming).toBeLessThan(5000);
    } finally {
      await bed.target.setLinkUp(true);
    }
  });

  test('the server side of the session killed: reported as a lost connection', async () => {
    // $PPID of the remote shell is sshd's process for this connection.
    const r = await streamUntilLost({}, 'sleep 0.5; kill -9 $PPID; cat >/dev/null', async () => undefined);
    expect(r).toMatchObject({ ok: false, code: 'ESSHLOST' });
    expect((r as { error: string }).error).toContain('connection lost while running');
  });

  test('after the link is back, new connections work', async () => {
    const [r] = await probe([{ op: 'exec', conn: conn(), command: 'echo back' }]);
    expect(okResult(r)).toMatchObject({ code: 0, stdout: 'back\n' });
  });
});

describe('ssh client: input checks (no connection made)', () => {
  test('an encrypted key without passphrase is refused with the way out', async () => {
    const key = join(scratch, 'enc_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret', '-f', key]);
    await expect(sshConnect({ host: '198.18.0.1', privateKeyPath: key, knownHostsFiles: [] }))
      .rejects.toThrow(/private key .*enc_key is encrypted: load it into ssh-agent/);
  });

  test('a missing key file, a bad port and a malformed pin are refused', async () => {
    await expect(sshConnect({ host: '198.18.0.1', privateKeyPath: join(scratch, 'nope') }))
      .rejects.toThrow(/cannot read private key .*nope/);
    await expect(sshConnect({ host: '198.18.0.1', port: 70000, privateKeyPath: bed.clientKeyPath }))
      .rejects.toThrow(/port 70000 is not a TCP port/);
    await expect(sshConnect({ host: '198.18.0.1', privateKeyPath: bed.clientKeyPath, fingerprint: 'abc' }))
      .rejects.toThrow(/pinned fingerprint "abc" is not of the form SHA256:/);
  });

  test('parseSshTarget', () => {
    expect(parseSshTarget('root@198.18.0.2')).toEqual({ username: 'root', host: '198.18.0.2' });
    expect(parseSshTarget('host-b:2222')).toEqual({ host: 'host-b', port: 2222 });
    expect(parseSshTarget('u@[fd00::2]:22')).toEqual({ username: 'u', host: 'fd00::2', port: 22 });
    expect(() => parseSshTarget('a b')).toThrow(/not an SSH target/);
    expect(() => parseSshTarget('h:99999')).toThrow(/not a TCP port/);
  });
});

describe('known_hosts parsing and matching', () => {
  test('patterns, ports, negation, markers, malformed lines', () => {
    const pub = parsePublicKeyLine(readFileSync(`${bed.clientKeyPath}.pub`, 'utf8'))!;
    const b64 = pub.key.toString('base64');
    const text = [
      `198.18.*.2,!198.18.9.2 ssh-ed25519 ${b64}`,
      `[198.18.0.5]:2222 ssh-ed25519 ${b64} comment here`,
      `@revoked 10.1.1.1 ssh-ed25519 ${b64}`,
      'garbage line',
      `198.18.0.7 ssh-rsa ${b64}`, // type field does not match the blob: skipped
    ].join('\n');
    const entries = parseKnownHosts(text, 'kh');
    expect(entries.map((e) => e.line)).toEqual([1, 2, 3]);
    expect(entryMatchesHost(entries[0]!, '198.18.3.2', 22)).toBe(true);
    expect(entryMatchesHost(entries[0]!, '198.18.9.2', 22)).toBe(false);
    expect(entryMatchesHost(entries[0]!, '198.18.3.2', 2222)).toBe(false);
    expect(entryMatchesHost(entries[1]!, '198.18.0.5', 2222)).toBe(true);
    expect(checkHostKey(entries, '198.18.3.2', 22, pub.key)).toMatchObject({ ok: true });
    expect(checkHostKey(entries, '10.1.1.1', 22, pub.key)).toMatchObject({ ok: false, reason: 'revoked' });
    expect(checkHostKey(entries, '198.18.0.6', 22, pub.key)).toMatchObject({ ok: false, reason: 'unknown' });
    expect(fingerprintSha256(pub.key)).toBe(execFileSync('ssh-keygen', ['-lf', `${bed.clientKeyPath}.pub`], { encoding: 'utf8' }).split(' ')[1]);
  });
});
