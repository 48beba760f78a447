/**
 * GetDelegation answers from the read model (READ_MODEL_MAX_AGE_MS), through
 * the real server on both storage drivers: what this replica counts or
 * commits is in the next answer at once; a change written behind its back
 * (as another replica's count is) shows once the entry is older than the
 * maximum age, and not before; 0 reads every answer from the database.
 */
import { afterEach, describe, expect, it } from "vitest";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";

const create = { delegatorAcId: "ac-1", scope: { maxCommands: 100 } };

describe.each(DRIVERS)("GetDelegation from the read model (%s)", (driver) => {
  let t: TestBroker | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  async function start(maxAgeMs: string) {
    t = await startTestBroker({ driver, env: { READ_MODEL_MAX_AGE_MS: maxAgeMs } });
    const d = (await t.grpc.unary("createDelegation", create, as(ALICE))).delegation!;
    // Until this replica has applied its own commit of the create, reads go to the database (and are not kept).
    await t.broker.follower.catchUp();
    const get = async () => (await t!.grpc.unary("getDelegation", { delegationId: d.delegationId }, as(ALICE))).delegation!;
    // As another replica would: counted in the database, not through this broker.
    const countElsewhere = () => t!.broker.store.countCommand(d.delegationId, Date.now());
    return { t, d, get, countElsewhere };
  }

  it("shows a command counted on this replica, and a revoke through it, in the very next answer", async () => {
    const { t, d, get } = await start("60000");
    expect((await get()).commandsExecuted).toBe(0); // now held in memory
    for (let i = 1; i <= 3; i++) {
      const r = await t.grpc.unary("authorizeCommand", { delegationId: d.delegationId, command: "git status" }, as(ALICE));
      expect(r.commandsRemaining).toBe(100 - i);
      const g = await get();
      expect(g.commandsExecuted).toBe(i);
      expect(g.commandsRemaining).toBe(100 - i);
    }
    await t.grpc.unary("revokeDelegation", { delegationId: d.delegationId, reason: "done" }, as(ALICE));
    const revoked = await get();
    expect(revoked.state).toBe(DelegationState.REVOKED);
    expect(revoked.endReason).toBe("manual_revocation");
    expect(revoked.commandsExecuted).toBe(3);
  });

  it("shows a count written behind its back once the entry is older than READ_MODEL_MAX_AGE_MS, not before", async () => {
    const { t, get, countElsewhere } = await start("1000");
    expect((await get()).commandsExecuted).toBe(0);
    expect((await countElsewhere()).kind).toBe("counted");
    t.advanceClock(900);
    expect((await get()).commandsExecuted).toBe(0); // answered from memory
    t.advanceClock(200);
    expect((await get()).commandsExecuted).toBe(1); // read again
  });

  it("with READ_MODEL_MAX_AGE_MS=0 answers every read from the database", async () => {
    const { get, countElsewhere } = await start("0");
    expect((await get()).commandsExecuted).toBe(0);
    await countElsewhere();
    expect((await get()).commandsExecuted).toBe(1);
  });
});
