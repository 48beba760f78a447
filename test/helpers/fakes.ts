/** In-process test doubles for the registrar and GSAP interfaces, with switchable failures. */
import { createDevGsap } from "../../src/clients/gsap/dev-gsap.js";
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
    listAgents: () => inner.listAgents(),
    close: () => inner.close(),
  };
  return { registrar, state };
}

/** The dev GSAP whose delegated-context request can be made to fail. */
export function flakyGsap(ceiling = "CAP_MUTATE") {
  const inner = createDevGsap({ delegatorCeiling: ceiling });
  const state = { failDelegate: false, requests: 0 };
  const gsap: GsapClient = {
    mode: "dev",
    describeDelegatorContext: (id, did) => inner.describeDelegatorContext(id, did),
    async requestDelegatedContext(req) {
      state.requests++;
      if (state.failDelegate) throw new Error("GSAP answered 500");
      return inner.requestDelegatedContext(req);
    },
    close: () => inner.close(),
  };
  return { gsap, state };
}
