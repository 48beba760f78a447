/**
 * The dev-mode GSAP driver (GSAP_DRIVER=dev): every delegator context is
 * active with the configured ceiling, and delegated contexts are invented
 * locally, as the prototype did without a bearer token.
 */
import type { DelegatedContext } from "../../delegation/model.js";
import type { DelegatedContextRequest, DelegatorContext, GsapClient } from "./gsap-client.js";

export interface DevGsapOptions {
  /** The ceiling every delegator holds. By default, CAP_MUTATE. */
  delegatorCeiling?: string;
}

/** Creates the dev GSAP driver. */
export function createDevGsap(options: DevGsapOptions = {}): GsapClient {
  const ceiling = options.delegatorCeiling ?? "CAP_MUTATE";
  return {
    mode: "dev",
    async describeDelegatorContext(contextId: string): Promise<DelegatorContext> {
      return { contextId, capabilityCeiling: ceiling, expireTime: null };
    },
    async requestDelegatedContext(req: DelegatedContextRequest): Promise<DelegatedContext> {
      const contextId = `ac-dev-${req.delegationId}`;
      const attributes = {
        status: "authorized",
        context_id: contextId,
        principal_did: req.agentDid,
        delegation_id: req.delegationId,
        capability_ceiling: req.capabilityCeiling,
        mode: "dev",
      };
      return {
        contextId,
        status: "authorized",
        principalDid: req.agentDid,
        delegationId: req.delegationId,
        capabilityCeiling: req.capabilityCeiling,
        expireTime: null,
        attributes,
      };
    },
    async close() {},
  };
}
