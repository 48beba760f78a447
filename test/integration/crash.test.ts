/**
 * kill -9 in the middle of CreateDelegation, then restart: the reconciler
 * finishes what the crash interrupted. Afterwards there is no active
 * delegation without identity and access context, no orphaned identity in
 * the IdP, and no audit event that did not reach Chronicle.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { openStore } from "../../src/store/open-store.js";
import { ALICE, as } from "../helpers/broker.js";
import { type BrokerProcess, startBrokerProcess } from "../helpers/broker-process.js";
import { type World, agentClients, startWorld } from "../helpers/real-world.js";
import { tokenStatus } from "../fakes/keycloak-fake.js";
import { eventContentId } from "../../src/clients/chronicle/chronicle-event.js";

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, ms = 20_000): Promise<T> {
  const started = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() - started > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("kill -9 during CreateDelegation, then restart", () => {
  let world: World;
  let dir: string;
  let env: Record<string, string>;
  let broker: BrokerProcess | undefined;

  beforeAll(async () => {
    world = await startWorld();
    world.gsap.faultMethod = "POST";
    world.delegatorContext("ac-alice", ALICE);
    dir = mkdtempSync(join(tmpdir(), "lpb-crash-"));
    env = {
      ...world.env,
      DATABASE_URL: `file:${join(dir, "broker.db")}`,
      LLM_BROKER_PORT: "0",
      LLM_BROKER_WEB_PORT: "0",
      LOG_LEVEL: "warn",
      CREATE_INFLIGHT_SECONDS: "1",
      RECONCILE_INTERVAL_SECONDS: "5",
      HTTP_TIMEOUT_SECONDS: "30",
    };
  });
  afterAll(async () => {
    await broker?.kill();
    await world?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("leaves no orphan identity, no half-made delegation and no lost audit event", async () => {
    broker = await startBrokerProcess(env);
    const kept = await broker.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE));
    expect(kept.delegation!.state).toBe(DelegationState.ACTIVE);

    // Crash 1: the identity exists, GSAP has not answered yet.
    const posts = world.gsap.requestsOf("POST").length;
    world.gsap.delayNext(1, 20_000);
    const inflight = broker.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE), 60_000).catch((e) => e);
    await until("GSAP to receive the POST", () => (world.gsap.requestsOf("POST").length > posts ? true : undefined));
    expect(agentClients(world)).toHaveLength(2);
    await broker.kill();
    expect((await inflight).code).toBe(14); // the connection died with the process

    // Crash 2, on restart: Keycloak creates the client only after the broker is gone.
    world.keycloak.inject("create", { kind: "delay", ms: 1500 });
    await new Promise((r) => setTimeout(r, 1100)); // older than CREATE_INFLIGHT_SECONDS
    broker = await startBrokerProcess(env);
    const second = broker.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE), 60_000).catch((e) => e);
    await until("Keycloak to receive the create", () =>
      world.keycloak.requestsTo("create").length >= 3 ? true : undefined,
    );
    await broker.kill();
    await second;
    await new Promise((r) => setTimeout(r, 1700)); // the late client lands in Keycloak

    broker = await startBrokerProcess(env);
    const b = broker;
    // The reconciler fails the interrupted creates and deletes every identity not backing an ACTIVE delegation.
    await until("the IdP to hold only live identities", async () => {
      const active = (await b.grpc.unary("listAgents", { pageSize: 500 })).delegations;
      const clients = agentClients(world).map((c) => c.clientId).sort();
      const live = active.map((d) => d.agentClientId).sort();
      return JSON.stringify(clients) === JSON.stringify(live) ? true : undefined;
    });
    const active = (await b.grpc.unary("listAgents", { pageSize: 500 })).delegations;
    expect(active.map((d) => d.delegationId)).toEqual([kept.delegation!.delegationId]);
    for (const d of active) {
      expect(world.keycloak.client(d.agentClientId)).toBeDefined();
      expect(world.gsap.issued.has(d.delegatedAcId)).toBe(true);
    }
    const failed = (await b.grpc.unary("listAgents", { state: DelegationState.FAILED, pageSize: 500 })).delegations;
    expect(failed.map((d) => d.endReason)).toEqual(["creation_interrupted", "creation_interrupted"]);

    // Every event in the log reached Chronicle.
    await until("the audit backlog to drain", async () => {
      const h = (await (await fetch(`http://127.0.0.1:${b.webPort}/healthz`)).json()) as { audit: { pending: number } };
      return h.audit.pending === 0 ? true : undefined;
    });
    await b.stop();
    broker = undefined;
    const store = await openStore(env.DATABASE_URL!);
    try {
      const events = await store.readEvents(0n, 10_000);
      const received = new Set(world.chronicle.received().map((r) => r.deliveryId));
      expect(events.map((e) => e.type)).toEqual(["CREATED", "FAILED", "FAILED"]);
      // Each event's content id is a function of the stored event.
    expect(events.filter((e) => !received.has(eventContentId(e)))).toEqual([]);
    } finally {
      await store.close();
    }
  }, 120_000);

  it("hands a create whose answer died with the broker to the retry, with a new secret that works", async () => {
    const lostEnv = {
      ...env,
      DATABASE_URL: `file:${join(dir, "lost-answer.db")}`,
      // The create commits, then waits for Chronicle to record it: the broker dies in that wait.
      AUDIT_FAIL_CLOSED: "true",
      AUDIT_FAIL_CLOSED_TIMEOUT_SECONDS: "1",
    };
    broker = await startBrokerProcess(lostEnv);
    world.chronicle.failNext(1000, 503);
    const req = { delegatorAcId: "ac-alice", requestId: "lost-answer-1" };
    const first = broker.grpc.unary("createDelegation", req, as(ALICE), 60_000).catch((e) => e);
    const ref = { scope: ALICE, method: "CreateDelegation", requestId: req.requestId };
    const store = await openStore(lostEnv.DATABASE_URL);
    try {
      await until("the create to commit", async () => ((await store.getIdempotency(ref))?.response ? true : undefined));
      await broker.kill();
      expect((await first).code).toBe(14);
      expect((await store.getIdempotency(ref))?.answeredTime).toBeNull();
    } finally {
      await store.close();
    }
    world.chronicle.clearFaults();

    broker = await startBrokerProcess(lostEnv);
    // The retry waits out the window in which the dead request could still have answered, then hands the answer out.
    const retry = await broker.grpc.unary("createDelegation", req, as(ALICE), 30_000);
    expect([retry.replayed, retry.credentialRotated]).toEqual([true, true]);
    const clientId = retry.agentCredential!.clientId;
    expect(await tokenStatus(world.keycloak, clientId, retry.agentCredential!.clientSecret)).toBe(200);
    expect(world.keycloak.requestsTo("regenerateSecret").length).toBeGreaterThanOrEqual(1);
    // Once handed out, a further retry gets the answer without a secret, and rotates nothing.
    const rotations = world.keycloak.requestsTo("regenerateSecret").length;
    const again = await broker.grpc.unary("createDelegation", req, as(ALICE));
    expect([again.replayed, again.credentialRotated, again.agentCredential!.clientSecret]).toEqual([true, false, ""]);
    expect(world.keycloak.requestsTo("regenerateSecret")).toHaveLength(rotations);
    expect(await tokenStatus(world.keycloak, clientId, retry.agentCredential!.clientSecret)).toBe(200);
    await broker.stop();
    broker = undefined;
  }, 120_000);
});
