/** In-process test doubles for the registrar and GSAP interfaces, with switchable failures. */
import type { AuditSink } from "../../src/clients/chronicle/chronicle-client.js";
import { createDevGsap } from "../../src/clients/gsap/dev-gsap.js";
import { UpstreamError } from "../../src/domain/index.js";
import type { GsapClient } from "../../src/clients/gsap/gsap-client.js";
import type { AgentRegistrar } from "../../src/registrars/registrar.js";
import { createStubRegistrar } from "../../src/registrars/stub/stub-registrar.js";

/** A stub registrar whose register/delete can be made to fail. */
export function flakyRegistrar() {
  const inner = createStubRegistrar();
  const state = { failRegister: false, failDelete: false, deleted: [] as string[] };
  const registrar: AgentRegistrar & { registered: ReadonlyMap<string, string> } = {
    backend: "stub",
    registered: inner.registered,
    async registerAgent(req) {
      if (state.failRegister) throw new Error("connect ECONNREFUSED 127.0.0.1:1");
      return inner.registerAgent(req);
    },
    async deleteAgent(ref) {
      if (state.failDelete) throw new Error("503 Service Unavailable");
      state.deleted.push(ref.delegationId);
      return inner.deleteAgent(ref);
    },
    rotateSecret: (ref) => inner.rotateSecret(ref),
    listAgents: () => inner.listAgents(),
    close: () => inner.close(),
  };
  return { registrar, state };
}

/** The dev GSAP whose delegated-context request and revocation can be made to fail. */
export function flakyGsap(ceiling = "CAP_MUTATE") {
  const inner = createDevGsap({ delegatorCeiling: ceiling });
  const state = { failDelegate: false, failRevoke: false, delayMs: 0, requests: 0, revoked: [] as string[] };
  const gsap: GsapClient = {
    mode: "dev",
    describeDelegatorContext: (id, did) => inner.describeDelegatorContext(id, did),
    async requestDelegatedContext(req) {
      state.requests++;
      // A slow GSAP: the request answers after delayMs.
      if (state.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, state.delayMs));
      if (state.failDelegate) throw new Error("GSAP answered 500");
      return inner.requestDelegatedContext(req);
    },
    pollApproval: (token, req) => inner.pollApproval(token, req),
    async revokeContext(contextId, reason, options) {
      if (state.failRevoke) throw new UpstreamError("gsap", "status", "gsap answered 503", { status: 503 });
      state.revoked.push(contextId);
      return inner.revokeContext(contextId, reason, options);
    },
    close: () => inner.close(),
  };
  return { gsap, state };
}

/** An audit sink that records deliveries and can be switched off (outage) or made to refuse. */
export function flakyAudit() {
  const state = {
    down: false,
    refuseRevision: undefined as bigint | undefined,
    delivered: [] as { revision: bigint; type: string; delegationId: string; cid: string }[],
    attempts: 0,
  };
  const sink: AuditSink = {
    mode: "chronicle",
    async deliver(e, cid) {
      state.attempts++;
      if (state.down) throw new UpstreamError("chronicle", "unreachable", "chronicle is unreachable (ECONNREFUSED)");
      if (e.revision === state.refuseRevision) {
        throw new UpstreamError("chronicle", "rejected", "chronicle answered 400", { status: 400, reason: "CHRONICLE_REJECTED" });
      }
      state.delivered.push({ revision: e.revision, type: e.type, delegationId: e.delegation.id, cid });
    },
    async close() {},
  };
  return { sink, state };
}
