/**
 * Announcing new revisions across replicas on PostgreSQL: a commit through
 * one store reaches a PgNotifier on another connection with its revision; a
 * LISTEN connection that is killed comes back and says "look at the log"
 * (revision 0); and a follower whose notifications are all lost still reads
 * every event, by its poll.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LogFollower } from "../../src/events/log-follower.js";
import { PgNotifier } from "../../src/events/pg-notifier.js";
import type { RevisionNotifier } from "../../src/events/notifier.js";
import { openStore } from "../../src/store/open-store.js";
import type { DelegationStore } from "../../src/store/store.js";
import { createTestDatabase, type TestDatabase } from "../helpers/databases.js";
import { eventually } from "../helpers/eventually.js";
import { activationFor, claimFor, makeDelegation } from "./fixtures.js";

describe("PgNotifier", () => {
  let db: TestDatabase;
  let writer: DelegationStore;
  let seq = 0;
  const channel = () => `lpb_notify_test_${process.pid}_${++seq}`;

  beforeAll(async () => {
    db = await createTestDatabase("postgresql");
  });
  afterAll(async () => {
    await writer?.close();
    await db?.drop();
  });

  /** A writer store that NOTIFYs `ch`; returns the revision of one new event. */
  async function commitOn(ch: string): Promise<bigint> {
    const store = await openStore(db.url, { notifyChannel: ch });
    try {
      const d = makeDelegation();
      await store.insertRequested(d, claimFor(d, { requestId: `req-${d.id}` }));
      const t = await store.activate({ id: d.id, now: d.createTime + 1, patch: activationFor(d) });
      return t!.revision;
    } finally {
      await store.close();
    }
  }

  it("hears a commit made through another connection, with its revision", async () => {
    const ch = channel();
    const notifier = new PgNotifier({ url: db.url, channel: ch });
    const heard: bigint[] = [];
    notifier.subscribe((r) => heard.push(r));
    await notifier.start();
    try {
      const revision = await commitOn(ch);
      await eventually("the notification", () => heard.includes(revision));
      expect(heard.every((r) => r > 0n)).toBe(true);
    } finally {
      await notifier.close();
    }
  });

  it("reconnects after its LISTEN connection is killed, and then says to look at the log", async () => {
    const ch = channel();
    const notifier = new PgNotifier({ url: db.url, channel: ch, maxBackoffMs: 200 });
    const heard: bigint[] = [];
    notifier.subscribe((r) => heard.push(r));
    await notifier.start();
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      const killed = await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query = $1`,
        [`LISTEN ${ch}`],
      );
      expect(killed.rowCount).toBe(1);
      await eventually("the reconnection's look-at-the-log", () => heard.includes(0n));
      expect(notifier.connected).toBe(true);
      const revision = await commitOn(ch);
      await eventually("a notification after the reconnection", () => heard.includes(revision));
    } finally {
      await admin.end();
      await notifier.close();
    }
  });

  it("loses no event when every notification is lost: the follower polls the log", async () => {
    writer = await openStore(db.url);
    const silent: RevisionNotifier = { kind: "postgresql", subscribe: () => () => undefined, start: async () => undefined, close: async () => undefined };
    const follower = new LogFollower(writer, silent, { pollMs: 20 });
    const seen: bigint[] = [];
    follower.add((events) => seen.push(...events.map((e) => e.revision)));
    await follower.start();
    try {
      const revisions = [await commitOn(channel()), await commitOn(channel())];
      await eventually("both events, by the poll", () => revisions.every((r) => seen.includes(r)));
      expect(seen).toEqual([...seen].sort((a, b) => (a < b ? -1 : 1)));
    } finally {
      await follower.stop();
    }
  });
});
