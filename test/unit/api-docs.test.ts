/**
 * docs/api.md, the API reference, is generated from the proto comments: every
 * RPC, message, field, enum and enum value has a comment, and the file is not
 * stale. `node scripts/api-docs.mjs` regenerates it and lists what lacks one.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));

describe("docs/api.md", () => {
  it("is up to date, and every element of the contract has a comment", () => {
    // buf build runs inside the script: allow it the time of a cold start.
    const run = spawnSync(process.execPath, ["scripts/api-docs.mjs", "--check"], { cwd: root, encoding: "utf8", timeout: 60_000 });
    const why = `node scripts/api-docs.mjs --check (exit ${run.status}${run.signal ? `, ${run.signal}` : ""}${run.error ? `, ${run.error.message}` : ""}):\n${run.stderr}`;
    expect(run.error, why).toBeUndefined();
    expect(run.stderr, why).toBe("");
    expect(run.status, why).toBe(0);
  }, 90_000);
});
