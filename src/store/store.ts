/**
 * The store behind the use cases. Every state change is one transaction that
 * also appends its event with the next revision; drivers (SQLite, PostgreSQL)
 * implement this interface and pass the same conformance suite.
 */
import type { Delegation, DelegationEvent, DelegationState, EventType } from "../delegation/model.js";

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
}

export type ClaimResult = { kind: "claimed" } | { kind: "existing"; record: IdempotencyRecord };

/** Fields a transition may set besides state, end time and reason. */
export type DelegationPatch = Partial<
  Pick<Delegation, "agentClientId" | "idpObjectId" | "idpBackend" | "delegatedAcId" | "delegatedAc">
>;

export interface TransitionSpec {
  id: string;
  /** The transition happens only if the delegation is in one of these states. */
  from: DelegationState[];
  to: DelegationState;
  event: EventType;
  /** Event reason; for an ending state also the end reason. */
  reason: string;
  now: number;
  patch?: DelegationPatch;
  /** Only if the delegation's expire time has passed (for expiry). */
  onlyIfExpiredAt?: number;
  /** Stores the first answer, built from the changed delegation, under this key in the same transaction. */
  completeIdempotency?: IdempotencyKeyRef & { response: (delegation: Delegation) => string };
  /** Deletes this key in the same transaction, so a retry starts afresh. */
  releaseIdempotency?: IdempotencyKeyRef;
}

export interface Transitioned {
  delegation: Delegation;
  revision: bigint;
}

export type CountResult =
  | { kind: "counted"; commandsExecuted: number; maxCommands: number }
  | { kind: "limit_reached"; delegation: Delegation; revision: bigint }
  | { kind: "refused"; delegation: Delegation | null };

export interface ListQuery {
  state: DelegationState;
  delegatorDid?: string;
  /** Keyset cursor: only ids after this one. */
  afterId?: string;
  limit: number;
}

export interface EventFilter {
  delegationId?: string;
  delegatorDid?: string;
}

/** An event still to be delivered to the audit sink. */
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

export interface DelegationStore {
  readonly driver: "sqlite" | "postgresql";
  /** Inserts a REQUESTED delegation, claiming the idempotency key in the same transaction. */
  insertRequested(delegation: Delegation, claim?: IdempotencyClaim): Promise<ClaimResult>;
  /** Conditionally changes state and appends the event; null if the condition did not hold. */
  transition(spec: TransitionSpec): Promise<Transitioned | null>;
  /**
   * Counts one command atomically: never more than max_commands, only while
   * ACTIVE and unexpired. The command that exhausts the budget ends the
   * delegation (EXPIRED, command_limit) in the same transaction.
   */
  countCommand(id: string, now: number): Promise<CountResult>;
  get(id: string): Promise<Delegation | null>;
  list(query: ListQuery): Promise<{ items: Delegation[]; total: number }>;
  /** Live delegations made from this delegator access context. */
  findLiveByDelegatorAc(delegatorAcId: string): Promise<Delegation[]>;
  /** The delegation whose delegated access context this is, if any. */
  findByDelegatedAc(delegatedAcId: string): Promise<Delegation | null>;
  /** ACTIVE delegations whose expire time is at or before `now`. */
  dueForExpiry(now: number, limit: number): Promise<Delegation[]>;
  /** Earliest expire time of an ACTIVE delegation. */
  nextExpireTime(): Promise<number | null>;
  /** Ended delegations whose agent identity still has to be deleted. */
  pendingCleanup(limit: number): Promise<Delegation[]>;
  markCleanedUp(id: string): Promise<void>;
  /** REQUESTED delegations created before `createdBefore` (left by a crash). */
  staleRequested(createdBefore: number, limit: number): Promise<Delegation[]>;
  getIdempotency(ref: IdempotencyKeyRef): Promise<IdempotencyRecord | null>;
  releaseIdempotency(ref: IdempotencyKeyRef): Promise<void>;
  /** Claims a key for a mutation that inserts no row (revoke). */
  claimIdempotency(claim: IdempotencyClaim, now: number): Promise<ClaimResult>;
  pruneIdempotency(createdBefore: number): Promise<number>;
  /** The newest revision in the log. */
  headRevision(): Promise<bigint>;
  /** Events at or below this revision have been pruned. */
  prunedThrough(): Promise<bigint>;
  readEvents(after: bigint, limit: number, filter?: EventFilter): Promise<DelegationEvent[]>;
  /** Deletes events older than `before` (never one not yet audited); returns how many. */
  pruneEvents(before: number): Promise<number>;
  /** Undelivered events, oldest revision first. */
  pendingAudit(limit: number): Promise<PendingAudit[]>;
  markAudited(revision: bigint, now: number): Promise<void>;
  /** Records a failed attempt (it stays pending). */
  markAuditFailed(revision: bigint, error: string): Promise<void>;
  /** The sink refused the event for good; it is no longer pending. */
  markAuditRejected(revision: bigint, error: string, now: number): Promise<void>;
  auditBacklog(): Promise<AuditBacklog>;
  /** Takes or renews a named lease; true if `holder` has it until now + ttlMs. */
  acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean>;
  releaseLease(name: string, holder: string): Promise<void>;
  /** Called with the revision after every committed change made through this store. */
  onCommit(listener: (revision: bigint) => void): () => void;
  close(): Promise<void>;
}
