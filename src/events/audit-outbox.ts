/**
 * Delivers the event log to the audit sink (Chronicle) at least once, in
 * revision order, following it with a cursor (attempts, errors and refusals
 * are recorded on the events): a Chronicle outage or a broker restart loses
 * nothing, it only grows the backlog.
 *
 * Delivery is strictly sequential: an event is attempted only after every
 * earlier one was delivered (or refused for good), so one delegation's events
 * never overtake each other. It runs as a task of the Loop primitive, with a
 * lease so one replica delivers at a time; the others take over if it dies.
 */
import type { AuditSink } from "../clients/chronicle/chronicle-client.js";
import { isRetryable } from "../domain/index.js";
import type { Logger } from "../logging.js";
import type { Loop, LoopResult } from "../scheduler/loop.js";
import type { AuditBacklog, AuditOutboxStore } from "../store/store.js";

export interface AuditOutboxOptions {
  log?: Logger;
  clock?: () => number;
  /** Events read per batch. By default, 200. */
  batchSize?: number;
}

export interface AuditHealth extends AuditBacklog {
  /** The last delivery attempt failed and events are waiting. */
  failing: boolean;
  lastError: string;
  lastDeliveryTime: number | null;
}

/** Raised by a run that stopped at an event the sink did not take: the loop backs off. */
export class AuditDeliveryFailed extends Error {
  override name = "AuditDeliveryFailed";
}

export class AuditOutbox {
  private readonly clock: () => number;
  private readonly batchSize: number;
  private failures = 0;
  private lastError = "";
  private lastDeliveryTime: number | null = null;
  private deliveredThrough = 0n;
  private readonly waiters = new Set<{ revision: bigint; resolve: (ok: boolean) => void }>();
  private loop: Loop | undefined;

  constructor(
    private readonly store: AuditOutboxStore,
    private readonly sink: AuditSink,
    private readonly options: AuditOutboxOptions = {},
  ) {
    this.clock = options.clock ?? Date.now;
    this.batchSize = options.batchSize ?? 200;
  }

  /** The loop that runs `deliver`, so waiters can wake it. */
  attach(loop: Loop): void {
    this.loop = loop;
  }

  /** Resolves every waiter with false (shutdown). */
  release(): void {
    for (const w of this.waiters) w.resolve(false);
    this.waiters.clear();
  }

  /**
   * Delivers one batch of pending events in order, stopping at the first that
   * fails (it stays pending; the run throws so the loop backs off). A refusal
   * for good (a 4xx) is recorded as rejected and delivery goes on: holding the
   * line would stop all auditing behind one event.
   */
  async deliver(): Promise<LoopResult> {
    const batch = await this.store.pendingAudit(this.batchSize);
    let through: bigint | undefined;
    let delivered = 0;
    try {
      for (const { event } of batch) {
        try {
          await this.sink.deliver(event, event.chronicleCid);
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          if (!isRetryable(err)) {
            await this.store.markAuditRejected(event.revision, message, this.clock());
            this.options.log?.error({ revision: event.revision.toString(), err }, "audit sink refused an event; it will not be retried");
            through = event.revision;
            this.advance(event.revision);
            continue;
          }
          this.failures++;
          this.lastError = message;
          await this.store.markAuditFailed(event.revision, message).catch(() => undefined);
          this.options.log?.warn({ revision: event.revision.toString(), failures: this.failures, err }, "audit delivery failed; will retry");
          throw new AuditDeliveryFailed(message);
        }
        through = event.revision;
        delivered++;
        this.failures = 0;
        this.lastError = "";
        this.lastDeliveryTime = this.clock();
      }
    } finally {
      // What was delivered is recorded (the cursor moves) even when the batch stopped early.
      if (through !== undefined) {
        await this.store.markAudited(through, this.clock());
        this.advance(through);
      }
    }
    return { done: delivered, more: batch.length === this.batchSize };
  }

  private advance(revision: bigint): void {
    if (revision > this.deliveredThrough) this.deliveredThrough = revision;
    for (const w of this.waiters) {
      if (w.revision <= this.deliveredThrough) {
        this.waiters.delete(w);
        w.resolve(true);
      }
    }
  }

  /**
   * Resolves true once every event up to `revision` has been delivered (by
   * this replica or whichever holds the lease), false after `timeoutMs`.
   * Fail-closed mode waits on this.
   */
  async waitDelivered(revision: bigint, timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const local = new Promise<boolean>((resolve) => {
      if (revision <= this.deliveredThrough) return resolve(true);
      const waiter = { revision, resolve };
      this.waiters.add(waiter);
      timer = setTimeout(() => {
        this.waiters.delete(waiter);
        resolve(false);
      }, timeoutMs);
      timer.unref();
    });
    this.loop?.kick();
    let settled = false;
    const remote = (async () => {
      while (!settled && Date.now() < until) {
        if ((await this.store.auditCursor()) >= revision) return true;
        await new Promise((r) => setTimeout(r, 100));
      }
      return false;
    })();
    const ok = await Promise.race([local, remote]);
    settled = true;
    clearTimeout(timer);
    return ok || (await remote);
  }

  /**
   * True when the sink accepts events now: delivery is not failing, or one
   * more attempt (at most `timeoutMs`) just succeeded.
   */
  async ready(timeoutMs: number): Promise<boolean> {
    if (this.failures === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    const attempt = this.loop ? this.loop.runOnce().catch(() => undefined) : this.deliver().catch(() => undefined);
    await Promise.race([attempt, timeout]);
    clearTimeout(timer);
    return this.failures === 0;
  }

  /** Whether delivery is currently failing (the last attempt failed). */
  get failing(): boolean {
    return this.failures > 0;
  }

  /** Backlog and delivery state, for health and metrics. */
  async health(): Promise<AuditHealth> {
    const backlog = await this.store.auditBacklog();
    return {
      ...backlog,
      failing: this.failures > 0 && backlog.pending > 0,
      lastError: this.lastError,
      lastDeliveryTime: this.lastDeliveryTime,
    };
  }
}
