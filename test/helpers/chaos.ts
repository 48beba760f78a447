/**
 * A chaos run: many creates (and some revokes) through the API while the IdP
 * and Chronicle fail a share of their calls in every way the fakes can
 * (5xx, 429, dropped connections, answers after the deadline), then let the
 * broker settle and count what a failure could have left behind.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { KeycloakFault, KeycloakRoute } from "../fakes/keycloak-fake.js";
import { ALICE, as, startTestBroker } from "./broker.js";
import type { Driver } from "./databases.js";
import { agentClients, startWorld } from "./real-world.js";
import { eventContentId } from "../../src/clients/chronicle/chronicle-event.js";

export interface ChaosOptions {
  creates: number;
  /** Share of creates before which the IdP gets a fault. */
  idpFaultRate: number;
  /** Share of events whose first delivery Chronicle fails. */
  auditFaultRate: number;
  driver: Driver;
  seed?: number;
}

export interface ChaosReport {
  creates: number;
  succeeded: number;
  /** Failed creates by gRPC code. */
  failedByCode: Record<string, number>;
  idpFaultsInjected: number;
  auditFaultsInjected: number;
  revoked: number;
  /** IdP identities not backing an ACTIVE delegation, after settling. */
  orphans: number;
  /** ACTIVE delegations without their identity or GSAP context. */
  halfMade: number;
  /** Events in the log that never reached Chronicle. */
  lostEvents: number;
  events: number;
  duplicateDeliveries: number;
  seconds: number;
}

/** A small deterministic PRNG (mulberry32), so a run can be repeated. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FAULTS: [KeycloakRoute, KeycloakFault][] = [
  ["create", { kind: "status", status: 500 }],
  ["create", { kind: "status", status: 503, headers: { "retry-after": "0" } }],
  ["create", { kind: "drop" }],
  ["create", { kind: "delay", ms: 1300 }], // created after the broker gave up
  ["create", { kind: "conflictAfterCreate" }],
  ["getSecret", { kind: "status", status: 500 }],
  ["getSecret", { kind: "drop" }],
  ["token", { kind: "status", status: 503 }],
  ["delete", { kind: "status", status: 500 }],
  ["delete", { kind: "drop" }],
];

/** Runs the chaos and returns the figures. */
export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const random = prng(options.seed ?? 42);
  const world = await startWorld();
  world.gsap.faultMethod = "POST";
  world.delegatorContext("ac-chaos", ALICE);
  const t = await startTestBroker({
    driver: options.driver,
    env: { ...world.env, HTTP_TIMEOUT_SECONDS: "1", CREATE_INFLIGHT_SECONDS: "1" },
  });
  const started = Date.now();
  const report: ChaosReport = {
    creates: options.creates,
    succeeded: 0,
    failedByCode: {},
    idpFaultsInjected: 0,
    auditFaultsInjected: 0,
    revoked: 0,
    orphans: 0,
    halfMade: 0,
    lostEvents: 0,
    events: 0,
    duplicateDeliveries: 0,
    seconds: 0,
  };
  try {
    for (let i = 0; i < options.creates; i++) {
      if (random() < options.idpFaultRate) {
        const [route, fault] = FAULTS[Math.floor(random() * FAULTS.length)]!;
        world.keycloak.inject(route, fault);
        report.idpFaultsInjected++;
      }
      if (random() < options.auditFaultRate) {
        world.chronicle.failNext(1, 503);
        report.auditFaultsInjected++;
      }
      try {
        const c = await t.grpc.unary(
          "createDelegation",
          { delegatorAcId: "ac-chaos", scope: { ttl: durationFromMs(3600_000) } },
          as(ALICE),
        );
        report.succeeded++;
        if (i % 4 === 0) {
          await t.grpc.unary("revokeDelegation", { delegationId: c.delegation!.delegationId }, as(ALICE));
          report.revoked++;
        }
      } catch (err) {
        const code = String((err as { code?: number }).code ?? "?");
        report.failedByCode[code] = (report.failedByCode[code] ?? 0) + 1;
      }
    }
    // Settle: late creates land, then the loops finish what failures left.
    world.keycloak.clearFaults();
    await new Promise((r) => setTimeout(r, 1500));
    for (let round = 0; round < 5; round++) {
      t.advanceClock(10 * 60_000); // retries of failed consequences come due
      await t.broker.background.orphanSweep.runOnce().catch(() => undefined);
      await t.settle();
    }
    const active = [];
    let token = "";
    do {
      const page = await t.grpc.unary("listAgents", { pageSize: 500, pageToken: token });
      active.push(...page.delegations);
      token = page.nextPageToken;
    } while (token !== "");
    const live = new Set(active.map((d) => d.agentClientId));
    report.orphans = agentClients(world).filter((c) => !live.has(c.clientId)).length;
    report.halfMade = active.filter((d) => !world.keycloak.client(d.agentClientId) || !world.gsap.issued.has(d.delegatedAcId)).length;
    const events = await t.broker.store.readEvents(0n, 1_000_000);
    const received = new Set(world.chronicle.received().map((r) => r.deliveryId));
    report.events = events.length;
    report.lostEvents = events.filter((e) => !received.has(eventContentId(e))).length;
    report.duplicateDeliveries = world.chronicle.duplicates;
  } finally {
    report.seconds = +((Date.now() - started) / 1000).toFixed(1);
    await t.close();
    await world.close();
  }
  return report;
}
