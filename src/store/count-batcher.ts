/**
 * Group commit for AuthorizeCommand's common ALLOW: the plain counts that
 * arrive while one statement is running wait for it, and then go together
 * in the next one (LifecycleSql.countMany): one statement and one commit for
 * many commands, of one delegation or many. Every caller is answered after
 * the commit that counted its command, with the counters as they stood
 * after it (a delegation counted k times in a batch gives its k callers the
 * k successive counts, in arrival order). A delegation the batch could not
 * count as a whole (its budget nearly spent, ended, expired, unverified) is
 * answered "not counted here", and each of its callers is counted one by one
 * by the exact path. A failed statement fails every caller in it: nothing of
 * it was written.
 *
 * No call waits for a batch to fill: when nothing is running, the first
 * count goes at the end of the current turn of the event loop, with whatever
 * else arrived in that turn.
 */
export interface Counted {
  commandsExecuted: number;
  maxCommands: number;
}

/** Runs one batch: counts per delegation, the latest `now` of its calls, and their freshness bound. */
export type CountMany = (counts: ReadonlyMap<string, number>, now: number, freshSince: number | undefined) => Promise<Map<string, Counted>>;

interface Waiting {
  id: string;
  now: number;
  freshSince: number | undefined;
  resolve: (r: Counted | null) => void;
  reject: (err: unknown) => void;
}

export class CountBatcher {
  private queue: Waiting[] = [];
  private running = false;

  constructor(
    private readonly countMany: CountMany,
    /** Most commands per statement. */
    private readonly maxBatch = 512,
  ) {}

  /** The counters after this command was counted, or null when it must be counted one by one. */
  count(id: string, now: number, freshSince: number | undefined): Promise<Counted | null> {
    return new Promise((resolve, reject) => {
      this.queue.push({ id, now, freshSince, resolve, reject });
      if (!this.running) {
        this.running = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.length <= this.maxBatch ? this.queue : this.queue.slice(0, this.maxBatch);
        this.queue = this.queue.length <= this.maxBatch ? [] : this.queue.slice(this.maxBatch);
        await this.run(batch);
      }
    } finally {
      this.running = false;
    }
  }

  private async run(batch: Waiting[]): Promise<void> {
    const counts = new Map<string, number>();
    // The strictest bounds of the batch: a call they refuse is counted on its own, with its own.
    let now = 0;
    let freshSince: number | undefined;
    for (const w of batch) {
      counts.set(w.id, (counts.get(w.id) ?? 0) + 1);
      if (w.now > now) now = w.now;
      if (w.freshSince !== undefined && (freshSince === undefined || w.freshSince > freshSince)) freshSince = w.freshSince;
    }
    let counted: Map<string, Counted>;
    try {
      counted = await this.countMany(counts, now, freshSince);
    } catch (err) {
      for (const w of batch) w.reject(err);
      return;
    }
    // Each caller's count: the delegation's count before the batch, plus its place among the batch's calls for it.
    const next = new Map<string, number>();
    for (const [id, c] of counted) next.set(id, c.commandsExecuted - counts.get(id)! + 1);
    for (const w of batch) {
      const c = counted.get(w.id);
      if (!c) {
        w.resolve(null);
        continue;
      }
      const n = next.get(w.id)!;
      next.set(w.id, n + 1);
      w.resolve({ commandsExecuted: n, maxCommands: c.maxCommands });
    }
  }
}
