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
    expect([first.replayed, first.credentialRotated]).toEqual([false, false]);
    expect([again.replayed, again.credentialRotated]).toEqual([true, false]);
    expect(await count()).toBe(before + 1);
  });

  /** Puts a key in the state a crash right after the commit leaves: the answer stored, never handed out. */
  async function loseAnswer(requestId: string): Promise<void> {
    const ref = { scope: ALICE, method: "CreateDelegation", requestId };
    const record = await t.broker.store.getIdempotency(ref);
    expect(record?.answeredTime).not.toBeNull();
    await t.broker.store.unmarkAnswered(ref, record!.answeredTime!);
    expect((await t.broker.store.getIdempotency(ref))?.answeredTime).toBeNull();
  }

  it("hands an answer nobody received to the retry, with a rotated secret, once", async () => {
    const req = { delegatorAcId: "ac-1", requestId: "req-create-lost" };
    const first = await t.grpc.unary("createDelegation", req, as(ALICE));
    await loseAnswer(req.requestId);
    // Within the hand-out window the first request may still be answering: the retry waits for it.
    const early = await t.grpc.unary("createDelegation", req, as(ALICE), 300).catch((e) => e);
    expect(early.code).toBe(Code.DeadlineExceeded);
    await new Promise((r) => setTimeout(r, 100)); // the server sees that deadline pass too
    t.advanceClock(10_000);
    const retry = await t.connect.createDelegation(req, { headers: as(ALICE) });
    expect(retry.delegation!.delegationId).toBe(first.delegation!.delegationId);
    expect([retry.replayed, retry.credentialRotated]).toEqual([true, true]);
    expect(retry.agentCredential!.clientSecret).not.toBe("");
    expect(retry.agentCredential!.clientSecret).not.toBe(first.agentCredential!.clientSecret);
    // Handed out now: a further retry replays without a secret.
    const again = await t.grpc.unary("createDelegation", req, as(ALICE));
    expect([again.replayed, again.credentialRotated, again.agentCredential!.clientSecret]).toEqual([true, false, ""]);
  });

  it("rotates nothing for a lost answer whose delegation has ended", async () => {
    const req = { delegatorAcId: "ac-1", requestId: "req-create-lost-ended" };
    const first = await t.grpc.unary("createDelegation", req, as(ALICE));
    await t.grpc.unary("revokeDelegation", { delegationId: first.delegation!.delegationId }, as(ALICE));
    await loseAnswer(req.requestId);
    t.advanceClock(10_000);
    const retry = await t.grpc.unary("createDelegation", req, as(ALICE));
    expect([retry.replayed, retry.credentialRotated, retry.agentCredential!.clientSecret]).toEqual([true, false, ""]);
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

  it("answers 10 concurrent retries with one delegation and one secret", async () => {
    const before = await count();
    const req = { delegatorAcId: "ac-1", requestId: "req-create-concurrent" };
    // Retries that arrive while the first is in flight wait for its answer: none is refused.
    const results = await Promise.all(Array.from({ length: 10 }, () => t.grpc.unary("createDelegation", req, as(ALICE))));
    expect(new Set(results.map((r) => r.delegation!.delegationId)).size).toBe(1);
    expect(results.filter((r) => r.agentCredential!.clientSecret !== "")).toHaveLength(1);
    expect(results.filter((r) => !r.replayed)).toHaveLength(1);
    expect(results.some((r) => r.credentialRotated)).toBe(false);
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
