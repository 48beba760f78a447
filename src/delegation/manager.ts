/**
 * The delegation use cases. Knows the store, the registrar and GSAP through
 * their interfaces, and nothing of transports: callers pass a Principal and
 * plain inputs and get domain objects or a BrokerError.
 */
import { createHash } from "node:crypto";
import type { DelegatedContextRequest, GsapClient } from "../clients/gsap/gsap-client.js";
import type { Logger } from "../logging.js";
import type { AgentIdentity, AgentRegistrar } from "../registrars/registrar.js";
import type { DelegationStore, IdempotencyClaim, IdempotencyKeyRef, IdempotencyRecord } from "../store/store.js";
import { CommandMatcher } from "./command-matcher.js";
import { BrokerError, delegationNotFound, invalidArgument } from "./errors.js";
import { newDelegationId } from "./ids.js";
import {
  type AuthorizeResult,
  type CreateResult,
  type DelegatedContext,
  type Delegation,
  type DelegationState,
  EndReason,
  type Access,
  type Principal,
  commandsRemaining,
} from "./model.js";
import { type DelegatorAuthority, type PolicySettings, type RequestedScope, resolveScope } from "./policy.js";
import * as v from "./validate.js";

export interface ManagerSettings extends PolicySettings {
  agentDidPrefix: string;
  idempotencyTtlMs: number;
  createInflightMs: number;
}

export interface ManagerHooks {
  /** A delegation will expire at `expireTime` (the expiry scheduler listens). */
  expiryScheduled?(expireTime: number): void;
  /** An identity awaits deletion from the IdP (the cleanup loop listens). */
  cleanupNeeded?(): void;
}

/**
 * Fail-closed auditing, as the use cases see it. When `failClosed` is set, a
 * delegation is granted only once its CREATED event is durably recorded in
 * the audit log; ending authority (revoke, expire, cascade) is never refused.
 */
export interface AuditGate {
  failClosed: boolean;
  timeoutMs: number;
  /**
   * Whether the audit sink can record now. While its last delivery failed,
   * this tries once more (within `timeoutMs`), so a recovered sink is noticed
   * at once instead of at the next backoff.
   */
  ready(): Promise<boolean>;
  /** True once every event up to `revision` is recorded, false after `timeoutMs`. */
  waitDelivered(revision: bigint, timeoutMs: number): Promise<boolean>;
}

export interface DelegationManagerDeps {
  store: DelegationStore;
  registrar: AgentRegistrar;
  gsap: GsapClient;
  settings: ManagerSettings;
  log: Logger;
  /** By default, Date.now. */
  clock?: () => number;
  hooks?: ManagerHooks;
  audit?: AuditGate;
}

export interface CreateInput {
  delegatorAcId: string;
  agentType: string;
  agentModel: string;
  accordTemplate: string;
  scope: RequestedScope;
  requestId: string;
}

export interface RevokeInput {
  delegationId: string;
  reason: string;
  requestId: string;
}

export interface ListInput {
  pageSize: number;
  pageToken: string;
  delegatorDid: string;
  state: DelegationState | undefined;
}

export interface ListResult {
  items: Delegation[];
  nextPageToken: string;
  total: number;
}

/**
 * What AuthorizeCommand needs of a delegation and that never changes once it
 * exists, so a cached copy is right on every replica without invalidation.
 */
interface CommandPolicy {
  delegatorDid: string;
  agentDid: string;
  agentClientId: string;
  expireTime: number;
  prohibited: CommandMatcher;
  ceremony: CommandMatcher;
}

/** Delegations whose command policy is kept in memory (about 1 KiB each). */
const POLICY_CACHE_SIZE = 10_000;

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;
const DEFAULT_AGENT_TYPE = "claude-code";
const DEFAULT_ACCORD = "ai-delegation-standard";

/** Stored in place of the first CreateDelegation answer; the secret is never kept. */
interface StoredCreate {
  delegation: Delegation;
  agentPrincipal: CreateResult["agentPrincipal"];
  delegatedAc: DelegatedContext;
  clientId: string;
}

function hashRequest(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex");
}

/** Whether `principal` may do `access` on `d` (see Access). */
export function canAct(principal: Principal, d: Pick<Delegation, "delegatorDid" | "agentDid" | "agentClientId">, access: Access): boolean {
  if (principal.admin) return true;
  if (principal.did !== "" && (principal.did === d.delegatorDid || principal.did === d.agentDid)) return true;
  // An agent's own client credential reads and asks about its own delegation, nothing more.
  return access !== "manage" && !!principal.clientId && principal.clientId === d.agentClientId;
}

export class DelegationManager {
  private readonly store: DelegationStore;
  private readonly registrar: AgentRegistrar;
  private readonly gsap: GsapClient;
  private readonly settings: ManagerSettings;
  private readonly log: Logger;
  private readonly clock: () => number;
  private readonly hooks: ManagerHooks;
  private readonly policies = new Map<string, CommandPolicy>();
  private readonly audit: AuditGate | undefined;

  constructor(deps: DelegationManagerDeps) {
    this.audit = deps.audit;
    this.store = deps.store;
    this.registrar = deps.registrar;
    this.gsap = deps.gsap;
    this.settings = deps.settings;
    this.log = deps.log;
    this.clock = deps.clock ?? Date.now;
    this.hooks = deps.hooks ?? {};
  }

  /** Creates a delegation: REQUESTED, then the identity, then the GSAP context, then ACTIVE. */
  async create(principal: Principal, input: CreateInput, signal?: AbortSignal): Promise<CreateResult> {
    if (principal.did === "") {
      // A credential without a DID: a service account (admin) or an agent's own client.
      if (principal.clientId && principal.admin) {
        throw new BrokerError(
          "PERMISSION_DENIED",
          "DELEGATOR_DID_REQUIRED",
          "CreateDelegation delegates the caller's own authority: the credential must carry the delegator's DID",
        );
      }
      if (principal.clientId) {
        throw new BrokerError("PERMISSION_DENIED", "AGENT_CANNOT_DELEGATE", "an agent credential cannot create delegations");
      }
      throw new BrokerError("UNAUTHENTICATED", "DELEGATOR_UNKNOWN", "CreateDelegation needs an authenticated delegator");
    }
    const delegatorAcId = v.identifier("delegator_ac_id", input.delegatorAcId, { required: true });
    const agentType = v.agentType("agent_type", input.agentType || DEFAULT_AGENT_TYPE);
    const agentModel = v.text("agent_model", input.agentModel, 128);
    const accordTemplate = v.identifier("accord_template", input.accordTemplate || DEFAULT_ACCORD, { required: true });
    const requestId = v.requestId("request_id", input.requestId);
    const normalized = { delegatorAcId, agentType, agentModel, accordTemplate, scope: input.scope };

    let claim: IdempotencyClaim | undefined;
    if (requestId !== "") {
      claim = {
        scope: principal.did,
        method: "CreateDelegation",
        requestId,
        requestHash: hashRequest(normalized),
        delegationId: "",
      };
      const replay = await this.replayCreate(claim);
      if (replay) return replay;
    }

    if (this.audit?.failClosed && !(await this.audit.ready())) throw auditUnavailable();
    const now = this.clock();
    const authority = await this.delegatorAuthority(principal, delegatorAcId);
    const scope = resolveScope(this.settings, input.scope, authority, now);

    const id = newDelegationId(now);
    const agentDid = `${this.settings.agentDidPrefix}${agentType}-${id}`;
    const delegatorShort = principal.did.split("/").pop() || principal.did;
    const displayName = `${agentType} (delegated by ${delegatorShort})`;
    const requested: Delegation = {
      id,
      state: "REQUESTED",
      agentType,
      agentModel,
      agentDid,
      agentClientId: "",
      idpObjectId: "",
      idpBackend: this.registrar.backend,
      delegatorDid: principal.did,
      delegatorAcId,
      delegatedAcId: "",
      delegatedAc: null,
      capabilityCeiling: scope.capabilityCeiling,
      ceremonyRequiredFor: scope.ceremonyRequiredFor,
      prohibitedCommands: scope.prohibitedCommands,
      inheritCorpus: scope.inheritCorpus,
      inheritContexts: scope.inheritContexts,
      accordTemplate,
      maxCommands: scope.maxCommands,
      commandsExecuted: 0,
      depth: authority.depth + 1,
      createTime: now,
      updateTime: now,
      expireTime: now + scope.ttlMs,
      endTime: null,
      endReason: "",
      chronicleCid: "",
      idpCleanupPending: false,
    };

    if (claim) claim.delegationId = id;
    const inserted = await this.store.insertRequested(requested, claim);
    if (inserted.kind === "existing" && claim) {
      // A concurrent request with the same id won the claim.
      const replay = await this.replayCreate(claim, inserted.record);
      if (replay) return replay;
      throw new BrokerError("ABORTED", "REQUEST_IN_PROGRESS", "a request with this request_id is in progress; retry");
    }

    // 2. the agent identity
    let identity: AgentIdentity;
    try {
      identity = await this.registrar.registerAgent({
        delegationId: id,
        agentType,
        agentModel,
        delegatorDid: principal.did,
        displayName,
        expireTime: requested.expireTime,
      });
    } catch (err) {
      await this.failCreation(id, {}, claim);
      throw upstream("IDP", "identity provider", err);
    }
    const patch = {
      agentClientId: identity.clientId,
      idpObjectId: identity.objectId,
      idpBackend: this.registrar.backend,
    };
    // The caller gave up (deadline, cancel): nobody would receive the credential, so undo.
    if (signal?.aborted) {
      await this.failCreation(id, patch, claim);
      throw callerGone();
    }

    // 3. the delegated access context
    let delegatedAc: DelegatedContext;
    try {
      const request: DelegatedContextRequest = {
        delegatorAcId,
        agentDid,
        delegationId: id,
        capabilityCeiling: scope.capabilityCeiling,
        ttlMs: scope.ttlMs,
        accordTemplate,
      };
      delegatedAc = await this.gsap.requestDelegatedContext(request);
    } catch (err) {
      await this.failCreation(id, patch, claim);
      throw upstream("GSAP", "GSAP broker", err);
    }

    if (signal?.aborted) {
      await this.failCreation(id, patch, claim);
      throw callerGone();
    }

    // 4. ACTIVE, with the event and the replayable answer, in one transaction
    const agentPrincipal = { did: agentDid, clientId: identity.clientId, displayName: identity.displayName };
    const stored = (delegation: Delegation): string =>
      JSON.stringify({ delegation, agentPrincipal, delegatedAc, clientId: identity.clientId } satisfies StoredCreate);
    const activated = await this.store.transition({
      id,
      from: ["REQUESTED"],
      to: "ACTIVE",
      event: "CREATED",
      reason: "created",
      now: this.clock(),
      patch: { ...patch, delegatedAcId: delegatedAc.contextId, delegatedAc },
      ...(claim ? { completeIdempotency: { ...claim, response: stored } } : {}),
    });
    if (!activated) {
      // Revoked (cascade, admin) or reconciled while we were creating: undo.
      await this.failCreation(id, patch, claim);
      throw new BrokerError("ABORTED", "DELEGATION_ENDED_DURING_CREATE", `delegation ${id} was ended while it was being created`);
    }
    if (signal?.aborted) {
      // Gone between GSAP's answer and the commit: withdraw, so no live delegation has an unseen secret.
      await this.end(id, "REVOKED", "REVOKED", "caller_gone");
      if (claim) await this.store.releaseIdempotency(claim);
      await this.cleanupIdentities(10, id);
      throw callerGone();
    }
    if (this.audit?.failClosed && !(await this.audit.waitDelivered(activated.revision, this.audit.timeoutMs))) {
      // Not recorded in time: the grant is withdrawn, and a retry with this request_id starts afresh.
      await this.end(id, "REVOKED", "REVOKED", "audit_unavailable");
      if (claim) await this.store.releaseIdempotency(claim);
      await this.cleanupIdentities(10, id);
      throw auditUnavailable();
    }
    this.hooks.expiryScheduled?.(activated.delegation.expireTime);
    this.log.info(
      { delegationId: id, delegator: principal.did, agent: agentDid, idp: this.registrar.backend, revision: activated.revision.toString() },
      "delegation created",
    );
    return {
      delegation: activated.delegation,
      agentPrincipal,
      delegatedAc,
      agentCredential: { clientId: identity.clientId, clientSecret: identity.clientSecret },
    };
  }

  private async replayCreate(claim: IdempotencyClaim, known?: IdempotencyRecord): Promise<CreateResult | undefined> {
    const record = known ?? (await this.store.getIdempotency(claim));
    if (!record) return undefined;
    if (record.requestHash !== claim.requestHash) {
      throw new BrokerError(
        "ALREADY_EXISTS",
        "REQUEST_ID_REUSED",
        "request_id was already used for a different request",
        { field: "request_id" },
      );
    }
    if (record.response) {
      const s = JSON.parse(record.response) as StoredCreate;
      return { delegation: s.delegation, agentPrincipal: s.agentPrincipal, delegatedAc: s.delegatedAc, agentCredential: { clientId: s.clientId, clientSecret: "" } };
    }
    // No answer yet: still in flight, or left by a crash (then the delegation is FAILED or gone).
    const d = record.delegationId ? await this.store.get(record.delegationId) : null;
    if (d && d.state === "REQUESTED") {
      throw new BrokerError("ABORTED", "REQUEST_IN_PROGRESS", "a request with this request_id is in progress; retry");
    }
    await this.store.releaseIdempotency(claim);
    return undefined;
  }

  private async delegatorAuthority(principal: Principal, delegatorAcId: string): Promise<DelegatorAuthority> {
    // A context the broker itself delegated: the parent delegation bounds the child.
    const parent = await this.store.findByDelegatedAc(delegatorAcId);
    if (parent) {
      if (!canAct(principal, parent, "manage")) throw delegatorContextUnknown();
      if (parent.state !== "ACTIVE") {
        throw new BrokerError("FAILED_PRECONDITION", "DELEGATOR_CONTEXT_NOT_ACTIVE", "the delegator's access context is not active");
      }
      return { capabilityCeiling: parent.capabilityCeiling, expireTime: parent.expireTime, depth: parent.depth };
    }
    try {
      const ctx = await this.gsap.describeDelegatorContext(delegatorAcId, principal.did);
      return { capabilityCeiling: ctx.capabilityCeiling, expireTime: ctx.expireTime, depth: 0 };
    } catch (err) {
      if (err instanceof BrokerError) throw err;
      throw upstream("GSAP", "GSAP broker", err);
    }
  }

  /** REQUESTED → FAILED, releasing the idempotency key and deleting whatever identity exists. */
  private async failCreation(id: string, patch: { agentClientId?: string; idpObjectId?: string }, claim?: IdempotencyKeyRef) {
    try {
      await this.store.transition({
        id,
        from: ["REQUESTED"],
        to: "FAILED",
        event: "FAILED",
        reason: EndReason.creationFailed,
        now: this.clock(),
        patch,
        ...(claim ? { releaseIdempotency: claim } : {}),
      });
      if (claim) await this.store.releaseIdempotency(claim);
      await this.cleanupIdentities(10, id);
    } catch (err) {
      // The reconciler finishes what this could not.
      this.log.error({ err, delegationId: id }, "compensation after failed create did not complete");
    }
  }

  /** Ends an active delegation (and every delegation made from it). */
  async revoke(principal: Principal, input: RevokeInput): Promise<Delegation> {
    const id = v.delegationId("delegation_id", input.delegationId);
    const reason = v.reason("reason", input.reason || EndReason.manualRevocation);
    const requestId = v.requestId("request_id", input.requestId);
    const d = await this.store.get(id);
    if (!d || !canAct(principal, d, "manage")) throw delegationNotFound(id);

    let claim: IdempotencyClaim | undefined;
    if (requestId !== "") {
      claim = {
        scope: principal.did || "anonymous",
        method: "RevokeDelegation",
        requestId,
        requestHash: hashRequest({ id, reason }),
        delegationId: id,
      };
      const got = await this.store.claimIdempotency(claim, this.clock());
      if (got.kind === "existing") {
        if (got.record.requestHash !== claim.requestHash) {
          throw new BrokerError("ALREADY_EXISTS", "REQUEST_ID_REUSED", "request_id was already used for a different request", {
            field: "request_id",
          });
        }
        if (got.record.response) return JSON.parse(got.record.response) as Delegation;
        throw new BrokerError("ABORTED", "REQUEST_IN_PROGRESS", "a request with this request_id is in progress; retry");
      }
    }
    const ended = await this.end(id, "REVOKED", "REVOKED", reason, undefined, [], claim);
    if (!ended) {
      if (claim) await this.store.releaseIdempotency(claim);
      const now = await this.store.get(id);
      throw notActive(id, now?.state ?? d.state);
    }
    this.log.info({ delegationId: id, reason, by: principal.did || "anonymous" }, "delegation revoked");
    return ended;
  }

  /**
   * Moves a live delegation to an end state with its event, then cascades to
   * delegations made from its delegated context. Null if it was not live.
   */
  private async end(
    id: string,
    to: "REVOKED" | "EXPIRED",
    event: "REVOKED" | "EXPIRED",
    reason: string,
    onlyIfExpiredAt?: number,
    ended: string[] = [],
    claim?: IdempotencyKeyRef,
  ): Promise<Delegation | null> {
    const t = await this.store.transition({
      id,
      from: to === "EXPIRED" ? ["ACTIVE"] : ["REQUESTED", "ACTIVE"],
      to,
      event,
      reason,
      now: this.clock(),
      ...(onlyIfExpiredAt !== undefined ? { onlyIfExpiredAt } : {}),
      ...(claim ? { completeIdempotency: { ...claim, response: (d: Delegation) => JSON.stringify(d) } } : {}),
    });
    if (!t) return null;
    ended.push(id);
    this.hooks.cleanupNeeded?.();
    await this.cascade(t.delegation.delegatedAcId, EndReason.parentEnded, ended);
    return t.delegation;
  }

  private async cascade(delegatedAcId: string, reason: string, ended: string[]): Promise<void> {
    if (delegatedAcId === "") return;
    for (const child of await this.store.findLiveByDelegatorAc(delegatedAcId)) {
      await this.end(child.id, "REVOKED", "REVOKED", reason, undefined, ended);
    }
  }

  /** A delegation with its counters; NOT_FOUND also when it is not the caller's. */
  async get(principal: Principal, delegationId: string): Promise<Delegation> {
    const id = v.delegationId("delegation_id", delegationId);
    const d = await this.store.get(id);
    if (!d || !canAct(principal, d, "read")) throw delegationNotFound(id);
    return d;
  }

  /** A page of delegations in id order (oldest first). */
  async list(principal: Principal, input: ListInput): Promise<ListResult> {
    if (!Number.isInteger(input.pageSize) || input.pageSize < 0) {
      throw invalidArgument("page_size", "must not be negative");
    }
    if (!principal.admin && principal.did === "") {
      throw new BrokerError("PERMISSION_DENIED", "DELEGATOR_ONLY", "ListAgents needs a delegator identity");
    }
    const pageSize = Math.min(input.pageSize || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    const state = input.state ?? "ACTIVE";
    const delegatorDid = input.delegatorDid === "" ? "" : v.did("delegator_did", input.delegatorDid);
    // A delegator lists only their own delegations; naming someone else's DID finds nothing.
    if (!principal.admin && delegatorDid !== "" && delegatorDid !== principal.did) {
      return { items: [], nextPageToken: "", total: 0 };
    }
    const effectiveDid = principal.admin ? delegatorDid : principal.did;
    const filter = { s: state, d: effectiveDid };
    const afterId = input.pageToken === "" ? undefined : decodePageToken(input.pageToken, filter);
    const { items, total } = await this.store.list({
      state,
      ...(effectiveDid ? { delegatorDid: effectiveDid } : {}),
      ...(afterId ? { afterId } : {}),
      limit: pageSize + 1,
    });
    const page = items.slice(0, pageSize);
    const last = page[page.length - 1];
    const nextPageToken = items.length > pageSize && last ? encodePageToken(last.id, filter) : "";
    return { items: page, nextPageToken, total };
  }

  /** Ends every live delegation made from `delegatorAcId` (GSAP revoked it); admins only. */
  async revokeDelegatorContext(principal: Principal, input: { delegatorAcId: string; reason: string }): Promise<string[]> {
    if (!principal.admin) {
      throw new BrokerError("PERMISSION_DENIED", "ADMIN_ONLY", "RevokeDelegatorContext is reserved to the GSAP broker");
    }
    const acId = v.identifier("delegator_ac_id", input.delegatorAcId, { required: true });
    const reason = v.reason("reason", input.reason || EndReason.delegatorAcRevoked);
    const ended: string[] = [];
    for (const d of await this.store.findLiveByDelegatorAc(acId)) {
      await this.end(d.id, "REVOKED", "REVOKED", reason, undefined, ended);
    }
    this.log.info({ delegatorAcId: acId, revoked: ended.length }, "delegator context revoked");
    return ended;
  }

  /**
   * Decides one command: prohibited → DENY, ceremony → CEREMONY_REQUIRED
   * (uncounted), else counts it. The common ALLOW is one conditional update:
   * the rules come from the policy cache, and the update itself checks that
   * the delegation is active, unexpired and within budget.
   */
  async authorizeCommand(principal: Principal, input: { delegationId: string; command: string }): Promise<AuthorizeResult> {
    const id = v.delegationId("delegation_id", input.delegationId);
    const command = v.command("command", input.command);
    const policy = await this.policyFor(principal, id);
    const now = this.clock();
    const prohibited = policy.prohibited.match(command);
    const ceremony = prohibited === undefined ? policy.ceremony.match(command) : undefined;
    if (prohibited === undefined && ceremony === undefined && policy.expireTime > now) {
      const counted = await this.store.countCommand(id, now);
      if (counted.kind === "counted") {
        return { decision: "ALLOW", reason: "allowed", commandsRemaining: counted.maxCommands - counted.commandsExecuted, matchedRule: "" };
      }
      if (counted.kind === "limit_reached") {
        this.hooks.cleanupNeeded?.();
        await this.cascade(counted.delegation.delegatedAcId, EndReason.parentEnded, []);
        this.log.info({ delegationId: id }, "delegation reached its command limit");
        return { decision: "ALLOW", reason: "allowed_last_command", commandsRemaining: 0, matchedRule: "" };
      }
      // Refused: explain from the current row.
    }
    const d = await this.store.get(id);
    if (!d) throw delegationNotFound(id);
    const deny = (reason: string, matchedRule = ""): AuthorizeResult => ({
      decision: "DENY",
      reason,
      commandsRemaining: commandsRemaining(d),
      matchedRule,
    });
    if (d.state !== "ACTIVE") return deny(denyReason(d));
    if (d.expireTime <= now) return deny("delegation_expired");
    if (prohibited !== undefined) return deny("prohibited_command", prohibited);
    if (ceremony !== undefined) {
      return { decision: "CEREMONY_REQUIRED", reason: "ceremony_required", commandsRemaining: commandsRemaining(d), matchedRule: ceremony };
    }
    return deny(denyReason(d, now));
  }

  /** The immutable rules of a delegation, cached; NOT_FOUND if the caller may not act on it. */
  private async policyFor(principal: Principal, id: string): Promise<CommandPolicy> {
    let policy = this.policies.get(id);
    if (!policy) {
      const d = await this.store.get(id);
      if (!d) throw delegationNotFound(id);
      policy = {
        delegatorDid: d.delegatorDid,
        agentDid: d.agentDid,
        agentClientId: d.agentClientId,
        expireTime: d.expireTime,
        prohibited: new CommandMatcher(d.prohibitedCommands),
        ceremony: new CommandMatcher(d.ceremonyRequiredFor),
      };
      // Not while REQUESTED: the agent's client id is set only when it becomes ACTIVE.
      if (d.state !== "REQUESTED") {
        // Oldest first out: Map keeps insertion order.
        if (this.policies.size >= POLICY_CACHE_SIZE) this.policies.delete(this.policies.keys().next().value!);
        this.policies.set(id, policy);
      }
    }
    if (!canAct(principal, policy, "command")) throw delegationNotFound(id);
    return policy;
  }

  /** Expires every ACTIVE delegation whose time is up; returns how many. */
  async expireDue(limit = 200): Promise<number> {
    const now = this.clock();
    let n = 0;
    for (const d of await this.store.dueForExpiry(now, limit)) {
      const ended = await this.end(d.id, "EXPIRED", "EXPIRED", EndReason.ttlElapsed, now);
      if (ended) {
        n++;
        this.log.info({ delegationId: d.id, lateMs: now - d.expireTime }, "delegation expired");
      }
    }
    return n;
  }

  /** The earliest expire time among ACTIVE delegations. */
  nextExpireTime(): Promise<number | null> {
    return this.store.nextExpireTime();
  }

  /**
   * Deletes the identities of ended delegations from the IdP. Failures stay
   * pending for the next run. Returns how many were deleted.
   */
  async cleanupIdentities(limit = 50, onlyId?: string): Promise<number> {
    const pending = onlyId
      ? [await this.store.get(onlyId)].filter((d): d is Delegation => d !== null && d.idpCleanupPending)
      : await this.store.pendingCleanup(limit);
    let done = 0;
    for (const d of pending) {
      try {
        await this.registrar.deleteAgent({ delegationId: d.id, clientId: d.agentClientId, objectId: d.idpObjectId });
        await this.store.markCleanedUp(d.id);
        done++;
      } catch (err) {
        this.log.warn({ err, delegationId: d.id }, "agent identity deletion failed; will retry");
      }
    }
    return done;
  }

  /** Fails REQUESTED delegations left by a crash (older than the in-flight window). */
  async reconcileStale(limit = 100): Promise<number> {
    const before = this.clock() - this.settings.createInflightMs;
    let n = 0;
    for (const d of await this.store.staleRequested(before, limit)) {
      const t = await this.store.transition({
        id: d.id,
        from: ["REQUESTED"],
        to: "FAILED",
        event: "FAILED",
        reason: "creation_interrupted",
        now: this.clock(),
      });
      if (t) n++;
    }
    if (n > 0) {
      this.log.warn({ count: n }, "failed delegations whose creation was interrupted");
      this.hooks.cleanupNeeded?.();
    }
    return n;
  }

  /**
   * Deletes identities the IdP holds for delegations that are not live: left
   * by a crash between registration and the store, or by a failed deletion
   * the store no longer tracks. Returns how many were deleted.
   */
  async sweepOrphans(): Promise<number> {
    const inflightSince = this.clock() - this.settings.createInflightMs;
    let n = 0;
    for await (const ref of this.registrar.listAgents()) {
      const d = ref.delegationId ? await this.store.get(ref.delegationId) : null;
      if (d && d.state === "ACTIVE") continue;
      if (d && d.state === "REQUESTED" && d.createTime >= inflightSince) continue; // being created now
      try {
        await this.registrar.deleteAgent(ref);
        n++;
        this.log.warn({ delegationId: ref.delegationId, clientId: ref.clientId, state: d?.state ?? "unknown" }, "deleted orphaned agent identity");
      } catch (err) {
        this.log.warn({ err, delegationId: ref.delegationId }, "orphaned identity deletion failed; will retry");
      }
    }
    return n;
  }

  /** Drops idempotency keys past their TTL; returns how many. */
  pruneIdempotency(): Promise<number> {
    return this.store.pruneIdempotency(this.clock() - this.settings.idempotencyTtlMs);
  }
}

function callerGone(): BrokerError {
  return new BrokerError(
    "DEADLINE_EXCEEDED",
    "CALLER_GONE",
    "the call ended (deadline or cancellation) before the delegation was complete; nothing was granted",
  );
}

function auditUnavailable(): BrokerError {
  return new BrokerError(
    "UNAVAILABLE",
    "AUDIT_UNAVAILABLE",
    "the audit log cannot record the delegation now; authority that cannot be audited is not granted (AUDIT_FAIL_CLOSED)",
  );
}

function delegatorContextUnknown(): BrokerError {
  return new BrokerError("FAILED_PRECONDITION", "DELEGATOR_CONTEXT_NOT_ACTIVE", "the delegator's access context is not active");
}

function notActive(id: string, state: DelegationState): BrokerError {
  return new BrokerError("FAILED_PRECONDITION", "DELEGATION_NOT_ACTIVE", `delegation ${id} is ${state}, not ACTIVE`, {
    metadata: { delegation_id: id, state },
  });
}

function denyReason(d: Delegation, now?: number): string {
  if (d.state === "ACTIVE") {
    if (now !== undefined && d.expireTime <= now) return "delegation_expired";
    if (d.commandsExecuted >= d.maxCommands) return "command_limit";
    return "delegation_busy";
  }
  if (d.state === "EXPIRED" && d.endReason === EndReason.commandLimit) return "command_limit";
  return `delegation_${d.state.toLowerCase()}`;
}

/** Wraps a failure of an external system; typed driver errors keep their code. */
function upstream(system: "IDP" | "GSAP", name: string, err: unknown): BrokerError {
  if (err instanceof BrokerError) return err;
  return new BrokerError("UNAVAILABLE", `${system}_UNAVAILABLE`, `${name} failed; nothing was created`, { cause: err });
}

interface PageFilter {
  s: string;
  d: string;
}

function encodePageToken(afterId: string, filter: PageFilter): string {
  return Buffer.from(JSON.stringify({ v: 1, a: afterId, ...filter })).toString("base64url");
}

function decodePageToken(token: string, filter: PageFilter): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidArgument("page_token", "is not a token this service issued");
  }
  const p = parsed as { v?: unknown; a?: unknown; s?: unknown; d?: unknown };
  if (p === null || typeof p !== "object" || p.v !== 1 || typeof p.a !== "string" || !/^del_[0-9A-Z]{26}$/.test(p.a)) {
    throw invalidArgument("page_token", "is not a token this service issued");
  }
  if (p.s !== filter.s || p.d !== filter.d) {
    throw invalidArgument("page_token", "was issued for different filters");
  }
  return p.a;
}
