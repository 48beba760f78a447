/**
 * Live checks of delegators' access contexts: while delegations hang from a
 * root context, GSAP is asked about it again every GSAP_CONTEXT_CACHE_SECONDS
 * (in the background, never on the AuthorizeCommand path). When GSAP says it
 * is no longer active, every delegation made from it ends as
 * RevokeDelegatorContext would end them (delegator_ac_revoked); when its
 * ceiling dropped below a delegation's, that delegation ends
 * (delegator_ceiling_lowered), with its cascade. GSAP unreachable: the last
 * answer stands; AuthorizeCommand refuses commands (strict) or allows them
 * (lenient) once it is older than GSAP_CONTEXT_MAX_STALENESS_SECONDS.
 */
import { BrokerError, EndReason } from "../domain/index.js";
import type { LoopResult } from "../scheduler/loop.js";
import { mapLimit } from "../scheduler/map-limit.js";
import type { DelegatorContextState } from "../store/store.js";
import type { UseCaseDeps } from "./deps.js";
import type { EndDelegation } from "./end-delegation.js";

/** Contexts asked about per run, and at once. */
const BATCH = 100;
const CONCURRENCY = 8;
/** How often contexts without a row are adopted (delegations imported or made before the checks). */
const ADOPT_EVERY_MS = 60_000;
/** Delegations (or contexts) looked at per transaction of adopting (or forgetting): a few milliseconds each. */
const ADOPT_WINDOW = 500;

export class LiveChecks {
  private readonly clock: () => number;
  private lastAdopt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly deps: UseCaseDeps,
    private readonly end: EndDelegation,
  ) {
    this.clock = deps.clock ?? Date.now;
  }

  /** Asks GSAP about the contexts whose last try is older than the cache time (a loop task). */
  async checkDue(): Promise<LoopResult> {
    const { store, settings } = this.deps;
    const now = this.clock();
    if (now - this.lastAdopt >= ADOPT_EVERY_MS) {
      await this.adoptAll(now - ADOPT_EVERY_MS);
      this.lastAdopt = now;
    }
    const due = await store.contextsDue(now - settings.gsapChecks.contextCacheMs, BATCH);
    const ended = await mapLimit(due, CONCURRENCY, (ctx) => this.check(ctx));
    const done = ended.reduce((a, b) => a + b, 0);
    return due.length >= BATCH ? { done, more: true } : { done };
  }

  /** Every ACTIVE delegation's root context given a row, and rows no live delegation needs forgotten: window by window. */
  private async adoptAll(forgetBefore: number): Promise<void> {
    const { store } = this.deps;
    for (let after: string | null = ""; after !== null; ) after = (await store.adoptContexts(after, ADOPT_WINDOW)).next;
    for (let after: string | null = ""; after !== null; ) after = (await store.forgetContexts(forgetBefore, after, ADOPT_WINDOW)).next;
  }

  /** One context: its answer recorded, and what it no longer allows ended. Returns how many delegations ended. */
  private async check(ctx: DelegatorContextState): Promise<number> {
    const { store, gsap, settings, log } = this.deps;
    const now = this.clock();
    let answer;
    try {
      answer = await gsap.describeDelegatorContext(ctx.acId, ctx.principalDid);
    } catch (err) {
      if (err instanceof BrokerError && err.reason === "DELEGATOR_CONTEXT_NOT_ACTIVE") {
        await store.recordContextAnswer({ acId: ctx.acId, principalDid: ctx.principalDid, status: "not_active", capabilityCeiling: "", now });
        const ids = await this.end.endContext(ctx.acId, { reason: EndReason.delegatorAcRevoked, actor: "" });
        if (ids.length > 0) log.warn({ delegatorAcId: ctx.acId, revoked: ids.length }, "GSAP says the delegator's context is no longer active: its delegations were revoked");
        return ids.length;
      }
      const message = err instanceof Error ? err.message : String(err);
      await store.recordContextFailure(ctx.acId, now, message);
      log.warn({ delegatorAcId: ctx.acId, err: message, lastAnswerAgeMs: now - ctx.checkedTime }, "could not check the delegator's context at GSAP; its last answer stands");
      return 0;
    }
    await store.recordContextAnswer({ acId: ctx.acId, principalDid: ctx.principalDid, status: "active", capabilityCeiling: answer.capabilityCeiling, now });
    const order = settings.capabilityOrder;
    const held = order.indexOf(answer.capabilityCeiling);
    const above = (await store.activeFromContext(ctx.acId)).filter((d) => order.indexOf(d.capabilityCeiling) > held).map((d) => d.id);
    if (above.length === 0) return 0;
    const ids = await this.end.endContext(ctx.acId, { reason: EndReason.delegatorCeilingLowered, actor: "", ids: above });
    log.warn(
      { delegatorAcId: ctx.acId, ceiling: answer.capabilityCeiling, revoked: ids.length },
      "GSAP lowered the delegator's ceiling: delegations above it were revoked",
    );
    return ids.length;
  }
}
