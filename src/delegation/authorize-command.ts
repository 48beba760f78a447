/**
 * AuthorizeCommand: "may this agent run this command now?". Prohibited →
 * DENY, ceremony → CEREMONY_REQUIRED (uncounted), else the command is counted.
 * The common ALLOW is one conditional update: the rules come from a cache of
 * what never changes once a delegation exists, and the update itself checks
 * that the delegation is active, unexpired and within budget. The command
 * that exhausts the budget ends the delegation in the same transaction
 * (with its cascade and consequences).
 */
import { type AuthorizeResult, type Delegation, EndReason, type Principal, commandsRemaining, delegationNotFound } from "../domain/index.js";
import { canAct } from "./access.js";
import { CommandMatcher } from "./command-matcher.js";
import type { UseCaseDeps } from "./deps.js";
import * as v from "./validate.js";

/**
 * What AuthorizeCommand needs of a delegation and that never changes once it
 * exists, so a cached copy is right on every replica without invalidation.
 */
interface CommandPolicy {
  delegatorDid: string;
  agentDid: string;
  agentClientId: string;
  expireTime: number;
  prohibited: CommandMatcher;
  ceremony: CommandMatcher;
}

/** Delegations whose command policy is kept in memory (about 1 KiB each). */
const POLICY_CACHE_SIZE = 10_000;

export class AuthorizeCommand {
  private readonly clock: () => number;
  private readonly policies = new Map<string, CommandPolicy>();

  constructor(private readonly deps: UseCaseDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  async run(principal: Principal, input: { delegationId: string; command: string }): Promise<AuthorizeResult> {
    const { store, log } = this.deps;
    const id = v.delegationId("delegation_id", input.delegationId);
    const command = v.command("command", input.command);
    const policy = await this.policyFor(principal, id);
    const now = this.clock();
    const prohibited = policy.prohibited.match(command);
    const ceremony = prohibited === undefined ? policy.ceremony.match(command) : undefined;
    if (prohibited === undefined && ceremony === undefined && policy.expireTime > now) {
      const counted = await store.countCommand(id, now);
      if (counted.kind === "counted") {
        return { decision: "ALLOW", reason: "allowed", commandsRemaining: counted.maxCommands - counted.commandsExecuted, matchedRule: "" };
      }
      if (counted.kind === "limit_reached") {
        log.info({ delegationId: id, cascaded: counted.ended.length - 1 }, "delegation reached its command limit");
        return { decision: "ALLOW", reason: "allowed_last_command", commandsRemaining: 0, matchedRule: "" };
      }
      // Refused: explain from the current row.
    }
    const d = await store.get(id);
    if (!d) throw delegationNotFound(id);
    const deny = (reason: string, matchedRule = ""): AuthorizeResult => ({
      decision: "DENY",
      reason,
      commandsRemaining: commandsRemaining(d),
      matchedRule,
    });
    if (d.state !== "ACTIVE") return deny(denyReason(d));
    if (d.expireTime <= now) return deny("delegation_expired");
    if (prohibited !== undefined) return deny("prohibited_command", prohibited);
    if (ceremony !== undefined) {
      return { decision: "CEREMONY_REQUIRED", reason: "ceremony_required", commandsRemaining: commandsRemaining(d), matchedRule: ceremony };
    }
    return deny(denyReason(d, now));
  }

  /** The immutable rules of a delegation, cached; NOT_FOUND if the caller may not act on it. */
  private async policyFor(principal: Principal, id: string): Promise<CommandPolicy> {
    let policy = this.policies.get(id);
    if (!policy) {
      const d = await this.deps.store.get(id);
      if (!d) throw delegationNotFound(id);
      policy = {
        delegatorDid: d.delegatorDid,
        agentDid: d.agentDid,
        agentClientId: d.agentClientId,
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

function denyReason(d: Delegation, now?: number): string {
  if (d.state === "ACTIVE") {
    if (now !== undefined && d.expireTime <= now) return "delegation_expired";
    if (d.commandsExecuted >= d.maxCommands) return "command_limit";
    return "delegation_busy";
  }
  if (d.state === "EXPIRED" && d.endReason === EndReason.commandLimit) return "command_limit";
  return `delegation_${d.state.toLowerCase()}`;
}
