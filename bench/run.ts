/**
 * `npm run bench`: runs each benchmark of bench/ in its own process, one after the other (they measure the whole
 * machine, so never two at once), and prints what each prints. Add a benchmark by adding its module name here.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

// The page path's stages in data-flow order, then the whole operations; native-read and ssh-throughput are
// finer-grained probes of one stage each, run by hand.
const BENCHES = ['container', 'dump', 'restore', 'transport', 'migrate', 'container-cr', 'container-migrate'];

let failed = 0;
for (const name of BENCHES) {
  const file = path.join(__dirname, `${name}.js`);
  if (!fs.existsSync(file)) continue;
  process.stdout.write(`\n== bench/${name} ==\n`);
  const r = spawnSync(process.execPath, [file], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    process.stdout.write(`bench/${name} failed (exit ${r.status ?? r.signal})\n`);
  }
}
process.exitCode = failed ? 1 : 0;
