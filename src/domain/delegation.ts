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
  endReason: string;
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
  reason: string;
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
  delegatedAc: DelegatedContext;
  agentCredential: { clientId: string; clientSecret: string };
  /** This answers a retry of a request_id: the first answer, replayed. */
  replayed: boolean;
  /** The secret was rotated for this replay: every earlier one stopped working. */
  credentialRotated: boolean;
}

export type CommandDecision = "ALLOW" | "DENY" | "CEREMONY_REQUIRED";

export interface AuthorizeResult {
  decision: CommandDecision;
  reason: string;
  commandsRemaining: number;
  matchedRule: string;
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
