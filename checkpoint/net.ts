/**
 * A container's network namespace: its links (lo and veth), addresses, routes and rules, read from inside the
 * namespace with iproute2 (checkpoint/net-ip.ts says why) and written as CRIU's images:
 *   netdev-N.img   net_device_entry per link (type, ifindex, mtu, flags, name, MAC, veth peer ifindex/nsid)
 *   netns-N.img    netns_entry (empty: namespace sysctls are not carried yet)
 *   ifaddr-N.img   `ip addr save`        route-N.img  `ip route save`
 *   route6-N.img   `ip -6 route save`    rule-N.img   `ip rule save`  (raw iproute2 dumps, as CRIU keeps them)
 * N is the namespace's id in the image set (ids-PID.img net_ns_id).
 *
 * What restore/net.ts cannot recreate is refused here, before anything is written, with what and where:
 * links other than lo and veth, a veth whose peer is inside the container too, routes outside the main and
 * local tables, IPv6 policy rules, iptables/ip6tables/arptables tables and nftables tables.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { encodeImage } from '../images';
import { savedAddresses, savedRoutes, savedRuleCount } from '../images/ipdump';
import { GodwitError } from '../util/errors';
import { IpLink, NetnsRef, ipIn, ipJson, linksIn, netnsInode, netnsPath } from './net-ip';

/** CRIU's nd_type values (images/proto/ns.proto). */
export const ND_LOOPBACK = 1;
export const ND_VETH = 2;

/** Interface flag bits (linux/if.h) by the names `ip` prints. RUNNING is never printed: derived from operstate. */
const IFF: Record<string, number> = {
  UP: 0x1,
  BROADCAST: 0x2,
  DEBUG: 0x4,
  LOOPBACK: 0x8,
  POINTOPOINT: 0x10,
  NOTRAILERS: 0x20,
  RUNNING: 0x40,
  NOARP: 0x80,
  PROMISC: 0x100,
  ALLMULTI: 0x200,
  MASTER: 0x400,
  SLAVE: 0x800,
  MULTICAST: 0x1000,
  PORTSEL: 0x2000,
  AUTOMEDIA: 0x4000,
  DYNAMIC: 0x8000,
  LOWER_UP: 0x10000,
  DORMANT: 0x20000,
  ECHO: 0x40000,
};
export const IFF_UP = IFF.UP;
export const IFF_NOARP = IFF.NOARP;
export const IFF_PROMISC = IFF.PROMISC;
export const IFF_ALLMULTI = IFF.ALLMULTI;
export const IFF_MULTICAST = IFF.MULTICAST;

/**
 * Devices the kernel makes by itself in every new net namespace when a tunnel driver is built in
 * (net.core.fb_tunnels_only_for_init_net = 0): the restore's fresh namespace gets them again.
 */
const FALLBACK_TUNNELS: Record<string, string> = {
  tunl0: 'ipip',
  gre0: 'gre',
  gretap0: 'gretap',
  erspan0: 'erspan',
  ip_vti0: 'vti',
  ip6_vti0: 'vti6',
  sit0: 'sit',
  ip6tnl0: 'ip6tnl',
  ip6gre0: 'ip6gre',
};

export function linkFlags(l: IpLink): number {
  let f = 0;
  for (const name of l.flags ?? []) f |= IFF[name] ?? 0;
  // The kernel sets IFF_RUNNING for an up device whose operstate is UP or UNKNOWN (netif_oper_up).
  if (f & IFF.UP && (l.operstate === 'UP' || l.operstate === 'UNKNOWN')) f |= IFF.RUNNING;
  return f;
}

export function macBytes(mac: string | undefined): Buffer | undefined {
  if (!mac || !/^[0-9a-f]{2}(:[0-9a-f]{2})+$/i.test(mac)) return undefined;
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export interface NetLinkInfo {
  ifindex: number;
  name: string;
  type: 'loopback' | 'veth';
  mtu: number;
  mac?: string;
  flags: number;
  up: boolean;
  /** veth: the peer's ifindex in its own namespace and the peer namespace's nsid as seen from the container. */
  peerIfindex?: number;
  peerNsid?: number;
  /** `address/prefixlen` of every address on the link, in dump order. */
  addresses: string[];
}

/** Everything a net namespace dump holds, before it is written. */
export interface NetnsDump {
  links: NetLinkInfo[];
  /** net_device_entry messages for netdev-N.img. */
  netdev: Array<Record<string, unknown>>;
  ifaddr: Buffer;
  route: Buffer;
  route6: Buffer;
  rule: Buffer;
  /** Kernel-made fallback tunnels that were down and unaddressed: left out (the new namespace gets its own). */
  skipped: string[];
}

export interface NetnsImageInfo {
  nsId: number;
  files: string[];
  links: NetLinkInfo[];
  routes: number;
  routes6: number;
  rules: number;
  skipped: string[];
}

export interface DumpNetnsOptions {
  /** The namespace's id in the image set (net_ns_id of ids-PID.img): the N of netdev-N.img. */
  nsId: number;
  /** The host's net namespace, which the container's must differ from (default: godwit's own). */
  hostNetns?: NetnsRef;
}

/** Where an image set is written: ImageDirWriter fits (writeFile(name, bytes)). */
export interface NetImageWriter {
  writeFile(name: string, data: Uint8Array | Uint8Array[]): Promise<unknown>;
}

interface IpAddrJson {
  ifindex: number;
  ifname: string;
  addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
}
interface IpRouteJson {
  dst?: string;
  table?: string;
  protocol?: string;
  type?: string;
  dev?: string;
}
interface IpRuleJson {
  priority?: number;
  src?: string;
  table?: string;
  [k: string]: unknown;
}

/** The default IPv6 rules of a new namespace (ip -6 rule save has no image in CRIU's set, so only these pass). */
function isDefaultRule6(r: IpRuleJson): boolean {
  const keys = Object.keys(r).filter((k) => k !== 'priority' && k !== 'src' && k !== 'table');
  return keys.length === 0 && r.src === 'all' && ((r.priority === 0 && r.table === 'local') || (r.priority === 32766 && r.table === 'main'));
}

/** x_tables loaded in the namespace ("iptables table filter"); a table appears once anything used it there. */
function tablesLoaded(target: NetnsRef): Promise<string[]> {
  // /proc/self/net is the net namespace of the reading process: read it from a process inside the namespace.
  const script = 'for f in ip_tables_names ip6_tables_names arp_tables_names; do [ -r /proc/self/net/$f ] && sed "s/^/$f /" /proc/self/net/$f; done; true';
  const tool: Record<string, string> = { ip_tables_names: 'iptables', ip6_tables_names: 'ip6tables', arp_tables_names: 'arptables' };
  return new Promise((resolve, reject) => {
    execFile('nsenter', [`--net=${netnsPath(target)}`, '--', 'sh', '-c', script], { maxBuffer: 1 << 20, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new GodwitError(`cannot list the x_tables of net namespace ${netnsPath(target)}: ${stderr.trim() || err.message}`, { cause: err }));
      else
        resolve(
          stdout
            .split('\n')
            .filter(Boolean)
            .map((l) => {
              const [f, name] = l.split(' ');
              return `${tool[f] ?? f} table ${name}`;
            }),
        );
    });
  });
}

/**
 * Reads the container's net namespace. Refuses (GodwitError listing every problem) a namespace that is the
 * host's, or that holds what restore cannot recreate.
 */
export async function collectNetns(target: NetnsRef, opts: Omit<DumpNetnsOptions, 'nsId'> = {}): Promise<NetnsDump> {
  const where = typeof target === 'number' ? `net namespace of pid ${target}` : `net namespace ${target}`;
  const ino = netnsInode(target);
  const hostIno = opts.hostNetns === undefined ? fs.statSync('/proc/self/ns/net').ino : netnsInode(opts.hostNetns);
  if (ino === hostIno)
    throw new GodwitError(`${where} is the host's own (inode ${ino}): the container shares the host network, there is no namespace of its own to dump`);

  // Everything is read at once (each is its own short `ip` process; this runs while the container is frozen).
  // The saves are taken before the checks: a refused namespace only wastes them.
  const [links, addrs, routes4, routes6, rules6, xtables, nft, ifaddr, route, route6, rule] = await Promise.all([
    linksIn(target),
    ipJson<IpAddrJson>(target, ['addr', 'show']),
    ipJson<IpRouteJson>(target, ['-4', 'route', 'show', 'table', 'all']),
    ipJson<IpRouteJson>(target, ['-6', 'route', 'show', 'table', 'all']),
    ipJson<IpRuleJson>(target, ['-6', 'rule', 'show']),
    tablesLoaded(target),
    nftTables(target),
    ipIn(target, ['addr', 'save']).then((r) => r.stdout),
    ipIn(target, ['route', 'save']).then((r) => r.stdout),
    ipIn(target, ['-6', 'route', 'save']).then((r) => r.stdout),
    ipIn(target, ['rule', 'save']).then((r) => r.stdout),
  ]);
  const problems: string[] = [];
  const addrByIndex = new Map<number, string[]>();
  for (const a of addrs) addrByIndex.set(a.ifindex, (a.addr_info ?? []).map((i) => `${i.local}/${i.prefixlen}`));

  const out: NetLinkInfo[] = [];
  const skipped: string[] = [];
  for (const l of links) {
    const kind = l.linkinfo?.info_kind;
    const flags = linkFlags(l);
    const addresses = addrByIndex.get(l.ifindex) ?? [];
    if (l.link_type === 'loopback') {
      out.push({ ifindex: l.ifindex, name: l.ifname, type: 'loopback', mtu: l.mtu, flags, up: (flags & IFF.UP) !== 0, addresses });
      continue;
    }
    if (kind !== undefined && FALLBACK_TUNNELS[l.ifname] === kind) {
      if (flags & IFF.UP || addresses.length > 0)
        problems.push(`link ${l.ifname} (${kind}, the kernel's fallback tunnel) is ${flags & IFF.UP ? 'up' : 'addressed'}: godwit does not restore tunnels`);
      else skipped.push(l.ifname);
      continue;
    }
    if (kind === 'veth') {
      if (l.link_netnsid === undefined) {
        problems.push(`veth ${l.ifname} has its peer (ifindex ${l.link_index}) inside the container too: godwit restores only veths whose peer is on the host`);
        continue;
      }
      if (l.master !== undefined) problems.push(`veth ${l.ifname} is enslaved to ${l.master} inside the container: godwit does not restore bridges/bonds`);
      const e: NetLinkInfo = { ifindex: l.ifindex, name: l.ifname, type: 'veth', mtu: l.mtu, flags, up: (flags & IFF.UP) !== 0, addresses };
      if (l.address) e.mac = l.address;
      if (l.link_index !== undefined) e.peerIfindex = l.link_index;
      e.peerNsid = l.link_netnsid;
      out.push(e);
      continue;
    }
    problems.push(
      `link ${l.ifname} (${kind ?? l.link_type ?? 'unknown kind'}) cannot be restored: godwit restores only lo and veth links (macvlan, ipvlan, vxlan, tun/tap, bridges, physical devices are not supported)`,
    );
  }

  for (const [family, rs] of [
    ['IPv4', routes4],
    ['IPv6', routes6],
  ] as const) {
    for (const r of rs) {
      const table = r.table ?? 'main';
      if (table === 'main') continue;
      if (table === 'local' && (r.protocol === 'kernel' || r.protocol === undefined)) continue;
      problems.push(
        `${family} route ${r.type && r.type !== 'unicast' ? r.type + ' ' : ''}${r.dst ?? '?'}${r.dev ? ' dev ' + r.dev : ''} in table ${table}${r.protocol ? ' proto ' + r.protocol : ''}: only routes of the main table are carried (CRIU's route images)`,
      );
    }
  }
  for (const r of rules6)
    if (!isDefaultRule6(r)) problems.push(`IPv6 policy rule ${JSON.stringify(r)}: only the default IPv6 rules can be restored (there is no image for IPv6 rules)`);
  for (const t of xtables)
    problems.push(`${t} is loaded: godwit does not dump firewall rules (iptables-save is not used); remove the table or dump without the container's firewall`);
  for (const t of nft) problems.push(`nftables table ${t} exists: godwit does not dump nftables rules`);

  if (problems.length > 0) throw new GodwitError(`${where} cannot be checkpointed:\n  ${problems.join('\n  ')}`, { code: 'EUNSUPPORTED' });

  // Parse what we got back, so a defect shows here and not on the target.
  savedAddresses(ifaddr, 'ip addr save');
  savedRoutes(route, 'ip route save');
  savedRoutes(route6, 'ip -6 route save');
  savedRuleCount(rule, 'ip rule save');

  const netdev = out.map((l) => {
    const m: Record<string, unknown> = {
      type: l.type === 'loopback' ? ND_LOOPBACK : ND_VETH,
      ifindex: l.ifindex,
      mtu: l.mtu,
      flags: l.flags,
      name: l.name,
    };
    const mac = macBytes(l.mac);
    if (mac) m.address = mac;
    if (l.peerIfindex !== undefined) m.peer_ifindex = l.peerIfindex;
    if (l.peerNsid !== undefined) m.peer_nsid = l.peerNsid;
    return m;
  });
  return { links: out, netdev, ifaddr, route, route6, rule, skipped };
}

export function netutilPath(): string {
  return process.env.GODWIT_NETUTIL ?? path.join(__dirname, '../../native/build/godwit-netutil');
}

/** nftables tables in the namespace ("FAMILY NAME"), through godwit-netutil (native/netutil). */
export function nftTables(target: NetnsRef): Promise<string[]> {
  const ns = netnsPath(target);
  return new Promise((resolve, reject) => {
    execFile(netutilPath(), ['nft-tables', ns], { maxBuffer: 16 << 20, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) {
        const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? `${netutilPath()} is missing (make -C native builds it)` : stderr.trim() || err.message;
        reject(new GodwitError(`cannot list the nftables tables of net namespace ${ns}: ${why}`, { cause: err }));
      } else resolve(stdout.split('\n').filter(Boolean));
    });
  });
}

/** File name -> bytes of a collected dump. */
export function netnsImageFiles(d: NetnsDump, nsId: number): Array<{ name: string; data: Buffer }> {
  return [
    { name: `netdev-${nsId}.img`, data: encodeImage('NETDEV', d.netdev) },
    { name: `netns-${nsId}.img`, data: encodeImage('NETNS', [{}]) },
    { name: `ifaddr-${nsId}.img`, data: d.ifaddr },
    { name: `route-${nsId}.img`, data: d.route },
    { name: `route6-${nsId}.img`, data: d.route6 },
    { name: `rule-${nsId}.img`, data: d.rule },
  ];
}

/** Dumps the net namespace of `pid` (the container's own) into the image set. */
export async function dumpNetns(pid: NetnsRef, writer: NetImageWriter, opts: DumpNetnsOptions): Promise<NetnsImageInfo> {
  if (!Number.isInteger(opts.nsId) || opts.nsId <= 0) throw new GodwitError(`dumpNetns: nsId must be a positive integer (the net_ns_id of the image set), got ${opts.nsId}`);
  const d = await collectNetns(pid, opts);
  const files = netnsImageFiles(d, opts.nsId);
  for (const f of files) await writer.writeFile(f.name, f.data);
  return {
    nsId: opts.nsId,
    files: files.map((f) => f.name),
    links: d.links,
    routes: savedRoutes(d.route, 'route').length,
    routes6: savedRoutes(d.route6, 'route6').length,
    rules: savedRuleCount(d.rule, 'rule'),
    skipped: d.skipped,
  };
}
