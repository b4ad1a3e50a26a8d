/** `godwit inspect DIR`: an image at a glance (process tree, threads, memory, files, namespaces, cgroup, sizes). */
import type { Command } from 'commander';
import { InspectReport, ProcessInfo, inspectImageDir } from '../images/inspect';
import { formatBytes } from './format';
import { printJson } from './output';

function table(rows: string[][], indent: string, rightAligned: number[] = []): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : rightAligned.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd())
    .join('\n') + '\n';
}

function made(r: InspectReport): string {
  const out: string[] = [];
  const m = r.made.manifest;
  if (m) {
    const z = m.compression === 'zstd' ? `zstd level ${m.level ?? '?'}, ${m.chunkSize ? formatBytes(m.chunkSize) : '?'} chunks` : 'none (plain CRIU pages)';
    out.push(`made by godwit ${m.godwit} on ${m.hostname} (kernel ${m.kernel}) at ${m.time}; compression ${z}`);
    if (m.options && Object.keys(m.options).length > 0) out.push(`options: ${JSON.stringify(m.options)}`);
    if (m.convertedFrom) out.push(`converted from ${m.convertedFrom.compression} compression at ${m.convertedFrom.time}`);
  } else {
    out.push('no godwit manifest (a CRIU dump, or unfinished)');
  }
  const inv = r.made.inventory;
  if (inv) out.push(`inventory: image version ${inv.imgVersion ?? '?'}${inv.criuRunId ? `, CRIU run ${inv.criuRunId}` : ''}`);
  const s = r.made.criuStats;
  if (s) {
    out.push(`CRIU stats: frozen ${(s.frozenTimeUs / 1000).toFixed(1)} ms (freezing ${(s.freezingTimeUs / 1000).toFixed(1)} ms, memdump ${(s.memdumpTimeUs / 1000).toFixed(1)} ms, memwrite ${(s.memwriteTimeUs / 1000).toFixed(1)} ms), ${s.pagesWritten} of ${s.pagesScanned} scanned pages written`);
  }
  return out.map((x) => `  ${x}\n`).join('');
}

function tree(r: InspectReport): string {
  const byPid = new Map(r.processes.map((p) => [p.pid, p]));
  const depth = (p: ProcessInfo): number => {
    let d = 0;
    for (let q = byPid.get(p.ppid); q && d < 64; q = byPid.get(q.ppid)) d++;
    return d;
  };
  const rows = [['PID', 'PPID', 'PGID', 'SID', 'STATE', 'THREADS', 'COMM']];
  for (const p of r.processes) {
    rows.push([String(p.pid), String(p.ppid), String(p.pgid), String(p.sid), p.state ?? '?', String(p.threads.length), '  '.repeat(depth(p)) + (p.comm ?? '?')]);
  }
  return table(rows, '  ', [0, 1, 2, 3, 5]);
}

function process1(p: ProcessInfo): string {
  let s = `\nprocess ${p.pid} (${p.comm ?? '?'})${p.exe ? `: exe ${p.exe}` : ''}${p.cwd ? `, cwd ${p.cwd}` : ''}${p.root && p.root !== '/' ? `, root ${p.root}` : ''}\n`;
  s += `  threads: ${p.threads.map((t) => `${t.tid}${t.comm ? ` (${t.comm})` : ''}`).join(', ')}\n`;
  if (p.namespaces) {
    const ns = Object.entries(p.namespaces).map(([k, v]) => `${k} ${v}${p.ownNamespaces?.includes(k) ? '*' : ''}`).join(', ');
    s += `  namespaces: ${ns}${p.ownNamespaces?.length ? '   (* = not the root task\'s)' : ''}${p.uts ? `; uts nodename ${p.uts.nodename}` : ''}\n`;
  }
  if (p.cgroup) {
    const c = p.cgroup.controllers.map((x) => `${x.name}:${x.path}`).join(', ');
    s += `  cgroup: set ${p.cgroup.set}${c ? ` (${c})` : ''}\n`;
  }
  if (p.fds) {
    s += `  files (${p.fds.length}):\n`;
    if (p.fds.length > 0) s += table([['FD', 'TYPE', 'WHAT'], ...p.fds.map((f) => [String(f.fd), f.type, f.what])], '    ', [0]);
  }
  if (p.memory) {
    const m = p.memory;
    s += `  memory: ${m.mappings.length} mappings, resident ${formatBytes(m.resident)}, dumped ${formatBytes(m.dumped)}${m.pagesFile ? ` (in ${m.pagesFile})` : ''}\n`;
    const rows = [['START', 'END', 'PROT', 'RESIDENT', 'DUMPED', 'MAPPING']];
    for (const v of m.mappings) rows.push([v.start, v.end, v.prot, formatBytes(v.resident), formatBytes(v.dumped), v.name]);
    s += table(rows, '    ', [3, 4]);
  }
  return s;
}

export function formatInspect(r: InspectReport): string {
  const t = r.totals;
  let s = `${r.dir}: ${t.processes} process${t.processes === 1 ? '' : 'es'}, ${t.threads} thread${t.threads === 1 ? '' : 's'}, ${t.mappings} mappings; `;
  s += `resident ${formatBytes(t.resident)}, dumped ${formatBytes(t.dumped)}; pages ${formatBytes(t.pagesBytes)} in ${formatBytes(t.pagesFileBytes)} of pages files; `;
  s += `${t.imageFiles} files, ${formatBytes(t.imageBytes)} in all\n`;
  s += made(r);
  s += '\nprocess tree:\n' + tree(r);
  for (const p of r.processes) s += process1(p);
  if (r.problems.length > 0) {
    s += `\nproblems (run godwit verify for a full check):\n`;
    for (const p of r.problems) s += `  - ${p.file}${p.offset !== undefined ? ` at offset ${p.offset}` : ''}: ${p.problem}\n`;
  }
  return s;
}

export function register(program: Command): void {
  program
    .command('inspect')
    .description('show what an image holds: process tree, threads, memory map, files and sockets, namespaces, cgroup, sizes, how it was made')
    .argument('<dir>', 'image directory (godwit or CRIU)')
    .option('--json', 'print the same data as JSON')
    .action(async (dir: string, o: { json?: boolean }) => {
      const r = await inspectImageDir(dir);
      if (o.json) printJson(r);
      else process.stdout.write(formatInspect(r));
    });
}
