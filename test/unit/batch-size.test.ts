/** The prune batch size: halved when a batch is slow, doubled when a full batch is quick, within its bounds. */
import { describe, expect, it } from "vitest";
import { BatchSize } from "../../src/scheduler/batch-size.js";

const options = { initial: 500, min: 50, max: 5_000, targetMs: 20 };

describe("BatchSize", () => {
  it("starts at its initial size and keeps it while a batch takes between half and twice the target", () => {
    const b = new BatchSize(options);
    expect(b.value).toBe(500);
    for (const ms of [10, 20, 39.9, 40]) b.record(ms, true);
    expect(b.value).toBe(500);
  });

  it("halves after a batch over twice the target, down to its minimum", () => {
    const b = new BatchSize(options);
    b.record(125, true);
    expect(b.value).toBe(250);
    b.record(41, false);
    expect(b.value).toBe(125);
    for (let i = 0; i < 10; i++) b.record(500, true);
    expect(b.value).toBe(50);
  });

  it("doubles after a full batch under half the target, up to its maximum; a batch that was not full leaves it", () => {
    const b = new BatchSize(options);
    b.record(2, false);
    expect(b.value).toBe(500);
    b.record(9.9, true);
    expect(b.value).toBe(1_000);
    for (let i = 0; i < 10; i++) b.record(1, true);
    expect(b.value).toBe(5_000);
  });

  it("follows a cost that changes: slow rows shrink it, fast rows grow it back", () => {
    const b = new BatchSize(options);
    const perRowMs = (n: number, us: number) => (n * us) / 1000;
    // 60 µs a row (SQLite events with a random index entry each): settles where a batch takes 10–40 ms.
    for (let i = 0; i < 20; i++) b.record(perRowMs(b.value, 60), true);
    expect(perRowMs(b.value, 60)).toBeGreaterThanOrEqual(10);
    expect(perRowMs(b.value, 60)).toBeLessThanOrEqual(40);
    // 2 µs a row: it grows to the maximum.
    for (let i = 0; i < 20; i++) b.record(perRowMs(b.value, 2), true);
    expect(b.value).toBe(5_000);
  });

  it.each([
    [{ ...options, min: 0 }],
    [{ ...options, max: 10 }],
    [{ ...options, initial: 10_000 }],
    [{ ...options, targetMs: 0 }],
    [{ ...options, min: 1.5 }],
  ])("refuses bounds that cannot hold (%o)", (o) => {
    expect(() => new BatchSize(o)).toThrow(/batch size/);
  });
});
