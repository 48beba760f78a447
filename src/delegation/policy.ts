/**
 * The delegation policy: defaults, caps and the capability ceiling. Pure
 * functions over settings, so the rules are tested without a server.
 */
import { BrokerError, invalidArgument } from "../domain/index.js";
import { words } from "./command-matcher.js";

export interface PolicySettings {
  capabilityOrder: string[];
  defaultCapabilityCeiling: string;
  defaultTtlMs: number;
  maxTtlMs: number;
  defaultMaxCommands: number;
  maxCommandsCap: number;
  defaultCeremonyRequiredFor: string[];
  maxDelegationDepth: number;
}

/** The scope as the caller asked for it; undefined means "use the default". */
export interface RequestedScope {
  capabilityCeiling?: string;
  inheritCorpus?: boolean;
  inheritContexts?: boolean;
  ceremonyRequiredFor?: string[];
  prohibitedCommands?: string[];
  ttlMs?: number;
  maxCommands?: number;
  /** No command needs a ceremony (ceremonyRequiredFor must then be empty). */
  noCeremonies?: boolean;
}

/** The scope the delegation gets after defaults, caps and narrowing. */
export interface EffectiveScope {
  capabilityCeiling: string;
  inheritCorpus: boolean;
  inheritContexts: boolean;
  ceremonyRequiredFor: string[];
  prohibitedCommands: string[];
  ttlMs: number;
  maxCommands: number;
}

/** What is known of the authority the delegation is cut from. */
export interface DelegatorAuthority {
  capabilityCeiling: string;
  /** When the delegator's own access context ends, if it does. */
  expireTime: number | null;
  /** 0 for a human's own context; n for a context delegated n times. */
  depth: number;
  /**
   * A delegation made from a delegated context: the parent's rules, which
   * the child keeps (on top of its own), and the commands the parent has
   * left, which cap the child's budget.
   */
  parent?: { ceremonyRequiredFor: string[]; prohibitedCommands: string[]; commandsRemaining: number };
}

export const MAX_RULES = 64;
export const MAX_RULE_LENGTH = 128;

/** Position of a capability in the configured order, or an INVALID_ARGUMENT. */
export function capabilityRank(order: readonly string[], capability: string, field: string): number {
  const rank = order.indexOf(capability);
  if (rank < 0) throw invalidArgument(field, `unknown capability "${capability}"; known: ${order.join(", ")}`);
  return rank;
}

function ruleList(field: string, list: string[] | undefined): string[] | undefined {
  if (list === undefined) return undefined;
  if (list.length > MAX_RULES) throw invalidArgument(field, `at most ${MAX_RULES} entries`);
  const out: string[] = [];
  // Entries that split into the same words (`DROP`, `drop`, ` drop `) are one rule to the
  // matcher; the first spelling is kept.
  const seen = new Set<string>();
  for (const [i, entry] of list.entries()) {
    const e = entry.trim();
    if (e.length === 0 || e.length > MAX_RULE_LENGTH) {
      throw invalidArgument(`${field}[${i}]`, `must be 1 to ${MAX_RULE_LENGTH} characters`);
    }
    if (/[\u0000-\u001f\u007f-\u009f]/.test(e)) throw invalidArgument(`${field}[${i}]`, "must not contain control characters");
    const w = words(e);
    if (w.length === 0) throw invalidArgument(`${field}[${i}]`, "must contain a word");
    const key = w.join(" ");
    if (!seen.has(key)) {
      seen.add(key);
      out.push(e);
    }
  }
  return out;
}

/**
 * Applies defaults and caps to `requested` and narrows it to `delegator`.
 * A requested capability above the delegator's is PERMISSION_DENIED (the
 * default is lowered to the delegator's instead); the TTL is cut to the
 * delegator's own expiry; a depth beyond the configured maximum is refused.
 */
export function resolveScope(
  settings: PolicySettings,
  requested: RequestedScope,
  delegator: DelegatorAuthority,
  now: number,
): EffectiveScope {
  if (delegator.depth + 1 > settings.maxDelegationDepth) {
    throw new BrokerError(
      "PERMISSION_DENIED",
      "DELEGATION_DEPTH_EXCEEDED",
      `delegation depth ${delegator.depth + 1} exceeds the maximum of ${settings.maxDelegationDepth}`,
    );
  }
  const held = settings.capabilityOrder.indexOf(delegator.capabilityCeiling);
  if (held < 0) {
    // GSAP reported a capability this broker is not configured for: not the caller's fault,
    // so not INVALID_ARGUMENT, and no ceiling can be compared against it.
    throw new BrokerError(
      "FAILED_PRECONDITION",
      "DELEGATOR_CEILING_UNKNOWN",
      `the delegator's capability ceiling "${delegator.capabilityCeiling}" is not in the broker's CAPABILITY_ORDER`,
    );
  }
  // Like the TTL, a default is narrowed to what the delegator holds; only a ceiling the
  // caller asked for explicitly is refused for being too high.
  let capabilityCeiling: string;
  if (requested.capabilityCeiling) {
    capabilityCeiling = requested.capabilityCeiling;
  } else {
    const fallback = capabilityRank(settings.capabilityOrder, settings.defaultCapabilityCeiling, "scope.capability_ceiling");
    capabilityCeiling = fallback > held ? delegator.capabilityCeiling : settings.defaultCapabilityCeiling;
  }
  const wanted = capabilityRank(settings.capabilityOrder, capabilityCeiling, "scope.capability_ceiling");
  if (wanted > held) {
    throw new BrokerError(
      "PERMISSION_DENIED",
      "CEILING_ABOVE_DELEGATOR",
      `scope.capability_ceiling ${capabilityCeiling} is above the delegator's ceiling ${delegator.capabilityCeiling}`,
      { field: "scope.capability_ceiling" },
    );
  }

  let ttlMs = requested.ttlMs ?? settings.defaultTtlMs;
  if (requested.ttlMs !== undefined && (!Number.isFinite(ttlMs) || ttlMs < 1000)) {
    throw invalidArgument("scope.ttl", "must be at least 1 second");
  }
  if (ttlMs > settings.maxTtlMs) {
    throw invalidArgument("scope.ttl", `must not exceed ${settings.maxTtlMs / 60_000} minutes`);
  }
  if (delegator.expireTime !== null) {
    const left = delegator.expireTime - now;
    if (left < 1000) {
      throw new BrokerError("FAILED_PRECONDITION", "DELEGATOR_CONTEXT_EXPIRED", "the delegator's access context has expired");
    }
    ttlMs = Math.min(ttlMs, left);
  }

  let maxCommands = requested.maxCommands ?? settings.defaultMaxCommands;
  if (!Number.isInteger(maxCommands) || maxCommands < 1 || maxCommands > settings.maxCommandsCap) {
    throw invalidArgument("scope.max_commands", `must be between 1 and ${settings.maxCommandsCap}`);
  }

  const ceremony = ruleList("scope.ceremony_required_for", requested.ceremonyRequiredFor);
  const prohibited = ruleList("scope.prohibited_commands", requested.prohibitedCommands);
  if (requested.noCeremonies && ceremony && ceremony.length > 0) {
    throw invalidArgument("scope.no_ceremonies", "cannot be set together with scope.ceremony_required_for");
  }
  let ceremonyRequiredFor = requested.noCeremonies ? [] : ceremony && ceremony.length > 0 ? ceremony : [...settings.defaultCeremonyRequiredFor];
  let prohibitedCommands = prohibited ?? [];
  const parent = delegator.parent;
  if (parent) {
    // A child never loosens its parent: it keeps the parent's rules and has at most the commands the parent has left.
    if (requested.noCeremonies && parent.ceremonyRequiredFor.length > 0) {
      throw new BrokerError(
        "PERMISSION_DENIED",
        "CEREMONIES_REQUIRED_BY_PARENT",
        "scope.no_ceremonies: the delegation this one is made from requires ceremonies, and a delegation made from it keeps them",
        { field: "scope.no_ceremonies" },
      );
    }
    ceremonyRequiredFor = union(parent.ceremonyRequiredFor, ceremonyRequiredFor);
    prohibitedCommands = union(parent.prohibitedCommands, prohibitedCommands);
    if (requested.maxCommands !== undefined && requested.maxCommands > parent.commandsRemaining) {
      throw new BrokerError(
        "PERMISSION_DENIED",
        "BUDGET_ABOVE_PARENT",
        `scope.max_commands ${requested.maxCommands} is above the ${parent.commandsRemaining} commands the parent delegation has left`,
        { field: "scope.max_commands" },
      );
    }
    maxCommands = Math.min(maxCommands, parent.commandsRemaining);
    if (maxCommands < 1) {
      throw new BrokerError("FAILED_PRECONDITION", "PARENT_BUDGET_SPENT", "the parent delegation has no commands left to delegate");
    }
  }
  return {
    capabilityCeiling,
    inheritCorpus: requested.inheritCorpus ?? true,
    inheritContexts: requested.inheritContexts ?? true,
    ceremonyRequiredFor,
    prohibitedCommands,
    ttlMs,
    maxCommands,
  };
}

/** The entries of `a`, then those of `b` that are not the same rule (same words) as one of them. */
function union(a: readonly string[], b: readonly string[]): string[] {
  const key = (e: string) => words(e).join(" ");
  const seen = new Set(a.map(key));
  return [...a, ...b.filter((e) => !seen.has(key(e)))];
}
