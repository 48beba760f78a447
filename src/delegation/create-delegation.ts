/**
 * CreateDelegation: a saga of four steps, each durable before the next.
 *   1. REQUESTED (with the request_id claim) in the store;
 *   2. the agent identity in the identity provider;
 *   3. the delegated access context from GSAP;
 *   4. ACTIVE with its CREATED event and the replayable answer, one transaction.
 * A failure after step 1 ends the delegation FAILED; its consequences (delete
 * the identity, revoke a context GSAP issued) are work items of that ending,
 * carried out by the consequence workers. A crash is finished by the
 * reconciler (maintenance.ts).
 */
import { ApprovalPending, type DelegatedContextRequest, type DelegatorContext } from "../clients/gsap/gsap-client.js";
import {
  BrokerError,
  UpstreamError,
  type CreateResult,
  type DelegatedContext,
  type Delegation,
  EndReason,
  type Principal,
  commandsRemaining,
} from "../domain/index.js";
import type { AgentIdentity } from "../registrars/registrar.js";
import type { FailurePatch, GsapApprovalRow, IdempotencyClaim, IdempotencyKeyRef, IdempotencyRecord } from "../store/store.js";
import { canAct } from "./access.js";
import { type UseCaseDeps, upstreamFailure } from "./deps.js";
import { assertSameRequest, claimFor } from "./idempotency.js";
import { newDelegationId } from "./ids.js";
import { type DelegatorAuthority, type RequestedScope, resolveScope } from "./policy.js";
import * as v from "./validate.js";

export interface CreateInput {
  delegatorAcId: string;
  agentType: string;
  agentModel: string;
  accordTemplate: string;
  scope: RequestedScope;
  requestId: string;
}

const DEFAULT_AGENT_TYPE = "claude-code";
/** How often a retry looks at the key of a first request still running. */
const IN_FLIGHT_POLL_MS = 25;
/** How often a call waiting for GSAP's approval looks at its delegation. */
const APPROVAL_POLL_MS = 100;
/** The first poll of a pending approval at GSAP. */
export const APPROVAL_FIRST_POLL_MS = 500;
/** Answered this long before the caller's deadline, so the answer arrives in time. */
const DEADLINE_MARGIN_MS = 1_000;
/** How long after its commit a first request is allowed to take to hand its answer out (beyond the audit wait). */
const HAND_OUT_GRACE_MS = 3_000;
const DEFAULT_ACCORD = "ai-delegation-standard";

/** Stored in place of the first answer; the secret is never kept. */
interface StoredCreate {
  delegation: Delegation;
  agentPrincipal: CreateResult["agentPrincipal"];
  delegatedAc: DelegatedContext;
  clientId: string;
}

export class CreateDelegation {
  private readonly clock: () => number;

  constructor(private readonly deps: UseCaseDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  /**
   * Creates a delegation for `principal`; `signal` aborts when the caller is
   * gone; `timeoutMs` is how long the caller waits, which bounds a wait for
   * GSAP's approval flow.
   */
  async run(principal: Principal, input: CreateInput, signal?: AbortSignal, timeoutMs?: number): Promise<CreateResult> {
    return this.create(principal, input, signal, timeoutMs === undefined ? undefined : this.clock() + timeoutMs);
  }

  private async create(principal: Principal, input: CreateInput, signal: AbortSignal | undefined, deadlineAt: number | undefined): Promise<CreateResult> {
    const { store, registrar, gsap, settings, log, audit } = this.deps;
    requireDelegator(principal);
    const delegatorAcId = v.identifier("delegator_ac_id", input.delegatorAcId, { required: true });
    const agentType = v.agentType("agent_type", input.agentType || DEFAULT_AGENT_TYPE);
    const agentModel = v.text("agent_model", input.agentModel, 128);
    const accordTemplate = v.identifier("accord_template", input.accordTemplate || DEFAULT_ACCORD, { required: true });
    const requestId = v.requestId("request_id", input.requestId);
    const claim = claimFor(principal.did, "CreateDelegation", requestId, { delegatorAcId, agentType, agentModel, accordTemplate, scope: input.scope });

    if (claim) {
      const existing = await store.getIdempotency(claim);
      const replay = existing ? await this.settle(claim, existing, signal, deadlineAt) : undefined;
      if (replay) return replay;
    }

    if (audit?.failClosed && !(await audit.ready())) throw auditUnavailable();
    const now = this.clock();
    const authority = await this.delegatorAuthority(principal, delegatorAcId);
    const scope = resolveScope(settings, input.scope, authority, now);

    const id = newDelegationId(now);
    const agentDid = `${settings.agentDidPrefix}${agentType}-${id}`;
    const delegatorShort = principal.did.split("/").pop() || principal.did;
    const requested: Delegation = {
      id,
      state: "REQUESTED",
      agentType,
      agentModel,
      agentDid,
      agentClientId: "",
      idpObjectId: "",
      idpBackend: registrar.backend,
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
      endDetail: "",
      rootAcId: authority.rootAcId,
      chronicleCid: "",
    };

    // 1. REQUESTED, claiming the request_id in the same transaction
    if (claim) claim.delegationId = id;
    const inserted = await store.insertRequested(requested, claim);
    if (inserted.kind === "existing" && claim) {
      // A concurrent request with the same id won the claim: its answer is ours.
      const replay = await this.settle(claim, inserted.record, signal, deadlineAt);
      if (replay) return replay;
      // It was abandoned meanwhile and its key released: this request may go ahead, as a retry would.
      return this.create(principal, input, signal, deadlineAt);
    }

    // 2. the agent identity
    let identity: AgentIdentity;
    try {
      identity = await registrar.registerAgent({
        delegationId: id,
        agentType,
        agentModel,
        delegatorDid: principal.did,
        displayName: `${agentType} (delegated by ${delegatorShort})`,
        expireTime: requested.expireTime,
      });
    } catch (err) {
      await this.fail(id, {}, claim);
      throw upstreamFailure("idp", "identity provider", err);
    }
    const patch = { agentClientId: identity.clientId, idpObjectId: identity.objectId, idpBackend: registrar.backend };
    // The caller gave up (deadline, cancel): nobody would receive the credential, so undo.
    if (signal?.aborted) {
      await this.fail(id, patch, claim);
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
      delegatedAc = await gsap.requestDelegatedContext(request);
    } catch (err) {
      if (err instanceof ApprovalPending) {
        return this.awaitApproval({ requested, identity, claim, pollToken: err.pollToken, signal, deadlineAt });
      }
      // A context GSAP issued in an answer the driver rejected is revoked with the failure.
      const issued = err instanceof UpstreamError ? err.metadata.context_id : undefined;
      await this.fail(id, issued ? { ...patch, delegatedAcId: issued } : patch, claim);
      throw upstreamFailure("gsap", "GSAP broker", err);
    }
    if (signal?.aborted) {
      await this.fail(id, { ...patch, delegatedAcId: delegatedAc.contextId }, claim);
      throw callerGone();
    }

    // 4. ACTIVE, with the event and the replayable answer, in one transaction
    const agentPrincipal = { did: agentDid, clientId: identity.clientId, displayName: identity.displayName };
    const activated = await store.activate({
      id,
      now: this.clock(),
      patch: { ...patch, delegatedAcId: delegatedAc.contextId, delegatedAc },
      ...(claim
        ? {
            completeIdempotency: { ...claim, response: (delegation: Delegation) => storedCreate(delegation, agentPrincipal, delegatedAc) },
          }
        : {}),
    });
    if (!activated) {
      // Ended (a cascade, an admin, the reconciler) while it was being created. That ending
      // deletes the identity; the context GSAP just issued is revoked too.
      await store.adoptLateContext(id, delegatedAc.contextId, this.clock());
      if (claim) await store.releaseIdempotency(claim);
      throw new BrokerError("ABORTED", "DELEGATION_ENDED_DURING_CREATE", `delegation ${id} was ended while it was being created`);
    }
    if (signal?.aborted) {
      // Gone between GSAP's answer and the commit: withdraw, so no live delegation has an unseen secret.
      await this.withdraw(id, EndReason.callerGone, claim);
      throw callerGone();
    }
    if (audit?.failClosed && !(await audit.waitDelivered(activated.revision, audit.timeoutMs))) {
      // Not recorded in time: the grant is withdrawn, and a retry with this request_id starts afresh.
      await this.withdraw(id, EndReason.auditUnavailable, claim);
      throw auditUnavailable();
    }
    if (claim && !(await store.markAnswered(claim, this.clock()))) throw answeredByRetry();
    log.info(
      { delegationId: id, delegator: principal.did, agent: agentDid, idp: registrar.backend, revision: activated.revision.toString() },
      "delegation created",
    );
    return {
      delegation: activated.delegation,
      agentPrincipal,
      delegatedAc,
      agentCredential: { clientId: identity.clientId, clientSecret: identity.clientSecret },
      replayed: false,
      credentialRotated: false,
      approvalPending: false,
    };
  }

  /**
   * The answer for a request_id that is already claimed, on whichever replica
   * the first request runs. Each answer is handed out once with its secret
   * (answered_time marks it); the secret itself is never stored.
   * - the first request is still running, or has stored its answer and is
   *   about to hand it out: wait for it (within this call's deadline), then
   *   replay the answer without the secret (the first caller has it);
   * - the answer is stored and was handed out: replay it without the secret;
   * - the answer is stored and nobody received it (the broker died after the
   *   commit): this retry hands it out, with the agent's secret rotated at
   *   the IdP (credential_rotated) so the caller gets a working credential;
   * - the first request was abandoned (failed, or died before its commit):
   *   nothing; the key is released (only if still unanswered) and this
   *   request goes ahead.
   */
  private async settle(
    claim: IdempotencyClaim,
    first: IdempotencyRecord,
    signal: AbortSignal | undefined,
    deadlineAt: number | undefined,
  ): Promise<CreateResult | undefined> {
    const { store, settings } = this.deps;
    let record: IdempotencyRecord | null = first;
    for (;;) {
      if (!record) return undefined; // released by the first request: go ahead
      assertSameRequest(claim, record);
      if (signal?.aborted) throw callerGone();
      let running: boolean;
      if (record.response !== null) {
        if (record.answeredTime !== null) return replayOf(record.response);
        running = record.responseTime !== null && record.responseTime >= this.clock() - this.handOutWindowMs();
        if (!running) return this.handOutLost(claim, record.response, signal);
      } else {
        const d = record.delegationId ? await store.get(record.delegationId) : null;
        const approval = d?.state === "REQUESTED" ? await store.getApproval(d.id) : null;
        if (d && approval) {
          // Waiting for GSAP's approval flow: this retry waits too, and answers "still pending" before its deadline.
          if (nearDeadline(this.clock(), deadlineAt)) return pendingResult(d, approval);
          if (signal?.aborted) throw callerGone();
          await sleep(APPROVAL_POLL_MS, signal);
          record = await store.getIdempotency(claim);
          continue;
        }
        running = d !== null && d.state === "REQUESTED" && d.createTime >= this.clock() - settings.createInflightMs;
        // ACTIVE: its answer committed after the key was read; read the key again.
        if (!running && d?.state !== "ACTIVE") {
          await store.releaseIdempotency(claim, { unanswered: true });
          record = await store.getIdempotency(claim);
          if (record?.response) continue;
          return undefined;
        }
      }
      if (running) await sleep(IN_FLIGHT_POLL_MS, signal);
      record = await store.getIdempotency(claim);
    }
  }

  /**
   * How long after its commit the first request may still be handing its
   * answer out: its wait for the audit log, and a grace for a slow process.
   */
  private handOutWindowMs(): number {
    const audit = this.deps.audit;
    return HAND_OUT_GRACE_MS + (audit?.failClosed ? audit.timeoutMs : 0);
  }

  /**
   * Hands out a stored answer nobody received. One retry wins the mark; it
   * rotates the secret while the delegation is live (a failed rotation takes
   * the mark back, so the next retry tries again; so does a caller gone
   * before it could receive the new secret).
   */
  private async handOutLost(claim: IdempotencyClaim, response: string, signal: AbortSignal | undefined): Promise<CreateResult> {
    const { store, registrar, log, audit } = this.deps;
    // The same rule as for a new grant: none handed out while the audit log cannot record.
    if (audit?.failClosed && !(await audit.ready())) throw auditUnavailable();
    const markedAt = this.clock();
    if (!(await store.markAnswered(claim, markedAt))) return replayOf(response);
    const result = replayOf(response);
    const current = await store.get(result.delegation.id);
    if (current?.state !== "ACTIVE") return result;
    let secret: string | undefined;
    try {
      secret = await registrar.rotateSecret({ delegationId: current.id, clientId: current.agentClientId, objectId: current.idpObjectId });
    } catch (err) {
      await store.unmarkAnswered(claim, markedAt);
      throw upstreamFailure("idp", "identity provider", err);
    }
    if (signal?.aborted) {
      await store.unmarkAnswered(claim, markedAt);
      throw callerGone();
    }
    if (!secret) return result;
    log.warn({ delegationId: current.id }, "create answer was never received: handed out by the retry with a rotated agent secret");
    return { ...result, agentCredential: { clientId: result.agentCredential.clientId, clientSecret: secret }, credentialRotated: true };
  }

  /**
   * GSAP's approval flow has to run first. The delegation stays REQUESTED; the
   * approvals loop polls GSAP and activates or fails it. This call waits for
   * that within its deadline: ACTIVE in time hands out the credential as
   * usual. Still pending at the deadline: with a request_id, the REQUESTED
   * delegation is the answer (approval_pending) and a retry with the same
   * request_id after activation hands out the credential; without one, the
   * create is withdrawn (nobody could ever receive the credential).
   */
  private async awaitApproval(w: {
    requested: Delegation;
    identity: AgentIdentity;
    claim: IdempotencyClaim | undefined;
    pollToken: string;
    signal: AbortSignal | undefined;
    deadlineAt: number | undefined;
  }): Promise<CreateResult> {
    const { store, settings, log } = this.deps;
    const { requested: r, identity, claim } = w;
    const now = this.clock();
    const approval: GsapApprovalRow = {
      delegationId: r.id,
      pollToken: w.pollToken,
      deadline: Math.min(now + settings.gsapChecks.approvalTimeoutMs, r.expireTime),
      nextPollTime: now + APPROVAL_FIRST_POLL_MS,
      attempts: 0,
      lastError: "",
      createTime: now,
      agentClientId: identity.clientId,
      idpObjectId: identity.objectId,
      displayName: identity.displayName,
      requestScope: claim?.scope ?? "",
      requestId: claim?.requestId ?? "",
    };
    await store.addApproval(approval);
    log.info({ delegationId: r.id }, "waiting for GSAP's approval of the delegated context");
    const patch = { agentClientId: identity.clientId, idpObjectId: identity.objectId, idpBackend: this.deps.registrar.backend };
    for (;;) {
      const d = await store.get(r.id);
      if (!d) throw new BrokerError("INTERNAL", "DELEGATION_VANISHED", `delegation ${r.id} disappeared while it was being created`);
      if (d.state === "ACTIVE") {
        if (claim && !(await store.markAnswered(claim, this.clock()))) throw answeredByRetry();
        const agentPrincipal = { did: d.agentDid, clientId: identity.clientId, displayName: identity.displayName };
        return {
          delegation: d,
          agentPrincipal,
          delegatedAc: d.delegatedAc,
          agentCredential: { clientId: identity.clientId, clientSecret: identity.clientSecret },
          replayed: false,
          credentialRotated: false,
          approvalPending: false,
        };
      }
      if (d.state !== "REQUESTED") throw approvalEnded(d);
      const gone = w.signal?.aborted === true;
      if (gone || nearDeadline(this.clock(), w.deadlineAt)) {
        if (claim && !gone) return pendingResult(d, approval);
        // Nobody can receive the credential later: withdraw.
        await store.removeApproval(r.id);
        await this.fail(r.id, patch, claim);
        if (gone) throw callerGone();
        throw new BrokerError(
          "DEADLINE_EXCEEDED",
          "GSAP_APPROVAL_PENDING",
          "GSAP's approval of the delegated context did not come within the call's deadline; nothing was granted. Send a request_id to wait across calls",
        );
      }
      await sleep(APPROVAL_POLL_MS, w.signal);
    }
  }

  private async delegatorAuthority(principal: Principal, delegatorAcId: string): Promise<DelegatorAuthority & { rootAcId: string }> {
    const { store, gsap } = this.deps;
    // A context the broker itself delegated: the parent delegation bounds the child.
    const parent = await store.findByDelegatedAc(delegatorAcId);
    if (parent) {
      if (!canAct(principal, parent, "manage") || parent.state !== "ACTIVE") throw delegatorContextNotActive();
      return {
        capabilityCeiling: parent.capabilityCeiling,
        expireTime: parent.expireTime,
        depth: parent.depth,
        rootAcId: parent.rootAcId,
        parent: {
          ceremonyRequiredFor: parent.ceremonyRequiredFor,
          prohibitedCommands: parent.prohibitedCommands,
          commandsRemaining: commandsRemaining(parent),
        },
      };
    }
    let ctx: DelegatorContext;
    try {
      ctx = await gsap.describeDelegatorContext(delegatorAcId, principal.did);
    } catch (err) {
      throw upstreamFailure("gsap", "GSAP broker", err);
    }
    // GSAP's answer, as the live checks keep it: fresh now.
    await store.recordContextAnswer({
      acId: delegatorAcId,
      principalDid: principal.did,
      status: "active",
      capabilityCeiling: ctx.capabilityCeiling,
      now: this.clock(),
    });
    return { capabilityCeiling: ctx.capabilityCeiling, expireTime: ctx.expireTime, depth: 0, rootAcId: delegatorAcId };
  }

  /** REQUESTED → FAILED with what is known of the identity, releasing the request_id. */
  private async fail(id: string, patch: FailurePatch, claim: IdempotencyKeyRef | undefined): Promise<void> {
    try {
      await this.deps.store.end({
        target: { ids: [id] },
        ending: "fail",
        reason: EndReason.creationFailed,
        now: this.clock(),
        patch,
        ...(claim ? { releaseIdempotency: claim } : {}),
      });
      // Ended by someone else meanwhile: the key must still go, so a retry starts afresh.
      if (claim) await this.deps.store.releaseIdempotency(claim);
    } catch (err) {
      // The reconciler finishes what this could not.
      this.deps.log.error({ err, delegationId: id }, "compensation after failed create did not complete");
    }
  }

  /** Ends a delegation that became ACTIVE but must not be handed out; the request_id starts afresh. */
  private async withdraw(id: string, reason: string, claim: IdempotencyKeyRef | undefined): Promise<void> {
    await this.deps.store.end({
      target: { ids: [id] },
      ending: "revoke",
      reason,
      now: this.clock(),
      ...(claim ? { releaseIdempotency: claim } : {}),
    });
    this.deps.log.warn({ delegationId: id, reason }, "delegation withdrawn before it was handed out");
  }
}

function requireDelegator(principal: Principal): void {
  if (principal.did !== "") return;
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

/** The same answer whichever it was: not active, or not the caller's to delegate from. */
export function delegatorContextNotActive(): BrokerError {
  return new BrokerError("FAILED_PRECONDITION", "DELEGATOR_CONTEXT_NOT_ACTIVE", "the delegator's access context is not active");
}

/** The replayable answer stored with an activation (never the secret). */
export function storedCreate(delegation: Delegation, agentPrincipal: CreateResult["agentPrincipal"], delegatedAc: DelegatedContext): string {
  return JSON.stringify({ delegation, agentPrincipal, delegatedAc, clientId: agentPrincipal.clientId } satisfies StoredCreate);
}

/** The answer while GSAP's approval flow decides: the REQUESTED delegation, nothing to use yet. */
function pendingResult(d: Delegation, a: GsapApprovalRow): CreateResult {
  return {
    delegation: d,
    agentPrincipal: { did: d.agentDid, clientId: a.agentClientId, displayName: a.displayName },
    delegatedAc: null,
    agentCredential: { clientId: a.agentClientId, clientSecret: "" },
    replayed: false,
    credentialRotated: false,
    approvalPending: true,
  };
}

/** Whether a caller with this deadline must be answered now (a margin for the answer to travel). */
function nearDeadline(now: number, deadlineAt: number | undefined): boolean {
  return deadlineAt !== undefined && now >= deadlineAt - DEADLINE_MARGIN_MS;
}

/** A delegation that left REQUESTED other than by activation while its approval was awaited. */
function approvalEnded(d: Delegation): BrokerError {
  if (d.endReason === EndReason.gsapDenied) {
    return new BrokerError("FAILED_PRECONDITION", "GSAP_DENIED", "GSAP's approval flow denied the delegated access context; nothing was granted");
  }
  if (d.endReason === EndReason.gsapApprovalTimeout) {
    return new BrokerError("FAILED_PRECONDITION", "GSAP_APPROVAL_TIMEOUT", "GSAP's approval flow did not decide in time; nothing was granted");
  }
  return new BrokerError("ABORTED", "DELEGATION_ENDED_DURING_CREATE", `delegation ${d.id} was ended (${d.endReason}) while it was being created`);
}

function answeredByRetry(): BrokerError {
  return new BrokerError("ABORTED", "REQUEST_ANSWERED_BY_RETRY", "a retry of this request_id received the answer (with a new secret) first; retry to see it");
}

/** A stored answer, replayed without the secret. */
function replayOf(response: string): CreateResult {
  const s = JSON.parse(response) as StoredCreate;
  return {
    delegation: s.delegation,
    agentPrincipal: s.agentPrincipal,
    delegatedAc: s.delegatedAc,
    agentCredential: { clientId: s.clientId, clientSecret: "" },
    replayed: true,
    credentialRotated: false,
    approvalPending: false,
  };
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
