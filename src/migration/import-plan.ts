/**
 * What becomes of each prototype row, decided before anything is written
 * (so a failing identity lookup leaves the database untouched): the report
 * item, and for a live row the delegation to insert, its activation and,
 * when it does not stay live, its ending.
 */
import { type Delegation, type DelegationState, EndReason } from "../domain/index.js";
import type { AgentIdentityRef } from "../registrars/registrar.js";
import type { ActivationPatch } from "../store/store.js";
import type { IdentityLookup } from "./identity-lookup.js";
import type { ImportItem, ImportStore, Outcome } from "./prototype-import.js";
import type { EndedRow, InvalidRow, LiveRow } from "./prototype-row.js";

/** The prototype always sent this template to GSAP. */
const PROTOTYPE_ACCORD = "ai-delegation-standard";

/** What is known of a delegated context a row might have been made from. */
export interface Parent {
  live: boolean;
  depth: number;
  rootAcId: string;
}

/** One import to carry out. */
export interface Planned {
  delegation: Delegation;
  patch: ActivationPatch;
  /** How it ends on import; `detail` becomes its end_detail. */
  ending?: { ending: "revoke" | "expire"; reason: string; detail?: string };
  /** An earlier run inserted it and stopped before activating it. */
  resume: boolean;
}

export interface PlanContext {
  store: ImportStore;
  /** Undefined: identities are not checked. */
  lookup: IdentityLookup | undefined;
  /** The registrar's backend, recorded on each delegation. */
  backend: string;
  now: number;
  /** Delegated contexts by id: of rows that will not be live, and of rows planned so far. */
  contexts: Map<string, Parent>;
}

/** The report of a row that is not imported, and what a person must still do about it. */
export function skipped(row: InvalidRow | EndedRow, now: number): { item: ImportItem; warning?: string } {
  if (row.kind === "invalid") {
    const item: ImportItem = { id: row.id, prototypeStatus: row.status, outcome: "skipped_invalid", state: "", reason: "invalid", detail: row.problems.join("; ") };
    if (row.status !== "active") return { item };
    return {
      item,
      warning:
        `${row.id || "(no id)"} is live in the prototype but was not imported: its agent client ${row.agentClientId || "(none)"} and delegated context ` +
        `${row.delegatedAcId || "(none)"} are managed by nobody now; end them by hand, or correct the row and run again`,
    };
  }
  const when = row.endTime === undefined ? "" : ` at ${iso(row.endTime)}`;
  const item: ImportItem = { id: row.id, prototypeStatus: row.status, outcome: "skipped_ended", state: "", reason: row.reason, detail: `ended in the prototype${when}; its history is not imported` };
  if (row.status !== "revoked" || !row.delegatedAcId || row.expireTime === undefined || row.expireTime <= now) return { item };
  return {
    item,
    warning:
      `${row.id} was revoked in the prototype before its expiry; the prototype never revoked delegated contexts, so ${row.delegatedAcId} ` +
      `may be live at GSAP until ${iso(row.expireTime)}: revoke it there`,
  };
}

/** The report of a live row and, unless it is already here, its import. Records its delegated context in `ctx.contexts`. */
export async function planLive(row: LiveRow, ctx: PlanContext): Promise<{ item: ImportItem; planned?: Planned }> {
  const existing = await ctx.store.get(row.id);
  const resume = existing?.state === "REQUESTED" && existing.createTime === row.createTime;
  if (existing && !resume) {
    if (row.delegatedAcId) ctx.contexts.set(row.delegatedAcId, { live: existing.state === "ACTIVE", depth: existing.depth, rootAcId: existing.rootAcId || existing.delegatorAcId });
    return { item: { id: row.id, prototypeStatus: "active", outcome: "skipped_existing", state: existing.state, reason: "", detail: "already in this broker's database" } };
  }
  const parent = await parentOf(row, ctx);
  const { ending, identity, detail } = await decide(row, parent, ctx);
  const planned = build(row, parent, identity, ctx, ending && { ...ending, detail: `imported from the prototype: ${detail}` }, resume);
  if (row.delegatedAcId) ctx.contexts.set(row.delegatedAcId, { live: !ending, depth: planned.delegation.depth, rootAcId: planned.delegation.rootAcId });
  const state: DelegationState = !ending ? "ACTIVE" : ending.ending === "revoke" ? "REVOKED" : "EXPIRED";
  const outcome: Outcome = !ending ? "imported_active" : ending.reason === EndReason.identityMissing ? "imported_revoked_identity_missing" : "imported_ended";
  return {
    item: { id: row.id, prototypeStatus: "active", outcome, state, reason: ending?.reason ?? "", detail: resume ? `${detail} (finishing an interrupted import)` : detail },
    planned,
  };
}

/** The delegation whose delegated context `row` was made from, if any: from this run, else from the store. */
async function parentOf(row: LiveRow, ctx: PlanContext): Promise<Parent | undefined> {
  const known = ctx.contexts.get(row.delegatorAcId);
  if (known) return known;
  const stored = await ctx.store.findByDelegatedAc(row.delegatorAcId);
  return stored ? { live: stored.state === "ACTIVE", depth: stored.depth, rootAcId: stored.rootAcId || stored.delegatorAcId } : undefined;
}

/** Whether the row stays live here, and if not, how it ends. The identity is looked up only for one that would stay live. */
async function decide(row: LiveRow, parent: Parent | undefined, ctx: PlanContext): Promise<{ ending?: Planned["ending"]; identity?: AgentIdentityRef; detail: string }> {
  const budget = `${row.commandsExecuted} of ${row.maxCommands} commands executed`;
  if (row.commandsExecuted >= row.maxCommands) return { ending: { ending: "expire", reason: EndReason.commandLimit }, detail: `${budget}: the budget is spent` };
  if (row.expireTime <= ctx.now) return { ending: { ending: "expire", reason: EndReason.ttlElapsed }, detail: `expired at ${iso(row.expireTime)}` };
  if (parent && !parent.live) {
    return { ending: { ending: "revoke", reason: EndReason.parentEnded }, detail: `made from delegated context ${row.delegatorAcId}, whose delegation is not live` };
  }
  const live = `expires at ${iso(row.expireTime)}, ${budget}`;
  if (!ctx.lookup) return { detail: `${live}; identity not checked` };
  const identity = await ctx.lookup.find({ delegationId: row.id, clientId: row.agentClientId });
  if (!identity) {
    const client = row.agentClientId ? `agent client ${row.agentClientId}` : `an identity tagged ${row.id}`;
    return { ending: { ending: "revoke", reason: EndReason.identityMissing }, detail: `${client} was not found in ${ctx.lookup.name}` };
  }
  return { identity, detail: live };
}

/** The REQUESTED delegation (as CreateDelegation builds one) and its activation, from the row. */
function build(row: LiveRow, parent: Parent | undefined, identity: AgentIdentityRef | undefined, ctx: PlanContext, ending: Planned["ending"], resume: boolean): Planned {
  const agentClientId = row.agentClientId || identity?.clientId || "";
  const idpObjectId = identity?.objectId ?? "";
  const delegation: Delegation = {
    id: row.id,
    state: "REQUESTED",
    agentType: row.agentType,
    agentModel: row.agentModel,
    agentDid: row.agentDid,
    agentClientId,
    idpObjectId,
    idpBackend: ctx.backend,
    delegatorDid: row.delegatorDid,
    delegatorAcId: row.delegatorAcId,
    delegatedAcId: "",
    delegatedAc: null,
    capabilityCeiling: row.capabilityCeiling,
    ceremonyRequiredFor: row.ceremonyRequiredFor,
    prohibitedCommands: [],
    inheritCorpus: true,
    inheritContexts: true,
    accordTemplate: PROTOTYPE_ACCORD,
    maxCommands: row.maxCommands,
    commandsExecuted: row.commandsExecuted,
    depth: parent ? parent.depth + 1 : 1,
    createTime: row.createTime,
    updateTime: ctx.now,
    expireTime: row.expireTime,
    endTime: null,
    endReason: "",
    endDetail: "",
    rootAcId: parent?.rootAcId || row.delegatorAcId,
    chronicleCid: "",
  };
  const patch: ActivationPatch = {
    agentClientId,
    idpObjectId,
    idpBackend: ctx.backend,
    delegatedAcId: row.delegatedAcId,
    // The prototype kept only the context id, not GSAP's answer.
    delegatedAc: {
      contextId: row.delegatedAcId,
      status: "authorized",
      principalDid: row.agentDid,
      delegationId: row.id,
      capabilityCeiling: row.capabilityCeiling,
      expireTime: row.expireTime,
      attributes: { imported_from: "prototype" },
    },
  };
  return { delegation, patch, ...(ending ? { ending } : {}), resume };
}

function iso(t: number): string {
  return new Date(t).toISOString();
}
