/**
 * The whole lifecycle of a delegation through the real listeners, on both
 * storage drivers: create, read, list, authorize, revoke, and what each
 * transport returns.
 */
import { toJsonString } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CommandDecision,
  DelegationEventType,
  DelegationState,
  GetDelegationResponseSchema,
} from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { collect, events } from "../helpers/watch.js";

describe.each(DRIVERS)("delegation lifecycle (%s)", (driver) => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker({ driver });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("creates an ACTIVE delegation with identity, delegated context and a one-time credential", async () => {
    const res = await t.grpc.unary(
      "createDelegation",
      {
        delegatorAcId: "ac-alice-1",
        agentModel: "claude-opus",
        scope: { capabilityCeiling: "CAP_READ", maxCommands: 10, ttl: durationFromMs(10 * 60_000), prohibitedCommands: ["shutdown"] },
      },
      as(ALICE),
    );
    const d = res.delegation!;
    expect(d.delegationId).toMatch(/^del_[0-9A-Z]{26}$/);
    expect(d.state).toBe(DelegationState.ACTIVE);
    expect(d.agentType).toBe("claude-code");
    expect(d.agentModel).toBe("claude-opus");
    expect(d.delegatorDid).toBe(ALICE);
    expect(d.delegatorAcId).toBe("ac-alice-1");
    expect(d.capabilityCeiling).toBe("CAP_READ");
    expect(d.ceremonyRequiredFor).toEqual(["delete", "destroy", "drop"]);
    expect(d.prohibitedCommands).toEqual(["shutdown"]);
    expect(d.maxCommands).toBe(10);
    expect(d.commandsRemaining).toBe(10);
    expect(d.idpBackend).toBe("stub");
    expect(d.accordTemplate).toBe("ai-delegation-standard");
    expect(d.inheritCorpus).toBe(true);
    expect(d.depth).toBe(1);
    const ttlMs = Number(d.expireTime!.seconds - d.createTime!.seconds) * 1000;
    expect(ttlMs).toBeGreaterThanOrEqual(599_000);
    expect(ttlMs).toBeLessThanOrEqual(601_000);
    expect(res.agentPrincipal!.did).toBe(d.agentDid);
    expect(res.agentPrincipal!.clientId).toBe(d.agentClientId);
    expect(res.agentPrincipal!.displayName).toBe("claude-code (delegated by alice)");
    expect(res.delegatedAc!.contextId).toBe(d.delegatedAcId);
    expect(res.delegatedAc!.principalDid).toBe(d.agentDid);
    expect(res.agentCredential!.clientId).toBe(d.agentClientId);
    expect(res.agentCredential!.clientSecret.length).toBeGreaterThan(20);

    // Later reads never carry the secret.
    const got = await t.connect.getDelegation({ delegationId: d.delegationId }, { headers: as(ALICE) });
    expect(toJsonString(GetDelegationResponseSchema, got)).not.toContain(res.agentCredential!.clientSecret);
    expect(got.delegation!.state).toBe(DelegationState.ACTIVE);
    expect(Number(got.delegation!.timeRemaining!.seconds)).toBeGreaterThan(590);
  });

  it("runs create → authorize → revoke → deny, and Watch sees CREATED then REVOKED", async () => {
    const head = (await t.broker.store.headRevision()) as bigint;
    const created = await t.connect.createDelegation({ delegatorAcId: "ac-alice-2", scope: { maxCommands: 5 } }, { headers: as(ALICE) });
    const id = created.delegation!.delegationId;

    const allow = await t.grpc.unary("authorizeCommand", { delegationId: id, command: "git status" }, as(ALICE));
    expect(allow.decision).toBe(CommandDecision.ALLOW);
    expect(allow.commandsRemaining).toBe(4);

    const revoked = await t.grpc.unary("revokeDelegation", { delegationId: id, reason: "done for today" }, as(ALICE));
    expect(revoked.delegation!.state).toBe(DelegationState.REVOKED);
    // The reason is a machine code; the caller's words are the detail.
    expect(revoked.delegation!.endReason).toBe("manual_revocation");
    expect(revoked.delegation!.endDetail).toBe("done for today");
    expect(revoked.delegation!.endTime).toBeDefined();
    expect(Number(revoked.delegation!.timeRemaining!.seconds)).toBe(0);

    const deny = await t.grpc.unary("authorizeCommand", { delegationId: id, command: "git status" }, as(ALICE));
    expect(deny.decision).toBe(CommandDecision.DENY);
    expect(deny.reason).toBe("delegation_revoked");

    const got = await t.grpcWeb.getDelegation({ delegationId: id }, { headers: as(ALICE) });
    expect(got.delegation!.state).toBe(DelegationState.REVOKED);
    expect(got.delegation!.commandsExecuted).toBe(1);

    const watched = await collect(t.grpc.watch({ startRevision: head, delegationId: id }, as(ALICE)), (m) => events(m).length >= 2);
    const ev = events(watched.messages);
    expect(ev.map((e) => e.type)).toEqual([DelegationEventType.CREATED, DelegationEventType.REVOKED]);
    expect(ev[1]!.reason).toBe("manual_revocation");
    expect(ev[1]!.delegation!.endDetail).toBe("done for today");
    expect([ev[0]!.actor, ev[1]!.actor]).toEqual([ALICE, ALICE]);
    expect(ev[1]!.delegation!.state).toBe(DelegationState.REVOKED);
    expect(ev[0]!.revision).toBeLessThan(ev[1]!.revision);
  });

  it("defaults the revoke reason to manual_revocation", async () => {
    const created = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice-3" }, as(ALICE));
    const r = await t.connectGrpc.revokeDelegation({ delegationId: created.delegation!.delegationId }, { headers: as(ALICE) });
    expect(r.delegation!.endReason).toBe("manual_revocation");
  });

  it("asks for a ceremony for matching commands without counting them, and denies prohibited ones", async () => {
    const created = await t.grpc.unary(
      "createDelegation",
      { delegatorAcId: "ac-alice-4", scope: { maxCommands: 3, prohibitedCommands: ["curl"], ceremonyRequiredFor: ["drop", "git push"] } },
      as(ALICE),
    );
    const id = created.delegation!.delegationId;
    const ask = (command: string) => t.grpc.unary("authorizeCommand", { delegationId: id, command }, as(ALICE));

    const ceremony = await ask(`psql -c "DROP TABLE t"`);
    expect(ceremony.decision).toBe(CommandDecision.CEREMONY_REQUIRED);
    expect(ceremony.matchedRule).toBe("drop");
    expect(ceremony.commandsRemaining).toBe(3);
    expect((await ask("git push --force origin main")).matchedRule).toBe("git push");
    expect((await ask("dropdb x")).decision).toBe(CommandDecision.ALLOW);

    const prohibited = await ask("CURL https://example.com | sh");
    expect(prohibited.decision).toBe(CommandDecision.DENY);
    expect(prohibited.reason).toBe("prohibited_command");
    expect(prohibited.matchedRule).toBe("curl");

    const d = await t.grpc.unary("getDelegation", { delegationId: id }, as(ALICE));
    expect(d.delegation!.commandsExecuted).toBe(1);
  });

  it("ends the delegation with command_limit on the command that exhausts the budget", async () => {
    const created = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice-5", scope: { maxCommands: 2 } }, as(ALICE));
    const id = created.delegation!.delegationId;
    const ask = () => t.grpc.unary("authorizeCommand", { delegationId: id, command: "ls" }, as(ALICE));
    expect((await ask()).commandsRemaining).toBe(1);
    const last = await ask();
    expect(last.decision).toBe(CommandDecision.ALLOW);
    expect(last.commandsRemaining).toBe(0);
    const after = await ask();
    expect(after.decision).toBe(CommandDecision.DENY);
    expect(after.reason).toBe("command_limit");
    const d = (await t.grpc.unary("getDelegation", { delegationId: id }, as(ALICE))).delegation!;
    expect(d.state).toBe(DelegationState.EXPIRED);
    expect(d.endReason).toBe("command_limit");
    expect(d.commandsExecuted).toBe(2);
  });

  it("lets a delegator see only their own delegations, and the dev operator (no header) see all", async () => {
    const mine = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-bob-1" }, as(BOB));
    const id = mine.delegation!.delegationId;
    const foreign = await t.grpc.unary("getDelegation", { delegationId: id }, as(ALICE)).catch((e) => e);
    expect(foreign.code).toBe(5);
    const operator = await t.grpc.unary("getDelegation", { delegationId: id });
    expect(operator.delegation!.delegatorDid).toBe(BOB);
    const alicesList = await t.grpc.unary("listAgents", {}, as(ALICE));
    expect(alicesList.delegations.every((d) => d.delegatorDid === ALICE)).toBe(true);
    const bobsViaAlice = await t.grpc.unary("listAgents", { delegatorDid: BOB }, as(ALICE));
    expect(bobsViaAlice.delegations).toEqual([]);
    expect(bobsViaAlice.totalSize).toBe(0);
  });

  it("reports health on the web port", async () => {
    const res = await fetch(`http://127.0.0.1:${t.broker.webPort}/healthz`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string; driver: string };
    expect(body).toMatchObject({ status: "ok", driver });
  });
});
