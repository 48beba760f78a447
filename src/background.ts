/**
 * The broker's background work: every job is a Loop over one task, each
 * with a lease in the database so that one replica runs it at a time. The
 * log follower wakes them as the events they care about are read:
 *
 * | loop           | task                                          | woken by                     |
 * |----------------|-----------------------------------------------|------------------------------|
 * | expiry (-2)    | expire a batch of due delegations             | CREATED events (expire time) |
 * | idp-cleanup    | delete identities of ended delegations        | ending events                |
 * | gsap-revoke    | revoke delegated contexts at GSAP             | ending events                |
 * | audit-outbox   | deliver events to the audit sink, in order    | every event                  |
 * | reconciler     | fail interrupted creates; prune old rows      | its interval                 |
 * | orphan-sweep   | delete identities no delegation accounts for  | its interval                 |
 * | ceremonies     | expire ceremonies not decided or used in time | ceremony events, endings     |
 * | live-checks    | ask GSAP about delegators' contexts again     | its interval                 |
 * | gsap-approvals | poll GSAP's pending approvals of creates      | its next poll, new approvals |
 *
 * On PostgreSQL expiry runs in two lanes, `expiry` and `expiry-2`, each a
 * loop with its own lease: while one lane's transaction waits for this
 * process to read an answer, the other's statements run in the database, so
 * a storm of due delegations is ended by both cores (the rows a lane holds
 * are skipped by the other, FOR UPDATE SKIP LOCKED; their events still take
 * revisions in commit order). SQLite has one writer: one lane.
 */
import type { AuditSink } from "./clients/chronicle/chronicle-client.js";
import type { GsapClient } from "./clients/gsap/gsap-client.js";
import type { DelegationEvent, EffectKind } from "./domain/index.js";
import { isEndingEvent } from "./domain/index.js";
import type { UseCases } from "./delegation/use-cases.js";
import { AuditOutbox } from "./events/audit-outbox.js";
import { type EffectHandler, effectWorker } from "./events/effects.js";
import type { LogFollower } from "./events/log-follower.js";
import type { Logger } from "./logging.js";
import type { AgentRegistrar } from "./registrars/registrar.js";
import type { DelegationStore, Effect, EffectBacklog } from "./store/store.js";
import { Loop, type LoopHealth, type LoopOptions } from "./scheduler/loop.js";

export interface BackgroundOptions {
  store: DelegationStore;
  useCases: UseCases;
  registrar: AgentRegistrar;
  gsap: GsapClient;
  sink: AuditSink;
  follower: LogFollower;
  /** This replica's identity for leases. */
  holder: string;
  log: Logger;
  clock?: () => number;
  /** Lease length. By default, 5 s. */
  leaseTtlMs?: number;
  /** How often the reconciler and the orphan sweep run. By default, 60 s. */
  reconcileIntervalMs?: number;
  /** Told when a consequence is done, with the time since its ending. */
  onEffectDone?: (kind: EffectKind, latencyMs: number) => void;
  /** How long GSAP's answer about a context is fresh (the live checks' period). By default, 30 s. */
  contextCacheMs?: number;
}

export interface Background {
  /** The first expiry lane (the only one on SQLite). */
  expiry: Loop;
  /** Every expiry lane, `expiry` first. */
  expiryLanes: Loop[];
  idpCleanup: Loop;
  gsapRevoke: Loop;
  outboxLoop: Loop;
  reconciler: Loop;
  orphanSweep: Loop;
  ceremonies: Loop;
  liveChecks: Loop;
  approvals: Loop;
  outbox: AuditOutbox;
  /** Every loop, for health. */
  loops: Loop[];
  start(): void;
  stop(): Promise<void>;
  /** Loops and backlogs, for /healthz. */
  health(): Promise<BackgroundHealth>;
}

export interface BackgroundHealth {
  loops: LoopHealth[];
  consequences: Record<EffectKind, EffectBacklog & { failing: boolean; lastError: string }>;
}

/** Builds the loops (not started). */
export function createBackground(o: BackgroundOptions): Background {
  const clock = o.clock ?? Date.now;
  const lease = { store: o.store, holder: o.holder, ttlMs: o.leaseTtlMs ?? 5_000 };
  const loop = (name: string, task: LoopOptions["task"], intervalMs: number, yieldTo?: () => boolean) =>
    new Loop({ name, task, intervalMs, lease, clock, log: o.log, ...(yieldTo ? { yieldTo } : {}) });

  const done = (kind: EffectKind) => (e: Effect, now: number) => o.onEffectDone?.(kind, now - e.createTime);
  const deleteIdentity: EffectHandler = (e) =>
    o.registrar.deleteAgent({ delegationId: e.delegationId, clientId: e.target.agentClientId, objectId: e.target.idpObjectId });
  const revokeContext: EffectHandler = (e) =>
    o.gsap.revokeContext(e.target.delegatedAcId, e.target.endReason, { delegationId: e.delegationId });
  const worker = (kind: EffectKind, handler: EffectHandler) =>
    effectWorker(o.store, kind, handler, { clock, log: o.log, onDone: done(kind) });

  const outbox = new AuditOutbox(o.store, o.sink, { clock, log: o.log });
  const maintenance = o.useCases.maintenance;
  const reconcileMs = o.reconcileIntervalMs ?? 60_000;

  const lanes = o.store.driver === "postgresql" ? 2 : 1;
  const expiryLanes = Array.from({ length: lanes }, (_, i) => loop(i === 0 ? "expiry" : `expiry-${i + 1}`, () => o.useCases.end.expireDue(), 30_000));
  const expiry = expiryLanes[0]!;
  // While expiry drains a backlog (a storm of due delegations), the other loops let it have the
  // CPU: ending authority on time comes first; its consequences follow right after.
  const expiring = () => expiryLanes.some((l) => l.backlogged);
  const idpCleanup = loop("idp-cleanup", worker("idp_delete", deleteIdentity), 5_000, expiring);
  const gsapRevoke = loop("gsap-revoke", worker("gsap_revoke", revokeContext), 5_000, expiring);
  const outboxLoop = loop("audit-outbox", () => outbox.deliver(), 2_000, expiring);
  const reconciler = loop(
    "reconciler",
    async () => {
      const stale = await maintenance.reconcileStale();
      const pruned = await maintenance.prune();
      return { done: stale.done + pruned.done, more: stale.more === true || pruned.more === true };
    },
    reconcileMs,
    expiring,
  );
  const orphanSweep = loop("orphan-sweep", () => maintenance.sweepOrphans(), reconcileMs, expiring);
  outbox.attach(outboxLoop);
  const ceremonies = loop("ceremonies", () => o.useCases.ceremonies.expireDue(), 30_000, expiring);
  // A quarter of the cache time: each context is asked about again within 1.25 times it.
  const liveChecks = loop("live-checks", () => o.useCases.liveChecks.checkDue(), Math.max(250, (o.contextCacheMs ?? 30_000) / 4), expiring);
  const approvals = loop("gsap-approvals", () => o.useCases.approvals.pollDue(), 1_000);
  const loops = [...expiryLanes, idpCleanup, gsapRevoke, outboxLoop, reconciler, orphanSweep, ceremonies, liveChecks, approvals];

  // What each loop wants to hear from the log.
  const onEvents = (events: readonly DelegationEvent[]) => {
    let endings = false;
    for (const e of events) {
      if (e.type === "CREATED") for (const l of expiryLanes) l.wakeAt(e.delegation.expireTime);
      else if (e.type === "CEREMONY_REQUESTED" && e.ceremony) ceremonies.wakeAt(e.ceremony.expireTime);
      else if (isEndingEvent(e.type)) endings = true;
    }
    if (endings) {
      idpCleanup.kick();
      gsapRevoke.kick();
      // Open ceremonies of an ended delegation expire with it.
      ceremonies.kick();
    }
    outboxLoop.kick();
  };
  let removeConsumer: (() => void) | undefined;

  return {
    expiry,
    expiryLanes,
    idpCleanup,
    gsapRevoke,
    outboxLoop,
    reconciler,
    orphanSweep,
    ceremonies,
    liveChecks,
    approvals,
    outbox,
    loops,
    start() {
      removeConsumer = o.follower.add(onEvents);
      for (const l of loops) l.start();
    },
    async stop() {
      removeConsumer?.();
      await Promise.all(loops.map((l) => l.stop()));
      outbox.release();
    },
    async health() {
      const [idp, gsap] = await Promise.all([o.store.effectBacklog("idp_delete"), o.store.effectBacklog("gsap_revoke")]);
      const state = (l: Loop, backlog: EffectBacklog) => ({
        ...backlog,
        // Failing: work is waiting that has failed at least once (a run that found nothing due yet does not clear it).
        failing: backlog.pending > 0 && (l.health.failures > 0 || backlog.retrying > 0),
        lastError: l.health.lastError,
      });
      return {
        loops: loops.map((l) => l.health),
        consequences: { idp_delete: state(idpCleanup, idp), gsap_revoke: state(gsapRevoke, gsap) },
      };
    },
  };
}
