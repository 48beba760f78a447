/**
 * The read model behind GetDelegation: delegations kept in memory, so a
 * status check does not touch the database.
 *
 * What a read guarantees:
 * - it reflects every revision of the event log this replica has applied,
 *   and every change this replica committed: while a commit of this process
 *   is not yet applied (the follower runs just after the commit), reads go to
 *   the database, so a caller that revoked through this replica reads REVOKED
 *   at once;
 * - commands counted on this replica are in it as soon as they are counted;
 *   those counted on other replicas (and the rare row changes that write no
 *   event) show within `maxAgeMs`, after which an entry is read again.
 *
 * How: an entry is made by a database read and dropped when an event for its
 * delegation is applied (the next read makes it again, from the row), when it
 * is older than `maxAgeMs` (old ones are swept at each read, so the model
 * holds only what was read lately), or when the model is full (oldest
 * first). An entry
 * read while an event was applied, or while this process had a commit not yet
 * applied, is answered but not kept.
 *
 * The objects it returns are shared between readers: read-only, and their
 * commandsExecuted may move (a count on this replica updates it in place).
 */
import type { Delegation, DelegationEvent } from "../domain/index.js";
import { Fifo } from "../util/fifo.js";

export interface ReadModelSource {
  /** The row as the database has it now. */
  get(id: string): Promise<Delegation | null>;
  /** Told of each revision this process commits, at its commit. */
  onCommit(listener: (revision: bigint) => void): () => void;
}

export interface ReadModelOptions {
  /** Milliseconds an entry is answered from memory before it is read again; 0 turns the model off. By default, 1000. */
  maxAgeMs?: number;
  /** Most delegations kept. By default, 100,000. */
  maxEntries?: number;
  clock?: () => number;
}

interface Entry {
  id: string;
  delegation: Delegation;
  readAt: number;
}

export class DelegationReadModel {
  private readonly entries = new Map<string, Entry>();
  /**
   * Every entry made, in the order made (so by readAt): the oldest to drop.
   * An entry replaced or dropped since is skipped when it comes up (it is no
   * longer the one `entries` holds). Not the Map's own order: see Fifo.
   */
  private readonly order = new Fifo<Entry>();
  private readonly maxAgeMs: number;
  private readonly maxEntries: number;
  private readonly clock: () => number;
  /** The newest revision this process committed, and the newest the follower applied. */
  private committed = 0n;
  private applied = 0n;
  /** Bumped by every apply, so a read that overlapped one is not kept. */
  private epoch = 0;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly source: ReadModelSource,
    options: ReadModelOptions = {},
  ) {
    this.maxAgeMs = options.maxAgeMs ?? 1000;
    this.maxEntries = options.maxEntries ?? 100_000;
    this.clock = options.clock ?? Date.now;
    this.unsubscribe = source.onCommit((revision) => {
      if (revision > this.committed) this.committed = revision;
    });
  }

  /** Where the follower starts: what is committed up to there is in the database, which every miss reads. */
  startAt(revision: bigint): void {
    if (revision > this.applied) this.applied = revision;
  }

  /** How many delegations are held (for tests and health). */
  get size(): number {
    return this.entries.size;
  }

  async get(id: string): Promise<Delegation | null> {
    const now = this.clock();
    this.dropOld(now);
    const entry = this.entries.get(id);
    const current = this.committed <= this.applied;
    if (entry && current && now - entry.readAt < this.maxAgeMs) return entry.delegation;
    if (entry) this.entries.delete(id);
    const epoch = this.epoch;
    const d = await this.source.get(id);
    // Kept only if nothing was applied meanwhile and every commit of this process is applied.
    if (d && this.maxAgeMs > 0 && epoch === this.epoch && this.committed <= this.applied) {
      if (this.entries.size >= this.maxEntries) this.dropOldest();
      // A private copy: callers of the source may hold theirs.
      const made = { id, delegation: { ...d }, readAt: now };
      this.entries.set(id, made);
      this.order.push(made);
    }
    return d;
  }

  /**
   * Drops entries too old to answer from, oldest first, stopping at the
   * first young one (entries are made in time order). The model then holds
   * only what was read within maxAgeMs, not every delegation read since the
   * start.
   */
  private dropOld(now: number): void {
    for (let e = this.order.peek(); e; e = this.order.peek()) {
      const live = this.entries.get(e.id) === e;
      if (live && now - e.readAt < this.maxAgeMs) return;
      this.order.shift();
      if (live) this.entries.delete(e.id);
    }
  }

  /** Makes room: drops the oldest entry held. */
  private dropOldest(): void {
    for (let e = this.order.shift(); e; e = this.order.shift()) {
      if (this.entries.get(e.id) !== e) continue;
      this.entries.delete(e.id);
      return;
    }
  }

  /** A command counted on this replica: the held delegation shows it at once (counts only grow). */
  counted(id: string, commandsExecuted: number): void {
    const entry = this.entries.get(id);
    if (entry && commandsExecuted > entry.delegation.commandsExecuted) entry.delegation.commandsExecuted = commandsExecuted;
  }

  /** A LogConsumer: every delegation an event changed is read again next time. */
  readonly apply = (events: readonly DelegationEvent[]): void => {
    this.epoch++;
    for (const e of events) this.entries.delete(e.delegation.id);
    const last = events[events.length - 1];
    if (last && last.revision > this.applied) this.applied = last.revision;
  };

  close(): void {
    this.unsubscribe();
    this.entries.clear();
    this.order.clear();
  }
}
