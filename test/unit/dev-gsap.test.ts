/**
 * The dev GSAP driver's record of revocations: idempotent like the real
 * service, and bounded (the oldest dropped first), however many it is told of.
 */
import { describe, expect, it } from "vitest";
import { createDevGsap } from "../../src/clients/gsap/dev-gsap.js";

describe("dev GSAP revocations", () => {
  it("keeps the newest keepRevocations, oldest dropped first, each once", async () => {
    const gsap = createDevGsap({ keepRevocations: 3 });
    await gsap.revokeContext("ac-1", "ttl_elapsed", { delegationId: "d1" });
    await gsap.revokeContext("ac-1", "manual_revocation", { delegationId: "d1" }); // again: nothing changes
    expect([...gsap.revoked.values()].map((r) => [r.contextId, r.reason])).toEqual([["ac-1", "ttl_elapsed"]]);
    for (let i = 2; i <= 10_000; i++) await gsap.revokeContext(`ac-${i}`, "ttl_elapsed");
    expect([...gsap.revoked.keys()]).toEqual(["ac-9998", "ac-9999", "ac-10000"]);
    await gsap.revokeContext("ac-10001", "ttl_elapsed");
    expect([...gsap.revoked.keys()]).toEqual(["ac-9999", "ac-10000", "ac-10001"]);
  });
});
