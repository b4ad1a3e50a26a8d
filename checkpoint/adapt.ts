/** native/helper.ts's Helper seen as the DumpHelper that checkpoint/ code is written against. */
import type { Helper } from '../native/helper';
import type { DumpHelper, SeizeStatus } from './helperapi';

const STATUS: Record<string, SeizeStatus> = {
  stopped: 'stopped',
  'group-stopped': 'group-stopped',
  zombie: 'zombie',
  vanished: 'vanished',
  timeout: 'timeout',
  'already-seized': 'already',
};

export function dumpHelper(h: Helper): DumpHelper {
  const components = new Map(h.info.xsaveComponents.map((c) => [c.index, { offset: c.offset, size: c.size }]));
  return {
    xsave: { xcr0: h.info.xcr0, size: h.info.xsaveSize, components },
    async seize(tids, opts) {
      const r = await h.seize(tids, { vanished: 'report', ...(opts?.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) });
      return r.map((t) => ({ tid: t.tid, status: STATUS[t.status] ?? 'vanished', stopSignal: t.stopSignal }));
    },
    async threadRegs(tids) {
      const r = await h.threadRegs(tids);
      return r.map((t) => ({
        tid: t.tid,
        regs: t.regs,
        restart: t.restart,
        xsave: t.xsave ?? Buffer.alloc(0),
        fpregs: t.fpregs ?? Buffer.alloc(0),
        sigmask: t.sigmask,
        pending: t.pending,
        ...(t.rseq ? { rseq: { pointer: t.rseq.abiPointer, size: t.rseq.abiSize, signature: t.rseq.signature } } : {}),
        robustList: t.robustList,
        robustListLen: t.robustListLen,
        tls: t.tls,
      }));
    },
    async dumpProcess(pid, tids, posixTimers) {
      const s = await h.dumpProcess(pid, tids, posixTimers);
      return {
        pid: s.pid,
        sigactions: s.sigactions,
        itimers: s.itimers.map((t) => ({
          which: t.which,
          intervalSec: t.interval.sec,
          intervalUsec: t.interval.usec,
          valueSec: t.value.sec,
          valueUsec: t.value.usec,
        })),
        posixTimers: s.posixTimers.map((t) => ({
          id: t.id,
          intervalSec: t.interval.sec,
          intervalNsec: t.interval.nsec,
          valueSec: t.value.sec,
          valueNsec: t.value.nsec,
          overrun: t.overrun,
        })),
        dumpable: s.dumpable,
        childSubreaper: s.childSubreaper !== 0,
        sharedPending: s.sharedPending,
        rlimits: s.rlimits,
        threads: s.threads.map((t) => ({
          tid: t.tid,
          altstackSp: t.altstack.sp,
          altstackFlags: t.altstack.flags,
          altstackSize: t.altstack.size,
          clearTidAddress: t.clearTidAddress,
          pdeathsig: t.pdeathsig,
        })),
      };
    },
    async readPages(pid, starts, lengths, sink) {
      const r = await h.readPages(
        pid,
        starts.map((s, i) => ({ start: s, length: lengths[i]! })),
        sink,
      );
      return { bytes: r.bytes };
    },
    presentPages: (pid, ranges, keepFile) => h.presentPages(pid, ranges, keepFile),
    peekPipe: (pid, fd) => h.peekPipe(pid, fd),
    peekSocket: (pid, fd) => h.peekSocket(pid, fd),
    async unixDiag(inodes, netnsPid) {
      const r = await h.unixDiag(inodes.map(BigInt), netnsPid);
      return r.map((s) => ({
        inode: Number(s.inode),
        type: s.type,
        state: s.state,
        peerInode: Number(s.peerInode),
        name: s.name,
        pendingConnections: s.pendingConnections.map(Number),
        rqlen: s.rqlen,
        wqlen: s.wqlen,
        shutdown: s.shutdown,
        vfsDev: Number(s.vfsDev),
        vfsIno: Number(s.vfsIno),
      }));
    },
    sockOpts: (pid, fd) => h.sockOpts(pid, fd),
    inetSock: (pid, fd) => h.inetSock(pid, fd),
    tcpRepairOn: (socks) => h.tcpRepairOn(socks),
    tcpRepairDump: (pid, fd) => h.tcpRepairDump(pid, fd),
    tcpRepairOff: (release) => h.tcpRepairOff(release),
    async detach() {
      await h.detach();
    },
    async kill(pids) {
      await h.kill(pids);
    },
    close: () => h.close(),
  };
}
