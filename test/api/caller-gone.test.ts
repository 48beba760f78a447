/**
 * A create whose caller has gone (its deadline passed, or it cancelled)
 * grants nothing: nobody would ever see the agent's secret.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDevGsap } from "../../src/clients/gsap/dev-gsap.js";
import type { GsapClient } from "../../src/clients/gsap/gsap-client.js";
import { createStubRegistrar } from "../../src/registrars/stub/stub-registrar.js";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";

describe("a create abandoned by its caller", () => {
  let t: TestBroker;
  const registrar = createStubRegistrar();
  const dev = createDevGsap();
  let delayMs = 0;
  const slowGsap: GsapClient = {
    ...dev,
    async requestDelegatedContext(req) {
      await new Promise((r) => setTimeout(r, delayMs));
      return dev.requestDelegatedContext(req);
    },
  };
  beforeAll(async () => {
    t = await startTestBroker({ overrides: { gsap: slowGsap, registrar } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("is withdrawn when the client's deadline passes mid-create: no ACTIVE delegation, no identity", async () => {
    delayMs = 800;
    const err = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE), 300).catch((e) => e);
    expect(err.code).toBe(4); // DEADLINE_EXCEEDED, from the client's side
    await new Promise((r) => setTimeout(r, 1000)); // the server-side create runs to its end
    const active = await t.grpc.unary("listAgents", {}, as(ALICE));
    expect(active.totalSize).toBe(0);
    const failed = await t.grpc.unary("listAgents", { state: DelegationState.FAILED }, as(ALICE));
    expect(failed.totalSize).toBe(1);
    expect(registrar.registered.size).toBe(0);
  });

  it("completes normally when the caller waits", async () => {
    delayMs = 50;
    const ok = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-2" }, as(ALICE), 5000);
    expect(ok.delegation!.state).toBe(DelegationState.ACTIVE);
    expect(registrar.registered.size).toBe(1);
  });
});
