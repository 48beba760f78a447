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
import { SqliteDatabase } from "../../src/store/sql.js";

describe("SQLite WAL under writes that never pause", () => {
  it("is restarted between commits, so it does not grow with what is written", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lpb-ckpt-"));
    const path = join(dir, "w.db");
    const db = new SqliteDatabase(path, { checkpointIntervalMs: 20, walRestartFrames: 200 });
    try {
      await db.run(`CREATE TABLE "t" ("k" INTEGER PRIMARY KEY, "v" TEXT)`);
      const blob = "x".repeat(2000);
      let written = 0;
      let maxWal = 0;
      const until = Date.now() + 1500;
      while (Date.now() < until) {
        // 20 transactions of 10 rows, committed as soon as the last group is: the writer never pauses.
        await Promise.all(
          Array.from({ length: 20 }, () =>
            db.transaction(async (tx) => {
              for (let j = 0; j < 10; j++) await tx.run(`INSERT INTO "t" ("v") VALUES ($1)`, [blob]);
            }),
          ),
        );
        written += 20 * 10 * blob.length;
        maxWal = Math.max(maxWal, statSync(`${path}-wal`).size);
      }
      expect(db.walRestarts).toBeGreaterThan(0);
      // Unbounded, the WAL holds about 1.3x the rows' bytes; bounded, what was written between two checkpoints.
      // As a share of what was written, so a loaded machine (slowing writer and checkpointer alike) does not move it.
      expect(maxWal / written).toBeLessThan(0.5);
    } finally {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
