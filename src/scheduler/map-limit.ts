/** Bounded concurrency for the loop tasks. */

/** Runs `fn` over `items` with at most `limit` in flight; resolves when all settled. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  // At least one lane: with none, nothing would run and every result would be missing.
  const lanes = limit >= 1 ? Math.min(Math.floor(limit), items.length) : 1;
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(lanes, items.length) }, lane));
  return out;
}
