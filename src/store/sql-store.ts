/**
 * The DelegationStore over either database: state changes and the log on the
 * driver directly (lifecycle-sql.ts, log-sql.ts), listings through the
 * Prisma client (prisma-listing.ts).
 */
import type { Ceremony, DecisionRecord, Delegation, DelegationEvent, EffectKind } from "../domain/index.js";
import { type ContentId, LifecycleSql, claimKey, keyFromRow, markKeyAnswered, releaseKey, unmarkKeyAnswered, type KeyRow } from "./lifecycle-sql.js";
import { CeremonySql } from "./ceremony-sql.js";
import { CountBatcher } from "./count-batcher.js";
import * as log from "./log-sql.js";
import type { Listing } from "./prisma-listing.js";
import { RecentEvents } from "./recent-events.js";
import { type DelegationRow, delegationFromRow } from "./rows.js";
import type { SqlDatabase } from "./sql.js";
import type {
  ActivateSpec,
  AuditBacklog,
  CeremonyDecision,
  CeremonyQuery,
  ContextAnswer,
  DelegatorContextState,
  GsapApprovalRow,
  ClaimResult,
  CountOptions,
  CountResult,
  DelegationStore,
  Effect,
  EffectBacklog,
  EffectOutcomes,
  EndSpec,
  Ended,
  EventFilter,
  IdempotencyClaim,
  IdempotencyKeyRef,
  IdempotencyRecord,
  ListQuery,
  PendingAudit,
  PendingEndings,
  Transitioned,
} from "./store.js";

export interface SqlStoreOptions {
  /** Content id of an event's audit record, written with the event. */
  contentId?: ContentId;
  /** PostgreSQL: channel NOTIFYed with the head revision by every committing change (see pg-notifier.ts). */
  notifyChannel?: string;
  /** Listings (ListAgents). */
  listing: Listing;
  /** Events this process committed kept for the log's readers (see recent-events.ts). By default, 10,000; 0 keeps none. */
  recentEvents?: number;
}

/** Carries a refusal out of the counting transaction, rolling it back. */
class Refusal extends Error {
  constructor(readonly result: CountResult) {
    super("refused");
  }
}

export class SqlStore implements DelegationStore {
  readonly driver: "sqlite" | "postgresql";
  private readonly listeners = new Set<(revision: bigint) => void>();
  private readonly lifecycle: LifecycleSql;
  private readonly recent: RecentEvents;
  private readonly ceremonies: CeremonySql;
  /** Plain counts, committed together (group commit). */
  private readonly counts: CountBatcher;

  constructor(
    private readonly db: SqlDatabase,
    private readonly options: SqlStoreOptions,
  ) {
    this.driver = db.dialect;
    this.recent = new RecentEvents(options.recentEvents ?? 10_000);
    this.lifecycle = new LifecycleSql(options.contentId, options.notifyChannel, this.recent);
    this.ceremonies = new CeremonySql(this.lifecycle);
    this.counts = new CountBatcher((counts, at, freshSince) => this.lifecycle.countMany(this.db, counts, at, freshSince));
  }

  private emit(revision: bigint | undefined): void {
    if (revision === undefined) return;
    for (const l of this.listeners) {
      try {
        l(revision);
      } catch {
        // A listener's failure is its own; the commit stands.
      }
    }
  }

  onCommit(listener: (revision: bigint) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // --- reading delegations

  async get(id: string): Promise<Delegation | null> {
    const [row] = await this.db.all<DelegationRow>(`SELECT * FROM "delegations" WHERE "id" = $1`, [id]);
    return row ? delegationFromRow(row) : null;
  }

  async findByDelegatedAc(delegatedAcId: string): Promise<Delegation | null> {
    if (delegatedAcId === "") return null;
    const [row] = await this.db.all<DelegationRow>(`SELECT * FROM "delegations" WHERE "delegated_ac_id" = $1 LIMIT 1`, [delegatedAcId]);
    return row ? delegationFromRow(row) : null;
  }

  list(query: ListQuery): Promise<{ items: Delegation[]; total: number }> {
    return this.options.listing.list(query);
  }

  async nextExpireTime(): Promise<number | null> {
    const [row] = await this.db.all<{ t: number | string | null }>(
      `SELECT MIN("expire_time") AS "t" FROM "delegations" WHERE "state" = 'ACTIVE'`,
    );
    return row?.t === null || row?.t === undefined ? null : Number(row.t);
  }

  async staleRequested(createdBefore: number, limit: number): Promise<Delegation[]> {
    const rows = await this.db.all<DelegationRow>(
      // One waiting for GSAP's approval flow is not interrupted: the approvals loop finishes it.
      `SELECT * FROM "delegations" WHERE "state" = 'REQUESTED' AND "create_time" < $1
          AND NOT EXISTS (SELECT 1 FROM "gsap_approvals" a WHERE a."delegation_id" = "delegations"."id")
        ORDER BY "create_time" LIMIT $2`,
      [createdBefore, limit],
    );
    return rows.map(delegationFromRow);
  }

  // --- changing state

  insertRequested(delegation: Delegation, claim?: IdempotencyClaim): Promise<ClaimResult> {
    return this.db.transaction((tx) => this.lifecycle.insertRequested(tx, delegation, claim));
  }

  async activate(spec: ActivateSpec): Promise<Transitioned | null> {
    const t = await this.db.transaction((tx) => this.lifecycle.activate(tx, spec));
    this.emit(t?.revision);
    return t;
  }

  async end(spec: EndSpec): Promise<Ended[]> {
    const ended = await this.db.transaction((tx) => this.lifecycle.end(tx, spec));
    this.emit(ended[ended.length - 1]?.revision);
    return ended;
  }

  async countCommand(id: string, now: number, options: CountOptions = {}): Promise<CountResult> {
    const plain = options.record === undefined && options.ceremony === undefined;
    if (plain) {
      const hit = await this.counts.count(id, now, options.contextFreshSince);
      if (hit) return { kind: "counted", ...hit };
    }
    let result: CountResult;
    try {
      result = await this.db.transaction(async (tx) => {
        const r = await this.lifecycle.countIn(tx, id, now, options);
        // Nothing of a refusal stays written (a ceremony marked used, say).
        if (r.kind === "refused" || r.kind === "ceremony_refused") throw new Refusal(r);
        return r;
      });
    } catch (err) {
      if (err instanceof Refusal) return err.result;
      throw err;
    }
    if (result.kind === "limit_reached") this.emit(result.ended[result.ended.length - 1]?.revision);
    if (result.kind === "counted") this.emit(result.revision);
    return result;
  }

  adoptLateContext(id: string, delegatedAcId: string, now: number): Promise<boolean> {
    return this.db.transaction((tx) => this.lifecycle.adoptLateContext(tx, id, delegatedAcId, now));
  }

  // --- ceremonies and recorded decisions

  async requestCeremony(c: Ceremony, delegation: Delegation, actor: string, decision?: DecisionRecord): Promise<bigint> {
    const revision = await this.db.transaction((tx) => this.ceremonies.request(tx, c, delegation, actor, decision));
    this.emit(revision);
    return revision;
  }

  async decideCeremony(spec: CeremonyDecision): Promise<{ ceremony: Ceremony; revision: bigint } | { refused: Ceremony | null }> {
    const r = await this.db.transaction((tx) => this.ceremonies.decide(tx, spec));
    if ("revision" in r) this.emit(r.revision);
    return r;
  }

  getCeremony(id: string): Promise<Ceremony | null> {
    return this.ceremonies.get(this.db, id);
  }

  listCeremonies(query: CeremonyQuery): Promise<Ceremony[]> {
    return this.ceremonies.list(this.db, query);
  }

  async expireCeremonies(now: number, limit: number): Promise<Transitioned[]> {
    const done = await this.db.transaction((tx) => this.ceremonies.expire(tx, now, limit));
    this.emit(done.at(-1)?.revision);
    return done;
  }

  nextCeremonyExpiry(): Promise<number | null> {
    return this.ceremonies.nextExpiry(this.db);
  }

  async recordDecision(delegation: Delegation, decision: DecisionRecord, actor: string, now: number): Promise<bigint> {
    const revision = await this.db.transaction((tx) => this.ceremonies.recordDecision(tx, delegation, decision, actor, now));
    this.emit(revision);
    return revision;
  }

  // --- delegator contexts and GSAP approvals

  recordContextAnswer(answer: ContextAnswer): Promise<void> {
    return this.ceremonies.recordAnswer(this.db, answer);
  }

  recordContextFailure(acId: string, now: number, error: string): Promise<void> {
    return this.ceremonies.recordFailure(this.db, acId, now, error);
  }

  getDelegatorContext(acId: string): Promise<DelegatorContextState | null> {
    return this.ceremonies.getContext(this.db, acId);
  }

  contextsDue(triedBefore: number, limit: number): Promise<DelegatorContextState[]> {
    return this.ceremonies.contextsDue(this.db, triedBefore, limit);
  }

  adoptContexts(after: string, limit: number): Promise<{ added: number; next: string | null }> {
    return this.db.transaction((tx) => this.ceremonies.adoptContexts(tx, after, limit));
  }

  forgetContexts(forgetBefore: number, after: string, limit: number): Promise<{ forgotten: number; next: string | null }> {
    return this.db.transaction((tx) => this.ceremonies.forgetContexts(tx, forgetBefore, after, limit));
  }

  activeFromContext(acId: string): Promise<{ id: string; capabilityCeiling: string }[]> {
    return this.ceremonies.activeFromContext(this.db, acId);
  }

  addApproval(a: GsapApprovalRow): Promise<void> {
    return this.ceremonies.addApproval(this.db, a);
  }

  getApproval(delegationId: string): Promise<GsapApprovalRow | null> {
    return this.ceremonies.getApproval(this.db, delegationId);
  }

  approvalsDue(now: number, limit: number): Promise<GsapApprovalRow[]> {
    return this.ceremonies.approvalsDue(this.db, now, limit);
  }

  postponeApproval(delegationId: string, nextPollTime: number, error: string): Promise<void> {
    return this.ceremonies.postponeApproval(this.db, delegationId, nextPollTime, error);
  }

  removeApproval(delegationId: string): Promise<void> {
    return this.ceremonies.removeApproval(this.db, delegationId);
  }

  nextApprovalPoll(): Promise<number | null> {
    return this.ceremonies.nextApprovalPoll(this.db);
  }

  // --- the event log

  headRevision(): Promise<bigint> {
    return log.headRevision(this.db);
  }

  prunedThrough(): Promise<bigint> {
    return log.prunedThrough(this.db);
  }

  readEvents(after: bigint, limit: number, filter?: EventFilter): Promise<DelegationEvent[]> {
    // What this process has just committed, when it follows `after` at once: the follower's reads, mostly.
    const recent = filter?.delegationId || filter?.delegatorDid ? undefined : this.recent.read(after, limit);
    if (recent) return Promise.resolve(recent);
    return log.readEvents(this.db, after, limit, filter);
  }

  async pruneEvents(before: number, maxRows: number): Promise<{ deleted: number; more: boolean }> {
    const { deleted, more, through } = await log.pruneEvents(this.db, before, maxRows);
    // Nor does a reader get them from memory.
    this.recent.forgetThrough(through);
    return { deleted, more };
  }

  // --- consequences of endings

  pendingEndings(kind: EffectKind, limit: number): Promise<PendingEndings> {
    return log.pendingEndings(this.db, kind, limit);
  }

  dueRetries(kind: EffectKind, now: number, limit: number): Promise<Effect[]> {
    return log.dueRetries(this.db, kind, now, limit);
  }

  settleEffects(kind: EffectKind, outcomes: EffectOutcomes, now: number): Promise<void> {
    return log.settleEffects(this.db, kind, outcomes, now);
  }

  nextRetryTime(kind: EffectKind): Promise<number | null> {
    return log.nextRetryTime(this.db, kind);
  }

  effectBacklog(kind: EffectKind): Promise<EffectBacklog> {
    return log.effectBacklog(this.db, kind);
  }

  effectOwed(kind: EffectKind, delegationId: string): Promise<boolean> {
    return log.effectOwed(this.db, kind, delegationId);
  }

  pruneEffects(before: number, maxRows: number): Promise<number> {
    return log.pruneEffects(this.db, before, maxRows);
  }

  // --- the audit outbox

  pendingAudit(limit: number): Promise<PendingAudit[]> {
    return log.pendingAudit(this.db, limit);
  }

  markAudited(through: bigint, now: number): Promise<void> {
    return log.markAudited(this.db, through, now);
  }

  markAuditFailed(revision: bigint, error: string): Promise<void> {
    return log.markAuditFailed(this.db, revision, error);
  }

  markAuditRejected(revision: bigint, error: string, now: number): Promise<void> {
    return log.markAuditRejected(this.db, revision, error, now);
  }

  auditCursor(): Promise<bigint> {
    return log.auditCursor(this.db);
  }

  auditBacklog(): Promise<AuditBacklog> {
    return log.auditBacklog(this.db);
  }

  // --- idempotency keys

  async getIdempotency(ref: IdempotencyKeyRef): Promise<IdempotencyRecord | null> {
    const [row] = await this.db.all<KeyRow>(
      `SELECT * FROM "idempotency_keys" WHERE "scope" = $1 AND "method" = $2 AND "request_id" = $3`,
      [ref.scope, ref.method, ref.requestId],
    );
    return row ? keyFromRow(row) : null;
  }

  releaseIdempotency(ref: IdempotencyKeyRef, options: { unanswered?: boolean } = {}): Promise<void> {
    return releaseKey(this.db, ref, options.unanswered === true);
  }

  markAnswered(ref: IdempotencyKeyRef, now: number): Promise<boolean> {
    return markKeyAnswered(this.db, ref, now);
  }

  unmarkAnswered(ref: IdempotencyKeyRef, markedAt: number): Promise<void> {
    return unmarkKeyAnswered(this.db, ref, markedAt);
  }

  claimIdempotency(claim: IdempotencyClaim, now: number): Promise<ClaimResult> {
    return this.db.transaction((tx) => claimKey(tx, claim, now));
  }

  pruneIdempotency(createdBefore: number, maxRows: number): Promise<number> {
    return this.db.run(
      `DELETE FROM "idempotency_keys" WHERE ("scope", "method", "request_id") IN (
         SELECT "scope", "method", "request_id" FROM "idempotency_keys" WHERE "create_time" < $1 ORDER BY "create_time" LIMIT $2)`,
      [createdBefore, maxRows],
    );
  }

  // --- leases

  async acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean> {
    // One statement: insert, or take over an expired lease, or renew our own.
    const rows = await this.db.all<{ holder: string }>(
      `INSERT INTO "broker_leases" ("name", "holder", "expire_time") VALUES ($1, $2, $3)
       ON CONFLICT ("name") DO UPDATE SET "holder" = excluded."holder", "expire_time" = excluded."expire_time"
        WHERE "broker_leases"."holder" = excluded."holder" OR "broker_leases"."expire_time" < $4
       RETURNING "holder"`,
      [name, holder, now + ttlMs, now],
    );
    return rows.length === 1;
  }

  async releaseLease(name: string, holder: string): Promise<void> {
    await this.db.run(`DELETE FROM "broker_leases" WHERE "name" = $1 AND "holder" = $2`, [name, holder]);
  }

  async close(): Promise<void> {
    this.listeners.clear();
    await this.options.listing.close();
    await this.db.close();
  }
}
