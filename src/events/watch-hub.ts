/**
 * Fans the event log out to Watch subscribers. One reader per process follows
 * the log (woken by local commits, and by a poll for other replicas' writes)
 * and hands each event to the subscribers whose filter it matches.
 *
 * A subscriber registers before it replays, so the replay (from the store, up
 * to the revision the hub had read at registration) and the live queue (every
 * revision after it) meet with no gap and no duplicate.
 */
import { BrokerError } from "../delegation/errors.js";
import type { DelegationEvent } from "../delegation/model.js";
import type { Logger } from "../logging.js";
import type { DelegationStore, EventFilter } from "../store/store.js";

export type WatchItem =
  | { kind: "event"; revision: bigint; event: DelegationEvent }
  | { kind: "checkpoint"; revision: bigint };

export interface WatchHubOptions {
  /** How often to look for events written by other replicas. By default, 1000 ms. */
  pollMs?: number;
  /** Events a subscriber may have queued before it is cut off. By default, 1000. */
  bufferLimit?: number;
  /** Idle time before a checkpoint is sent. By default, 15 s. */
  checkpointMs?: number;
  /** Events read per query. By default, 500. */
  batchSize?: number;
  log?: Logger;
}

function matches(filter: EventFilter, e: DelegationEvent): boolean {
  if (filter.delegationId && e.delegation.id !== filter.delegationId) return false;
  if (filter.delegatorDid && e.delegation.delegatorDid !== filter.delegatorDid) return false;
  return true;
}

class Subscriber {
  readonly queue: DelegationEvent[] = [];
  overflowed = false;
  private wake: (() => void) | undefined;

  constructor(
    readonly filter: EventFilter,
    private readonly limit: number,
  ) {}

  offer(e: DelegationEvent): void {
    if (this.overflowed || !matches(this.filter, e)) return;
    if (this.queue.length >= this.limit) {
      this.overflowed = true;
      this.queue.length = 0;
    } else {
      this.queue.push(e);
    }
    this.wake?.();
  }

  /** Resolves when something is queued, after `ms`, or on abort. */
  wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.queue.length > 0 || this.overflowed || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      this.wake = done;
    });
  }
}

export class WatchHub {
  private head = 0n;
  private readonly subscribers = new Set<Subscriber>();
  private pumping: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private readonly pollMs: number;
  private readonly bufferLimit: number;
  private readonly checkpointMs: number;
  private readonly batchSize: number;

  constructor(
    private readonly store: DelegationStore,
    private readonly options: WatchHubOptions = {},
  ) {
    this.pollMs = options.pollMs ?? 1000;
    this.bufferLimit = options.bufferLimit ?? 1000;
    this.checkpointMs = options.checkpointMs ?? 15_000;
    this.batchSize = options.batchSize ?? 500;
  }

  /** Reads the current head and starts following the log. */
  async start(): Promise<void> {
    this.head = await this.store.headRevision();
    this.unsubscribe = this.store.onCommit(() => this.kick());
    this.timer = setInterval(() => this.kick(), this.pollMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.unsubscribe?.();
    await this.pumping;
  }

  /** The newest revision handed to subscribers. */
  get revision(): bigint {
    return this.head;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /** Reads new events now (coalesced with a read already under way). */
  kick(): Promise<void> {
    if (this.pumping) {
      this.again = true;
      return this.pumping;
    }
    this.pumping = (async () => {
      try {
        do {
          this.again = false;
          await this.pump();
        } while (this.again);
      } catch (err) {
        this.options.log?.warn({ err }, "watch hub could not read the event log; will retry");
      } finally {
        this.pumping = undefined;
      }
    })();
    return this.pumping;
  }

  private async pump(): Promise<void> {
    for (;;) {
      const events = await this.store.readEvents(this.head, this.batchSize);
      for (const e of events) {
        this.head = e.revision;
        for (const s of this.subscribers) s.offer(e);
      }
      if (events.length < this.batchSize) return;
    }
  }

  /**
   * Events after `startRevision` (0: from now), then live, with a checkpoint
   * once caught up and whenever idle. Ends when `signal` aborts.
   */
  async *watch(startRevision: bigint, filter: EventFilter, signal: AbortSignal): AsyncGenerator<WatchItem> {
    if (startRevision < 0n) {
      throw new BrokerError("INVALID_ARGUMENT", "INVALID_FIELD", "start_revision: must not be negative", { field: "start_revision" });
    }
    if (startRevision > 0n) {
      const pruned = await this.store.prunedThrough();
      if (startRevision < pruned) {
        throw new BrokerError(
          "OUT_OF_RANGE",
          "REVISION_COMPACTED",
          `revision ${startRevision} is no longer kept (oldest kept: ${pruned + 1n}); re-list with ListAgents, then watch from the revision of the first checkpoint`,
          { metadata: { oldest_revision: (pruned + 1n).toString() } },
        );
      }
      const storeHead = await this.store.headRevision();
      if (startRevision > storeHead) {
        throw new BrokerError(
          "OUT_OF_RANGE",
          "REVISION_AHEAD",
          `revision ${startRevision} is ahead of the log (head: ${storeHead}); re-list and watch from 0`,
          { metadata: { head_revision: storeHead.toString() } },
        );
      }
    }
    const sub = new Subscriber(filter, this.bufferLimit);
    this.subscribers.add(sub);
    const caughtUpTo = this.head;
    try {
      let last = startRevision;
      // Replay what the live queue will not carry: (startRevision, caughtUpTo].
      replay: while (startRevision > 0n && last < caughtUpTo) {
        const events = await this.store.readEvents(last, this.batchSize, filter);
        for (const e of events) {
          if (e.revision > caughtUpTo) break replay;
          last = e.revision;
          yield { kind: "event", revision: e.revision, event: e };
          if (signal.aborted) return;
        }
        if (events.length < this.batchSize) break;
      }
      if (last < caughtUpTo) last = caughtUpTo;
      yield { kind: "checkpoint", revision: last };
      while (!signal.aborted) {
        await sub.wait(this.checkpointMs, signal);
        if (signal.aborted) return;
        if (sub.overflowed) {
          throw new BrokerError(
            "RESOURCE_EXHAUSTED",
            "WATCH_SLOW_CONSUMER",
            `the stream fell more than ${this.bufferLimit} events behind; resume with start_revision=${last}`,
            { metadata: { resume_revision: last.toString() } },
          );
        }
        if (sub.queue.length === 0) {
          if (this.head > last) last = this.head;
          yield { kind: "checkpoint", revision: last };
          continue;
        }
        while (sub.queue.length > 0) {
          const e = sub.queue.shift()!;
          if (e.revision <= last) continue;
          last = e.revision;
          yield { kind: "event", revision: e.revision, event: e };
        }
      }
    } finally {
      this.subscribers.delete(sub);
    }
  }
}
