/**
 * The orphan sweep deletes identities nothing else will: those of no known
 * delegation, and those of delegations long ended whose clean-up is done.
 * An ended delegation's identity is the clean-up worker's while that is owed
 * or the ending is recent, so no identity is deleted twice.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { flakyRegistrar } from "../helpers/fakes.js";

describe.each(DRIVERS)("the orphan sweep (%s)", (driver) => {
  let t: TestBroker;
  const { registrar, state } = flakyRegistrar();
  beforeAll(async () => {
    t = await startTestBroker({ driver, overrides: { registrar } });
    // The clean-up worker runs only when a test says so.
    await t.broker.background.idpCleanup.stop();
  });
  afterAll(async () => {
    await t?.close();
  });

  const sweep = () => t.broker.background.orphanSweep.runOnce();
  const deletions = (id: string) => state.deleted.filter((d) => d === id).length;

  it("leaves an ended delegation's identity to the clean-up worker while it is owed, however old the ending", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE));
    const id = c.delegation!.delegationId;
    await t.grpc.unary("revokeDelegation", { delegationId: id }, as(ALICE));
    await sweep();
    expect(registrar.registered.has(id)).toBe(true);
    t.advanceClock(6 * 60_000); // long ended, but its clean-up has not run
    await sweep();
    expect(deletions(id)).toBe(0);
    await t.broker.background.idpCleanup.runOnce();
    expect(deletions(id)).toBe(1);
    await sweep();
    expect(deletions(id)).toBe(1);
  });

  it("deletes an identity that outlived its ended delegation's clean-up, once the ending is not recent", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE));
    const id = c.delegation!.delegationId;
    await t.grpc.unary("revokeDelegation", { delegationId: id }, as(ALICE));
    await t.broker.background.idpCleanup.runOnce();
    expect(deletions(id)).toBe(1);
    // A create the IdP finished late, after the clean-up.
    await registrar.registerAgent({ delegationId: id, agentType: "claude-code", agentModel: "", delegatorDid: ALICE, displayName: "late", expireTime: Date.now() });
    await sweep();
    expect(deletions(id)).toBe(1);
    t.advanceClock(6 * 60_000);
    await sweep();
    expect(deletions(id)).toBe(2);
    expect(registrar.registered.has(id)).toBe(false);
  });

  it("deletes an identity of no known delegation at once, and never one of a live delegation", async () => {
    const live = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE));
    const stray = "del_01STRAYSTRAYSTRAYSTRAYSTRA";
    await registrar.registerAgent({ delegationId: stray, agentType: "claude-code", agentModel: "", delegatorDid: ALICE, displayName: "stray", expireTime: Date.now() });
    await sweep();
    expect(deletions(stray)).toBe(1);
    expect(deletions(live.delegation!.delegationId)).toBe(0);
  });
});
