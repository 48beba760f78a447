/**
 * The DelegationStore contract, run against every driver: rows, idempotency
 * keys, activation, counting, revisions and the event log, the audit outbox,
 * leases. Endings and their consequences are in store-endings.test.ts. Each
 * test gets a fresh database, so global queries (expiry, the outbox, the log)
 * see only what the test put there.
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import type { Delegation, DelegationEvent } from "../../src/domain/index.js";
import { newDelegationId } from "../../src/delegation/ids.js";
import { openStore } from "../../src/store/open-store.js";
import type { DelegationStore, EventFilter } from "../../src/store/store.js";
import { DRIVERS } from "../helpers/databases.js";
import {
  HOUR,
  T0,
  activated,
  activationFor,
  byRevision,
  claimFor,
  makeContext,
  makeDelegation,
  revisionsAfter,
  sortedIds,
  useStore,
} from "./fixtures.js";

const ID = /^del_[0-9A-Z]{26}$/;
const BOB = "did:web:example.com:users/bob";

describe.each(DRIVERS)("DelegationStore on %s", (driver) => {
  const h = useStore(driver);

  it("reports its driver", () => {
    expect(h.store.driver).toBe(driver);
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
        prohibitedCommands: ["rm -rf /", 'curl "x" | sh', "ünïcødé"],
        inheritCorpus: true,
        inheritContexts: false,
        maxCommands: 2_147_483_647,
        commandsExecuted: 7,
        depth: 3,
        updateTime: T0 + 5,
        // Beyond 2^53 / 2 ms is still exact in a JS number and needs a 64-bit column.
        expireTime: 8_640_000_000_000_000,
        chronicleCid: "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
      });
      expect(d.id).toMatch(ID);
      expect(await h.store.insertRequested(d)).toEqual({ kind: "claimed" });
      expect(await h.store.get(d.id)).toStrictEqual(d);
    });

    it("round-trips a null delegated context, the other booleans and a set end time", async () => {
      const d = makeDelegation({
        inheritCorpus: false,
        inheritContexts: true,
        endTime: T0 + 10,
        endReason: "creation_failed",
        ceremonyRequiredFor: ["a", "b"],
        prohibitedCommands: [],
      });
      await h.store.insertRequested(d);
      expect(await h.store.get(d.id)).toStrictEqual(d);
    });

    it("returns null for an unknown id", async () => {
      expect(await h.store.get(newDelegationId())).toBeNull();
    });

    it("rejects a second delegation with the same id", async () => {
      const d = makeDelegation();
      await h.store.insertRequested(d);
      await expect(h.store.insertRequested({ ...d, agentModel: "other" })).rejects.toThrow();
      expect((await h.store.get(d.id))!.agentModel).toBe(d.agentModel);
    });

    it("appends no event, writes no work item and tells no listener", async () => {
      const heard: bigint[] = [];
      h.store.onCommit((r) => heard.push(r));
      await h.store.insertRequested(makeDelegation());
      expect(await h.store.headRevision()).toBe(0n);
      expect(await h.effects("idp_delete")).toEqual([]);
      expect(heard).toEqual([]);
    });
  });

  describe("insertRequested with an idempotency claim", () => {
    it("claims the key with the delegation and no response yet", async () => {
      const d = makeDelegation();
      expect(await h.store.insertRequested(d, claimFor(d))).toEqual({ kind: "claimed" });
      expect(await h.store.getIdempotency(claimFor(d))).toEqual({ ...claimFor(d), response: null, createTime: d.createTime, responseTime: null, answeredTime: null });
    });

    it("answers a second claim of the same key with the first record and inserts nothing", async () => {
      const first = makeDelegation();
      const second = makeDelegation({ createTime: T0 + 1 });
      await h.store.insertRequested(first, claimFor(first));
      const again = await h.store.insertRequested(second, claimFor(second, { requestHash: "hash-2" }));
      expect(again).toEqual({ kind: "existing", record: { ...claimFor(first), response: null, createTime: first.createTime, responseTime: null, answeredTime: null } });
      expect(await h.store.get(second.id)).toBeNull();
      expect((await h.store.list({ state: "REQUESTED", limit: 10 })).total).toBe(1);
    });

    it("keys on scope, method and request id together", async () => {
      const first = makeDelegation();
      await h.store.insertRequested(first, claimFor(first));
      for (const differs of [{ scope: "did:web:other" }, { method: "RevokeDelegation" }, { requestId: "req-2" }]) {
        const d = makeDelegation();
        expect(await h.store.insertRequested(d, claimFor(d, differs))).toEqual({ kind: "claimed" });
      }
      expect((await h.store.list({ state: "REQUESTED", limit: 10 })).total).toBe(4);
    });

    it("lets exactly one of ten concurrent claims of one key win", async () => {
      const candidates = Array.from({ length: 10 }, (_, i) => makeDelegation({ createTime: T0 + i }));
      const results = await Promise.all(candidates.map((d) => h.store.insertRequested(d, claimFor(d))));
      const claimed = results.flatMap((r, i) => (r.kind === "claimed" ? [candidates[i]!] : []));
      expect(claimed).toHaveLength(1);
      const winner = claimed[0]!;
      for (const r of results) if (r.kind === "existing") expect(r.record.delegationId).toBe(winner.id);
      const { items, total } = await h.store.list({ state: "REQUESTED", limit: 20 });
      expect(total).toBe(1);
      expect(items.map((d) => d.id)).toEqual([winner.id]);
      expect((await h.store.getIdempotency(claimFor(winner)))!.delegationId).toBe(winner.id);
    });
  });

  describe("activate", () => {
    it("moves REQUESTED to ACTIVE with the patch and appends its CREATED event at head + 1", async () => {
      const d = await h.seed("REQUESTED");
      const patch = activationFor(d, { idpBackend: "entra", delegatedAc: makeContext(d, { status: "PENDING" }) });
      const t = await h.store.activate({ id: d.id, now: T0 + 50, patch });
      const expected: Delegation = { ...d, ...patch, state: "ACTIVE", updateTime: T0 + 50 };
      expect(t).toEqual({ delegation: expected, revision: 1n });
      expect(await h.store.get(d.id)).toStrictEqual(expected);
      expect(await h.store.headRevision()).toBe(1n);
      expect(await h.events()).toEqual([{ revision: 1n, type: "CREATED", delegation: expected, eventTime: T0 + 50, reason: "created", actor: d.delegatorDid, chronicleCid: "" }]);
    });

    it("leaves end time, end reason and the budget alone, and writes no work item", async () => {
      const d = await h.seed("ACTIVE", { maxCommands: 7 });
      expect(d).toMatchObject({ endTime: null, endReason: "", maxCommands: 7, commandsExecuted: 0 });
      expect(await h.effects("idp_delete")).toEqual([]);
      expect(await h.effects("gsap_revoke")).toEqual([]);
    });

    it.each(["ACTIVE", "REVOKED", "FAILED"] as const)("changes nothing and returns null for a %s delegation", async (state) => {
      const d = await h.seed(state);
      const head = await h.store.headRevision();
      const heard: bigint[] = [];
      h.store.onCommit((r) => heard.push(r));
      const t = await h.store.activate({ id: d.id, now: T0 + 100, patch: activationFor(d, { agentClientId: "should-not-stick" }) });
      expect(t).toBeNull();
      expect(await h.store.get(d.id)).toStrictEqual(d);
      expect(await h.store.headRevision()).toBe(head);
      expect(heard).toEqual([]);
    });

    it("returns null for an unknown id", async () => {
      const d = makeDelegation();
      expect(await h.store.activate({ id: d.id, now: T0, patch: activationFor(d) })).toBeNull();
      expect(await h.store.headRevision()).toBe(0n);
    });

    it("lets exactly one of ten concurrent activations of one delegation win", async () => {
      const d = await h.seed("REQUESTED");
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => h.store.activate({ id: d.id, now: T0 + 10 + i, patch: activationFor(d, { agentClientId: `c${i}` }) })),
      );
      const won = results.filter((r) => r !== null);
      expect(won).toHaveLength(1);
      expect(await h.store.get(d.id)).toStrictEqual(won[0]!.delegation);
      expect((await h.events()).map((e) => e.type)).toEqual(["CREATED"]);
    });

    it("stores the replayable answer, built from the activated delegation, with the change", async () => {
      const d = makeDelegation();
      const claim = claimFor(d);
      await h.store.insertRequested(d, claim);
      const t = await h.store.activate({
        id: d.id,
        now: T0 + 80,
        patch: activationFor(d),
        completeIdempotency: { ...claim, response: (x) => JSON.stringify({ id: x.id, state: x.state, updateTime: x.updateTime, ac: x.delegatedAcId }) },
      });
      expect(t).not.toBeNull();
      const record = await h.store.getIdempotency(claim);
      expect(JSON.parse(record!.response!)).toEqual({ id: d.id, state: "ACTIVE", updateTime: T0 + 80, ac: `dac-${d.id}` });
    });

    it("marks a stored answer handed out once; the mark can be taken back only by its maker", async () => {
      const d = makeDelegation();
      const claim = claimFor(d);
      await h.store.insertRequested(d, claim);
      expect(await h.store.markAnswered(claim, T0 + 1)).toBe(false); // nothing to hand out yet
      await h.store.activate({ id: d.id, now: T0 + 80, patch: activationFor(d), completeIdempotency: { ...claim, response: () => "answer" } });
      expect(await h.store.getIdempotency(claim)).toMatchObject({ response: "answer", responseTime: T0 + 80, answeredTime: null });
      const marks = await Promise.all(Array.from({ length: 5 }, (_, i) => h.store.markAnswered(claim, T0 + 90 + i)));
      expect(marks.filter(Boolean)).toHaveLength(1);
      const markedAt = (await h.store.getIdempotency(claim))!.answeredTime!;
      await h.store.unmarkAnswered(claim, markedAt + 1); // not this caller's mark
      expect((await h.store.getIdempotency(claim))!.answeredTime).toBe(markedAt);
      await h.store.unmarkAnswered(claim, markedAt);
      expect((await h.store.getIdempotency(claim))!.answeredTime).toBeNull();
      // An answered key is not released by a retry that found it unanswered a moment ago.
      await h.store.releaseIdempotency(claim, { unanswered: true });
      expect((await h.store.getIdempotency(claim))!.response).toBe("answer");
    });

    it("stores no answer when the delegation was no longer REQUESTED", async () => {
      const d = makeDelegation();
      const claim = claimFor(d);
      await h.store.insertRequested(d, claim);
      await h.store.end({ target: { ids: [d.id] }, ending: "revoke", reason: "manual_revocation", now: T0 + 1 });
      const answer = { ...claim, response: () => "answer" };
      expect(await h.store.activate({ id: d.id, now: T0 + 2, patch: activationFor(d), completeIdempotency: answer })).toBeNull();
      expect((await h.store.getIdempotency(claim))!.response).toBeNull();
    });

    it("rolls the whole change back when the answer cannot be built", async () => {
      const d = makeDelegation();
      const claim = claimFor(d);
      await h.store.insertRequested(d, claim);
      const heard: bigint[] = [];
      h.store.onCommit((r) => heard.push(r));
      const broken = {
        ...claim,
        response: (): string => {
          throw new Error("serializer broke");
        },
      };
      await expect(h.store.activate({ id: d.id, now: T0 + 80, patch: activationFor(d), completeIdempotency: broken })).rejects.toThrow("serializer broke");
      expect(await h.store.get(d.id)).toStrictEqual(d);
      expect(await h.store.headRevision()).toBe(0n);
      expect(await h.events()).toEqual([]);
      expect((await h.store.getIdempotency(claim))!.response).toBeNull();
      expect(heard).toEqual([]);
    });

    it("does not take writes made while it is open down with it when it rolls back", async () => {
      const d = makeDelegation();
      await h.store.insertRequested(d, claimFor(d));
      const victims = await Promise.all(Array.from({ length: 5 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + 1 + i })));
      const failing = h.store.activate({
        id: d.id,
        now: T0 + 80,
        patch: activationFor(d),
        completeIdempotency: {
          ...claimFor(d),
          response: () => {
            throw new Error("serializer broke");
          },
        },
      });
      // Started while the transaction above is open; each commits on its own.
      const claims = Array.from({ length: 10 }, (_, i) => h.store.claimIdempotency({ ...claimFor(d), requestId: `concurrent-${i}` }, T0 + 80));
      const countThenRevoke = victims.map(async (v) => {
        const counted = await h.store.countCommand(v.id, T0 + 80);
        const ended = await h.store.end({ target: { ids: [v.id] }, ending: "revoke", reason: "r", now: T0 + 81 });
        return [counted.kind, ended.length];
      });
      await expect(failing).rejects.toThrow("serializer broke");
      expect(await Promise.all(claims)).toEqual(claims.map(() => ({ kind: "claimed" })));
      expect(await Promise.all(countThenRevoke)).toEqual(victims.map(() => ["counted", 1]));
      for (let i = 0; i < 10; i++) expect(await h.store.getIdempotency({ ...claimFor(d), requestId: `concurrent-${i}` })).not.toBeNull();
      for (const v of victims) expect(await h.store.get(v.id)).toMatchObject({ state: "REVOKED", commandsExecuted: 1 });
      expect((await h.store.get(d.id))!.state).toBe("REQUESTED");
      // 5 activations and 5 revocations committed: no revision was lost to the rollback.
      expect((await h.events()).map((e) => e.revision)).toEqual(revisionsAfter(0n, 10));
    });
  });

  describe("revisions", () => {
    it("start at zero with nothing pruned", async () => {
      expect(await h.store.headRevision()).toBe(0n);
      expect(await h.store.prunedThrough()).toBe(0n);
    });

    it("stay gap-free and in order under 50 concurrent activations", async () => {
      const ds = await Promise.all(Array.from({ length: 50 }, (_, i) => h.seed("REQUESTED", { createTime: T0 + i })));
      const results = await Promise.all(ds.map((d, i) => h.store.activate({ id: d.id, now: T0 + 1000 + i, patch: activationFor(d) })));
      const expected = revisionsAfter(0n, 50);
      expect(results.map((r) => r!.revision).sort(byRevision)).toEqual(expected);
      const events = await h.events();
      expect(events.map((e) => e.revision)).toEqual(expected);
      // Each event is the one its change reported, not merely some event at that number.
      const byRev = new Map(results.map((r) => [r!.revision, r!.delegation]));
      for (const e of events) expect(e.delegation).toStrictEqual(byRev.get(e.revision));
      expect(await h.store.headRevision()).toBe(50n);
    });

    it("stay gap-free under concurrent writers of every kind, each ending's events consecutive", async () => {
      // 10 parents, each with two children: every revoke ends three delegations in one transaction.
      const parents = await Promise.all(Array.from({ length: 10 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + i })));
      for (const p of parents) for (let c = 0; c < 2; c++) await h.seedChild(p);
      const limited = await Promise.all(Array.from({ length: 10 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + 100 + i, maxCommands: 1 })));
      const requested = await Promise.all(Array.from({ length: 10 }, (_, i) => h.seed("REQUESTED", { createTime: T0 + 200 + i })));
      const head = await h.store.headRevision();

      const [ends, counts, activations] = await Promise.all([
        Promise.all(parents.map((p) => h.store.end({ target: { ids: [p.id] }, ending: "revoke", reason: "r", now: T0 + 500 }))),
        Promise.all(limited.map((d) => h.store.countCommand(d.id, T0 + 500))),
        Promise.all(requested.map((d) => h.store.activate({ id: d.id, now: T0 + 500, patch: activationFor(d) }))),
      ]);
      const written: bigint[] = [];
      for (const ended of ends) {
        expect(ended).toHaveLength(3);
        const revs = ended.map((e) => e.revision);
        expect(revs).toEqual(revisionsAfter(revs[0]! - 1n, 3));
        written.push(...revs);
      }
      for (const c of counts) {
        if (c.kind !== "limit_reached") throw new Error(`expected limit_reached, got ${c.kind}`);
        written.push(...c.ended.map((e) => e.revision));
      }
      for (const a of activations) written.push(a!.revision);
      expect(written.sort(byRevision)).toEqual(revisionsAfter(head, 50));
      expect((await h.events(head)).map((e) => e.revision)).toEqual(revisionsAfter(head, 50));
      expect(await h.store.headRevision()).toBe(head + 50n);
    });

    it("never let a reader following the log skip one that commits later", async () => {
      const ds = await Promise.all(Array.from({ length: 50 }, (_, i) => h.seed("REQUESTED", { createTime: T0 + i })));
      const seen: bigint[] = [];
      let cursor = 0n;
      const follow = async () => {
        for (const e of await h.store.readEvents(cursor, 1000)) {
          seen.push(e.revision);
          cursor = e.revision;
        }
      };
      let writing = true;
      // Reads the way the watch hub does: everything after the last revision it saw, once per turn of
      // the event loop (SQLite commits at the end of a turn: a reader spinning on promises alone would starve it).
      const reader = (async () => {
        while (writing) {
          await follow();
          await new Promise((r) => setImmediate(r));
        }
        await follow();
      })();
      await Promise.all(
        ds.map((d, i) =>
          i % 2 === 0
            ? h.store.activate({ id: d.id, now: T0 + 1000 + i, patch: activationFor(d) })
            : h.store.end({ target: { ids: [d.id] }, ending: "fail", reason: "creation_failed", now: T0 + 1000 + i }),
        ),
      );
      writing = false;
      await reader;
      expect(seen).toEqual(revisionsAfter(0n, 50));
    });
  });

  describe("onCommit", () => {
    it("hears the last revision of each committed change, not refused ones, until unsubscribed", async () => {
      const d = await h.seed("REQUESTED", { maxCommands: 2 });
      const heard: bigint[] = [];
      const unsubscribe = h.store.onCommit((r) => heard.push(r));
      const a = await h.store.activate({ id: d.id, now: T0 + 1, patch: activationFor(d) });
      const child = await h.seedChild(a!.delegation); // heard: its activation
      const grandchild = await h.seedChild(child); // heard: its activation
      expect(await h.store.activate({ id: d.id, now: T0 + 2, patch: activationFor(d) })).toBeNull();
      expect(await h.store.end({ target: { ids: [d.id] }, ending: "fail", reason: "x", now: T0 + 2 })).toEqual([]);
      expect((await h.store.countCommand(d.id, T0 + 3)).kind).toBe("counted");
      const limited = await h.store.countCommand(d.id, T0 + 4);
      if (limited.kind !== "limit_reached") throw new Error(`expected limit_reached, got ${limited.kind}`);
      expect(limited.ended.map((e) => e.delegation.id)).toEqual([d.id, child.id, grandchild.id]);
      expect((await h.store.countCommand(d.id, T0 + 5)).kind).toBe("refused");
      const late = await h.store.adoptLateContext(d.id, "dac-late", T0 + 6);
      expect(late).toBe(false); // d has a context already
      const head = await h.store.headRevision();
      // The cascade's listener call is its last event: the head, after all three.
      expect(heard).toEqual([1n, 2n, 3n, head]);
      expect(head).toBe(6n);

      unsubscribe();
      await h.seed("ACTIVE");
      expect(heard).toHaveLength(4);
    });

    it("hears an end() once, with the revision of its last event", async () => {
      const ds = await Promise.all(Array.from({ length: 3 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + i })));
      const heard: bigint[] = [];
      h.store.onCommit((r) => heard.push(r));
      const ended = await h.store.end({ target: { ids: ds.map((d) => d.id) }, ending: "revoke", reason: "r", now: T0 + 10 });
      expect(ended.map((e) => e.revision)).toEqual([4n, 5n, 6n]);
      expect(heard).toEqual([6n]);
    });

    it("keeps the commit when a listener throws, and tells the other listeners", async () => {
      const d = await h.seed("REQUESTED");
      const heard: bigint[] = [];
      h.store.onCommit(() => {
        throw new Error("listener broke");
      });
      h.store.onCommit((r) => heard.push(r));
      const t = await h.store.activate({ id: d.id, now: T0 + 1, patch: activationFor(d) });
      expect(t).not.toBeNull();
      expect(heard).toEqual([t!.revision]);
      expect((await h.store.get(d.id))!.state).toBe("ACTIVE");
    });

    it.runIf(driver === "postgresql")("NOTIFYs the channel with the head revision on each commit that appends events, and only then", async () => {
      const channel = "lpb_conformance";
      const listener = new pg.Client({ connectionString: h.url });
      await listener.connect();
      const heard: string[] = [];
      listener.on("notification", (n) => {
        if (n.channel === channel) heard.push(n.payload ?? "");
      });
      await listener.query(`LISTEN ${channel}`);
      const notifying = await openStore(h.url, { notifyChannel: channel });
      try {
        const d = makeDelegation({ maxCommands: 1 });
        await notifying.insertRequested(d, claimFor(d));
        const broken = {
          ...claimFor(d),
          response: (): string => {
            throw new Error("serializer broke");
          },
        };
        await expect(notifying.activate({ id: d.id, now: T0 + 1, patch: activationFor(d), completeIdempotency: broken })).rejects.toThrow();
        await notifying.activate({ id: d.id, now: T0 + 1, patch: activationFor(d) }); // 1
        const child = makeDelegation({ createTime: T0 + 1, delegatorAcId: `dac-${d.id}` });
        await notifying.insertRequested(child);
        await notifying.activate({ id: child.id, now: T0 + 2, patch: activationFor(child) }); // 2
        await notifying.countCommand(d.id, T0 + 3); // 3 and 4: the last command and its cascade
        await notifying.end({ target: { ids: [d.id] }, ending: "revoke", reason: "r", now: T0 + 4 }); // nothing
        for (let i = 0; i < 100 && heard.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
        await new Promise((r) => setTimeout(r, 100)); // room for anything extra to arrive
        expect(heard).toEqual(["1", "2", "4"]);
      } finally {
        await notifying.close();
        await listener.end();
      }
    });
  });

  describe("countCommand", () => {
    it("never counts past max_commands under 60 concurrent calls, and ends the delegation once", async () => {
      const d = await h.seed("ACTIVE", { maxCommands: 25 });
      const head = await h.store.headRevision();
      const now = T0 + 100;
      const results = await Promise.all(Array.from({ length: 60 }, () => h.store.countCommand(d.id, now)));

      const counted = results.flatMap((r) => (r.kind === "counted" ? [r] : []));
      const limited = results.flatMap((r) => (r.kind === "limit_reached" ? [r] : []));
      const refused = results.flatMap((r) => (r.kind === "refused" ? [r] : []));
      expect(counted).toHaveLength(24);
      expect(limited).toHaveLength(1);
      expect(refused).toHaveLength(35);
      // Every counted call saw its own count: 1..24, each once.
      expect(counted.map((r) => r.commandsExecuted).sort((a, b) => a - b)).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
      expect(counted.every((r) => r.maxCommands === 25)).toBe(true);

      const final = await h.store.get(d.id);
      expect(final).toMatchObject({ state: "EXPIRED", endReason: "command_limit", endTime: now, commandsExecuted: 25 });
      expect(limited[0]!.ended).toEqual([{ delegation: final, revision: head + 1n, cascaded: false }]);
      for (const r of refused) expect(r.delegation!.state).toBe("EXPIRED");
      const events = await h.store.readEvents(head, 100, { delegationId: d.id });
      expect(events.map((e) => [e.type, e.revision, e.reason])).toEqual([["COMMAND_LIMIT_REACHED", head + 1n, "command_limit"]]);
      expect(events[0]!.delegation).toStrictEqual(final);
    });

    it("counts exactly under 60 concurrent calls spread over several delegations", async () => {
      const ds = await Promise.all(Array.from({ length: 3 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + i, maxCommands: 10 + i })));
      const results = await Promise.all(Array.from({ length: 60 }, (_, i) => h.store.countCommand(ds[i % 3]!.id, T0 + 100)));
      for (const [i, d] of ds.entries()) {
        const mine = results.filter((_, j) => j % 3 === i);
        expect(mine.filter((r) => r.kind !== "refused")).toHaveLength(d.maxCommands);
        expect(mine.filter((r) => r.kind === "limit_reached")).toHaveLength(1);
        expect(await h.store.get(d.id)).toMatchObject({ state: "EXPIRED", commandsExecuted: d.maxCommands });
      }
      expect((await h.events(3n)).map((e) => e.type)).toEqual(Array(3).fill("COMMAND_LIMIT_REACHED"));
    });

    it("counts one at a time and reports the budget", async () => {
      const d = await h.seed("ACTIVE", { maxCommands: 3 });
      expect(await h.store.countCommand(d.id, T0 + 10)).toEqual({ kind: "counted", commandsExecuted: 1, maxCommands: 3 });
      expect(await h.store.countCommand(d.id, T0 + 11)).toEqual({ kind: "counted", commandsExecuted: 2, maxCommands: 3 });
      expect(await h.store.get(d.id)).toStrictEqual({ ...d, commandsExecuted: 2, updateTime: T0 + 11 });
      // Counting is no event.
      expect(await h.store.headRevision()).toBe(1n);
      expect((await h.store.countCommand(d.id, T0 + 12)).kind).toBe("limit_reached");
    });

    it("with max_commands 1, the first command ends the delegation and the second is refused", async () => {
      const d = await h.seed("ACTIVE", { maxCommands: 1 });
      const first = await h.store.countCommand(d.id, T0 + 10);
      if (first.kind !== "limit_reached") throw new Error(`expected limit_reached, got ${first.kind}`);
      const expected: Delegation = { ...d, state: "EXPIRED", commandsExecuted: 1, endReason: "command_limit", endTime: T0 + 10, updateTime: T0 + 10 };
      expect(first.ended).toEqual([{ delegation: expected, revision: 2n, cascaded: false }]);
      expect(await h.store.countCommand(d.id, T0 + 11)).toEqual({ kind: "refused", delegation: expected });
    });

    it("refuses once the expire time is reached, without counting", async () => {
      const d = await h.seed("ACTIVE", { maxCommands: 5 });
      for (const at of [d.expireTime, d.expireTime + 1]) {
        expect(await h.store.countCommand(d.id, at)).toEqual({ kind: "refused", delegation: d });
      }
      expect(await h.store.get(d.id)).toStrictEqual(d);
      expect(await h.store.headRevision()).toBe(1n);
      expect((await h.store.countCommand(d.id, d.expireTime - 1)).kind).toBe("counted");
    });

    it("refuses the last command of the budget once expired, and does not end the delegation", async () => {
      const d = await h.seed("ACTIVE", { maxCommands: 1 });
      expect(await h.store.countCommand(d.id, d.expireTime)).toEqual({ kind: "refused", delegation: d });
      expect(await h.store.get(d.id)).toStrictEqual(d);
      expect(await h.effects("idp_delete")).toEqual([]);
    });

    it.each(["REQUESTED", "REVOKED", "FAILED"] as const)("refuses a %s delegation", async (state) => {
      const d = await h.seed(state, { maxCommands: 5 });
      expect(await h.store.countCommand(d.id, T0 + 10)).toEqual({ kind: "refused", delegation: d });
      expect((await h.store.get(d.id))!.commandsExecuted).toBe(0);
    });

    it("refuses an unknown id", async () => {
      expect(await h.store.countCommand(newDelegationId(), T0)).toEqual({ kind: "refused", delegation: null });
    });
  });

  describe("list", () => {
    it("pages by id with afterId, with a total that ignores the cursor", async () => {
      const alice = await Promise.all(Array.from({ length: 5 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + i })));
      const bob = await Promise.all(Array.from({ length: 2 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + 10 + i, delegatorDid: BOB })));
      await h.seed("REQUESTED", { createTime: T0 + 20 });
      const all = sortedIds([...alice, ...bob]);
      const seen: string[] = [];
      let afterId: string | undefined;
      for (;;) {
        const page = await h.store.list({ state: "ACTIVE", limit: 3, ...(afterId ? { afterId } : {}) });
        expect(page.total).toBe(7);
        if (page.items.length === 0) break;
        expect(page.items.length).toBeLessThanOrEqual(3);
        seen.push(...page.items.map((d) => d.id));
        afterId = page.items.at(-1)!.id;
      }
      expect(seen).toEqual(all);
    });

    it("returns whole delegations in id order", async () => {
      const ds = await Promise.all(Array.from({ length: 3 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + i })));
      const { items } = await h.store.list({ state: "ACTIVE", limit: 10 });
      expect(items).toStrictEqual([...ds].sort((a, b) => (a.id < b.id ? -1 : 1)));
    });

    it("filters by state and delegator", async () => {
      const aliceActive = await h.seed("ACTIVE");
      const bobActive = await h.seed("ACTIVE", { delegatorDid: BOB });
      const bobRevoked = await h.seed("REVOKED", { delegatorDid: BOB });
      const aliceRequested = await h.seed("REQUESTED");
      const aliceFailed = await h.seed("FAILED");
      const ids = async (q: Parameters<DelegationStore["list"]>[0]) => {
        const { items, total } = await h.store.list(q);
        expect(total).toBe(items.length);
        return sortedIds(items);
      };
      expect(await ids({ state: "ACTIVE", limit: 10 })).toEqual(sortedIds([aliceActive, bobActive]));
      expect(await ids({ state: "ACTIVE", delegatorDid: BOB, limit: 10 })).toEqual([bobActive.id]);
      expect(await ids({ state: "REVOKED", limit: 10 })).toEqual([bobRevoked.id]);
      expect(await ids({ state: "REVOKED", delegatorDid: aliceActive.delegatorDid, limit: 10 })).toEqual([]);
      expect(await ids({ state: "REQUESTED", limit: 10 })).toEqual([aliceRequested.id]);
      expect(await ids({ state: "FAILED", limit: 10 })).toEqual([aliceFailed.id]);
      expect(await ids({ state: "EXPIRED", limit: 10 })).toEqual([]);
    });
  });

  describe("lookups", () => {
    it("findByDelegatedAc finds the delegation of a delegated context, and never one for the empty id", async () => {
      const active = await h.seed("ACTIVE");
      await h.seed("REQUESTED"); // its delegatedAcId is ""
      expect(await h.store.findByDelegatedAc(active.delegatedAcId)).toStrictEqual(active);
      expect(await h.store.findByDelegatedAc("")).toBeNull();
      expect(await h.store.findByDelegatedAc("dac-unknown")).toBeNull();
    });

    it("nextExpireTime is the earliest expire time among ACTIVE delegations", async () => {
      expect(await h.store.nextExpireTime()).toBeNull();
      await h.seed("REQUESTED", { expireTime: T0 + 1 });
      await h.seed("REVOKED", { expireTime: T0 + 2 });
      await h.seed("EXPIRED", { expireTime: T0 + 3 });
      expect(await h.store.nextExpireTime()).toBeNull();
      await h.seed("ACTIVE", { expireTime: T0 + 30 });
      const soonest = await h.seed("ACTIVE", { expireTime: T0 + 20 });
      expect(await h.store.nextExpireTime()).toBe(T0 + 20);
      await h.store.end({ target: { ids: [soonest.id] }, ending: "revoke", reason: "r", now: T0 + 5 });
      expect(await h.store.nextExpireTime()).toBe(T0 + 30);
    });

    it("staleRequested returns REQUESTED delegations created strictly before the cutoff, oldest first", async () => {
      const older = await h.seed("REQUESTED", { createTime: T0 - 10 });
      const old = await h.seed("REQUESTED", { createTime: T0 - 5 });
      await h.seed("REQUESTED", { createTime: T0 });
      await h.seed("ACTIVE", { createTime: T0 - 20 });
      await h.seed("FAILED", { createTime: T0 - 20 });
      expect(await h.store.staleRequested(T0, 10)).toStrictEqual([older, old]);
      expect((await h.store.staleRequested(T0, 1)).map((d) => d.id)).toEqual([older.id]);
      expect(await h.store.staleRequested(T0 - 10, 10)).toEqual([]);
    });
  });

  describe("event log", () => {
    it("readEvents filters by delegation and delegator, reads after a revision, and honours the limit", async () => {
      const a = await h.seed("REVOKED", { createTime: T0 }); // revisions 1, 2
      const b = await h.seed("ACTIVE", { createTime: T0 + 1, delegatorDid: BOB }); // 3
      const c = await h.seed("EXPIRED", { createTime: T0 + 2, delegatorDid: BOB }); // 4, 5
      const f = await h.seed("FAILED", { createTime: T0 + 3 }); // 6
      const revs = async (after: bigint, limit: number, filter?: EventFilter) =>
        (await h.store.readEvents(after, limit, filter)).map((e) => [e.revision, e.type, e.delegation.id]);

      expect(await revs(0n, 100)).toEqual([
        [1n, "CREATED", a.id],
        [2n, "REVOKED", a.id],
        [3n, "CREATED", b.id],
        [4n, "CREATED", c.id],
        [5n, "EXPIRED", c.id],
        [6n, "FAILED", f.id],
      ]);
      expect(await revs(0n, 100, { delegationId: a.id })).toEqual([
        [1n, "CREATED", a.id],
        [2n, "REVOKED", a.id],
      ]);
      expect(await revs(0n, 100, { delegatorDid: BOB })).toEqual([
        [3n, "CREATED", b.id],
        [4n, "CREATED", c.id],
        [5n, "EXPIRED", c.id],
      ]);
      expect(await revs(0n, 100, { delegatorDid: BOB, delegationId: c.id })).toEqual([
        [4n, "CREATED", c.id],
        [5n, "EXPIRED", c.id],
      ]);
      expect(await revs(0n, 100, { delegatorDid: BOB, delegationId: a.id })).toEqual([]);
      expect(await revs(3n, 100, { delegatorDid: BOB })).toEqual([
        [4n, "CREATED", c.id],
        [5n, "EXPIRED", c.id],
      ]);
      expect(await revs(0n, 1, { delegatorDid: BOB })).toEqual([[3n, "CREATED", b.id]]);
      expect(await revs(1n, 2)).toEqual([
        [2n, "REVOKED", a.id],
        [3n, "CREATED", b.id],
      ]);
      expect(await revs(6n, 100)).toEqual([]);
    });

    it("each event carries the delegation as that change left it", async () => {
      const d = await h.seed("ACTIVE", { maxCommands: 5 });
      await h.store.countCommand(d.id, T0 + 10);
      await h.store.end({ target: { ids: [d.id] }, ending: "revoke", reason: "because", now: T0 + 20 });
      const [created, revoked] = await h.events();
      expect(created).toEqual({ revision: 1n, type: "CREATED", delegation: d, eventTime: d.createTime + 1, reason: "created", actor: d.delegatorDid, chronicleCid: "" });
      expect(revoked).toEqual({
        revision: 2n,
        type: "REVOKED",
        delegation: { ...d, state: "REVOKED", commandsExecuted: 1, updateTime: T0 + 20, endTime: T0 + 20, endReason: "because" },
        eventTime: T0 + 20,
        reason: "because",
        actor: "",
        chronicleCid: "",
      } satisfies DelegationEvent);
    });
  });

  describe("content ids", () => {
    it("stamps a CREATED event and its delegation with the record's content id, and leaves other events' to the sink", async () => {
      const cidOf = (e: { revision: bigint; type: string; delegation: { id: string } }) => `cid:${e.type}:${e.revision}:${e.delegation.id}`;
      const withCid = await openStore(h.url, { contentId: cidOf });
      try {
        const d = makeDelegation();
        await withCid.insertRequested(d);
        const t = await withCid.activate({ id: d.id, now: T0 + 1, patch: activationFor(d) });
        const expected = `cid:CREATED:1:${d.id}`;
        expect(t!.delegation.chronicleCid).toBe(expected);
        expect((await withCid.get(d.id))!.chronicleCid).toBe(expected);
        const child = makeDelegation({ createTime: T0 + 1, delegatorAcId: t!.delegation.delegatedAcId });
        await withCid.insertRequested(child);
        await withCid.activate({ id: child.id, now: T0 + 2, patch: activationFor(child) });
        const ended = await withCid.end({ target: { ids: [d.id] }, ending: "revoke", reason: "r", now: T0 + 3 });
        expect(ended.map((e) => e.delegation.id)).toEqual([d.id, child.id]);
        const events = await withCid.readEvents(0n, 10);
        // Only CREATED records are named by their delegation; the sink computes the others' ids.
        expect(events.map((e) => e.chronicleCid)).toEqual([expected, `cid:CREATED:2:${child.id}`, "", ""]);
        // The CREATED record's id stays the delegation's, whatever happens next.
        expect(events[2]!.delegation.chronicleCid).toBe(expected);
        expect(ended[0]!.delegation.chronicleCid).toBe(expected);
        expect((await withCid.get(child.id))!.chronicleCid).toBe(`cid:CREATED:2:${child.id}`);

        // Nor does the last command's event, or a failure's; a failed delegation has no record id.
        const budget = makeDelegation({ createTime: T0 + 2, maxCommands: 1 });
        await withCid.insertRequested(budget);
        await withCid.activate({ id: budget.id, now: T0 + 3, patch: activationFor(budget) }); // 5
        const last = await withCid.countCommand(budget.id, T0 + 4); // 6
        if (last.kind !== "limit_reached") throw new Error(`expected limit_reached, got ${last.kind}`);
        const failing = makeDelegation({ createTime: T0 + 3 });
        await withCid.insertRequested(failing);
        const [failed] = await withCid.end({ target: { ids: [failing.id] }, ending: "fail", reason: "creation_failed", now: T0 + 5 }); // 7
        const later = await withCid.readEvents(5n, 10);
        expect(later.map((e) => [e.type, e.chronicleCid])).toEqual([
          ["COMMAND_LIMIT_REACHED", ""],
          ["FAILED", ""],
        ]);
        expect(last.ended[0]!.delegation.chronicleCid).toBe(`cid:CREATED:5:${budget.id}`);
        expect((await withCid.get(budget.id))!.chronicleCid).toBe(`cid:CREATED:5:${budget.id}`);
        expect(failed!.delegation.chronicleCid).toBe("");
        expect((await withCid.get(failing.id))!.chronicleCid).toBe("");
      } finally {
        await withCid.close();
      }
    });
  });

  describe("idempotency keys", () => {
    const ref = { scope: "did:web:example.com:users/alice", method: "RevokeDelegation", requestId: "req-7" };

    it("claimIdempotency claims once, then answers with the stored record", async () => {
      const claim = { ...ref, requestHash: "h1", delegationId: newDelegationId() };
      expect(await h.store.getIdempotency(ref)).toBeNull();
      expect(await h.store.claimIdempotency(claim, T0 + 5)).toEqual({ kind: "claimed" });
      const record = { ...claim, response: null, createTime: T0 + 5, responseTime: null, answeredTime: null };
      expect(await h.store.getIdempotency(ref)).toEqual(record);
      expect(await h.store.claimIdempotency({ ...claim, requestHash: "h2", delegationId: "other" }, T0 + 6)).toEqual({ kind: "existing", record });
    });

    it("lets exactly one of ten concurrent claimIdempotency calls win", async () => {
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => h.store.claimIdempotency({ ...ref, requestHash: `h${i}`, delegationId: `d${i}` }, T0)),
      );
      const claimed = results.flatMap((r, i) => (r.kind === "claimed" ? [i] : []));
      expect(claimed).toHaveLength(1);
      const winner = `d${claimed[0]}`;
      for (const r of results) if (r.kind === "existing") expect(r.record.delegationId).toBe(winner);
      expect((await h.store.getIdempotency(ref))!.delegationId).toBe(winner);
    });

    it("releaseIdempotency deletes the key so the next claim starts afresh", async () => {
      await h.store.claimIdempotency({ ...ref, requestHash: "h1", delegationId: "d1" }, T0);
      await h.store.releaseIdempotency(ref);
      expect(await h.store.getIdempotency(ref)).toBeNull();
      await expect(h.store.releaseIdempotency(ref)).resolves.toBeUndefined();
      expect(await h.store.claimIdempotency({ ...ref, requestHash: "h2", delegationId: "d2" }, T0 + 1)).toEqual({ kind: "claimed" });
      expect((await h.store.getIdempotency(ref))!.requestHash).toBe("h2");
    });

    it("pruneIdempotency deletes keys created strictly before the cutoff, oldest first, at most maxRows", async () => {
      // Claimed out of time order, so "oldest first" is not insertion order.
      for (const [i, at] of [T0 - 1, T0 - 3, T0, T0 - 2, T0 + 1].entries()) {
        await h.store.claimIdempotency({ ...ref, requestId: `req-${i}`, requestHash: "h", delegationId: "" }, at);
      }
      const left = async () => {
        const out: string[] = [];
        for (let i = 0; i < 5; i++) if (await h.store.getIdempotency({ ...ref, requestId: `req-${i}` })) out.push(`req-${i}`);
        return out;
      };
      expect(await h.store.pruneIdempotency(T0, 2)).toBe(2); // T0 - 3, T0 - 2
      expect(await left()).toEqual(["req-0", "req-2", "req-4"]);
      expect(await h.store.pruneIdempotency(T0, 100)).toBe(1); // T0 - 1
      expect(await left()).toEqual(["req-2", "req-4"]);
      expect(await h.store.pruneIdempotency(T0, 100)).toBe(0);
    });
  });

  describe("audit outbox state", () => {
    it("lists the events after the cursor, oldest first, with their failed attempts", async () => {
      await h.seed("REVOKED", { createTime: T0 }); // events 1 (CREATED), 2 (REVOKED)
      await h.seed("ACTIVE", { createTime: T0 + 1 }); // event 3
      await h.seed("FAILED", { createTime: T0 + 2 }); // event 4
      expect(await h.store.auditCursor()).toBe(0n);
      const pending = await h.store.pendingAudit(10);
      expect(pending.map((p) => [p.event.revision, p.attempts])).toEqual([
        [1n, 0],
        [2n, 0],
        [3n, 0],
        [4n, 0],
      ]);
      expect(pending.map((p) => p.event)).toEqual(await h.events());
      expect((await h.store.pendingAudit(2)).map((p) => p.event.revision)).toEqual([1n, 2n]);

      // A failed attempt is counted; the event stays pending.
      await h.store.markAuditFailed(1n, "503 from chronicle");
      await h.store.markAuditFailed(1n, "503 again");
      expect((await h.store.pendingAudit(1))[0]).toMatchObject({ attempts: 2, event: { revision: 1n } });
      expect(await h.store.auditCursor()).toBe(0n);

      await h.store.markAudited(1n, T0 + 5);
      expect((await h.store.pendingAudit(10)).map((p) => p.event.revision)).toEqual([2n, 3n, 4n]);
      // A refusal is recorded, counted, and the cursor moves past it.
      await h.store.markAuditRejected(2n, "400 bad payload", T0 + 6);
      expect(await h.store.auditCursor()).toBe(2n);
      expect((await h.store.pendingAudit(10)).map((p) => p.event.revision)).toEqual([3n, 4n]);
      await h.store.markAudited(3n, T0 + 7);
      expect((await h.store.pendingAudit(10)).map((p) => [p.event.revision, p.attempts])).toEqual([[4n, 0]]);
      expect(await h.store.auditBacklog()).toEqual({ pending: 1, oldestPendingTime: T0 + 4, rejected: 1 });
    });

    it("moves the cursor forward only: a late report cannot bring an event back", async () => {
      await h.seed("REVOKED"); // 1, 2
      await h.seed("ACTIVE"); // 3
      await h.store.markAudited(3n, T0 + 5);
      await h.store.markAudited(1n, T0 + 6);
      await h.store.markAuditFailed(2n, "late");
      expect(await h.store.auditCursor()).toBe(3n);
      expect(await h.store.pendingAudit(10)).toEqual([]);
      expect(await h.store.auditBacklog()).toEqual({ pending: 0, oldestPendingTime: null, rejected: 0 });
      await h.seed("ACTIVE"); // 4
      expect((await h.store.pendingAudit(10)).map((p) => p.event.revision)).toEqual([4n]);
    });

    it("reports the oldest pending event time", async () => {
      expect(await h.store.auditBacklog()).toEqual({ pending: 0, oldestPendingTime: null, rejected: 0 });
      await h.seed("ACTIVE", { createTime: T0 + 41 }); // CREATED at T0 + 42
      await h.seed("ACTIVE", { createTime: T0 + 99 });
      expect(await h.store.auditBacklog()).toEqual({ pending: 2, oldestPendingTime: T0 + 42, rejected: 0 });
      await h.store.markAudited(1n, T0 + 200);
      expect(await h.store.auditBacklog()).toEqual({ pending: 1, oldestPendingTime: T0 + 100, rejected: 0 });
      await h.store.markAudited(2n, T0 + 200);
      expect(await h.store.auditBacklog()).toEqual({ pending: 0, oldestPendingTime: null, rejected: 0 });
    });

    it("puts every event of a cascade in the outbox", async () => {
      const root = await h.seed("ACTIVE");
      const child = await h.seedChild(root);
      await h.seedChild(child);
      await h.store.markAudited(3n, T0 + 5);
      await h.store.end({ target: { ids: [root.id] }, ending: "revoke", reason: "r", now: T0 + 10 });
      expect((await h.store.pendingAudit(10)).map((p) => [p.event.revision, p.event.type, p.event.reason])).toEqual([
        [4n, "REVOKED", "r"],
        [5n, "REVOKED", "parent_delegation_ended"],
        [6n, "REVOKED", "parent_delegation_ended"],
      ]);
    });
  });

  describe("leases", () => {
    it("gives a lease to one holder until it expires or is released, and renews it for the holder", async () => {
      expect(await h.store.acquireLease("job", "a", T0, 1000)).toBe(true);
      expect(await h.store.acquireLease("job", "b", T0 + 500, 1000)).toBe(false);
      expect(await h.store.acquireLease("job", "a", T0 + 900, 1000)).toBe(true); // renewed to T0 + 1900
      expect(await h.store.acquireLease("job", "b", T0 + 1500, 1000)).toBe(false);
      expect(await h.store.acquireLease("job", "b", T0 + 2000, 1000)).toBe(true); // expired: taken over
      await h.store.releaseLease("job", "a"); // not a's any more: no effect
      expect(await h.store.acquireLease("job", "a", T0 + 2100, 1000)).toBe(false);
      await h.store.releaseLease("job", "b");
      expect(await h.store.acquireLease("job", "a", T0 + 2100, 1000)).toBe(true);
    });

    it("keeps leases of different names apart", async () => {
      expect(await h.store.acquireLease("expiry", "a", T0, 1000)).toBe(true);
      expect(await h.store.acquireLease("prune", "b", T0, 1000)).toBe(true);
      await h.store.releaseLease("prune", "b");
      expect(await h.store.acquireLease("expiry", "b", T0 + 10, 1000)).toBe(false);
    });

    it("lets exactly one of many concurrent first claims win", async () => {
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => h.store.acquireLease("race", `h${i}`, T0, 1000)));
      expect(results.filter(Boolean)).toHaveLength(1);
    });

    it("lets exactly one of many concurrent takeovers of an expired lease win", async () => {
      expect(await h.store.acquireLease("race", "old", T0, 1000)).toBe(true);
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => h.store.acquireLease("race", `h${i}`, T0 + 5000, 1000)));
      expect(results.filter(Boolean)).toHaveLength(1);
      expect(await h.store.acquireLease("race", "old", T0 + 5000, 1000)).toBe(false);
    });
  });
});
