/**
 * The one background-loop primitive. Expiry, identity clean-up, GSAP
 * revocation, the audit outbox and the reconciler are each a Loop around a
 * task that does one bounded batch of work.
 *
 * - Never twice at once; a kick while a run is under way causes another run
 *   right after it (no wake-up is ever lost).
 * - A run that reports `more` is followed at once by another, after yielding
 *   to the event loop, so a backlog drains in batches without starving RPCs.
 * - Otherwise the loop sleeps until the `nextAt` the task reported, or
 *   `wakeAt(t)` asked for, or at most `intervalMs`; after a failure it backs
 *   off exponentially (with jitter) up to `maxBackoffMs`.
 * - With a lease, only the replica holding it runs the task; a keeper renews
 *   the lease every third of its TTL while held and tries to take it over as
 *   often while not, so another replica takes over within about one TTL
 *   after the holder dies. A run asks for the lease first unless it was
 *   taken or renewed within half the TTL (then it is surely still held: no
 *   other replica may take it before a whole TTL has passed).
 * - Time comes from an injected clock; tests call runOnce() instead of waiting.
 */
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { Logger } from "../logging.js";

/** What a run reports. */
export interface LoopResult {
  /** How much it did (for logs and metrics). */
  done: number;
  /** More work is ready now: run again at once. */
  more?: boolean;
  /** When work is next due (clock time), if known. */
  nextAt?: number | null;
}

/** What runOnce() resolves with: the task's result, or that another replica holds the lease. */
export type LoopRun = (LoopResult & { skipped?: false }) | { skipped: true; done: 0 };

/** The lease part of the store, as a loop needs it. */
export interface LeaseBackend {
  acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean>;
  releaseLease(name: string, holder: string): Promise<void>;
}

export interface LoopLease {
  store: LeaseBackend;
  /** This replica's identity (unique per process). */
  holder: string;
  /** By default, 5 s. */
  ttlMs?: number;
}

export interface LoopOptions {
  name: string;
  /** One bounded batch of work. A number or nothing means `{ done: n }`. */
  task: () => Promise<LoopResult | number | void>;
  /** Longest sleep when idle. By default, 30 s. */
  intervalMs?: number;
  /** First wait after a failure. By default, 500 ms. */
  minBackoffMs?: number;
  /** Longest wait after failures. By default, 60 s. */
  maxBackoffMs?: number;
  /** Run only while holding this lease (named after the loop). */
  lease?: LoopLease;
  /**
   * While this answers true, runs the loop starts on its own (kicks, timers,
   * `more`) wait `yieldMs` first, so a more urgent loop gets the CPU (the
   * consequence workers yield to an expiry storm). runOnce() never waits.
   */
  yieldTo?: () => boolean;
  /** By default, 25 ms. */
  yieldMs?: number;
  /** Milliseconds since the epoch. By default, Date.now. */
  clock?: () => number;
  log?: Logger;
}

/** A loop's state, for health and metrics. */
export interface LoopHealth {
  name: string;
  running: boolean;
  /** Consecutive failed runs (0 when the last one succeeded). */
  failures: number;
  lastError: string;
  lastRunTime: number | null;
  lastSuccessTime: number | null;
  /** Whether this replica holds the loop's lease (always true without one). */
  leader: boolean;
}

interface Waiter {
  resolve(run: LoopRun): void;
  reject(err: unknown): void;
}

const MAX_TIMER_MS = 2_147_000_000;

export class Loop {
  readonly name: string;
  private readonly intervalMs: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly ttlMs: number;
  private readonly clock: () => number;
  private stopped = true;
  private running = false;
  private dirty = false;
  private waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private requestedWake = Number.POSITIVE_INFINITY;
  private keeper: NodeJS.Timeout | undefined;
  /** The keeper's lease request in flight, which stop() waits for. */
  private keeping: Promise<void> = Promise.resolve();
  private held: boolean;
  /** The clock time of the last request that took or renewed the lease (held since then until at least then + TTL). */
  private heldFrom = Number.NEGATIVE_INFINITY;
  private failures = 0;
  /** The last run reported `more`: a backlog is being drained. */
  private draining = false;
  private lastError = "";
  private lastRunTime: number | null = null;
  private lastSuccessTime: number | null = null;
  private idle: Promise<void> = Promise.resolve();
  private settleIdle: () => void = () => undefined;

  constructor(private readonly options: LoopOptions) {
    this.name = options.name;
    this.intervalMs = options.intervalMs ?? 30_000;
    this.minBackoffMs = options.minBackoffMs ?? 500;
    this.maxBackoffMs = options.maxBackoffMs ?? 60_000;
    this.ttlMs = options.lease?.ttlMs ?? 5_000;
    this.clock = options.clock ?? Date.now;
    this.held = options.lease === undefined;
  }

  /** Starts running: now, and then as work comes due. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    if (this.options.lease) this.keepLease();
    this.kick();
  }

  /** Stops: no new run starts; resolves once the run under way has finished and the lease is released. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.keeper);
    this.timer = undefined;
    await this.idle;
    await this.keeping;
    await this.releaseIfStopped();
  }

  /** A stopped loop keeps no lease (runOnce may have taken it). */
  private async releaseIfStopped(): Promise<void> {
    const lease = this.options.lease;
    if (!lease || !this.stopped || !this.held) return;
    this.held = false;
    await lease.store.releaseLease(this.name, lease.holder).catch(() => undefined);
  }

  /** Runs soon; if a run is under way, another follows it. Does nothing once stopped. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.dirty = true;
      return;
    }
    this.startRuns();
  }

  /** Asks for a run at `time` (clock time) unless one is due sooner. */
  wakeAt(time: number): void {
    if (this.stopped) return;
    if (this.running) {
      this.requestedWake = Math.min(this.requestedWake, time);
      return;
    }
    if (time < this.timerAt) this.scheduleAt(time);
  }

  /**
   * Runs the task once, in a run that starts after this call (joining none
   * already under way), and resolves with what it reported; rejects if it
   * failed. Works whether or not the loop is started (tests call it directly).
   */
  runOnce(): Promise<LoopRun> {
    return new Promise<LoopRun>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (this.running) this.dirty = true;
      else this.startRuns();
    });
  }

  /** Whether the loop is draining a backlog (its last run reported more work ready). */
  get backlogged(): boolean {
    return this.draining;
  }

  get health(): LoopHealth {
    return {
      name: this.name,
      running: this.running,
      failures: this.failures,
      lastError: this.lastError,
      lastRunTime: this.lastRunTime,
      lastSuccessTime: this.lastSuccessTime,
      leader: this.held,
    };
  }

  private startRuns(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    this.running = true;
    this.idle = new Promise((resolve) => {
      this.settleIdle = resolve;
    });
    void this.runs();
  }

  /** Runs until nothing more is asked for, then schedules the next run. */
  private async runs(): Promise<void> {
    let next: number | null = null;
    try {
      for (;;) {
        if (this.waiters.length === 0 && this.options.yieldTo?.()) {
          // Nobody is waiting for this run: let the more urgent loop have the CPU first.
          next = this.clock() + (this.options.yieldMs ?? 25);
          this.requestedWake = Math.min(this.requestedWake, next);
          break;
        }
        const waiters = this.waiters;
        this.waiters = [];
        this.dirty = false;
        let run: LoopRun | undefined;
        let failure: unknown;
        try {
          run = await this.execute();
        } catch (err) {
          failure = err;
        }
        for (const w of waiters) {
          if (run) w.resolve(run);
          else w.reject(failure);
        }
        this.draining = run !== undefined && !run.skipped && run.more === true;
        if (run && !run.skipped) next = run.nextAt ?? null;
        else if (run?.skipped) next = this.clock() + this.ttlMs / 3;
        else next = null;
        // A runOnce caller is served even once stopped; kicks and backlogs are not.
        const again =
          this.waiters.length > 0 || (!this.stopped && (this.dirty || (run !== undefined && !run.skipped && run.more === true)));
        if (!again) break;
        // Between batches: let RPCs and other loops run.
        await yieldToEventLoop();
      }
    } finally {
      this.running = false;
      this.draining = false;
      this.settleIdle();
    }
    if (this.stopped) {
      await this.releaseIfStopped();
      return;
    }
    const now = this.clock();
    let at = now + (this.failures > 0 ? this.backoffMs() : this.intervalMs);
    if (this.failures === 0 && next !== null) at = Math.min(at, next);
    at = Math.min(at, this.requestedWake);
    this.requestedWake = Number.POSITIVE_INFINITY;
    this.scheduleAt(at);
  }

  private async execute(): Promise<LoopRun> {
    const lease = this.options.lease;
    // Taken or renewed within half the TTL (the keeper renews every third of it): still ours for at
    // least as long again, so a run need not write to the lease table first. Under a backlog (an expiry
    // storm: a run after a run) that was a commit per run, thousands a minute.
    if (lease && !(this.held && this.clock() - this.heldFrom < this.ttlMs / 2)) {
      const now = this.clock();
      this.held = await lease.store.acquireLease(this.name, lease.holder, now, this.ttlMs).catch((err: unknown) => {
        this.options.log?.warn({ err, loop: this.name }, "could not take the loop's lease; will retry");
        return false;
      });
      if (!this.held) return { skipped: true, done: 0 };
      this.heldFrom = now;
    }
    this.lastRunTime = this.clock();
    try {
      const out = await this.options.task();
      this.failures = 0;
      this.lastError = "";
      this.lastSuccessTime = this.clock();
      return typeof out === "object" ? out : { done: out ?? 0 };
    } catch (err) {
      this.failures++;
      this.lastError = err instanceof Error ? err.message : String(err);
      this.options.log?.warn({ err, loop: this.name, failures: this.failures }, "background task failed; backing off");
      throw err;
    }
  }

  private backoffMs(): number {
    const base = Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** Math.min(this.failures - 1, 20));
    // Jitter, so replicas that failed together do not retry together.
    return base / 2 + Math.random() * (base / 2);
  }

  private scheduleAt(time: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timerAt = time;
    // +1 ms: work due at `time` is due when the timer fires.
    const delay = Math.max(0, Math.min(time - this.clock() + 1, MAX_TIMER_MS));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Number.POSITIVE_INFINITY;
      this.kick();
    }, delay);
    this.timer.unref();
  }

  /**
   * Renews the lease while held (also during a long run, which must not lose
   * it halfway), tries to take it while not; a replica that takes it over
   * runs at once.
   */
  private keepLease(): void {
    const lease = this.options.lease!;
    const tick = async () => {
      if (this.stopped) return;
      const had = this.held;
      const now = this.clock();
      const held = await lease.store.acquireLease(this.name, lease.holder, now, this.ttlMs).catch(() => false);
      this.held = held;
      if (held) this.heldFrom = now;
      if (this.stopped) return; // stop() waits for this, then releases what it got
      if (held && !had) this.kick();
    };
    const schedule = () => {
      this.keeper = setTimeout(() => {
        this.keeping = tick().finally(() => {
          if (!this.stopped) schedule();
        });
      }, this.ttlMs / 3);
      this.keeper.unref();
    };
    schedule();
  }
}
