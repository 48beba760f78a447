/**
 * Finding the agent identity a prototype delegation registered, so a live
 * delegation is imported only while its identity still exists.
 *
 * The registrar's own listing (`listAgents`) sees every identity tagged the
 * way this broker tags them. The prototype's Entra applications carry the
 * same tags (`governed:true`, `delegation_id:<id>`), so the listing finds
 * them; the prototype's Keycloak clients do not carry this broker's
 * `llm_broker_governed` attribute, so they are found by their clientId
 * instead (keycloak-client-lookup.ts).
 */
import type { AgentIdentityRef, AgentRegistrar } from "../registrars/registrar.js";

/** What is known of a prototype delegation's identity. */
export interface IdentityQuery {
  delegationId: string;
  /** The prototype's agent_keycloak_client_id ("" when it recorded none). */
  clientId: string;
}

/** A place identities can be looked up. */
export interface IdentityLookup {
  /** Where it looks, for the report: keycloak, entra, stub. */
  readonly name: string;
  /** The identity of this delegation, if it exists: tagged with its id, or (when tagged at all) not with another's. */
  find(query: IdentityQuery): Promise<AgentIdentityRef | undefined>;
  close?(): Promise<void>;
}

/**
 * The registrar's listing, read once (on the first lookup) and indexed by
 * delegation id and by clientId. An identity found by one must not
 * contradict the other.
 */
export function registrarLookup(registrar: AgentRegistrar): IdentityLookup {
  let index: Promise<{ byDelegation: Map<string, AgentIdentityRef>; byClient: Map<string, AgentIdentityRef> }> | undefined;
  const build = async () => {
    const byDelegation = new Map<string, AgentIdentityRef>();
    const byClient = new Map<string, AgentIdentityRef>();
    for await (const ref of registrar.listAgents()) {
      if (ref.delegationId) byDelegation.set(ref.delegationId, ref);
      if (ref.clientId) byClient.set(ref.clientId, ref);
    }
    return { byDelegation, byClient };
  };
  return {
    name: registrar.backend,
    async find(q) {
      index ??= build();
      const { byDelegation, byClient } = await index;
      const tagged = byDelegation.get(q.delegationId);
      if (tagged && (tagged.clientId === "" || q.clientId === "" || tagged.clientId === q.clientId)) return tagged;
      const named = q.clientId ? byClient.get(q.clientId) : undefined;
      if (named && (named.delegationId === "" || named.delegationId === q.delegationId)) return { ...named, delegationId: q.delegationId };
      return undefined;
    },
  };
}

/** Tries each lookup in turn; the first that finds the identity answers. */
export function firstFound(lookups: readonly IdentityLookup[]): IdentityLookup {
  return {
    name: [...new Set(lookups.map((l) => l.name))].join("+"),
    async find(q) {
      for (const l of lookups) {
        const found = await l.find(q);
        if (found) return found;
      }
      return undefined;
    },
  };
}
