/**
 * ListAgents pages by keyset with an opaque token bound to its filters; the
 * first page counts the matches and the token carries that count on.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { errorDetailOf } from "../helpers/grpc-client.js";

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

/** A token's JSON, as the test reads it (the format is opaque to clients; the test looks inside on purpose). */
function tokenJson(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Record<string, unknown>;
}

function tokenOf(json: Record<string, unknown>): string {
  return Buffer.from(JSON.stringify(json)).toString("base64url");
}

/** The code and ErrorDetail field of a grpc-js call that must fail. */
async function refusal(call: Promise<unknown>): Promise<{ code: number; field: string | undefined }> {
  const err = await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e,
  );
  return { code: (err as { code: number }).code, field: errorDetailOf(err)?.field };
}

const CAROL = "did:web:example.com/user/carol";

describe.each(DRIVERS)("ListAgents total_size is counted once per listing (%s)", (driver) => {
  let t: TestBroker;
  const create = async (did: string) => (await t.grpc.unary("createDelegation", { delegatorAcId: "ac-c" }, as(did))).delegation!.delegationId;
  const walk = async (did: string, first: { delegations: { delegationId: string }[]; nextPageToken: string; totalSize: number }, between?: () => Promise<void>) => {
    const totals = [first.totalSize];
    const seen = first.delegations.map((d) => d.delegationId);
    let token = first.nextPageToken;
    while (token !== "") {
      await between?.();
      const page = await t.grpc.unary("listAgents", { pageSize: 3, pageToken: token }, as(did));
      totals.push(page.totalSize);
      seen.push(...page.delegations.map((d) => d.delegationId));
      token = page.nextPageToken;
    }
    return { totals, seen };
  };

  beforeAll(async () => {
    t = await startTestBroker({ driver });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("keeps the first page's total on later pages while rows are created and ended between pages, and lists the pages live", async () => {
    const did = "did:web:example.com/user/dave";
    const before: string[] = [];
    for (let i = 0; i < 7; i++) before.push(await create(did));
    const first = await t.grpc.unary("listAgents", { pageSize: 3 }, as(did));
    expect(first.totalSize).toBe(7);
    expect(first.nextPageToken).not.toBe("");

    // Between pages: two more of Dave's delegations, and one not yet listed is revoked.
    const added: string[] = [];
    let changed = false;
    const { totals, seen } = await walk(did, first, async () => {
      if (changed) return;
      changed = true;
      added.push(await create(did), await create(did));
      await t.grpc.unary("revokeDelegation", { delegationId: before[5]! }, as(did));
    });
    // The count is the first page's on every page: it was not taken again.
    expect(totals.every((n) => n === 7)).toBe(true);
    expect(totals.length).toBeGreaterThan(2);
    // The pages themselves are read live: the new rows appear, the revoked one does not.
    expect(seen).toEqual([...before.filter((_, i) => i !== 5), ...added]);
    // A new listing counts what is there now (so a recount on the later pages would have shown 8).
    const fresh = await t.grpc.unary("listAgents", { pageSize: 3 }, as(did));
    expect(fresh.totalSize).toBe(8);
  });

  it("does the same for an admin listing of another state, and for a delegator filter", async () => {
    const did = "did:web:example.com/user/erin";
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await create(did));
    for (const id of ids.slice(0, 4)) await t.grpc.unary("revokeDelegation", { delegationId: id }, as(did));
    const first = await t.grpc.unary("listAgents", { pageSize: 2, state: DelegationState.REVOKED, delegatorDid: did });
    expect(first.totalSize).toBe(4);
    await t.grpc.unary("revokeDelegation", { delegationId: ids[4]! }, as(did));
    const second = await t.grpc.unary("listAgents", { pageSize: 2, state: DelegationState.REVOKED, delegatorDid: did, pageToken: first.nextPageToken });
    expect(second.totalSize).toBe(4);
    expect(second.delegations.map((d) => d.delegationId)).toEqual(ids.slice(2, 4));
    const third = await t.grpc.unary("listAgents", { pageSize: 2, state: DelegationState.REVOKED, delegatorDid: did, pageToken: second.nextPageToken });
    expect(third.totalSize).toBe(4);
    expect(third.delegations.map((d) => d.delegationId)).toEqual([ids[4]]);
    expect(third.nextPageToken).toBe("");
    expect((await t.grpc.unary("listAgents", { state: DelegationState.REVOKED, delegatorDid: did })).totalSize).toBe(5);
  });

  it("refuses a modified token with INVALID_ARGUMENT naming page_token", async () => {
    for (let i = 0; i < 4; i++) await create(CAROL);
    const first = await t.grpc.unary("listAgents", { pageSize: 2 }, as(CAROL));
    const token = first.nextPageToken;
    const json = tokenJson(token);
    expect(json.t).toBe(4);
    const otherId = first.delegations[0]!.delegationId;
    const modified: [string, string][] = [
      ["the count changed", tokenOf({ ...json, t: 1000 })],
      ["the count zeroed", tokenOf({ ...json, t: 0 })],
      ["the count negative", tokenOf({ ...json, t: -1 })],
      ["the count not a number", tokenOf({ ...json, t: "4" })],
      ["the count without its check", tokenOf({ ...json, c: undefined })],
      ["a check without a count", tokenOf({ ...json, t: undefined })],
      ["the check changed", tokenOf({ ...json, c: `${String(json.c).slice(0, -1)}${String(json.c).endsWith("A") ? "B" : "A"}` })],
      ["the cursor moved", tokenOf({ ...json, a: otherId })],
      ["the filter changed with its token", tokenOf({ ...json, s: "REVOKED" })],
      ["not base64 JSON", `${token.slice(0, 10)}!!`],
      ["truncated", token.slice(0, token.length - 6)],
      ["an array", tokenOf([json] as unknown as Record<string, unknown>)],
    ];
    for (const [what, bad] of modified) {
      expect(await refusal(t.grpc.unary("listAgents", { pageSize: 2, pageToken: bad }, as(CAROL))), what).toEqual({
        code: Code.InvalidArgument,
        field: "page_token",
      });
    }
    // The filters stay bound: another state, or another caller, with the genuine token.
    expect(await refusal(t.grpc.unary("listAgents", { pageSize: 2, pageToken: token, state: DelegationState.REVOKED }, as(CAROL)))).toEqual({
      code: Code.InvalidArgument,
      field: "page_token",
    });
    expect(await refusal(t.grpc.unary("listAgents", { pageSize: 2, pageToken: token }, as(BOB)))).toEqual({
      code: Code.InvalidArgument,
      field: "page_token",
    });
    // The genuine token still works.
    const second = await t.grpc.unary("listAgents", { pageSize: 2, pageToken: token }, as(CAROL));
    expect(second.totalSize).toBe(4);
    expect(second.delegations).toHaveLength(2);
  });

  it("accepts a token of the previous format (no count): counts once, then carries that count on", async () => {
    const did = "did:web:example.com/user/frank";
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await create(did));
    // What the previous version issued after the second delegation: {v, a, s, d}, no count, no check.
    const old = tokenOf({ v: 1, a: ids[1], s: "ACTIVE", d: did });
    ids.push(await create(did));
    const page = await t.grpc.unary("listAgents", { pageSize: 2, pageToken: old }, as(did));
    expect(page.delegations.map((d) => d.delegationId)).toEqual(ids.slice(2, 4));
    // Counted now, with the delegation created after that token was issued.
    expect(page.totalSize).toBe(7);
    expect(tokenJson(page.nextPageToken).t).toBe(7);
    ids.push(await create(did));
    const next = await t.grpc.unary("listAgents", { pageSize: 2, pageToken: page.nextPageToken }, as(did));
    expect(next.delegations.map((d) => d.delegationId)).toEqual(ids.slice(4, 6));
    expect(next.totalSize).toBe(7);
    // An admin's token of the previous format (no delegator filter: d is "").
    const adminOld = tokenOf({ v: 1, a: ids[5], s: "ACTIVE", d: "" });
    const admin = await t.grpc.unary("listAgents", { pageSize: 500, pageToken: adminOld });
    expect(admin.delegations.map((d) => d.delegationId)).toEqual(ids.slice(6));
    expect(admin.totalSize).toBe((await t.grpc.unary("listAgents", { pageSize: 1 })).totalSize);
    // A previous-format token is still bound to its filters.
    expect(await refusal(t.grpc.unary("listAgents", { pageToken: tokenOf({ v: 1, a: ids[1], s: "ACTIVE", d: did }) }, as(BOB)))).toEqual({
      code: Code.InvalidArgument,
      field: "page_token",
    });
  });
});
