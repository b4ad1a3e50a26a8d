/**
 * Running iproute2's `ip` inside a network namespace (nsenter --net=PATH), for checkpoint/net.ts and
 * restore/net.ts. Why `ip` and not netlink code of our own: CRIU's ifaddr/route/rule images ARE `ip ... save`
 * output and are read back by `ip ... restore`, so iproute2 is needed anyway; its `-json` output covers every
 * link attribute we check (kind, peer, master, flags), and it is the tool an operator already trusts.
 */
import { execFile, spawn } from 'child_process';
import * as fs from 'fs';
import { GodwitError } from '../util/errors';

/** A net namespace: a pid (its /proc/PID/ns/net) or a path to a namespace file. */
export type NetnsRef = number | string;

export function netnsPath(ns: NetnsRef): string {
  return typeof ns === 'number' ? `/proc/${ns}/ns/net` : ns;
}

/** The namespace's identity (inode), or a clear error when the pid or file is gone. */
export function netnsInode(ns: NetnsRef): number {
  const p = netnsPath(ns);
  try {
    return fs.statSync(p).ino;
  } catch (e) {
    throw new GodwitError(`net namespace ${p} is not there (${(e as NodeJS.ErrnoException).code}): ${typeof ns === 'number' ? 'the process has exited' : 'no such namespace file'}`, { cause: e });
  }
}

export function ownNetnsInode(): number {
  return fs.statSync('/proc/self/ns/net').ino;
}

/** ip's output is small (a few KiB per link); a bound keeps a runaway from filling memory. */
const MAX_OUTPUT = 64 << 20;
/** ip answers in milliseconds; 30 s covers a loaded 2-core machine with thousands of routes. */
const IP_TIMEOUT_MS = 30_000;

export interface IpResult {
  stdout: Buffer;
  stderr: string;
}

/**
 * Runs `ip ARGS` in the namespace (godwit's own when `ns` is undefined). A non-zero exit throws a GodwitError
 * with the command, the namespace and ip's own message. Input is a Buffer on a pipe, or `{ file }` given as
 * stdin itself (`ip route restore` seeks in its input: it reads it twice).
 */
export async function ipIn(ns: NetnsRef | undefined, args: string[], input?: Buffer | { file: string }): Promise<IpResult> {
  if (input !== undefined && !Buffer.isBuffer(input)) {
    const fh = await fs.promises.open(input.file, 'r');
    try {
      return await runIp(ns, args, fh.fd);
    } finally {
      await fh.close();
    }
  }
  return runIp(ns, args, input);
}

function runIp(ns: NetnsRef | undefined, args: string[], input: Buffer | number | undefined): Promise<IpResult> {
  const [cmd, argv] = ns === undefined ? ['ip', args] : ['nsenter', [`--net=${netnsPath(ns)}`, '--', 'ip', ...args]];
  const where = ns === undefined ? "godwit's net namespace" : `net namespace ${netnsPath(ns)}`;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: [typeof input === 'number' ? input : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let outLen = 0;
    let err = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, IP_TIMEOUT_MS);
    child.stdout!.on('data', (b: Buffer) => {
      outLen += b.length;
      if (outLen > MAX_OUTPUT) child.kill('SIGKILL');
      else out.push(b);
    });
    child.stderr!.on('data', (b: Buffer) => {
      if (err.length < 65536) err += b.toString();
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new GodwitError(`cannot run ${cmd} (iproute2 and util-linux are needed for network namespaces): ${e.message}`, { cause: e }));
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      const what = `ip ${args.join(' ')} in ${where}`;
      if (timedOut) reject(new GodwitError(`${what}: no answer after ${IP_TIMEOUT_MS / 1000} s`));
      else if (outLen > MAX_OUTPUT) reject(new GodwitError(`${what}: more than ${MAX_OUTPUT} bytes of output`));
      else if (code === 0) resolve({ stdout: Buffer.concat(out), stderr: err });
      else reject(new GodwitError(`${what} failed (${code !== null ? `exit ${code}` : sig}): ${err.trim() || 'no message'}`));
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined); // an early exit is reported through 'close'
      child.stdin.end(Buffer.isBuffer(input) ? input : Buffer.alloc(0));
    }
  });
}

/** `ip -json ARGS` parsed; ip prints an array for every list command. */
export async function ipJson<T = Record<string, unknown>>(ns: NetnsRef | undefined, args: string[]): Promise<T[]> {
  const { stdout } = await ipIn(ns, ['-json', ...args]);
  const text = stdout.toString().trim();
  if (text === '') return [];
  try {
    const v = JSON.parse(text) as unknown;
    if (!Array.isArray(v)) throw new Error('not an array');
    return v as T[];
  } catch (e) {
    throw new GodwitError(`ip -json ${args.join(' ')}: unreadable output (${(e as Error).message}): ${text.slice(0, 200)}`, { cause: e });
  }
}

/** One link as `ip -json -details link show` prints it (the fields godwit uses). */
export interface IpLink {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  operstate?: string;
  link_type?: string;
  address?: string;
  link_index?: number;
  link_netnsid?: number;
  master?: string;
  linkinfo?: { info_kind?: string; info_slave_kind?: string };
}

export function linksIn(ns: NetnsRef | undefined): Promise<IpLink[]> {
  return ipJson<IpLink>(ns, ['-details', 'link', 'show']);
}

/** A sysctl as the namespace sees it (`net/ipv6/conf/eth0/accept_dad`); undefined when it does not exist there. */
export async function sysctlIn(ns: NetnsRef, key: string): Promise<string | undefined> {
  return nsTool(ns, ['cat', `/proc/sys/${key}`]).then(
    (out) => out.trim(),
    () => undefined,
  );
}

/** Writes a sysctl inside the namespace (/proc/sys/net is the opener's namespace: the write runs in it). */
export async function setSysctlIn(ns: NetnsRef, key: string, value: string): Promise<void> {
  await nsTool(ns, ['tee', `/proc/sys/${key}`], value + '\n').catch((e: Error) => {
    throw new GodwitError(`cannot set ${key.replace(/\//g, '.')} = ${value} in net namespace ${netnsPath(ns)}: ${e.message}`, { cause: e });
  });
}

function nsTool(ns: NetnsRef, argv: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('nsenter', [`--net=${netnsPath(ns)}`, '--', ...argv], { maxBuffer: 1 << 20, timeout: IP_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err) reject(new Error(stderr.trim() || err.message));
      else resolve(stdout);
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}
