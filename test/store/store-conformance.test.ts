/**
 * The DelegationStore contract, run against every driver. Each test gets a
 * fresh database so global queries (expiry, cleanup, the event log) see only
 * what the test put there.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { DelegatedContext, Delegation, DelegationState } from "../../src/delegation/model.js";
import { newDelegationId } from "../../src/delegation/ids.js";
import { openStore } from "../../src/store/open-store.js";
import type { DelegationStore, IdempotencyClaim, TransitionSpec } from "../../src/store/store.js";
import { DRIVERS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";

// Past 2^32 ms, so a time squeezed through a 32-bit integer anywhere would show.
const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const HOUR = 3_600_000;
const ID = /^del_[0-9A-Z]{26}$/;

/** A REQUESTED delegation as the manager builds it; overrides win. */
function makeDelegation(overrides: Partial<Delegation> = {}): Delegation {
  const createTime = overrides.createTime ?? T0;
  const id = overrides.id ?? newDelegationId(createTime);
  return {
    id,
    state: "REQUESTED",
    agentType: "claude-code",
    agentModel: "claude-opus-4",
    agentDid: `did:web:agents.example:claude-code-${id}`,
    agentClientId: "",
    idpObjectId: "",
    idpBackend: "stub",
    delegatorDid: "did:web:example.com:users/alice",
    delegatorAcId: "ac-alice-1",
    delegatedAcId: "",
    delegatedAc: null,
    capabilityCeiling: "L2",
    ceremonyRequiredFor: ["git push", "kubectl delete"],
    prohibitedCommands: ["rm -rf /"],
    inheritCorpus: true,
    inheritContexts: false,
    accordTemplate: "default",
    maxCommands: 100,
    commandsExecuted: 0,
    depth: 1,
    createTime,
    updateTime: createTime,
    expireTime: createTime + HOUR,
    endTime: null,
    endReason: "",
    chronicleCid: "",
    idpCleanupPending: false,
    ...overrides,
  };
}

function makeContext(d: Delegation, overrides: Partial<DelegatedContext> = {}): DelegatedContext {
  return {
    contextId: `dac-${d.id}`,
    status: "ACTIVE",
    principalDid: d.agentDid,
    delegationId: d.id,
    capabilityCeiling: d.capabilityCeiling,
    expireTime: d.expireTime,
    attributes: { issuer: "gsap", nested: { list: [1, "two", null], ok: true } },
    ...overrides,
  };
}

function claimFor(d: Delegation, overrides: Partial<IdempotencyClaim> = {}): IdempotencyClaim {
  return {
    scope: d.delegatorDid,
    method: "CreateDelegation",
    requestId: "req-1",
    requestHash: "hash-1",
    delegationId: d.id,
    ...overrides,
  };
}

describe.each(DRIVERS)("DelegationStore on %s", (driver) => {
  let db: TestDatabase | undefined;
  let store: DelegationStore;

  beforeEach(async () => {
    db = await createTestDatabase(driver);
    store = await openStore(db.url);
  });

  afterEach(async () => {
    await store?.close();
    await db?.drop();
    db = undefined;
  });

  /** Inserts a delegation and moves it to `state` through the store's own transitions. */
  async function seed(overrides: Partial<Delegation> = {}, state: DelegationState = "REQUESTED", now?: number): Promise<Delegation> {
    const d = makeDelegation(overrides);
    expect(await store.insertRequested(d)).toEqual({ kind: "claimed" });
    if (state === "REQUESTED") return d;
    const at = now ?? d.createTime + 1;
    const active = await store.transition({
      id: d.id,
      from: ["REQUESTED"],
      to: "ACTIVE",
      event: "CREATED",
      reason: "created",
      now: at,
      patch: { delegatedAcId: `dac-${d.id}`, delegatedAc: makeContext(d) },
    });
    if (state === "ACTIVE") return active!.delegation;
    const ended = await store.transition({
      id: d.id,
      from: ["ACTIVE"],
      to: state,
      event: state === "REVOKED" ? "REVOKED" : state === "EXPIRED" ? "EXPIRED" : "FAILED",
      reason: `seeded_${state.toLowerCase()}`,
      now: at,
    });
    return ended!.delegation;
  }

  it("reports its driver", () => {
    expect(store.driver).toBe(driver);
  });

  describe("insertRequested and get", () => {
    it("round-trips every field, with a delegated context object and booleans one way", async () => {
      const base = makeDelegation();
      const d = makeDelegation({
        id: base.id,
        agentClientId: "client-ü-1",
        idpObjectId: "0b8f6c1e-6a2d-4d7e-9d8e-2f1a3c4b5d6e",
        delegatedAcId: "dac-42",
        delegatedAc: makeContext(base),
        ceremonyRequiredFor: [],
        prohibitedCommands: ["rm -rf /", "curl \"x\" | sh", "ünïcødé"],
        inheritCorpus: true,
        inheritContexts: false,
        maxCommands: 2_147_483_647,
        commandsExecuted: 7,
        depth: 3,
        createTime: T0,
        updateTime: T0 + 5,
        // Beyond 2^53 / 2 ms is still exact in a JS number and needs a 64-bit column.
        expireTime: 8_640_000_000_000_000,
        endTime: null,
        chronicleCid: "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
      });
      expect(d.id).toMatch(ID);
      await store.insertRequested(d);
      const got = await store.get(d.id);
      expect(got).toStrictEqual(d);
    });

    it("round-trips a null delegated context, the other booleans and a set end time", async () => {
      const d = makeDelegation({
        delegatedAc: null,
        inheritCorpus: false,
        inheritContexts: true,
        idpCleanupPending: true,
        endTime: T0 + 10,
        endReason: "creation_failed",
        ceremonyRequiredFor: ["a", "b"],
        prohibitedCommands: [],
      });
      await store.insertRequested(d);
      expect(await store.get(d.id)).toStrictEqual(d);
    });

    it("returns null for an unknown id", async () => {
      expect(await store.get(newDelegationId())).toBeNull();
    });

    it("rejects a second delegation with the same id", async () => {
      const d = makeDelegation();
      await store.insertRequested(d);
      await expect(store.insertRequested({ ...d, agentModel: "other" })).rejects.toThrow();
      expect((await store.get(d.id))!.agentModel).toBe(d.agentModel);
    });
  });

  describe("insertRequested with an idempotency claim", () => {
    it("claims the key with the delegation and no response yet", async () => {
      const d = makeDelegation();
      expect(await store.insertRequested(d, claimFor(d))).toEqual({ kind: "claimed" });
      expect(await store.getIdempotency(claimFor(d))).toEqual({
        ...claimFor(d),
        response: null,
        createTime: d.createTime,
      });
    });

    it("answers a second claim of the same key with the first record and inserts nothing", async () => {
      const first = makeDelegation();
      const second = makeDelegation({ createTime: T0 + 1 });
      await store.insertRequested(first, claimFor(first));
      const again = await store.insertRequested(second, claimFor(second, { requestHash: "hash-2" }));
      expect(again).toEqual({
        kind: "existing",
        record: { ...claimFor(first), response: null, createTime: first.createTime },
      });
      expect(await store.get(second.id)).toBeNull();
      expect((await store.list({ state: "REQUESTED", limit: 10 })).total).toBe(1);
    });

    it("keys on scope, method and request id together", async () => {
      const first = makeDelegation();
      await store.insertRequested(first, claimFor(first));
      for (const differs of [{ scope: "did:web:other" }, { method: "RevokeDelegation" }, { requestId: "req-2" }]) {
        const d = makeDelegation();
        expect(await store.insertRequested(d, claimFor(d, differs))).toEqual({ kind: "claimed" });
      }
      expect((await store.list({ state: "REQUESTED", limit: 10 })).total).toBe(4);
    });

    it("lets exactly one of ten concurrent claims of one key win", async () => {
      const candidates = Array.from({ length: 10 }, (_, i) => makeDelegation({ createTime: T0 + i }));
      const results = await Promise.all(candidates.map((d) => store.insertRequested(d, claimFor(d))));
      const claimed = results.flatMap((r, i) => (r.kind === "claimed" ? [candidates[i]!] : []));
      expect(claimed).toHaveLength(1);
      const winner = claimed[0]!;
      for (const r of results) {
        if (r.kind === "existing") expect(r.record.delegationId).toBe(winner.id);
      }
      const { items, total } = await store.list({ state: "REQUESTED", limit: 20 });
      expect(total).toBe(1);
      expect(items.map((d) => d.id)).toEqual([winner.id]);
      expect((await store.getIdempotency(claimFor(winner)))!.delegationId).toBe(winner.id);
    });
  });

  describe("transition", () => {
    it("changes nothing and appends no event when the state does not match", async () => {
      const d = await seed({}, "ACTIVE");
      const head = await store.headRevision();
      const revisions: bigint[] = [];
      store.onCommit((r) => revisions.push(r));
      const t = await store.transition({
        id: d.id,
        from: ["REQUESTED"],
        to: "FAILED",
        event: "FAILED",
        reason: "creation_failed",
        now: T0 + 100,
        patch: { agentClientId: "should-not-stick" },
      });
      expect(t).toBeNull();
      expect(await store.get(d.id)).toStrictEqual(d);
      expect(await store.headRevision()).toBe(head);
      expect(await store.readEvents(head, 10)).toEqual([]);
      expect(revisions).toEqual([]);
    });

    it("returns null for an unknown id", async () => {
      const head = await store.headRevision();
      const t = await store.transition({
        id: newDelegationId(),
        from: ["ACTIVE"],
        to: "REVOKED",
        event: "REVOKED",
        reason: "manual_revocation",
        now: T0,
      });
      expect(t).toBeNull();
      expect(await store.headRevision()).toBe(head);
    });

    it("applies the patch, keeps the delegation live and appends the event at head + 1", async () => {
      const d = await seed();
      const head = await store.headRevision();
      const ctx = makeContext(d, { contextId: "dac-new" });
      const t = await store.transition({
        id: d.id,
        from: ["REQUESTED"],
        to: "ACTIVE",
        event: "CREATED",
        reason: "created",
        now: T0 + 50,
        patch: { agentClientId: "client-1", idpObjectId: "obj-1", idpBackend: "keycloak", delegatedAcId: "dac-new", delegatedAc: ctx },
      });
      const expected: Delegation = {
        ...d,
        state: "ACTIVE",
        updateTime: T0 + 50,
        agentClientId: "client-1",
        idpObjectId: "obj-1",
        idpBackend: "keycloak",
        delegatedAcId: "dac-new",
        delegatedAc: ctx,
      };
      expect(t).toEqual({ delegation: expected, revision: head + 1n });
      expect(await store.get(d.id)).toStrictEqual(expected);
      expect(await store.headRevision()).toBe(head + 1n);
      expect(await store.readEvents(head, 10)).toEqual([
        { revision: head + 1n, type: "CREATED", delegation: expected, eventTime: T0 + 50, reason: "created", chronicleCid: "" },
      ]);
    });

    it("leaves fields the patch does not name untouched", async () => {
      const d = await seed({}, "ACTIVE");
      const t = await store.transition({
        id: d.id,
        from: ["ACTIVE"],
        to: "ACTIVE",
        event: "CREATED",
        reason: "noop",
        now: T0 + 60,
        patch: { idpBackend: "entra" },
      });
      expect(t!.delegation).toStrictEqual({ ...d, idpBackend: "entra", updateTime: T0 + 60 });
    });

    it.each(["EXPIRED", "REVOKED", "FAILED"] as const)("ending in %s sets end time, end reason and cleanup", async (to) => {
      const d = await seed({}, "ACTIVE");
      const head = await store.headRevision();
      const t = await store.transition({
        id: d.id,
        from: ["REQUESTED", "ACTIVE"],
        to,
        event: to,
        reason: "because",
        now: T0 + 70,
      });
      const expected = { ...d, state: to, updateTime: T0 + 70, endTime: T0 + 70, endReason: "because", idpCleanupPending: true };
      expect(t).toEqual({ delegation: expected, revision: head + 1n });
      expect(await store.get(d.id)).toStrictEqual(expected);
      const [event] = await store.readEvents(head, 10);
      expect(event).toMatchObject({ type: to, reason: "because", eventTime: T0 + 70, delegation: expected });
    });

    it("stores the first answer, built from the changed delegation, with the transition", async () => {
      const d = makeDelegation();
      const claim = claimFor(d);
      await store.insertRequested(d, claim);
      const t = await store.transition({
        id: d.id,
        from: ["REQUESTED"],
        to: "ACTIVE",
        event: "CREATED",
        reason: "created",
        now: T0 + 80,
        completeIdempotency: { ...claim, response: (x) => JSON.stringify({ id: x.id, state: x.state, updateTime: x.updateTime }) },
      });
      expect(t).not.toBeNull();
      const record = await store.getIdempotency(claim);
      expect(JSON.parse(record!.response!)).toEqual({ id: d.id, state: "ACTIVE", updateTime: T0 + 80 });
    });

    it("stores no answer when the transition is refused", async () => {
      const d = makeDelegation();
      const claim = claimFor(d);
      await store.insertRequested(d, claim);
      const t = await store.transition({
        id: d.id,
        from: ["ACTIVE"],
        to: "REVOKED",
        event: "REVOKED",
        reason: "manual_revocation",
        now: T0 + 80,
        completeIdempotency: { ...claim, response: () => "answer" },
      });
      expect(t).toBeNull();
      expect((await store.getIdempotency(claim))!.response).toBeNull();
    });

    it("rolls the whole transition back when the answer cannot be built", async () => {
      const d = makeDelegation();
      const claim = claimFor(d);
      await store.insertRequested(d, claim);
      const head = await store.headRevision();
      const revisions: bigint[] = [];
      store.onCommit((r) => revisions.push(r));
      await expect(
        store.transition({
          id: d.id,
          from: ["REQUESTED"],
          to: "ACTIVE",
          event: "CREATED",
          reason: "created",
          now: T0 + 80,
          completeIdempotency: {
            ...claim,
            response: () => {
              throw new Error("serializer broke");
            },
          },
        }),
      ).rejects.toThrow("serializer broke");
      expect(await store.get(d.id)).toStrictEqual(d);
      expect(await store.headRevision()).toBe(head);
      expect(await store.readEvents(head, 10)).toEqual([]);
      expect(revisions).toEqual([]);
    });

    it("does not take writes made while it is open down with it when it rolls back", async () => {
      const d = await seed();
      const victims = await Promise.all(Array.from({ length: 5 }, (_, i) => seed({ createTime: T0 + 1 + i }, "ACTIVE")));
      const failing = store.transition({
        id: d.id,
        from: ["REQUESTED"],
        to: "ACTIVE",
        event: "CREATED",
        reason: "created",
        now: T0 + 80,
        completeIdempotency: {
          ...claimFor(d),
          response: () => {
            throw new Error("serializer broke");
          },
        },
      });
      // Started while the transaction above is open; each commits on its own.
      const claims = Array.from({ length: 10 }, (_, i) =>
        store.claimIdempotency({ ...claimFor(d), requestId: `concurrent-${i}` }, T0 + 80),
      );
      const counts = victims.map((v) => store.countCommand(v.id, T0 + 80));
      await expect(failing).rejects.toThrow("serializer broke");
      expect(await Promise.all(claims)).toEqual(claims.map(() => ({ kind: "claimed" })));
      expect((await Promise.all(counts)).map((c) => c.kind)).toEqual(victims.map(() => "counted"));
      for (let i = 0; i < 10; i++) {
        expect(await store.getIdempotency({ ...claimFor(d), requestId: `concurrent-${i}` })).not.toBeNull();
      }
      for (const v of victims) expect((await store.get(v.id))!.commandsExecuted).toBe(1);
      expect((await store.get(d.id))!.state).toBe("REQUESTED");
    });

    it("releases the idempotency key with the transition, and keeps it when refused", async () => {
      const d = makeDelegation();
      const claim = claimFor(d);
      await store.insertRequested(d, claim);
      const spec: TransitionSpec = {
        id: d.id,
        from: ["REQUESTED"],
        to: "FAILED",
        event: "FAILED",
        reason: "creation_failed",
        now: T0 + 90,
        releaseIdempotency: claim,
      };
      expect(await store.transition({ ...spec, from: ["ACTIVE"] })).toBeNull();
      expect(await store.getIdempotency(claim)).not.toBeNull();
      expect(await store.transition(spec)).not.toBeNull();
      expect(await store.getIdempotency(claim)).toBeNull();
    });

    it("with onlyIfExpiredAt, refuses before the expire time and expires at it", async () => {
      const d = await seed({ expireTime: T0 + HOUR }, "ACTIVE");
      const expire = (at: number) =>
        store.transition({
          id: d.id,
          from: ["ACTIVE"],
          to: "EXPIRED",
          event: "EXPIRED",
          reason: "ttl_elapsed",
          now: at,
          onlyIfExpiredAt: at,
        });
      expect(await expire(T0 + HOUR - 1)).toBeNull();
      expect((await store.get(d.id))!.state).toBe("ACTIVE");
      const t = await expire(T0 + HOUR);
      expect(t!.delegation).toMatchObject({ state: "EXPIRED", endReason: "ttl_elapsed", endTime: T0 + HOUR });
    });
  });

  describe("revisions", () => {
    it("stay gap-free and in order under 50 concurrent transitions", async () => {
      const ds = await Promise.all(Array.from({ length: 50 }, (_, i) => seed({ createTime: T0 + i })));
      const head = await store.headRevision();
      const results = await Promise.all(
        ds.map((d, i) =>
          store.transition({ id: d.id, from: ["REQUESTED"], to: "ACTIVE", event: "CREATED", reason: "created", now: T0 + 1000 + i }),
        ),
      );
      const expected = Array.from({ length: 50 }, (_, i) => head + BigInt(i + 1));
      expect(results.map((r) => r!.revision).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).toEqual(expected);

      const events = await store.readEvents(head, 100);
      expect(events.map((e) => e.revision)).toEqual(expected);
      // Each event is the one its transition reported, not merely some event at that number.
      const byRevision = new Map(results.map((r) => [r!.revision, r!.delegation]));
      for (const e of events) expect(e.delegation).toStrictEqual(byRevision.get(e.revision));
      expect(await store.headRevision()).toBe(head + 50n);
    });

    it("never let a reader following the log skip one that commits later", async () => {
      const ds = await Promise.all(Array.from({ length: 50 }, (_, i) => seed({ createTime: T0 + i })));
      const head = await store.headRevision();
      const seen: bigint[] = [];
      let cursor = head;
      const follow = async () => {
        const events = await store.readEvents(cursor, 1000);
        for (const e of events) {
          seen.push(e.revision);
          cursor = e.revision;
        }
      };
      let writing = true;
      // Reads the way the watch hub does: everything after the last revision it saw.
      const reader = (async () => {
        while (writing) await follow();
        await follow();
      })();
      await Promise.all(
        ds.map((d, i) =>
          store.transition({ id: d.id, from: ["REQUESTED"], to: "ACTIVE", event: "CREATED", reason: "created", now: T0 + 1000 + i }),
        ),
      );
      writing = false;
      await reader;
      expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => head + BigInt(i + 1)));
    });

    it("start at zero with nothing pruned", async () => {
      expect(await store.headRevision()).toBe(0n);
      expect(await store.prunedThrough()).toBe(0n);
    });
  });

  describe("onCommit", () => {
    it("hears each committed revision, not refused ones, until unsubscribed", async () => {
      const d = await seed({ maxCommands: 1 });
      const heard: bigint[] = [];
      const unsubscribe = store.onCommit((r) => heard.push(r));
      const activated = await store.transition({ id: d.id, from: ["REQUESTED"], to: "ACTIVE", event: "CREATED", reason: "created", now: T0 + 1 });
      await store.transition({ id: d.id, from: ["REQUESTED"], to: "FAILED", event: "FAILED", reason: "x", now: T0 + 2 });
      const limited = await store.countCommand(d.id, T0 + 3);
      if (limited.kind !== "limit_reached") throw new Error(`expected limit_reached, got ${limited.kind}`);
      expect(await store.countCommand(d.id, T0 + 4)).toMatchObject({ kind: "refused" });
      expect(heard).toEqual([activated!.revision, limited.revision]);

      unsubscribe();
      await seed({}, "ACTIVE");
      expect(heard).toHaveLength(2);
    });

    it("keeps the commit when a listener throws", async () => {
      const d = await seed();
      const heard: bigint[] = [];
      store.onCommit(() => {
        throw new Error("listener broke");
      });
      store.onCommit((r) => heard.push(r));
      const t = await store.transition({ id: d.id, from: ["REQUESTED"], to: "ACTIVE", event: "CREATED", reason: "created", now: T0 + 1 });
      expect(t).not.toBeNull();
      expect(heard).toEqual([t!.revision]);
    });
  });

  describe("countCommand", () => {
    it("never counts past max_commands under 60 concurrent calls, and ends the delegation once", async () => {
      const d = await seed({ maxCommands: 25, expireTime: T0 + HOUR }, "ACTIVE");
      const head = await store.headRevision();
      const now = T0 + 100;
      const results = await Promise.all(Array.from({ length: 60 }, () => store.countCommand(d.id, now)));

      const counted = results.filter((r) => r.kind === "counted");
      const limited = results.filter((r) => r.kind === "limit_reached");
      const refused = results.filter((r) => r.kind === "refused");
      expect(counted).toHaveLength(24);
      expect(limited).toHaveLength(1);
      expect(refused).toHaveLength(35);
      // Every counted call saw its own count: 1..24, each once.
      expect(counted.map((r) => r.commandsExecuted).sort((a, b) => a - b)).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
      expect(counted.every((r) => r.maxCommands === 25)).toBe(true);

      const final = await store.get(d.id);
      expect(final).toMatchObject({
        state: "EXPIRED",
        endReason: "command_limit",
        endTime: now,
        commandsExecuted: 25,
        idpCleanupPending: true,
      });
      expect(limited[0]).toEqual({ kind: "limit_reached", delegation: final, revision: head + 1n });
      const events = await store.readEvents(head, 100, { delegationId: d.id });
      expect(events.map((e) => [e.type, e.revision])).toEqual([["COMMAND_LIMIT_REACHED", head + 1n]]);
      expect(events[0]!.delegation).toStrictEqual(final);
    });

    it("counts one at a time and reports the budget", async () => {
      const d = await seed({ maxCommands: 3 }, "ACTIVE");
      expect(await store.countCommand(d.id, T0 + 10)).toEqual({ kind: "counted", commandsExecuted: 1, maxCommands: 3 });
      expect(await store.countCommand(d.id, T0 + 11)).toEqual({ kind: "counted", commandsExecuted: 2, maxCommands: 3 });
      expect(await store.get(d.id)).toMatchObject({ state: "ACTIVE", commandsExecuted: 2, updateTime: T0 + 11 });
      expect(await store.countCommand(d.id, T0 + 12)).toMatchObject({ kind: "limit_reached" });
    });

    it("with max_commands 1, the first command ends the delegation and the second is refused", async () => {
      const d = await seed({ maxCommands: 1 }, "ACTIVE");
      const first = await store.countCommand(d.id, T0 + 10);
      if (first.kind !== "limit_reached") throw new Error(`expected limit_reached, got ${first.kind}`);
      expect(first.delegation).toMatchObject({ state: "EXPIRED", commandsExecuted: 1, endReason: "command_limit" });
      expect(await store.countCommand(d.id, T0 + 11)).toEqual({ kind: "refused", delegation: first.delegation });
    });

    it("refuses once the expire time is reached, without counting", async () => {
      const d = await seed({ expireTime: T0 + HOUR, maxCommands: 5 }, "ACTIVE");
      const head = await store.headRevision();
      for (const at of [T0 + HOUR, T0 + HOUR + 1]) {
        expect(await store.countCommand(d.id, at)).toEqual({ kind: "refused", delegation: d });
      }
      expect(await store.get(d.id)).toStrictEqual(d);
      expect(await store.headRevision()).toBe(head);
      expect((await store.countCommand(d.id, T0 + HOUR - 1)).kind).toBe("counted");
    });

    it("refuses the last command of the budget once expired", async () => {
      const d = await seed({ expireTime: T0 + HOUR, maxCommands: 1 }, "ACTIVE");
      expect(await store.countCommand(d.id, T0 + HOUR)).toEqual({ kind: "refused", delegation: d });
      expect((await store.get(d.id))!.state).toBe("ACTIVE");
    });

    it.each(["REQUESTED", "REVOKED"] as const)("refuses a %s delegation", async (state) => {
      const d = await seed({ maxCommands: 5 }, state);
      expect(await store.countCommand(d.id, T0 + 10)).toEqual({ kind: "refused", delegation: d });
      expect((await store.get(d.id))!.commandsExecuted).toBe(0);
    });

    it("refuses an unknown id", async () => {
      expect(await store.countCommand(newDelegationId(), T0)).toEqual({ kind: "refused", delegation: null });
    });
  });

  describe("list", () => {
    it("pages by id with afterId, with a total that ignores the cursor", async () => {
      const alice = await Promise.all(Array.from({ length: 5 }, (_, i) => seed({ createTime: T0 + i }, "ACTIVE")));
      const bob = await Promise.all(
        Array.from({ length: 2 }, (_, i) => seed({ createTime: T0 + 10 + i, delegatorDid: "did:web:example.com:users/bob" }, "ACTIVE")),
      );
      await seed({ createTime: T0 + 20 }); // REQUESTED, never listed as ACTIVE
      const all = [...alice, ...bob].map((d) => d.id).sort();

      const seen: string[] = [];
      let afterId: string | undefined;
      for (;;) {
        const page = await store.list({ state: "ACTIVE", limit: 3, ...(afterId ? { afterId } : {}) });
        expect(page.total).toBe(7);
        if (page.items.length === 0) break;
        expect(page.items.length).toBeLessThanOrEqual(3);
        seen.push(...page.items.map((d) => d.id));
        afterId = page.items.at(-1)!.id;
      }
      expect(seen).toEqual(all);
    });

    it("returns whole delegations in id order", async () => {
      const ds = await Promise.all(Array.from({ length: 3 }, (_, i) => seed({ createTime: T0 + i }, "ACTIVE")));
      const { items } = await store.list({ state: "ACTIVE", limit: 10 });
      expect(items).toStrictEqual([...ds].sort((a, b) => (a.id < b.id ? -1 : 1)));
    });

    it("filters by state and delegator", async () => {
      const bobDid = "did:web:example.com:users/bob";
      const aliceActive = await seed({}, "ACTIVE");
      const bobActive = await seed({ delegatorDid: bobDid }, "ACTIVE");
      const bobRevoked = await seed({ delegatorDid: bobDid }, "REVOKED");
      const aliceRequested = await seed();

      const ids = async (q: Parameters<DelegationStore["list"]>[0]) => {
        const { items, total } = await store.list(q);
        expect(total).toBe(items.length);
        return items.map((d) => d.id).sort();
      };
      expect(await ids({ state: "ACTIVE", limit: 10 })).toEqual([aliceActive.id, bobActive.id].sort());
      expect(await ids({ state: "ACTIVE", delegatorDid: bobDid, limit: 10 })).toEqual([bobActive.id]);
      expect(await ids({ state: "REVOKED", limit: 10 })).toEqual([bobRevoked.id]);
      expect(await ids({ state: "REVOKED", delegatorDid: aliceActive.delegatorDid, limit: 10 })).toEqual([]);
      expect(await ids({ state: "REQUESTED", limit: 10 })).toEqual([aliceRequested.id]);
      expect(await ids({ state: "FAILED", limit: 10 })).toEqual([]);
    });
  });

  describe("lookups", () => {
    it("findLiveByDelegatorAc returns the REQUESTED and ACTIVE delegations of that context", async () => {
      const requested = await seed({ delegatorAcId: "ac-1", createTime: T0 });
      const active = await seed({ delegatorAcId: "ac-1", createTime: T0 + 1 }, "ACTIVE");
      await seed({ delegatorAcId: "ac-1", createTime: T0 + 2 }, "REVOKED");
      await seed({ delegatorAcId: "ac-1", createTime: T0 + 3 }, "EXPIRED");
      await seed({ delegatorAcId: "ac-2", createTime: T0 + 4 }, "ACTIVE");
      const got = await store.findLiveByDelegatorAc("ac-1");
      expect(got).toStrictEqual([requested, active].sort((a, b) => (a.id < b.id ? -1 : 1)));
      expect(await store.findLiveByDelegatorAc("ac-none")).toEqual([]);
    });

    it("findByDelegatedAc finds the delegation of a delegated context, and never one for the empty id", async () => {
      const active = await seed({}, "ACTIVE");
      await seed(); // REQUESTED: its delegatedAcId is ""
      expect(await store.findByDelegatedAc(active.delegatedAcId)).toStrictEqual(active);
      expect(await store.findByDelegatedAc("")).toBeNull();
      expect(await store.findByDelegatedAc("dac-unknown")).toBeNull();
    });

    it("dueForExpiry returns only ACTIVE delegations at or past their expire time, soonest first", async () => {
      const at10 = await seed({ expireTime: T0 + 10 }, "ACTIVE");
      const at5 = await seed({ expireTime: T0 + 5 }, "ACTIVE");
      const at20 = await seed({ expireTime: T0 + 20 }, "ACTIVE");
      await seed({ expireTime: T0 + 21 }, "ACTIVE");
      await seed({ expireTime: T0 + 1 }); // REQUESTED
      await seed({ expireTime: T0 + 1 }, "REVOKED");
      const due = await store.dueForExpiry(T0 + 20, 10);
      expect(due.map((d) => d.id)).toEqual([at5.id, at10.id, at20.id]);
      expect(due[0]).toStrictEqual(at5);
      expect((await store.dueForExpiry(T0 + 20, 2)).map((d) => d.id)).toEqual([at5.id, at10.id]);
      expect(await store.dueForExpiry(T0 + 4, 10)).toEqual([]);
    });

    it("nextExpireTime is the earliest expire time among ACTIVE delegations", async () => {
      expect(await store.nextExpireTime()).toBeNull();
      await seed({ expireTime: T0 + 1 }); // REQUESTED
      await seed({ expireTime: T0 + 2 }, "REVOKED");
      expect(await store.nextExpireTime()).toBeNull();
      await seed({ expireTime: T0 + 30 }, "ACTIVE");
      await seed({ expireTime: T0 + 20 }, "ACTIVE");
      expect(await store.nextExpireTime()).toBe(T0 + 20);
    });

    it("pendingCleanup lists ended delegations until markCleanedUp", async () => {
      await seed({}, "ACTIVE");
      const revoked = await seed({}, "REVOKED", T0 + 20);
      const failed = await seed({}, "FAILED", T0 + 10);
      const pending = await store.pendingCleanup(10);
      expect(pending.map((d) => d.id)).toEqual([failed.id, revoked.id]);
      expect((await store.pendingCleanup(1)).map((d) => d.id)).toEqual([failed.id]);

      await store.markCleanedUp(failed.id);
      expect((await store.pendingCleanup(10)).map((d) => d.id)).toEqual([revoked.id]);
      expect(await store.get(failed.id)).toStrictEqual({ ...failed, idpCleanupPending: false });
      await expect(store.markCleanedUp(newDelegationId())).resolves.toBeUndefined();
    });

    it("staleRequested returns REQUESTED delegations created strictly before the cutoff, oldest first", async () => {
      const older = await seed({ createTime: T0 - 10 });
      const old = await seed({ createTime: T0 - 5 });
      await seed({ createTime: T0 });
      await seed({ createTime: T0 - 20 }, "ACTIVE");
      expect((await store.staleRequested(T0, 10)).map((d) => d.id)).toEqual([older.id, old.id]);
      expect((await store.staleRequested(T0, 1)).map((d) => d.id)).toEqual([older.id]);
      expect(await store.staleRequested(T0 - 10, 10)).toEqual([]);
    });
  });

  describe("event log", () => {
    it("readEvents filters by delegation and delegator, reads after a revision, and honours the limit", async () => {
      const bobDid = "did:web:example.com:users/bob";
      const a = await seed({}, "REVOKED"); // revisions 1, 2
      const b = await seed({ delegatorDid: bobDid }, "ACTIVE"); // 3
      const c = await seed({ delegatorDid: bobDid }, "EXPIRED"); // 4, 5
      const revs = async (after: bigint, limit: number, filter?: Parameters<DelegationStore["readEvents"]>[2]) =>
        (await store.readEvents(after, limit, filter)).map((e) => [e.revision, e.delegation.id]);

      expect(await revs(0n, 100)).toEqual([
        [1n, a.id],
        [2n, a.id],
        [3n, b.id],
        [4n, c.id],
        [5n, c.id],
      ]);
      expect(await revs(0n, 100, { delegationId: a.id })).toEqual([
        [1n, a.id],
        [2n, a.id],
      ]);
      expect(await revs(0n, 100, { delegatorDid: bobDid })).toEqual([
        [3n, b.id],
        [4n, c.id],
        [5n, c.id],
      ]);
      expect(await revs(0n, 100, { delegatorDid: bobDid, delegationId: c.id })).toEqual([
        [4n, c.id],
        [5n, c.id],
      ]);
      expect(await revs(0n, 100, { delegatorDid: bobDid, delegationId: a.id })).toEqual([]);
      expect(await revs(3n, 100, { delegatorDid: bobDid })).toEqual([
        [4n, c.id],
        [5n, c.id],
      ]);
      expect(await revs(1n, 2)).toEqual([
        [2n, a.id],
        [3n, b.id],
      ]);
      expect(await revs(5n, 100)).toEqual([]);
    });

    it("pruneEvents deletes events older than the cutoff and advances prunedThrough, never back", async () => {
      const d = await seed({}, "REQUESTED");
      const times = [T0 + 1, T0 + 2, T0 + 3, T0 + 4];
      // ACTIVE → ACTIVE keeps the delegation transitionable, one event per time.
      await store.transition({ id: d.id, from: ["REQUESTED"], to: "ACTIVE", event: "CREATED", reason: "created", now: times[0]! });
      for (const now of times.slice(1)) {
        await store.transition({ id: d.id, from: ["ACTIVE"], to: "ACTIVE", event: "CREATED", reason: "again", now });
      }
      expect(await store.headRevision()).toBe(4n);
      // Only events the audit sink has received may go.
      for (const r of [1n, 2n, 3n, 4n]) await store.markAudited(r, T0 + 10);

      expect(await store.pruneEvents(T0 + 3)).toBe(2);
      expect(await store.prunedThrough()).toBe(2n);
      expect((await store.readEvents(0n, 100)).map((e) => [e.revision, e.eventTime])).toEqual([
        [3n, T0 + 3],
        [4n, T0 + 4],
      ]);

      // An earlier cutoff, or the same one again, prunes nothing and keeps the mark.
      expect(await store.pruneEvents(T0 + 1)).toBe(0);
      expect(await store.pruneEvents(T0 + 3)).toBe(0);
      expect(await store.prunedThrough()).toBe(2n);

      expect(await store.pruneEvents(T0 + 100)).toBe(2);
      expect(await store.prunedThrough()).toBe(4n);
      expect(await store.readEvents(0n, 100)).toEqual([]);
      // Pruning never rewinds the head: the next event is still 5.
      const t = await store.transition({ id: d.id, from: ["ACTIVE"], to: "REVOKED", event: "REVOKED", reason: "x", now: T0 + 200 });
      expect(t!.revision).toBe(5n);
    });
  });

  describe("idempotency keys", () => {
    const ref = { scope: "did:web:example.com:users/alice", method: "RevokeDelegation", requestId: "req-7" };

    it("claimIdempotency claims once, then answers with the stored record", async () => {
      const id = newDelegationId();
      const claim = { ...ref, requestHash: "h1", delegationId: id };
      expect(await store.getIdempotency(ref)).toBeNull();
      expect(await store.claimIdempotency(claim, T0 + 5)).toEqual({ kind: "claimed" });
      const record = { ...claim, response: null, createTime: T0 + 5 };
      expect(await store.getIdempotency(ref)).toEqual(record);
      expect(await store.claimIdempotency({ ...claim, requestHash: "h2", delegationId: "other" }, T0 + 6)).toEqual({
        kind: "existing",
        record,
      });
    });

    it("lets exactly one of ten concurrent claimIdempotency calls win", async () => {
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => store.claimIdempotency({ ...ref, requestHash: `h${i}`, delegationId: `d${i}` }, T0)),
      );
      const claimed = results.flatMap((r, i) => (r.kind === "claimed" ? [i] : []));
      expect(claimed).toHaveLength(1);
      const winner = `d${claimed[0]}`;
      for (const r of results) if (r.kind === "existing") expect(r.record.delegationId).toBe(winner);
    });

    it("releaseIdempotency deletes the key so the next claim starts afresh", async () => {
      await store.claimIdempotency({ ...ref, requestHash: "h1", delegationId: "d1" }, T0);
      await store.releaseIdempotency(ref);
      expect(await store.getIdempotency(ref)).toBeNull();
      await expect(store.releaseIdempotency(ref)).resolves.toBeUndefined();
      expect(await store.claimIdempotency({ ...ref, requestHash: "h2", delegationId: "d2" }, T0 + 1)).toEqual({ kind: "claimed" });
      expect((await store.getIdempotency(ref))!.requestHash).toBe("h2");
    });

    it("pruneIdempotency deletes keys created strictly before the cutoff", async () => {
      for (const [i, at] of [T0 - 2, T0 - 1, T0, T0 + 1].entries()) {
        await store.claimIdempotency({ ...ref, requestId: `req-${i}`, requestHash: "h", delegationId: "" }, at);
      }
      expect(await store.pruneIdempotency(T0)).toBe(2);
      expect(await store.getIdempotency({ ...ref, requestId: "req-0" })).toBeNull();
      expect(await store.getIdempotency({ ...ref, requestId: "req-1" })).toBeNull();
      expect(await store.getIdempotency({ ...ref, requestId: "req-2" })).not.toBeNull();
      expect(await store.getIdempotency({ ...ref, requestId: "req-3" })).not.toBeNull();
      expect(await store.pruneIdempotency(T0)).toBe(0);
    });
  });

  describe("audit outbox state", () => {
    it("lists undelivered events oldest first, and delivered or refused ones leave the list", async () => {
      await seed({}, "REVOKED"); // events 1 (CREATED), 2 (REVOKED)
      await seed({}, "ACTIVE"); // event 3
      expect((await store.pendingAudit(10)).map((p) => p.event.revision)).toEqual([1n, 2n, 3n]);
      await store.markAuditFailed(1n, "503 from chronicle");
      expect((await store.pendingAudit(10))[0]).toMatchObject({ attempts: 1, event: { revision: 1n } });
      await store.markAudited(1n, T0 + 5);
      await store.markAuditRejected(2n, "400 bad payload", T0 + 6);
      expect((await store.pendingAudit(10)).map((p) => p.event.revision)).toEqual([3n]);
      expect(await store.auditBacklog()).toMatchObject({ pending: 1, rejected: 1 });
      // Marking is conditional on pending: a late failure report cannot resurrect a delivered event.
      await store.markAuditFailed(1n, "late");
      expect((await store.pendingAudit(10)).map((p) => p.event.revision)).toEqual([3n]);
    });

    it("reports the oldest pending event time", async () => {
      expect(await store.auditBacklog()).toEqual({ pending: 0, oldestPendingTime: null, rejected: 0 });
      const d = await seed({}, "ACTIVE", T0 + 42);
      expect(await store.auditBacklog()).toEqual({ pending: 1, oldestPendingTime: T0 + 42, rejected: 0 });
      expect(d.state).toBe("ACTIVE");
    });

    it("never prunes an event that has not been delivered, nor anything after it", async () => {
      const d = await seed({}, "REQUESTED");
      await store.transition({ id: d.id, from: ["REQUESTED"], to: "ACTIVE", event: "CREATED", reason: "c", now: T0 + 1 });
      for (const now of [T0 + 2, T0 + 3]) {
        await store.transition({ id: d.id, from: ["ACTIVE"], to: "ACTIVE", event: "CREATED", reason: "again", now });
      }
      await store.markAudited(1n, T0 + 10);
      // Event 2 is still pending: only event 1 may go, though all three are old.
      expect(await store.pruneEvents(T0 + 100)).toBe(1);
      expect(await store.prunedThrough()).toBe(1n);
      expect((await store.readEvents(0n, 10)).map((e) => e.revision)).toEqual([2n, 3n]);
    });
  });

  describe("content ids", () => {
    it("stamps each event with its content id and the delegation with its CREATED record's", async () => {
      const cidOf = (e: { revision: bigint; type: string; delegation: { id: string } }) => `cid:${e.type}:${e.revision}:${e.delegation.id}`;
      const withCid = await openStore(db!.url, { contentId: cidOf });
      try {
        const d = makeDelegation();
        await withCid.insertRequested(d);
        const head = await withCid.headRevision();
        const t = await withCid.transition({ id: d.id, from: ["REQUESTED"], to: "ACTIVE", event: "CREATED", reason: "c", now: T0 + 1 });
        const expected = `cid:CREATED:${head + 1n}:${d.id}`;
        expect(t!.delegation.chronicleCid).toBe(expected);
        expect((await withCid.get(d.id))!.chronicleCid).toBe(expected);
        await withCid.transition({ id: d.id, from: ["ACTIVE"], to: "REVOKED", event: "REVOKED", reason: "r", now: T0 + 2 });
        const events = await withCid.readEvents(head, 10);
        expect(events.map((e) => e.chronicleCid)).toEqual([expected, `cid:REVOKED:${head + 2n}:${d.id}`]);
        // The CREATED record's id stays the delegation's, whatever happens next.
        expect(events[1]!.delegation.chronicleCid).toBe(expected);
      } finally {
        await withCid.close();
      }
    });
  });

  describe("leases", () => {
    it("gives a lease to one holder until it expires or is released, and renews it for the holder", async () => {
      expect(await store.acquireLease("job", "a", T0, 1000)).toBe(true);
      expect(await store.acquireLease("job", "b", T0 + 500, 1000)).toBe(false);
      expect(await store.acquireLease("job", "a", T0 + 900, 1000)).toBe(true); // renewed to T0 + 1900
      expect(await store.acquireLease("job", "b", T0 + 1500, 1000)).toBe(false);
      expect(await store.acquireLease("job", "b", T0 + 2000, 1000)).toBe(true); // expired: taken over
      await store.releaseLease("job", "a"); // not a's any more: no effect
      expect(await store.acquireLease("job", "a", T0 + 2100, 1000)).toBe(false);
      await store.releaseLease("job", "b");
      expect(await store.acquireLease("job", "a", T0 + 2100, 1000)).toBe(true);
    });

    it("lets exactly one of many concurrent first claims win", async () => {
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => store.acquireLease("race", `h${i}`, T0, 1000)));
      expect(results.filter(Boolean)).toHaveLength(1);
    });
  });
});
