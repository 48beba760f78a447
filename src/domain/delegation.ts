/**
 * The domain model of a delegation, free of transport and storage types.
 * Times are epoch milliseconds. States and the transitions between them are
 * in lifecycle.ts.
 */
import type { DelegationState, EventType } from "./lifecycle.js";

/** One delegation as stored. */
export interface Delegation {
  id: string;
  state: DelegationState;
  agentType: string;
  agentModel: string;
  agentDid: string;
  agentClientId: string;
  /** The identity provider's own id for the agent (Keycloak client UUID, Entra object id). */
  idpObjectId: string;
  idpBackend: string;
  delegatorDid: string;
  delegatorAcId: string;
  delegatedAcId: string;
  /** The delegated access context GSAP returned, as JSON. */
  delegatedAc: DelegatedContext | null;
  capabilityCeiling: string;
  ceremonyRequiredFor: string[];
  prohibitedCommands: string[];
  inheritCorpus: boolean;
  inheritContexts: boolean;
  accordTemplate: string;
  maxCommands: number;
  commandsExecuted: number;
  depth: number;
  createTime: number;
  updateTime: number;
  expireTime: number;
  endTime: number | null;
  /** A machine code (EndReason); "" while live. */
  endReason: string;
  /** The words of whoever ended it (a revoking caller's reason); "" when none. */
  endDetail: string;
  /**
   * The access context GSAP issued to the human at the root of the chain
   * (the delegator's own context for a delegation made by a human; the
   * root's for one made from a delegated context). Its live state at GSAP
   * governs the whole chain.
   */
  rootAcId: string;
  chronicleCid: string;
}

/** The delegated access context GSAP issued for the agent. */
export interface DelegatedContext {
  contextId: string;
  status: string;
  principalDid: string;
  delegationId: string;
  capabilityCeiling: string;
  expireTime: number | null;
  /** GSAP's whole answer. */
  attributes: Record<string, unknown>;
}

/** One entry of the event log. */
export interface DelegationEvent {
  revision: bigint;
  type: EventType;
  delegation: Delegation;
  eventTime: number;
  /** A machine code: the end reason of an ending, the state change of a ceremony. */
  reason: string;
  /**
   * Who caused it: a DID, or `client:<id>` for a service principal without
   * one; "" for the broker itself (expiry, limits, its own checks).
   */
  actor: string;
  /** A ceremony event's ceremony, after the change. */
  ceremony?: Ceremony;
  /** A COMMAND_DECIDED event's decision. */
  decision?: DecisionRecord;
  /**
   * Content id of its audit record, stored with CREATED events (the
   * delegation names it); empty for others, whose id the audit sink computes
   * from the event (it is a pure function of it).
   */
  chronicleCid: string;
}

/** What the agent identity is known as in the identity provider. */
export interface AgentPrincipal {
  did: string;
  clientId: string;
  displayName: string;
}

/** The answer to CreateDelegation (kept for idempotent replay without the secret). */
export interface CreateResult {
  delegation: Delegation;
  agentPrincipal: AgentPrincipal;
  /** Null while GSAP's approval is pending. */
  delegatedAc: DelegatedContext | null;
  agentCredential: { clientId: string; clientSecret: string };
  /** This answers a retry of a request_id: the first answer, replayed. */
  replayed: boolean;
  /** The secret was rotated for this replay: every earlier one stopped working. */
  credentialRotated: boolean;
  /** GSAP's approval flow is still deciding: the delegation is REQUESTED, without a credential yet. */
  approvalPending: boolean;
}

export type CommandDecision = "ALLOW" | "DENY" | "CEREMONY_REQUIRED";

export interface AuthorizeResult {
  decision: CommandDecision;
  reason: string;
  commandsRemaining: number;
  matchedRule: string;
  /** CEREMONY_REQUIRED: the ceremony to approve; ALLOW of an approved command: the approval used. */
  ceremonyId: string;
}

export type CeremonyState = "PENDING" | "APPROVED" | "DENIED" | "EXPIRED" | "USED";

/** A human's approval of one command of one delegation. */
export interface Ceremony {
  id: string;
  delegationId: string;
  state: CeremonyState;
  /** The command line the agent asked to run. */
  command: string;
  /** SHA-256 (hex) of the command: what an approval is bound to and the audit log records. */
  commandHash: string;
  /** The ceremony entry it matched. */
  matchedRule: string;
  requestTime: number;
  /** It must be approved, and the approval used, before this. */
  expireTime: number;
  /** Who approved or denied it (DID or client:<id>); "" until then. */
  decidedBy: string;
  decideTime: number | null;
  /** The approver's words, or why it expired. */
  reason: string;
  useTime: number | null;
}

/** One AuthorizeCommand decision, as the audit log records it. */
export interface DecisionRecord {
  decision: CommandDecision;
  reason: string;
  matchedRule: string;
  commandHash: string;
  /** Only with AUDIT_COMMANDS_IN_CLEAR. */
  command?: string;
  ceremonyId?: string;
}

/** The caller, as established by authentication. */
export interface Principal {
  /** The caller's DID; empty when the credential carries none (an agent, the dev operator). */
  did: string;
  /** May act on every delegation (the GSAP broker's service principal). */
  admin: boolean;
  /**
   * The OAuth client the caller's token was issued to (azp, client_id or
   * appid); an agent authenticating with its own credential is recognised by
   * it equalling its delegation's agent_client_id. Empty when unknown.
   */
  clientId?: string;
}

/**
 * How a principal is named as the actor of an event: its DID, else
 * `client:<id>` (a service principal or an agent), else `admin` (the dev
 * operator) or "" (nobody known).
 */
export function actorOf(p: Principal): string {
  if (p.did !== "") return p.did;
  if (p.clientId) return `client:${p.clientId}`;
  return p.admin ? "admin" : "";
}

/**
 * What a caller wants to do with a delegation:
 * - `read`: see it (Get, Watch) — delegator, its agent, admin;
 * - `command`: AuthorizeCommand — delegator, its agent, admin;
 * - `manage`: revoke it, or delegate on from it — delegator (a human, or in
 *   dev mode the agent's DID for nested delegation), admin; never the agent's client credential.
 */
export type Access = "read" | "command" | "manage";

/** Commands the delegation may still run. */
export function commandsRemaining(d: Delegation): number {
  return Math.max(0, d.maxCommands - d.commandsExecuted);
}
