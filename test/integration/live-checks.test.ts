/**
 * The delegator's access context is re-checked at GSAP (the HTTP driver
 * against the loopback fake) while delegations hang from it: revoked at
 * GSAP without a call to the broker, its delegations end as
 * RevokeDelegatorContext would end them; a lowered ceiling ends those above
 * it; GSAP unreachable keeps the last answer until the staleness limit, then
 * strict denies and lenient allows. And every decision and ceremony
 * transition reaches Chronicle, attributed to whoever caused it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommandDecision, DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { type World, startWorld } from "../helpers/real-world.js";

const BROKER_DID = "did:web:guildhouse.dev/service/llm-broker";

describe.each(DRIVERS)("live checks against GSAP (%s)", (driver) => {
  let world: World;
  let t: TestBroker;
  let lenient: TestBroker;
  beforeAll(async () => {
    world = await startWorld();
    const env = { ...world.env, MAX_DELEGATION_DEPTH: "2", GSAP_CONTEXT_CACHE_SECONDS: "30", GSAP_CONTEXT_MAX_STALENESS_SECONDS: "300", RECONCILE_INTERVAL_SECONDS: "3600" };
    t = await startTestBroker({ driver, env });
    lenient = await startTestBroker({ driver, env: { ...env, GSAP_CONTEXT_STALE_POLICY: "lenient" } });
  });
  afterAll(async () => {
    await t?.close();
    await lenient?.close();
    await world?.close();
  });

  const create = async (b: TestBroker, ac: string, scope: Record<string, unknown> = {}, who = ALICE) =>
    (await b.grpc.unary("createDelegation", { delegatorAcId: ac, scope }, as(who))).delegation!;
  const authorize = (b: TestBroker, id: string, command = "git status") => b.grpc.unary("authorizeCommand", { delegationId: id, command }, as(ALICE));
  const state = async (b: TestBroker, id: string) => (await b.grpc.unary("getDelegation", { delegationId: id }, as(""))).delegation!;
  /** Moves the clock past the cache time and runs one round of checks. */
  const recheck = async (b: TestBroker, ms = 31_000) => {
    b.advanceClock(ms);
    await b.broker.background.liveChecks.runOnce();
    await b.settle();
  };

  it("ends every delegation of a context GSAP revoked, without any call to the broker", async () => {
    world.delegatorContext("ac-live-1", ALICE);
    const a = await create(t, "ac-live-1");
    const b = await create(t, "ac-live-1");
    const child = await create(t, a.delegatedAcId, {}, a.agentDid);
    const gets = world.gsap.requestsOf("GET").length;
    await recheck(t);
    expect(world.gsap.requestsOf("GET").length).toBe(gets + 1); // one question per context, not per delegation
    expect((await state(t, a.delegationId)).state).toBe(DelegationState.ACTIVE);

    world.delegatorContext("ac-live-1", ALICE, "CAP_MUTATE", -1); // expired at GSAP
    world.gsap.setContext({ ...world.gsap.contexts.get("ac-live-1")!, status: "revoked" });
    await recheck(t);
    for (const id of [a.delegationId, b.delegationId]) {
      const d = await state(t, id);
      expect([d.state, d.endReason]).toEqual([DelegationState.REVOKED, "delegator_ac_revoked"]);
    }
    expect((await state(t, child.delegationId)).endReason).toBe("parent_delegation_ended");
    expect(world.gsap.isRevoked(a.delegatedAcId)).toBe(true);
    // Attributed to the broker itself in the audit log.
    const record = world.chronicle.received().find((r) => r.body.ref === "refs/llm-broker/DELEGATION_CASCADE_REVOKED" && r.text.includes(a.delegationId));
    expect((record?.body.pusher as { login: string }).login).toBe(BROKER_DID);
  });

  it("ends the delegations above a ceiling GSAP lowered, and keeps the rest", async () => {
    world.delegatorContext("ac-live-2", ALICE, "CAP_MUTATE");
    const high = await create(t, "ac-live-2", { capabilityCeiling: "CAP_MUTATE" });
    const low = await create(t, "ac-live-2", { capabilityCeiling: "CAP_READ" });
    world.delegatorContext("ac-live-2", ALICE, "CAP_READ");
    await recheck(t);
    const h = await state(t, high.delegationId);
    expect([h.state, h.endReason]).toEqual([DelegationState.REVOKED, "delegator_ceiling_lowered"]);
    expect((await state(t, low.delegationId)).state).toBe(DelegationState.ACTIVE);
  });

  it("keeps the last answer while GSAP is unreachable; past the staleness limit strict denies and lenient allows", async () => {
    world.delegatorContext("ac-live-3", ALICE);
    const strict = await create(t, "ac-live-3");
    const loose = await create(lenient, "ac-live-3");
    world.gsap.faultMethod = "GET";
    world.gsap.failNext(10_000, 503);
    try {
      await recheck(t, 120_000);
      await recheck(lenient, 120_000);
      // Two minutes without an answer: the last one stands.
      expect((await authorize(t, strict.delegationId)).decision).toBe(CommandDecision.ALLOW);
      await recheck(t, 200_000);
      await recheck(lenient, 200_000);
      expect(await authorize(t, strict.delegationId)).toMatchObject({ decision: CommandDecision.DENY, reason: "delegator_context_unverified" });
      expect((await authorize(lenient, loose.delegationId)).decision).toBe(CommandDecision.ALLOW);
      expect((await state(t, strict.delegationId)).state).toBe(DelegationState.ACTIVE); // not revoked: GSAP said nothing
    } finally {
      world.gsap.clearFaults();
      world.gsap.faultMethod = undefined;
    }
    await recheck(t);
    expect((await authorize(t, strict.delegationId)).decision).toBe(CommandDecision.ALLOW);
  });

  it("records refusals and every ceremony transition in Chronicle, with the command hashed and who decided", async () => {
    world.delegatorContext("ac-live-4", ALICE);
    const d = await create(t, "ac-live-4", { ceremonyRequiredFor: ["deploy"], prohibitedCommands: ["rm -rf"] });
    const secretish = "rm -rf /srv/customer-data";
    expect((await authorize(t, d.delegationId, secretish)).decision).toBe(CommandDecision.DENY);
    const asked = await authorize(t, d.delegationId, "deploy prod");
    await t.grpc.unary("approveCeremony", { ceremonyId: asked.ceremonyId, reason: "ok" }, as(ALICE));
    expect((await t.grpc.unary("authorizeCommand", { delegationId: d.delegationId, command: "deploy prod", ceremonyId: asked.ceremonyId }, as(d.agentDid))).decision).toBe(CommandDecision.ALLOW);
    expect((await authorize(t, d.delegationId)).decision).toBe(CommandDecision.ALLOW);
    await t.settle();
    const mine = world.chronicle.received().filter((r) => r.text.includes(d.delegationId));
    const kinds = mine.map((r) => r.body.ref);
    expect(kinds).toEqual([
      "refs/llm-broker/DELEGATION_CREATED",
      "refs/llm-broker/DELEGATION_COMMAND_DECIDED", // the DENY
      "refs/llm-broker/DELEGATION_COMMAND_DECIDED", // the CEREMONY_REQUIRED
      "refs/llm-broker/DELEGATION_CEREMONY_REQUESTED",
      "refs/llm-broker/DELEGATION_CEREMONY_APPROVED",
      "refs/llm-broker/DELEGATION_CEREMONY_USED",
    ]); // ALLOWs are not recorded by default (AUDIT_COMMANDS=refusals)
    const message = (r: (typeof mine)[number]) => JSON.parse((r.body.commits as { message: string }[])[0]!.message.replace(/^[A-Z_]+: /, "")) as Record<string, unknown>;
    const deny = message(mine[1]!);
    expect(deny).toMatchObject({ event_code: "0x3020", decision: "DENY", decision_reason: "prohibited_command", matched_rule: "rm -rf", actor: ALICE });
    expect(deny.command_sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(mine)).not.toContain(secretish);
    const approved = message(mine[4]!);
    expect(approved).toMatchObject({ event_code: "0x3011", decided_by: ALICE, ceremony_id: asked.ceremonyId, actor: ALICE });
    expect((mine[4]!.body.pusher as { login: string }).login).toBe(ALICE);
    expect(message(mine[5]!)).toMatchObject({ event_code: "0x3014", actor: d.agentDid });
    expect(JSON.stringify(mine)).not.toContain('"command":"deploy prod"');
  });

  it("records ALLOWs too with AUDIT_COMMANDS=all, and nothing with none; the command in clear only with AUDIT_COMMANDS_IN_CLEAR", async () => {
    for (const [mode, clear, expected] of [
      ["all", "true", 2],
      ["none", "false", 0],
    ] as const) {
      const b = await startTestBroker({ driver, env: { ...world.env, AUDIT_COMMANDS: mode, AUDIT_COMMANDS_IN_CLEAR: clear } });
      try {
        world.delegatorContext("ac-live-5", BOB);
        const d = await create(b, "ac-live-5", { prohibitedCommands: ["shutdown"] }, BOB);
        await b.grpc.unary("authorizeCommand", { delegationId: d.delegationId, command: "make test" }, as(BOB));
        await b.grpc.unary("authorizeCommand", { delegationId: d.delegationId, command: "shutdown now" }, as(BOB));
        await b.settle();
        const decided = world.chronicle.received().filter((r) => r.text.includes(d.delegationId) && r.body.ref === "refs/llm-broker/DELEGATION_COMMAND_DECIDED");
        expect(decided, mode).toHaveLength(expected);
        if (mode === "all") expect(decided.map((r) => r.text.includes('\\"command\\":\\"make test\\"') || r.text.includes('"command":"make test"'))).toContain(true);
      } finally {
        await b.close();
      }
    }
  });
});
