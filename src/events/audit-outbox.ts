/**
 * Delivers the event log to the audit sink (Chronicle) at least once, in
 * revision order, with delivery state kept in the store: a Chronicle outage
 * or a broker restart loses nothing, it only grows the backlog.
 *
 * Delivery is strictly sequential: an event is attempted only after every
 * earlier one was delivered (or refused for good), so one delegation's events
 * never overtake each other. One replica delivers at a time (a lease in the
 * store); the others wait and take over if it dies.
 */
import { randomUUID } from "node:crypto";
import type { AuditSink } from "../clients/chronicle/chronicle-client.js";
import { BrokerError } from "../delegation/errors.js";
import type { Logger } from "../logging.js";
import type { AuditBacklog, DelegationStore } from "../store/store.js";

export interface AuditOutboxOptions {
  log?: Logger;
  clock?: () => number;
  /** Events read per batch. By default, 100. */
  batchSize?: number;
  /** Lease length; renewed every batch. By default, 15 s. */
  leaseMs?: number;
  /** Wait after the first failure; doubles up to maxBackoffMs. By default, 500 ms. */
  minBackoffMs?: number;
  /** By default, 30 s. */
  maxBackoffMs?: number;
  /** Also look for work this often (other replicas' events, lease takeover). By default, 2 s. */
  pollMs?: number;
}

export interface AuditHealth extends AuditBacklog {
  /** The last delivery attempt failed and events are waiting. */
  failing: boolean;
  lastError: string;
  lastDeliveryTime: number | null;
}

const LEASE = "audit-outbox";

export class AuditOutbox {
  private readonly holder = randomUUID();
  private readonly clock: () => number;
  private readonly batchSize: number;
  private readonly leaseMs: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly pollMs: number;
  private running: Promise<number> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private failures = 0;
  private lastError = "";
  private lastDeliveryTime: number | null = null;
  private deliveredThrough = 0n;
  private readonly waiters = new Set<{ revision: bigint; resolve: (ok: boolean) => void }>();
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly store: DelegationStore,
    private readonly sink: AuditSink,
    private readonly options: AuditOutboxOptions = {},
  ) {
    this.clock = options.clock ?? Date.now;
    this.batchSize = options.batchSize ?? 100;
    this.leaseMs = options.leaseMs ?? 15_000;
    this.minBackoffMs = options.minBackoffMs ?? 500;
    this.maxBackoffMs = options.maxBackoffMs ?? 30_000;
    this.pollMs = options.pollMs ?? 2_000;
  }

  /** Delivers the backlog left by earlier runs, then follows new commits. */
  start(): void {
    this.stopped = false;
    this.unsubscribe = this.store.onCommit(() => this.kick());
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
    for (const w of this.waiters) w.resolve(false);
    this.waiters.clear();
    await this.store.releaseLease(LEASE, this.holder).catch(() => undefined);
  }

  /** Starts a delivery run now, or marks the current one to go again. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    void this.runOnce()
      .catch(() => 0)
      .then(() => this.schedule());
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.again) {
      this.again = false;
      this.kick();
      return;
    }
    const delay = this.failures === 0 ? this.pollMs : Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** Math.min(this.failures - 1, 16));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.kick(), delay);
    this.timer.unref();
  }

  /**
   * Delivers pending events in order until none is left or one fails.
   * Returns how many were delivered. Tests call this directly.
   */
  runOnce(): Promise<number> {
    this.running ??= this.deliver().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async deliver(): Promise<number> {
    let delivered = 0;
    for (;;) {
      if (!(await this.store.acquireLease(LEASE, this.holder, this.clock(), this.leaseMs))) return delivered;
      const batch = await this.store.pendingAudit(this.batchSize);
      for (const { event } of batch) {
        const cid = event.chronicleCid;
        try {
          await this.sink.deliver(event, cid);
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          if (err instanceof BrokerError && err.code === "FAILED_PRECONDITION") {
            // Refused for good (a 4xx): holding the line would stop all auditing behind one event.
            await this.store.markAuditRejected(event.revision, message, this.clock());
            this.options.log?.error({ revision: event.revision.toString(), err }, "audit sink refused an event; it will not be retried");
            this.advance(event.revision);
            continue;
          }
          this.failures++;
          this.lastError = message;
          await this.store.markAuditFailed(event.revision, message).catch(() => undefined);
          this.options.log?.warn({ revision: event.revision.toString(), failures: this.failures, err }, "audit delivery failed; will retry");
          throw err;
        }
        await this.store.markAudited(event.revision, this.clock());
        this.failures = 0;
        this.lastError = "";
        this.lastDeliveryTime = this.clock();
        this.advance(event.revision);
        delivered++;
      }
      if (batch.length < this.batchSize) return delivered;
    }
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
    const local = new Promise<boolean>((resolve) => {
      if (revision <= this.deliveredThrough) return resolve(true);
      const waiter = { revision, resolve };
      this.waiters.add(waiter);
      setTimeout(() => {
        this.waiters.delete(waiter);
        resolve(false);
      }, timeoutMs).unref();
    });
    this.kick();
    let settled = false;
    const remote = (async () => {
      while (!settled && Date.now() < until) {
        const [first] = await this.store.pendingAudit(1);
        if (!first || first.event.revision > revision) return true;
        await new Promise((r) => setTimeout(r, 100));
      }
      return false;
    })();
    const ok = await Promise.race([local, remote]);
    settled = true;
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
    await Promise.race([this.runOnce().catch(() => 0), timeout]);
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
