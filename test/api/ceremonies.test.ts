/**
 * Ceremonies through the real transports: CEREMONY_REQUIRED names a
 * ceremony; its delegator (or an admin) approves or denies it, never the
 * agent; the approved command is allowed exactly once and counted; an
 * approval cannot be used twice, for another command, on another
 * delegation, after it expired or after the delegation ended; every change
 * is an event on Watch.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CeremonyState, CommandDecision, DelegationEventType } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { failureOf } from "../helpers/grpc-client.js";
import { collect, events } from "../helpers/watch.js";

describe.each(DRIVERS)("ceremonies (%s)", (driver) => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker({ driver, env: { CEREMONY_TTL_SECONDS: "60" } });
  });
  afterAll(async () => {
    await t?.close();
  });

  const create = async (scope: Record<string, unknown> = { ceremonyRequiredFor: ["deploy"], maxCommands: 5 }, who = ALICE) =>
    (await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", scope }, as(who))).delegation!;
  const authorize = (delegationId: string, command: string, ceremonyId = "", who = ALICE) =>
    t.grpc.unary("authorizeCommand", { delegationId, command, ceremonyId }, as(who));
  const ask = async (delegationId: string, command = "deploy prod") => {
    const r = await authorize(delegationId, command);
    expect(r.decision).toBe(CommandDecision.CEREMONY_REQUIRED);
    expect(r.ceremonyId).toMatch(/^cer_[0-9A-Z]{26}$/);
    return r.ceremonyId;
  };

  it("asks for a ceremony, the delegator approves, and the agent runs that command exactly once, counted", async () => {
    const d = await create();
    const head = await t.broker.store.headRevision();
    const asked = await authorize(d.delegationId, "deploy prod");
    expect(asked).toMatchObject({ decision: CommandDecision.CEREMONY_REQUIRED, reason: "ceremony_required", matchedRule: "deploy", commandsRemaining: 5 });
    const pending = (await t.connect.getCeremony({ ceremonyId: asked.ceremonyId }, { headers: as(ALICE) })).ceremony!;
    expect(pending).toMatchObject({ state: CeremonyState.PENDING, delegationId: d.delegationId, command: "deploy prod", matchedRule: "deploy" });
    expect(pending.commandSha256).toMatch(/^[0-9a-f]{64}$/);

    const approved = (await t.grpc.unary("approveCeremony", { ceremonyId: asked.ceremonyId, reason: "release day" }, as(ALICE))).ceremony!;
    expect(approved).toMatchObject({ state: CeremonyState.APPROVED, decidedBy: ALICE, reason: "release day" });

    // The agent (its DID) runs it with the approval: ALLOW, counted.
    const allow = await authorize(d.delegationId, "deploy prod", asked.ceremonyId, d.agentDid);
    expect(allow).toMatchObject({ reason: "allowed", decision: CommandDecision.ALLOW, commandsRemaining: 4, ceremonyId: asked.ceremonyId });
    expect((await t.connect.getCeremony({ ceremonyId: asked.ceremonyId }, { headers: as(ALICE) })).ceremony!.state).toBe(CeremonyState.USED);
    const again = await authorize(d.delegationId, "deploy prod", asked.ceremonyId, d.agentDid);
    expect(again).toMatchObject({ decision: CommandDecision.DENY, reason: "ceremony_used", commandsRemaining: 4 });
    // Without an approval the command still needs a new ceremony.
    expect((await authorize(d.delegationId, "deploy prod")).decision).toBe(CommandDecision.CEREMONY_REQUIRED);

    const watched = await collect(t.grpc.watch({ startRevision: head, delegationId: d.delegationId }, as(ALICE)), (m) => events(m).length >= 4);
    const ev = events(watched.messages);
    expect(ev.slice(0, 4).map((e) => e.type)).toEqual([
      DelegationEventType.CEREMONY_REQUESTED,
      DelegationEventType.CEREMONY_APPROVED,
      DelegationEventType.CEREMONY_USED,
      DelegationEventType.CEREMONY_REQUESTED,
    ]);
    expect(ev[0]!.ceremony!.ceremonyId).toBe(asked.ceremonyId);
    expect(ev[1]!.actor).toBe(ALICE);
    expect(ev[2]!.ceremony!.state).toBe(CeremonyState.USED);
    expect(ev[2]!.delegation!.commandsExecuted).toBe(1);
  });

  it("allows an approval exactly once under 20 concurrent uses over both transports", async () => {
    const d = await create({ ceremonyRequiredFor: ["deploy"], maxCommands: 50 });
    const id = await ask(d.delegationId);
    await t.grpc.unary("approveCeremony", { ceremonyId: id, reason: "" }, as(ALICE));
    const req = { delegationId: d.delegationId, command: "deploy prod", ceremonyId: id };
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        i % 2 === 0 ? authorize(d.delegationId, "deploy prod", id) : t.connect.authorizeCommand(req, { headers: as(ALICE) }),
      ),
    );
    expect(answers.filter((a) => a.decision === CommandDecision.ALLOW)).toHaveLength(1);
    expect(new Set(answers.filter((a) => a.decision !== CommandDecision.ALLOW).map((a) => a.reason))).toEqual(new Set(["ceremony_used"]));
    expect((await t.grpc.unary("getDelegation", { delegationId: d.delegationId }, as(ALICE))).delegation!.commandsExecuted).toBe(1);
  });

  it("never lets the agent approve, nor anyone who cannot see the delegation", async () => {
    const d = await create();
    const id = await ask(d.delegationId);
    expect(await failureOf(t.grpc.unary("approveCeremony", { ceremonyId: id }, as(d.agentDid)))).toEqual({ code: Code.PermissionDenied, reason: "DELEGATOR_ONLY" });
    expect(await failureOf(t.grpc.unary("approveCeremony", { ceremonyId: id }, as(BOB)))).toEqual({ code: Code.NotFound, reason: "CEREMONY_NOT_FOUND" });
    expect(await failureOf(t.grpc.unary("getCeremony", { ceremonyId: id }, as(BOB)))).toEqual({ code: Code.NotFound, reason: "CEREMONY_NOT_FOUND" });
    // The agent may read it (it waits for the decision); an admin may decide it.
    expect((await t.grpc.unary("getCeremony", { ceremonyId: id }, as(d.agentDid))).ceremony!.state).toBe(CeremonyState.PENDING);
    expect((await t.grpc.unary("denyCeremony", { ceremonyId: id, reason: "not today" }, as(""))).ceremony!.state).toBe(CeremonyState.DENIED);
    expect((await authorize(d.delegationId, "deploy prod", id)).reason).toBe("ceremony_denied");
    expect(await failureOf(t.grpc.unary("approveCeremony", { ceremonyId: id }, as(ALICE)))).toEqual({ code: Code.FailedPrecondition, reason: "CEREMONY_NOT_PENDING" });
  });

  it("refuses an approval for another command, on another delegation, or before it is approved", async () => {
    const d = await create();
    const other = await create();
    const id = await ask(d.delegationId, "deploy prod");
    expect((await authorize(d.delegationId, "deploy prod", id)).reason).toBe("ceremony_pending");
    await t.grpc.unary("approveCeremony", { ceremonyId: id }, as(ALICE));
    expect(await authorize(d.delegationId, "deploy staging", id)).toMatchObject({ decision: CommandDecision.DENY, reason: "ceremony_other_command" });
    expect(await authorize(other.delegationId, "deploy prod", id)).toMatchObject({ decision: CommandDecision.DENY, reason: "ceremony_not_found" });
    expect((await authorize(d.delegationId, "rm -rf /tmp/x", id)).decision).toBe(CommandDecision.DENY);
    // Refused uses leave the approval as it was: the right command on the right delegation still runs once.
    expect((await authorize(d.delegationId, "deploy prod", id)).decision).toBe(CommandDecision.ALLOW);
    expect(await failureOf(authorize(d.delegationId, "deploy prod", "cer_bogus"))).toEqual({ code: Code.InvalidArgument, reason: "INVALID_FIELD" });
  });

  it("expires ceremonies not decided or used in time, and those of a delegation that ended", async () => {
    const d = await create();
    const late = await ask(d.delegationId);
    const approvedLate = await ask(d.delegationId, "deploy canary");
    await t.grpc.unary("approveCeremony", { ceremonyId: approvedLate }, as(ALICE));
    t.advanceClock(61_000);
    expect((await authorize(d.delegationId, "deploy canary", approvedLate)).reason).toBe("ceremony_expired");
    expect(await failureOf(t.grpc.unary("approveCeremony", { ceremonyId: late }, as(ALICE)))).toEqual({ code: Code.FailedPrecondition, reason: "CEREMONY_NOT_PENDING" });
    await t.broker.background.ceremonies.runOnce();
    for (const id of [late, approvedLate]) {
      const c = (await t.grpc.unary("getCeremony", { ceremonyId: id }, as(ALICE))).ceremony!;
      expect([c.state, c.reason]).toEqual([CeremonyState.EXPIRED, "expired"]);
    }

    const ended = await create();
    const open = await ask(ended.delegationId);
    await t.grpc.unary("approveCeremony", { ceremonyId: open }, as(ALICE));
    await t.grpc.unary("revokeDelegation", { delegationId: ended.delegationId }, as(ALICE));
    expect((await authorize(ended.delegationId, "deploy prod", open)).reason).toBe("delegation_revoked");
    await t.broker.background.ceremonies.runOnce();
    const c = (await t.grpc.unary("getCeremony", { ceremonyId: open }, as(ALICE))).ceremony!;
    expect([c.state, c.reason]).toEqual([CeremonyState.EXPIRED, "delegation_ended"]);
  });

  it("lists the caller's pending ceremonies, a page at a time", async () => {
    const d = await create();
    const ids = [await ask(d.delegationId, "deploy a"), await ask(d.delegationId, "deploy b"), await ask(d.delegationId, "deploy c")];
    const first = await t.grpc.unary("listCeremonies", { delegationId: d.delegationId, pageSize: 2 }, as(ALICE));
    expect(first.ceremonies.map((c) => c.ceremonyId)).toEqual(ids.slice(0, 2));
    const second = await t.grpc.unary("listCeremonies", { delegationId: d.delegationId, pageSize: 2, pageToken: first.nextPageToken }, as(ALICE));
    expect(second.ceremonies.map((c) => c.ceremonyId)).toEqual(ids.slice(2));
    expect(second.nextPageToken).toBe("");
    const mine = await t.grpc.unary("listCeremonies", { pageSize: 500 }, as(ALICE));
    expect(mine.ceremonies.map((c) => c.ceremonyId)).toEqual(expect.arrayContaining(ids));
    expect((await t.grpc.unary("listCeremonies", { pageSize: 500 }, as(BOB))).ceremonies.filter((c) => ids.includes(c.ceremonyId))).toEqual([]);
    expect((await t.grpc.unary("listCeremonies", { delegationId: d.delegationId }, as(BOB))).ceremonies).toEqual([]);
  });

  it("lets a delegator ask for no ceremonies at all, explicitly; the default keeps them", async () => {
    const none = await create({ noCeremonies: true });
    expect(none.ceremonyRequiredFor).toEqual([]);
    expect((await authorize(none.delegationId, "psql -c 'DROP TABLE t'")).decision).toBe(CommandDecision.ALLOW);
    const plain = await create({});
    expect(plain.ceremonyRequiredFor).toEqual(["delete", "destroy", "drop"]);
    expect((await authorize(plain.delegationId, "psql -c 'DROP TABLE t'")).decision).toBe(CommandDecision.CEREMONY_REQUIRED);
    const both = await failureOf(t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", scope: { noCeremonies: true, ceremonyRequiredFor: ["x"] } }, as(ALICE)));
    expect(both).toEqual({ code: Code.InvalidArgument, reason: "INVALID_FIELD" });
  });
});
