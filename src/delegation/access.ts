/** Who may act on a delegation. */
import type { Access, Delegation, Principal } from "../domain/index.js";

/** Whether `principal` may do `access` on `d` (see Access). */
export function canAct(principal: Principal, d: Pick<Delegation, "delegatorDid" | "agentDid" | "agentClientId">, access: Access): boolean {
  if (principal.admin) return true;
  if (principal.did !== "" && (principal.did === d.delegatorDid || principal.did === d.agentDid)) return true;
  // An agent's own client credential reads and asks about its own delegation, nothing more.
  return access !== "manage" && !!principal.clientId && principal.clientId === d.agentClientId;
}

/**
 * Whether `principal` may approve or deny a ceremony of `d`: its delegator
 * (a human's DID) or an admin; never the agent, by its client or its DID.
 */
export function canDecideCeremony(principal: Principal, d: Pick<Delegation, "delegatorDid" | "agentDid">): boolean {
  if (principal.admin) return true;
  return principal.did !== "" && principal.did === d.delegatorDid && principal.did !== d.agentDid;
}
