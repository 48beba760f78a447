/**
 * The dev-mode registrar: invents credentials and registers nothing. Selected
 * explicitly with AGENT_REGISTRAR=stub, or by `auto` when no IdP is configured.
 */
import { randomBytes } from "node:crypto";
import type { AgentIdentity, AgentIdentityRef, AgentRegistrar, RegisterAgentRequest } from "../registrar.js";

const secret = () => `stub-secret-${randomBytes(24).toString("base64url")}`;

/** Creates the stub registrar. It keeps the identities it "registered" so tests can look. */
export function createStubRegistrar(): AgentRegistrar & { readonly registered: ReadonlyMap<string, string> } {
  const registered = new Map<string, string>();
  return {
    backend: "stub",
    registered,
    async registerAgent(req: RegisterAgentRequest): Promise<AgentIdentity> {
      const clientId = `stub-agent-${req.agentType}-${req.delegationId}`;
      registered.set(req.delegationId, clientId);
      return {
        clientId,
        clientSecret: secret(),
        objectId: req.delegationId,
        displayName: req.displayName,
      };
    },
    async rotateSecret(): Promise<string | undefined> {
      return secret();
    },
    async deleteAgent(ref: AgentIdentityRef): Promise<void> {
      registered.delete(ref.delegationId);
    },
    async *listAgents() {
      for (const [delegationId, clientId] of registered) yield { delegationId, clientId, objectId: delegationId };
    },
    async close() {},
  };
}
