/**
 * RevokeDelegatorContext ends everything made from a delegator context,
 * nested delegations included; the command budget holds under concurrency.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommandDecision, DelegationEventType, DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { collect, events } from "../helpers/watch.js";

describe.each(DRIVERS)("cascade and budget (%s)", (driver) => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker({ driver, env: { MAX_DELEGATION_DEPTH: "2" } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("revokes every live delegation made from the revoked context, nested ones too, and nothing else", async () => {
    const a1 = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice-main" }, as(ALICE));
    const a2 = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice-main" }, as(ALICE));
    const other = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice-other" }, as(ALICE));
    const bobs = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-bob-main" }, as(BOB));
    // The agent of a1 delegates on, from its own delegated context (depth 2).
    const nested = await t.grpc.unary(
      "createDelegation",
      { delegatorAcId: a1.delegatedAc!.contextId, scope: { capabilityCeiling: "CAP_READ" } },
      as(a1.delegation!.agentDid),
    );
    expect(nested.delegation!.depth).toBe(2);
    const head = await t.broker.store.headRevision();

    const res = await t.grpc.unary("revokeDelegatorContext", { delegatorAcId: "ac-alice-main" });
    expect(new Set(res.revokedDelegationIds)).toEqual(
      new Set([a1.delegation!.delegationId, a2.delegation!.delegationId, nested.delegation!.delegationId]),
    );
    const state = async (id: string) => (await t.grpc.unary("getDelegation", { delegationId: id })).delegation!;
    expect((await state(a1.delegation!.delegationId)).endReason).toBe("delegator_ac_revoked");
    expect((await state(nested.delegation!.delegationId)).endReason).toBe("parent_delegation_ended");
    expect((await state(nested.delegation!.delegationId)).state).toBe(DelegationState.REVOKED);
    expect((await state(other.delegation!.delegationId)).state).toBe(DelegationState.ACTIVE);
    expect((await state(bobs.delegation!.delegationId)).state).toBe(DelegationState.ACTIVE);

    const got = await collect(t.grpc.watch({ startRevision: head }), (m) => events(m).length >= 3);
    expect(events(got.messages).every((e) => e.type === DelegationEventType.REVOKED)).toBe(true);
    // A second cascade finds nothing left.
    expect((await t.grpc.unary("revokeDelegatorContext", { delegatorAcId: "ac-alice-main" })).revokedDelegationIds).toEqual([]);
  });

  it("refuses a delegation deeper than MAX_DELEGATION_DEPTH and a nested ceiling above the parent's", async () => {
    const a = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-d", scope: { capabilityCeiling: "CAP_READ" } }, as(ALICE));
    const over = await t.grpc
      .unary("createDelegation", { delegatorAcId: a.delegatedAc!.contextId, scope: { capabilityCeiling: "CAP_MUTATE" } }, as(a.delegation!.agentDid))
      .catch((e) => e);
    expect(over.code).toBe(7);
    const b = await t.grpc.unary("createDelegation", { delegatorAcId: a.delegatedAc!.contextId }, as(a.delegation!.agentDid));
    const tooDeep = await t.grpc
      .unary("createDelegation", { delegatorAcId: b.delegatedAc!.contextId }, as(b.delegation!.agentDid))
      .catch((e) => e);
    expect(tooDeep.code).toBe(7);
    expect(tooDeep.details).toContain("depth");
  });

  it("allows exactly max_commands of 50 concurrent AuthorizeCommand calls and ends the delegation once", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-budget", scope: { maxCommands: 20 } }, as(ALICE));
    const id = c.delegation!.delegationId;
    const head = await t.broker.store.headRevision();
    const half = (n: number) => Array.from({ length: n }, (_, i) =>
      i % 2 === 0
        ? t.grpc.unary("authorizeCommand", { delegationId: id, command: `echo ${i}` }, as(ALICE)).then((r) => r.decision)
        : t.connect.authorizeCommand({ delegationId: id, command: `echo ${i}` }, { headers: as(ALICE) }).then((r) => r.decision),
    );
    const decisions = await Promise.all(half(50));
    expect(decisions.filter((d) => d === CommandDecision.ALLOW).length).toBe(20);
    expect(decisions.filter((d) => d === CommandDecision.DENY).length).toBe(30);
    const d = (await t.grpc.unary("getDelegation", { delegationId: id }, as(ALICE))).delegation!;
    expect(d.commandsExecuted).toBe(20);
    expect(d.state).toBe(DelegationState.EXPIRED);
    expect(d.endReason).toBe("command_limit");
    const got = await collect(t.grpc.watch({ startRevision: head, delegationId: id }), (m) => m.some((x) => x.kind.case === "checkpoint"));
    expect(events(got.messages).map((e) => e.type)).toEqual([DelegationEventType.COMMAND_LIMIT_REACHED]);
  });

  it("counts 200 concurrent ALLOWs over 4 delegations exactly, each caller with its own count (group commit)", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      ids.push((await t.grpc.unary("createDelegation", { delegatorAcId: `ac-group-${i}`, scope: { maxCommands: 1000 } }, as(ALICE))).delegation!.delegationId);
    }
    const calls = Array.from({ length: 200 }, (_, i) => {
      const id = ids[i % 4]!;
      return (i % 3 === 0
        ? t.connect.authorizeCommand({ delegationId: id, command: "git status" }, { headers: as(ALICE) })
        : t.grpc.unary("authorizeCommand", { delegationId: id, command: "git status" }, as(ALICE))
      ).then((r) => ({ id, decision: r.decision, remaining: r.commandsRemaining }));
    });
    const answers = await Promise.all(calls);
    expect(answers.every((a) => a.decision === CommandDecision.ALLOW)).toBe(true);
    for (const id of ids) {
      // 50 callers of each delegation saw 50 different counts: 999 down to 950, each once.
      const remaining = answers.filter((a) => a.id === id).map((a) => a.remaining).sort((a, b) => b - a);
      expect(remaining).toEqual(Array.from({ length: 50 }, (_, i) => 999 - i));
      expect((await t.grpc.unary("getDelegation", { delegationId: id }, as(ALICE))).delegation!.commandsExecuted).toBe(50);
    }
  });
});

