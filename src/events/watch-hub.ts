/**
 * Fans the event log out to Watch subscribers. The log follower reads each
 * event once per process; the hub hands it to the subscribers whose filter
 * matches, found through indexes (by delegation, by delegator, unfiltered)
 * rather than by testing every subscriber. One WatchItem object per event is
 * shared by all of them, so the transport encodes it once.
 *
 * A subscriber registers before it replays, so the replay (from the store, up
 * to the revision the follower had handed out at registration) and the live
 * queue (every revision after it) meet with no gap and no duplicate.
 *
 * Waking thousands of subscribers is done a chunk at a time, yielding to the
 * event loop in between, so other calls (a revoke, a GetDelegation) are not
 * held up behind the fan-out.
 *
 * Live delivery has two modes. By default the watch generator yields every
 * item (Connect, tests). A transport that can take writes directly passes a
 * LiveSink: once the subscriber is caught up, fan-out writes each item to it
 * synchronously (no promise or generator step per item), pausing while the
 * transport's buffer is full and queueing meanwhile, within the same buffer
 * limit; the generator then only waits for the stream to end.
 */
import { BrokerError, type DelegationEvent, isWatchedEvent } from "../domain/index.js";
import type { Logger } from "../logging.js";
import type { EventFilter, EventLog } from "../store/store.js";
import type { LogFollower } from "./log-follower.js";

export type WatchItem =
  | { kind: "event"; revision: bigint; event: DelegationEvent }
  | { kind: "checkpoint"; revision: bigint };

type EventItem = Extract<WatchItem, { kind: "event" }>;

/** A transport's stream, written directly once a subscriber is live (with items mapped as the watch says). */
export interface LiveSink {
  /** Writes one message; false when the transport's buffer is full (call `resume` once it drained). */
  write(message: unknown): boolean;
  /** Calls `resume` once, when the buffer has drained. */
  onDrain(resume: () => void): void;
}

/** What a watch follows. */
export interface WatchRequest<T> {
  /** Replay events after this revision first (0: only what happens from now on). */
  startRevision: bigint;
  /**
   * The filter, resolved once the stream starts (it may check access and
   * throw); null ends the stream at once, with nothing to send.
   */
  filter: EventFilter | (() => Promise<EventFilter | null>);
  signal: AbortSignal;
  /** The messages the stream carries. */
  map: (item: WatchItem) => T;
  /** Where live messages go directly, if the transport offers it. */
  sink?: LiveSink;
}

export interface WatchHubOptions {
  /** Events a subscriber may have queued before it is cut off. By default, 1000. */
  bufferLimit?: number;
  /** Idle time before a checkpoint is sent. By default, 15 s. */
  checkpointMs?: number;
  /** Events read per replay query. By default, 500. */
  batchSize?: number;
  /** Subscribers woken per turn of the event loop. By default, 256. */
  wakeChunk?: number;
  /** How long close() waits for streams to receive their UNAVAILABLE. By default, 1 s. */
  closeGraceMs?: number;
  /**
   * Told when a fan-out has been handed to every subscriber: the newest event
   * time in it, how many deliveries it made, and the time it finished (clock).
   */
  onFannedOut?: (eventTime: number, deliveries: number, doneAt: number) => void;
  clock?: () => number;
  log?: Logger;
}

class Subscriber {
  private queue: EventItem[] = [];
  private head = 0;
  overflowed = false;
  /** Clock time of the last message sent, for idle checkpoints. */
  lastSent: number;
  checkpointDue = false;
  private waking: (() => void) | undefined;
  /** Push mode: where live items go (as mapped), the revision written last, and whether the sink is full. */
  private sink: LiveSink | undefined;
  private map: (item: WatchItem) => unknown = (item) => item;
  private last = 0n;
  private paused = false;

  constructor(
    readonly filter: EventFilter,
    private readonly limit: number,
    private readonly clock: () => number,
  ) {
    this.lastSent = clock();
  }

  /**
   * Takes a live item: written to the sink at once in push mode (unless it is
   * full), else queued; past the buffer limit the subscriber is marked
   * overflowed and its queue dropped. True if the generator must be woken.
   */
  offer(item: EventItem): boolean {
    if (this.overflowed) return false;
    if (this.sink && !this.paused && !this.pending) {
      this.send(item);
      return false;
    }
    return this.enqueue(item);
  }

  private enqueue(item: EventItem): boolean {
    if (this.queue.length - this.head >= this.limit) {
      this.overflowed = true;
      this.queue = [];
      this.head = 0;
      return true;
    }
    this.queue.push(item);
    return this.sink === undefined;
  }

  /** Push mode from now on: what is queued goes first, after `last`. */
  attach(sink: LiveSink, map: (item: WatchItem) => unknown, last: bigint): void {
    this.sink = sink;
    this.map = map;
    this.last = last;
    this.flush();
  }

  /** A checkpoint, written directly in push mode; false if the subscriber pulls. */
  pushCheckpoint(revision: bigint): boolean {
    if (!this.sink) return false;
    if (this.paused || this.pending) return true; // it is not idle: events are on their way
    if (revision > this.last) this.last = revision;
    this.lastSent = this.clock();
    if (!this.sink.write(this.map({ kind: "checkpoint", revision: this.last }))) this.pause();
    return true;
  }

  private send(item: EventItem): void {
    if (item.revision <= this.last) return;
    this.last = item.revision;
    this.lastSent = this.clock();
    if (!this.sink!.write(this.map(item))) this.pause();
  }

  private pause(): void {
    this.paused = true;
    this.sink!.onDrain(() => {
      this.paused = false;
      this.flush();
    });
  }

  private flush(): void {
    for (let item = this.take(); item; item = this.paused ? undefined : this.take()) {
      this.send(item);
      if (this.paused) break;
    }
  }

  take(): EventItem | undefined {
    if (this.head >= this.queue.length) return undefined;
    const item = this.queue[this.head]!;
    this.queue[this.head++] = undefined as never;
    if (this.head >= this.queue.length) {
      this.queue = [];
      this.head = 0;
    }
    return item;
  }

  get pending(): boolean {
    return this.head < this.queue.length;
  }

  /** Push mode: the revision of the last item written. */
  get lastRevision(): bigint {
    return this.last;
  }

  /** Resolves on the next wake(). */
  wait(): Promise<void> {
    return new Promise((resolve) => {
      this.waking = resolve;
    });
  }

  wake(): void {
    const w = this.waking;
    this.waking = undefined;
    w?.();
  }
}

export class WatchHub {
  private readonly all = new Set<Subscriber>();
  private readonly byDelegation = new Map<string, Set<Subscriber>>();
  private readonly byDelegator = new Map<string, Set<Subscriber>>();
  private count = 0;
  private closing = false;
  private readonly bufferLimit: number;
  private readonly checkpointMs: number;
  private readonly batchSize: number;
  private readonly wakeChunk: number;
  private readonly clock: () => number;
  private ticker: NodeJS.Timeout | undefined;
  private removeConsumer: (() => void) | undefined;
  /** (subscriber, item) pairs waiting to be delivered, flat; `deliveredUpTo` indexes the next. */
  private deliveries: (Subscriber | EventItem)[] = [];
  private deliveredUpTo = 0;
  private delivering = false;
  /** The newest event time among the deliveries queued (for onFannedOut). */
  private fanningTime = 0;
  private readonly ended = new Set<() => void>();

  constructor(
    private readonly store: EventLog,
    private readonly follower: LogFollower,
    private readonly options: WatchHubOptions = {},
  ) {
    this.bufferLimit = options.bufferLimit ?? 1000;
    this.checkpointMs = options.checkpointMs ?? 15_000;
    this.batchSize = options.batchSize ?? 500;
    this.wakeChunk = options.wakeChunk ?? 256;
    this.clock = options.clock ?? Date.now;
  }

  /** Takes events from the follower. */
  start(): void {
    this.removeConsumer = this.follower.add((events) => this.fanOut(events));
    // One timer for every subscriber's idle checkpoint, not one per stream.
    this.ticker = setInterval(() => this.checkIdle(), Math.max(50, Math.min(1000, this.checkpointMs / 4)));
    this.ticker.unref();
  }

  /**
   * Ends every open stream with UNAVAILABLE (naming the revision to resume
   * from) and waits, briefly, for them to go; new watches are refused.
   */
  async close(): Promise<void> {
    this.closing = true;
    this.removeConsumer?.();
    clearInterval(this.ticker);
    if (this.count === 0) return;
    const gone = new Promise<void>((resolve) => {
      const done = () => {
        if (this.count === 0) resolve();
      };
      this.ended.add(done);
      setTimeout(resolve, this.options.closeGraceMs ?? 1000).unref();
    });
    this.options.log?.info({ streams: this.count }, "ending open Watch streams with UNAVAILABLE (shutdown)");
    this.forEach((s) => s.wake());
    await gone;
  }

  /** The newest revision handed to subscribers. */
  get revision(): bigint {
    return this.follower.revision;
  }

  get subscriberCount(): number {
    return this.count;
  }

  private forEach(fn: (s: Subscriber) => void): void {
    for (const s of this.all) fn(s);
    for (const set of this.byDelegation.values()) for (const s of set) fn(s);
    for (const set of this.byDelegator.values()) for (const s of set) fn(s);
  }

  private register(sub: Subscriber): void {
    const { delegationId, delegatorDid } = sub.filter;
    if (delegationId) addTo(this.byDelegation, delegationId, sub);
    else if (delegatorDid) addTo(this.byDelegator, delegatorDid, sub);
    else this.all.add(sub);
    this.count++;
  }

  private unregister(sub: Subscriber): void {
    const { delegationId, delegatorDid } = sub.filter;
    if (delegationId) removeFrom(this.byDelegation, delegationId, sub);
    else if (delegatorDid) removeFrom(this.byDelegator, delegatorDid, sub);
    else this.all.delete(sub);
    this.count--;
    for (const done of this.ended) done();
  }

  /**
   * Queues each event for its subscribers; delivery (a direct write in push
   * mode, else a wake-up) then goes a chunk at a time, in order, with a yield
   * to the event loop between chunks.
   */
  private fanOut(events: readonly DelegationEvent[]): void {
    if (this.count === 0) return;
    const offer = (s: Subscriber, item: EventItem) => {
      this.deliveries.push(s, item);
    };
    for (const event of events) {
      // Decisions go to the audit log only.
      if (!isWatchedEvent(event.type)) continue;
      if (event.eventTime > this.fanningTime) this.fanningTime = event.eventTime;
      const item: EventItem = { kind: "event", revision: event.revision, event };
      const d = event.delegation;
      for (const s of this.all) offer(s, item);
      const one = this.byDelegation.get(d.id);
      if (one) for (const s of one) if (!s.filter.delegatorDid || s.filter.delegatorDid === d.delegatorDid) offer(s, item);
      const mine = this.byDelegator.get(d.delegatorDid);
      if (mine) for (const s of mine) offer(s, item);
    }
    if (!this.delivering) this.deliver();
  }

  /** Delivers one chunk of queued (subscriber, item) pairs, then yields and goes on until none is left. */
  private deliver(): void {
    this.delivering = true;
    const q = this.deliveries;
    const end = Math.min(q.length, this.deliveredUpTo + 2 * this.wakeChunk);
    const woken = new Set<Subscriber>();
    for (let i = this.deliveredUpTo; i < end; i += 2) {
      const s = q[i] as Subscriber;
      if (s.offer(q[i + 1] as EventItem)) woken.add(s);
    }
    this.deliveredUpTo = end;
    for (const s of woken) s.wake();
    if (end < q.length) {
      setImmediate(() => this.deliver());
      return;
    }
    this.options.onFannedOut?.(this.fanningTime, q.length / 2, this.clock());
    this.deliveries = [];
    this.deliveredUpTo = 0;
    this.delivering = false;
    this.fanningTime = 0;
  }

  private wakeInChunks(subs: Subscriber[], from = 0): void {
    const end = Math.min(subs.length, from + this.wakeChunk);
    for (let i = from; i < end; i++) subs[i]!.wake();
    if (end < subs.length) setImmediate(() => this.wakeInChunks(subs, end));
  }

  private checkIdle(): void {
    const due = this.clock() - this.checkpointMs;
    const idle: Subscriber[] = [];
    const head = this.follower.revision;
    this.forEach((s) => {
      if (s.lastSent <= due && !s.pending && !s.pushCheckpoint(head)) {
        s.checkpointDue = true;
        idle.push(s);
      }
    });
    this.wakeInChunks(idle);
  }

  /**
   * Events after `startRevision` (0: from now), then live, with a checkpoint
   * once caught up and whenever idle, each mapped by `map`. Ends when
   * `signal` aborts. With a `sink`, live messages are written to it directly
   * after the first checkpoint.
   */
  async *watch<T>(request: WatchRequest<T>): AsyncGenerator<T> {
    const { startRevision, signal, sink, map } = request;
    const filter = typeof request.filter === "function" ? await request.filter() : request.filter;
    if (filter === null) return;
    if (this.closing) throw shuttingDown(startRevision);
    if (startRevision < 0n) {
      throw new BrokerError("INVALID_ARGUMENT", "INVALID_FIELD", "start_revision: must not be negative", { field: "start_revision" });
    }
    if (startRevision > 0n) await this.checkStart(startRevision);
    // From now: after what this replica has committed (and been told of), so a caller's own create
    // just before is not sent as news. The follower hands it out a moment after the commit.
    else await this.follower.settled(signal);
    if (this.closing) throw shuttingDown(startRevision);
    const sub = new Subscriber(filter, this.bufferLimit, this.clock);
    this.register(sub);
    const wake = () => sub.wake();
    signal.addEventListener("abort", wake, { once: true });
    const caughtUpTo = this.follower.revision;
    let last = startRevision;
    try {
      // Replay what the live queue will not carry: (startRevision, caughtUpTo].
      replay: while (startRevision > 0n && last < caughtUpTo) {
        const events = await this.store.readEvents(last, this.batchSize, filter);
        for (const e of events) {
          if (e.revision > caughtUpTo) break replay;
          last = e.revision;
          if (!isWatchedEvent(e.type)) continue;
          yield map({ kind: "event", revision: e.revision, event: e });
          if (signal.aborted) return;
        }
        if (events.length < this.batchSize) break;
      }
      if (last < caughtUpTo) last = caughtUpTo;
      yield map({ kind: "checkpoint", revision: last });
      sub.lastSent = this.clock();
      if (sink) {
        // Push mode: fan-out writes to the sink; this only waits for the end.
        sub.attach(sink, map as (item: WatchItem) => unknown, last);
        for (;;) {
          if (signal.aborted) return;
          if (this.closing) throw shuttingDown(sub.lastRevision);
          if (sub.overflowed) throw slowConsumer(this.bufferLimit, sub.lastRevision);
          await sub.wait();
        }
      }
      for (;;) {
        if (signal.aborted) return;
        if (this.closing) throw shuttingDown(last);
        if (sub.overflowed) throw slowConsumer(this.bufferLimit, last);
        const item = sub.take();
        if (item) {
          if (item.revision <= last) continue;
          last = item.revision;
          yield map(item);
          sub.lastSent = this.clock();
        } else if (sub.checkpointDue) {
          sub.checkpointDue = false;
          if (this.follower.revision > last) last = this.follower.revision;
          yield map({ kind: "checkpoint", revision: last });
          sub.lastSent = this.clock();
        } else {
          await sub.wait();
        }
      }
    } finally {
      signal.removeEventListener("abort", wake);
      this.unregister(sub);
    }
  }

  private async checkStart(startRevision: bigint): Promise<void> {
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
}

function slowConsumer(limit: number, resume: bigint): BrokerError {
  return new BrokerError(
    "RESOURCE_EXHAUSTED",
    "WATCH_SLOW_CONSUMER",
    `the stream fell more than ${limit} events behind; resume with start_revision=${resume}`,
    { metadata: { resume_revision: resume.toString() } },
  );
}

function shuttingDown(resume: bigint): BrokerError {
  return new BrokerError("UNAVAILABLE", "SHUTTING_DOWN", `the broker is shutting down; resume with start_revision=${resume}`, {
    metadata: { resume_revision: resume.toString() },
  });
}

function addTo(map: Map<string, Set<Subscriber>>, key: string, s: Subscriber): void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(s);
}

function removeFrom(map: Map<string, Set<Subscriber>>, key: string, s: Subscriber): void {
  const set = map.get(key);
  if (!set) return;
  set.delete(s);
  if (set.size === 0) map.delete(key);
}
