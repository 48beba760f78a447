/**
 * The WAL stays bounded under writes that never pause: when a PASSIVE
 * checkpoint leaves more than the restart threshold in the WAL, the store
 * restarts it between two commits, and journal_size_limit cuts the file
 * back. Without the restart the WAL holds everything written.
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { SqliteDatabase } from "../../src/store/sql.js";
import { SqliteCheckpointer } from "../../src/store/sqlite-checkpointer.js";

describe("SQLite WAL under writes that never pause", () => {
  it("is restarted between commits, so it does not grow with what is written", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lpb-ckpt-"));
    const path = join(dir, "w.db");
    const db = new SqliteDatabase(path, { checkpointIntervalMs: 20, walRestartFrames: 200 });
    try {
      await db.run(`CREATE TABLE "t" ("k" INTEGER PRIMARY KEY, "v" TEXT)`);
      const blob = "x".repeat(2000);
      // 20 transactions of 10 rows, committed as soon as the last group is: the writer never pauses.
      const round = () =>
        Promise.all(
          Array.from({ length: 20 }, () =>
            db.transaction(async (tx) => {
              for (let j = 0; j < 10; j++) await tx.run(`INSERT INTO "t" ("v") VALUES ($1)`, [blob]);
            }),
          ),
        );
      // The checkpointer's thread starts on its own time (slow on a loaded machine): write until it has restarted the WAL once.
      const startBy = Date.now() + 20_000;
      while (db.walRestarts === 0 && Date.now() < startBy) await round();
      expect(db.walRestarts).toBeGreaterThan(0);
      // Then a fixed amount of writing, not a fixed time: a slower machine writes fewer bytes between two checkpoints, not more.
      // The file keeps its largest size until journal_size_limit (64 MiB) cuts it: what counts is how much it grows from here.
      const walAtStart = statSync(`${path}-wal`).size;
      let written = 0;
      let maxWal = walAtStart;
      for (let r = 0; r < 60; r++) {
        await round();
        written += 20 * 10 * blob.length;
        maxWal = Math.max(maxWal, statSync(`${path}-wal`).size);
      }
      // Unbounded (no restarts), the WAL grew by 1.08-1.3x the rows' bytes; bounded, by what is written between two
      // restarts: under 0.5x on some days, 0.50-0.65x on 2026-12-03 (4-5 restarts in the 60 rounds, the disk slower).
      expect((maxWal - walAtStart) / written).toBeLessThan(0.85);
    } finally {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("SQLite during a WAL restart", () => {
  it("answers reads at once while writes wait for the restart, and loses no write", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lpb-ckpt-"));
    const path = join(dir, "g.db");
    // Each restart waits a second for the other connection's reader, then gives up until the next report.
    const db = new SqliteDatabase(path, { checkpointIntervalMs: 20, walRestartFrames: 50, walRestartBusyMs: 1_000 });
    const reader = new Database(path);
    try {
      await db.run(`CREATE TABLE "t" ("k" INTEGER PRIMARY KEY, "v" TEXT)`);
      await db.run(`INSERT INTO "t" ("v") VALUES ('first')`);
      reader.exec("BEGIN");
      reader.prepare(`SELECT COUNT(*) FROM "t"`).get();
      const blob = "x".repeat(2000);
      let inserted = 0;
      let slowestWrite = 0;
      const reads: number[] = [];
      const stopBy = Date.now() + 20_000;
      const writer = (async () => {
        while (db.walRestartsBusy === 0 && Date.now() < stopBy) {
          const began = Date.now();
          await db.transaction(async (tx) => {
            for (let j = 0; j < 10; j++) await tx.run(`INSERT INTO "t" ("v") VALUES ($1)`, [blob]);
          });
          inserted += 10;
          slowestWrite = Math.max(slowestWrite, Date.now() - began);
        }
      })();
      while (db.walRestartsBusy === 0 && Date.now() < stopBy) {
        const began = Date.now();
        const [row] = await db.all<{ v: string }>(`SELECT "v" FROM "t" WHERE "k" = 1`);
        expect(row?.v).toBe("first");
        reads.push(Date.now() - began);
        await new Promise((r) => setTimeout(r, 5));
      }
      await writer;
      expect(db.walRestartsBusy).toBeGreaterThan(0);
      // The restart that waited a second held the writes (one of them waited most of it), not the reads.
      expect(slowestWrite).toBeGreaterThan(500);
      expect(Math.max(...reads)).toBeLessThan(500);
      reader.exec("COMMIT");
      const [n] = await db.all<{ n: number }>(`SELECT COUNT(*) AS "n" FROM "t"`);
      expect(n!.n).toBe(inserted + 1);
    } finally {
      reader.close();
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("SqliteCheckpointer.restart, on its thread", () => {
  it("restarts the WAL when nothing holds it, answers false while another connection reads, and false once closed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lpb-ckpt-"));
    const path = join(dir, "r.db");
    const writer = new Database(path);
    writer.pragma("journal_mode = WAL");
    writer.pragma("wal_autocheckpoint = 0");
    writer.exec(`CREATE TABLE "t" ("v" TEXT)`);
    const insert = writer.prepare(`INSERT INTO "t" ("v") VALUES (?)`);
    for (let i = 0; i < 200; i++) insert.run("x".repeat(2000));
    // A long interval: only the RESTARTs this test asks for run.
    const checkpointer = new SqliteCheckpointer(path, { intervalMs: 60_000 });
    const reader = new Database(path);
    try {
      expect(await checkpointer.restart()).toBe(true);
      // Emptied here (TRUNCATE), so no commit of the store's has to cut the file back on its event loop.
      expect(statSync(`${path}-wal`).size).toBe(0);
      // Restarted: the next commit writes the WAL from its start, so it holds that commit's frames alone.
      insert.run("y");
      const [after] = writer.pragma("wal_checkpoint(PASSIVE)") as { log: number }[];
      expect(after!.log).toBeLessThan(5);

      for (let i = 0; i < 200; i++) insert.run("x".repeat(2000));
      // A reader whose snapshot needs the WAL: RESTART cannot finish, and waits no longer than it was told.
      reader.exec("BEGIN");
      reader.prepare(`SELECT COUNT(*) FROM "t"`).get();
      const began = Date.now();
      expect(await checkpointer.restart({ busyTimeoutMs: 50 })).toBe(false);
      expect(Date.now() - began).toBeLessThan(4_000);
      reader.exec("COMMIT");
      expect(await checkpointer.restart()).toBe(true);

      const pending = checkpointer.restart();
      await checkpointer.close();
      expect(await pending).toBe(false);
      expect(await checkpointer.restart()).toBe(false);
    } finally {
      await checkpointer.close();
      reader.close();
      writer.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
