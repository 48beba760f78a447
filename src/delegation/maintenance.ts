/**
 * Housekeeping, as loop tasks: finishing creations a crash interrupted,
 * deleting identities nobody tracks any more (the orphan sweep), and pruning
 * what is past its retention. Each task does a bounded batch per run.
 */
import { EndReason } from "../domain/index.js";
import type { LoopResult } from "../scheduler/loop.js";
import type { UseCaseDeps } from "./deps.js";

/** Rows removed per prune statement; the loop runs again while a batch was full. */
const PRUNE_BATCH = 2_000;
const STALE_BATCH = 100;
/**
 * The identity of a delegation that ended this recently is the clean-up
 * worker's to delete; the sweep leaves it alone, so no identity is deleted
 * twice (the sweep lists the IdP before it looks at each identity).
 */
const RECENTLY_ENDED_MS = 5 * 60_000;

export class Maintenance {
  private readonly clock: () => number;

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
    const keys = await store.pruneIdempotency(now - settings.idempotencyTtlMs, PRUNE_BATCH);
    const events = await store.pruneEvents(now - settings.eventRetentionMs, PRUNE_BATCH);
    const effects = await store.pruneEffects(now - settings.eventRetentionMs, PRUNE_BATCH);
    return {
      done: keys + events.deleted + effects,
      more: keys === PRUNE_BATCH || events.more || effects === PRUNE_BATCH,
    };
  }
}
