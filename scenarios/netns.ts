/**
 * Network scenarios for namespace and container tests: a "host" net namespace of its own (never the machine's
 * real one) joined to a container's net namespace by a veth pair, with addresses from the benchmarking ranges
 * only (198.18.0.0/15, and 2001:2::/48 for IPv6, RFC 5180), so nothing can ever be sent elsewhere: neither
 * namespace has a route out. Every namespace is held by a `sleep` that dies with the test process.
 *
 *   const host = await createNetHost({ bridge: 'gwbr0', addrs: ['198.19.7.1/24'] });
 *   const net = await addContainerVeth(ctrPid, host, { subnet: 7 });   // eth0 198.19.7.2/24 in the container
 *   ... await net.destroy(); await host.destroy();
 */
import { execFile } from 'child_process';
import { FreshNamespaces, createFreshNamespaces } from '../restore/ns-content';
import { ipIn } from '../checkpoint/net-ip';

export interface NetHost {
  ns: FreshNamespaces;
  /** The namespace file of this host (what restoreNetns takes as hostNetns). */
  path: string;
  bridge?: string;
  ip(args: string[], input?: Buffer): Promise<string>;
  destroy(): Promise<void>;
}

/** A host namespace with lo up and, optionally, a bridge carrying the given addresses (IPv6 without DAD). */
export async function createNetHost(opts: { bridge?: string; addrs?: string[] } = {}): Promise<NetHost> {
  const ns = await createFreshNamespaces(['net']);
  const path = ns.nsPath('net');
  const ip = async (args: string[], input?: Buffer): Promise<string> => (await ipIn(path, args, input)).stdout.toString();
  try {
    await ip(['link', 'set', 'lo', 'up']);
    if (opts.bridge) {
      await ip(['link', 'add', opts.bridge, 'type', 'bridge']);
      for (const a of opts.addrs ?? []) await ip(['addr', 'add', a, 'dev', opts.bridge, ...(a.includes(':') ? ['nodad'] : [])]);
      await ip(['link', 'set', opts.bridge, 'up']);
    }
  } catch (e) {
    await ns.destroy();
    throw e;
  }
  const h: NetHost = { ns, path, ip, destroy: () => ns.destroy() };
  if (opts.bridge) h.bridge = opts.bridge;
  return h;
}

export interface ContainerVethOptions {
  /** Third octet of 198.19.S.0/24 and the 2001:2:0:S::/64 prefix (default 7). */
  subnet?: number;
  ifname?: string;
  hostIfname?: string;
  ifindex?: number;
  mtu?: number;
  mac?: string;
  /** Extra routes inside the container (through the host end's address). */
  routes?: boolean;
}

export interface ContainerVeth {
  ifname: string;
  hostIfname: string;
  addr4: string;
  addr6: string;
  hostAddr4: string;
  hostAddr6: string;
  /** Removes the pair (from the host side; the container end goes with it). */
  destroy(): Promise<void>;
}

/**
 * A veth between a container's net namespace (pid or namespace file) and `host`: container end with
 * 198.19.S.2/24 + 2001:2:0:S::2/64, host end 198.19.S.1/24 + 2001:2:0:S::1/64 (or enslaved to the host's bridge,
 * which then should carry .1), lo up in the container, and with `routes` a network and a host route behind .1.
 */
export async function addContainerVeth(ctr: number | string, host: NetHost, opts: ContainerVethOptions = {}): Promise<ContainerVeth> {
  const s = opts.subnet ?? 7;
  const ifname = opts.ifname ?? 'eth0';
  const hostIfname = opts.hostIfname ?? `gwh${s}`;
  const ctrPath = typeof ctr === 'number' ? `/proc/${ctr}/ns/net` : ctr;
  const v: ContainerVeth = {
    ifname,
    hostIfname,
    addr4: `198.19.${s}.2`,
    addr6: `2001:2:0:${s}::2`,
    hostAddr4: `198.19.${s}.1`,
    hostAddr6: `2001:2:0:${s}::1`,
    destroy: async () => {
      const present = async (): Promise<boolean> =>
        (await ipIn(host.path, ['-br', 'link', 'show'])).stdout.toString().split('\n').some((l) => l.split(/[\s@]/)[0] === hostIfname);
      // The pair may be going away on its own (the container's namespace just ended): only a veth still there is an error.
      if (await present()) await ipIn(host.path, ['link', 'del', 'dev', hostIfname]).catch(async (e) => {
        if (await present()) throw e;
      });
    },
  };
  const inCtr = (args: string[]): Promise<unknown> => ipIn(ctrPath, args);
  await inCtr([
    'link', 'add', ifname, ...(opts.ifindex ? ['index', String(opts.ifindex)] : []), ...(opts.mac ? ['address', opts.mac] : []),
    'mtu', String(opts.mtu ?? 1500), 'type', 'veth', 'peer', 'name', hostIfname, 'netns', host.path, 'mtu', String(opts.mtu ?? 1500),
  ]);
  try {
    await inCtr(['link', 'set', 'lo', 'up']);
    await inCtr(['addr', 'add', `${v.addr4}/24`, 'dev', ifname]);
    await inCtr(['addr', 'add', `${v.addr6}/64`, 'dev', ifname, 'nodad']);
    await inCtr(['link', 'set', ifname, 'up']);
    if (host.bridge) await host.ip(['link', 'set', hostIfname, 'master', host.bridge]);
    else {
      await host.ip(['addr', 'add', `${v.hostAddr4}/24`, 'dev', hostIfname]);
      await host.ip(['addr', 'add', `${v.hostAddr6}/64`, 'dev', hostIfname, 'nodad']);
    }
    await host.ip(['link', 'set', hostIfname, 'up']);
    if (opts.routes) {
      await inCtr(['route', 'add', `198.19.${(s + 100) % 256}.0/24`, 'via', v.hostAddr4]);
      await inCtr(['route', 'add', `198.18.${s}.9`, 'dev', ifname, 'scope', 'link']);
      await inCtr(['-6', 'route', 'add', `2001:2:0:${s + 100}::/64`, 'via', v.hostAddr6]);
    }
    await waitAddressesSettled(ctrPath);
  } catch (e) {
    await v.destroy().catch(() => undefined);
    throw e;
  }
  return v;
}

/** Waits until no address in the namespace is tentative (IPv6 DAD done), so snapshots of it are stable. */
export async function waitAddressesSettled(ns: number | string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const links = JSON.parse((await ipIn(ns, ['-json', 'addr', 'show'])).stdout.toString() || '[]') as Array<{ ifname: string; addr_info?: Array<{ local: string; tentative?: boolean }> }>;
    const tentative = links.flatMap((l) => (l.addr_info ?? []).filter((a) => a.tentative).map((a) => `${a.local} on ${l.ifname}`));
    if (tentative.length === 0) return;
    if (Date.now() > deadline) throw new Error(`addresses still tentative after ${timeoutMs} ms: ${tentative.join(', ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs busybox ping (one packet) from inside a namespace; resolves true when an answer came. */
export async function pingFrom(ns: number | string, addr: string): Promise<boolean> {
  if (!/^(198\.1[89]\.\d{1,3}\.\d{1,3}|2001:2:[0-9a-f:]*)$/.test(addr)) throw new Error(`pingFrom: ${addr} is outside 198.18.0.0/15 and 2001:2::/48`);
  const path = typeof ns === 'number' ? `/proc/${ns}/ns/net` : ns;
  const argv = [`--net=${path}`, '--', 'busybox', 'ping', ...(addr.includes(':') ? ['-6'] : []), '-c', '1', '-W', '5', addr];
  return new Promise((resolve) => execFile('nsenter', argv, { timeout: 20_000 }, (err) => resolve(!err)));
}
