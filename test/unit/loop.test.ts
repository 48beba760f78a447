import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Logger } from "../../src/logging.js";
import { Loop } from "../../src/scheduler/loop.js";

/** A promise with its resolve/reject exposed, to hold a task mid-run. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A task that fails while `failing.value` is true and counts its calls. */
function flakyTask(failing: { value: boolean }) {
  return vi.fn(async () => {
    if (failing.value) throw new Error("store unavailable");
    return 1;
  });
}

describe("Loop.runOnce", () => {
  it("returns the count the task reports, and 0 when it reports nothing", async () => {
    expect(await new Loop({ name: "t", task: async () => 42 }).runOnce()).toBe(42);
    expect(await new Loop({ name: "t", task: async () => undefined }).runOnce()).toBe(0);
  });

  it("shares one run between concurrent callers", async () => {
    const gate = deferred<number>();
    const task = vi.fn(() => gate.promise);
    const loop = new Loop({ name: "t", task });
    const a = loop.runOnce();
    const b = loop.runOnce();
    expect(b).toBe(a);
    gate.resolve(3);
    expect(await Promise.all([a, b])).toEqual([3, 3]);
    expect(task).toHaveBeenCalledTimes(1);
  });

  it("starts a new run once the previous one has finished", async () => {
    let n = 0;
    const loop = new Loop({ name: "t", task: async () => ++n });
    expect(await loop.runOnce()).toBe(1);
    expect(await loop.runOnce()).toBe(2);
  });

  it("rejects with the task's error, logs it, and runs again next time", async () => {
    const failing = { value: true };
    const task = flakyTask(failing);
    const warn = vi.fn();
    const loop = new Loop({ name: "cleanup", task, log: { warn } as unknown as Logger });
    await expect(loop.runOnce()).rejects.toThrow("store unavailable");
    expect(warn).toHaveBeenCalledWith(expect.objectContaining({ loop: "cleanup", failures: 1 }), expect.any(String));
    failing.value = false;
    expect(await loop.runOnce()).toBe(1);
    expect(task).toHaveBeenCalledTimes(2);
  });

  it("recovers from a task that throws synchronously instead of returning a rejected promise", async () => {
    let calls = 0;
    const task = (() => {
      calls++;
      if (calls === 1) throw new Error("sync failure");
      return Promise.resolve(5);
    }) as () => Promise<number>;
    const loop = new Loop({ name: "t", task });
    await expect(loop.runOnce()).rejects.toThrow("sync failure");
    expect(await loop.runOnce()).toBe(5);
    expect(calls).toBe(2);
  });
});

describe("Loop timing", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("runs at start and then every intervalMs", async () => {
    const task = vi.fn(async () => 0);
    const loop = new Loop({ name: "t", task, intervalMs: 1000 });
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(task).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(task).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(task).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(3000);
    expect(task).toHaveBeenCalledTimes(5);
    await loop.stop();
  });

  it("uses a 30 s interval by default", async () => {
    const task = vi.fn(async () => 0);
    const loop = new Loop({ name: "t", task });
    loop.start();
    await vi.advanceTimersByTimeAsync(29_999);
    expect(task).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(task).toHaveBeenCalledTimes(2);
    await loop.stop();
  });

  it("backs off 1 s, 2 s, 4 s … after consecutive failures, up to maxBackoffMs", async () => {
    const failing = { value: true };
    const task = flakyTask(failing);
    const loop = new Loop({ name: "t", task, intervalMs: 60_000, maxBackoffMs: 5000 });
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(task).toHaveBeenCalledTimes(1);
    // Delay before each further attempt: 1000, 2000, 4000, then capped at 5000.
    let calls = 1;
    for (const delay of [1000, 2000, 4000, 5000, 5000]) {
      await vi.advanceTimersByTimeAsync(delay - 1);
      expect(task).toHaveBeenCalledTimes(calls);
      await vi.advanceTimersByTimeAsync(1);
      expect(task).toHaveBeenCalledTimes(++calls);
    }
    await loop.stop();
  });

  it("returns to the normal interval after a success", async () => {
    const failing = { value: true };
    const task = flakyTask(failing);
    const loop = new Loop({ name: "t", task, intervalMs: 10_000 });
    loop.start();
    await vi.advanceTimersByTimeAsync(0); // fails: next in 1 s
    failing.value = false;
    await vi.advanceTimersByTimeAsync(1000); // succeeds: next in 10 s
    expect(task).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(9_999);
    expect(task).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(task).toHaveBeenCalledTimes(3);
    // And a later failure starts the backoff from 1 s again.
    failing.value = true;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(task).toHaveBeenCalledTimes(4);
    await vi.advanceTimersByTimeAsync(1000);
    expect(task).toHaveBeenCalledTimes(5);
    await loop.stop();
  });

  it("kick() runs at once and restarts the interval from then", async () => {
    const task = vi.fn(async () => 0);
    const loop = new Loop({ name: "t", task, intervalMs: 1000 });
    loop.start();
    await vi.advanceTimersByTimeAsync(600);
    await loop.kick();
    expect(task).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(999);
    expect(task).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(task).toHaveBeenCalledTimes(3);
    await loop.stop();
  });

  it("schedule() moves the next run to the given delay", async () => {
    const task = vi.fn(async () => 0);
    const loop = new Loop({ name: "t", task, intervalMs: 60_000 });
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    loop.schedule(50);
    await vi.advanceTimersByTimeAsync(49);
    expect(task).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(task).toHaveBeenCalledTimes(2);
    await loop.stop();
  });

  it("stop() prevents further runs from the timer, kick() and schedule()", async () => {
    const task = vi.fn(async () => 0);
    const loop = new Loop({ name: "t", task, intervalMs: 1000 });
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(task).toHaveBeenCalledTimes(1);
    await loop.stop();
    await loop.kick();
    loop.schedule(10);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(task).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("stop() waits for the run under way and schedules nothing after it", async () => {
    const gate = deferred<number>();
    const task = vi.fn(() => gate.promise);
    const loop = new Loop({ name: "t", task, intervalMs: 1000 });
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    let stopped = false;
    const stopping = loop.stop().then(() => {
      stopped = true;
    });
    await vi.advanceTimersByTimeAsync(0);
    expect(stopped).toBe(false);
    gate.resolve(1);
    await stopping;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(task).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("can be started again after stop()", async () => {
    const task = vi.fn(async () => 0);
    const loop = new Loop({ name: "t", task, intervalMs: 1000 });
    loop.start();
    await loop.stop();
    loop.start();
    await vi.advanceTimersByTimeAsync(1000);
    expect(task).toHaveBeenCalledTimes(3);
    await loop.stop();
  });
});
