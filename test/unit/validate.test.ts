import { describe, expect, it } from "vitest";
import { BrokerError } from "../../src/domain/index.js";
import * as v from "../../src/delegation/validate.js";

/** Asserts `fn` throws INVALID_ARGUMENT naming `field`; returns the message. */
function rejects(fn: () => unknown, field: string): string {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(BrokerError);
  const err = thrown as BrokerError;
  expect(err.code).toBe("INVALID_ARGUMENT");
  expect(err.reason).toBe("INVALID_FIELD");
  expect(err.field).toBe(field);
  expect(err.message.startsWith(`${field}: `)).toBe(true);
  return err.message;
}

describe("identifier", () => {
  it("returns an empty value as empty unless required", () => {
    expect(v.identifier("accord_template", "")).toBe("");
    expect(rejects(() => v.identifier("delegator_ac_id", "", { required: true }), "delegator_ac_id")).toContain("required");
  });

  it("accepts letters, digits and . _ : @ / + = - after a leading letter or digit", () => {
    for (const ok of ["a", "7", "ac-alice-1", "urn:ac:x/y@z+1=2_3.4", "A".repeat(256)]) {
      expect(v.identifier("f", ok)).toBe(ok);
    }
  });

  it("rejects more than 256 characters", () => {
    expect(rejects(() => v.identifier("f", "a".repeat(257)), "f")).toContain("256");
  });

  it("rejects a leading punctuation character, whitespace, quotes, backslash and non-ASCII", () => {
    for (const bad of ["-a", ".a", "/a", "a b", " a", "a\n", 'a"b', "a'b", "a\\b", "é", "a\u0000", "a?b", "a#b"]) {
      rejects(() => v.identifier("ac", bad), "ac");
    }
  });
});

describe("agentType", () => {
  it("accepts 1-63 lower-case letters, digits, '.', '_' and '-' starting with a letter or digit", () => {
    for (const ok of ["a", "claude-code", "agent_2.1", "9lives", `a${"b".repeat(62)}`]) {
      expect(v.agentType("agent_type", ok)).toBe(ok);
    }
  });

  it("rejects empty, too long, upper case, a leading symbol and other characters", () => {
    for (const bad of ["", `a${"b".repeat(63)}`, "Claude", "-x", ".x", "_x", "a b", "a/b", "a:b", "ä"]) {
      rejects(() => v.agentType("agent_type", bad), "agent_type");
    }
  });
});

describe("text", () => {
  it("accepts up to max characters, including empty and non-ASCII text", () => {
    expect(v.text("agent_model", "", 5)).toBe("");
    expect(v.text("agent_model", "Claude Sonnet", 13)).toBe("Claude Sonnet");
    expect(v.text("agent_model", "modèle ✓ 模型", 128)).toBe("modèle ✓ 模型");
  });

  it("rejects more than max characters, naming the limit", () => {
    expect(rejects(() => v.text("agent_model", "abcdef", 5), "agent_model")).toContain("5");
  });

  it("rejects C0, DEL and C1 control characters", () => {
    for (const bad of ["a\u0000", "a\nb", "a\rb", "a\tb", "\u001b[31m", "a\u007f", "a\u0085b", "a\u009bb"]) {
      rejects(() => v.text("agent_model", bad, 128), "agent_model");
    }
  });
});

describe("reason", () => {
  it("accepts 1 to 256 characters", () => {
    expect(v.reason("reason", "x")).toBe("x");
    expect(v.reason("reason", "r".repeat(256))).toBe("r".repeat(256));
  });

  it("rejects empty, longer than 256 and control characters", () => {
    rejects(() => v.reason("reason", ""), "reason");
    rejects(() => v.reason("reason", "r".repeat(257)), "reason");
    rejects(() => v.reason("reason", "line\nbreak"), "reason");
  });
});

describe("requestId", () => {
  it("returns empty (no idempotency) for an empty id", () => {
    expect(v.requestId("request_id", "")).toBe("");
  });

  it("accepts identifier characters up to 128", () => {
    expect(v.requestId("request_id", "2f1c-uuid:retry@1")).toBe("2f1c-uuid:retry@1");
    expect(v.requestId("request_id", "r".repeat(128))).toBe("r".repeat(128));
  });

  it("rejects more than 128 characters and non-identifier characters", () => {
    expect(rejects(() => v.requestId("request_id", "r".repeat(129)), "request_id")).toContain("128");
    for (const bad of ["a b", "-a", "a\u0000", "ü"]) rejects(() => v.requestId("request_id", bad), "request_id");
  });
});

describe("delegationId", () => {
  const ok = "del_01JD3Z8Q0000000000000000AB";

  it("accepts del_ followed by 26 upper-case letters or digits", () => {
    expect(ok).toMatch(/^del_[0-9A-Z]{26}$/);
    expect(v.delegationId("delegation_id", ok)).toBe(ok);
  });

  it("rejects empty as required", () => {
    expect(rejects(() => v.delegationId("delegation_id", ""), "delegation_id")).toContain("required");
  });

  it("rejects a wrong prefix, length, case or character", () => {
    for (const bad of [ok.slice(4), `dlg_${ok.slice(4)}`, ok.slice(0, -1), `${ok}A`, ok.toLowerCase(), `${ok.slice(0, -1)}-`, ` ${ok}`]) {
      rejects(() => v.delegationId("delegation_id", bad), "delegation_id");
    }
  });
});

describe("did", () => {
  it("accepts did:method:id including path-like web DIDs and percent escapes", () => {
    for (const ok of ["did:web:example.com", "did:web:example.com/user/alice", "did:key:z6Mk", "did:web:localhost%3A8443:u"]) {
      expect(v.did("delegator_did", ok)).toBe(ok);
    }
  });

  it("accepts up to 512 characters and rejects longer", () => {
    const base = "did:web:";
    expect(v.did("delegator_did", base + "a".repeat(512 - base.length))).toHaveLength(512);
    rejects(() => v.did("delegator_did", base + "a".repeat(513 - base.length)), "delegator_did");
  });

  it("rejects empty, missing parts, an upper-case method and characters outside the DID syntax", () => {
    for (const bad of ["", "did:", "did:web", "did:web:", "DID:web:x", "did:Web:x", "did:web:a b", "web:example.com", "did:web:x?y", "did:web:x#f"]) {
      rejects(() => v.did("delegator_did", bad), "delegator_did");
    }
  });
});

describe("command", () => {
  it("accepts any command line up to 8192 characters, control characters other than NUL included", () => {
    expect(v.command("command", "rm -rf /tmp/x")).toBe("rm -rf /tmp/x");
    expect(v.command("command", "echo a\tb\nc")).toBe("echo a\tb\nc");
    expect(v.command("command", "x".repeat(8192))).toHaveLength(8192);
  });

  it("rejects empty and whitespace-only as required", () => {
    for (const bad of ["", "   ", "\n\t"]) expect(rejects(() => v.command("command", bad), "command")).toContain("required");
  });

  it("rejects more than 8192 characters and NUL", () => {
    expect(rejects(() => v.command("command", "x".repeat(8193)), "command")).toContain("8192");
    expect(rejects(() => v.command("command", "ls\u0000-la"), "command")).toContain("NUL");
  });
});
