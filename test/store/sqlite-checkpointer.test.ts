/**
 * The WAL stays bounded under writes that never pause: when a PASSIVE
 * checkpoint leaves more than restartFrames in the WAL, the worker restarts
 * it, and journal_size_limit cuts the file back.
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { SqliteCheckpointer } from "../../src/store/sqlite-checkpointer.js";

describe("SqliteCheckpointer", () => {
  it("restarts a WAL that writes keep growing, so it does not grow without bound", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lpb-ckpt-"));
    const path = join(dir, "w.db");
    const db = new Database(path);
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    db.pragma("wal_autocheckpoint = 0");
    db.pragma(`journal_size_limit = ${1024 * 1024}`);
    db.exec(`CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)`);
    const seen: { mode: string; log: number }[] = [];
    const ckpt = new SqliteCheckpointer(path, { intervalMs: 20, restartFrames: 200, onCheckpoint: (c) => seen.push(c) });
    try {
      const insert = db.prepare(`INSERT INTO t (v) VALUES (?)`);
      const blob = "x".repeat(2000);
      const until = Date.now() + 1500;
      let maxWal = 0;
      while (Date.now() < until) {
        // A commit of a few pages at a time, back to back, yielding only so the worker's answers arrive.
        for (let i = 0; i < 20; i++) db.transaction(() => { for (let j = 0; j < 10; j++) insert.run(blob); })();
        maxWal = Math.max(maxWal, statSync(`${path}-wal`).size);
        await new Promise((r) => setImmediate(r));
      }
      expect(seen.some((c) => c.mode === "RESTART")).toBe(true);
      // 200 frames of 4 KiB restart the WAL; between checkpoints it grows by what 20 ms of writes add.
      expect(maxWal).toBeLessThan(64 * 1024 * 1024);
      expect(statSync(`${path}-wal`).size).toBeLessThan(16 * 1024 * 1024);
    } finally {
      await ckpt.close();
      db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
