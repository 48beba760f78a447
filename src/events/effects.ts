/**
 * The consequence workers: a worker per kind (delete the identity, revoke the
 * GSAP context) follows the event log from its cursor and carries out the
 * consequences of each ending against the external system, several at a
 * time; what fails waits in a retry table. The log is the durable record of
 * the work: a crash, a restart or an outage delays it, never loses it.
 *
 * - done: the identity is gone / the context is revoked (an answer meaning
 *   "already gone" counts: every handler is idempotent);
 * - retryable failure (timeout, 5xx, 429, connection refused): tried again
 *   later with exponential backoff and jitter, never dropped;
 * - permanent refusal (an UpstreamError that is not retryable, e.g. a 4xx):
 *   recorded as rejected, logged, and reported in /healthz.
 *
 * A worker is a task for the Loop primitive (one batch per run); the log
 * follower kicks it when an ending is read, so the work starts at once.
 */
import { type EffectKind, UpstreamError, isRetryable } from "../domain/index.js";
import type { Logger } from "../logging.js";
import type { LoopResult } from "../scheduler/loop.js";
import type { Effect, EffectOutcomes, EffectQueue } from "../store/store.js";

/** Carries out one work item; throws to fail it (an UpstreamError says whether to retry). */
export type EffectHandler = (effect: Effect) => Promise<void>;

export interface EffectWorkerOptions {
  /** Items taken per run. By default, 200. */
  batchSize?: number;
  /** Items in flight at once. By default, 32. */
  concurrency?: number;
  /** First retry delay. By default, 1 s. */
  minBackoffMs?: number;
  /** Longest retry delay. By default, 5 min. */
  maxBackoffMs?: number;
  clock?: () => number;
  log?: Logger;
  /** Called when an item is done, with its creation time (for latency figures). */
  onDone?: (effect: Effect, now: number) => void;
}

/** How one item went: done, or the error (a handler may throw anything, even undefined). */
type Outcome = typeof DONE | { err: unknown };
const DONE = Symbol("done");

/** Raised by a run in which every item failed and will be retried: the loop backs off too. */
export class EffectsFailing extends Error {
  override name = "EffectsFailing";
}

import { mapLimit } from "../scheduler/map-limit.js";

export { mapLimit };

/** The loop task of one effect kind. */
export function effectWorker(store: EffectQueue, kind: EffectKind, handler: EffectHandler, options: EffectWorkerOptions = {}): () => Promise<LoopResult> {
  const batchSize = options.batchSize ?? 200;
  const concurrency = options.concurrency ?? 32;
  const minBackoff = options.minBackoffMs ?? 1000;
  const maxBackoff = options.maxBackoffMs ?? 300_000;
  const clock = options.clock ?? Date.now;
  const log = options.log;

  const retryAt = (now: number, attempts: number) => {
    const base = Math.min(maxBackoff, minBackoff * 2 ** Math.min(attempts, 20));
    return now + Math.round(base / 2 + Math.random() * (base / 2));
  };

  return async () => {
    const now = clock();
    // Retries that are due first, then the endings the log has since the cursor.
    const retries = await store.dueRetries(kind, now, batchSize);
    const fresh = await store.pendingEndings(kind, batchSize);
    const due = [...retries, ...fresh.items];
    const outcomes = await mapLimit(due, concurrency, async (effect): Promise<Outcome> => {
      try {
        await handler(effect);
        return DONE;
      } catch (err) {
        return { err };
      }
    });
    const finished = clock();
    const settled: EffectOutcomes = { through: fresh.through, done: [], retry: [], rejected: [] };
    for (const [i, outcome] of outcomes.entries()) {
      const effect = due[i]!;
      if (outcome === DONE) {
        if (effect.retryId !== undefined) settled.done.push(effect.retryId);
        options.onDone?.(effect, finished);
        continue;
      }
      const err = outcome.err;
      const error = err instanceof Error ? err.message : String(err);
      const context = { kind, delegationId: effect.delegationId, attempts: effect.attempts + 1 };
      if (!isRetryable(err)) {
        settled.rejected.push({ effect, error });
        log?.error({ ...context, err, ...(err instanceof UpstreamError ? { status: err.status } : {}) }, "consequence of an ending refused for good; it will not be retried");
        continue;
      }
      settled.retry.push({ effect, error, nextAttemptTime: retryAt(finished, effect.attempts) });
      log?.warn({ ...context, err }, "consequence of an ending failed; will retry");
    }
    // Outcomes and the cursor in one transaction: a crash before it repeats the batch (every handler is idempotent).
    await store.settleEffects(kind, settled, finished);
    if (due.length > 0 && settled.retry.length === due.length) {
      throw new EffectsFailing(`every ${kind} item of the batch failed (last: ${settled.retry[settled.retry.length - 1]!.error}); backing off`);
    }
    const done = due.length - settled.retry.length - settled.rejected.length;
    if (retries.length === batchSize || fresh.examined === batchSize) return { done, more: true };
    return { done, more: false, nextAt: await store.nextRetryTime(kind) };
  };
}
