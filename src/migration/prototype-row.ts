/**
 * One prototype row, read and checked against this broker's rules. A live
 * row must satisfy every rule a new delegation does (the field limits of
 * validate.ts, the capability order, the rule-list limits); any violation
 * makes it invalid, with every problem named. Ended rows are not imported
 * (prototype-import.ts says why), so only what their report needs is read.
 *
 * Prototype → Delegation, field by field:
 *   delegation_id            id (kept: see PROTOTYPE_ID)
 *   status                   active → ACTIVE; revoked / expired / failed / requested: ended
 *   agent_type, agent_model  agentType, agentModel (NULL → "")
 *   agent_did                agentDid
 *   agent_keycloak_client_id agentClientId (the Keycloak clientId, or the Entra appId)
 *   delegator_did            delegatorDid
 *   delegator_ac_id          delegatorAcId (and rootAcId for a delegation a human made)
 *   delegated_ac_id          delegatedAcId
 *   capability_ceiling       capabilityCeiling
 *   ceremony_required_for    ceremonyRequiredFor (stored comma-joined)
 *   max_commands             maxCommands
 *   commands_executed        commandsExecuted
 *   created_at, expires_at   createTime, expireTime (naive UTC)
 *   revoked_at, revoke_reason  end time and words of an ended row (report only)
 * Not in the prototype's table, so defaults: prohibitedCommands [] (the
 * prototype accepted but never stored them), inheritCorpus/inheritContexts
 * true and accordTemplate "ai-delegation-standard" (the prototype's defaults;
 * it always sent that template to GSAP). chronicle_cid names the prototype's
 * own CREATED record; the import writes a CREATED event of its own, whose
 * record the delegation then names.
 */
import { BrokerError } from "../domain/index.js";
import { words } from "../delegation/command-matcher.js";
import { MAX_RULE_LENGTH, MAX_RULES } from "../delegation/policy.js";
import * as v from "../delegation/validate.js";
import { type PrototypeRecord, parsePrototypeTime } from "./prototype-db.js";

/** The prototype's ids: `del-` and the first 8 hex digits of a UUID4. */
export const PROTOTYPE_ID = /^del-[0-9a-f]{8}$/;
const BROKER_ID = /^del_[0-9A-Z]{26}$/;

/** Statuses of rows that ended in the prototype (it only ever wrote active, revoked and expired). */
const ENDED_STATUSES = new Set(["revoked", "expired", "failed", "requested"]);

/** A live prototype row that passed every check. */
export interface LiveRow {
  kind: "live";
  id: string;
  agentType: string;
  agentModel: string;
  agentDid: string;
  /** "" when the prototype recorded none. */
  agentClientId: string;
  delegatorDid: string;
  delegatorAcId: string;
  /** "" when GSAP returned no context id. */
  delegatedAcId: string;
  capabilityCeiling: string;
  ceremonyRequiredFor: string[];
  maxCommands: number;
  commandsExecuted: number;
  createTime: number;
  expireTime: number;
}

/** A row that ended in the prototype. */
export interface EndedRow {
  kind: "ended";
  id: string;
  status: string;
  /** revoked_at: when it ended (the prototype set it for expiries too), if readable. */
  endTime: number | undefined;
  /** revoke_reason, as the prototype wrote it ("" when none). */
  reason: string;
  delegatedAcId: string;
  expireTime: number | undefined;
}

/** A row this broker cannot take, with every problem found. */
export interface InvalidRow {
  kind: "invalid";
  /** The row's id as text ("" when it has none). */
  id: string;
  status: string;
  problems: string[];
  /** What of the row's authority may still exist elsewhere (for the report), when it was live. */
  agentClientId: string;
  delegatedAcId: string;
}

export type ReadRow = LiveRow | EndedRow | InvalidRow;

/** Reads one prototype record; `capabilityOrder` is this broker's CAPABILITY_ORDER. */
export function readRow(r: PrototypeRecord, capabilityOrder: readonly string[]): ReadRow {
  const problems: string[] = [];
  const id = typeof r.delegation_id === "string" ? r.delegation_id : r.delegation_id == null ? "" : String(r.delegation_id);
  const status = typeof r.status === "string" ? r.status : "";
  const optional = (value: unknown) => (value === null || value === undefined ? "" : typeof value === "string" ? value : String(value));

  if (ENDED_STATUSES.has(status)) {
    return {
      kind: "ended",
      id,
      status,
      endTime: parsePrototypeTime(r.revoked_at),
      reason: optional(r.revoke_reason),
      delegatedAcId: optional(r.delegated_ac_id),
      expireTime: parsePrototypeTime(r.expires_at),
    };
  }

  if (!PROTOTYPE_ID.test(id) && !BROKER_ID.test(id)) {
    problems.push(`delegation_id: "${clip(id)}" is neither a prototype id (del- and 8 hex digits) nor one of this broker's`);
  }
  if (status !== "active") problems.push(`status: "${clip(status)}" is not one the prototype wrote (active, revoked, expired)`);

  /** Runs a check of validate.ts; its INVALID_ARGUMENT becomes a problem, named by the prototype's column. */
  const check = <T>(column: string, value: unknown, fn: (field: string, s: string) => T, fallback: T): T => {
    if (value !== null && value !== undefined && typeof value !== "string") {
      problems.push(`${column}: must be text, got ${typeof value}`);
      return fallback;
    }
    try {
      return fn(column, optional(value));
    } catch (err) {
      if (err instanceof BrokerError) {
        problems.push(err.message);
        return fallback;
      }
      throw err;
    }
  };
  const agentType = check("agent_type", r.agent_type, v.agentType, "");
  const agentModel = check("agent_model", r.agent_model, (f, s) => v.text(f, s, 128), "");
  const agentDid = check("agent_did", r.agent_did, v.did, "");
  const agentClientId = check("agent_keycloak_client_id", r.agent_keycloak_client_id, (f, s) => v.identifier(f, s), "");
  const delegatorDid = check("delegator_did", r.delegator_did, v.did, "");
  const delegatorAcId = check("delegator_ac_id", r.delegator_ac_id, (f, s) => v.identifier(f, s, { required: true }), "");
  const delegatedAcId = check("delegated_ac_id", r.delegated_ac_id, (f, s) => v.identifier(f, s), "");

  const capabilityCeiling = optional(r.capability_ceiling);
  if (!capabilityOrder.includes(capabilityCeiling)) {
    problems.push(`capability_ceiling: "${clip(capabilityCeiling)}" is not one of CAPABILITY_ORDER (${capabilityOrder.join(", ")})`);
  }
  const ceremonyRequiredFor = ruleEntries("ceremony_required_for", r.ceremony_required_for, problems);

  const maxCommands = integer("max_commands", r.max_commands, 1, problems);
  const commandsExecuted = integer("commands_executed", r.commands_executed, 0, problems);
  const createTime = time("created_at", r.created_at, problems);
  const expireTime = time("expires_at", r.expires_at, problems);
  if (createTime !== undefined && expireTime !== undefined && expireTime <= createTime) {
    problems.push("expires_at: must be after created_at");
  }

  if (problems.length > 0 || maxCommands === undefined || commandsExecuted === undefined || createTime === undefined || expireTime === undefined) {
    return { kind: "invalid", id, status, problems, agentClientId: optional(r.agent_keycloak_client_id), delegatedAcId: optional(r.delegated_ac_id) };
  }
  return {
    kind: "live",
    id,
    agentType,
    agentModel,
    agentDid,
    agentClientId,
    delegatorDid,
    delegatorAcId,
    delegatedAcId,
    capabilityCeiling,
    ceremonyRequiredFor,
    maxCommands,
    commandsExecuted,
    createTime,
    expireTime,
  };
}

/** The prototype's comma-joined list, held to the limits of a new delegation's rule list; duplicates (by words) dropped. */
function ruleEntries(column: string, value: unknown, problems: string[]): string[] {
  if (value === null || value === undefined || value === "") return [];
  if (typeof value !== "string") {
    problems.push(`${column}: must be text, got ${typeof value}`);
    return [];
  }
  const entries = value.split(",").map((e) => e.trim()).filter((e) => e !== "");
  if (entries.length > MAX_RULES) problems.push(`${column}: at most ${MAX_RULES} entries, got ${entries.length}`);
  const out: string[] = [];
  const seen = new Set<string>();
  for (const [i, e] of entries.entries()) {
    if (e.length > MAX_RULE_LENGTH) problems.push(`${column}[${i}]: must be at most ${MAX_RULE_LENGTH} characters`);
    // eslint-disable-next-line no-control-regex
    else if (/[\u0000-\u001f\u007f-\u009f]/.test(e)) problems.push(`${column}[${i}]: must not contain control characters`);
    else if (words(e).length === 0) problems.push(`${column}[${i}]: "${clip(e)}" contains no word, so no command could match it`);
    else {
      const key = words(e).join(" ");
      if (!seen.has(key)) {
        seen.add(key);
        out.push(e);
      }
    }
  }
  return out;
}

function integer(column: string, value: unknown, min: number, problems: string[]): number | undefined {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    problems.push(`${column}: must be an integer, got ${value === null ? "NULL" : JSON.stringify(value)}`);
    return undefined;
  }
  if (value < min || value > 10_000_000) {
    problems.push(`${column}: must be between ${min} and 10000000, got ${value}`);
    return undefined;
  }
  return value;
}

function time(column: string, value: unknown, problems: string[]): number | undefined {
  const t = parsePrototypeTime(value);
  if (t === undefined) problems.push(`${column}: ${value === null ? "NULL" : JSON.stringify(clip(String(value)))} is not a timestamp`);
  return t;
}

/** Quoted values stay short and printable in reports. */
function clip(s: string): string {
  // eslint-disable-next-line no-control-regex
  const printable = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
  return printable.length > 80 ? `${printable.slice(0, 80)}…` : printable;
}
