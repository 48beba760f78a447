/**
 * The audit outbox: every event reaches the audit sink at least once, in
 * revision order, across outages and restarts; fail-closed mode refuses to
 * grant what cannot be audited and never refuses to end authority.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { eventContentId } from "../../src/clients/chronicle/chronicle-event.js";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { flakyAudit, flakyGsap, flakyRegistrar } from "../helpers/fakes.js";

describe.each(DRIVERS)("audit outbox (%s)", (driver) => {
  let t: TestBroker;
  const audit = flakyAudit();
  beforeAll(async () => {
    t = await startTestBroker({ driver, overrides: { audit: audit.sink } });
  });
  afterAll(async () => {
    await t?.close();
  });
  beforeEach(() => {
    audit.state.down = false;
    audit.state.refuseRevision = undefined;
  });

  const drain = async () => {
    while ((await t.broker.store.auditBacklog()).pending > 0) await t.broker.background.outboxLoop.runOnce();
  };

  it("delivers every event in revision order with the content id stored on the event and the delegation", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE));
    await t.grpc.unary("revokeDelegation", { delegationId: c.delegation!.delegationId }, as(ALICE));
    await drain();
    const mine = audit.state.delivered.filter((d) => d.delegationId === c.delegation!.delegationId);
    expect(mine.map((d) => d.type)).toEqual(["CREATED", "REVOKED"]);
    const revs = audit.state.delivered.map((d) => d.revision);
    expect(revs).toEqual([...revs].sort((a, b) => (a < b ? -1 : 1)));
    // The delegation names its CREATED record; the id is the content hash of the stored event.
    expect(c.delegation!.chronicleCid).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(mine[0]!.cid).toBe(c.delegation!.chronicleCid);
    const [stored] = await t.broker.store.readEvents(mine[0]!.revision - 1n, 1);
    expect(eventContentId(stored!)).toBe(mine[0]!.cid);
  });

  it("loses nothing while the sink is down: the backlog grows, shows in health, and drains in order when it returns", async () => {
    audit.state.down = true;
    const before = audit.state.delivered.length;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await t.grpc.unary("createDelegation", { delegatorAcId: `ac-o${i}` }, as(ALICE))).delegation!.delegationId);
    await t.grpc.unary("revokeDelegation", { delegationId: ids[0]! }, as(ALICE));
    await t.broker.background.outboxLoop.runOnce().catch(() => 0);
    expect(audit.state.delivered.length).toBe(before);
    const health = (await (await fetch(`http://127.0.0.1:${t.broker.webPort}/healthz`)).json()) as {
      audit: { pending: number; failing: boolean; lastError: string };
    };
    expect(health.audit.pending).toBe(6);
    expect(health.audit.failing).toBe(true);
    expect(health.audit.lastError).toContain("unreachable");

    audit.state.down = false;
    await drain();
    const after = audit.state.delivered.slice(before);
    expect(after.map((d) => d.delegationId)).toEqual([...ids, ids[0]]);
    expect(after.map((d) => d.type)).toEqual(["CREATED", "CREATED", "CREATED", "CREATED", "CREATED", "REVOKED"]);
  });

  it("delivers after a restart what was recorded while the sink was down", async () => {
    audit.state.down = true;
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-restart" }, as(ALICE));
    await t.broker.background.outboxLoop.runOnce().catch(() => 0);
    audit.state.down = false;
    await t.restart({ audit: audit.sink });
    await drain();
    expect(audit.state.delivered.some((d) => d.delegationId === c.delegation!.delegationId && d.type === "CREATED")).toBe(true);
  });

  it("records an event the sink refuses for good and moves on to the next", async () => {
    await drain();
    // The outbox runs on every commit: arm the refusal for the next revision before creating.
    audit.state.refuseRevision = (await t.broker.store.headRevision()) + 1n;
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-refused" }, as(ALICE));
    await drain();
    const c2 = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-after" }, as(ALICE));
    await drain();
    expect(audit.state.delivered.some((d) => d.delegationId === c.delegation!.delegationId)).toBe(false);
    expect(audit.state.delivered.some((d) => d.delegationId === c2.delegation!.delegationId)).toBe(true);
    expect((await t.broker.store.auditBacklog()).rejected).toBeGreaterThanOrEqual(1);
  });
});

describe("fail-closed audit", () => {
  let t: TestBroker;
  const audit = flakyAudit();
  const reg = flakyRegistrar();
  const gsap = flakyGsap();
  beforeAll(async () => {
    t = await startTestBroker({
      env: { AUDIT_DRIVER: "chronicle", CHRONICLE_WEBHOOK_URL: "http://127.0.0.1:9/unused", AUDIT_FAIL_CLOSED: "true", AUDIT_FAIL_CLOSED_TIMEOUT_SECONDS: "1" },
      overrides: { audit: audit.sink, registrar: reg.registrar, gsap: gsap.gsap },
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("grants a delegation once its CREATED event is recorded", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE));
    expect(audit.state.delivered.some((d) => d.delegationId === c.delegation!.delegationId && d.type === "CREATED")).toBe(true);
  });

  it("withdraws a grant it cannot record in time, deletes the identity, revokes the context, and answers UNAVAILABLE", async () => {
    audit.state.down = true;
    const before = reg.registrar.registered.size;
    const err = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-2", requestId: "fc-1" }, as(ALICE)).catch((e) => e);
    expect(err.code).toBe(Code.Unavailable);
    expect(err.details).toContain("AUDIT_FAIL_CLOSED");
    const revoked = await t.grpc.unary("listAgents", { state: DelegationState.REVOKED }, as(ALICE));
    const withdrawn = revoked.delegations.find((d) => d.endReason === "audit_unavailable");
    expect(withdrawn).toBeDefined();
    await t.settle(); // the withdrawal's consequences
    expect(reg.registrar.registered.size).toBe(before);
    expect(gsap.state.revoked).toContain(withdrawn!.delegatedAcId);
  });

  it("still revokes during an outage, then refuses new grants at once while the sink is failing", async () => {
    audit.state.down = false;
    const live = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-3" }, as(ALICE));
    audit.state.down = true;
    // Ending authority is never refused; its event waits in the outbox.
    const r = await t.grpc.unary("revokeDelegation", { delegationId: live.delegation!.delegationId }, as(ALICE));
    expect(r.delegation!.state).toBe(DelegationState.REVOKED);
    await t.broker.background.outboxLoop.runOnce().catch(() => 0);
    expect(t.broker.background.outbox.failing).toBe(true);
    const started = Date.now();
    const err = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-4" }, as(ALICE)).catch((e) => e);
    expect(err.code).toBe(Code.Unavailable);
    expect(Date.now() - started).toBeLessThan(900); // refused without waiting for the 1 s timeout
    expect(audit.state.delivered.some((d) => d.delegationId === live.delegation!.delegationId && d.type === "REVOKED")).toBe(false);
    audit.state.down = false;
    // With the sink back, a retry of the withdrawn request id creates afresh.
    const again = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-2", requestId: "fc-1" }, as(ALICE));
    expect(again.delegation!.state).toBe(DelegationState.ACTIVE);
    expect(again.agentCredential!.clientSecret).not.toBe("");
  });
});
