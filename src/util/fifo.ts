/**
 * A first-in, first-out queue: push at the back, shift from the front, both
 * O(1) amortized (an array and the index of its head, compacted once the
 * consumed part is most of it).
 *
 * Why not a Map's insertion order: deleting a Map's first key again and
 * again is slow in V8. A deleted entry stays a hole until the table is
 * rehashed, and each `keys().next()` or for-of from the start walks past
 * every hole before the first live entry. GetDelegation's read model,
 * which swept that way, cost 2.8 µs per get with 10,000 delegations read
 * and 32 µs with 100,000 (`npx tsx bench/read-model.ts`, the churn case,
 * before it moved to this queue; 0.9 and 1.5 µs after).
 */
export class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** The oldest item, left in the queue. */
  peek(): T | undefined {
    return this.items[this.head];
  }

  /** Takes the oldest item out. */
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined; // not kept alive by the queue
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}
