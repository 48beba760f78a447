/**
 * The ending path with the real drivers (Keycloak, GSAP over HTTP, Chronicle)
 * against loopback fakes: every way a delegation ends reaches the identity
 * provider and GSAP on its own (no test runs a loop by hand unless it says
 * so), through outages, refusals and a restart, and Watch streams end with
 * UNAVAILABLE when the broker stops.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommandDecision, DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { eventually } from "../helpers/eventually.js";
import { type World, agentClients, startWorld } from "../helpers/real-world.js";
import { collect } from "../helpers/watch.js";

interface Health {
  consequences: Record<"idp_delete" | "gsap_revoke", { pending: number; retrying: number; rejected: number; failing: boolean; lastError: string }>;
  loops: { name: string; leader: boolean }[];
}

describe.each(DRIVERS)("the ending path (%s)", (driver) => {
  let world: World;
  let t: TestBroker;
  beforeAll(async () => {
    world = await startWorld();
    world.delegatorContext("ac-alice", ALICE, "CAP_MUTATE");
    world.delegatorContext("ac-cascade", ALICE, "CAP_MUTATE");
    t = await startTestBroker({ driver, env: { ...world.env, RECONCILE_INTERVAL_SECONDS: "3600" } });
  });
  afterAll(async () => {
    await t?.close();
    await world?.close();
  });

  const create = (acId = "ac-alice", scope = {}) => t.grpc.unary("createDelegation", { delegatorAcId: acId, scope }, as(ALICE));
  const clientGone = (clientId: string) => world.keycloak.client(clientId) === undefined;
  const health = async () => (await (await fetch(`http://127.0.0.1:${t.broker.webPort}/healthz`)).json()) as Health;

  it("a revocation deletes the Keycloak client and revokes the GSAP context at once, with the end reason", async () => {
    const c = await create();
    const d = c.delegation!;
    expect(world.keycloak.client(d.agentClientId)).toBeDefined();
    await t.grpc.unary("revokeDelegation", { delegationId: d.delegationId }, as(ALICE));
    await eventually("client deleted", () => clientGone(d.agentClientId));
    await eventually("context revoked", () => world.gsap.isRevoked(d.delegatedAcId));
    expect(world.gsap.revocations.find((r) => r.contextId === d.delegatedAcId)).toMatchObject({
      reason: "manual_revocation",
      delegationId: d.delegationId,
    });
  });

  it("a cascade over several delegations reaches every client and context, not one now and the rest at the next interval", async () => {
    const made = await Promise.all(Array.from({ length: 5 }, () => create("ac-cascade")));
    // Deletions are slow, so the ending's kick lands while the worker is busy: it must still run again.
    world.keycloak.inject("delete", { kind: "delay", ms: 150 }, 2);
    const res = await t.grpc.unary("revokeDelegatorContext", { delegatorAcId: "ac-cascade", reason: "gsap_revoked" });
    expect(res.revokedDelegationIds).toHaveLength(5);
    await eventually("all five clients deleted", () => made.every((c) => clientGone(c.delegation!.agentClientId)));
    await eventually("all five contexts revoked", () => made.every((c) => world.gsap.isRevoked(c.delegation!.delegatedAcId)));
  });

  it("the command that exhausts the budget ends the delegation and its consequences follow", async () => {
    const c = await create("ac-alice", { maxCommands: 1 });
    const r = await t.grpc.unary("authorizeCommand", { delegationId: c.delegation!.delegationId, command: "ls" }, as(ALICE));
    expect(r.decision).toBe(CommandDecision.ALLOW);
    await eventually("client deleted", () => clientGone(c.delegation!.agentClientId));
    await eventually("context revoked", () => world.gsap.isRevoked(c.delegation!.delegatedAcId));
    expect(world.gsap.revocations.find((x) => x.contextId === c.delegation!.delegatedAcId)?.reason).toBe("command_limit");
  });

  it("expiry ends the delegation and its consequences follow", async () => {
    const c = await create("ac-alice", { ttl: { seconds: 60n, nanos: 0 } });
    t.advanceClock(61_000);
    try {
      await t.broker.background.expiry.runOnce();
      const d = (await t.grpc.unary("getDelegation", { delegationId: c.delegation!.delegationId }, as(ALICE))).delegation!;
      expect(d.state).toBe(DelegationState.EXPIRED);
      await eventually("client deleted", () => clientGone(c.delegation!.agentClientId));
      await eventually("context revoked", () => world.gsap.isRevoked(c.delegation!.delegatedAcId));
      expect(world.gsap.revocations.find((x) => x.contextId === c.delegation!.delegatedAcId)?.reason).toBe("ttl_elapsed");
    } finally {
      t.advanceClock(-61_000);
    }
  });

  it("a GSAP outage delays revocations (retried with backoff, shown in /healthz) and loses none", async () => {
    const c = await create();
    world.gsap.faultPathSuffix = "/revoke/";
    world.gsap.failNext(50, 503);
    try {
      await t.grpc.unary("revokeDelegation", { delegationId: c.delegation!.delegationId }, as(ALICE));
      await eventually("a failed attempt recorded", async () => (await health()).consequences.gsap_revoke.retrying >= 1);
      const h = await health();
      expect(h.consequences.gsap_revoke).toMatchObject({ failing: true });
      expect(h.consequences.gsap_revoke.lastError).toContain("503");
      expect(world.gsap.isRevoked(c.delegation!.delegatedAcId)).toBe(false);
    } finally {
      world.gsap.clearFaults();
      world.gsap.faultPathSuffix = undefined;
    }
    t.advanceClock(10 * 60_000); // the retry comes due
    await t.broker.background.gsapRevoke.runOnce();
    expect(world.gsap.isRevoked(c.delegation!.delegatedAcId)).toBe(true);
    expect((await health()).consequences.gsap_revoke).toMatchObject({ pending: 0, failing: false });
  });

  it("records a revocation GSAP refuses for good (a 4xx) as rejected, reports it, and does not repeat it", async () => {
    const c = await create();
    world.gsap.faultPathSuffix = "/revoke/";
    world.gsap.failNext(1, 409, { detail: "context pinned" });
    try {
      const before = (await health()).consequences.gsap_revoke.rejected;
      await t.grpc.unary("revokeDelegation", { delegationId: c.delegation!.delegationId }, as(ALICE));
      await eventually("rejected", async () => (await health()).consequences.gsap_revoke.rejected === before + 1);
      const attempts = world.gsap.requestsOf("POST").filter((r) => r.path.includes(c.delegation!.delegatedAcId)).length;
      t.advanceClock(10 * 60_000);
      await t.broker.background.gsapRevoke.runOnce();
      expect(world.gsap.requestsOf("POST").filter((r) => r.path.includes(c.delegation!.delegatedAcId))).toHaveLength(attempts);
    } finally {
      world.gsap.clearFaults();
      world.gsap.faultPathSuffix = undefined;
    }
  });

  it("consequences interrupted by a restart are carried out after it", async () => {
    const c = await create();
    await world.keycloak.refuseConnections();
    world.gsap.faultPathSuffix = "/revoke/";
    world.gsap.failNext(50, 500);
    try {
      await t.grpc.unary("revokeDelegation", { delegationId: c.delegation!.delegationId }, as(ALICE));
      await eventually("both attempted", async () => {
        const h = (await health()).consequences;
        return h.idp_delete.retrying >= 1 && h.gsap_revoke.retrying >= 1;
      });
      await t.broker.stop();
    } finally {
      await world.keycloak.acceptConnections();
      world.gsap.clearFaults();
      world.gsap.faultPathSuffix = undefined;
    }
    t.advanceClock(10 * 60_000);
    await t.restart();
    await eventually("client deleted after the restart", () => clientGone(c.delegation!.agentClientId));
    await eventually("context revoked after the restart", () => world.gsap.isRevoked(c.delegation!.delegatedAcId));
    expect(agentClients(world).map((x) => x.clientId)).not.toContain(c.delegation!.agentClientId);
  });

  it("reports every background loop, led by this replica, in /healthz", async () => {
    const h = await health();
    const expiry = driver === "postgresql" ? ["expiry", "expiry-2"] : ["expiry"];
    expect(h.loops.map((l) => l.name).sort()).toEqual(["audit-outbox", "ceremonies", ...expiry, "gsap-approvals", "gsap-revoke", "idp-cleanup", "live-checks", "orphan-sweep", "reconciler"]);
    // The only replica leads every loop (a lease renewal that lapsed on a loaded machine is retaken within a TTL).
    await eventually("every loop led by this replica", async () => (await health()).loops.every((l) => l.leader));
  });
});

describe("Watch when the broker stops", () => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker();
  });
  afterAll(async () => {
    await t?.close();
  });

  it("ends open streams with UNAVAILABLE and the revision to resume from, over grpc-js and Connect", async () => {
    await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE));
    const head = await t.broker.store.headRevision();
    const grpcWatch = collect(t.grpc.watch({ startRevision: 0n }), () => false, 10_000);
    const connectWatch = (async () => {
      try {
        for await (const _ of t.connect.watchDelegations({ startRevision: 0n })) {
          // checkpoints until the broker stops
        }
        return undefined;
      } catch (err) {
        return ConnectError.from(err);
      }
    })();
    await eventually("both streams open", () => t.broker.hub.subscriberCount === 2);
    await t.broker.stop();
    const g = await grpcWatch;
    expect(g.error?.code).toBe(Code.Unavailable);
    expect(g.error?.message).toContain(`start_revision=${head}`);
    const c = await connectWatch;
    expect(c?.code).toBe(Code.Unavailable);
    await t.restart();
  });
});
