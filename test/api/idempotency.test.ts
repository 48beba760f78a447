/**
 * request_id makes Create and Revoke safe to retry: the same id replays the
 * first answer and creates nothing; the same id with another request fails.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { flakyGsap } from "../helpers/fakes.js";

describe.each(DRIVERS)("idempotent retries (%s)", (driver) => {
  let t: TestBroker;
  const gsap = flakyGsap();
  beforeAll(async () => {
    t = await startTestBroker({ driver, overrides: { gsap: gsap.gsap } });
  });
  afterAll(async () => {
    await t?.close();
  });

  const count = async () => (await t.grpc.unary("listAgents", { pageSize: 500 })).totalSize;

  it("replays the first CreateDelegation answer without the secret and creates nothing new", async () => {
    const before = await count();
    const req = { delegatorAcId: "ac-1", requestId: "req-create-1", scope: { maxCommands: 7 } };
    const first = await t.grpc.unary("createDelegation", req, as(ALICE));
    const again = await t.connect.createDelegation(req, { headers: as(ALICE) });
    expect(again.delegation!.delegationId).toBe(first.delegation!.delegationId);
    expect(again.agentPrincipal).toEqual(first.agentPrincipal);
    expect(again.delegatedAc!.contextId).toBe(first.delegatedAc!.contextId);
    expect(again.agentCredential!.clientId).toBe(first.agentCredential!.clientId);
    expect(first.agentCredential!.clientSecret).not.toBe("");
    expect(again.agentCredential!.clientSecret).toBe("");
    expect(await count()).toBe(before + 1);
  });

  it("scopes request ids to the caller", async () => {
    const req = { delegatorAcId: "ac-1", requestId: "shared-id" };
    const a = await t.grpc.unary("createDelegation", req, as(ALICE));
    const b = await t.grpc.unary("createDelegation", req, as(BOB));
    expect(a.delegation!.delegationId).not.toBe(b.delegation!.delegationId);
    expect(b.delegation!.delegatorDid).toBe(BOB);
  });

  it("answers ALREADY_EXISTS for the same request_id with a different request", async () => {
    await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", requestId: "req-create-2" }, as(ALICE));
    const err = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-2", requestId: "req-create-2" }, as(ALICE)).catch((e) => e);
    expect(err.code).toBe(Code.AlreadyExists);
  });

  it("creates exactly one delegation for 10 concurrent retries", async () => {
    const before = await count();
    const req = { delegatorAcId: "ac-1", requestId: "req-create-concurrent" };
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => t.grpc.unary("createDelegation", req, as(ALICE))));
    const ok = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = results.flatMap((r) => (r.status === "rejected" ? [r.reason as { code: number }] : []));
    // Either the replay (same id) or "in progress, retry" (ABORTED): never a second delegation.
    expect(new Set(ok.map((r) => r.delegation!.delegationId)).size).toBe(1);
    expect(failed.every((e) => e.code === Code.Aborted)).toBe(true);
    expect(ok.filter((r) => r.agentCredential!.clientSecret !== "").length).toBe(1);
    expect(await count()).toBe(before + 1);
  });

  it("lets a retry with the same id succeed after the first attempt failed upstream", async () => {
    gsap.state.failDelegate = true;
    const req = { delegatorAcId: "ac-1", requestId: "req-create-retry" };
    const err = await t.grpc.unary("createDelegation", req, as(ALICE)).catch((e) => e);
    expect(err.code).toBe(Code.Unavailable);
    gsap.state.failDelegate = false;
    const ok = await t.grpc.unary("createDelegation", req, as(ALICE));
    expect(ok.delegation!.state).toBe(DelegationState.ACTIVE);
    expect(ok.agentCredential!.clientSecret).not.toBe("");
  });

  it("replays RevokeDelegation with the same id instead of failing on the already-revoked delegation", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE));
    const id = c.delegation!.delegationId;
    const req = { delegationId: id, reason: "rotating", requestId: "req-revoke-1" };
    const first = await t.grpc.unary("revokeDelegation", req, as(ALICE));
    const again = await t.grpc.unary("revokeDelegation", req, as(ALICE));
    expect(again.delegation!.state).toBe(DelegationState.REVOKED);
    expect(again.delegation!.endTime).toEqual(first.delegation!.endTime);
    const other = await t.grpc.unary("revokeDelegation", { ...req, reason: "other" }, as(ALICE)).catch((e) => e);
    expect(other.code).toBe(Code.AlreadyExists);
    const plain = await t.grpc.unary("revokeDelegation", { delegationId: id }, as(ALICE)).catch((e) => e);
    expect(plain.code).toBe(Code.FailedPrecondition);
  });
});
