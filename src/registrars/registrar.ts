/**
 * The agent identity registrar: creates and deletes the identity an agent
 * authenticates with, in Keycloak, Entra or (in dev mode) nowhere.
 */

export type IdpBackend = "keycloak" | "entra" | "stub";

export interface RegisterAgentRequest {
  delegationId: string;
  agentType: string;
  agentModel: string;
  delegatorDid: string;
  displayName: string;
  /** The credential must not outlive the delegation. */
  expireTime: number;
}

/** A registered agent identity. `clientSecret` is handed to the caller once and never stored. */
export interface AgentIdentity {
  clientId: string;
  clientSecret: string;
  /** The IdP's own id (Keycloak client UUID, Entra application object id). */
  objectId: string;
  displayName: string;
}

/** What is known of an identity to delete; `clientId` may be empty after a crash. */
export interface AgentIdentityRef {
  delegationId: string;
  clientId: string;
  objectId: string;
}

export interface AgentRegistrar {
  readonly backend: IdpBackend;
  /** Creates the identity for a delegation. */
  registerAgent(request: RegisterAgentRequest): Promise<AgentIdentity>;
  /**
   * Deletes the identity. Idempotent: an identity that is already gone counts
   * as deleted. With an empty clientId, finds it by its delegation id.
   */
  deleteAgent(ref: AgentIdentityRef): Promise<void>;
  /**
   * Replaces the identity's secret with a new one and returns it: every
   * earlier secret stops working. For a CreateDelegation retry whose first
   * answer (with the only copy of the secret) was lost. Undefined when the
   * identity has no secret of its own (an Entra Agent ID identity).
   */
  rotateSecret(ref: AgentIdentityRef): Promise<string | undefined>;
  /**
   * Every identity this broker registered that still exists, with the
   * delegation id it is tagged with (for the orphan sweep).
   */
  listAgents(): AsyncIterable<AgentIdentityRef>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}

