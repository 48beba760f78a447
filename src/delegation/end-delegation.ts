/**
 * Ending delegations: RevokeDelegation, RevokeDelegatorContext and expiry.
 * Every ending is one store operation (`store.end`): the state change, the
 * event, the cascade to delegations made from it and the work items of its
 * consequences, in one transaction. Nothing else happens inline: deleting the
 * identity and revoking the GSAP context are done by the consequence
 * workers, which the event log wakes (src/events/effects.ts).
 */
import { BrokerError, type Delegation, type DelegationState, EndReason, type Principal, delegationNotFound } from "../domain/index.js";
import type { LoopResult } from "../scheduler/loop.js";
import { canAct } from "./access.js";
import type { UseCaseDeps } from "./deps.js";
import { claimFor, settleExisting } from "./idempotency.js";
import * as v from "./validate.js";

export interface RevokeInput {
  delegationId: string;
  reason: string;
  requestId: string;
}

/** Delegations ended per transaction by a cascade or an expiry batch. */
export const END_BATCH = 500;

/** A revoke whose key has no answer after this long was interrupted by a crash. */
const REVOKE_INFLIGHT_MS = 30_000;

export class EndDelegation {
  private readonly clock: () => number;

  constructor(
    private readonly deps: UseCaseDeps,
    private readonly options: {
      /** Delegations expired per transaction. By default, END_BATCH. */
      expiryBatch?: number;
      /** Told how late each expiry was (ms), for metrics. */
      onExpired?: (lateMs: number) => void;
    } = {},
  ) {
    this.clock = deps.clock ?? Date.now;
  }

  /** Ends an active delegation (and every delegation made from it). */
  async revoke(principal: Principal, input: RevokeInput): Promise<Delegation> {
    const { store, log } = this.deps;
    const id = v.delegationId("delegation_id", input.delegationId);
    const reason = v.reason("reason", input.reason || EndReason.manualRevocation);
    const requestId = v.requestId("request_id", input.requestId);
    const d = await store.get(id);
    if (!d || !canAct(principal, d, "manage")) throw delegationNotFound(id);

    const claim = claimFor(principal.did || "anonymous", "RevokeDelegation", requestId, { id, reason }, id);
    if (claim) {
      for (let attempt = 0; ; attempt++) {
        const got = await store.claimIdempotency(claim, this.clock());
        if (got.kind === "claimed") break;
        if (attempt >= 3) throw new BrokerError("ABORTED", "REQUEST_IN_PROGRESS", "a request with this request_id is in progress; retry");
        const existing = await settleExisting(store, claim, got.record, async (r) => r.createTime > this.clock() - REVOKE_INFLIGHT_MS);
        if (existing.kind === "replay") return JSON.parse(existing.response) as Delegation;
      }
    }
    const [ended] = await store.end({
      target: { ids: [id] },
      ending: "revoke",
      reason,
      now: this.clock(),
      ...(claim ? { completeIdempotency: { ...claim, response: (x: Delegation) => JSON.stringify(x) } } : {}),
    });
    if (!ended) {
      if (claim) await store.releaseIdempotency(claim);
      const now = await store.get(id);
      throw notActive(id, now?.state ?? d.state);
    }
    log.info({ delegationId: id, reason, by: principal.did || "anonymous" }, "delegation revoked");
    return ended.delegation;
  }

  /** Ends every live delegation made from `delegatorAcId` (GSAP revoked it), nested ones included; admins only. */
  async revokeDelegatorContext(principal: Principal, input: { delegatorAcId: string; reason: string }): Promise<string[]> {
    if (!principal.admin) {
      throw new BrokerError("PERMISSION_DENIED", "ADMIN_ONLY", "RevokeDelegatorContext is reserved to the GSAP broker");
    }
    const acId = v.identifier("delegator_ac_id", input.delegatorAcId, { required: true });
    const reason = v.reason("reason", input.reason || EndReason.delegatorAcRevoked);
    const ids = await this.endAll({ delegatorAcId: acId }, reason);
    this.deps.log.info({ delegatorAcId: acId, revoked: ids.length }, "delegator context revoked");
    return ids;
  }

  /** Ends every live delegation made from a context, a batch per transaction; the ids, cascades included. */
  private async endAll(target: { delegatorAcId: string }, reason: string): Promise<string[]> {
    const ids: string[] = [];
    for (;;) {
      const ended = await this.deps.store.end({ target, ending: "revoke", reason, now: this.clock(), limit: END_BATCH });
      for (const e of ended) ids.push(e.delegation.id);
      if (ended.filter((e) => !e.cascaded).length < END_BATCH) return ids;
    }
  }

  /**
   * Expires one batch of ACTIVE delegations whose time is up (a loop task):
   * `more` while a full batch was expired, else when the next one is due.
   */
  async expireDue(): Promise<LoopResult> {
    const { store, log } = this.deps;
    const batch = this.options.expiryBatch ?? END_BATCH;
    const now = this.clock();
    const ended = await store.end({ target: { dueAt: now }, ending: "expire", reason: EndReason.ttlElapsed, now, limit: batch });
    const expired = ended.filter((e) => !e.cascaded);
    for (const e of expired) this.options.onExpired?.(now - e.delegation.expireTime);
    if (expired.length > 0) {
      const late = expired.map((e) => now - e.delegation.expireTime);
      log.info({ count: expired.length, cascaded: ended.length - expired.length, maxLateMs: Math.max(...late) }, "delegations expired");
    }
    if (expired.length >= batch) return { done: ended.length, more: true };
    return { done: ended.length, nextAt: await store.nextExpireTime() };
  }
}

function notActive(id: string, state: DelegationState): BrokerError {
  return new BrokerError("FAILED_PRECONDITION", "DELEGATION_NOT_ACTIVE", `delegation ${id} is ${state}, not ACTIVE`, {
    metadata: { delegation_id: id, state },
  });
}
