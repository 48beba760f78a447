/**
 * Every error the API promises, with its gRPC code and machine-readable
 * reason, over grpc-js and Connect; and that a failed create leaves nothing
 * behind.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DelegationEventType, DelegationState, ErrorDetailSchema } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { flakyGsap, flakyRegistrar } from "../helpers/fakes.js";
import { errorDetailOf } from "../helpers/grpc-client.js";
import { collect, events } from "../helpers/watch.js";

const MISSING = "del_01AAAAAAAAAAAAAAAAAAAAAAAA";

/** Runs `call`, expecting a grpc-js error; returns its code, reason and field. */
async function grpcFailure(call: Promise<unknown>) {
  const err = (await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e,
  )) as { code: number; details: string };
  const detail = errorDetailOf(err);
  return { code: err.code, message: err.details, reason: detail?.reason, field: detail?.field };
}

async function connectFailure(call: Promise<unknown>) {
  const err = await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConnectError);
  const ce = err as ConnectError;
  const detail = ce.findDetails(ErrorDetailSchema)[0];
  return { code: ce.code, message: ce.rawMessage, reason: detail?.reason, field: detail?.field };
}

describe.each(DRIVERS)("errors (%s)", (driver) => {
  let t: TestBroker;
  const reg = flakyRegistrar();
  const gsap = flakyGsap();
  beforeAll(async () => {
    t = await startTestBroker({ driver, overrides: { registrar: reg.registrar, gsap: gsap.gsap } });
  });
  afterAll(async () => {
    await t?.close();
  });
  beforeEach(() => {
    reg.state.failRegister = false;
    reg.state.failDelete = false;
    gsap.state.failDelegate = false;
  });

  it("NOT_FOUND for an unknown id, with reason DELEGATION_NOT_FOUND, on every RPC", async () => {
    for (const call of [
      () => t.grpc.unary("getDelegation", { delegationId: MISSING }, as(ALICE)),
      () => t.grpc.unary("revokeDelegation", { delegationId: MISSING }, as(ALICE)),
      () => t.grpc.unary("authorizeCommand", { delegationId: MISSING, command: "ls" }, as(ALICE)),
    ]) {
      expect(await grpcFailure(call())).toMatchObject({ code: Code.NotFound, reason: "DELEGATION_NOT_FOUND" });
    }
    expect(await connectFailure(t.connect.getDelegation({ delegationId: MISSING }))).toMatchObject({
      code: Code.NotFound,
      reason: "DELEGATION_NOT_FOUND",
    });
  });

  it("NOT_FOUND, identical to a missing one, for another delegator's delegation", async () => {
    const bobs = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-bob" }, as(BOB));
    const id = bobs.delegation!.delegationId;
    const foreign = await grpcFailure(t.grpc.unary("revokeDelegation", { delegationId: id }, as(ALICE)));
    const missing = await grpcFailure(t.grpc.unary("revokeDelegation", { delegationId: MISSING }, as(ALICE)));
    expect(foreign.code).toBe(missing.code);
    expect(foreign.reason).toBe(missing.reason);
    expect(foreign.message.replace(id, "X")).toBe(missing.message.replace(MISSING, "X"));
    // and it is still active
    expect((await t.grpc.unary("getDelegation", { delegationId: id }, as(BOB))).delegation!.state).toBe(DelegationState.ACTIVE);
  });

  it("INVALID_ARGUMENT naming the field for bad or missing fields", async () => {
    const cases: [() => Promise<unknown>, string][] = [
      [() => t.grpc.unary("createDelegation", { delegatorAcId: "" }, as(ALICE)), "delegator_ac_id"],
      [() => t.grpc.unary("createDelegation", { delegatorAcId: "ac 1" }, as(ALICE)), "delegator_ac_id"],
      [() => t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", agentType: "Claude Code" }, as(ALICE)), "agent_type"],
      [() => t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", scope: { capabilityCeiling: "CAP_GOD" } }, as(ALICE)), "scope.capability_ceiling"],
      [() => t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", scope: { ttl: durationFromMs(10 * 24 * 3600_000) } }, as(ALICE)), "scope.ttl"],
      [() => t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", scope: { ttl: durationFromMs(10) } }, as(ALICE)), "scope.ttl"],
      [() => t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", scope: { maxCommands: 0 } }, as(ALICE)), "scope.max_commands"],
      [() => t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", scope: { prohibitedCommands: ["--"] } }, as(ALICE)), "scope.prohibited_commands[0]"],
      [() => t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", requestId: "has space" }, as(ALICE)), "request_id"],
      [() => t.grpc.unary("getDelegation", { delegationId: "" }, as(ALICE)), "delegation_id"],
      [() => t.grpc.unary("getDelegation", { delegationId: "12345" }, as(ALICE)), "delegation_id"],
      [() => t.grpc.unary("authorizeCommand", { delegationId: MISSING, command: "  " }, as(ALICE)), "command"],
      [() => t.grpc.unary("revokeDelegation", { delegationId: MISSING, reason: "a\u0000b" }, as(ALICE)), "reason"],
      [() => t.grpc.unary("listAgents", { pageSize: -1 }, as(ALICE)), "page_size"],
      [() => t.grpc.unary("listAgents", { pageToken: "garbage" }, as(ALICE)), "page_token"],
      [() => t.grpc.unary("listAgents", { delegatorDid: "alice" }), "delegator_did"],
    ];
    for (const [call, field] of cases) {
      const f = await grpcFailure(call());
      expect(f, field).toMatchObject({ code: Code.InvalidArgument, field });
      expect(f.message).toContain(field);
    }
    expect(await connectFailure(t.connect.createDelegation({ delegatorAcId: "" }, { headers: as(ALICE) }))).toMatchObject({
      code: Code.InvalidArgument,
      field: "delegator_ac_id",
    });
  });

  it("PERMISSION_DENIED for a ceiling above the delegator's (dev ceiling CAP_MUTATE)", async () => {
    const f = await grpcFailure(t.grpc.unary("createDelegation", { delegatorAcId: "ac-1", scope: { capabilityCeiling: "CAP_ADMIN" } }, as(ALICE)));
    expect(f).toMatchObject({ code: Code.PermissionDenied, reason: "CEILING_ABOVE_DELEGATOR" });
  });

  it("PERMISSION_DENIED for RevokeDelegatorContext by a delegator; UNAUTHENTICATED for an anonymous or malformed delegator", async () => {
    expect(await grpcFailure(t.grpc.unary("revokeDelegatorContext", { delegatorAcId: "ac-1" }, as(ALICE)))).toMatchObject({
      code: Code.PermissionDenied,
    });
    expect(await grpcFailure(t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }))).toMatchObject({ code: Code.Unauthenticated });
    expect(await grpcFailure(t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, { "x-delegator-did": "alice" }))).toMatchObject({
      code: Code.Unauthenticated,
    });
  });

  it("FAILED_PRECONDITION for revoking a delegation that is not active; AuthorizeCommand answers DENY", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE));
    const id = c.delegation!.delegationId;
    await t.grpc.unary("revokeDelegation", { delegationId: id }, as(ALICE));
    const f = await grpcFailure(t.grpc.unary("revokeDelegation", { delegationId: id }, as(ALICE)));
    expect(f).toMatchObject({ code: Code.FailedPrecondition, reason: "DELEGATION_NOT_ACTIVE" });
    expect(f.message).toContain("REVOKED");
    expect(await connectFailure(t.connect.revokeDelegation({ delegationId: id }, { headers: as(ALICE) }))).toMatchObject({
      code: Code.FailedPrecondition,
    });
  });

  it("UNAVAILABLE when the IdP fails: FAILED, a FAILED event, nothing registered", async () => {
    const head = await t.broker.store.headRevision();
    const before = reg.registrar.registered.size;
    reg.state.failRegister = true;
    const f = await grpcFailure(t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE)));
    expect(f).toMatchObject({ code: Code.Unavailable, reason: "IDP_UNAVAILABLE" });
    expect(f.message).not.toContain("ECONNREFUSED");
    expect(reg.registrar.registered.size).toBe(before);
    const w = await collect(t.grpc.watch({ startRevision: head }), (m) => events(m).length >= 1);
    const [ev] = events(w.messages);
    expect(ev!.type).toBe(DelegationEventType.FAILED);
    expect(ev!.delegation!.state).toBe(DelegationState.FAILED);
    expect(ev!.delegation!.endReason).toBe("creation_failed");
  });

  it("UNAVAILABLE when GSAP fails after the identity exists: the identity is deleted again", async () => {
    const before = reg.registrar.registered.size;
    gsap.state.failDelegate = true;
    const f = await connectFailure(t.connect.createDelegation({ delegatorAcId: "ac-1" }, { headers: as(ALICE) }));
    expect(f).toMatchObject({ code: Code.Unavailable, reason: "GSAP_UNAVAILABLE" });
    const failed = await t.grpc.unary("listAgents", { state: DelegationState.FAILED }, as(ALICE));
    expect(failed.delegations.length).toBeGreaterThan(0);
    // The ending's consequence, carried out by the identity clean-up worker.
    await t.settle();
    expect(reg.registrar.registered.size).toBe(before);
    expect((await t.broker.store.effectBacklog("idp_delete")).pending).toBe(0);
  });

  it("keeps an identity whose deletion failed pending until the cleanup loop succeeds", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE));
    const id = c.delegation!.delegationId;
    reg.state.failDelete = true;
    await t.grpc.unary("revokeDelegation", { delegationId: id }, as(ALICE));
    await t.settle();
    const pendingIds = async () => (await t.broker.store.dueRetries("idp_delete", Number.MAX_SAFE_INTEGER, 1000)).map((e) => e.delegationId);
    expect(await pendingIds()).toContain(id);
    expect((await t.broker.store.effectBacklog("idp_delete")).retrying).toBeGreaterThanOrEqual(1);
    expect(reg.registrar.registered.has(id)).toBe(true);
    reg.state.failDelete = false;
    t.advanceClock(10 * 60_000); // past the retry's backoff
    expect((await t.broker.background.idpCleanup.runOnce()).done).toBeGreaterThanOrEqual(1);
    expect(reg.registrar.registered.has(id)).toBe(false);
    expect(await pendingIds()).not.toContain(id);
  });

  it("OUT_OF_RANGE for a watch revision ahead of the log", async () => {
    const head = await t.broker.store.headRevision();
    const w = await collect(t.grpc.watch({ startRevision: head + 1000n }), () => false);
    expect(w.error?.code).toBe(Code.OutOfRange);
  });
});
