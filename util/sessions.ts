/**
 * Which sessions a restored tree can have: shared by dump (refused before the freeze, so a dump that kills the tree
 * never makes an image restore must refuse) and restore (an image from elsewhere).
 */
/**
 * A task is in its parent's session, or leads its own, or is in the session its parent was born into (a parent
 * that called setsid() after forking it): restore/tree.c forks such children before the parent's setsid().
 * `need` is the session a task must be born into (undefined: any), as tree.c's born_need(). Any other session
 * would need helper tasks that exist only to hand it down (CRIU's), which restore lacks.
 */
export function sessionProblems(tasks: { pid: number; ppid: number; sid: number }[]): string[] {
  const byPid = new Map(tasks.map((t) => [t.pid, t]));
  const kids = new Map<number, typeof tasks>();
  for (const t of tasks) if (byPid.has(t.ppid) && t.ppid !== t.pid) kids.set(t.ppid, [...(kids.get(t.ppid) ?? []), t]);
  const needMemo = new Map<number, number | undefined>();
  const need = (t: (typeof tasks)[number]): number | undefined => {
    if (needMemo.has(t.pid)) return needMemo.get(t.pid);
    let n: number | undefined;
    if (t.sid !== t.pid) n = t.sid || undefined; // 0: a session led from outside a container's namespace
    else
      for (const c of kids.get(t.pid) ?? []) {
        const m = need(c);
        if (m !== undefined && m !== t.sid) {
          n = m;
          break;
        }
      }
    needMemo.set(t.pid, n);
    return n;
  };
  const born = new Map<number, number | undefined>(); // the session a task is in right after its fork
  const out: string[] = [];
  // The root is born in the restorer's session, which stands for the one it had at dump time when it did not
  // lead its own (a session outside the tree); anything else a task needs from there cannot be had.
  const outside = (t: (typeof tasks)[number]) => (t.sid !== t.pid ? t.sid : undefined);
  for (const t of tasks) {
    const p = byPid.get(t.ppid);
    if (!p || p === t) {
      born.set(t.pid, outside(t));
      continue;
    }
    const n = need(t);
    const early = p.sid === p.pid && n !== undefined && n !== p.sid;
    const b = early ? born.get(p.pid) : p.sid;
    born.set(t.pid, b);
    if (n === undefined || n === b) continue;
    out.push(`task ${t.pid} must start in session ${n}, which its parent ${p.pid} (session ${p.sid}) cannot hand down to it: restoring it needs helper tasks, not supported yet`);
  }
  return out;
}
