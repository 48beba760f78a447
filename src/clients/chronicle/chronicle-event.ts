/**
 * The Chronicle wire format, as the prototype spoke it: each lifecycle event
 * is a Forgejo-style push webhook (header `X-Forgejo-Event: push`) whose one
 * commit message is `<KIND>: <payload JSON>`, and whose content id is
 * `sha256:` + the SHA-256 of the canonical JSON (sorted keys) of
 * `{kind, ...payload}`. The payload is a pure function of the stored event,
 * so the id computed when the event is written equals the one delivered.
 */
import { createHash } from "node:crypto";
import { type Ceremony, type DecisionRecord, type Delegation, type DelegationEvent, type EventType, isEndingEvent } from "../../domain/index.js";

/** Event codes: the prototype's three, and the ones it lacked. */
export const CHRONICLE_CODES: Record<EventType, string> = {
  CREATED: "0x3001",
  REVOKED: "0x3003",
  EXPIRED: "0x3004",
  FAILED: "0x3005",
  COMMAND_LIMIT_REACHED: "0x3006",
  CEREMONY_REQUESTED: "0x3010",
  CEREMONY_APPROVED: "0x3011",
  CEREMONY_DENIED: "0x3012",
  CEREMONY_EXPIRED: "0x3013",
  CEREMONY_USED: "0x3014",
  COMMAND_DECIDED: "0x3020",
};

/** Cascade revocations carry their own code: the delegator's context or a parent ended. */
export const CASCADE_CODE = "0x3007";

const CASCADE_REASONS = new Set(["delegator_ac_revoked", "delegator_ceiling_lowered", "parent_delegation_ended"]);

export type ChronicleKind = `DELEGATION_${EventType}` | "DELEGATION_CASCADE_REVOKED";

export interface ChroniclePayload {
  kind: ChronicleKind;
  body: Record<string, unknown>;
  /** Who the record is pushed as (not part of its content id). */
  pusher?: string;
}

function scopeOf(d: Delegation) {
  return {
    capability_ceiling: d.capabilityCeiling,
    ceremony_required_for: d.ceremonyRequiredFor,
    prohibited_commands: d.prohibitedCommands,
    inherit_corpus: d.inheritCorpus,
    inherit_contexts: d.inheritContexts,
    max_commands: d.maxCommands,
    expire_time: new Date(d.expireTime).toISOString(),
  };
}

const iso = (t: number | null) => (t === null ? undefined : new Date(t).toISOString());

function ceremonyOf(c: Ceremony) {
  // The approver reads the command; the audit log keeps its hash.
  return {
    ceremony_id: c.id,
    state: c.state,
    command_sha256: c.commandHash,
    matched_rule: c.matchedRule,
    request_time: iso(c.requestTime),
    expire_time: iso(c.expireTime),
    decided_by: c.decidedBy || undefined,
    decide_time: iso(c.decideTime),
    ceremony_reason: c.reason || undefined,
    use_time: iso(c.useTime),
  };
}

function decisionOf(r: DecisionRecord) {
  return {
    decision: r.decision,
    decision_reason: r.reason,
    matched_rule: r.matchedRule || undefined,
    command_sha256: r.commandHash,
    command: r.command,
    ceremony_id: r.ceremonyId || undefined,
  };
}

/**
 * The payload of one stored event, in the prototype's field names. Never
 * contains a secret; a command appears only as its hash unless its decision
 * record was written with AUDIT_COMMANDS_IN_CLEAR.
 */
export type PayloadSource = Omit<DelegationEvent, "chronicleCid" | "revision"> & { revision?: bigint };

export function eventPayload(e: PayloadSource): ChroniclePayload {
  const { type, delegation: d, eventTime, reason, revision } = e;
  const cascade = type === "REVOKED" && CASCADE_REASONS.has(reason);
  const kind: ChronicleKind = cascade ? "DELEGATION_CASCADE_REVOKED" : `DELEGATION_${type}`;
  const body: Record<string, unknown> = {
    event_code: cascade ? CASCADE_CODE : CHRONICLE_CODES[type],
    delegation_id: d.id,
    delegator_did: d.delegatorDid,
    delegator_ac_id: d.delegatorAcId,
    agent_did: d.agentDid,
    agent_type: d.agentType,
    timestamp: new Date(eventTime).toISOString(),
  };
  if (type === "CREATED") {
    body.scope = scopeOf(d);
    body.delegated_ac_id = d.delegatedAcId;
    body.idp_backend = d.idpBackend;
  } else {
    body.reason = reason;
    body.commands_executed = d.commandsExecuted;
    if (isEndingEvent(type) && d.endDetail) body.detail = d.endDetail;
    // Records written before actors were recorded keep their content id.
    if (e.actor) body.actor = e.actor;
  }
  if (e.ceremony) Object.assign(body, ceremonyOf(e.ceremony));
  if (e.decision) Object.assign(body, decisionOf(e.decision));
  if (revision !== undefined) body.revision = revision.toString();
  // Created: the delegator. Otherwise whoever caused it; the broker (expiry, limits) by default.
  const pusher = type === "CREATED" ? d.delegatorDid : e.actor;
  return pusher ? { kind, body, pusher } : { kind, body };
}

/** The payload of an event given by its parts (a lifecycle event caused by the broker or the delegator). */
export function chroniclePayload(type: EventType, d: Delegation, eventTime: number, reason: string, revision?: bigint): ChroniclePayload {
  return eventPayload({ type, delegation: d, eventTime, reason, actor: "", ...(revision !== undefined ? { revision } : {}) });
}

/** JSON with object keys sorted at every level. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** The content id: sha256 of the canonical JSON of {kind, ...payload}. */
export function contentId(p: ChroniclePayload): string {
  return `sha256:${createHash("sha256").update(canonicalJson({ kind: p.kind, ...p.body })).digest("hex")}`;
}

/** The content id of a stored event (its revision is part of the payload). */
export function eventContentId(e: PayloadSource): string {
  return contentId(eventPayload(e));
}

/** The Forgejo push webhook body the prototype posted. */
export function webhookBody(p: ChroniclePayload, cid: string, brokerDid: string): Record<string, unknown> {
  return {
    pusher: { login: p.pusher || brokerDid },
    ref: `refs/llm-broker/${p.kind}`,
    after: cid,
    repository: { full_name: "llm-broker/delegation" },
    commits: [{ id: cid, message: `${p.kind}: ${canonicalJson(p.body)}` }],
  };
}
