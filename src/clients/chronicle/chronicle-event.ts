/**
 * The Chronicle wire format, as the prototype spoke it: each lifecycle event
 * is a Forgejo-style push webhook (header `X-Forgejo-Event: push`) whose one
 * commit message is `<KIND>: <payload JSON>`, and whose content id is
 * `sha256:` + the SHA-256 of the canonical JSON (sorted keys) of
 * `{kind, ...payload}`. The payload is a pure function of the stored event,
 * so the id computed when the event is written equals the one delivered.
 */
import { createHash } from "node:crypto";
import type { Delegation, DelegationEvent, EventType } from "../../domain/index.js";

/** Event codes: the prototype's three, and the ones it lacked. */
export const CHRONICLE_CODES: Record<EventType, string> = {
  CREATED: "0x3001",
  REVOKED: "0x3003",
  EXPIRED: "0x3004",
  FAILED: "0x3005",
  COMMAND_LIMIT_REACHED: "0x3006",
};

/** Cascade revocations carry their own code: the delegator's context or a parent ended. */
export const CASCADE_CODE = "0x3007";

const CASCADE_REASONS = new Set(["delegator_ac_revoked", "parent_delegation_ended"]);

export type ChronicleKind = `DELEGATION_${EventType}` | "DELEGATION_CASCADE_REVOKED";

export interface ChroniclePayload {
  kind: ChronicleKind;
  body: Record<string, unknown>;
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

/** The payload of one event, in the prototype's field names. Never contains a secret. */
export function chroniclePayload(type: EventType, d: Delegation, eventTime: number, reason: string, revision?: bigint): ChroniclePayload {
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
  }
  if (revision !== undefined) body.revision = revision.toString();
  return { kind, body };
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
export function eventContentId(e: DelegationEvent): string {
  return contentId(chroniclePayload(e.type, e.delegation, e.eventTime, e.reason, e.revision));
}

/** The Forgejo push webhook body the prototype posted. */
export function webhookBody(p: ChroniclePayload, cid: string, brokerDid: string): Record<string, unknown> {
  return {
    pusher: { login: (p.body.delegator_did as string) || brokerDid },
    ref: `refs/llm-broker/${p.kind}`,
    after: cid,
    repository: { full_name: "llm-broker/delegation" },
    commits: [{ id: cid, message: `${p.kind}: ${canonicalJson(p.body)}` }],
  };
}
