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
    await this.loop.stop();
  }

  /** The newest revision handed to consumers. */
  get revision(): bigint {
    return this.head;
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
    return { done: events.length, more: events.length === this.batchSize };
  }
}
