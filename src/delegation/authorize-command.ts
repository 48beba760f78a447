/**
 * AuthorizeCommand: "may this agent run this command now?". Prohibited →
 * DENY; a ceremony entry → CEREMONY_REQUIRED with a new ceremony for the
 * delegator to approve (uncounted); a command with an approved ceremony →
 * ALLOW once; else the command is counted.
 *
 * The common ALLOW is one conditional update: the rules come from a cache of
 * what never changes once a delegation exists, and the update itself checks
 * that the delegation is active, unexpired and within budget, and (strict
 * live checks) that GSAP vouched for its root context recently enough. The
 * command that exhausts the budget ends the delegation in the same
 * transaction. Decisions are recorded in the audit log as AUDIT_COMMANDS
 * asks: refusals by default, everything, or nothing.
 */
import { createHash } from "node:crypto";
import {
  type AuthorizeResult,
  type Ceremony,
  type CommandDecision,
  type DecisionRecord,
  type Delegation,
  EndReason,
  type Principal,
  actorOf,
  commandsRemaining,
  delegationNotFound,
} from "../domain/index.js";
import type { CountOptions, CountResult } from "../store/store.js";
import { canAct } from "./access.js";
import { CommandMatcher } from "./command-matcher.js";
import type { UseCaseDeps } from "./deps.js";
import { newCeremonyId } from "./ids.js";
import * as v from "./validate.js";

/**
 * What AuthorizeCommand needs of a delegation and that never changes once it
 * exists, so a cached copy is right on every replica without invalidation.
 */
interface CommandPolicy {
  delegatorDid: string;
  agentDid: string;
  agentClientId: string;
  rootAcId: string;
  expireTime: number;
  prohibited: CommandMatcher;
  ceremony: CommandMatcher;
}

/** Delegations whose command policy is kept in memory (about 1 KiB each). */
const POLICY_CACHE_SIZE = 10_000;

export interface AuthorizeInput {
  delegationId: string;
  command: string;
  /** An approved ceremony for this command. */
  ceremonyId?: string;
}

export function commandHash(command: string): string {
  return createHash("sha256").update(command).digest("hex");
}

export class AuthorizeCommand {
  private readonly clock: () => number;
  private readonly policies = new Map<string, CommandPolicy>();

  constructor(private readonly deps: UseCaseDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  async run(principal: Principal, input: AuthorizeInput): Promise<AuthorizeResult> {
    const id = v.delegationId("delegation_id", input.delegationId);
    const command = v.command("command", input.command);
    const ceremonyId = v.ceremonyId("ceremony_id", input.ceremonyId ?? "");
    const policy = await this.policyFor(principal, id);
    const now = this.clock();
    const prohibited = policy.prohibited.match(command);
    if (prohibited !== undefined) return this.refuse(principal, id, command, now, { decision: "DENY", reason: "prohibited_command", matchedRule: prohibited });
    if (ceremonyId !== "") return this.withApproval(principal, id, command, ceremonyId, now);
    const ceremony = policy.ceremony.match(command);
    if (ceremony !== undefined) return this.requestCeremony(principal, id, command, ceremony, now);
    if (policy.expireTime <= now) return this.refuse(principal, id, command, now);

    const counted = await this.deps.store.countCommand(id, now, this.countOptions(principal, command, now, { decision: "ALLOW", reason: "allowed", matchedRule: "" }));
    const allowed = this.allowed(id, counted, "");
    return allowed ?? this.refuse(principal, id, command, now);
  }

  /** ALLOW of a counted command, or undefined when it was not counted. */
  private allowed(id: string, counted: CountResult, ceremonyId: string): AuthorizeResult | undefined {
    if (counted.kind === "counted") {
      this.deps.reads?.counted(id, counted.commandsExecuted);
      return { decision: "ALLOW", reason: "allowed", commandsRemaining: counted.maxCommands - counted.commandsExecuted, matchedRule: "", ceremonyId };
    }
    if (counted.kind === "limit_reached") {
      this.deps.log.info({ delegationId: id, cascaded: counted.ended.length - 1 }, "delegation reached its command limit");
      return { decision: "ALLOW", reason: "allowed_last_command", commandsRemaining: 0, matchedRule: "", ceremonyId };
    }
    return undefined;
  }

  /** The checks and records a counted command comes with. */
  private countOptions(principal: Principal, command: string, now: number, allow: Omit<DecisionRecord, "commandHash">): CountOptions {
    const { settings } = this.deps;
    const options: CountOptions = {};
    if (settings.gsapChecks.stalePolicy === "strict") options.contextFreshSince = now - settings.gsapChecks.contextMaxStalenessMs;
    if (settings.auditCommands === "all") options.record = { decision: this.record(allow, command), actor: actorOf(principal) };
    return options;
  }

  /** The approved command, allowed once: the approval is used in the transaction that counts it. */
  private async withApproval(principal: Principal, id: string, command: string, ceremonyId: string, now: number): Promise<AuthorizeResult> {
    const hash = commandHash(command);
    const options = this.countOptions(principal, command, now, { decision: "ALLOW", reason: "allowed", matchedRule: "", ceremonyId });
    options.ceremony = { id: ceremonyId, commandHash: hash, actor: actorOf(principal) };
    const counted = await this.deps.store.countCommand(id, now, options);
    const allowed = this.allowed(id, counted, ceremonyId);
    if (allowed) {
      this.deps.log.info({ delegationId: id, ceremonyId }, "approved command allowed");
      return allowed;
    }
    if (counted.kind === "ceremony_refused") {
      // An ended delegation says so first (its open ceremonies expire with it).
      const d = await this.deps.store.get(id);
      if (!d) throw delegationNotFound(id);
      const reason = stateRefusal(d, now) ?? approvalRefusal(counted.ceremony, id, hash, now);
      return this.refuse(principal, id, command, now, { decision: "DENY", reason, matchedRule: "", ceremonyId }, d);
    }
    return this.refuse(principal, id, command, now);
  }

  /** A new PENDING ceremony for the command, announced with its event; the command is not counted. */
  private async requestCeremony(principal: Principal, id: string, command: string, rule: string, now: number): Promise<AuthorizeResult> {
    const { store, settings, log } = this.deps;
    const d = await store.get(id);
    if (!d) throw delegationNotFound(id);
    const refusal = stateRefusal(d, now);
    if (refusal) return this.refuse(principal, id, command, now, { decision: "DENY", reason: refusal, matchedRule: "" }, d);
    const ceremony: Ceremony = {
      id: newCeremonyId(now),
      delegationId: id,
      state: "PENDING",
      command,
      commandHash: commandHash(command),
      matchedRule: rule,
      requestTime: now,
      // Never beyond the delegation itself.
      expireTime: Math.min(now + settings.ceremony.ttlMs, d.expireTime),
      decidedBy: "",
      decideTime: null,
      reason: "",
      useTime: null,
    };
    const result: AuthorizeResult = {
      decision: "CEREMONY_REQUIRED",
      reason: "ceremony_required",
      commandsRemaining: commandsRemaining(d),
      matchedRule: rule,
      ceremonyId: ceremony.id,
    };
    const decision = settings.auditCommands === "none" ? undefined : this.record(result, command);
    await store.requestCeremony(ceremony, d, actorOf(principal), decision);
    log.info({ delegationId: id, ceremonyId: ceremony.id, rule }, "ceremony requested");
    return result;
  }

  /**
   * A DENY explained from the current row (or the given decision), recorded
   * when AUDIT_COMMANDS asks for refusals.
   */
  private async refuse(
    principal: Principal,
    id: string,
    command: string,
    now: number,
    given?: { decision: CommandDecision; reason: string; matchedRule: string; ceremonyId?: string },
    row?: Delegation,
  ): Promise<AuthorizeResult> {
    const { store, settings } = this.deps;
    const d = row ?? (await store.get(id));
    if (!d) throw delegationNotFound(id);
    const reason = given?.reason ?? stateRefusal(d, now) ?? (await this.contextRefusal(d, now)) ?? denyReason(d, now);
    const result: AuthorizeResult = {
      decision: "DENY",
      reason,
      commandsRemaining: commandsRemaining(d),
      matchedRule: given?.matchedRule ?? "",
      ceremonyId: given?.ceremonyId ?? "",
    };
    if (settings.auditCommands !== "none") await store.recordDecision(d, this.record(result, command), actorOf(principal), now);
    return result;
  }

  /** Strict live checks: the reason an ACTIVE delegation's command is refused when GSAP has not vouched for its root lately. */
  private async contextRefusal(d: Delegation, now: number): Promise<string | undefined> {
    const checks = this.deps.settings.gsapChecks;
    if (checks.stalePolicy !== "strict" || d.state !== "ACTIVE" || d.commandsExecuted >= d.maxCommands) return undefined;
    const ctx = await this.deps.store.getDelegatorContext(d.rootAcId);
    if (!ctx || ctx.checkedTime < now - checks.contextMaxStalenessMs) return "delegator_context_unverified";
    return undefined;
  }

  private record(r: Pick<AuthorizeResult, "decision" | "reason" | "matchedRule"> & { ceremonyId?: string }, command: string): DecisionRecord {
    return {
      decision: r.decision,
      reason: r.reason,
      matchedRule: r.matchedRule,
      commandHash: commandHash(command),
      ...(this.deps.settings.auditCommandsInClear ? { command } : {}),
      ...(r.ceremonyId ? { ceremonyId: r.ceremonyId } : {}),
    };
  }

  /** The immutable rules of a delegation, cached; NOT_FOUND if the caller may not act on it. */
  private async policyFor(principal: Principal, id: string): Promise<CommandPolicy> {
    let policy = this.policies.get(id);
    if (!policy) {
      const d = await (this.deps.reads ?? this.deps.store).get(id);
      if (!d) throw delegationNotFound(id);
      policy = {
        delegatorDid: d.delegatorDid,
        agentDid: d.agentDid,
        agentClientId: d.agentClientId,
        rootAcId: d.rootAcId,
        expireTime: d.expireTime,
        prohibited: new CommandMatcher(d.prohibitedCommands),
        ceremony: new CommandMatcher(d.ceremonyRequiredFor),
      };
      // Not while REQUESTED: the agent's client id is set only when it becomes ACTIVE.
      if (d.state !== "REQUESTED") {
        // Oldest first out: Map keeps insertion order.
        if (this.policies.size >= POLICY_CACHE_SIZE) this.policies.delete(this.policies.keys().next().value!);
        this.policies.set(id, policy);
      }
    }
    if (!canAct(principal, policy, "command")) throw delegationNotFound(id);
    return policy;
  }
}

/** Why a delegation takes no command now, if its state or time says so. */
function stateRefusal(d: Delegation, now: number): string | undefined {
  if (d.state !== "ACTIVE") return denyReason(d);
  if (d.expireTime <= now) return "delegation_expired";
  return undefined;
}

function denyReason(d: Delegation, now?: number): string {
  if (d.state === "ACTIVE") {
    if (now !== undefined && d.expireTime <= now) return "delegation_expired";
    if (d.commandsExecuted >= d.maxCommands) return "command_limit";
    return "delegation_busy";
  }
  if (d.state === "EXPIRED" && d.endReason === EndReason.commandLimit) return "command_limit";
  return `delegation_${d.state.toLowerCase()}`;
}

/** Why an approval could not be used for this command (another delegation's ceremony is as good as none). */
function approvalRefusal(c: Ceremony | null, delegationId: string, hash: string, now: number): string {
  if (!c || c.delegationId !== delegationId) return "ceremony_not_found";
  switch (c.state) {
    case "PENDING":
      return c.expireTime <= now ? "ceremony_expired" : "ceremony_pending";
    case "DENIED":
      return "ceremony_denied";
    case "EXPIRED":
      return "ceremony_expired";
    case "USED":
      return "ceremony_used";
    case "APPROVED":
      if (c.commandHash !== hash) return "ceremony_other_command";
      return c.expireTime <= now ? "ceremony_expired" : "ceremony_not_usable";
  }
}
