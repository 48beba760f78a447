/**
 * Ceremonies: a human approves (or denies) one command of one delegation.
 * AuthorizeCommand requests them (CEREMONY_REQUIRED) and uses an approval
 * (authorize-command.ts); this is the delegator's side: ApproveCeremony,
 * DenyCeremony, GetCeremony, ListCeremonies, and the expiry of ceremonies
 * nobody decided or used in time (a loop task).
 */
import {
  BrokerError,
  type Ceremony,
  type CeremonyState,
  type Principal,
  actorOf,
  ceremonyNotFound,
  invalidArgument,
} from "../domain/index.js";
import type { LoopResult } from "../scheduler/loop.js";
import { canAct, canDecideCeremony } from "./access.js";
import type { UseCaseDeps } from "./deps.js";
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from "./read-delegations.js";
import * as v from "./validate.js";

/** Ceremonies expired per transaction. */
const EXPIRY_BATCH = 500;

export interface ListCeremoniesInput {
  delegationId: string;
  state: CeremonyState | undefined;
  pageSize: number;
  pageToken: string;
}

export class Ceremonies {
  private readonly clock: () => number;

  constructor(private readonly deps: UseCaseDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  /** PENDING → APPROVED: the agent may run the command once, before the ceremony expires. */
  approve(principal: Principal, input: { ceremonyId: string; reason: string }): Promise<Ceremony> {
    return this.decide(principal, input, true);
  }

  /** PENDING → DENIED. */
  deny(principal: Principal, input: { ceremonyId: string; reason: string }): Promise<Ceremony> {
    return this.decide(principal, input, false);
  }

  private async decide(principal: Principal, input: { ceremonyId: string; reason: string }, approve: boolean): Promise<Ceremony> {
    const { store, log } = this.deps;
    const id = v.ceremonyId("ceremony_id", input.ceremonyId, { required: true });
    const reason = input.reason === "" ? "" : v.reason("reason", input.reason);
    const c = await store.getCeremony(id);
    const d = c ? await store.get(c.delegationId) : null;
    // Neither existence nor state is shown to someone who may not see the delegation.
    if (!c || !d || !canAct(principal, d, "read")) throw ceremonyNotFound(id);
    if (!canDecideCeremony(principal, d)) {
      throw new BrokerError("PERMISSION_DENIED", "DELEGATOR_ONLY", "only the delegator of this delegation (or an admin) may decide its ceremonies; never the agent", {
        metadata: { ceremony_id: id },
      });
    }
    const now = this.clock();
    const r = await store.decideCeremony({ id, approve, actor: actorOf(principal), reason, now });
    if ("refused" in r) throw notPending(id, r.refused ?? c, now);
    log.info({ ceremonyId: id, delegationId: c.delegationId, approve, by: actorOf(principal) }, approve ? "ceremony approved" : "ceremony denied");
    return r.ceremony;
  }

  async get(principal: Principal, ceremonyId: string): Promise<Ceremony> {
    const { store } = this.deps;
    const id = v.ceremonyId("ceremony_id", ceremonyId, { required: true });
    const c = await store.getCeremony(id);
    const d = c ? await store.get(c.delegationId) : null;
    if (!c || !d || !canAct(principal, d, "read")) throw ceremonyNotFound(id);
    return c;
  }

  /** Ceremonies of the caller's delegations (an admin's: all), oldest first, a page at a time. */
  async list(principal: Principal, input: ListCeremoniesInput): Promise<{ items: Ceremony[]; nextPageToken: string }> {
    const { store } = this.deps;
    if (!Number.isInteger(input.pageSize) || input.pageSize < 0) throw invalidArgument("page_size", "must not be negative");
    const pageSize = Math.min(input.pageSize || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    const state = input.state ?? "PENDING";
    const delegationId = input.delegationId === "" ? "" : v.delegationId("delegation_id", input.delegationId);
    if (delegationId !== "") {
      const d = await store.get(delegationId);
      if (!d || !canAct(principal, d, "read")) return { items: [], nextPageToken: "" };
    } else if (!principal.admin && principal.did === "") {
      throw new BrokerError("PERMISSION_DENIED", "DELEGATOR_ONLY", "ListCeremonies without delegation_id needs a delegator identity");
    }
    const filter = `${state}|${delegationId}`;
    const afterId = input.pageToken === "" ? undefined : decodeToken(input.pageToken, filter);
    const items = await store.listCeremonies({
      state,
      ...(delegationId ? { delegationId } : {}),
      // Without a delegation, a delegator sees the ceremonies of their own delegations.
      ...(!delegationId && !principal.admin ? { delegatorDid: principal.did } : {}),
      ...(afterId ? { afterId } : {}),
      limit: pageSize + 1,
    });
    const page = items.slice(0, pageSize);
    const last = page.at(-1);
    return { items: page, nextPageToken: items.length > pageSize && last ? encodeToken(last.id, filter) : "" };
  }

  /** Expires a batch of open ceremonies past their time or of ended delegations (a loop task). */
  async expireDue(): Promise<LoopResult> {
    const { store, log } = this.deps;
    const expired = await store.expireCeremonies(this.clock(), EXPIRY_BATCH);
    if (expired.length > 0) log.info({ count: expired.length }, "ceremonies expired");
    if (expired.length >= EXPIRY_BATCH) return { done: expired.length, more: true };
    return { done: expired.length, nextAt: await store.nextCeremonyExpiry() };
  }
}

function notPending(id: string, c: Ceremony, now: number): BrokerError {
  const state = c.state === "PENDING" && c.expireTime <= now ? "EXPIRED" : c.state;
  const why = state === "PENDING" ? "its delegation is no longer active" : `it is ${state}`;
  return new BrokerError("FAILED_PRECONDITION", "CEREMONY_NOT_PENDING", `ceremony ${id} cannot be decided: ${why}`, {
    metadata: { ceremony_id: id, state },
  });
}

function encodeToken(afterId: string, filter: string): string {
  return Buffer.from(JSON.stringify({ v: 1, a: afterId, f: filter })).toString("base64url");
}

function decodeToken(token: string, filter: string): string {
  let p: { v?: unknown; a?: unknown; f?: unknown } | null;
  try {
    p = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { v?: unknown; a?: unknown; f?: unknown } | null;
  } catch {
    p = null;
  }
  if (!p || typeof p !== "object" || p.v !== 1 || typeof p.a !== "string" || !/^cer_[0-9A-Z]{26}$/.test(p.a)) {
    throw invalidArgument("page_token", "is not a token this service issued");
  }
  if (p.f !== filter) throw invalidArgument("page_token", "was issued for different filters");
  return p.a;
}
