/**
 * The one mapping between the domain and the database's rows. Column names
 * are snake_case on both databases; integer columns come back as numbers
 * (SQLite, INTEGER on PostgreSQL) or strings (BIGINT on PostgreSQL), and
 * booleans as 0/1 (SQLite) or true/false (PostgreSQL).
 */
import type { Ceremony, CeremonyState, DecisionRecord, Delegation, DelegationEvent, DelegationState, EffectKind, EventType } from "../domain/index.js";

/** A delegations row as either driver returns it. */
export interface DelegationRow {
  id: string;
  state: string;
  agent_type: string;
  agent_model: string;
  agent_did: string;
  agent_client_id: string;
  idp_object_id: string;
  idp_backend: string;
  delegator_did: string;
  delegator_ac_id: string;
  delegated_ac_id: string;
  delegated_ac: string;
  capability_ceiling: string;
  ceremony_required_for: string;
  prohibited_commands: string;
  inherit_corpus: boolean | number;
  inherit_contexts: boolean | number;
  accord_template: string;
  max_commands: number | string;
  commands_executed: number | string;
  depth: number | string;
  create_time: number | string;
  update_time: number | string;
  expire_time: number | string;
  end_time: number | string | null;
  end_reason: string;
  end_detail: string;
  root_ac_id: string;
  chronicle_cid: string;
}

/** The columns of `delegations`, in the order of `delegationValues`. */
export const DELEGATION_COLUMNS = [
  "id",
  "state",
  "agent_type",
  "agent_model",
  "agent_did",
  "agent_client_id",
  "idp_object_id",
  "idp_backend",
  "delegator_did",
  "delegator_ac_id",
  "delegated_ac_id",
  "delegated_ac",
  "capability_ceiling",
  "ceremony_required_for",
  "prohibited_commands",
  "inherit_corpus",
  "inherit_contexts",
  "accord_template",
  "max_commands",
  "commands_executed",
  "depth",
  "create_time",
  "update_time",
  "expire_time",
  "end_time",
  "end_reason",
  "end_detail",
  "root_ac_id",
  "chronicle_cid",
] as const;

const bool = (v: boolean | number): boolean => (typeof v === "boolean" ? v : Number(v) !== 0);
const num = (v: number | string): number => (typeof v === "number" ? v : Number(v));

/** A row as the domain sees it. */
export function delegationFromRow(r: DelegationRow): Delegation {
  return {
    id: r.id,
    state: r.state as DelegationState,
    agentType: r.agent_type,
    agentModel: r.agent_model,
    agentDid: r.agent_did,
    agentClientId: r.agent_client_id,
    idpObjectId: r.idp_object_id,
    idpBackend: r.idp_backend,
    delegatorDid: r.delegator_did,
    delegatorAcId: r.delegator_ac_id,
    delegatedAcId: r.delegated_ac_id,
    delegatedAc: JSON.parse(r.delegated_ac),
    capabilityCeiling: r.capability_ceiling,
    ceremonyRequiredFor: JSON.parse(r.ceremony_required_for),
    prohibitedCommands: JSON.parse(r.prohibited_commands),
    inheritCorpus: bool(r.inherit_corpus),
    inheritContexts: bool(r.inherit_contexts),
    accordTemplate: r.accord_template,
    maxCommands: num(r.max_commands),
    commandsExecuted: num(r.commands_executed),
    depth: num(r.depth),
    createTime: num(r.create_time),
    updateTime: num(r.update_time),
    expireTime: num(r.expire_time),
    endTime: r.end_time === null ? null : num(r.end_time),
    endReason: r.end_reason,
    endDetail: r.end_detail,
    rootAcId: r.root_ac_id,
    chronicleCid: r.chronicle_cid,
  };
}

/** The values of a delegation, in DELEGATION_COLUMNS order. */
export function delegationValues(d: Delegation): unknown[] {
  return [
    d.id,
    d.state,
    d.agentType,
    d.agentModel,
    d.agentDid,
    d.agentClientId,
    d.idpObjectId,
    d.idpBackend,
    d.delegatorDid,
    d.delegatorAcId,
    d.delegatedAcId,
    JSON.stringify(d.delegatedAc),
    d.capabilityCeiling,
    JSON.stringify(d.ceremonyRequiredFor),
    JSON.stringify(d.prohibitedCommands),
    d.inheritCorpus,
    d.inheritContexts,
    d.accordTemplate,
    d.maxCommands,
    d.commandsExecuted,
    d.depth,
    d.createTime,
    d.updateTime,
    d.expireTime,
    d.endTime,
    d.endReason,
    d.endDetail,
    d.rootAcId,
    d.chronicleCid,
  ];
}

/** How each column of a delegations row appears in its snapshot: the key, and whether it holds JSON text. */
const SNAPSHOT_FIELDS: readonly (readonly [keyof Delegation, (typeof DELEGATION_COLUMNS)[number], "json"?])[] = [
  ["id", "id"],
  ["state", "state"],
  ["agentType", "agent_type"],
  ["agentModel", "agent_model"],
  ["agentDid", "agent_did"],
  ["agentClientId", "agent_client_id"],
  ["idpObjectId", "idp_object_id"],
  ["idpBackend", "idp_backend"],
  ["delegatorDid", "delegator_did"],
  ["delegatorAcId", "delegator_ac_id"],
  ["delegatedAcId", "delegated_ac_id"],
  ["delegatedAc", "delegated_ac", "json"],
  ["capabilityCeiling", "capability_ceiling"],
  ["ceremonyRequiredFor", "ceremony_required_for", "json"],
  ["prohibitedCommands", "prohibited_commands", "json"],
  ["inheritCorpus", "inherit_corpus"],
  ["inheritContexts", "inherit_contexts"],
  ["accordTemplate", "accord_template"],
  ["maxCommands", "max_commands"],
  ["commandsExecuted", "commands_executed"],
  ["depth", "depth"],
  ["createTime", "create_time"],
  ["updateTime", "update_time"],
  ["expireTime", "expire_time"],
  ["endTime", "end_time"],
  ["endReason", "end_reason"],
  ["endDetail", "end_detail"],
  ["rootAcId", "root_ac_id"],
  ["chronicleCid", "chronicle_cid"],
];
if (SNAPSHOT_FIELDS.length !== DELEGATION_COLUMNS.length) throw new Error("SNAPSHOT_FIELDS must name every column of DELEGATION_COLUMNS");

/**
 * PostgreSQL: the snapshot of the delegations row `alias` as the event log
 * stores it (JSON text that parses to what delegationFromRow makes of the
 * row), built by the database so a large batch of events need not carry its
 * snapshots over the wire. Booleans, integers and NULL map to JSON as they
 * do through the driver; the JSON columns are embedded as they are stored.
 */
export function pgSnapshotSql(alias: string): string {
  const pairs = SNAPSHOT_FIELDS.map(([key, column, json]) => `'${key}', ${alias}."${column}"${json ? "::json" : ""}`);
  return `json_build_object(${pairs.join(", ")})::text`;
}

/** A delegation_events row (the columns the log readers select). */
export interface EventRow {
  revision: number | string;
  type: string;
  event_time: number | string;
  reason: string;
  snapshot: string;
  chronicle_cid: string;
  actor: string;
  detail: string;
}

/** The columns the log readers select. */
export const EVENT_READ_COLUMNS = `"revision", "type", "event_time", "reason", "snapshot", "chronicle_cid", "actor", "detail"`;

/** What an event carries beyond its delegation, as stored in its detail column. */
export interface EventDetail {
  ceremony?: Ceremony;
  decision?: DecisionRecord;
}

export function eventFromRow(r: EventRow): DelegationEvent {
  const e: DelegationEvent = {
    revision: BigInt(r.revision),
    type: r.type as EventType,
    delegation: snapshotFromJson(r.snapshot),
    eventTime: num(r.event_time),
    reason: r.reason,
    actor: r.actor,
    chronicleCid: r.chronicle_cid,
  };
  if (r.detail !== "") {
    const detail = JSON.parse(r.detail) as EventDetail;
    if (detail.ceremony) e.ceremony = detail.ceremony;
    if (detail.decision) e.decision = detail.decision;
  }
  return e;
}

/** An event's detail column: "" when it carries nothing beyond its delegation. */
export function eventDetailJson(detail: EventDetail): string {
  return detail.ceremony || detail.decision ? JSON.stringify(detail) : "";
}

/**
 * A snapshot as stored in the event log. Snapshots written before 2026-12
 * carry an extra idpCleanupPending field, and lack endDetail and rootAcId.
 */
function snapshotFromJson(json: string): Delegation {
  const d = JSON.parse(json) as Delegation & { idpCleanupPending?: unknown };
  delete d.idpCleanupPending;
  d.endDetail ??= "";
  d.rootAcId ??= d.depth <= 1 ? d.delegatorAcId : "";
  return d;
}

/** The columns of delegation_events written with each event (audit_state "": delivery is tracked by the audit cursor). */
export const EVENT_COLUMNS = [
  "revision",
  "delegation_id",
  "delegator_did",
  "type",
  "event_time",
  "reason",
  "snapshot",
  "chronicle_cid",
  "audit_state",
  "actor",
  "detail",
] as const;

/** A ceremonies row. */
export interface CeremonyRow {
  id: string;
  delegation_id: string;
  state: string;
  command: string;
  command_hash: string;
  matched_rule: string;
  request_time: number | string;
  expire_time: number | string;
  decided_by: string;
  decide_time: number | string | null;
  reason: string;
  use_time: number | string | null;
}

export const CEREMONY_COLUMNS = [
  "id",
  "delegation_id",
  "state",
  "command",
  "command_hash",
  "matched_rule",
  "request_time",
  "expire_time",
  "decided_by",
  "decide_time",
  "reason",
  "use_time",
] as const;

export function ceremonyFromRow(r: CeremonyRow): Ceremony {
  return {
    id: r.id,
    delegationId: r.delegation_id,
    state: r.state as CeremonyState,
    command: r.command,
    commandHash: r.command_hash,
    matchedRule: r.matched_rule,
    requestTime: num(r.request_time),
    expireTime: num(r.expire_time),
    decidedBy: r.decided_by,
    decideTime: r.decide_time === null ? null : num(r.decide_time),
    reason: r.reason,
    useTime: r.use_time === null ? null : num(r.use_time),
  };
}

export function ceremonyValues(c: Ceremony): unknown[] {
  return [c.id, c.delegationId, c.state, c.command, c.commandHash, c.matchedRule, c.requestTime, c.expireTime, c.decidedBy, c.decideTime, c.reason, c.useTime];
}

/** The columns of a delegation_effects row (a retry or a refusal). */
export const EFFECT_COLUMNS = ["kind", "delegation_id", "revision", "state", "attempts", "next_attempt_time", "last_error", "create_time", "update_time"] as const;

/** What a consequence worker reads of an ending: from the event log (fresh) or the retry table, joined with its delegation. */
export interface EffectRow {
  id?: number | string;
  kind?: string;
  delegation_id: string;
  revision: number | string;
  attempts: number | string;
  create_time: number | string;
  agent_client_id: string;
  idp_object_id: string;
  idp_backend: string;
  delegated_ac_id: string;
  end_reason: string;
}

/** The number in an integer column of either driver. */
export function toNumber(v: unknown): number {
  return typeof v === "number" ? v : Number(v);
}

export function effectKindOf(v: string): EffectKind {
  if (v !== "idp_delete" && v !== "gsap_revoke") throw new Error(`unknown effect kind ${v}`);
  return v;
}
