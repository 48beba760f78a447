/**
 * Token buckets keyed by caller, with bounded memory. A bucket holds up to
 * `burst` tokens and refills continuously at `ratePerSecond`; a call takes
 * one token. A bucket that has refilled to full is indistinguishable from a
 * new one, so it is dropped; at most `maxKeys` buckets are kept, and when a
 * flood of distinct callers exceeds that, the least recently used goes first
 * (it starts again from a full bucket: eviction can only be lenient).
 */

export interface RateLimiterOptions {
  /** Tokens added per second, continuously. */
  ratePerSecond: number;
  /** Most tokens a bucket holds (the burst a caller may spend at once). By default, ratePerSecond (one second's worth). */
  burst?: number;
  /** Most buckets kept. By default, 100,000. */
  maxKeys?: number;
  /** Milliseconds from a monotonic clock. By default, performance.now. */
  clock?: () => number;
}

/** The outcome of one take: allowed, or refused with when a token will be there. */
export type TakeResult = { ok: true } | { ok: false; retryAfterMs: number };

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date. */
  at: number;
}

// Idle buckets are swept a few at a time on each take, so no timer is needed.
const SWEEP_PER_TAKE = 2;
// Refill is floating point: waiting exactly the advertised retry must be enough.
const EPSILON = 1e-9;

export class RateLimiter {
  readonly burst: number;
  readonly maxKeys: number;
  private readonly perMs: number;
  /** How long an empty bucket takes to fill: after that idle, it can go. */
  private readonly fillMs: number;
  private readonly clock: () => number;
  // Map order is recency order: a take moves its key to the end.
  private readonly buckets = new Map<string, Bucket>();

  constructor(options: RateLimiterOptions) {
    if (!(options.ratePerSecond > 0)) throw new RangeError("ratePerSecond must be positive");
    this.perMs = options.ratePerSecond / 1000;
    this.burst = Math.max(1, options.burst ?? options.ratePerSecond);
    this.maxKeys = Math.max(1, options.maxKeys ?? 100_000);
    this.fillMs = this.burst / this.perMs;
    this.clock = options.clock ?? (() => performance.now());
  }

  /** Buckets currently tracked. */
  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token for `key`, or says how long until one is available. */
  take(key: string): TakeResult {
    const now = this.clock();
    this.sweep(now);
    const b = this.buckets.get(key);
    let tokens = this.burst;
    if (b) {
      // A clock that steps backwards refills nothing rather than draining.
      tokens = Math.min(this.burst, b.tokens + Math.max(0, now - b.at) * this.perMs);
      this.buckets.delete(key);
    } else if (this.buckets.size >= this.maxKeys) {
      this.buckets.delete(this.buckets.keys().next().value!);
    }
    if (tokens >= 1 - EPSILON) {
      tokens = Math.max(tokens, 1);
      this.buckets.set(key, { tokens: tokens - 1, at: now });
      return { ok: true };
    }
    this.buckets.set(key, { tokens, at: now });
    return { ok: false, retryAfterMs: Math.max(1, Math.ceil((1 - tokens) / this.perMs)) };
  }

  /** Drops the least recently used buckets that have been idle long enough to be full again. */
  private sweep(now: number): void {
    let n = 0;
    for (const [key, b] of this.buckets) {
      if (n++ >= SWEEP_PER_TAKE || now - b.at < this.fillMs) return;
      this.buckets.delete(key);
    }
  }
}
