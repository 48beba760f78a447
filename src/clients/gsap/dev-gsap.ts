/**
 * The dev-mode GSAP driver (GSAP_DRIVER=dev): every delegator context is
 * active with the configured ceiling, and delegated contexts are invented
 * locally, as the prototype did without a bearer token. Revocations are
 * recorded (the most recent ones), so tests and the curious can see them.
 */
import type { DelegatedContext } from "../../domain/index.js";
import type { DelegatedContextRequest, DelegatorContext, GsapClient } from "./gsap-client.js";
import { Fifo } from "../../util/fifo.js";

export interface DevGsapOptions {
  /** The ceiling every delegator holds. By default, CAP_MUTATE. */
  delegatorCeiling?: string;
  /** Revocations remembered (oldest forgotten first). By default, 10,000. */
  keepRevocations?: number;
}

/** A revocation the dev driver recorded. */
export interface DevRevocation {
  contextId: string;
  reason: string;
  delegationId: string;
  time: number;
}

/** The dev driver, with what it recorded. */
export interface DevGsap extends GsapClient {
  /** Recent revocations by context id, oldest first. */
  readonly revoked: ReadonlyMap<string, DevRevocation>;
}

/** Creates the dev GSAP driver. */
export function createDevGsap(options: DevGsapOptions = {}): DevGsap {
  const ceiling = options.delegatorCeiling ?? "CAP_MUTATE";
  const keep = options.keepRevocations ?? 10_000;
  const revoked = new Map<string, DevRevocation>();
  // The oldest first (not the Map's own order: see Fifo).
  const order = new Fifo<string>();
  return {
    mode: "dev",
    revoked,
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
    // Dev mode has no approval flow: nothing is ever pending.
    async pollApproval(_pollToken: string, req: DelegatedContextRequest): Promise<DelegatedContext> {
      return this.requestDelegatedContext(req);
    },
    async revokeContext(contextId, reason, revokeOptions = {}) {
      // Idempotent like the real one: revoking again changes nothing.
      if (revoked.has(contextId)) return;
      if (revoked.size >= keep) revoked.delete(order.shift()!);
      revoked.set(contextId, { contextId, reason, delegationId: revokeOptions.delegationId ?? "", time: Date.now() });
      order.push(contextId);
    },
    async close() {},
  };
}
