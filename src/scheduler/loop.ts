/**
 * A background loop: runs a task every interval, at once when kicked, never
 * twice at the same time, and backs off exponentially after failures.
 * Tests call runOnce() instead of waiting for the timer.
 */
import type { Logger } from "../logging.js";

export interface LoopOptions {
  name: string;
  /** The work; returns how much it did, for the log. */
  task: () => Promise<number | void>;
  /** By default, 30 s. */
  intervalMs?: number;
  /** Upper bound of the backoff. By default, 5 min. */
  maxBackoffMs?: number;
  log?: Logger;
}

export class Loop {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private failures = 0;
  private stopped = true;
  private readonly intervalMs: number;
  private readonly maxBackoffMs: number;

  constructor(private readonly options: LoopOptions) {
    this.intervalMs = options.intervalMs ?? 30_000;
    this.maxBackoffMs = options.maxBackoffMs ?? 300_000;
  }

  start(): void {
    this.stopped = false;
    void this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** Runs the task now (or joins the run under way) and returns what it reported. */
  runOnce(): Promise<number> {
    if (this.running) return this.running;
    const run = (async () => {
      try {
        const n = (await this.options.task()) ?? 0;
        this.failures = 0;
        return n;
      } catch (err) {
        this.failures++;
        this.options.log?.warn({ err, loop: this.options.name, failures: this.failures }, "background task failed");
        throw err;
      }
    })();
    this.running = run;
    // Cleared here rather than in a `finally` inside the run: a task that throws
    // synchronously settles the run before `running` is assigned, and the loop would
    // then hand out that rejected run forever.
    const clear = () => {
      if (this.running === run) this.running = undefined;
    };
    run.then(clear, clear);
    return run;
  }

  /** Runs soon, then reschedules; does nothing when stopped. Never rejects. */
  async kick(): Promise<void> {
    // A hook may kick during shutdown; the task must not run against closed drivers.
    if (this.stopped) return;
    clearTimeout(this.timer);
    await this.runOnce().catch(() => undefined);
    this.schedule(this.nextDelay());
  }

  /** Sleeps until `delayMs` from now, for callers that know when work is next due. */
  schedule(delayMs: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.kick(), Math.max(0, Math.min(delayMs, 2_147_000_000)));
    this.timer.unref();
  }

  private nextDelay(): number {
    if (this.failures === 0) return this.intervalMs;
    return Math.min(this.maxBackoffMs, 1000 * 2 ** Math.min(this.failures - 1, 16));
  }
}
