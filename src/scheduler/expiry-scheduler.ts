/**
 * Expires delegations on time: sleeps until the earliest expire time (or at
 * most `maxSleepMs`, to notice other replicas' delegations), expires what is
 * due, and sleeps again. A new delegation that expires sooner wakes it early.
 */
import type { Logger } from "../logging.js";

export interface ExpiryTarget {
  expireDue(): Promise<number>;
  nextExpireTime(): Promise<number | null>;
}

export interface ExpirySchedulerOptions {
  /** Longest sleep. By default, 30 s. */
  maxSleepMs?: number;
  clock?: () => number;
  log?: Logger;
}

export class ExpiryScheduler {
  private timer: NodeJS.Timeout | undefined;
  private wakeAt = Number.POSITIVE_INFINITY;
  /** Earliest expire time announced while a sweep was running. */
  private announced = Number.POSITIVE_INFINITY;
  private running: Promise<number> | undefined;
  private stopped = true;
  private readonly maxSleepMs: number;
  private readonly clock: () => number;

  constructor(
    private readonly target: ExpiryTarget,
    private readonly options: ExpirySchedulerOptions = {},
  ) {
    this.maxSleepMs = options.maxSleepMs ?? 30_000;
    this.clock = options.clock ?? Date.now;
  }

  /** Sweeps what expired while the service was down, then follows expire times. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** A delegation will expire at `expireTime`: wake by then. */
  notify(expireTime: number): void {
    if (expireTime < this.announced) this.announced = expireTime;
    if (expireTime < this.wakeAt) this.sleepUntil(expireTime);
  }

  /** Expires what is due now; returns how many. */
  runOnce(): Promise<number> {
    this.running ??= this.target.expireDue().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async tick(): Promise<void> {
    let failed = false;
    let upcoming: number | null = null;
    try {
      // Expire in batches until nothing more is due.
      while ((await this.runOnce()) > 0 && !this.stopped);
      if (!this.stopped) upcoming = await this.target.nextExpireTime();
    } catch (err) {
      // A failed nextExpireTime counts too: sleeping the full maxSleepMs instead would let
      // a delegation due sooner outlive its expire time.
      failed = true;
      this.options.log?.warn({ err }, "expiry sweep failed; retrying in 1 s");
    }
    if (this.stopped) return;
    const now = this.clock();
    let next = failed ? now + 1000 : now + this.maxSleepMs;
    if (upcoming !== null && upcoming < next) next = upcoming;
    if (this.announced < next) next = this.announced;
    this.announced = Number.POSITIVE_INFINITY;
    this.wakeAt = Number.POSITIVE_INFINITY;
    this.sleepUntil(next);
  }

  private sleepUntil(time: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.wakeAt = time;
    // +1 ms: expire_time <= now must hold when we wake.
    this.timer = setTimeout(() => void this.tick(), Math.max(0, Math.min(time - this.clock() + 1, this.maxSleepMs)));
    this.timer.unref();
  }
}
