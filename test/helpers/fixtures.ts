import * as fs from 'node:fs';
import * as path from 'node:path';

/** The repository root (tests run from dist/test). */
export const repoRoot = path.resolve(__dirname, '..', '..', '..');

/**
 * ../shared/fixtures beside the repository; a git worktree under /work/wt/NAME sits one level deeper than the
 * main checkout, so its parent's parent is tried too.
 */
export function fixturesDir(): string {
  const candidates = [path.resolve(repoRoot, '..', 'shared', 'fixtures'), path.resolve(repoRoot, '..', '..', 'shared', 'fixtures')];
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) throw new Error(`CRIU fixtures not found at ${candidates.join(' or ')}`);
  return found;
}

export function criuFixture(name: 'sleep' | 'pipeline'): string {
  return path.join(fixturesDir(), 'criu-4.2', name);
}
