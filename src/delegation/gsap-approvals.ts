/**
 * Delegated-context requests that GSAP answered with its approval flow
 * ("pending"): their delegations stay REQUESTED while this loop task polls
 * GSAP (GET /governance/authorize/{poll_token}/) with backoff. Authorized:
 * ACTIVE, with the CREATED event and, for a create with a request_id, the
 * answer its first retry hands out (with a fresh secret: nobody has seen
 * the one registered before). Denied, past GSAP_APPROVAL_TIMEOUT_SECONDS or
 * past the delegation's own expiry: FAILED, with the identity deleted by the
 * ending's consequences.
 */
import { ApprovalPending, type DelegatedContextRequest } from "../clients/gsap/gsap-client.js";
import { BrokerError, type Delegation, EndReason } from "../domain/index.js";
import type { LoopResult } from "../scheduler/loop.js";
import { mapLimit } from "../scheduler/map-limit.js";
import type { GsapApprovalRow } from "../store/store.js";
import { storedCreate } from "./create-delegation.js";
import type { UseCaseDeps } from "./deps.js";

const BATCH = 50;
const CONCURRENCY = 8;

export class GsapApprovals {
  private readonly clock: () => number;

  constructor(private readonly deps: UseCaseDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  /** Polls the approvals that are due (a loop task). */
  async pollDue(): Promise<LoopResult> {
    const { store } = this.deps;
    const due = await store.approvalsDue(this.clock(), BATCH);
    const settled = await mapLimit(due, CONCURRENCY, (a) => this.poll(a));
    const done = settled.filter(Boolean).length;
    if (due.length >= BATCH) return { done, more: true };
    return { done, nextAt: await store.nextApprovalPoll() };
  }

  /** One approval: true once it is settled (activated or failed). */
  private async poll(a: GsapApprovalRow): Promise<boolean> {
    const { store, gsap, settings, log } = this.deps;
    const now = this.clock();
    const d = await store.get(a.delegationId);
    if (!d || d.state !== "REQUESTED") {
      // Ended meanwhile (revoked, say): nothing left to wait for.
      await store.removeApproval(a.delegationId);
      return true;
    }
    if (now >= a.deadline) {
      await this.fail(d, a, EndReason.gsapApprovalTimeout);
      log.warn({ delegationId: d.id }, "GSAP's approval did not come in time: creation failed");
      return true;
    }
    const request: DelegatedContextRequest = {
      delegatorAcId: d.delegatorAcId,
      agentDid: d.agentDid,
      delegationId: d.id,
      capabilityCeiling: d.capabilityCeiling,
      ttlMs: Math.max(1000, d.expireTime - now),
      accordTemplate: d.accordTemplate,
    };
    let ctx;
    try {
      ctx = await gsap.pollApproval(a.pollToken, request);
    } catch (err) {
      if (err instanceof BrokerError && err.reason === "GSAP_DENIED") {
        await this.fail(d, a, EndReason.gsapDenied);
        log.info({ delegationId: d.id }, "GSAP's approval flow denied the delegated context: creation failed");
        return true;
      }
      const pending = err instanceof ApprovalPending;
      const wait = Math.min(settings.gsapChecks.approvalPollMaxMs, 1000 * 2 ** Math.min(a.attempts, 10));
      await store.postponeApproval(a.delegationId, now + wait, pending ? "" : err instanceof Error ? err.message : String(err));
      if (!pending) log.warn({ delegationId: d.id, err }, "could not poll GSAP's approval; will retry");
      return false;
    }
    const agentPrincipal = { did: d.agentDid, clientId: a.agentClientId, displayName: a.displayName };
    const activated = await store.activate({
      id: d.id,
      now: this.clock(),
      patch: { agentClientId: a.agentClientId, idpObjectId: a.idpObjectId, idpBackend: d.idpBackend, delegatedAcId: ctx.contextId, delegatedAc: ctx },
      ...(a.requestId
        ? {
            completeIdempotency: {
              scope: a.requestScope,
              method: "CreateDelegation",
              requestId: a.requestId,
              response: (x: Delegation) => storedCreate(x, agentPrincipal, ctx),
              handOutByRetry: true,
            },
          }
        : {}),
    });
    // Ended while GSAP decided: that ending deletes the identity; the context just issued is revoked too.
    if (!activated) await store.adoptLateContext(d.id, ctx.contextId, this.clock());
    await store.removeApproval(d.id);
    if (activated) log.info({ delegationId: d.id, contextId: ctx.contextId }, "GSAP approved the delegated context: delegation active");
    return true;
  }

  private async fail(d: Delegation, a: GsapApprovalRow, reason: string): Promise<void> {
    await this.deps.store.end({
      target: { ids: [d.id] },
      ending: "fail",
      reason,
      now: this.clock(),
      patch: { agentClientId: a.agentClientId, idpObjectId: a.idpObjectId, idpBackend: d.idpBackend },
      ...(a.requestId ? { releaseIdempotency: { scope: a.requestScope, method: "CreateDelegation", requestId: a.requestId } } : {}),
    });
    await this.deps.store.removeApproval(d.id);
  }
}
