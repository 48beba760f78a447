/**
 * Ending delegations: RevokeDelegation, RevokeDelegatorContext and expiry.
 * Every ending is one store operation (`store.end`): the state change, the
 * event, the cascade to delegations made from it and the work items of its
 * consequences, in one transaction. Nothing else happens inline: deleting the
 * identity and revoking the GSAP context are done by the consequence
 * workers, which the event log wakes (src/events/effects.ts).
 */
import {
  BrokerError,
  type Delegation,
  type DelegationState,
  EndReason,
  type Principal,
  actorOf,
  delegationNotFound,
} from "../domain/index.js";
import type { LoopResult } from "../scheduler/loop.js";
import type { EndTarget } from "../store/store.js";
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

/**
 * When an expiry run found due delegations but ended none (another transaction holds their rows: the
 * other expiry lane, another replica's, a revocation), the next run waits this long instead of asking
 * again at once while that transaction commits.
 */
export const HELD_DUE_RETRY_MS = 20;

/** A revoke whose key has no answer after this long was interrupted by a crash. */
const REVOKE_INFLIGHT_MS = 30_000;

export class EndDelegation {
  private readonly clock: () => number;

  constructor(
    private readonly deps: UseCaseDeps,
    private readonly options: {
      /** Most delegations expired per transaction. By default, END_BATCH. */
      expiryBatch?: number;
      /** Told how late each expiry was (ms), for metrics. */
      onExpired?: (lateMs: number) => void;
    } = {},
  ) {
    this.clock = deps.clock ?? Date.now;
  }

  /**
   * Ends an active delegation (and every delegation made from it) with
   * end_reason manual_revocation; the caller's reason becomes its end_detail.
   */
  async revoke(principal: Principal, input: RevokeInput): Promise<Delegation> {
    const { store, log } = this.deps;
    const id = v.delegationId("delegation_id", input.delegationId);
    const reason = input.reason === "" ? "" : v.reason("reason", input.reason);
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
      reason: EndReason.manualRevocation,
      detail: reason,
      actor: actorOf(principal),
      now: this.clock(),
      ...(claim ? { completeIdempotency: { ...claim, response: (x: Delegation) => JSON.stringify(x) } } : {}),
    });
    if (!ended) {
      if (claim) await store.releaseIdempotency(claim);
      const now = await store.get(id);
      throw notActive(id, now?.state ?? d.state);
    }
    log.info({ delegationId: id, detail: reason, by: actorOf(principal) }, "delegation revoked");
    return ended.delegation;
  }

  /**
   * Ends every live delegation made from `delegatorAcId` (GSAP revoked it),
   * nested ones included, with end_reason delegator_ac_revoked and the
   * caller's reason as end_detail; admins only.
   */
  async revokeDelegatorContext(principal: Principal, input: { delegatorAcId: string; reason: string }): Promise<string[]> {
    if (!principal.admin) {
      throw new BrokerError("PERMISSION_DENIED", "ADMIN_ONLY", "RevokeDelegatorContext is reserved to the GSAP broker");
    }
    const acId = v.identifier("delegator_ac_id", input.delegatorAcId, { required: true });
    const detail = input.reason === "" ? "" : v.reason("reason", input.reason);
    const ids = await this.endContext(acId, { reason: EndReason.delegatorAcRevoked, detail, actor: actorOf(principal) });
    this.deps.log.info({ delegatorAcId: acId, revoked: ids.length }, "delegator context revoked");
    return ids;
  }

  /**
   * Ends every live delegation made from a context (or only those of `ids`),
   * a batch per transaction; returns the ids ended, cascades included.
   */
  async endContext(acId: string, how: { reason: string; detail?: string; actor: string; ids?: readonly string[] }): Promise<string[]> {
    const out: string[] = [];
    const end = (target: EndTarget) =>
      this.deps.store.end({
        target,
        ending: "revoke",
        reason: how.reason,
        ...(how.detail ? { detail: how.detail } : {}),
        actor: how.actor,
        now: this.clock(),
        limit: END_BATCH,
      });
    if (how.ids) {
      for (let i = 0; i < how.ids.length; i += END_BATCH) {
        for (const e of await end({ ids: how.ids.slice(i, i + END_BATCH) })) out.push(e.delegation.id);
      }
      return out;
    }
    for (;;) {
      const ended = await end({ delegatorAcId: acId });
      for (const e of ended) out.push(e.delegation.id);
      if (ended.filter((e) => !e.cascaded).length < END_BATCH) return out;
    }
  }

  /**
   * Expires one batch of ACTIVE delegations whose time is up (a loop task):
   * `more` while a full batch was expired, else when the next one is due
   * (shortly, if what is due is held by another transaction).
   */
  async expireDue(): Promise<LoopResult> {
    const { store, log } = this.deps;
    const batch = this.options.expiryBatch ?? END_BATCH;
    const now = this.clock();
    const began = performance.now();
    const ended = await store.end({ target: { dueAt: now }, ending: "expire", reason: EndReason.ttlElapsed, now, limit: batch });
    const ms = Math.round(performance.now() - began);
    const expired = ended.filter((e) => !e.cascaded);
    for (const e of expired) this.options.onExpired?.(now - e.delegation.expireTime);
    if (expired.length > 0) {
      const late = expired.map((e) => now - e.delegation.expireTime);
      log.info({ count: expired.length, cascaded: ended.length - expired.length, maxLateMs: Math.max(...late), ms }, "delegations expired");
    }
    if (expired.length >= batch) return { done: ended.length, more: true };
    const nextAt = await store.nextExpireTime();
    if (ended.length === 0 && nextAt !== null && nextAt <= now) return { done: 0, nextAt: now + HELD_DUE_RETRY_MS };
    return { done: ended.length, nextAt };
  }
}

function notActive(id: string, state: DelegationState): BrokerError {
  return new BrokerError("FAILED_PRECONDITION", "DELEGATION_NOT_ACTIVE", `delegation ${id} is ${state}, not ACTIVE`, {
    metadata: { delegation_id: id, state },
  });
}
