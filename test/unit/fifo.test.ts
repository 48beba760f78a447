/** The FIFO queue behind the bounded caches (src/util/fifo.ts). */
import { describe, expect, it } from "vitest";
import { Fifo } from "../../src/util/fifo.js";

describe("Fifo", () => {
  it("gives items back oldest first, and undefined when empty", () => {
    const q = new Fifo<number>();
    expect(q.shift()).toBeUndefined();
    expect(q.peek()).toBeUndefined();
    q.push(1);
    q.push(2);
    expect(q.peek()).toBe(1);
    expect(q.length).toBe(2);
    expect(q.shift()).toBe(1);
    q.push(3);
    expect([q.shift(), q.shift(), q.shift()]).toEqual([2, 3, undefined]);
    expect(q.length).toBe(0);
  });

  it("keeps the order and the length across its compactions", () => {
    const q = new Fifo<number>();
    let next = 0;
    let expected = 0;
    // Always 3,000 queued, so the consumed part passes 4,096 and half the array again and again.
    for (let i = 0; i < 3000; i++) q.push(next++);
    for (let round = 0; round < 50_000; round++) {
      expect(q.shift()).toBe(expected++);
      q.push(next++);
    }
    expect(q.length).toBe(3000);
    const rest: number[] = [];
    for (let x = q.shift(); x !== undefined; x = q.shift()) rest.push(x);
    expect(rest).toEqual(Array.from({ length: 3000 }, (_, i) => expected + i));
  });

  it("empties with clear", () => {
    const q = new Fifo<string>();
    q.push("a");
    q.clear();
    expect(q.length).toBe(0);
    expect(q.shift()).toBeUndefined();
  });
});
