/**
 * The broker with its real drivers (Keycloak registrar, GSAP over HTTP,
 * Chronicle audit) against loopback fakes, through the gRPC API: the whole
 * lifecycle, and every failure ending in a clean state.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommandDecision, DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { GSAP_TOKEN, type World, agentClients, startWorld } from "../helpers/real-world.js";
import { eventContentId } from "../../src/clients/chronicle/chronicle-event.js";

describe.each(DRIVERS)("real drivers against fakes (%s)", (driver) => {
  let world: World;
  let t: TestBroker;
  beforeAll(async () => {
    world = await startWorld();
    world.gsap.faultMethod = "POST"; // faults hit the delegated-context request, not the lookup
    world.delegatorContext("ac-alice", ALICE, "CAP_MUTATE");
    world.delegatorContext("ac-alice-read", ALICE, "CAP_READ", 90_000);
    world.delegatorContext("ac-revoked", ALICE);
    world.gsap.setContext({ contextId: "ac-revoked", status: "revoked", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE" });
    t = await startTestBroker({ driver, env: world.env });
  });
  afterAll(async () => {
    await t?.close();
    await world?.close();
  });

  /** Lets the outbox deliver everything recorded so far. */
  const drained = async () => {
    for (let i = 0; i < 50 && (await t.broker.store.auditBacklog()).pending > 0; i++) await t.broker.background.outboxLoop.runOnce().catch(() => 0);
    expect((await t.broker.store.auditBacklog()).pending).toBe(0);
  };

  it("creates a Keycloak client, a GSAP context and a Chronicle record; revoke removes the client", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice", agentModel: "opus" }, as(ALICE));
    const d = c.delegation!;
    expect(d.idpBackend).toBe("keycloak");
    const client = world.keycloak.client(d.agentClientId)!;
    expect(client.attributes).toMatchObject({ delegation_id: d.delegationId, delegator_did: ALICE, agent_type: "claude-code" });
    expect(client.serviceAccountsEnabled).toBe(true);
    expect(client.directAccessGrantsEnabled).toBe(false);
    expect(client.secret).toBe(c.agentCredential!.clientSecret);
    // GSAP was asked on the agent's behalf with the prototype's body.
    const post = world.gsap.requestsOf("POST").at(-1)!;
    expect(post.headers.authorization).toBe(`Bearer ${GSAP_TOKEN}`);
    expect(post.body).toMatchObject({ on_behalf_of: d.agentDid, principal: d.agentDid, session_mode: "delegation", delegator_ac_id: "ac-alice" });
    expect(d.delegatedAcId).toBe(c.delegatedAc!.contextId);

    await t.grpc.unary("revokeDelegation", { delegationId: d.delegationId }, as(ALICE));
    await t.settle();
    expect(world.keycloak.client(d.agentClientId)).toBeUndefined();
    // The delegated context GSAP issued is revoked too, with the end reason.
    const revoke = world.gsap.requestsOf("POST").find((r) => r.path === `/governance/authorize/${d.delegatedAcId}/revoke/`);
    expect(revoke?.body).toMatchObject({ reason: "manual_revocation", delegation_id: d.delegationId });

    await drained();
    const mine = world.chronicle.received().filter((r) => JSON.stringify(r.body).includes(d.delegationId));
    expect(mine.map((r) => r.body.ref)).toEqual(["refs/llm-broker/DELEGATION_CREATED", "refs/llm-broker/DELEGATION_REVOKED"]);
    expect(mine[0]!.deliveryId).toBe(d.chronicleCid);
    // No secret reaches the audit log.
    expect(JSON.stringify(mine)).not.toContain(c.agentCredential!.clientSecret);
  });

  it("clamps the agent to the delegator's real ceiling and expiry from GSAP", async () => {
    const over = await t.grpc
      .unary("createDelegation", { delegatorAcId: "ac-alice-read", scope: { capabilityCeiling: "CAP_MUTATE" } }, as(ALICE))
      .catch((e) => e);
    expect(over.code).toBe(Code.PermissionDenied);
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice-read", scope: { ttl: durationFromMs(3600_000) } }, as(ALICE));
    expect(c.delegation!.capabilityCeiling).toBe("CAP_READ");
    expect(Number(c.delegation!.timeRemaining!.seconds)).toBeLessThanOrEqual(90);
  });

  it("refuses a revoked, unknown or foreign delegator context without creating anything", async () => {
    const before = agentClients(world).length;
    for (const [acId, who] of [["ac-revoked", ALICE], ["ac-nope", ALICE], ["ac-alice", BOB]] as const) {
      const err = await t.grpc.unary("createDelegation", { delegatorAcId: acId }, as(who)).catch((e) => e);
      expect(err.code, acId).toBe(Code.FailedPrecondition);
    }
    expect(agentClients(world).length).toBe(before);
  });

  it("GSAP failing after the client exists: UNAVAILABLE, the client deleted, FAILED audited", async () => {
    const before = agentClients(world).length;
    world.gsap.failNext(1, 500);
    const err = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE)).catch((e) => e);
    expect(err.code).toBe(Code.Unavailable);
    await t.settle(); // the FAILED ending's consequence: the client is deleted
    expect(agentClients(world).length).toBe(before);
    await drained();
    expect(world.chronicle.received().at(-1)!.body.ref).toBe("refs/llm-broker/DELEGATION_FAILED");
  });

  it("a malformed GSAP answer is rejected, never stored, and the client is deleted", async () => {
    const before = agentClients(world).length;
    world.gsap.malformNext("ceiling-above");
    const err = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice", scope: { capabilityCeiling: "CAP_READ" } }, as(ALICE)).catch((e) => e);
    expect(err.code).toBe(Code.Unavailable);
    await t.settle();
    expect(agentClients(world).length).toBe(before);
    const active = await t.grpc.unary("listAgents", { pageSize: 500 }, as(ALICE));
    expect(active.delegations.every((d) => d.capabilityCeiling !== "CAP_ADMIN")).toBe(true);
    // The context GSAP did issue in its rejected answer is revoked, not left valid.
    const issued = [...world.gsap.issued.keys()].at(-1)!;
    expect(world.gsap.isRevoked(issued)).toBe(true);
  });

  it("Keycloak timing out on create: DEADLINE_EXCEEDED or UNAVAILABLE, and no client survives", async () => {
    world.keycloak.inject("create", { kind: "delay", ms: 1500 }); // the work happens after the broker gave up
    const err = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE)).catch((e) => e);
    expect([Code.DeadlineExceeded, Code.Unavailable]).toContain(err.code);
    await new Promise((r) => setTimeout(r, 1700)); // let the late create land
    await t.settle();
    // The FAILED ending's clean-up ran before the late client landed: the orphan sweep finds it,
    // once the ending is no longer recent (until then the identity is the clean-up worker's).
    t.advanceClock(6 * 60_000);
    await t.broker.background.orphanSweep.runOnce();
    const active = new Set((await t.grpc.unary("listAgents", { pageSize: 500 })).delegations.map((d) => d.agentClientId));
    expect(agentClients(world).every((c) => active.has(c.clientId))).toBe(true);
  });

  it("Keycloak answering 401 on an expired admin token: one refresh, and the create succeeds", async () => {
    world.keycloak.expireTokens();
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE));
    expect(c.delegation!.state).toBe(DelegationState.ACTIVE);
  });

  it("Keycloak refusing connections: UNAVAILABLE; deletions wait and finish when it is back", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE));
    await world.keycloak.refuseConnections();
    try {
      const err = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE)).catch((e) => e);
      expect(err.code).toBe(Code.Unavailable);
      await t.grpc.unary("revokeDelegation", { delegationId: c.delegation!.delegationId }, as(ALICE));
      await t.settle();
      const pending = await t.broker.store.dueRetries("idp_delete", Number.MAX_SAFE_INTEGER, 1000);
      expect(pending.map((e) => e.delegationId)).toContain(c.delegation!.delegationId);
    } finally {
      await world.keycloak.acceptConnections();
    }
    t.advanceClock(10 * 60_000); // past the retry's backoff
    await t.settle();
    expect(world.keycloak.client(c.delegation!.agentClientId)).toBeUndefined();
  });

  it("Chronicle down: nothing is lost; 429 with Retry-After is honoured", async () => {
    await world.chronicle.down();
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE));
    const r = await t.grpc.unary("authorizeCommand", { delegationId: c.delegation!.delegationId, command: "ls" }, as(ALICE));
    expect(r.decision).toBe(CommandDecision.ALLOW);
    await t.broker.background.outboxLoop.runOnce().catch(() => 0);
    expect((await t.broker.store.auditBacklog()).pending).toBeGreaterThan(0);
    await world.chronicle.up();
    world.chronicle.failNext(1, 429);
    await drained();
    expect(world.chronicle.received().some((x) => x.deliveryId === c.delegation!.chronicleCid)).toBe(true);
  });

  it("every event in the log reached Chronicle exactly as recorded", async () => {
    await drained();
    const events = await t.broker.store.readEvents(0n, 10_000);
    const received = new Set(world.chronicle.received().map((r) => r.deliveryId));
    expect(events.length).toBeGreaterThan(5);
    // Each event's content id is a function of the stored event.
    expect(events.filter((e) => !received.has(eventContentId(e)))).toEqual([]);
  });
});
