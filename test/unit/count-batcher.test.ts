/** Group commit's bookkeeping, against a scripted countMany. */
import { describe, expect, it } from "vitest";
import { type CountMany, type Counted, CountBatcher } from "../../src/store/count-batcher.js";

/** A countMany over in-memory budgets that records each batch. */
function budgets(start: Record<string, { executed: number; max: number }>) {
  const batches: { counts: Record<string, number>; now: number; freshSince: number | undefined }[] = [];
  const countMany: CountMany = async (counts, now, freshSince) => {
    batches.push({ counts: Object.fromEntries(counts), now, freshSince });
    const out = new Map<string, Counted>();
    for (const [id, k] of counts) {
      const b = start[id];
      if (!b || b.executed + k >= b.max) continue;
      b.executed += k;
      out.set(id, { commandsExecuted: b.executed, maxCommands: b.max });
    }
    return out;
  };
  return { countMany, batches };
}

describe("CountBatcher", () => {
  it("sends the counts of one turn together and gives each caller its own count, in arrival order", async () => {
    const { countMany, batches } = budgets({ a: { executed: 10, max: 100 }, b: { executed: 0, max: 100 } });
    const batcher = new CountBatcher(countMany);
    const got = await Promise.all([batcher.count("a", 5, undefined), batcher.count("b", 7, undefined), batcher.count("a", 6, undefined)]);
    expect(batches).toEqual([{ counts: { a: 2, b: 1 }, now: 7, freshSince: undefined }]);
    expect(got).toEqual([
      { commandsExecuted: 11, maxCommands: 100 },
      { commandsExecuted: 1, maxCommands: 100 },
      { commandsExecuted: 12, maxCommands: 100 },
    ]);
  });

  it("answers null for a delegation the batch could not count as a whole, so its callers go one by one", async () => {
    const { countMany } = budgets({ a: { executed: 97, max: 100 }, b: { executed: 0, max: 100 } });
    const batcher = new CountBatcher(countMany);
    const got = await Promise.all([0, 1, 2, 3].map(() => batcher.count("a", 1, undefined)).concat([batcher.count("b", 1, undefined)]));
    expect(got.slice(0, 4)).toEqual([null, null, null, null]);
    expect(got[4]).toEqual({ commandsExecuted: 1, maxCommands: 100 });
  });

  it("uses the strictest freshness bound of the batch", async () => {
    const { countMany, batches } = budgets({ a: { executed: 0, max: 100 } });
    const batcher = new CountBatcher(countMany);
    await Promise.all([batcher.count("a", 1, 50), batcher.count("a", 2, 60)]);
    expect(batches[0]!.freshSince).toBe(60);
  });

  it("fails every caller of a failed statement, and serves the next batch afterwards", async () => {
    let fail = true;
    const batcher = new CountBatcher(async (counts) => {
      if (fail) throw new Error("database gone");
      return new Map([...counts].map(([id, k]) => [id, { commandsExecuted: k, maxCommands: 10 }]));
    });
    const failed = await Promise.allSettled([batcher.count("a", 1, undefined), batcher.count("b", 1, undefined)]);
    expect(failed.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    fail = false;
    expect(await batcher.count("a", 2, undefined)).toEqual({ commandsExecuted: 1, maxCommands: 10 });
  });

  it("splits a queue longer than maxBatch, and what arrives during a statement goes in the next", async () => {
    const { countMany, batches } = budgets({ a: { executed: 0, max: 1000 } });
    const batcher = new CountBatcher(countMany, 3);
    const first = Array.from({ length: 5 }, () => batcher.count("a", 1, undefined));
    const got = await Promise.all(first);
    expect(batches.map((b) => b.counts.a)).toEqual([3, 2]);
    expect(got.map((c) => c!.commandsExecuted)).toEqual([1, 2, 3, 4, 5]);
  });
});
