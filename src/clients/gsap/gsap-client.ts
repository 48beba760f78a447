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

/**
 * GSAP answered a delegated-context request with its approval flow (status
 * "pending"): a human must approve it there first. Thrown by
 * requestDelegatedContext and pollApproval; poll again with `pollToken`.
 */
export class ApprovalPending extends Error {
  override name = "ApprovalPending";
  constructor(readonly pollToken: string) {
    super("GSAP's approval of the delegated context is pending");
  }
}

export interface GsapClient {
  readonly mode: "dev" | "http";
  /** Looks up the delegator's access context; FAILED_PRECONDITION if it is not active. */
  describeDelegatorContext(contextId: string, delegatorDid: string): Promise<DelegatorContext>;
  /**
   * Obtains the delegated access context on the agent's behalf; throws
   * ApprovalPending when GSAP's approval flow must run first.
   */
  requestDelegatedContext(request: DelegatedContextRequest): Promise<DelegatedContext>;
  /**
   * Asks how a pending approval went: the context once authorized;
   * ApprovalPending while it is not decided; FAILED_PRECONDITION GSAP_DENIED
   * when it was denied (or GSAP no longer knows it).
   */
  pollApproval(pollToken: string, request: DelegatedContextRequest): Promise<DelegatedContext>;
  /**
   * Revokes a delegated context the broker obtained, because its delegation
   * ended (`reason` is the end reason). Idempotent: a context GSAP no longer
   * knows counts as revoked. Throws an UpstreamError that says whether to retry.
   */
  revokeContext(contextId: string, reason: string, options?: { delegationId?: string }): Promise<void>;
  close(): Promise<void>;
}
