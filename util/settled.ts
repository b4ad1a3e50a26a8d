/**
 * Waits for every promise, then throws the first failure, if any. For side-by-side steps that each create
 * something: unlike Promise.all, nothing is still being created when the caller starts tearing down.
 */
export async function settled(jobs: Array<Promise<unknown>>): Promise<void> {
  const r = await Promise.allSettled(jobs);
  const bad = r.find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (bad) throw bad.reason;
}
