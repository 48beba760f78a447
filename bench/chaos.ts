/**
 * Failure figures: N creates (every fourth revoked) through the gRPC API
 * while the IdP (Keycloak fake) and Chronicle fail a share of their calls,
 * then count orphans, half-made delegations and lost audit events.
 *
 *   npx tsx bench/chaos.ts                 # 200 creates, 20% IdP faults, 20% audit faults, SQLite and PostgreSQL
 *   CHAOS_CREATES=500 CHAOS_IDP_FAULT_RATE=0.3 CHAOS_DRIVERS=sqlite npx tsx bench/chaos.ts
 */
import { runChaos } from "../test/helpers/chaos.js";
import type { Driver } from "../test/helpers/databases.js";
import { envNumber } from "./lib/env.js";

const creates = envNumber("CHAOS_CREATES", 200, 1, 1_000_000, { integer: true });
const idpFaultRate = envNumber("CHAOS_IDP_FAULT_RATE", 0.2, 0, 1);
const auditFaultRate = envNumber("CHAOS_AUDIT_FAULT_RATE", 0.2, 0, 1);
const drivers = (process.env.CHAOS_DRIVERS ?? "sqlite,postgresql").split(",") as Driver[];

for (const driver of drivers) {
  const r = await runChaos({ creates, idpFaultRate, auditFaultRate, driver, seed: 2026 });
  console.log(
    `${driver}: ${r.creates} creates with ${Math.round(idpFaultRate * 100)}% IdP faults (${r.idpFaultsInjected} injected) and ` +
      `${Math.round(auditFaultRate * 100)}% audit faults (${r.auditFaultsInjected}): ${r.succeeded} succeeded, ` +
      `failed by code ${JSON.stringify(r.failedByCode)}, ${r.revoked} revoked; ` +
      `${r.orphans} orphans, ${r.halfMade} half-made, ${r.lostEvents} lost of ${r.events} events ` +
      `(${r.duplicateDeliveries} duplicate deliveries) in ${r.seconds} s`,
  );
  console.log(JSON.stringify({ bench: "chaos", driver, ...r }));
}
