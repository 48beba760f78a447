/** The token bucket behind the per-principal rate limits, on an injected clock. */
import { describe, expect, it } from "vitest";
import { RateLimiter } from "../../src/server/rate-limiter.js";

function limiter(options: { ratePerSecond: number; burst?: number; maxKeys?: number }) {
  const clock = { now: 1_000 };
  const l = new RateLimiter({ ...options, clock: () => clock.now });
  return { l, clock };
}

describe("RateLimiter", () => {
  it("allows a burst of `burst` calls at once, then refuses", () => {
    const { l } = limiter({ ratePerSecond: 1, burst: 3 });
    expect([l.take("a"), l.take("a"), l.take("a")].every((r) => r.ok)).toBe(true);
    expect(l.take("a").ok).toBe(false);
  });

  it("says when the next token arrives, and that wait is exactly enough", () => {
    const { l, clock } = limiter({ ratePerSecond: 1, burst: 1 });
    expect(l.take("a").ok).toBe(true);
    clock.now += 250;
    const r = l.take("a");
    expect(r).toEqual({ ok: false, retryAfterMs: 750 });
    clock.now += 749;
    expect(l.take("a").ok).toBe(false);
    clock.now += 1;
    expect(l.take("a").ok).toBe(true);
  });

  it("refills continuously at the rate, not in steps, and never beyond the burst", () => {
    const { l, clock } = limiter({ ratePerSecond: 10, burst: 5 });
    for (let i = 0; i < 5; i++) expect(l.take("a").ok).toBe(true);
    expect(l.take("a")).toEqual({ ok: false, retryAfterMs: 100 });
    clock.now += 100;
    expect(l.take("a").ok).toBe(true);
    expect(l.take("a").ok).toBe(false);
    clock.now += 60_000; // a long idle refills to 5, not 600
    for (let i = 0; i < 5; i++) expect(l.take("a").ok).toBe(true);
    expect(l.take("a").ok).toBe(false);
  });

  it("a refused call does not consume: the advertised wait stays true", () => {
    const { l, clock } = limiter({ ratePerSecond: 2, burst: 1 });
    l.take("a");
    for (let i = 0; i < 10; i++) expect(l.take("a")).toEqual({ ok: false, retryAfterMs: 500 });
    clock.now += 500;
    expect(l.take("a").ok).toBe(true);
  });

  it("keeps one bucket per key: exhausting one caller leaves another untouched", () => {
    const { l } = limiter({ ratePerSecond: 1, burst: 2 });
    l.take("a");
    l.take("a");
    expect(l.take("a").ok).toBe(false);
    expect(l.take("b").ok).toBe(true);
    expect(l.take("b").ok).toBe(true);
  });

  it("supports rates below one per second (per-minute limits) with integer retry times", () => {
    const { l } = limiter({ ratePerSecond: 3 / 60, burst: 3 });
    for (let i = 0; i < 3; i++) l.take("a");
    const r = l.take("a");
    expect(r).toEqual({ ok: false, retryAfterMs: 20_000 });
  });

  it("drops buckets that have been idle long enough to be full again", () => {
    const { l, clock } = limiter({ ratePerSecond: 1, burst: 2 });
    for (let i = 0; i < 50; i++) l.take(`k${i}`);
    expect(l.size).toBe(50);
    clock.now += 2_000; // every bucket is full again
    for (let i = 0; i < 30; i++) l.take("busy");
    expect(l.size).toBeLessThan(50);
    // A key that was dropped behaves like a full bucket, as it would have been.
    expect(l.take("k0").ok).toBe(true);
    expect(l.take("k0").ok).toBe(true);
    expect(l.take("k0").ok).toBe(false);
  });

  it("does not drop a bucket that is still refilling", () => {
    const { l, clock } = limiter({ ratePerSecond: 1, burst: 2 });
    l.take("a");
    l.take("a");
    clock.now += 1_000; // one token back, not yet full
    for (let i = 0; i < 10; i++) l.take(`other${i}`);
    expect(l.take("a").ok).toBe(true);
    expect(l.take("a").ok).toBe(false);
  });

  it("tracks at most maxKeys buckets under a flood of distinct callers, evicting the least recently used", () => {
    const { l } = limiter({ ratePerSecond: 1, burst: 1, maxKeys: 100 });
    l.take("kept");
    for (let i = 0; i < 10_000; i++) {
      l.take(`flood${i}`);
      if (i % 50 === 0) l.take("kept"); // recently used, so never the one evicted
    }
    expect(l.size).toBe(100);
    expect(l.take("kept").ok).toBe(false);
    // The first flood keys were evicted: they start again from a full bucket.
    expect(l.take("flood0").ok).toBe(true);
  });

  it("treats a clock stepping backwards as no time passed", () => {
    const { l, clock } = limiter({ ratePerSecond: 1, burst: 1 });
    l.take("a");
    clock.now -= 10_000;
    expect(l.take("a").ok).toBe(false);
  });

  it("rejects a non-positive rate", () => {
    expect(() => new RateLimiter({ ratePerSecond: 0 })).toThrow(RangeError);
  });
});
