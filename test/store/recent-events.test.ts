/**
 * The events a store keeps of its own commits, for the log's follower (see
 * src/store/recent-events.ts), run against every driver: what it answers is
 * what the database holds, it holds nothing of a transaction that rolled
 * back, and it sends a reader to the database for another replica's events;
 * and the large append from rows refuses a change whose row is missing.
 */
import { describe, expect, it } from "vitest";
import type { DelegationEvent } from "../../src/domain/index.js";
import { parseDatabaseUrl } from "../../src/store/database-url.js";
import { LifecycleSql } from "../../src/store/lifecycle-sql.js";
import { openStore } from "../../src/store/open-store.js";
import { RecentEvents } from "../../src/store/recent-events.js";
import { PostgresDatabase, type SqlDatabase, SqliteDatabase } from "../../src/store/sql.js";
import { DRIVERS } from "../helpers/databases.js";
import { T0, makeDelegation, useStore } from "./fixtures.js";

function event(revision: bigint): DelegationEvent {
  return { revision, type: "REVOKED", delegation: makeDelegation(), eventTime: T0, reason: "r", actor: "", chronicleCid: "" };
}

function database(url: string): SqlDatabase {
  const target = parseDatabaseUrl(url);
  return target.provider === "sqlite" ? new SqliteDatabase(target.path) : new PostgresDatabase(target.url);
}

/** Runs straight against the database, bypassing the store under test. */
async function execute(url: string, sql: string): Promise<void> {
  const db = database(url);
  try {
    await db.run(sql);
  } finally {
    await db.close();
  }
}

describe("RecentEvents", () => {
  it("answers an unbroken run after a revision, up to the limit", () => {
    const r = new RecentEvents(10);
    r.add([event(1n), event(2n), event(3n)]);
    expect(r.read(0n, 10)!.map((e) => e.revision)).toEqual([1n, 2n, 3n]);
    expect(r.read(1n, 1)!.map((e) => e.revision)).toEqual([2n]);
    expect(r.read(3n, 10)).toBeUndefined(); // nothing newer here: the database may have more
    expect(r.read(5n, 10)).toBeUndefined();
  });

  it("sends a reader to the database at a gap with newer events beyond it", () => {
    const r = new RecentEvents(10);
    r.add([event(1n), event(3n)]);
    expect(r.read(0n, 10)).toBeUndefined(); // 2 is another replica's
    expect(r.read(0n, 1)!.map((e) => e.revision)).toEqual([1n]); // the limit ends the run before the gap
    expect(r.read(2n, 10)!.map((e) => e.revision)).toEqual([3n]);
  });

  it("keeps at most its capacity, dropping the oldest added; none with capacity 0", () => {
    const r = new RecentEvents(3);
    r.add([1n, 2n, 3n, 4n, 5n].map(event));
    expect(r.size).toBe(3);
    expect(r.read(0n, 10)).toBeUndefined();
    expect(r.read(2n, 10)!.map((e) => e.revision)).toEqual([3n, 4n, 5n]);
    const none = new RecentEvents(0);
    none.add([event(1n)]);
    expect(none.read(0n, 10)).toBeUndefined();
  });
});

describe.each(DRIVERS)("recent events on %s", (driver) => {
  const h = useStore(driver);

  it("answers the log's readers with what it committed, exactly as the database has it", async () => {
    // Every kind of append: activations (one statement each on PostgreSQL), a revocation with its
    // cascade, a count to the limit, and an expiry of 100 (on PostgreSQL, snapshots built from the rows).
    const parents = await Promise.all(Array.from({ length: 3 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + i, expireTime: T0 + 1000 })));
    for (const p of parents) await h.seedChild(p, "ACTIVE", { expireTime: T0 + 100_000 });
    await h.store.end({ target: { ids: [parents[0]!.id] }, ending: "revoke", reason: "manual_revocation", actor: "did:web:a", now: T0 + 10 });
    const budget = await h.seed("ACTIVE", { maxCommands: 1 });
    expect((await h.store.countCommand(budget.id, T0 + 11)).kind).toBe("limit_reached");
    for (let i = 0; i < 100; i++) await h.seed("ACTIVE", { createTime: T0 + 100 + i, expireTime: T0 + 1000 });
    const expired = await h.store.end({ target: { dueAt: T0 + 2000 }, ending: "expire", reason: "ttl_elapsed", now: T0 + 2000, limit: 500 });
    expect(expired.filter((e) => !e.cascaded).length).toBe(102); // and the two unrevoked parents' children, cascaded
    expect(expired.filter((e) => e.cascaded).length).toBe(2);
    const head = await h.store.headRevision();

    const plain = await openStore(h.url, { recentEvents: 0 });
    let fromDatabase: DelegationEvent[];
    try {
      fromDatabase = await plain.readEvents(0n, 10_000);
    } finally {
      await plain.close();
    }
    expect(fromDatabase.length).toBe(Number(head));
    // With the log emptied behind its back, the store still answers: from memory, the same events.
    await execute(h.url, `DELETE FROM "delegation_events"`);
    const fromMemory = await h.store.readEvents(0n, 10_000);
    expect(fromMemory).toEqual(fromDatabase);
    expect((await h.store.readEvents(5n, 3)).map((e) => e.revision)).toEqual([6n, 7n, 8n]);
    // A filtered read (the watch hub's) always goes to the database.
    expect(await h.store.readEvents(0n, 10_000, { delegationId: budget.id })).toEqual([]);
  });

  it("keeps nothing of a transaction that rolled back, and the rest of its group", async () => {
    const d = await h.seed("ACTIVE");
    const recent = new RecentEvents(100);
    const lifecycle = new LifecycleSql(undefined, undefined, recent);
    const db = database(h.url);
    try {
      const change = { delegation: d, type: "REVOKED" as const, reason: "r", actor: "", cascaded: false };
      // Started in one turn: on SQLite one group commit, each in its own savepoint.
      // The one that fails goes second: its revision would follow the other's (the first's is taken again).
      const [ok, failed] = await Promise.allSettled([
        db.transaction((tx) => lifecycle.append(tx, [change, change], T0 + 6)),
        db.transaction(async (tx) => {
          await lifecycle.append(tx, [change], T0 + 5);
          throw new Error("abort");
        }),
      ]);
      expect(failed.status).toBe("rejected");
      if (ok.status !== "fulfilled") throw ok.reason;
      expect(recent.size).toBe(2);
      expect(recent.read(ok.value[0]! - 1n, 10)!.map((e) => e.revision)).toEqual(ok.value);
      expect(await db.all(`SELECT "revision" FROM "delegation_events" WHERE "revision" > $1`, [String(ok.value[1]!)])).toEqual([]);
      expect(recent.read(ok.value[0]! - 1n, 10)!.map((e) => e.eventTime)).toEqual([T0 + 6, T0 + 6]);
    } finally {
      await db.close();
    }
  });

  it("reads another replica's events from the database, in order", async () => {
    const other = await openStore(h.url);
    try {
      const [a, b, c] = [await h.seed("ACTIVE"), await h.seed("ACTIVE"), await h.seed("ACTIVE")];
      const before = await h.store.headRevision();
      const revoke = (id: string, now: number) => ({ target: { ids: [id] }, ending: "revoke" as const, reason: "manual_revocation", now });
      await h.store.end(revoke(a.id, T0 + 10));
      await other.end(revoke(b.id, T0 + 11));
      await h.store.end(revoke(c.id, T0 + 12));
      const read = await h.store.readEvents(before, 100);
      expect(read.map((e) => [e.revision, e.delegation.id])).toEqual([
        [before + 1n, a.id],
        [before + 2n, b.id],
        [before + 3n, c.id],
      ]);
      expect(read[1]!.delegation).toEqual({ ...b, state: "REVOKED", updateTime: T0 + 11, endTime: T0 + 11, endReason: "manual_revocation" });
    } finally {
      await other.close();
    }
  });
});

describe("a large append from its rows (PostgreSQL)", () => {
  const h = useStore("postgresql");

  it("refuses a change whose delegation row is missing, and leaves nothing written", async () => {
    const ds = await Promise.all(Array.from({ length: 70 }, (_, i) => h.seed("ACTIVE", { createTime: T0 + i })));
    const head = await h.store.headRevision();
    const recent = new RecentEvents(100);
    const lifecycle = new LifecycleSql(undefined, undefined, recent);
    const db = database(h.url);
    try {
      // More than one statement's worth of small appends, so the rows path is taken; one delegation has no row.
      const changes = [...ds, makeDelegation({ id: "del_not_there" })].map((delegation) => ({
        delegation,
        type: "REVOKED" as const,
        reason: "manual_revocation",
        actor: "",
        cascaded: false,
      }));
      await expect(db.transaction((tx) => lifecycle.append(tx, changes, T0 + 100, { rowsAreSnapshots: true }))).rejects.toThrow(
        /appending 71 events from their rows wrote 70: a delegation row is missing/,
      );
      expect(await h.store.headRevision()).toBe(head);
      expect(await db.all(`SELECT "revision" FROM "delegation_events" WHERE "revision" > $1`, [String(head)])).toEqual([]);
      expect(recent.size).toBe(0);
    } finally {
      await db.close();
    }
  });
});
