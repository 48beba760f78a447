/**
 * Housekeeping, as loop tasks: finishing creations a crash interrupted,
 * deleting identities nobody tracks any more (the orphan sweep), and pruning
 * what is past its retention. Each task does a bounded batch per run.
 */
import { EndReason } from "../domain/index.js";
import { BatchSize, type BatchSizeOptions } from "../scheduler/batch-size.js";
import type { LoopResult } from "../scheduler/loop.js";
import type { UseCaseDeps } from "./deps.js";

/**
 * Rows removed per prune statement, sized to take about 20 ms each (one
 * statement holds the write lock, and on SQLite the event loop); the loop
 * runs again while a batch was full.
 */
const PRUNE_BATCH: BatchSizeOptions = { initial: 500, min: 50, max: 5_000, targetMs: 20 };
const STALE_BATCH = 100;
/**
 * The identity of a delegation that ended this recently is the clean-up
 * worker's to delete; the sweep leaves it alone, so no identity is deleted
 * twice (the sweep lists the IdP before it looks at each identity).
 */
const RECENTLY_ENDED_MS = 5 * 60_000;

export class Maintenance {
  private readonly clock: () => number;
  private readonly pruneBatch = { keys: new BatchSize(PRUNE_BATCH), events: new BatchSize(PRUNE_BATCH), effects: new BatchSize(PRUNE_BATCH) };

  constructor(private readonly deps: UseCaseDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  /**
   * Fails REQUESTED delegations left by a crash (older than the in-flight
   * window). Their endings write the work item that finds the identity by its
   * delegation id and deletes it.
   */
  async reconcileStale(): Promise<LoopResult> {
    const { store, settings, log } = this.deps;
    const before = this.clock() - settings.createInflightMs;
    const stale = await store.staleRequested(before, STALE_BATCH);
    if (stale.length === 0) return { done: 0 };
    const ended = await store.end({
      target: { ids: stale.map((d) => d.id) },
      ending: "fail",
      reason: EndReason.creationInterrupted,
      now: this.clock(),
    });
    log.warn({ count: ended.length }, "failed delegations whose creation was interrupted");
    return { done: ended.length, more: stale.length === STALE_BATCH };
  }

  /**
   * Deletes identities the IdP holds for delegations that are not live: left
   * by a crash between registration and the store, or by a deletion the store
   * no longer tracks. Returns how many were deleted.
   */
  async sweepOrphans(): Promise<LoopResult> {
    const { store, registrar, settings, log } = this.deps;
    const inflightSince = this.clock() - settings.createInflightMs;
    const endedSince = this.clock() - RECENTLY_ENDED_MS;
    let n = 0;
    for await (const ref of registrar.listAgents()) {
      const d = ref.delegationId ? await store.get(ref.delegationId) : null;
      if (d && d.state === "ACTIVE") continue;
      if (d && d.state === "REQUESTED" && d.createTime >= inflightSince) continue; // being created now
      if (d && d.state === "REQUESTED" && (await store.getApproval(d.id))) continue; // waiting for GSAP's approval
      if (d && d.endTime !== null && (d.endTime >= endedSince || (await store.effectOwed("idp_delete", d.id)))) continue;
      try {
        await registrar.deleteAgent(ref);
        n++;
        log.warn({ delegationId: ref.delegationId, clientId: ref.clientId, state: d?.state ?? "unknown" }, "deleted orphaned agent identity");
      } catch (err) {
        log.warn({ err, delegationId: ref.delegationId }, "orphaned identity deletion failed; will retry");
      }
    }
    return { done: n };
  }

  /** Drops idempotency keys, events and finished work items past their retention, a batch of each per run. */
  async prune(): Promise<LoopResult> {
    const { store, settings } = this.deps;
    const now = this.clock();
    const { keys, events, effects } = this.pruneBatch;
    const k = await sized(keys, async (n) => {
      const deleted = await store.pruneIdempotency(now - settings.idempotencyTtlMs, n);
      return { deleted, more: deleted === n };
    });
    const e = await sized(events, (n) => store.pruneEvents(now - settings.eventRetentionMs, n));
    const f = await sized(effects, async (n) => {
      const deleted = await store.pruneEffects(now - settings.eventRetentionMs, n);
      return { deleted, more: deleted === n };
    });
    return { done: k.deleted + e.deleted + f.deleted, more: k.more || e.more || f.more };
  }
}

/** One batch of `size` rows, its time recorded (wall time: what the write lock was held, and the wait for it). */
async function sized(size: BatchSize, batch: (n: number) => Promise<{ deleted: number; more: boolean }>): Promise<{ deleted: number; more: boolean }> {
  const began = performance.now();
  const result = await batch(size.value);
  size.record(performance.now() - began, result.more);
  return result;
}
