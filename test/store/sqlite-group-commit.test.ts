/**
 * The SQLite driver's group commit, on a real database file: transactions
 * queued in one turn share one COMMIT; one that throws leaves nothing
 * behind while the others commit; each caller is answered only after the
 * commit (a second connection sees its write by then).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteDatabase } from "../../src/store/sql.js";

let dir: string;
let db: SqliteDatabase;
let path: string;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "lpb-group-"));
  path = join(dir, "g.db");
  db = new SqliteDatabase(path, { checkpointOffThread: false });
  await db.run(`CREATE TABLE "t" ("k" TEXT PRIMARY KEY, "v" INTEGER NOT NULL)`);
});

afterEach(async () => {
  await db.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Commits so far, from SQLite's own count of changes to the file (data_version moves with each commit seen from another connection). */
function reader() {
  const r = new Database(path, { readonly: true });
  return {
    version: () => r.pragma("data_version", { simple: true }) as number,
    value: (k: string) => (r.prepare(`SELECT "v" FROM "t" WHERE "k" = ?`).get(k) as { v: number } | undefined)?.v,
    close: () => r.close(),
  };
}

describe("SQLite group commit", () => {
  it("commits the transactions of one turn together, and answers each after the commit", async () => {
    const r = reader();
    try {
      const before = r.version();
      const seenAtAnswer: (number | undefined)[] = [];
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          db
            .transaction(async (tx) => {
              await tx.run(`INSERT INTO "t" ("k", "v") VALUES ($1, $2)`, [`k${i}`, i]);
              return i;
            })
            .then((v) => seenAtAnswer.push(r.value(`k${v}`))),
        ),
      );
      expect(seenAtAnswer).toHaveLength(20);
      expect(seenAtAnswer.every((v) => v !== undefined)).toBe(true);
      // One commit (data_version counts commits by other connections as seen from this one).
      expect(r.version() - before).toBe(1);
    } finally {
      r.close();
    }
  });

  it("rolls back only the transaction that threw; the others in its group commit", async () => {
    const results = await Promise.allSettled([
      db.transaction(async (tx) => tx.run(`INSERT INTO "t" ("k", "v") VALUES ('a', 1)`)),
      db.transaction(async (tx) => {
        await tx.run(`INSERT INTO "t" ("k", "v") VALUES ('b', 2)`);
        throw new Error("refused");
      }),
      db.transaction(async (tx) => tx.run(`INSERT INTO "t" ("k", "v") VALUES ('c', 3)`)),
      // A constraint failure inside a statement, not a thrown error of the caller.
      db.transaction(async (tx) => tx.run(`INSERT INTO "t" ("k", "v") VALUES ('a', 9)`)),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "rejected"]);
    const rows = await db.all<{ k: string; v: number }>(`SELECT "k", "v" FROM "t" ORDER BY "k"`);
    expect(rows).toEqual([
      { k: "a", v: 1 },
      { k: "c", v: 3 },
    ]);
  });

  it("runs transactions queued while a group commits in the next group, in order", async () => {
    const order: number[] = [];
    const first = db.transaction(async (tx) => {
      await tx.run(`INSERT INTO "t" ("k", "v") VALUES ('x', 1)`);
      order.push(1);
    });
    await first;
    const later = await Promise.all([2, 3].map((n) => db.transaction(async (tx) => {
      await tx.run(`UPDATE "t" SET "v" = $1 WHERE "k" = 'x'`, [n]);
      order.push(n);
    })));
    expect(later).toHaveLength(2);
    expect(order).toEqual([1, 2, 3]);
    expect((await db.all<{ v: number }>(`SELECT "v" FROM "t" WHERE "k" = 'x'`))[0]!.v).toBe(3);
  });

  it("rejects a statement that does not prepare, as a promise, and goes on", async () => {
    const answer = db.all(`SELECT "v" FROM "no_such_table"`);
    await expect(answer).rejects.toThrow(/no such table/);
    expect(await db.all(`SELECT COUNT(*) AS "n" FROM "t"`)).toEqual([{ n: 0 }]);
  });
});
