/** ListAgents pages by keyset with an opaque token bound to its filters. */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";

describe.each(DRIVERS)("ListAgents pagination (%s)", (driver) => {
  let t: TestBroker;
  const alices: string[] = [];
  beforeAll(async () => {
    t = await startTestBroker({ driver });
    for (let i = 0; i < 23; i++) {
      const r = await t.grpc.unary("createDelegation", { delegatorAcId: `ac-${i}` }, as(ALICE));
      alices.push(r.delegation!.delegationId);
    }
    for (let i = 0; i < 4; i++) await t.grpc.unary("createDelegation", { delegatorAcId: `ac-b${i}` }, as(BOB));
    // Two of Alice's end: they leave the ACTIVE listing.
    await t.grpc.unary("revokeDelegation", { delegationId: alices[3]! }, as(ALICE));
    await t.grpc.unary("revokeDelegation", { delegationId: alices[17]! }, as(ALICE));
  });
  afterAll(async () => {
    await t?.close();
  });

  it("walks every active delegation of a delegator exactly once, oldest first, across pages", async () => {
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await t.connect.listAgents({ pageSize: 5, pageToken: token }, { headers: as(ALICE) });
      expect(page.totalSize).toBe(21);
      expect(page.delegations.length).toBeLessThanOrEqual(5);
      seen.push(...page.delegations.map((d) => d.delegationId));
      token = page.nextPageToken;
      pages++;
    } while (token !== "" && pages < 20);
    expect(pages).toBe(5);
    const expected = alices.filter((_, i) => i !== 3 && i !== 17);
    expect(seen).toEqual(expected);
  });

  it("lists other states when asked, and everything for the dev operator with a delegator filter", async () => {
    const revoked = await t.grpc.unary("listAgents", { state: DelegationState.REVOKED }, as(ALICE));
    expect(revoked.delegations.map((d) => d.delegationId).sort()).toEqual([alices[3], alices[17]].sort());
    const all = await t.grpc.unary("listAgents", { pageSize: 500 });
    expect(all.totalSize).toBe(25);
    const bobs = await t.grpc.unary("listAgents", { delegatorDid: BOB });
    expect(bobs.totalSize).toBe(4);
    expect(bobs.delegations.every((d) => d.delegatorDid === BOB)).toBe(true);
  });

  it("defaults page_size to 50 and clamps it to 500", async () => {
    const dflt = await t.grpc.unary("listAgents", {});
    expect(dflt.delegations.length).toBe(25);
    expect(dflt.nextPageToken).toBe("");
    const big = await t.grpc.unary("listAgents", { pageSize: 100_000 });
    expect(big.delegations.length).toBe(25);
  });

  it("rejects a page token used with different filters", async () => {
    const page = await t.grpc.unary("listAgents", { pageSize: 2 }, as(ALICE));
    expect(page.nextPageToken).not.toBe("");
    const err = await t.grpc
      .unary("listAgents", { pageSize: 2, pageToken: page.nextPageToken, state: DelegationState.REVOKED }, as(ALICE))
      .catch((e) => e);
    expect(err.code).toBe(Code.InvalidArgument);
  });
});
