/**
 * The events this process committed lately, kept in memory by revision, so
 * the log's follower need not read back from the database what this
 * process has just written (at an expiry of 2,000 delegations, 2 MB of
 * snapshots read, and parsed, per batch).
 *
 * A read is answered from here only if the revision right after it is here,
 * and then only with the unbroken run of revisions that follows: an event
 * of another replica (or of a transaction of this one whose commit has not
 * been reported yet) is not here, and the reader goes to the database for
 * it. So an answer from here is exactly what the database would give (the
 * same events, in order, none skipped). Events enter once their transaction
 * has committed (SqlConn.afterCommit), never before.
 *
 * The events are shared with every reader: read-only.
 */
import type { DelegationEvent } from "../domain/index.js";
import { Fifo } from "../util/fifo.js";

export class RecentEvents {
  private readonly events = new Map<bigint, DelegationEvent>();
  /** The revisions in the order added: the oldest to drop (not the Map's own order: see Fifo). */
  private readonly order = new Fifo<bigint>();
  /** The highest revision added. */
  private newest = 0n;

  /** At most `capacity` events are kept, the oldest added dropped first; 0 keeps none. */
  constructor(private readonly capacity: number) {}

  get size(): number {
    return this.events.size;
  }

  add(events: readonly DelegationEvent[]): void {
    if (this.capacity === 0) return;
    for (const e of events) {
      this.events.set(e.revision, e);
      this.order.push(e.revision);
      if (e.revision > this.newest) this.newest = e.revision;
    }
    while (this.events.size > this.capacity) this.events.delete(this.order.shift()!);
  }

  /** Drops every event up to `revision` (pruned from the log). */
  forgetThrough(revision: bigint): void {
    for (const r of this.events.keys()) if (r <= revision) this.events.delete(r);
  }

  /**
   * Up to `limit` events from revision `after` + 1 on, without a gap;
   * undefined when that revision is not here, or when the run stops short
   * of the limit at a gap with newer events here beyond it (another
   * replica's in between: the database has them all, in one read).
   */
  read(after: bigint, limit: number): DelegationEvent[] | undefined {
    let next = this.events.get(after + 1n);
    if (!next) return undefined;
    const out: DelegationEvent[] = [];
    while (next && out.length < limit) {
      out.push(next);
      next = this.events.get(next.revision + 1n);
    }
    if (out.length < limit && out[out.length - 1]!.revision < this.newest) return undefined;
    return out;
  }
}
