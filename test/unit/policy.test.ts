import { describe, expect, it } from "vitest";
import { BrokerError } from "../../src/domain/index.js";
import {
  type DelegatorAuthority,
  MAX_RULE_LENGTH,
  MAX_RULES,
  type PolicySettings,
  type RequestedScope,
  capabilityRank,
  resolveScope,
} from "../../src/delegation/policy.js";

const MIN = 60_000;
const NOW = 1_700_000_000_000;

const SETTINGS: PolicySettings = {
  capabilityOrder: ["CAP_READ", "CAP_MUTATE", "CAP_ADMIN"],
  defaultCapabilityCeiling: "CAP_MUTATE",
  defaultTtlMs: 60 * MIN,
  maxTtlMs: 480 * MIN,
  defaultMaxCommands: 500,
  maxCommandsCap: 10_000,
  defaultCeremonyRequiredFor: ["delete", "destroy", "drop"],
  maxDelegationDepth: 1,
};

const HUMAN: DelegatorAuthority = { capabilityCeiling: "CAP_ADMIN", expireTime: null, depth: 0 };

function resolve(requested: RequestedScope, delegator: Partial<DelegatorAuthority> = {}, settings: Partial<PolicySettings> = {}) {
  return resolveScope({ ...SETTINGS, ...settings }, requested, { ...HUMAN, ...delegator }, NOW);
}

/** The BrokerError `fn` throws; fails the test if it throws nothing or something else. */
function errorOf(fn: () => unknown): BrokerError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BrokerError);
    return err as BrokerError;
  }
  throw new Error("expected a BrokerError, nothing was thrown");
}

function expectInvalid(fn: () => unknown, field: string): BrokerError {
  const err = errorOf(fn);
  expect(err.code).toBe("INVALID_ARGUMENT");
  expect(err.reason).toBe("INVALID_FIELD");
  expect(err.field).toBe(field);
  expect(err.message.startsWith(`${field}: `)).toBe(true);
  return err;
}

describe("resolveScope defaults", () => {
  it("fills every unset field from settings", () => {
    expect(resolve({})).toEqual({
      capabilityCeiling: "CAP_MUTATE",
      inheritCorpus: true,
      inheritContexts: true,
      ceremonyRequiredFor: ["delete", "destroy", "drop"],
      prohibitedCommands: [],
      ttlMs: 60 * MIN,
      maxCommands: 500,
    });
  });

  it("treats an empty capability as unset", () => {
    expect(resolve({ capabilityCeiling: "" }).capabilityCeiling).toBe("CAP_MUTATE");
  });

  it("keeps explicit values, including false flags", () => {
    const s = resolve({
      capabilityCeiling: "CAP_READ",
      inheritCorpus: false,
      inheritContexts: false,
      ttlMs: 5 * MIN,
      maxCommands: 7,
      ceremonyRequiredFor: ["git push"],
      prohibitedCommands: ["curl"],
    });
    expect(s).toEqual({
      capabilityCeiling: "CAP_READ",
      inheritCorpus: false,
      inheritContexts: false,
      ceremonyRequiredFor: ["git push"],
      prohibitedCommands: ["curl"],
      ttlMs: 5 * MIN,
      maxCommands: 7,
    });
  });

  it("uses the default ceremony list when the request gives an empty one", () => {
    expect(resolve({ ceremonyRequiredFor: [] }).ceremonyRequiredFor).toEqual(["delete", "destroy", "drop"]);
  });

  it("returns a copy of the default ceremony list, not the settings' array", () => {
    const s = resolve({});
    s.ceremonyRequiredFor.push("mutated");
    expect(SETTINGS.defaultCeremonyRequiredFor).toEqual(["delete", "destroy", "drop"]);
  });

  it("keeps an empty prohibited list empty", () => {
    expect(resolve({ prohibitedCommands: [] }).prohibitedCommands).toEqual([]);
  });
});

describe("resolveScope capability ceiling", () => {
  it("allows a ceiling equal to or below the delegator's", () => {
    expect(resolve({ capabilityCeiling: "CAP_MUTATE" }, { capabilityCeiling: "CAP_MUTATE" }).capabilityCeiling).toBe("CAP_MUTATE");
    expect(resolve({ capabilityCeiling: "CAP_READ" }, { capabilityCeiling: "CAP_MUTATE" }).capabilityCeiling).toBe("CAP_READ");
  });

  it("refuses a ceiling above the delegator's with PERMISSION_DENIED CEILING_ABOVE_DELEGATOR", () => {
    const err = errorOf(() => resolve({ capabilityCeiling: "CAP_ADMIN" }, { capabilityCeiling: "CAP_MUTATE" }));
    expect(err.code).toBe("PERMISSION_DENIED");
    expect(err.reason).toBe("CEILING_ABOVE_DELEGATOR");
    expect(err.field).toBe("scope.capability_ceiling");
  });

  it("lowers a default ceiling above the delegator's to the delegator's, as it does the TTL", () => {
    expect(resolve({}, { capabilityCeiling: "CAP_READ" }).capabilityCeiling).toBe("CAP_READ");
    expect(resolve({ capabilityCeiling: "" }, { capabilityCeiling: "CAP_READ" }).capabilityCeiling).toBe("CAP_READ");
    // A default at or below the delegator's stays as configured.
    expect(resolve({}, { capabilityCeiling: "CAP_ADMIN" }).capabilityCeiling).toBe("CAP_MUTATE");
  });

  it("rejects an unknown capability as INVALID_ARGUMENT on scope.capability_ceiling", () => {
    const err = expectInvalid(() => resolve({ capabilityCeiling: "CAP_ROOT" }), "scope.capability_ceiling");
    expect(err.message).toContain("CAP_ROOT");
  });

  it("compares capability names exactly (case matters)", () => {
    expectInvalid(() => resolve({ capabilityCeiling: "cap_read" }), "scope.capability_ceiling");
  });

  it("reports a delegator ceiling the broker does not know as FAILED_PRECONDITION, not the caller's error", () => {
    const err = errorOf(() => resolve({ capabilityCeiling: "CAP_READ" }, { capabilityCeiling: "CAP_SUPER" }));
    expect(err.code).toBe("FAILED_PRECONDITION");
    expect(err.reason).toBe("DELEGATOR_CEILING_UNKNOWN");
  });

  it("ranks capabilities by the configured order", () => {
    expect(capabilityRank(["A", "B", "C"], "A", "f")).toBe(0);
    expect(capabilityRank(["A", "B", "C"], "C", "f")).toBe(2);
    expectInvalid(() => capabilityRank(["A"], "B", "some.field"), "some.field");
  });
});

describe("resolveScope TTL", () => {
  it("uses the default TTL when none is asked for", () => {
    expect(resolve({}, {}, { defaultTtlMs: 7 * MIN }).ttlMs).toBe(7 * MIN);
  });

  it("accepts exactly 1 second and exactly the maximum", () => {
    expect(resolve({ ttlMs: 1000 }).ttlMs).toBe(1000);
    expect(resolve({ ttlMs: 480 * MIN }).ttlMs).toBe(480 * MIN);
  });

  it("rejects a TTL under 1 second, zero, negative or not finite on scope.ttl", () => {
    for (const ttlMs of [999, 0, -1000, Number.NaN, Number.POSITIVE_INFINITY]) {
      expectInvalid(() => resolve({ ttlMs }), "scope.ttl");
    }
  });

  it("rejects a TTL over the maximum on scope.ttl, naming the maximum", () => {
    const err = expectInvalid(() => resolve({ ttlMs: 480 * MIN + 1 }), "scope.ttl");
    expect(err.message).toContain("480 minutes");
  });

  it("cuts the TTL to what is left of the delegator's own context", () => {
    expect(resolve({ ttlMs: 60 * MIN }, { expireTime: NOW + 10 * MIN }).ttlMs).toBe(10 * MIN);
    expect(resolve({}, { expireTime: NOW + 10 * MIN }).ttlMs).toBe(10 * MIN);
  });

  it("leaves a TTL shorter than the delegator's remaining time alone", () => {
    expect(resolve({ ttlMs: 5 * MIN }, { expireTime: NOW + 10 * MIN }).ttlMs).toBe(5 * MIN);
  });

  it("refuses with FAILED_PRECONDITION when the delegator's context has (nearly) expired", () => {
    for (const expireTime of [NOW - 1, NOW, NOW + 999]) {
      const err = errorOf(() => resolve({}, { expireTime }));
      expect(err.code).toBe("FAILED_PRECONDITION");
      expect(err.reason).toBe("DELEGATOR_CONTEXT_EXPIRED");
    }
    expect(resolve({}, { expireTime: NOW + 1000 }).ttlMs).toBe(1000);
  });
});

describe("resolveScope max_commands", () => {
  it("uses the default when unset and accepts 1 and the cap", () => {
    expect(resolve({}).maxCommands).toBe(500);
    expect(resolve({ maxCommands: 1 }).maxCommands).toBe(1);
    expect(resolve({ maxCommands: 10_000 }).maxCommands).toBe(10_000);
  });

  it("rejects 0, negatives, fractions and values over the cap on scope.max_commands", () => {
    for (const maxCommands of [0, -1, 1.5, 10_001, Number.NaN]) {
      expectInvalid(() => resolve({ maxCommands }), "scope.max_commands");
    }
  });
});

describe("resolveScope delegation depth", () => {
  it("allows delegating up to the maximum depth", () => {
    expect(() => resolve({}, { depth: 0 })).not.toThrow();
    expect(() => resolve({}, { depth: 2 }, { maxDelegationDepth: 3 })).not.toThrow();
  });

  it("refuses a delegation beyond maxDelegationDepth with PERMISSION_DENIED DELEGATION_DEPTH_EXCEEDED", () => {
    for (const [depth, max] of [[1, 1], [3, 3], [5, 2]] as const) {
      const err = errorOf(() => resolve({}, { depth }, { maxDelegationDepth: max }));
      expect(err.code).toBe("PERMISSION_DENIED");
      expect(err.reason).toBe("DELEGATION_DEPTH_EXCEEDED");
    }
  });

  it("checks depth before anything in the request", () => {
    const err = errorOf(() => resolve({ capabilityCeiling: "CAP_ROOT", ttlMs: 0 }, { depth: 1 }));
    expect(err.reason).toBe("DELEGATION_DEPTH_EXCEEDED");
  });
});

describe("resolveScope rule lists", () => {
  const lists = [
    ["ceremonyRequiredFor", "scope.ceremony_required_for"],
    ["prohibitedCommands", "scope.prohibited_commands"],
  ] as const;

  for (const [key, field] of lists) {
    describe(field, () => {
      it(`accepts ${MAX_RULES} entries and rejects ${MAX_RULES + 1}`, () => {
        const many = Array.from({ length: MAX_RULES + 1 }, (_, i) => `cmd${i}`);
        expect(resolve({ [key]: many.slice(0, MAX_RULES) })[key]).toHaveLength(MAX_RULES);
        expectInvalid(() => resolve({ [key]: many }), field);
      });

      it("rejects an entry with control characters (NUL, ESC, C1), naming its index", () => {
        for (const bad of ["drop\u0000table", "drop\u001b[2J", "rm\u009b-rf"]) {
          expectInvalid(() => resolve({ [key]: ["ok", bad] }), `${field}[1]`);
        }
      });

      it(`accepts an entry of ${MAX_RULE_LENGTH} characters and rejects a longer or empty one, naming its index`, () => {
        expect(resolve({ [key]: ["a".repeat(MAX_RULE_LENGTH)] })[key]).toEqual(["a".repeat(MAX_RULE_LENGTH)]);
        expectInvalid(() => resolve({ [key]: ["ok", "a".repeat(MAX_RULE_LENGTH + 1)] }), `${field}[1]`);
        expectInvalid(() => resolve({ [key]: ["ok", "   "] }), `${field}[1]`);
        expectInvalid(() => resolve({ [key]: [""] }), `${field}[0]`);
      });

      it("rejects an entry without a word, naming its index", () => {
        const err = expectInvalid(() => resolve({ [key]: ["curl", "--"] }), `${field}[1]`);
        expect(err.message).toContain("word");
      });

      it("trims entries and drops duplicates, keeping the first spelling", () => {
        expect(resolve({ [key]: [" curl ", "curl", "wget", "CURL", "rm -rf", "rm  -rf"] })[key]).toEqual([
          "curl",
          "wget",
          "rm -rf",
        ]);
      });

      it("measures the length after trimming", () => {
        const padded = `  ${"a".repeat(MAX_RULE_LENGTH)}  `;
        expect(resolve({ [key]: [padded] })[key]).toEqual(["a".repeat(MAX_RULE_LENGTH)]);
      });
    });
  }
});

describe("resolveScope: ceremonies and a delegation made from another", () => {
  const parent = { ceremonyRequiredFor: ["deploy"], prohibitedCommands: ["rm -rf"], commandsRemaining: 7 };
  const nested = { depth: 1, parent };
  const deep = { maxDelegationDepth: 2 };

  it("gives no ceremonies only when asked explicitly, and not together with a list", () => {
    expect(resolve({ noCeremonies: true }).ceremonyRequiredFor).toEqual([]);
    expect(resolve({}).ceremonyRequiredFor).toEqual(["delete", "destroy", "drop"]);
    expect(resolve({ ceremonyRequiredFor: [] }).ceremonyRequiredFor).toEqual(["delete", "destroy", "drop"]);
    expect(errorOf(() => resolve({ noCeremonies: true, ceremonyRequiredFor: ["x"] })).field).toBe("scope.no_ceremonies");
  });

  it("keeps the parent's ceremonies and prohibited commands on top of the child's own", () => {
    const s = resolve({ ceremonyRequiredFor: ["DEPLOY", "push"], prohibitedCommands: ["shutdown"] }, nested, deep);
    expect(s.ceremonyRequiredFor).toEqual(["deploy", "push"]);
    expect(s.prohibitedCommands).toEqual(["rm -rf", "shutdown"]);
  });

  it("refuses no ceremonies under a parent that has them, and a budget above what the parent has left", () => {
    expect(errorOf(() => resolve({ noCeremonies: true }, nested, deep)).reason).toBe("CEREMONIES_REQUIRED_BY_PARENT");
    expect(errorOf(() => resolve({ maxCommands: 8 }, nested, deep)).reason).toBe("BUDGET_ABOVE_PARENT");
    expect(resolve({}, nested, deep).maxCommands).toBe(7);
    expect(resolve({ maxCommands: 3 }, nested, deep).maxCommands).toBe(3);
    expect(errorOf(() => resolve({}, { depth: 1, parent: { ...parent, commandsRemaining: 0 } }, deep)).reason).toBe("PARENT_BUDGET_SPENT");
  });
});
