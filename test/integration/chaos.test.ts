/**
 * Creates under a failing IdP and a failing Chronicle end clean: no orphaned
 * identity, no half-made delegation, no lost audit event. (bench/chaos.ts runs
 * the same at 200 creates and prints the figures.)
 */
import { describe, expect, it } from "vitest";
import { runChaos } from "../helpers/chaos.js";
import { DRIVERS } from "../helpers/databases.js";

describe.each(DRIVERS)("chaos (%s)", (driver) => {
  it("60 creates with 25% of IdP calls and 25% of audit deliveries failing: 0 orphans, 0 lost events", async () => {
    const r = await runChaos({ creates: 60, idpFaultRate: 0.25, auditFaultRate: 0.25, driver, seed: 7 });
    expect(r.idpFaultsInjected).toBeGreaterThan(5);
    expect(r.succeeded).toBeGreaterThan(0);
    expect(r.succeeded).toBeLessThan(60); // the faults did bite
    expect(r).toMatchObject({ orphans: 0, halfMade: 0, lostEvents: 0 });
  }, 120_000);
});
