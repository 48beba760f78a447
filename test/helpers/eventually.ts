/** Waiting for something the broker does on its own (a background worker, a stream), without guessing a sleep. */

/** Resolves once `check` holds (polled every 20 ms), or fails naming `what` after `ms`. */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
