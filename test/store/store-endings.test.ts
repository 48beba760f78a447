/**
 * The DelegationStore's ending path, run against every driver: end() with each
 * target, its limit and cascade, the last command of a budget, the work items
 * every ending calls for (read from the log by each kind's cursor) and the
 * retry table, late contexts, and pruning the event log behind every cursor.
 * Each test gets a fresh database.
 */
import { describe, expect, it } from "vitest";
import type { Delegation, DelegationState } from "../../src/domain/index.js";
import { newDelegationId } from "../../src/delegation/ids.js";
import type { Effect, EffectOutcomes, EndSpec, Ended } from "../../src/store/store.js";
import { DRIVERS } from "../helpers/databases.js";
import { FAR, HOUR, T0, activationFor, byRevision, claimFor, makeDelegation, revisionsAfter, sortedIds, useStore } from "./fixtures.js";

const PARENT_ENDED = "parent_delegation_ended";

/** `d` as an ending at `now` leaves it. */
function endedAs(d: Delegation, state: DelegationState, reason: string, now: number): Delegation {
  return { ...d, state, endTime: now, updateTime: now, endReason: reason };
}

/** The ids of what an ending changed, in the order it returned them. */
const idsOf = (ended: readonly Ended[]): string[] => ended.map((e) => e.delegation.id);

/** Work items by delegation id (each test makes at most one of a kind per delegation unless it says so). */
function byDelegation(effects: readonly Effect[]): Map<string, Effect> {
  const m = new Map<string, Effect>();
  for (const e of effects) {
    expect(m.has(e.delegationId), `two ${e.kind} items for ${e.delegationId}`).toBe(false);
    m.set(e.delegationId, e);
  }
  return m;
}

describe.each(DRIVERS)("DelegationStore endings on %s", (driver) => {
  const h = useStore(driver);

  const revoke = (ids: readonly string[], now: number, extra: Partial<EndSpec> = {}) =>
    h.store.end({ target: { ids }, ending: "revoke", reason: "manual_revocation", now, ...extra });

  describe("end with target ids", () => {
    it("revokes an ACTIVE delegation: state, end time and reason, its event, and what it returns", async () => {
      const d = await h.seed("ACTIVE");
      const ended = await revoke([d.id], T0 + 10);
      const expected = endedAs(d, "REVOKED", "manual_revocation", T0 + 10);
      expect(ended).toEqual([{ delegation: expected, revision: 2n, cascaded: false }]);
      expect(await h.store.get(d.id)).toStrictEqual(expected);
      expect(await h.events(1n)).toEqual([
        { revision: 2n, type: "REVOKED", delegation: expected, eventTime: T0 + 10, reason: "manual_revocation", actor: "", chronicleCid: "" },
      ]);
    });

    const matrix: [EndSpec["ending"], DelegationState, string][] = [
      ["revoke", "REVOKED", "REVOKED"],
      ["expire", "EXPIRED", "EXPIRED"],
      ["fail", "FAILED", "FAILED"],
    ];
    const endsFrom: Record<EndSpec["ending"], DelegationState[]> = {
      revoke: ["REQUESTED", "ACTIVE"],
      expire: ["ACTIVE"],
      fail: ["REQUESTED"],
    };
    it.each(matrix)("%s ends exactly the states it applies to, as %s with a %s event", async (ending, to, eventType) => {
      const states = ["REQUESTED", "ACTIVE", "REVOKED", "EXPIRED", "FAILED"] as const;
      const seeded = await Promise.all(states.map((s, i) => h.seed(s, { createTime: T0 + i })));
      const head = await h.store.headRevision();
      for (const d of seeded) {
        const ended = await h.store.end({ target: { ids: [d.id] }, ending, reason: "why", now: T0 + 50 });
        if (endsFrom[ending].includes(d.state)) {
          expect(ended).toEqual([{ delegation: endedAs(d, to, "why", T0 + 50), revision: ended[0]!.revision, cascaded: false }]);
          expect(await h.store.get(d.id)).toStrictEqual(ended[0]!.delegation);
        } else {
          expect(ended, `${ending} from ${d.state}`).toEqual([]);
          expect(await h.store.get(d.id)).toStrictEqual(d);
        }
      }
      const events = await h.events(head);
      expect(events.map((e) => [e.type, e.delegation.id])).toEqual(
        seeded.filter((d) => endsFrom[ending].includes(d.state)).map((d) => [eventType, d.id]),
      );
    });

    it("ends several ids in one transaction, in the order given, skipping ended and unknown ones", async () => {
      const [a, b, c] = await Promise.all([0, 1, 2].map((i) => h.seed("ACTIVE", { createTime: T0 + i })));
      const x = await h.seed("REVOKED", { createTime: T0 + 3 });
      const head = await h.store.headRevision();
      const ended = await revoke([c!.id, x.id, newDelegationId(), a!.id, b!.id], T0 + 10);
      expect(idsOf(ended)).toEqual([c!.id, a!.id, b!.id]);
      expect(ended.map((e) => e.revision)).toEqual(revisionsAfter(head, 3));
      expect((await h.events(head)).map((e) => e.delegation.id)).toEqual([c!.id, a!.id, b!.id]);
      expect(await h.store.get(x.id)).toStrictEqual(x);
    });

    // PostgreSQL appends up to 64 changes in one statement with the revision counter, more as a multi-row insert.
    it.each([1, 64, 65, 150])("ends %i ids in one transaction with consecutive revisions, each event its delegation as ended", async (n) => {
      const seeded = await Promise.all(Array.from({ length: n }, (_, i) => h.seed("ACTIVE", { createTime: T0 + i })));
      const head = await h.store.headRevision();
      const ended = await revoke(seeded.map((d) => d.id), T0 + 10);
      expect(idsOf(ended)).toEqual(seeded.map((d) => d.id));
      expect(ended.map((e) => e.revision)).toEqual(revisionsAfter(head, n));
      expect(await h.store.headRevision()).toBe(head + BigInt(n));
      const events = await h.events(head);
      expect(events.map((e) => [e.revision, e.type, e.delegation.id, e.delegation.state])).toEqual(
        ended.map((e) => [e.revision, "REVOKED", e.delegation.id, "REVOKED"]),
      );
      expect(events.map((e) => e.delegation)).toStrictEqual(ended.map((e) => e.delegation));
    });

    it("returns nothing, appends nothing and writes no work item when nothing matches", async () => {
      const x = await h.seed("EXPIRED");
      const head = await h.store.headRevision();
      const before = await h.effects("idp_delete");
      expect(await revoke([x.id, newDelegationId()], T0 + 10)).toEqual([]);
      expect(await revoke([], T0 + 10)).toEqual([]);
      expect(await h.store.headRevision()).toBe(head);
      expect(await h.effects("idp_delete")).toEqual(before);
    });

    // EndSpec.limit bounds "delegations of `target`"; targetIds() documents "bounded by the limit" but returns every id.
    it("ends at most `limit` of the ids it is given", async () => {
      const ids = (await Promise.all([0, 1, 2].map((i) => h.seed("ACTIVE", { createTime: T0 + i })))).map((d) => d.id);
      expect(await revoke(ids, T0 + 10, { limit: 2 })).toHaveLength(2);
      expect(await revoke(ids, T0 + 11, { limit: 2 })).toHaveLength(1);
    });

    it("of ten concurrent revokes of one delegation, exactly one ends it", async () => {
      const d = await h.seed("ACTIVE");
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => revoke([d.id], T0 + 10 + i)));
      expect(results.filter((r) => r.length === 1)).toHaveLength(1);
      expect(results.filter((r) => r.length === 0)).toHaveLength(9);
      expect((await h.events(1n)).map((e) => e.type)).toEqual(["REVOKED"]);
      expect((await h.effects("idp_delete")).map((e) => e.delegationId)).toEqual([d.id]);
      expect((await h.effects("gsap_revoke")).map((e) => e.delegationId)).toEqual([d.id]);
    });

    it("a revoke racing the last command ends the delegation once", async () => {
      const ds = await Promise.all(Array.from({ length: 10 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + i, maxCommands: 1 })));
      const head = await h.store.headRevision();
      const raced = await Promise.all(
        ds.map(async (d) => {
          const [counted, ended] = await Promise.all([h.store.countCommand(d.id, T0 + 10), revoke([d.id], T0 + 10)]);
          return (counted.kind === "limit_reached" ? 1 : 0) + ended.length;
        }),
      );
      expect(raced).toEqual(ds.map(() => 1));
      const events = await h.events(head);
      expect(sortedIds(events.map((e) => e.delegation))).toEqual(sortedIds(ds));
      expect(byDelegation(await h.effects("idp_delete")).size).toBe(10);
      expect(byDelegation(await h.effects("gsap_revoke")).size).toBe(10);
    });
  });

  describe("end and idempotency keys", () => {
    it("stores the answer, built from the ended delegation, in the ending's transaction", async () => {
      const d = await h.seed("ACTIVE");
      const claim = claimFor(d, { method: "RevokeDelegation" });
      await h.store.claimIdempotency(claim, T0 + 5);
      await revoke([d.id], T0 + 10, { completeIdempotency: { ...claim, response: (x) => JSON.stringify([x.id, x.state, x.endReason, x.endTime]) } });
      expect(JSON.parse((await h.store.getIdempotency(claim))!.response!)).toEqual([d.id, "REVOKED", "manual_revocation", T0 + 10]);
    });

    it("stores no answer when nothing was ended", async () => {
      const d = await h.seed("REVOKED");
      const claim = claimFor(d, { method: "RevokeDelegation" });
      await h.store.claimIdempotency(claim, T0 + 5);
      expect(await revoke([d.id], T0 + 10, { completeIdempotency: { ...claim, response: () => "answer" } })).toEqual([]);
      expect((await h.store.getIdempotency(claim))!.response).toBeNull();
    });

    it("releases a key in the ending's transaction", async () => {
      const d = makeDelegation();
      const claim = claimFor(d);
      await h.store.insertRequested(d, claim);
      const ended = await h.store.end({ target: { ids: [d.id] }, ending: "fail", reason: "creation_failed", now: T0 + 10, releaseIdempotency: claim });
      expect(idsOf(ended)).toEqual([d.id]);
      expect(await h.store.getIdempotency(claim)).toBeNull();
    });

    it("rolls the whole ending back, cascade, key release and work items included, when the answer cannot be built", async () => {
      const root = await h.seed("ACTIVE");
      const child = await h.seedChild(root);
      const released = claimFor(root, { requestId: "other" });
      await h.store.claimIdempotency(released, T0);
      const claim = claimFor(root, { method: "RevokeDelegation" });
      await h.store.claimIdempotency(claim, T0);
      const heard: bigint[] = [];
      h.store.onCommit((r) => heard.push(r));
      const broken = {
        ...claim,
        response: (): string => {
          throw new Error("serializer broke");
        },
      };
      await expect(revoke([root.id], T0 + 10, { completeIdempotency: broken, releaseIdempotency: released })).rejects.toThrow("serializer broke");
      expect(await h.store.get(root.id)).toStrictEqual(root);
      expect(await h.store.get(child.id)).toStrictEqual(child);
      expect(await h.store.headRevision()).toBe(2n);
      expect(await h.effects("idp_delete")).toEqual([]);
      expect(await h.effects("gsap_revoke")).toEqual([]);
      expect(await h.store.getIdempotency(released)).not.toBeNull();
      expect((await h.store.getIdempotency(claim))!.response).toBeNull();
      expect(heard).toEqual([]);
    });
  });

  describe("fail", () => {
    it("applies only to REQUESTED and records what is known of the identity", async () => {
      const d = await h.seed("REQUESTED");
      const patch = { agentClientId: "client-f", idpObjectId: "obj-f", idpBackend: "entra", delegatedAcId: "dac-f" };
      const ended = await h.store.end({ target: { ids: [d.id] }, ending: "fail", reason: "creation_failed", now: T0 + 10, patch });
      const expected = { ...endedAs(d, "FAILED", "creation_failed", T0 + 10), ...patch };
      expect(ended).toEqual([{ delegation: expected, revision: 1n, cascaded: false }]);
      expect(await h.store.get(d.id)).toStrictEqual(expected);
      expect((await h.events()).map((e) => [e.type, e.reason, e.delegation])).toEqual([["FAILED", "creation_failed", expected]]);
      // The work items find the identity and the context by what the patch recorded.
      const target = { agentClientId: "client-f", idpObjectId: "obj-f", idpBackend: "entra", delegatedAcId: "dac-f", endReason: "creation_failed" };
      expect((await h.effects("idp_delete")).map((e) => e.target)).toEqual([target]);
      expect((await h.effects("gsap_revoke")).map((e) => e.target)).toEqual([target]);

      const active = await h.seed("ACTIVE");
      expect(await h.store.end({ target: { ids: [active.id] }, ending: "fail", reason: "creation_failed", now: T0 + 20, patch })).toEqual([]);
      expect(await h.store.get(active.id)).toStrictEqual(active);
    });

    it("changes only the fields its patch names", async () => {
      const d = await h.seed("REQUESTED");
      const [ended] = await h.store.end({ target: { ids: [d.id] }, ending: "fail", reason: "creation_failed", now: T0 + 10, patch: { idpBackend: "entra" } });
      expect(ended!.delegation).toStrictEqual({ ...endedAs(d, "FAILED", "creation_failed", T0 + 10), idpBackend: "entra" });
      // No context was issued: nothing to revoke at GSAP.
      expect((await h.effects("idp_delete")).map((e) => e.delegationId)).toEqual([d.id]);
      expect(await h.effects("gsap_revoke")).toEqual([]);
    });
  });

  describe("end with target delegatorAcId", () => {
    it("ends every live delegation made from the context, in id order, and nothing else", async () => {
      const r = await h.seed("REQUESTED", { createTime: T0, delegatorAcId: "ac-1" });
      const a1 = await h.seed("ACTIVE", { createTime: T0 + 1, delegatorAcId: "ac-1" });
      const a2 = await h.seed("ACTIVE", { createTime: T0 + 2, delegatorAcId: "ac-1" });
      const x = await h.seed("REVOKED", { createTime: T0 + 3, delegatorAcId: "ac-1" });
      const y = await h.seed("EXPIRED", { createTime: T0 + 4, delegatorAcId: "ac-1" });
      const z = await h.seed("ACTIVE", { createTime: T0 + 5, delegatorAcId: "ac-2" });
      const head = await h.store.headRevision();
      const ended = await h.store.end({ target: { delegatorAcId: "ac-1" }, ending: "revoke", reason: "delegator_ac_revoked", now: T0 + 10 });
      expect(ended).toEqual(
        [r, a1, a2]
          .sort((p, q) => (p.id < q.id ? -1 : 1))
          .map((d, i) => ({ delegation: endedAs(d, "REVOKED", "delegator_ac_revoked", T0 + 10), revision: head + BigInt(i + 1), cascaded: false })),
      );
      for (const d of [x, y, z]) expect(await h.store.get(d.id)).toStrictEqual(d);
      expect(await h.store.end({ target: { delegatorAcId: "ac-1" }, ending: "revoke", reason: "again", now: T0 + 11 })).toEqual([]);
    });

    it("with a limit, ends that many per call, cascades on top, and the rest on the next calls", async () => {
      const parents = await Promise.all(Array.from({ length: 5 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + i, delegatorAcId: "ac-1" })));
      const children = new Map<string, string>();
      for (const p of parents) children.set(p.id, (await h.seedChild(p)).id);
      const inIdOrder = sortedIds(parents);
      const calls: string[][] = [];
      for (let i = 0; i < 5; i++) {
        const ended = await h.store.end({ target: { delegatorAcId: "ac-1" }, ending: "revoke", reason: "r", now: T0 + 10 + i, limit: 2 });
        if (ended.length === 0) break;
        const targets = ended.filter((e) => !e.cascaded).map((e) => e.delegation.id);
        // Each batch: its targets, then their children.
        expect(idsOf(ended)).toEqual([...targets, ...targets.map((id) => children.get(id)!).sort()]);
        calls.push(targets);
      }
      expect(calls).toEqual([inIdOrder.slice(0, 2), inIdOrder.slice(2, 4), inIdOrder.slice(4)]);
      const events = await h.events(10n);
      expect(events).toHaveLength(10);
      expect(new Set(events.map((e) => e.delegation.id)).size).toBe(10);
    });

    it("ends 500 per call by default", async () => {
      const ds = Array.from({ length: 501 }, (_, i) => makeDelegation({ createTime: T0 + i, delegatorAcId: "ac-many" }));
      for (let i = 0; i < ds.length; i += 50) await Promise.all(ds.slice(i, i + 50).map((d) => h.store.insertRequested(d)));
      const first = await h.store.end({ target: { delegatorAcId: "ac-many" }, ending: "revoke", reason: "r", now: T0 + 1000 });
      expect(idsOf(first)).toEqual(sortedIds(ds).slice(0, 500));
      expect(first.map((e) => e.revision)).toEqual(revisionsAfter(0n, 500));
      const second = await h.store.end({ target: { delegatorAcId: "ac-many" }, ending: "revoke", reason: "r", now: T0 + 1001 });
      expect(idsOf(second)).toEqual(sortedIds(ds).slice(500));
      expect((await h.effects("idp_delete")).length).toBe(501);
    });
  });

  describe("end with target dueAt (expiry)", () => {
    it("expires only ACTIVE delegations whose expire time is at or before dueAt, soonest first", async () => {
      const at10 = await h.seed("ACTIVE", { createTime: T0, expireTime: T0 + 10 });
      const at5 = await h.seed("ACTIVE", { createTime: T0, expireTime: T0 + 5 });
      const at20 = await h.seed("ACTIVE", { createTime: T0, expireTime: T0 + 20 });
      const at21 = await h.seed("ACTIVE", { createTime: T0, expireTime: T0 + 21 });
      const requested = await h.seed("REQUESTED", { expireTime: T0 + 1 });
      const revoked = await h.seed("REVOKED", { expireTime: T0 + 1 });
      const head = await h.store.headRevision();
      const ended = await h.store.end({ target: { dueAt: T0 + 20 }, ending: "expire", reason: "ttl_elapsed", now: T0 + 25 });
      expect(ended).toEqual(
        [at5, at10, at20].map((d, i) => ({ delegation: endedAs(d, "EXPIRED", "ttl_elapsed", T0 + 25), revision: head + BigInt(i + 1), cascaded: false })),
      );
      expect((await h.events(head)).map((e) => [e.type, e.reason, e.delegation.id])).toEqual([at5, at10, at20].map((d) => ["EXPIRED", "ttl_elapsed", d.id]));
      for (const d of [at21, requested, revoked]) expect(await h.store.get(d.id)).toStrictEqual(d);
      expect(await h.store.nextExpireTime()).toBe(T0 + 21);
      expect(await h.store.end({ target: { dueAt: T0 + 20 }, ending: "expire", reason: "ttl_elapsed", now: T0 + 26 })).toEqual([]);
    });

    it("with a limit, expires the soonest first and the rest on the next calls", async () => {
      const expireTimes = [T0 + 40, T0 + 10, T0 + 30, T0 + 50, T0 + 20];
      const ds = await Promise.all(expireTimes.map((expireTime, i) => h.seed("ACTIVE", { createTime: T0 - 10 + i, expireTime })));
      const soonest = [...ds].sort((a, b) => a.expireTime - b.expireTime).map((d) => d.id);
      // Due before all of them, but not ACTIVE: they take no place in a batch.
      await h.seed("REQUESTED", { createTime: T0 - 20, expireTime: T0 + 1 });
      await h.seed("REVOKED", { createTime: T0 - 20, expireTime: T0 + 1 });
      const spec = { target: { dueAt: T0 + 100 }, ending: "expire", reason: "ttl_elapsed", now: T0 + 100, limit: 2 } as const;
      expect(idsOf(await h.store.end(spec))).toEqual(soonest.slice(0, 2));
      expect(idsOf(await h.store.end(spec))).toEqual(soonest.slice(2, 4));
      expect(idsOf(await h.store.end(spec))).toEqual(soonest.slice(4));
      expect(await h.store.end(spec)).toEqual([]);
    });

    it("run at once, expiry batches take disjoint delegations, each expired once, with consecutive revisions", async () => {
      const ds = await Promise.all(Array.from({ length: 30 }, (_, i) => h.seed("ACTIVE", { createTime: T0 - 100 + i, expireTime: T0 + i })));
      const head = await h.store.headRevision();
      const spec = { target: { dueAt: T0 + 100 }, ending: "expire", reason: "ttl_elapsed", now: T0 + 100, limit: 10 } as const;
      const batches = await Promise.all([h.store.end(spec), h.store.end(spec), h.store.end(spec), h.store.end(spec)]);
      const all = batches.flat();
      expect(sortedIds(all.map((e) => e.delegation))).toEqual(sortedIds(ds));
      expect(batches.map((b) => b.length).sort((a, b) => a - b)).toEqual([0, 10, 10, 10]);
      expect(all.map((e) => e.revision).sort((a, b) => (a < b ? -1 : 1))).toEqual(revisionsAfter(head, 30));
      expect((await h.events(head)).filter((e) => e.type === "EXPIRED")).toHaveLength(30);
    });

    it("revokes the children of what it expires, and ends a due child with its parent only once", async () => {
      const parent = await h.seed("ACTIVE", { createTime: T0, expireTime: T0 + 10 });
      const dueChild = await h.seedChild(parent, "ACTIVE", { expireTime: T0 + 5 });
      const liveChild = await h.seedChild(parent, "ACTIVE", { expireTime: T0 + HOUR });
      const ended = await h.store.end({ target: { dueAt: T0 + 10 }, ending: "expire", reason: "ttl_elapsed", now: T0 + 10 });
      expect(ended.map((e) => [e.delegation.id, e.delegation.state, e.delegation.endReason, e.cascaded])).toEqual([
        [dueChild.id, "EXPIRED", "ttl_elapsed", false],
        [parent.id, "EXPIRED", "ttl_elapsed", false],
        [liveChild.id, "REVOKED", PARENT_ENDED, true],
      ]);
      expect((await h.events(3n)).map((e) => e.type)).toEqual(["EXPIRED", "EXPIRED", "REVOKED"]);
    });

    it("expires each due delegation exactly once under four concurrent sweeps", async () => {
      const ds = await Promise.all(Array.from({ length: 40 }, (_, i) => h.seed("ACTIVE", { createTime: T0 - 100 + i, expireTime: T0 + i })));
      const head = await h.store.headRevision();
      const sweep = async () => {
        const mine: string[] = [];
        for (;;) {
          const ended = await h.store.end({ target: { dueAt: T0 + 1000 }, ending: "expire", reason: "ttl_elapsed", now: T0 + 1000, limit: 7 });
          if (ended.length === 0) return mine;
          mine.push(...idsOf(ended));
        }
      };
      const swept = (await Promise.all([sweep(), sweep(), sweep(), sweep()])).flat();
      expect(swept.sort()).toEqual(sortedIds(ds));
      const events = await h.events(head);
      expect(events.map((e) => e.revision)).toEqual(revisionsAfter(head, 40));
      expect(events.every((e) => e.type === "EXPIRED")).toBe(true);
      expect(byDelegation(await h.effects("idp_delete")).size).toBe(40);
    });
  });

  describe("cascade", () => {
    it("ends live delegations made from an ended one's context, several levels deep, parents first", async () => {
      const root = await h.seed("ACTIVE", { createTime: T0 });
      const sibling = await h.seed("ACTIVE", { createTime: T0 + 1 }); // same delegator context as root: not its child
      const c1 = await h.seedChild(root, "ACTIVE", { createTime: T0 + 2 });
      const c2 = await h.seedChild(root, "ACTIVE", { createTime: T0 + 3 });
      const gone = await h.seedChild(root, "REVOKED", { createTime: T0 + 4 });
      const g1 = await h.seedChild(c1, "ACTIVE", { createTime: T0 + 5 });
      const g2 = await h.seedChild(c2, "REQUESTED", { createTime: T0 + 6 });
      const gg = await h.seedChild(g1, "ACTIVE", { createTime: T0 + 7 });
      const head = await h.store.headRevision();
      const now = T0 + 100;

      const ended = await revoke([root.id], now);
      const levels = [[root], [c1, c2], [g1, g2], [gg]].map((level) => [...level].sort((a, b) => (a.id < b.id ? -1 : 1)));
      const expected = levels.flat().map((d, i) => ({
        delegation: endedAs(d, "REVOKED", i === 0 ? "manual_revocation" : PARENT_ENDED, now),
        revision: head + BigInt(i + 1),
        cascaded: i > 0,
      }));
      expect(ended).toEqual(expected);
      for (const e of expected) expect(await h.store.get(e.delegation.id)).toStrictEqual(e.delegation);
      expect((await h.events(head)).map((e) => [e.revision, e.type, e.reason, e.delegation])).toEqual(
        expected.map((e, i) => [e.revision, "REVOKED", i === 0 ? "manual_revocation" : PARENT_ENDED, e.delegation]),
      );
      expect(await h.store.get(sibling.id)).toStrictEqual(sibling);
      expect(await h.store.get(gone.id)).toStrictEqual(gone);
    });

    it("follows a chain 17 delegations deep", async () => {
      const chain = [await h.seed("ACTIVE")];
      for (let i = 1; i < 17; i++) chain.push(await h.seedChild(chain[i - 1]!, "ACTIVE", { createTime: T0 + i }));
      const ended = await revoke([chain[0]!.id], T0 + 100);
      expect(idsOf(ended)).toEqual(chain.map((d) => d.id));
      expect(ended.map((e) => e.cascaded)).toEqual(chain.map((_, i) => i > 0));
      const { total } = await h.store.list({ state: "REVOKED", limit: 1 });
      expect(total).toBe(17);
    });

    it("with cascade: false, ends only the target", async () => {
      const root = await h.seed("ACTIVE");
      const child = await h.seedChild(root);
      const ended = await revoke([root.id], T0 + 10, { cascade: false });
      expect(idsOf(ended)).toEqual([root.id]);
      expect(await h.store.get(child.id)).toStrictEqual(child);
      expect((await h.events(2n)).map((e) => e.delegation.id)).toEqual([root.id]);
    });

    it("from a delegation without a context, ends nothing made from the empty context", async () => {
      const parent = await h.seed("REQUESTED");
      const orphan = await h.seed("ACTIVE", { delegatorAcId: "" });
      expect(idsOf(await revoke([parent.id], T0 + 10))).toEqual([parent.id]);
      expect(await h.store.get(orphan.id)).toStrictEqual(orphan);
    });

    it("from a failed delegation, ends what was made from the context its patch recorded", async () => {
      const parent = await h.seed("REQUESTED");
      const child = await h.seed("REQUESTED", { delegatorAcId: "dac-issued" });
      const ended = await h.store.end({
        target: { ids: [parent.id] },
        ending: "fail",
        reason: "creation_failed",
        now: T0 + 10,
        patch: { delegatedAcId: "dac-issued" },
      });
      expect(ended.map((e) => [e.delegation.id, e.delegation.state, e.cascaded])).toEqual([
        [parent.id, "FAILED", false],
        [child.id, "REVOKED", true],
      ]);
    });

    it("ends each delegation once when cascades that share descendants run concurrently", async () => {
      const roots = await Promise.all([0, 1, 2].map((i) => h.seed("ACTIVE", { createTime: T0 + i, delegatorAcId: "ac-shared" })));
      const all = [...roots];
      for (const r of roots) {
        const c = await h.seedChild(r);
        all.push(c, await h.seedChild(c));
      }
      const head = await h.store.headRevision();
      const results = await Promise.all([
        ...all.map((d, i) => revoke([d.id], T0 + 100 + i)),
        h.store.end({ target: { delegatorAcId: "ac-shared" }, ending: "revoke", reason: "delegator_ac_revoked", now: T0 + 100 }),
        revoke([...all].reverse().map((d) => d.id), T0 + 100),
      ]);
      expect(results.flatMap(idsOf).sort()).toEqual(sortedIds(all));
      const events = await h.events(head);
      expect(events.map((e) => e.revision)).toEqual(revisionsAfter(head, all.length));
      expect(sortedIds(events.map((e) => e.delegation))).toEqual(sortedIds(all));
      expect(byDelegation(await h.effects("idp_delete")).size).toBe(all.length);
      expect(byDelegation(await h.effects("gsap_revoke")).size).toBe(all.length);
    });
  });

  describe("countCommand's last command", () => {
    it("ends the delegation and its descendants in one transaction, with their events and work items", async () => {
      const d = await h.seed("ACTIVE", { maxCommands: 2 });
      const child = await h.seedChild(d);
      const grandchild = await h.seedChild(child);
      expect(await h.store.countCommand(d.id, T0 + 10)).toEqual({ kind: "counted", commandsExecuted: 1, maxCommands: 2 });
      const last = await h.store.countCommand(d.id, T0 + 20);
      expect(last).toEqual({
        kind: "limit_reached",
        ended: [
          { delegation: { ...endedAs(d, "EXPIRED", "command_limit", T0 + 20), commandsExecuted: 2 }, revision: 4n, cascaded: false },
          { delegation: endedAs(child, "REVOKED", PARENT_ENDED, T0 + 20), revision: 5n, cascaded: true },
          { delegation: endedAs(grandchild, "REVOKED", PARENT_ENDED, T0 + 20), revision: 6n, cascaded: true },
        ],
      });
      expect((await h.events(3n)).map((e) => [e.revision, e.type, e.reason])).toEqual([
        [4n, "COMMAND_LIMIT_REACHED", "command_limit"],
        [5n, "REVOKED", PARENT_ENDED],
        [6n, "REVOKED", PARENT_ENDED],
      ]);
      for (const kind of ["idp_delete", "gsap_revoke"] as const) {
        expect((await h.effects(kind)).map((e) => [e.delegationId, e.revision])).toEqual([
          [d.id, 4n],
          [child.id, 5n],
          [grandchild.id, 6n],
        ]);
      }
    });
  });

  describe("work items of endings", () => {
    it("every ending calls for one idp_delete and, with a delegated context, one gsap_revoke, at its revision", async () => {
      const revokedActive = await h.seed("ACTIVE", { createTime: T0 });
      const revokedRequested = await h.seed("REQUESTED", { createTime: T0 + 1 });
      const failed = await h.seed("REQUESTED", { createTime: T0 + 2 });
      const expired = await h.seed("ACTIVE", { createTime: T0 + 3, expireTime: T0 + 50 });
      const exhausted = await h.seed("ACTIVE", { createTime: T0 + 4, maxCommands: 1 });
      const head = await h.store.headRevision();

      const revisions = new Map<string, bigint>();
      const note = (ended: readonly Ended[]) => {
        for (const e of ended) revisions.set(e.delegation.id, e.revision);
      };
      note(await revoke([revokedActive.id, revokedRequested.id], T0 + 100));
      note(await h.store.end({ target: { ids: [failed.id] }, ending: "fail", reason: "creation_failed", now: T0 + 101 }));
      note(await h.store.end({ target: { dueAt: T0 + 50 }, ending: "expire", reason: "ttl_elapsed", now: T0 + 102 }));
      const last = await h.store.countCommand(exhausted.id, T0 + 103);
      if (last.kind !== "limit_reached") throw new Error(`expected limit_reached, got ${last.kind}`);
      note(last.ended);
      expect([...revisions.values()].sort(byRevision)).toEqual(revisionsAfter(head, 5));

      const idp = await h.store.pendingEndings("idp_delete", 100);
      const gsap = await h.store.pendingEndings("gsap_revoke", 100);
      // Every event was examined, CREATED ones included; only endings are items, oldest first.
      expect([idp.through, idp.examined, gsap.through, gsap.examined]).toEqual([head + 5n, Number(head) + 5, head + 5n, Number(head) + 5]);
      expect(idp.items.map((e) => e.revision)).toEqual(revisionsAfter(head, 5));
      expect(sortedIds(idp.items.map((e) => ({ id: e.delegationId })))).toEqual(sortedIds([revokedActive, revokedRequested, failed, expired, exhausted]));
      expect(sortedIds(gsap.items.map((e) => ({ id: e.delegationId })))).toEqual(sortedIds([revokedActive, expired, exhausted]));
      for (const e of [...idp.items, ...gsap.items]) {
        const d = (await h.store.get(e.delegationId))!;
        expect(e).toStrictEqual({
          kind: e.kind,
          delegationId: d.id,
          revision: revisions.get(d.id),
          attempts: 0,
          createTime: d.endTime,
          target: { agentClientId: d.agentClientId, idpObjectId: d.idpObjectId, idpBackend: d.idpBackend, delegatedAcId: d.delegatedAcId, endReason: d.endReason },
        });
      }
      expect(idp.items.every((e) => e.kind === "idp_delete") && gsap.items.every((e) => e.kind === "gsap_revoke")).toBe(true);
      // What the workers need of an activated identity: the names activation recorded.
      expect(idp.items.find((e) => e.delegationId === revokedActive.id)!.target).toEqual({
        agentClientId: activationFor(revokedActive).agentClientId,
        idpObjectId: activationFor(revokedActive).idpObjectId,
        idpBackend: "keycloak",
        delegatedAcId: `dac-${revokedActive.id}`,
        endReason: "manual_revocation",
      });
    });

    it("reading the pending endings does not move the cursor", async () => {
      const d = await h.seed("REVOKED");
      const first = await h.store.pendingEndings("idp_delete", 10);
      expect(await h.store.pendingEndings("idp_delete", 10)).toEqual(first);
      expect(first.items.map((e) => e.delegationId)).toEqual([d.id]);
    });
  });

  describe("the consequence cursors", () => {
    it("examine at most `limit` events per call, CREATED ones included, and continue after a settled batch", async () => {
      const a = await h.seed("ACTIVE", { createTime: T0 }); // 1
      const b = await h.seed("ACTIVE", { createTime: T0 + 1 }); // 2
      await revoke([a.id, b.id], T0 + 10); // 3, 4
      const c = await h.seed("REVOKED", { createTime: T0 + 2 }); // 5, 6
      const batch = (limit: number) => h.store.pendingEndings("idp_delete", limit);
      const summary = async (limit: number) => {
        const r = await batch(limit);
        return { ids: r.items.map((e) => [e.delegationId, e.revision]), through: r.through, examined: r.examined };
      };
      expect(await summary(2)).toEqual({ ids: [], through: 2n, examined: 2 });
      await h.store.settleEffects("idp_delete", { through: 2n, done: [], retry: [], rejected: [] }, T0 + 20);
      expect(await summary(3)).toEqual({
        ids: [
          [a.id, 3n],
          [b.id, 4n],
        ],
        through: 5n,
        examined: 3,
      });
      await h.store.settleEffects("idp_delete", { through: 5n, done: [], retry: [], rejected: [] }, T0 + 20);
      expect(await summary(3)).toEqual({ ids: [[c.id, 6n]], through: 6n, examined: 1 });
      await h.store.settleEffects("idp_delete", { through: 6n, done: [], retry: [], rejected: [] }, T0 + 20);
      expect(await summary(3)).toEqual({ ids: [], through: 6n, examined: 0 });
    });

    it("are one per kind, and never move back", async () => {
      await h.seed("REVOKED", { createTime: T0 }); // 1, 2
      await h.seed("REVOKED", { createTime: T0 + 1 }); // 3, 4
      await h.store.settleEffects("idp_delete", { through: 4n, done: [], retry: [], rejected: [] }, T0 + 20);
      expect(await h.effects("idp_delete")).toEqual([]);
      expect((await h.effects("gsap_revoke")).map((e) => e.revision)).toEqual([2n, 4n]);
      // A late settle (an older batch) cannot undo a later one.
      await h.store.settleEffects("idp_delete", { through: 1n, done: [], retry: [], rejected: [] }, T0 + 21);
      expect(await h.effects("idp_delete")).toEqual([]);
      expect((await h.store.pendingEndings("idp_delete", 10)).through).toBe(4n);
      // Without `through`, the cursor stays.
      await h.store.settleEffects("gsap_revoke", { done: [], retry: [], rejected: [] }, T0 + 22);
      expect(await h.effects("gsap_revoke")).toHaveLength(2);
    });

    it("decide a gsap_revoke by the context the delegation has when read", async () => {
      const d = await h.seed("REQUESTED");
      await revoke([d.id], T0 + 10);
      expect(await h.effects("gsap_revoke")).toEqual([]);
      expect((await h.store.effectBacklog("gsap_revoke")).pending).toBe(0);
    });
  });

  describe("the retry table", () => {
    /** Ends REQUESTED delegations one by one at the given times: one idp_delete each (no context). */
    async function endingsAt(times: number[]): Promise<Effect[]> {
      for (const [i, now] of times.entries()) {
        const d = await h.seed("REQUESTED", { createTime: T0 + i });
        await revoke([d.id], now);
      }
      return h.effects("idp_delete");
    }
    const head = () => h.store.headRevision();
    const settle = async (o: Partial<EffectOutcomes>, now: number, kind: "idp_delete" | "gsap_revoke" = "idp_delete") =>
      h.store.settleEffects(kind, { done: [], retry: [], rejected: [], ...o }, now);
    const due = (now: number, limit = 100) => h.store.dueRetries("idp_delete", now, limit);

    it("keeps a failed fresh item with its attempt, error and next attempt time, due then", async () => {
      const [a] = await endingsAt([T0 + 10]);
      await settle({ through: await head(), retry: [{ effect: a!, error: "503", nextAttemptTime: T0 + 100 }] }, T0 + 20);
      expect(await h.effects("idp_delete")).toEqual([]); // the cursor moved past it
      expect(await due(T0 + 99)).toEqual([]);
      const [retry] = await due(T0 + 100);
      expect(retry).toStrictEqual({ ...a!, attempts: 1, retryId: retry!.retryId });
      expect(typeof retry!.retryId).toBe("number");
      expect(await h.store.nextRetryTime("idp_delete")).toBe(T0 + 100);
      expect(await h.store.nextRetryTime("gsap_revoke")).toBeNull();
      expect(await h.store.dueRetries("gsap_revoke", FAR, 10)).toEqual([]);
    });

    it("effectOwed: while the ending is after the cursor, and while a retry waits; not once it is done", async () => {
      const [a] = await endingsAt([T0 + 10]);
      const other = await h.seed("REVOKED", { createTime: T0 + 50 });
      expect(await h.store.effectOwed("idp_delete", a!.delegationId)).toBe(true);
      await settle({ through: await head(), retry: [{ effect: a!, error: "503", nextAttemptTime: T0 + 100 }] }, T0 + 20);
      expect(await h.store.effectOwed("idp_delete", a!.delegationId)).toBe(true); // the retry waits
      expect(await h.store.effectOwed("gsap_revoke", a!.delegationId)).toBe(false); // no context: nothing to revoke
      expect(await h.store.effectOwed("idp_delete", other.id)).toBe(false); // settled with the cursor
      const [retry] = await due(T0 + 100);
      await settle({ done: [retry!.retryId!] }, T0 + 100);
      expect(await h.store.effectOwed("idp_delete", a!.delegationId)).toBe(false);
    });

    it("counts each further attempt and moves its next attempt time; done items leave the table", async () => {
      const [a, b] = await endingsAt([T0 + 10, T0 + 20]);
      await settle(
        {
          through: await head(),
          retry: [
            { effect: a!, error: "503", nextAttemptTime: T0 + 100 },
            { effect: b!, error: "timeout", nextAttemptTime: T0 + 90 },
          ],
        },
        T0 + 30,
      );
      const [rb, ra] = await due(T0 + 100);
      expect([rb!.delegationId, ra!.delegationId]).toEqual([b!.delegationId, a!.delegationId]); // soonest next attempt first
      await settle({ retry: [{ effect: ra!, error: "503 again", nextAttemptTime: T0 + 200 }] }, T0 + 100);
      expect((await due(FAR)).map((e) => [e.delegationId, e.attempts])).toEqual([
        [b!.delegationId, 1],
        [a!.delegationId, 2],
      ]);
      expect(await h.store.nextRetryTime("idp_delete")).toBe(T0 + 90);
      expect(await h.store.effectBacklog("idp_delete")).toEqual({ pending: 2, retrying: 2, oldestPendingTime: T0 + 10, rejected: 0 });
      await settle({ done: [rb!.retryId!] }, T0 + 110);
      expect((await due(FAR)).map((e) => e.delegationId)).toEqual([a!.delegationId]);
      expect(await h.store.nextRetryTime("idp_delete")).toBe(T0 + 200);
      await settle({ done: [ra!.retryId!] }, T0 + 210);
      expect(await due(FAR)).toEqual([]);
      expect(await h.store.nextRetryTime("idp_delete")).toBeNull();
      expect(await h.store.effectBacklog("idp_delete")).toEqual({ pending: 0, retrying: 0, oldestPendingTime: null, rejected: 0 });
    });

    it("gives only due items, soonest first, at most limit", async () => {
      const items = await endingsAt([T0 + 1, T0 + 2, T0 + 3, T0 + 4]);
      const next = [T0 + 40, T0 + 10, T0 + 30, T0 + 20];
      await settle({ through: await head(), retry: items.map((effect, i) => ({ effect, error: "x", nextAttemptTime: next[i]! })) }, T0 + 5);
      const order = (effects: Effect[]) => effects.map((e) => items.findIndex((x) => x.delegationId === e.delegationId));
      expect(order(await due(T0 + 30))).toEqual([1, 3, 2]);
      expect(order(await due(FAR, 2))).toEqual([1, 3]);
      expect(await due(T0 + 9)).toEqual([]);
    });

    it("records refusals, fresh or retried, as rejected: out of the queue, counted, and pruned after the cutoff", async () => {
      const [a, b] = await endingsAt([T0 + 1, T0 + 2]);
      await settle({ through: await head(), rejected: [{ effect: a!, error: "400 no such client" }], retry: [{ effect: b!, error: "503", nextAttemptTime: T0 + 50 }] }, T0 + 10);
      const [rb] = await due(FAR);
      await settle({ rejected: [{ effect: rb!, error: "404" }] }, T0 + 60);
      expect(await due(FAR)).toEqual([]);
      expect(await h.store.nextRetryTime("idp_delete")).toBeNull();
      expect(await h.store.effectBacklog("idp_delete")).toEqual({ pending: 0, retrying: 0, oldestPendingTime: null, rejected: 2 });

      expect(await h.store.pruneEffects(T0 + 10, 10)).toBe(0); // strictly before
      expect(await h.store.pruneEffects(T0 + 11, 10)).toBe(1); // a, refused at T0 + 10
      expect(await h.store.effectBacklog("idp_delete")).toMatchObject({ rejected: 1 });
      expect(await h.store.pruneEffects(FAR, 10)).toBe(1); // b, refused at T0 + 60
      expect(await h.store.pruneEffects(FAR, 10)).toBe(0);
    });

    it("pruneEffects deletes at most maxRows, and never an item still to be retried", async () => {
      const items = await endingsAt([T0 + 1, T0 + 2, T0 + 3, T0 + 4]);
      const [keep, ...refuse] = items;
      await settle(
        { through: await head(), retry: [{ effect: keep!, error: "503", nextAttemptTime: T0 + 500 }], rejected: refuse.map((effect) => ({ effect, error: "400" })) },
        T0 + 10,
      );
      expect(await h.store.pruneEffects(FAR, 2)).toBe(2);
      expect(await h.store.pruneEffects(FAR, 2)).toBe(1);
      expect(await h.store.pruneEffects(FAR, 2)).toBe(0);
      expect((await due(FAR)).map((e) => e.delegationId)).toEqual([keep!.delegationId]);
    });

    it("settles the outcomes and the cursor in one transaction: all or nothing", async () => {
      const [a, b] = await endingsAt([T0 + 1, T0 + 2]);
      await settle({ retry: [{ effect: a!, error: "503", nextAttemptTime: T0 + 5 }] }, T0 + 3); // a waits in the table; cursor stays
      const [ra] = await due(FAR);
      const through = await head();
      // NaN is no time: the insert of b's retry fails, after a's deletion and before the cursor moves.
      await expect(settle({ through, done: [ra!.retryId!], retry: [{ effect: b!, error: "503", nextAttemptTime: Number.NaN }] }, T0 + 10)).rejects.toThrow();
      expect((await due(FAR)).map((e) => e.retryId)).toEqual([ra!.retryId]);
      expect((await h.effects("idp_delete")).map((e) => e.delegationId)).toEqual([a!.delegationId, b!.delegationId]);
    });

    it("effectBacklog counts the endings after the cursor and the retries, per kind", async () => {
      const empty = { pending: 0, retrying: 0, oldestPendingTime: null, rejected: 0 };
      expect(await h.store.effectBacklog("idp_delete")).toEqual(empty);
      const active = await h.seed("ACTIVE", { createTime: T0 });
      await revoke([active.id], T0 + 5); // both kinds, at T0 + 5
      const [, x, y] = await endingsAt([T0 + 10, T0 + 20, T0 + 30]); // idp_delete only
      expect(await h.store.effectBacklog("idp_delete")).toEqual({ pending: 4, retrying: 0, oldestPendingTime: T0 + 5, rejected: 0 });
      expect(await h.store.effectBacklog("gsap_revoke")).toEqual({ pending: 1, retrying: 0, oldestPendingTime: T0 + 5, rejected: 0 });
      // The worker gets through all of them: x waits for a retry, y is refused.
      await settle({ through: await head(), retry: [{ effect: x!, error: "503", nextAttemptTime: T0 + 50 }], rejected: [{ effect: y!, error: "400" }] }, T0 + 40);
      expect(await h.store.effectBacklog("idp_delete")).toEqual({ pending: 1, retrying: 1, oldestPendingTime: T0 + 10, rejected: 1 });
      expect(await h.store.effectBacklog("gsap_revoke")).toEqual({ pending: 1, retrying: 0, oldestPendingTime: T0 + 5, rejected: 0 });
      await settle({ through: await head() }, T0 + 40, "gsap_revoke");
      expect(await h.store.effectBacklog("gsap_revoke")).toEqual(empty);
    });
  });

  describe("adoptLateContext", () => {
    it("leaves its item out of effectBacklog's retrying until it has failed", async () => {
      const d = await h.seed("REQUESTED");
      await revoke([d.id], T0 + 10);
      await h.store.settleEffects("gsap_revoke", { through: await h.store.headRevision(), done: [], retry: [], rejected: [] }, T0 + 15);
      await h.store.adoptLateContext(d.id, "dac-late", T0 + 20);
      // "retrying: of those, how many have failed at least once": this one has not been tried.
      expect(await h.store.effectBacklog("gsap_revoke")).toEqual({ pending: 1, retrying: 0, oldestPendingTime: T0 + 20, rejected: 0 });
    });

    it.each(["REVOKED", "FAILED"] as const)("records a late context on a %s delegation without one, with a gsap_revoke retry due now", async (state) => {
      const d = await h.seed("REQUESTED");
      const [ended] = await h.store.end({ target: { ids: [d.id] }, ending: state === "REVOKED" ? "revoke" : "fail", reason: "r", now: T0 + 10 });
      // The revoke worker has been past the ending: it had no context to revoke then.
      await h.store.settleEffects("gsap_revoke", { through: await h.store.headRevision(), done: [], retry: [], rejected: [] }, T0 + 15);
      const head = await h.store.headRevision();
      expect(await h.store.adoptLateContext(d.id, "dac-late", T0 + 20)).toBe(true);
      const expected = { ...ended!.delegation, delegatedAcId: "dac-late", updateTime: T0 + 20 };
      expect(await h.store.get(d.id)).toStrictEqual(expected);
      expect(await h.store.findByDelegatedAc("dac-late")).toStrictEqual(expected);
      expect(await h.store.headRevision()).toBe(head);
      expect(await h.store.dueRetries("gsap_revoke", T0 + 19, 10)).toEqual([]);
      const [item] = await h.store.dueRetries("gsap_revoke", T0 + 20, 10);
      expect(item).toMatchObject({ kind: "gsap_revoke", delegationId: d.id, attempts: 0, createTime: T0 + 20 });
      expect(item!.target).toEqual({ agentClientId: "", idpObjectId: "", idpBackend: "stub", delegatedAcId: "dac-late", endReason: "r" });
      // Only once: now it has a context.
      expect(await h.store.adoptLateContext(d.id, "dac-later", T0 + 30)).toBe(false);
      expect((await h.store.get(d.id))!.delegatedAcId).toBe("dac-late");
      expect(await h.store.dueRetries("gsap_revoke", FAR, 10)).toHaveLength(1);
      expect(await h.store.effectBacklog("gsap_revoke")).toMatchObject({ pending: 1, oldestPendingTime: T0 + 20 });
    });

    it("refuses a live delegation, an ended one with a context, and an unknown id", async () => {
      const requested = await h.seed("REQUESTED");
      const active = await h.seed("ACTIVE");
      const revoked = await h.seed("REVOKED");
      expect(await h.store.adoptLateContext(requested.id, "dac-1", T0 + 20)).toBe(false);
      expect(await h.store.adoptLateContext(active.id, "dac-2", T0 + 20)).toBe(false);
      expect(await h.store.adoptLateContext(revoked.id, "dac-3", T0 + 20)).toBe(false);
      expect(await h.store.adoptLateContext(newDelegationId(), "dac-4", T0 + 20)).toBe(false);
      for (const d of [requested, active, revoked]) expect(await h.store.get(d.id)).toStrictEqual(d);
      expect(await h.store.dueRetries("gsap_revoke", FAR, 10)).toEqual([]);
    });
  });

  describe("pruneEvents", () => {
    /** One event at each time, revision i + 1 at times[i]; returns the delegations. */
    async function eventsAt(times: number[]): Promise<Delegation[]> {
      const out: Delegation[] = [];
      for (const [i, now] of times.entries()) {
        const d = await h.seed("REQUESTED", { createTime: T0 - 100 + i });
        out.push((await h.store.activate({ id: d.id, now, patch: activationFor(d) }))!.delegation);
      }
      return out;
    }
    /** Moves the audit and both consequence cursors (or the ones named) to `through`. */
    async function settled(through: bigint, cursors: ("audit" | "idp_delete" | "gsap_revoke")[] = ["audit", "idp_delete", "gsap_revoke"]) {
      for (const c of cursors) {
        if (c === "audit") await h.store.markAudited(through, T0 + 1000);
        else await h.store.settleEffects(c, { through, done: [], retry: [], rejected: [] }, T0 + 1000);
      }
    }
    const left = async () => (await h.events()).map((e) => e.revision);

    it("deletes only events older than `before`, advances prunedThrough, and never rewinds it or the head", async () => {
      await eventsAt([T0 + 1, T0 + 2, T0 + 3, T0 + 4]);
      await settled(4n);
      expect(await h.store.pruneEvents(T0 + 3, 100)).toEqual({ deleted: 2, more: false });
      expect(await h.store.prunedThrough()).toBe(2n);
      expect(await left()).toEqual([3n, 4n]);
      // An earlier cutoff, or the same one again, prunes nothing and keeps the mark.
      expect(await h.store.pruneEvents(T0 + 1, 100)).toEqual({ deleted: 0, more: false });
      expect(await h.store.pruneEvents(T0 + 3, 100)).toEqual({ deleted: 0, more: false });
      expect(await h.store.prunedThrough()).toBe(2n);
      expect(await h.store.pruneEvents(FAR, 100)).toEqual({ deleted: 2, more: false });
      expect(await h.store.prunedThrough()).toBe(4n);
      expect(await left()).toEqual([]);
      expect(await h.store.headRevision()).toBe(4n);
      await eventsAt([T0 + 5]);
      expect(await left()).toEqual([5n]);
    });

    // Event time is the caller's clock, read before the transaction takes its revision: concurrent
    // writers and replicas with skewed clocks write times out of revision order. The pruner's
    // binary search assumes they are in order, and then deletes events newer than `before`.
    it("prunes by revision: the boundary is the newest revision found (by binary search) written before `before`", async () => {
      // Event times follow revisions only to within a transaction's time (two writers, or a clock
      // stepped back, can put revision 2 before revision 1): the boundary is a revision, and an event
      // out of time order goes with its neighbours. Documented; a retention of hours cannot tell.
      await eventsAt([T0 + 1, T0 + 2, T0 + 10, T0 + 3, T0 + 20, T0 + 30]);
      await settled(6n);
      await h.store.pruneEvents(T0 + 15, 100);
      const kept = await h.events();
      // Everything up to the last revision found before T0 + 15 (revision 4) goes; revision 3, at T0 + 10, with it.
      expect(kept.map((e) => e.revision)).toEqual([5n, 6n]);
      expect(await h.store.prunedThrough()).toBe(4n);
    });

    it.each(["audit", "idp_delete", "gsap_revoke"] as const)("never deletes an event the %s cursor has not passed", async (behind) => {
      await eventsAt([T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5]);
      await settled(5n, (["audit", "idp_delete", "gsap_revoke"] as const).filter((c) => c !== behind));
      await settled(2n, [behind]);
      expect(await h.store.pruneEvents(FAR, 100)).toEqual({ deleted: 2, more: false });
      expect(await h.store.prunedThrough()).toBe(2n);
      expect(await left()).toEqual([3n, 4n, 5n]);
      await settled(5n, [behind]);
      expect(await h.store.pruneEvents(FAR, 100)).toEqual({ deleted: 3, more: false });
    });

    it("deletes at most maxRows per call, and says when another call would delete more", async () => {
      await eventsAt(Array.from({ length: 7 }, (_, i) => T0 + i));
      await settled(7n);
      expect(await h.store.pruneEvents(FAR, 3)).toEqual({ deleted: 3, more: true });
      expect(await h.store.prunedThrough()).toBe(3n);
      expect(await h.store.pruneEvents(FAR, 3)).toEqual({ deleted: 3, more: true });
      expect(await h.store.pruneEvents(FAR, 3)).toEqual({ deleted: 1, more: false });
      expect(await h.store.prunedThrough()).toBe(7n);
    });

    it("says no more when the rest waits for a cursor, or when exactly maxRows were left", async () => {
      await eventsAt(Array.from({ length: 6 }, (_, i) => T0 + i));
      await settled(5n);
      expect(await h.store.pruneEvents(FAR, 3)).toEqual({ deleted: 3, more: true });
      expect(await h.store.pruneEvents(FAR, 3)).toEqual({ deleted: 2, more: false });
      expect(await left()).toEqual([6n]);
      await eventsAt([T0 + 10, T0 + 11, T0 + 12]); // 7, 8, 9
      await settled(9n);
      expect(await h.store.pruneEvents(FAR, 4)).toEqual({ deleted: 4, more: false });
      expect(await left()).toEqual([]);
      expect(await h.store.prunedThrough()).toBe(9n);
    });
  });
});
