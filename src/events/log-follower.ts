/**
 * Follows the event log once per process, in revision order, and hands each
 * batch of new events to its consumers: the watch hub (subscribers), the
 * expiry loop (new expire times), the consequence workers and the audit
 * outbox (new work). Woken by the notifier (this process's commits and, on
 * PostgreSQL, every replica's), and by a poll in case a notification is lost.
 */
import type { DelegationEvent } from "../domain/index.js";
import type { Logger } from "../logging.js";
import { Loop, type LoopResult } from "../scheduler/loop.js";
import type { EventLog } from "../store/store.js";
import type { RevisionNotifier } from "./notifier.js";

/** Receives every event once, in revision order, synchronously (it must not block). */
export type LogConsumer = (events: readonly DelegationEvent[]) => void;

export interface LogFollowerOptions {
  /** Also read this often, in case a notification was lost. By default, 1000 ms. */
  pollMs?: number;
  /** Events read per query. By default, 500. */
  batchSize?: number;
  clock?: () => number;
  log?: Logger;
}

export class LogFollower {
  private head = 0n;
  /** The newest revision the notifier has told of (this process's commits; on PostgreSQL every replica's). */
  private notified = 0n;
  /** Callers of settled(), each waiting for the head to reach its revision. */
  private settling: { revision: bigint; resolve: () => void }[] = [];
  private readonly consumers = new Set<LogConsumer>();
  private readonly loop: Loop;
  private readonly batchSize: number;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly store: EventLog,
    private readonly notifier: RevisionNotifier,
    options: LogFollowerOptions = {},
  ) {
    this.batchSize = options.batchSize ?? 500;
    this.loop = new Loop({
      name: "log-follower",
      task: () => this.readBatch(),
      intervalMs: options.pollMs ?? 1000,
      minBackoffMs: 100,
      maxBackoffMs: 5000,
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.log ? { log: options.log } : {}),
    });
  }

  /** Starts at the current head of the log: consumers see what is written from now on. */
  async start(): Promise<void> {
    this.head = await this.store.headRevision();
    let soon = false;
    this.unsubscribe = this.notifier.subscribe((revision) => {
      if (revision > this.notified) this.notified = revision;
      if (soon || (revision !== 0n && revision <= this.head)) return;
      // After the current turn: the call that committed answers its caller before the fan-out starts.
      soon = true;
      setImmediate(() => {
        soon = false;
        this.loop.kick();
      });
    });
    this.loop.start();
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.release(true);
    await this.loop.stop();
  }

  /** The newest revision handed to consumers. */
  get revision(): bigint {
    return this.head;
  }

  /**
   * Resolves once the consumers have had every revision the notifier has
   * told of so far: this process's own commits among them, so what a caller
   * committed through this replica before asking is no longer news. At once
   * when nothing is pending; early when `signal` aborts, after `maxWaitMs`
   * (the log cannot be read: the caller goes on with what was handed out)
   * or when the follower stops.
   */
  settled(signal?: AbortSignal, maxWaitMs = 1000): Promise<void> {
    const revision = this.notified;
    if (revision <= this.head || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter = {
        revision,
        resolve: () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", giveUp);
          resolve();
        },
      };
      const giveUp = () => {
        this.settling = this.settling.filter((w) => w !== waiter);
        waiter.resolve();
      };
      const timer = setTimeout(giveUp, maxWaitMs);
      signal?.addEventListener("abort", giveUp, { once: true });
      this.settling.push(waiter);
    });
  }

  private release(all = false): void {
    if (this.settling.length === 0) return;
    const ready = this.settling.filter((w) => all || w.revision <= this.head);
    this.settling = all ? [] : this.settling.filter((w) => w.revision > this.head);
    for (const w of ready) w.resolve();
  }

  /** Adds a consumer; returns its removal. */
  add(consumer: LogConsumer): () => void {
    this.consumers.add(consumer);
    return () => this.consumers.delete(consumer);
  }

  /** Reads new events soon (a read under way is followed by another). */
  kick(): void {
    this.loop.kick();
  }

  /** Reads what is new now; resolves once consumers have had it. Tests call this. */
  async catchUp(): Promise<void> {
    for (;;) {
      const run = await this.loop.runOnce();
      if (run.skipped || !run.more) return;
    }
  }

  private async readBatch(): Promise<LoopResult> {
    const events = await this.store.readEvents(this.head, this.batchSize);
    if (events.length === 0) return { done: 0 };
    this.head = events[events.length - 1]!.revision;
    for (const c of this.consumers) {
      try {
        c(events);
      } catch {
        // A consumer's failure is its own; the others still get the events.
      }
    }
    this.release();
    return { done: events.length, more: events.length === this.batchSize };
  }
}
