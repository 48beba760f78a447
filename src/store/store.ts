/**
 * The store behind the use cases, split by role (as SpiceDB splits its
 * datastore): what reads delegations, what changes their state, the event
 * log, the consequences of endings, the audit outbox, idempotency keys and
 * leases. Every state change is one transaction that also appends its event
 * with the next revision; the consequences of endings and audit delivery are
 * derived from those events by cursors. Both drivers (SQLite, PostgreSQL)
 * implement all of it and pass one conformance suite.
 */
import type {
  Ceremony,
  CeremonyState,
  DecisionRecord,
  DelegatedContext,
  Delegation,
  DelegationEvent,
  DelegationState,
  EffectKind,
  EndingName,
} from "../domain/index.js";

export interface IdempotencyKeyRef {
  /** Whose key it is: the caller's DID. */
  scope: string;
  method: string;
  requestId: string;
}

export interface IdempotencyClaim extends IdempotencyKeyRef {
  requestHash: string;
  delegationId: string;
}

export interface IdempotencyRecord extends IdempotencyClaim {
  /** The first answer, once there is one. */
  response: string | null;
  createTime: number;
  /** When the answer was stored (the change it answers committed). */
  responseTime: number | null;
  /**
   * When the answer was handed out to a caller (the first request, or a retry
   * that found it stored and never handed out: the broker died after the
   * commit). Null while nobody has received it.
   */
  answeredTime: number | null;
}

export type ClaimResult = { kind: "claimed" } | { kind: "existing"; record: IdempotencyRecord };

/** Stores the first answer under a key in the same transaction as the change it answers. */
export interface CompleteIdempotency extends IdempotencyKeyRef {
  response: (delegation: Delegation) => string;
  /**
   * Nobody is there to hand this answer out (a background task completed the
   * request): its first retry does, at once (response_time stays null).
   */
  handOutByRetry?: boolean;
}

/** What activation records of the identity and the delegated context. */
export interface ActivationPatch {
  agentClientId: string;
  idpObjectId: string;
  idpBackend: string;
  delegatedAcId: string;
  delegatedAc: DelegatedContext;
}

export interface ActivateSpec {
  id: string;
  now: number;
  patch: ActivationPatch;
  completeIdempotency?: CompleteIdempotency;
}

/** What a failed creation knows of the identity it made (to find and delete it). */
export type FailurePatch = Partial<Pick<Delegation, "agentClientId" | "idpObjectId" | "idpBackend" | "delegatedAcId">>;

/** Which delegations an ending applies to. */
export type EndTarget =
  /** These delegations. */
  | { ids: readonly string[] }
  /** Every live delegation made from this delegator access context. */
  | { delegatorAcId: string }
  /** ACTIVE delegations whose expire time is at or before this time (expiry). */
  | { dueAt: number };

export interface EndSpec {
  target: EndTarget;
  /** revoke, expire or fail (exhaust happens in countCommand). */
  ending: Exclude<EndingName, "exhaust">;
  /** The end reason (and event reason): a machine code (EndReason). */
  reason: string;
  /** The words that came with it (a revoking caller's reason): the ended delegations' end_detail. */
  detail?: string;
  /** Who ends it (DID or client:<id>); by default the broker (""). Cascaded endings carry it too. */
  actor?: string;
  now: number;
  /** Most delegations of `target` to end in this transaction; cascaded children come on top. By default, 500. */
  limit?: number;
  /** Also end, with parent_delegation_ended, every live delegation made from an ended one's delegated context. By default, true. */
  cascade?: boolean;
  /** fail: what is known of the identity. */
  patch?: FailurePatch;
  completeIdempotency?: CompleteIdempotency;
  /** Deletes this key in the same transaction, so a retry starts afresh. */
  releaseIdempotency?: IdempotencyKeyRef;
}

/** One delegation an ending changed, with the revision of its event. */
export interface Ended {
  delegation: Delegation;
  revision: bigint;
  /** Ended because an ancestor ended (parent_delegation_ended). */
  cascaded: boolean;
}

export interface Transitioned {
  delegation: Delegation;
  revision: bigint;
}

export type CountResult =
  | { kind: "counted"; commandsExecuted: number; maxCommands: number; ceremony?: Ceremony; revision?: bigint | undefined }
  /** The last command of the budget: the delegation ended (with any cascade) in the same transaction. */
  | { kind: "limit_reached"; ended: Ended[]; ceremony?: Ceremony }
  /** Not counted: ended, expired, out of budget or (strict live checks) its root context unverified. */
  | { kind: "refused"; delegation: Delegation | null }
  /** The ceremony named is not an approval this command may use (state, delegation, command or expiry). */
  | { kind: "ceremony_refused"; ceremony: Ceremony | null };

/** What is written, and checked, with one counted command. */
export interface CountOptions {
  /** Strict live checks: count only while the root context's last answer from GSAP is this recent. */
  contextFreshSince?: number;
  /** Record the decision (COMMAND_DECIDED) in the counting transaction. */
  record?: { decision: DecisionRecord; actor: string };
  /** Use this approval: only if it is APPROVED, unexpired, this delegation's and this command's; it becomes USED. */
  ceremony?: { id: string; commandHash: string; actor: string };
}

export interface ListQuery {
  state: DelegationState;
  delegatorDid?: string;
  /** Keyset cursor: only ids after this one. */
  afterId?: string;
  limit: number;
  /**
   * The total the caller already has for these filters (counted on the first
   * page of a listing and carried in its page token): the store returns it as
   * `total` and does not count the matches again.
   */
  knownTotal?: number;
}

export interface EventFilter {
  delegationId?: string;
  delegatorDid?: string;
}

/** An event still to be delivered to the audit sink, with its failed attempts so far. */
export interface PendingAudit {
  event: DelegationEvent;
  attempts: number;
}

export interface AuditBacklog {
  /** Events not yet delivered. */
  pending: number;
  /** Event time of the oldest of them. */
  oldestPendingTime: number | null;
  /** Events the sink refused for good. */
  rejected: number;
}

/** A consequence of an ending waiting to be carried out. */
export interface Effect {
  kind: EffectKind;
  delegationId: string;
  /** The revision of the ending event it comes from. */
  revision: bigint;
  /** Failed attempts so far. */
  attempts: number;
  /** When the ending happened (event time). */
  createTime: number;
  /** Set for an item that failed before and waits in the retry table. */
  retryId?: number;
  /** What the worker needs of the delegation. */
  target: {
    agentClientId: string;
    idpObjectId: string;
    idpBackend: string;
    delegatedAcId: string;
    endReason: string;
  };
}

/** New endings of one kind after the kind's cursor. */
export interface PendingEndings {
  items: Effect[];
  /** Revision of the last event examined: the cursor may advance to it. */
  through: bigint;
  /** Events examined (the batch was full when this equals the limit). */
  examined: number;
}

/** How the items of one worker run went, recorded in one transaction. */
export interface EffectOutcomes {
  /** Advance the kind's cursor to this revision (the fresh items up to it are settled). */
  through?: bigint;
  /** Retry-table items that are done. */
  done: number[];
  /** Items to try again later (inserted for fresh items, updated for retry-table ones). */
  retry: { effect: Effect; error: string; nextAttemptTime: number }[];
  /** Items refused for good. */
  rejected: { effect: Effect; error: string }[];
}

export interface EffectBacklog {
  /** Items not yet done: endings after the cursor, and retries waiting. */
  pending: number;
  /** Of those, how many have failed at least once. */
  retrying: number;
  /** Time of the oldest pending ending. */
  oldestPendingTime: number | null;
  /** Items the external system refused for good. */
  rejected: number;
}

export interface DelegationReader {
  get(id: string): Promise<Delegation | null>;
  /** The delegation whose delegated access context this is, if any. */
  findByDelegatedAc(delegatedAcId: string): Promise<Delegation | null>;
  /** A page of delegations in id order, and how many match in all (or `query.knownTotal`, when given). */
  list(query: ListQuery): Promise<{ items: Delegation[]; total: number }>;
  /** Earliest expire time of an ACTIVE delegation. */
  nextExpireTime(): Promise<number | null>;
  /** REQUESTED delegations created before `createdBefore` (left by a crash). */
  staleRequested(createdBefore: number, limit: number): Promise<Delegation[]>;
}

export interface LifecycleWriter {
  /** Inserts a REQUESTED delegation, claiming the idempotency key in the same transaction. */
  insertRequested(delegation: Delegation, claim?: IdempotencyClaim): Promise<ClaimResult>;
  /** REQUESTED → ACTIVE with its CREATED event (and the replayable answer); null if it was no longer REQUESTED. */
  activate(spec: ActivateSpec): Promise<Transitioned | null>;
  /**
   * Ends delegations: state, end time and reason, and one event each (in
   * revision order), with any cascade, in one transaction; their consequences
   * are derived from those events (EffectQueue). Returns what it ended (empty
   * if nothing matched); a target with more than `limit` matches is ended by
   * calling again.
   */
  end(spec: EndSpec): Promise<Ended[]>;
  /**
   * Counts one command atomically: never more than max_commands, only while
   * ACTIVE and unexpired. The command that exhausts the budget ends the
   * delegation (EXPIRED, command_limit) in the same transaction.
   */
  countCommand(id: string, now: number, options?: CountOptions): Promise<CountResult>;
  /**
   * A delegated context GSAP issued for a delegation that had already ended
   * (it was ended while being created): recorded on the row, and revoked by
   * the gsap-revoke worker (a retry item if it has already passed the
   * ending). False if the delegation is live or already has a context.
   */
  adoptLateContext(id: string, delegatedAcId: string, now: number): Promise<boolean>;
}

export interface EventLog {
  /** The newest revision in the log. */
  headRevision(): Promise<bigint>;
  /** Events at or below this revision have been pruned. */
  prunedThrough(): Promise<bigint>;
  readEvents(after: bigint, limit: number, filter?: EventFilter): Promise<DelegationEvent[]>;
  /**
   * Deletes up to `maxRows` of the oldest events written before `before`,
   * never one the audit sink or a consequence worker has not settled; `more`
   * when another call would delete more.
   */
  pruneEvents(before: number, maxRows: number): Promise<{ deleted: number; more: boolean }>;
}

/**
 * The consequences of endings, derived from the event log: each kind has a
 * cursor (the last revision whose endings it has settled); items that failed
 * wait in a retry table with their next attempt time. Nothing is written per
 * ending beyond its event.
 */
export interface EffectQueue {
  /** Endings after the kind's cursor that need this kind of consequence, oldest first. */
  pendingEndings(kind: EffectKind, limit: number): Promise<PendingEndings>;
  /** Retry-table items of `kind` due at `now`, oldest first. */
  dueRetries(kind: EffectKind, now: number, limit: number): Promise<Effect[]>;
  /** Records a run's outcomes and advances the cursor, in one transaction. */
  settleEffects(kind: EffectKind, outcomes: EffectOutcomes, now: number): Promise<void>;
  /** When the next retry of `kind` is due, if any. */
  nextRetryTime(kind: EffectKind): Promise<number | null>;
  effectBacklog(kind: EffectKind): Promise<EffectBacklog>;
  /**
   * Whether a consequence of `kind` is still owed for the delegation: an
   * ending after the cursor, or a retry waiting (the workers will do it).
   */
  effectOwed(kind: EffectKind, delegationId: string): Promise<boolean>;
  /** Deletes up to `maxRows` rejected items last changed before `before`. */
  pruneEffects(before: number, maxRows: number): Promise<number>;
}

/**
 * Delivery of the event log to the audit sink: a cursor (every event up to
 * it is delivered or was refused for good), with attempts, errors and
 * refusals recorded on the events themselves.
 */
export interface AuditOutboxStore {
  /** Events after the cursor, oldest first. */
  pendingAudit(limit: number): Promise<PendingAudit[]>;
  /** Every event up to `through` is delivered (or was refused). */
  markAudited(through: bigint, now: number): Promise<void>;
  /** Records a failed attempt (it stays pending). */
  markAuditFailed(revision: bigint, error: string): Promise<void>;
  /** The sink refused the event for good: recorded on it, counted, and the cursor moves past it. */
  markAuditRejected(revision: bigint, error: string, now: number): Promise<void>;
  /** The last revision delivered (or refused). */
  auditCursor(): Promise<bigint>;
  auditBacklog(): Promise<AuditBacklog>;
}

export interface IdempotencyStore {
  getIdempotency(ref: IdempotencyKeyRef): Promise<IdempotencyRecord | null>;
  /**
   * Deletes a key. With `unanswered`, only if it has no answer yet (a retry
   * releasing an abandoned key must not erase one that just completed).
   */
  releaseIdempotency(ref: IdempotencyKeyRef, options?: { unanswered?: boolean }): Promise<void>;
  /**
   * Marks a stored answer as handed out, once: true for the one call that
   * marked it, false when it was already marked (or has no answer).
   */
  markAnswered(ref: IdempotencyKeyRef, now: number): Promise<boolean>;
  /** Undoes this caller's mark (made at `markedAt`) when it could not hand the answer out. */
  unmarkAnswered(ref: IdempotencyKeyRef, markedAt: number): Promise<void>;
  /** Claims a key for a mutation that inserts no row (revoke). */
  claimIdempotency(claim: IdempotencyClaim, now: number): Promise<ClaimResult>;
  /** Deletes up to `maxRows` keys created before `createdBefore`. */
  pruneIdempotency(createdBefore: number, maxRows: number): Promise<number>;
}

export interface LeaseStore {
  /** Takes or renews a named lease; true if `holder` has it until now + ttlMs. */
  acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean>;
  releaseLease(name: string, holder: string): Promise<void>;
}

/** A decision on a pending ceremony. */
export interface CeremonyDecision {
  id: string;
  approve: boolean;
  /** The approver (DID or client:<id>). */
  actor: string;
  reason: string;
  now: number;
}

export interface CeremonyQuery {
  state: CeremonyState;
  delegationId?: string;
  delegatorDid?: string;
  /** Keyset cursor: only ids after this one. */
  afterId?: string;
  limit: number;
}

/**
 * Ceremonies (human approval of one command) and recorded decisions. Using
 * an approval is part of counting the command (countCommand's `ceremony`).
 */
export interface CeremonyStore {
  /** Inserts a PENDING ceremony with its CEREMONY_REQUESTED event (after the decision's COMMAND_DECIDED, when given). */
  requestCeremony(c: Ceremony, delegation: Delegation, actor: string, decision?: DecisionRecord): Promise<bigint>;
  /** PENDING → APPROVED or DENIED while unexpired and its delegation ACTIVE, with its event; else the ceremony as it is (null: none). */
  decideCeremony(spec: CeremonyDecision): Promise<{ ceremony: Ceremony; revision: bigint } | { refused: Ceremony | null }>;
  getCeremony(id: string): Promise<Ceremony | null>;
  listCeremonies(query: CeremonyQuery): Promise<Ceremony[]>;
  /** Open ceremonies past their expiry or of an ended delegation → EXPIRED with their events; at most `limit`. */
  expireCeremonies(now: number, limit: number): Promise<Transitioned[]>;
  /** Earliest expire time of an open (PENDING or APPROVED) ceremony. */
  nextCeremonyExpiry(): Promise<number | null>;
  /** Appends a COMMAND_DECIDED event (a decision that changed nothing). */
  recordDecision(delegation: Delegation, decision: DecisionRecord, actor: string, now: number): Promise<bigint>;
}

/** GSAP's last answer about a root access context. */
export interface DelegatorContextState {
  acId: string;
  principalDid: string;
  status: string;
  capabilityCeiling: string;
  /** When GSAP last answered (0: never). */
  checkedTime: number;
  /** When it was last asked. */
  attemptTime: number;
  /** Failed tries since the last answer. */
  failures: number;
  lastError: string;
}

export interface ContextAnswer {
  acId: string;
  principalDid: string;
  status: string;
  capabilityCeiling: string;
  now: number;
}

/** The live state of the root contexts the broker's delegations hang from. */
export interface DelegatorContextStore {
  recordContextAnswer(answer: ContextAnswer): Promise<void>;
  recordContextFailure(acId: string, now: number, error: string): Promise<void>;
  getDelegatorContext(acId: string): Promise<DelegatorContextState | null>;
  /** Root contexts with ACTIVE delegations last asked about before `triedBefore`, least recently first. */
  contextsDue(triedBefore: number, limit: number): Promise<DelegatorContextState[]>;
  /**
   * Rows (due at once) for the root contexts of the first `limit` ACTIVE
   * delegations with ids after `after` that have none; one transaction.
   * `next` is the id to pass for the next window, null after the last.
   */
  adoptContexts(after: string, limit: number): Promise<{ added: number; next: string | null }>;
  /**
   * Of the first `limit` contexts with ids after `after`, forgets those
   * without a REQUESTED or ACTIVE delegation last tried before
   * `forgetBefore`; one transaction. `next` as for adoptContexts.
   */
  forgetContexts(forgetBefore: number, after: string, limit: number): Promise<{ forgotten: number; next: string | null }>;
  /** The ACTIVE delegations made directly from a context, with their ceilings. */
  activeFromContext(acId: string): Promise<{ id: string; capabilityCeiling: string }[]>;
}

/** A delegated-context request waiting for GSAP's approval flow. */
export interface GsapApprovalRow {
  delegationId: string;
  pollToken: string;
  /** When it fails as gsap_approval_timeout. */
  deadline: number;
  nextPollTime: number;
  attempts: number;
  lastError: string;
  createTime: number;
  /** The identity registered before GSAP answered. */
  agentClientId: string;
  idpObjectId: string;
  displayName: string;
  /** The create's request_id key, when it had one ("" otherwise). */
  requestScope: string;
  requestId: string;
}

export interface GsapApprovalStore {
  addApproval(a: GsapApprovalRow): Promise<void>;
  getApproval(delegationId: string): Promise<GsapApprovalRow | null>;
  approvalsDue(now: number, limit: number): Promise<GsapApprovalRow[]>;
  postponeApproval(delegationId: string, nextPollTime: number, error: string): Promise<void>;
  removeApproval(delegationId: string): Promise<void>;
  nextApprovalPoll(): Promise<number | null>;
}

export interface DelegationStore
  extends DelegationReader,
    LifecycleWriter,
    EventLog,
    EffectQueue,
    AuditOutboxStore,
    IdempotencyStore,
    LeaseStore,
    CeremonyStore,
    DelegatorContextStore,
    GsapApprovalStore {
  readonly driver: "sqlite" | "postgresql";
  /** Called with the revision after every committed change made through this store. */
  onCommit(listener: (revision: bigint) => void): () => void;
  close(): Promise<void>;
}
