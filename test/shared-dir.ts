/**
 * Where shared/ is: beside the repository (the CI clone, /work/main), or beside the main checkout when
 * running from a git worktree (whose .git file points into the main repository's .git/worktrees).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '..', '..');

export function sharedDir(): string {
  const candidates = [path.resolve(repoRoot, '..', 'shared')];
  const dotGit = path.join(repoRoot, '.git');
  if (fs.existsSync(dotGit) && fs.statSync(dotGit).isFile()) {
    const m = /^gitdir:\s*(.+)$/m.exec(fs.readFileSync(dotGit, 'utf8'));
    if (m) {
      // <main>/.git/worktrees/<name> -> <main>
      const main = path.resolve(repoRoot, m[1].trim(), '..', '..', '..');
      candidates.push(path.resolve(main, '..', 'shared'));
    }
  }
  for (const c of candidates) if (fs.existsSync(c)) return c;
  throw new Error(`shared/ not found (looked at ${candidates.join(', ')}): it must sit beside the repository`);
}

export function fixturesDir(): string {
  return path.join(sharedDir(), 'fixtures');
}
