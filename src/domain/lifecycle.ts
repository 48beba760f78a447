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

/** Events of the delegation's own lifecycle: its creation and its ending. */
export type LifecycleEventType = "CREATED" | "REVOKED" | "EXPIRED" | "FAILED" | "COMMAND_LIMIT_REACHED";

/** Events of a ceremony (human approval of one command) of the delegation. */
export type CeremonyEventType = "CEREMONY_REQUESTED" | "CEREMONY_APPROVED" | "CEREMONY_DENIED" | "CEREMONY_EXPIRED" | "CEREMONY_USED";

/**
 * Every kind of event in the log. COMMAND_DECIDED (an AuthorizeCommand
 * decision, recorded as AUDIT_COMMANDS asks) goes to the audit log only, not
 * to Watch streams.
 */
export type EventType = LifecycleEventType | CeremonyEventType | "COMMAND_DECIDED";

export const ENDING_EVENT_TYPES: readonly EventType[] = ["REVOKED", "EXPIRED", "FAILED", "COMMAND_LIMIT_REACHED"];

/** Whether an event of this type ends its delegation (and so has consequences). */
export function isEndingEvent(type: EventType): boolean {
  return type === "REVOKED" || type === "EXPIRED" || type === "FAILED" || type === "COMMAND_LIMIT_REACHED";
}

/** Whether Watch streams carry events of this type. */
export function isWatchedEvent(type: EventType): boolean {
  return type !== "COMMAND_DECIDED";
}

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

/**
 * Why a delegation ended: a stable machine code. A caller's own words go to
 * the delegation's end_detail, never here.
 */
export const EndReason = {
  /** RevokeDelegation. */
  manualRevocation: "manual_revocation",
  ttlElapsed: "ttl_elapsed",
  commandLimit: "command_limit",
  /** RevokeDelegatorContext, or GSAP saying the delegator's context is no longer active. */
  delegatorAcRevoked: "delegator_ac_revoked",
  /** GSAP lowered the delegator's ceiling below the delegation's. */
  delegatorCeilingLowered: "delegator_ceiling_lowered",
  parentEnded: "parent_delegation_ended",
  creationFailed: "creation_failed",
  creationInterrupted: "creation_interrupted",
  /** GSAP's approval flow denied the delegated context. */
  gsapDenied: "gsap_approval_denied",
  /** GSAP's approval flow did not answer within GSAP_APPROVAL_TIMEOUT_SECONDS. */
  gsapApprovalTimeout: "gsap_approval_timeout",
  callerGone: "caller_gone",
  auditUnavailable: "audit_unavailable",
  /** Imported from the prototype with no identity left in the IdP. */
  identityMissing: "identity_missing",
} as const;

export type EndReasonCode = (typeof EndReason)[keyof typeof EndReason];

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
