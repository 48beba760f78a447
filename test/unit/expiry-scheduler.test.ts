import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Logger } from "../../src/logging.js";
import { ExpiryScheduler, type ExpiryTarget } from "../../src/scheduler/expiry-scheduler.js";

const T0 = Date.UTC(2025, 0, 1);

/**
 * A store of expire times: expireDue removes up to `batch` that are due by the
 * fake clock, nextExpireTime reports the earliest left. `expired` records when
 * each went, to check that nothing outlives its expire time.
 */
function fakeTarget(batch = 100) {
  const pending = new Set<number>();
  const expired = new Map<number, number>();
  const target = {
    expireDue: vi.fn(async () => {
      const now = Date.now();
      const due = [...pending].filter((t) => t <= now).sort((a, b) => a - b).slice(0, batch);
      for (const t of due) {
        pending.delete(t);
        expired.set(t, now);
      }
      return due.length;
    }),
    nextExpireTime: vi.fn(async () => (pending.size === 0 ? null : Math.min(...pending))),
  } satisfies ExpiryTarget;
  return { target, pending, expired };
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((res) => {
    resolve = res;
  });
  return { promise, resolve };
}

/** Advances the fake clock to T0 + ms, running due timers and the promises they start. */
async function advanceTo(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(T0 + ms - Date.now());
}

describe("ExpiryScheduler", () => {
  let scheduler: ExpiryScheduler | undefined;

  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(T0);
  });
  afterEach(async () => {
    await scheduler?.stop();
    scheduler = undefined;
    vi.useRealTimers();
  });

  function create(target: ExpiryTarget, options: { maxSleepMs?: number; log?: Logger } = {}) {
    scheduler = new ExpiryScheduler(target, { clock: () => Date.now(), ...options });
    return scheduler;
  }

  it("start() sweeps what is overdue before it resolves", async () => {
    const { target, pending, expired } = fakeTarget();
    pending.add(T0 - 60_000).add(T0 - 1).add(T0);
    await create(target).start();
    expect(pending.size).toBe(0);
    expect([...expired.values()]).toEqual([T0, T0, T0]);
  });

  it("start() keeps sweeping in batches until nothing more is due", async () => {
    const { target, pending } = fakeTarget(2);
    for (let i = 1; i <= 5; i++) pending.add(T0 - i);
    await create(target).start();
    expect(pending.size).toBe(0);
    expect(target.expireDue).toHaveBeenCalledTimes(4); // 2, 2, 1, then 0
  });

  it("sleeps until the next expire time and expires it on time", async () => {
    const { target, pending, expired } = fakeTarget();
    pending.add(T0 + 5000);
    await create(target).start();
    expect(target.expireDue).toHaveBeenCalledTimes(1);
    await advanceTo(4999);
    expect(target.expireDue).toHaveBeenCalledTimes(1);
    await advanceTo(5001);
    expect(expired.get(T0 + 5000)).toBeGreaterThanOrEqual(T0 + 5000);
    expect(expired.get(T0 + 5000)).toBeLessThanOrEqual(T0 + 5001);
  });

  it("follows a series of expire times, each on time", async () => {
    const { target, pending, expired } = fakeTarget();
    const times = [T0 + 1000, T0 + 2500, T0 + 2600, T0 + 20_000];
    for (const t of times) pending.add(t);
    await create(target).start();
    await advanceTo(20_001);
    expect(pending.size).toBe(0);
    for (const t of times) expect(expired.get(t)! - t).toBeLessThanOrEqual(1);
  });

  it("sleeps no longer than maxSleepMs, so it notices expire times it was not told about", async () => {
    const { target, pending, expired } = fakeTarget();
    pending.add(T0 + 100_000);
    await create(target, { maxSleepMs: 30_000 }).start();
    await advanceTo(29_999);
    expect(target.expireDue).toHaveBeenCalledTimes(1);
    await advanceTo(30_000);
    expect(target.expireDue).toHaveBeenCalledTimes(2);
    // Written by another replica: nobody notifies this scheduler, so the next
    // periodic sweep, at most maxSleepMs later, finds it.
    pending.add(T0 + 45_000);
    await advanceTo(59_999);
    expect(pending.has(T0 + 45_000)).toBe(true);
    await advanceTo(60_000);
    expect(expired.get(T0 + 45_000)).toBe(T0 + 60_000);
    await advanceTo(100_001);
    expect(expired.get(T0 + 100_000)).toBeLessThanOrEqual(T0 + 100_001);
  });

  it("sweeps every 30 s by default when nothing is pending", async () => {
    const { target } = fakeTarget();
    await create(target).start();
    await advanceTo(29_999);
    expect(target.expireDue).toHaveBeenCalledTimes(1);
    await advanceTo(30_000);
    expect(target.expireDue).toHaveBeenCalledTimes(2);
    await advanceTo(60_000);
    expect(target.expireDue).toHaveBeenCalledTimes(3);
  });

  it("notify() with an earlier time wakes it earlier", async () => {
    const { target, pending, expired } = fakeTarget();
    pending.add(T0 + 20_000);
    const s = create(target);
    await s.start();
    await advanceTo(1000);
    pending.add(T0 + 3000);
    s.notify(T0 + 3000);
    await advanceTo(3001);
    expect(expired.get(T0 + 3000)).toBeLessThanOrEqual(T0 + 3001);
    expect(pending.has(T0 + 20_000)).toBe(true);
  });

  it("notify() with a later time does not postpone the wake-up already set", async () => {
    const { target, pending, expired } = fakeTarget();
    pending.add(T0 + 5000);
    const s = create(target);
    await s.start();
    pending.add(T0 + 8000);
    s.notify(T0 + 8000);
    await advanceTo(5001);
    expect(expired.get(T0 + 5000)).toBeLessThanOrEqual(T0 + 5001);
    await advanceTo(8001);
    expect(expired.get(T0 + 8000)).toBeLessThanOrEqual(T0 + 8001);
  });

  it("notify() for times beyond maxSleepMs does not push back the periodic sweep", async () => {
    const { target, pending, expired } = fakeTarget();
    pending.add(T0 + 3_600_000);
    const s = create(target, { maxSleepMs: 30_000 });
    await s.start();
    pending.add(T0 + 25_000); // another replica's, never notified here
    await advanceTo(10_000);
    pending.add(T0 + 3_000_000);
    s.notify(T0 + 3_000_000);
    await advanceTo(20_000);
    pending.add(T0 + 2_400_000);
    s.notify(T0 + 2_400_000);
    await advanceTo(30_000);
    expect(expired.get(T0 + 25_000)).toBe(T0 + 30_000);
  });

  it("remembers a time notified during a sweep that the sweep did not see", async () => {
    const gate = deferred<number>();
    const target: ExpiryTarget = {
      expireDue: vi.fn().mockReturnValueOnce(Promise.resolve(0)).mockReturnValueOnce(gate.promise).mockResolvedValue(0),
      nextExpireTime: vi.fn(async () => null),
    };
    const s = create(target, { maxSleepMs: 30_000 });
    await s.start();
    await advanceTo(30_000); // the periodic sweep starts and hangs on the gate
    expect(target.expireDue).toHaveBeenCalledTimes(2);
    s.notify(T0 + 32_000);
    gate.resolve(0);
    await advanceTo(31_999);
    expect(target.expireDue).toHaveBeenCalledTimes(2);
    await advanceTo(32_001);
    expect(target.expireDue).toHaveBeenCalledTimes(3);
  });

  it("notify() for a time already past sweeps at once", async () => {
    const { target, pending, expired } = fakeTarget();
    const s = create(target);
    await s.start();
    await advanceTo(10_000);
    pending.add(T0 + 9000);
    s.notify(T0 + 9000);
    await vi.advanceTimersByTimeAsync(0);
    expect(expired.get(T0 + 9000)).toBe(T0 + 10_000);
  });

  it("retries about 1 s after a failed sweep, and logs the failure", async () => {
    const { target, pending, expired } = fakeTarget();
    pending.add(T0 - 1);
    const real = target.expireDue.getMockImplementation()!;
    target.expireDue.mockRejectedValueOnce(new Error("database is locked"));
    const warn = vi.fn();
    await create(target, { log: { warn } as unknown as Logger }).start();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(pending.size).toBe(1);
    target.expireDue.mockImplementation(real);
    await advanceTo(999);
    expect(target.expireDue).toHaveBeenCalledTimes(1);
    await advanceTo(1001);
    expect(expired.get(T0 - 1)).toBe(T0 + 1001);
  });

  it("retries about 1 s after nextExpireTime fails instead of sleeping the full maxSleepMs", async () => {
    const { target, pending, expired } = fakeTarget();
    pending.add(T0 + 5000);
    target.nextExpireTime.mockRejectedValueOnce(new Error("connection reset"));
    await create(target, { maxSleepMs: 30_000 }).start();
    await advanceTo(1001);
    expect(target.expireDue).toHaveBeenCalledTimes(2);
    await advanceTo(5001);
    expect(expired.get(T0 + 5000)).toBeLessThanOrEqual(T0 + 5001);
  });

  it("keeps retrying while sweeps fail", async () => {
    const { target } = fakeTarget();
    target.expireDue.mockRejectedValue(new Error("down"));
    await create(target).start();
    await advanceTo(5010);
    expect(target.expireDue.mock.calls.length).toBeGreaterThanOrEqual(5);
  });

  it("runOnce() shares one sweep between concurrent callers and returns its count", async () => {
    const { target, pending } = fakeTarget();
    pending.add(T0 - 2).add(T0 - 1);
    const s = create(target);
    const a = s.runOnce();
    const b = s.runOnce();
    expect(b).toBe(a);
    expect(await a).toBe(2);
    expect(target.expireDue).toHaveBeenCalledTimes(1);
  });

  it("stop() stops: no more sweeps from the timer or notify()", async () => {
    const { target, pending } = fakeTarget();
    pending.add(T0 + 5000);
    const s = create(target);
    await s.start();
    await s.stop();
    s.notify(T0 + 1000);
    await advanceTo(120_000);
    expect(target.expireDue).toHaveBeenCalledTimes(1);
    expect(pending.size).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("stop() during a sweep waits for it and schedules nothing after it", async () => {
    const gate = deferred<number>();
    const target: ExpiryTarget = { expireDue: vi.fn(() => gate.promise), nextExpireTime: vi.fn(async () => null) };
    const s = create(target);
    const starting = s.start();
    const stopping = s.stop();
    gate.resolve(0);
    await Promise.all([starting, stopping]);
    await advanceTo(120_000);
    expect(target.expireDue).toHaveBeenCalledTimes(1);
    expect(target.nextExpireTime).not.toHaveBeenCalled();
    expect(vi.getTimerCount()).toBe(0);
  });
});
