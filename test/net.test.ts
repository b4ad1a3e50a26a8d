/**
 * A container's net namespace through CRIU's images and back: lo + a veth with IPv4/IPv6 addresses, routes, MTU
 * and MAC are dumped from a real namespace, the namespace is destroyed, and restoreNetns rebuilds it in a fresh
 * one whose host end joins another "host" (a bridge, or a peer address); `ip -json` output must match (the
 * ifindex too) and pings (198.19.x and 2001:2::/48 only, inside test namespaces) must pass across the restored
 * veth. Failures midway leave no veth behind; what cannot be restored is refused by name.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { collectNetns, dumpNetns, nftTables } from '../checkpoint/net';
import { ipIn, ipJson, sysctlIn } from '../checkpoint/net-ip';
import { decodeImage } from '../images';
import { routesForRestore, savedAddresses, savedRoutes } from '../images/ipdump';
import { ImageError, UsageError } from '../util/errors';
import { ImageDirWriter } from '../images/imagedir';
import { verifyImageDir } from '../images/verify';
import { restoreNetns, vethConfigFromFlags } from '../restore/net';
import { FreshNamespaces, createFreshNamespaces } from '../restore/ns-content';
import { runContainer } from '../scenarios/container/bundle';
import { NetHost, addContainerVeth, createNetHost, pingFrom } from '../scenarios/netns';

jest.setTimeout(60_000);

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f().catch(() => undefined);
});

async function freshNet(): Promise<FreshNamespaces> {
  const ns = await createFreshNamespaces(['net']);
  cleanups.push(() => ns.destroy());
  return ns;
}
async function host(opts: Parameters<typeof createNetHost>[0] = {}): Promise<NetHost> {
  const h = await createNetHost(opts);
  cleanups.push(() => h.destroy());
  return h;
}
function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-net-'));
  cleanups.push(async () => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}
const plainWriter = (dir: string) => ({ writeFile: (n: string, d: Uint8Array | Uint8Array[]) => fs.promises.writeFile(path.join(dir, n), Buffer.concat([d].flat())) });

/** What must survive: links (index, name, MTU, MAC, flags, state) and their addresses. */
async function linkView(ns: number | string): Promise<unknown[]> {
  const links = await ipJson<Record<string, any>>(ns, ['addr', 'show']);
  return links.map((l) => ({
    ifindex: l.ifindex,
    ifname: l.ifname,
    flags: l.flags,
    mtu: l.mtu,
    operstate: l.operstate,
    address: l.address,
    addrs: (l.addr_info ?? []).map((a: any) => ({ family: a.family, local: a.local, prefixlen: a.prefixlen, scope: a.scope, broadcast: a.broadcast, nodad: a.nodad })),
  }));
}
async function routeView(ns: number | string): Promise<unknown> {
  return {
    v4: await ipJson(ns, ['-4', 'route', 'show', 'table', 'all']),
    v6: await ipJson(ns, ['-6', 'route', 'show', 'table', 'all']),
    rules4: await ipJson(ns, ['-4', 'rule', 'show']),
  };
}
/**
 * Waits (up to 5 s) until NS shows BEFORE's links and routes: the veth's carrier comes after its host end is up,
 * and the kernel adds the IPv6 link-local route only then. The caller then compares them.
 */
async function settled(ns: number, before: { links: unknown[]; routes: unknown }): Promise<void> {
  const want = JSON.stringify(before);
  for (let i = 0; i < 100; i++) {
    if (JSON.stringify({ links: await linkView(ns), routes: await routeView(ns) }) === want) return;
    await new Promise((res) => setTimeout(res, 50));
  }
}
async function linkNames(ns: string): Promise<string[]> {
  return (await ipJson<{ ifname: string }>(ns, ['link', 'show'])).map((l) => l.ifname).sort();
}

describe('iproute2 dumps (images/ipdump.ts)', () => {
  it('parses real dumps and turns every damage into an ImageError', async () => {
    const ctr = await freshNet();
    const src = await host();
    await addContainerVeth(ctr.pid, src, { subnet: 12, routes: true });
    const dumps = {
      addr: (await ipIn(ctr.pid, ['addr', 'save'])).stdout,
      route: (await ipIn(ctr.pid, ['route', 'save'])).stdout,
    };
    expect(savedAddresses(dumps.addr, 'a').map((a) => `${a.local}/${a.prefixlen}`)).toEqual(expect.arrayContaining(['127.0.0.1/8', '::1/128', '198.19.12.2/24', '2001:2:0:12::2/64']));
    expect(savedRoutes(dumps.route, 'r').find((r) => r.dst === '198.19.112.0/24')).toMatchObject({ gateway: '198.19.12.1', table: 254 });
    // 3,000 single-byte changes and truncations: a result or an ImageError, nothing else.
    let rnd = 12345;
    const next = (n: number): number => ((rnd = (rnd * 1103515245 + 12345) & 0x7fffffff), rnd % n);
    for (let i = 0; i < 3000; i++) {
      const base = i % 2 ? dumps.addr : dumps.route;
      let b = Buffer.from(base);
      if (i % 3 === 0) b = b.subarray(0, next(b.length));
      else b[next(b.length)] ^= 1 + next(255);
      try {
        if (i % 2) savedAddresses(b, 'f');
        else savedRoutes(b, 'f'), routesForRestore(b, 'f');
      } catch (e) {
        expect(e).toBeInstanceOf(ImageError);
      }
    }
  });
});

describe('net namespace dump and restore', () => {
  it('round-trips lo + veth (addresses, routes, MTU, MAC) into a fresh namespace behind a bridge, and pings across it', async () => {
    const src = await host();
    const ctr = await freshNet();
    await addContainerVeth(ctr.pid, src, { subnet: 7, ifindex: 17, mtu: 1400, mac: '02:00:c6:13:07:02', routes: true });
    await ipIn(ctr.pid, ['addr', 'add', '198.19.250.1/32', 'dev', 'lo']);
    expect(await pingFrom(ctr.pid, '198.19.7.1')).toBe(true);
    const before = { links: await linkView(ctr.pid), routes: await routeView(ctr.pid) };

    const dir = tmpDir();
    const info = await dumpNetns(ctr.pid, plainWriter(dir), { nsId: 3 });
    expect(info.files.sort()).toEqual(['ifaddr-3.img', 'netdev-3.img', 'netns-3.img', 'route-3.img', 'route6-3.img', 'rule-3.img']);
    expect(info.links.map((l) => [l.name, l.type, l.ifindex, l.mtu, l.mac, l.up])).toEqual([
      ['lo', 'loopback', 1, 65536, undefined, true],
      ['eth0', 'veth', 17, 1400, '02:00:c6:13:07:02', true],
    ]);
    expect(info.links[1].addresses).toEqual(expect.arrayContaining(['198.19.7.2/24', '2001:2:0:7::2/64']));
    expect(info.routes).toBeGreaterThanOrEqual(3);
    // CRIU's images: netdev entries and iproute2 dumps that name the veth by its ifindex.
    const netdev = decodeImage(fs.readFileSync(path.join(dir, 'netdev-3.img')), 'netdev-3.img').entries.map((e) => e.msg);
    expect(netdev[1]).toMatchObject({ type: 2, ifindex: 17, mtu: 1400, name: 'eth0', address: Buffer.from([2, 0, 0xc6, 0x13, 7, 2]) });
    expect(Number(netdev[1].flags) & 0x1).toBe(1);
    expect(netdev[1].peer_nsid).toBeDefined();
    const addrs = savedAddresses(fs.readFileSync(path.join(dir, 'ifaddr-3.img')), 'ifaddr');
    expect(addrs).toEqual(expect.arrayContaining([expect.objectContaining({ ifindex: 17, local: '198.19.7.2', prefixlen: 24 }), expect.objectContaining({ ifindex: 1, local: '198.19.250.1' })]));
    expect(savedRoutes(fs.readFileSync(path.join(dir, 'route-3.img')), 'route').map((r) => r.dst)).toEqual(expect.arrayContaining(['198.19.107.0/24', '198.18.7.9/32']));

    // The container's namespace goes (and its veth with it); the target host has a bridge with .1.
    await ctr.destroy();
    await src.destroy();
    const dst = await host({ bridge: 'gwbr0', addrs: ['198.19.7.1/24', '2001:2:0:7::1/64'] });
    const ctr2 = await freshNet();
    const r = await restoreNetns(ctr2.pid, dir, { nsId: 3, hostNetns: dst.path, veth: { hostName: 'gwv-rt', bridge: 'gwbr0' } });
    cleanups.push(() => r.cleanup());
    expect(r.hostIfname).toBe('gwv-rt');
    // Usable at once: no address waits for duplicate address detection, and the DAD setting is back as it was.
    const tentative = (await ipJson<{ addr_info: Array<{ local: string; tentative?: boolean }> }>(ctr2.pid, ['addr', 'show'])).flatMap((l) => l.addr_info.filter((a) => a.tentative));
    expect(tentative).toEqual([]);
    expect(fs.existsSync(`/proc/${ctr2.pid}/ns/net`)).toBe(true);
    expect(await sysctlIn(ctr2.pid, 'net/ipv6/conf/eth0/accept_dad')).toBe('1');
    expect(r.hostIfnames).toEqual({ eth0: 'gwv-rt' });
    const master = (await ipJson<{ master?: string }>(dst.path, ['link', 'show', 'dev', 'gwv-rt']))[0].master;
    expect(master).toBe('gwbr0');

    await settled(ctr2.pid, before);
    expect(await linkView(ctr2.pid)).toEqual(before.links);
    expect(await routeView(ctr2.pid)).toEqual(before.routes);
    expect(await pingFrom(ctr2.pid, '198.19.7.1')).toBe(true);
    expect(await pingFrom(dst.path, '198.19.7.2')).toBe(true);
    expect(await pingFrom(ctr2.pid, '2001:2:0:7::1')).toBe(true);

    await r.cleanup();
    expect(await linkNames(dst.path)).toEqual(['gwbr0', 'lo']);
    expect(await linkNames(ctr2.nsPath('net'))).toEqual(['lo']);
  });

  it('gives the host end a peer address, and a restore failing midway leaves no veth behind', async () => {
    const src = await host();
    const ctr = await freshNet();
    await addContainerVeth(ctr.pid, src, { subnet: 8, routes: true });
    const dir = tmpDir();
    // Through a real image directory (manifest last), as the container dump writes it.
    const w = await ImageDirWriter.create(path.join(dir, 'img'), { compress: 'none' });
    await dumpNetns(ctr.pid, w, { nsId: 5 });
    await w.finish();
    const img = path.join(dir, 'img');
    const report = await verifyImageDir(img);
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    const dst = await host();

    for (const step of ['links', 'addresses', 'routes'] as const) {
      const fresh = await freshNet();
      await expect(restoreNetns(fresh.pid, img, { nsId: 5, hostNetns: dst.path, veth: { peerAddr: '198.19.8.1/24' }, failAfter: step })).rejects.toThrow(
        new RegExp(`failed while restoring ${step}: fault injected after ${step}`),
      );
      expect(await linkNames(dst.path)).toEqual(['lo']);
      expect(await linkNames(fresh.nsPath('net'))).toEqual(['lo']);
    }

    // A clash with a host link is found before anything is made.
    await dst.ip(['link', 'add', 'gwtaken', 'type', 'vxlan', 'id', '9', 'dstport', '4789']);
    const fresh = await freshNet();
    await expect(restoreNetns(fresh.pid, img, { nsId: 5, hostNetns: dst.path, veth: { hostName: 'gwtaken' } })).rejects.toThrow(/host end name gwtaken is taken/);
    await expect(restoreNetns(fresh.pid, img, { nsId: 5, hostNetns: dst.path, veth: { bridge: 'nobr0' } })).rejects.toThrow(/bridge nobr0 does not exist/);
    await expect(restoreNetns(fresh.pid, img, { nsId: 5, hostNetns: dst.path, veth: { bridge: 'gwtaken' } })).rejects.toThrow(/gwtaken .* is a vxlan link, not a bridge/);
    await expect(restoreNetns(fresh.pid, img, { nsId: 5, hostNetns: dst.path, veth: { peerAddr: 'x/99' } })).rejects.toThrow(/peer address "x\/99"/);
    await expect(restoreNetns(fresh.pid, img, { nsId: 6, hostNetns: dst.path })).rejects.toThrow(/netdev-6.img is missing/);
    // A damaged dump is refused before anything is made.
    const bad = path.join(dir, 'bad');
    fs.mkdirSync(bad);
    for (const f of fs.readdirSync(img)) if (f.endsWith('.img')) fs.copyFileSync(path.join(img, f), path.join(bad, f));
    const route = fs.readFileSync(path.join(bad, 'route-5.img'));
    fs.writeFileSync(path.join(bad, 'route-5.img'), route.subarray(0, route.length - 7));
    await expect(restoreNetns(fresh.pid, bad, { nsId: 5, hostNetns: dst.path })).rejects.toThrow(/route-5.img: at offset \d+: netlink message length/);
    fs.copyFileSync(path.join(bad, 'ifaddr-5.img'), path.join(bad, 'route-5.img'));
    await expect(restoreNetns(fresh.pid, bad, { nsId: 5, hostNetns: dst.path })).rejects.toThrow(/not an iproute2 route dump: magic 0x47361222 \(an addr dump\)/);
    expect(await linkNames(dst.path)).toEqual(['gwtaken', 'lo']);
    // Never into the host's own namespace.
    await expect(restoreNetns(dst.path, img, { nsId: 5, hostNetns: dst.path })).rejects.toThrow(/is the host's own namespace/);
    await dst.ip(['link', 'del', 'gwtaken']);

    const r = await restoreNetns(fresh.pid, img, { nsId: 5, hostNetns: dst.path, veth: { peerAddr: '198.19.8.1/24', hostName: 'gwv-peer' } });
    cleanups.push(() => r.cleanup());
    // A namespace that is not fresh is refused.
    const again = await restoreNetns(fresh.pid, img, { nsId: 5, hostNetns: dst.path }).catch((e: Error) => e);
    expect(String(again)).toMatch(/is not fresh: it already has eth0/);
    expect(await pingFrom(dst.path, '198.19.8.2')).toBe(true);
    expect(await pingFrom(fresh.pid, '198.19.8.1')).toBe(true);
    // The namespace ends before cleanup (as when a container restore gives up): cleanup still removes the host end.
    await fresh.destroy();
    await r.cleanup();
    expect(await linkNames(dst.path)).toEqual(['lo']);
  });

  it("dumps a runc container's namespace (given a veth by the scenario) and restores it for a new container", async () => {
    const ctr = await runContainer({ hostname: 'gw-net' });
    cleanups.push(() => ctr.destroy());
    const src = await host();
    await addContainerVeth(ctr.pid, src, { subnet: 11, routes: true });
    const before = { links: await linkView(ctr.pid), routes: await routeView(ctr.pid) };
    const dir = tmpDir();
    const info = await dumpNetns(ctr.pid, plainWriter(dir), { nsId: 2 });
    expect(info.links.map((l) => l.name)).toEqual(['lo', 'eth0']);
    await ctr.destroy();
    const dst = await host({ bridge: 'gwbr1', addrs: ['198.19.11.1/24'] });
    const fresh = await freshNet();
    const r = await restoreNetns(fresh.pid, dir, { nsId: 2, hostNetns: dst.path, veth: { bridge: 'gwbr1' } });
    cleanups.push(() => r.cleanup());
    expect(r.hostIfname).toMatch(/^gwv[0-9a-f]{8}$/);
    await settled(fresh.pid, before);
    expect(await linkView(fresh.pid)).toEqual(before.links);
    expect(await routeView(fresh.pid)).toEqual(before.routes);
    expect(await pingFrom(dst.path, '198.19.11.2')).toBe(true);
  });

  it('round-trips a namespace with only lo (what runc gives a container)', async () => {
    const ctr = await freshNet();
    await ipIn(ctr.pid, ['link', 'set', 'lo', 'up']);
    const before = { links: await linkView(ctr.pid), routes: await routeView(ctr.pid) };
    const dir = tmpDir();
    const info = await dumpNetns(ctr.nsPath('net'), plainWriter(dir), { nsId: 1 });
    expect(info.links.map((l) => l.name)).toEqual(['lo']);
    const fresh = await freshNet();
    const r = await restoreNetns(fresh.pid, dir, { nsId: 1 });
    expect(r.hostIfname).toBe('');
    expect(await linkView(fresh.pid)).toEqual(before.links);
    expect(await routeView(fresh.pid)).toEqual(before.routes);
    await r.cleanup();
  });

  it('maps the restore flags and refuses bad ones', () => {
    expect(vethConfigFromFlags({ vethHostName: 'vh0', bridge: 'br0' })).toEqual({ hostName: 'vh0', bridge: 'br0' });
    expect(vethConfigFromFlags({ peerAddr: '198.18.7.1/24' })).toEqual({ peerAddr: '198.18.7.1/24' });
    expect(() => vethConfigFromFlags({ bridge: 'br0', peerAddr: '198.18.7.1/24' })).toThrow(UsageError);
    expect(() => vethConfigFromFlags({ vethHostName: 'a-name-longer-than-15' })).toThrow(/--veth-host-name/);
    expect(() => vethConfigFromFlags({ peerAddr: '198.18.7.1' })).toThrow(/ADDRESS\/PREFIX/);
  });

  it('refuses what it cannot restore, naming it', async () => {
    const src = await host();
    const ctr = await freshNet();
    await addContainerVeth(ctr.pid, src, { subnet: 9 });
    await ipIn(ctr.pid, ['link', 'add', 'br9', 'type', 'bridge']);
    await ipIn(ctr.pid, ['tuntap', 'add', 'tap9', 'mode', 'tap']);
    await ipIn(ctr.pid, ['link', 'add', 'in0', 'type', 'veth', 'peer', 'name', 'in1']);
    await ipIn(ctr.pid, ['route', 'add', '198.19.9.0/24', 'dev', 'eth0', 'table', '100']);
    await ipIn(ctr.pid, ['-6', 'rule', 'add', 'from', '2001:2:0:9::/64', 'table', '100']);
    const err = await collectNetns(ctr.pid).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    const msg = String((err as Error).message);
    expect(msg).toMatch(/link br9 \(bridge\) cannot be restored/);
    expect(msg).toMatch(/link tap9 \(tun\) cannot be restored/);
    expect(msg).toMatch(/veth in0 has its peer .* inside the container too/);
    expect(msg).toMatch(/IPv4 route 198\.19\.9\.0\/24 dev eth0 in table 100/);
    expect(msg).toMatch(/IPv6 policy rule .*2001:2:0:9::/);
    // The host's own namespace is not a container's.
    await expect(collectNetns(process.pid)).rejects.toThrow(/is the host's own/);
    await expect(collectNetns(2 ** 22 + 5)).rejects.toThrow(/the process has exited/);
  });

  it('refuses firewall state: nftables tables (through godwit-netutil) and iptables tables', async () => {
    const mktable = path.join(__dirname, '../../native/build/nf-mktable');
    const ctr = await freshNet();
    expect(await nftTables(ctr.pid)).toEqual([]);
    await collectNetns(ctr.pid); // lo only: nothing to refuse
    execFileSync(mktable, [ctr.nsPath('net'), 'nft']);
    expect(await nftTables(ctr.pid)).toEqual(['inet gwtest']);
    await expect(collectNetns(ctr.pid)).rejects.toThrow(/nftables table inet gwtest exists/);
    const ctr2 = await freshNet();
    execFileSync(mktable, [ctr2.nsPath('net'), 'xt']);
    await expect(collectNetns(ctr2.nsPath('net'))).rejects.toThrow(/iptables table filter is loaded/);
    await expect(nftTables('/nonexistent/ns')).rejects.toThrow(/open\(\/nonexistent\/ns\)/);
  });
});
