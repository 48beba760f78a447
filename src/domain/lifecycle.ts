/**
 * The lifecycle of a delegation: its states, every transition that exists,
 * and what an ending sets in motion. The store and the use cases read this
 * table instead of keeping state lists of their own.
 *
 *   REQUESTED ──activate──▶ ACTIVE ──expire / exhaust──▶ EXPIRED
 *       │                     │
 *       ├──fail──▶ FAILED     └──revoke──▶ REVOKED
 *       └──revoke──▶ REVOKED
 */

export type DelegationState = "REQUESTED" | "ACTIVE" | "EXPIRED" | "REVOKED" | "FAILED";

export type EventType = "CREATED" | "REVOKED" | "EXPIRED" | "FAILED" | "COMMAND_LIMIT_REACHED";

export interface Transition {
  /** The transition happens only from one of these states. */
  readonly from: readonly DelegationState[];
  readonly to: DelegationState;
  /** The event appended in the same transaction. */
  readonly event: EventType;
}

/** Every state change a delegation can make, by name. */
export const TRANSITIONS = {
  /** Identity and delegated context obtained: the agent may act. */
  activate: { from: ["REQUESTED"], to: "ACTIVE", event: "CREATED" },
  /** Creation could not complete; what it made is removed again. */
  fail: { from: ["REQUESTED"], to: "FAILED", event: "FAILED" },
  /** Ended by a person, an admin, a cascade, or the broker withdrawing a grant. */
  revoke: { from: ["REQUESTED", "ACTIVE"], to: "REVOKED", event: "REVOKED" },
  /** Its TTL elapsed. */
  expire: { from: ["ACTIVE"], to: "EXPIRED", event: "EXPIRED" },
  /** Its last command was allowed. */
  exhaust: { from: ["ACTIVE"], to: "EXPIRED", event: "COMMAND_LIMIT_REACHED" },
} as const satisfies Record<string, Transition>;

export type TransitionName = keyof typeof TRANSITIONS;

/** The transitions that end a delegation. */
export type EndingName = Exclude<TransitionName, "activate">;

/** States a delegation can still be ended from (it is live). */
export const LIVE_STATES: readonly DelegationState[] = ["REQUESTED", "ACTIVE"];

/** States no transition leaves. */
export const FINAL_STATES: readonly DelegationState[] = ["EXPIRED", "REVOKED", "FAILED"];

/** Whether a delegation in `state` is still live. */
export function isLiveState(state: DelegationState): boolean {
  return state === "REQUESTED" || state === "ACTIVE";
}

/** Whether `name` may move a delegation out of `state`. */
export function allows(name: TransitionName, state: DelegationState): boolean {
  return (TRANSITIONS[name].from as readonly DelegationState[]).includes(state);
}

/** End reasons the broker itself sets; a revoking caller may give their own. */
export const EndReason = {
  manualRevocation: "manual_revocation",
  ttlElapsed: "ttl_elapsed",
  commandLimit: "command_limit",
  delegatorAcRevoked: "delegator_ac_revoked",
  parentEnded: "parent_delegation_ended",
  creationFailed: "creation_failed",
  creationInterrupted: "creation_interrupted",
  callerGone: "caller_gone",
  auditUnavailable: "audit_unavailable",
} as const;

/**
 * The consequences of an ending, outside the broker, derived from its event
 * and retried until done.
 * - `idp_delete`: delete the agent identity from the identity provider;
 * - `gsap_revoke`: revoke the delegated access context at GSAP.
 */
export type EffectKind = "idp_delete" | "gsap_revoke";

export const EFFECT_KINDS: readonly EffectKind[] = ["idp_delete", "gsap_revoke"];

/**
 * What has to happen elsewhere once a delegation ended. Every ending deletes
 * the identity (one may exist even if the delegation never became ACTIVE: it
 * is then found by its delegation id); a delegated context is revoked only
 * if GSAP issued one.
 */
export function consequencesOf(ended: { delegatedAcId: string }): EffectKind[] {
  return ended.delegatedAcId === "" ? ["idp_delete"] : ["idp_delete", "gsap_revoke"];
}
