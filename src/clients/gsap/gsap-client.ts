/**
 * The GSAP governance broker, as the delegation use cases need it: what a
 * delegator's access context allows, and a delegated context for the agent.
 */
import type { DelegatedContext } from "../../delegation/model.js";

/** The delegator's own access context as GSAP knows it. */
export interface DelegatorContext {
  contextId: string;
  capabilityCeiling: string;
  /** When it ends, if it does. */
  expireTime: number | null;
}

export interface DelegatedContextRequest {
  delegatorAcId: string;
  agentDid: string;
  delegationId: string;
  capabilityCeiling: string;
  ttlMs: number;
  accordTemplate: string;
}

export interface GsapClient {
  readonly mode: "dev" | "http";
  /** Looks up the delegator's access context; FAILED_PRECONDITION if it is not active. */
  describeDelegatorContext(contextId: string, delegatorDid: string): Promise<DelegatorContext>;
  /** Obtains the delegated access context on the agent's behalf. */
  requestDelegatedContext(request: DelegatedContextRequest): Promise<DelegatedContext>;
  close(): Promise<void>;
}
