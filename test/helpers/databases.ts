/**
 * Test databases: a fresh SQLite file in a temp dir, or a fresh PostgreSQL
 * database on 127.0.0.1:5432 (dropped afterwards). Both drivers run every
 * suite that takes a `driver` parameter.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";

export type Driver = "sqlite" | "postgresql";
export const DRIVERS: Driver[] = ["sqlite", "postgresql"];

/** Where the test PostgreSQL lives; PG_TEST_URL overrides (must point at a server, any database). */
export const PG_ADMIN_URL = process.env.PG_TEST_URL ?? "postgres://postgres@127.0.0.1:5432/test";

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/** A new, empty database for one suite. */
export async function createTestDatabase(driver: Driver): Promise<TestDatabase> {
  if (driver === "sqlite") {
    const dir = mkdtempSync(join(tmpdir(), "lpb-test-"));
    return {
      url: `file:${join(dir, "broker.db")}`,
      async drop() {
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const name = `lpb_test_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}
