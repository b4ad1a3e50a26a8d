/** Ending a tree a test restored (detached): shared by the container tests' afterEach. */
import type { RestoreResult } from '../../restore';

/** SIGKILL the restored root (its pid namespace, when it is the init of one, goes with it), then give its
 *  restorer up to 5 s to notice and exit. */
export async function endRestoredRoot(restored: RestoreResult | undefined): Promise<void> {
  const root = restored?.rootPid;
  if (!root) return;
  try {
    process.kill(root, 'SIGKILL');
  } catch {
    /* gone */
  }
  if (!restored.restorer) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([restored.restorer.waitExit(), new Promise((r) => (timer = setTimeout(r, 5000)))]);
  clearTimeout(timer);
}
