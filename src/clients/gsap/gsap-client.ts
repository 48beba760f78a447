/**
 * The GSAP governance broker, as the broker needs it: what a delegator's
 * access context allows, a delegated context for the agent, and the
 * revocation of that context when the delegation ends.
 */
import type { DelegatedContext } from "../../domain/index.js";

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
  /**
   * Revokes a delegated context the broker obtained, because its delegation
   * ended (`reason` is the end reason). Idempotent: a context GSAP no longer
   * knows counts as revoked. Throws an UpstreamError that says whether to retry.
   */
  revokeContext(contextId: string, reason: string, options?: { delegationId?: string }): Promise<void>;
  close(): Promise<void>;
}
