/** What the use cases are built from: the store and the external systems, behind their interfaces. */
import type { GsapClient } from "../clients/gsap/gsap-client.js";
import { BrokerError, type Delegation, UpstreamError } from "../domain/index.js";
import type { Logger } from "../logging.js";
import type { AgentRegistrar } from "../registrars/registrar.js";
import type { DelegationStore } from "../store/store.js";
import type { PolicySettings } from "./policy.js";

export interface UseCaseSettings extends PolicySettings {
  agentDidPrefix: string;
  idempotencyTtlMs: number;
  createInflightMs: number;
  eventRetentionMs: number;
  ceremony: { ttlMs: number };
  /** Which AuthorizeCommand decisions are recorded (COMMAND_DECIDED events). */
  auditCommands: "none" | "refusals" | "all";
  auditCommandsInClear: boolean;
  gsapChecks: {
    contextCacheMs: number;
    contextMaxStalenessMs: number;
    stalePolicy: "strict" | "lenient";
    approvalTimeoutMs: number;
    approvalPollMaxMs: number;
  };
}

/**
 * Fail-closed auditing, as the use cases see it. When `failClosed` is set, a
 * delegation is granted only once its CREATED event is durably recorded in
 * the audit log; ending authority (revoke, expire, cascade) is never refused.
 */
export interface AuditGate {
  failClosed: boolean;
  timeoutMs: number;
  /**
   * Whether the audit sink can record now. While its last delivery failed,
   * this tries once more (within `timeoutMs`), so a recovered sink is noticed
   * at once instead of at the next backoff.
   */
  ready(): Promise<boolean>;
  /** True once every event up to `revision` is recorded, false after `timeoutMs`. */
  waitDelivered(revision: bigint, timeoutMs: number): Promise<boolean>;
}

/**
 * Where GetDelegation (and AuthorizeCommand's rules) read a delegation, when
 * not the store itself: a read model kept in memory, told of each command
 * counted here so its answers show it at once.
 */
export interface DelegationReads {
  get(id: string): Promise<Delegation | null>;
  counted(id: string, commandsExecuted: number): void;
}

export interface UseCaseDeps {
  store: DelegationStore;
  /** By default, the store. */
  reads?: DelegationReads;
  registrar: AgentRegistrar;
  gsap: GsapClient;
  settings: UseCaseSettings;
  log: Logger;
  /** By default, Date.now. */
  clock?: () => number;
  audit?: AuditGate;
}

/**
 * A failure of an external system as the caller will see it: a driver's
 * UpstreamError or a domain answer as they are; anything else (a library
 * error, a bug in a fake) as the system being unavailable.
 */
export function upstreamFailure(system: string, name: string, err: unknown): Error {
  if (err instanceof UpstreamError || err instanceof BrokerError) return err;
  return new UpstreamError(system, "unreachable", `${name} failed; nothing was created`, {
    reason: `${system.toUpperCase()}_UNAVAILABLE`,
    cause: err,
  });
}
