/**
 * What the client verbs print for people, in-process: relative times as
 * people say them, colour only on a terminal without NO_COLOR, and tables
 * that stay aligned when cells are coloured.
 */
import { describe, expect, it } from "vitest";
import { colorsFor, relative, table } from "../../src/cli/client/output.js";

const NOW = Date.parse("2026-11-23T10:00:00Z");
const S = 1000;
const M = 60 * S;
const H = 60 * M;

describe("llm-broker output", () => {
  it("says times relative to now: in 59m, 3m ago, in 1h 30m, 2d ago, now", () => {
    expect(relative(NOW + 60 * M - 5, NOW)).toBe("in 59m");
    expect(relative(NOW - 3 * M - 10 * S, NOW)).toBe("3m ago");
    expect(relative(NOW + 45 * S, NOW)).toBe("in 45s");
    expect(relative(NOW + 90 * M, NOW)).toBe("in 1h 30m");
    expect(relative(NOW + 8 * H, NOW)).toBe("in 8h");
    expect(relative(NOW - 50 * H, NOW)).toBe("2d 2h ago");
    expect(relative(NOW + 300, NOW)).toBe("now");
  });

  it("colours only a terminal without NO_COLOR, and aligns coloured cells by what shows", () => {
    expect(colorsFor({ isTTY: false }, {}).green("ACTIVE")).toBe("ACTIVE");
    expect(colorsFor({ isTTY: true }, { NO_COLOR: "1" }).green("ACTIVE")).toBe("ACTIVE");
    const c = colorsFor({ isTTY: true }, {});
    expect(c.green("ACTIVE")).toBe("\u001b[32mACTIVE\u001b[39m");
    const plain = table(["ID", "STATE", "AGE"], [["a", "ACTIVE", "1m"], ["bb", "REVOKED", "2m"]], colorsFor({}, {}));
    const colored = table(["ID", "STATE", "AGE"], [["a", c.green("ACTIVE"), "1m"], ["bb", c.red("REVOKED"), "2m"]], c);
    expect(plain).toBe("ID  STATE    AGE\na   ACTIVE   1m\nbb  REVOKED  2m");
    expect(colored.replace(/\u001b\[[0-9;]*m/g, "")).toBe(plain);
  });
});
