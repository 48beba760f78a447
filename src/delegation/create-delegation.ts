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
import type { DelegatedContextRequest } from "../clients/gsap/gsap-client.js";
import {
  BrokerError,
  UpstreamError,
  type CreateResult,
  type DelegatedContext,
  type Delegation,
  EndReason,
  type Principal,
} from "../domain/index.js";
import type { AgentIdentity } from "../registrars/registrar.js";
import type { FailurePatch, IdempotencyClaim, IdempotencyKeyRef, IdempotencyRecord } from "../store/store.js";
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

  /** Creates a delegation for `principal`; `signal` aborts when the caller is gone. */
  async run(principal: Principal, input: CreateInput, signal?: AbortSignal): Promise<CreateResult> {
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
      const replay = existing ? await this.settle(claim, existing, signal) : undefined;
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
      chronicleCid: "",
    };

    // 1. REQUESTED, claiming the request_id in the same transaction
    if (claim) claim.delegationId = id;
    const inserted = await store.insertRequested(requested, claim);
    if (inserted.kind === "existing" && claim) {
      // A concurrent request with the same id won the claim: its answer is ours.
      const replay = await this.settle(claim, inserted.record, signal);
      if (replay) return replay;
      // It was abandoned meanwhile and its key released: this request may go ahead, as a retry would.
      return this.run(principal, input, signal);
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
            completeIdempotency: {
              ...claim,
              response: (delegation: Delegation) =>
                JSON.stringify({ delegation, agentPrincipal, delegatedAc, clientId: identity.clientId } satisfies StoredCreate),
            },
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
    if (claim && !(await store.markAnswered(claim, this.clock()))) {
      // Past the hand-out window a retry took this request for dead and handed the answer out with a new secret.
      throw new BrokerError("ABORTED", "REQUEST_ANSWERED_BY_RETRY", "a retry of this request_id received the answer (with a new secret) first; retry to see it");
    }
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
  private async settle(claim: IdempotencyClaim, first: IdempotencyRecord, signal: AbortSignal | undefined): Promise<CreateResult | undefined> {
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

  private async delegatorAuthority(principal: Principal, delegatorAcId: string): Promise<DelegatorAuthority> {
    const { store, gsap } = this.deps;
    // A context the broker itself delegated: the parent delegation bounds the child.
    const parent = await store.findByDelegatedAc(delegatorAcId);
    if (parent) {
      if (!canAct(principal, parent, "manage") || parent.state !== "ACTIVE") throw delegatorContextNotActive();
      return { capabilityCeiling: parent.capabilityCeiling, expireTime: parent.expireTime, depth: parent.depth };
    }
    try {
      const ctx = await gsap.describeDelegatorContext(delegatorAcId, principal.did);
      return { capabilityCeiling: ctx.capabilityCeiling, expireTime: ctx.expireTime, depth: 0 };
    } catch (err) {
      throw upstreamFailure("gsap", "GSAP broker", err);
    }
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
