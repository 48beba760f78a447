/**
 * GSAP's approval flow with the real drivers against the loopback fakes: a
 * delegated-context request answered "pending" keeps the delegation
 * REQUESTED while the broker polls GSAP; approved, it becomes ACTIVE and the
 * credential is handed out once (to the waiting call, or to the retry with
 * the same request_id); denied or timed out, it fails and its identity is
 * deleted. Nobody holds a working credential before the delegation is ACTIVE.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { tokenStatus } from "../fakes/keycloak-fake.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { eventually } from "../helpers/eventually.js";
import { failureOf } from "../helpers/grpc-client.js";
import { type World, agentClients, startWorld } from "../helpers/real-world.js";

describe.each(DRIVERS)("GSAP's approval flow (%s)", (driver) => {
  let world: World;
  let t: TestBroker;
  beforeAll(async () => {
    world = await startWorld();
    world.delegatorContext("ac-approve", ALICE);
    t = await startTestBroker({ driver, env: { ...world.env, CREATE_INFLIGHT_SECONDS: "5", GSAP_APPROVAL_POLL_MAX_SECONDS: "1" } });
  });
  beforeEach(() => {
    world.gsap.approvalFlow = true;
  });
  afterAll(async () => {
    await t?.close();
    await world?.close();
  });

  const create = (requestId = "", deadlineMs = 20_000) =>
    t.grpc.unary("createDelegation", { delegatorAcId: "ac-approve", requestId }, as(ALICE), deadlineMs);
  const get = async (id: string) => (await t.grpc.unary("getDelegation", { delegationId: id }, as(ALICE))).delegation!;
  const newApproval = async (before: number) => {
    await eventually("GSAP to receive the request", () => world.gsap.approvals.size > before);
    return [...world.gsap.approvals.keys()].at(-1)!;
  };

  it("waits for an approval that comes within the call's deadline, then answers ACTIVE with a working credential", async () => {
    const before = world.gsap.approvals.size;
    const call = create("approve-in-call");
    const token = await newApproval(before);
    world.gsap.decideApproval(token, "authorized");
    const c = await call;
    expect(c.delegation!.state).toBe(DelegationState.ACTIVE);
    expect(c.approvalPending).toBe(false);
    expect(c.delegatedAc!.contextId).not.toBe("");
    expect(await tokenStatus(world.keycloak, c.agentCredential!.clientId, c.agentCredential!.clientSecret)).toBe(200);
  });

  it("answers REQUESTED (approval pending) at the deadline; once approved, the retry gets a fresh credential", async () => {
    const before = world.gsap.approvals.size;
    const first = await create("approve-later", 2_500);
    expect(first.approvalPending).toBe(true);
    expect(first.delegation!.state).toBe(DelegationState.REQUESTED);
    expect(first.agentCredential!.clientSecret).toBe("");
    expect(first.delegatedAc).toBeUndefined();
    const id = first.delegation!.delegationId;
    // Still pending: a retry says so again, and the reconciler leaves it alone past CREATE_INFLIGHT_SECONDS.
    expect((await create("approve-later", 2_500)).approvalPending).toBe(true);
    t.advanceClock(10_000);
    await t.broker.background.reconciler.runOnce();
    expect((await get(id)).state).toBe(DelegationState.REQUESTED);

    world.gsap.decideApproval(await newApproval(before), "authorized");
    await eventually("the delegation to become ACTIVE", async () => (await get(id)).state === DelegationState.ACTIVE, 10_000);
    const retry = await create("approve-later");
    expect([retry.replayed, retry.credentialRotated, retry.approvalPending]).toEqual([true, true, false]);
    expect(retry.delegation!.delegationId).toBe(id);
    const { clientId, clientSecret } = retry.agentCredential!;
    expect(await tokenStatus(world.keycloak, clientId, clientSecret)).toBe(200);
    // Handed out once.
    expect((await create("approve-later")).agentCredential!.clientSecret).toBe("");
  });

  it("fails a denied request, tells the waiting caller, and deletes the identity", async () => {
    const before = world.gsap.approvals.size;
    const clients = agentClients(world).length;
    const call = failureOf(create("deny-me"));
    world.gsap.decideApproval(await newApproval(before), "denied");
    expect(await call).toEqual({ code: Code.FailedPrecondition, reason: "GSAP_DENIED" });
    const failed = (await t.grpc.unary("listAgents", { state: DelegationState.FAILED, pageSize: 500 }, as(ALICE))).delegations;
    expect(failed.at(-1)!.endReason).toBe("gsap_approval_denied");
    await t.settle();
    expect(agentClients(world)).toHaveLength(clients);
  });

  it("withdraws a create without a request_id whose approval outlasts the call: nobody could ever receive it", async () => {
    const clients = agentClients(world).length;
    expect(await failureOf(create("", 2_500))).toEqual({ code: Code.DeadlineExceeded, reason: "GSAP_APPROVAL_PENDING" });
    await t.settle();
    expect(agentClients(world)).toHaveLength(clients);
  });

  it("fails a request GSAP never decides, after GSAP_APPROVAL_TIMEOUT_SECONDS", async () => {
    const pending = await create("never-decided", 2_500);
    const id = pending.delegation!.delegationId;
    t.advanceClock(901_000);
    await t.broker.background.approvals.runOnce();
    const d = await get(id);
    expect([d.state, d.endReason]).toEqual([DelegationState.FAILED, "gsap_approval_timeout"]);
    // A retry with the same request_id starts afresh.
    world.gsap.approvalFlow = false;
    const again = await create("never-decided");
    expect(again.delegation!.delegationId).not.toBe(id);
    expect(again.delegation!.state).toBe(DelegationState.ACTIVE);
  });
});
