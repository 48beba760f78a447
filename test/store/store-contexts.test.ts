/**
 * The delegator contexts the live checks keep, run against every driver:
 * adopting the root contexts of ACTIVE delegations that have no row, and
 * forgetting rows no live delegation needs, each window by window (one
 * transaction per window, so a table of 100,000 never holds the write lock
 * long). Each test gets a fresh database.
 */
import { describe, expect, it } from "vitest";
import type { DelegationStore } from "../../src/store/store.js";
import { DRIVERS } from "../helpers/databases.js";
import { T0, useStore } from "./fixtures.js";

/** Walks `step` from the start until it says there is no next window; returns what each window did. */
async function walk(step: (after: string) => Promise<{ next: string | null } & Record<string, unknown>>): Promise<number[]> {
  const counts: number[] = [];
  for (let after: string | null = ""; after !== null; ) {
    const w = await step(after);
    counts.push(Number(w.added ?? w.forgotten));
    after = w.next;
  }
  return counts;
}

async function contextIds(store: DelegationStore, ids: readonly string[]): Promise<string[]> {
  const found = await Promise.all(ids.map((id) => store.getDelegatorContext(id)));
  return found.filter((c) => c !== null).map((c) => c.acId);
}

describe.each(DRIVERS)("delegator contexts on %s", (driver) => {
  const h = useStore(driver);

  it("adopts the root context of every ACTIVE delegation without a row, window by window, once", async () => {
    const a = await h.seed("ACTIVE", { delegatorAcId: "ac-1", delegatorDid: "did:web:example.com:users/a" });
    await h.seed("ACTIVE", { delegatorAcId: "ac-1", delegatorDid: "did:web:example.com:users/a" });
    await h.seed("ACTIVE", { delegatorAcId: "ac-2" });
    await h.seed("ACTIVE", { delegatorAcId: "ac-3" });
    await h.seed("ACTIVE", { delegatorAcId: "ac-4" });
    await h.seedChild(a, "ACTIVE", { rootAcId: "ac-1" }); // not a root delegation: adopted through its parent
    await h.seed("REVOKED", { delegatorAcId: "ac-ended" });
    await h.seed("REQUESTED", { delegatorAcId: "ac-requested" });
    await h.store.recordContextAnswer({ acId: "ac-4", principalDid: "did:web:example.com:users/alice", status: "active", capabilityCeiling: "L3", now: T0 });

    // Six ACTIVE delegations in windows of two: three full windows, the third says there may be more, the fourth is empty.
    const added = await walk((after) => h.store.adoptContexts(after, 2));
    expect(added.length).toBe(4);
    expect(added.reduce((x, y) => x + y, 0)).toBe(3);
    const all = ["ac-1", "ac-2", "ac-3", "ac-4", "ac-ended", "ac-requested"];
    expect(await contextIds(h.store, all)).toEqual(["ac-1", "ac-2", "ac-3", "ac-4"]);
    expect(await h.store.getDelegatorContext("ac-1")).toEqual({
      acId: "ac-1",
      principalDid: "did:web:example.com:users/a",
      status: "unknown",
      capabilityCeiling: "",
      checkedTime: 0,
      attemptTime: 0,
      failures: 0,
      lastError: "",
    });
    // A row it already had is left as it was, and a second pass adds nothing.
    expect((await h.store.getDelegatorContext("ac-4"))?.capabilityCeiling).toBe("L3");
    expect(await walk((after) => h.store.adoptContexts(after, 2))).toEqual([0, 0, 0, 0]);
    // In one window of more than there are: one call, no next.
    expect(await h.store.adoptContexts("", 100)).toEqual({ added: 0, next: null });
  });

  it("forgets, window by window, contexts without a REQUESTED or ACTIVE delegation last tried before the cut", async () => {
    const ended = await h.seed("ACTIVE", { delegatorAcId: "ac-ended" });
    await h.seed("REQUESTED", { delegatorAcId: "ac-requested" });
    await h.seed("ACTIVE", { delegatorAcId: "ac-active" });
    for (const acId of ["ac-active", "ac-ended", "ac-requested", "ac-none"]) {
      await h.store.recordContextAnswer({ acId, principalDid: "did:web:example.com:users/alice", status: "active", capabilityCeiling: "L2", now: T0 });
    }
    await h.store.recordContextAnswer({ acId: "ac-recent", principalDid: "did:web:example.com:users/alice", status: "active", capabilityCeiling: "L2", now: T0 + 50 });
    await h.store.end({ target: { ids: [ended.id] }, ending: "revoke", reason: "manual_revocation", now: T0 + 5 });

    const forgotten = await walk((after) => h.store.forgetContexts(T0 + 10, after, 2));
    expect(forgotten.length).toBe(3); // five rows in windows of two
    expect(forgotten.reduce((x, y) => x + y, 0)).toBe(2);
    expect(await contextIds(h.store, ["ac-active", "ac-ended", "ac-requested", "ac-none", "ac-recent"])).toEqual([
      "ac-active",
      "ac-requested",
      "ac-recent",
    ]);
  });

  it("walks an empty table in one window", async () => {
    expect(await h.store.adoptContexts("", 1_000)).toEqual({ added: 0, next: null });
    expect(await h.store.forgetContexts(T0, "", 1_000)).toEqual({ forgotten: 0, next: null });
  });
});
