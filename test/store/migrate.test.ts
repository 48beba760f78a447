/**
 * The migration runner: applies prisma/<provider>/migrations once, records
 * them the way Prisma Migrate does, refuses a database that disagrees with
 * the files on disk, and is safe when several replicas start at once.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MigrationError, migrate } from "../../src/store/migrate.js";
import { openStore } from "../../src/store/open-store.js";
import { DRIVERS, createTestDatabase, type Driver, type TestDatabase } from "../helpers/databases.js";

const INIT = "20261123000000_init";
/** Every migration on disk, in order: the same list for both providers. */
const ALL = [
  "20261123000000_init",
  "20261123010000_audit_outbox",
  "20261202000000_ending_path",
  "20261202010000_ceremonies_live_checks",
  "20261203000000_live_partial_indexes",
];

/** The checksum Prisma Migrate records: sha256 hex of the file's bytes. */
function checksumOnDisk(driver: Driver, name: string): string {
  const file = fileURLToPath(new URL(`../../prisma/${driver}/migrations/${name}/migration.sql`, import.meta.url));
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

/** Runs SQL straight against the test database, bypassing the code under test. */
async function sql(driver: Driver, url: string, text: string): Promise<Record<string, unknown>[]> {
  if (driver === "sqlite") {
    const db = new Database(url.slice("file:".length));
    try {
      const stmt = db.prepare(text);
      if (stmt.reader) return stmt.all() as Record<string, unknown>[];
      stmt.run();
      return [];
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

const recorded = (driver: Driver, url: string) =>
  sql(
    driver,
    url,
    `SELECT migration_name, checksum, applied_steps_count, finished_at IS NOT NULL AS finished, rolled_back_at
       FROM "_prisma_migrations" ORDER BY migration_name`,
  );

describe.each(DRIVERS)("migrate on %s", (driver) => {
  let db: TestDatabase | undefined;

  beforeEach(async () => {
    db = await createTestDatabase(driver);
  });

  afterEach(async () => {
    await db?.drop();
    db = undefined;
  });

  it("applies every migration in order to a fresh database and records each checksum", async () => {
    expect(await migrate(db!.url)).toEqual({ applied: ALL, alreadyApplied: [] });
    const rows = await recorded(driver, db!.url);
    expect(rows.map((r) => r.migration_name).sort()).toEqual(ALL);
    for (const name of ALL) {
      expect(rows.find((r) => r.migration_name === name)).toMatchObject({
        checksum: checksumOnDisk(driver, name),
        applied_steps_count: 1,
        rolled_back_at: null,
      });
    }
    // SQLite answers booleans as 0/1.
    expect(Boolean(rows[0]!.finished)).toBe(true);
    // The migration itself ran: the tables exist and the log is seeded.
    const meta = await sql(driver, db!.url, `SELECT key, value FROM "broker_meta" ORDER BY key`);
    expect(meta.map((r) => [r.key, String(r.value)])).toEqual([
      ["audit_rejected", "0"],
      ["cursor:audit", "0"],
      ["cursor:gsap_revoke", "0"],
      ["cursor:idp_delete", "0"],
      ["pruned_through", "0"],
      ["revision", "0"],
    ]);
    expect(await sql(driver, db!.url, `SELECT id FROM "delegations"`)).toEqual([]);
  });

  it("applies nothing the second time", async () => {
    await migrate(db!.url);
    expect(await migrate(db!.url)).toEqual({ applied: [], alreadyApplied: ALL });
    expect(await recorded(driver, db!.url)).toHaveLength(ALL.length);
  });

  it("refuses a database whose recorded checksum differs from the file", async () => {
    await migrate(db!.url);
    await sql(driver, db!.url, `UPDATE "_prisma_migrations" SET checksum = 'x'`);
    const err = await migrate(db!.url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect((err as Error).message).toContain(INIT);
  });

  it("refuses a database with a migration that is not on disk", async () => {
    await migrate(db!.url);
    await sql(
      driver,
      db!.url,
      `INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, applied_steps_count)
       VALUES ('00000000-0000-0000-0000-000000000001', 'abc', CURRENT_TIMESTAMP, '29991231000000_future', 1)`,
    );
    await expect(migrate(db!.url)).rejects.toBeInstanceOf(MigrationError);
  });

  it("carries a database of the previous version over to the ending path without losing work", async () => {
    const previous = "20261123010000_audit_outbox";
    expect((await migrate(db!.url, { through: previous })).applied).toEqual([INIT, previous]);
    const now = Date.now();
    const row = (id: string, state: string, cleanup: boolean, delegatedAc: string, expireTime: number) =>
      `('${id}', '${state}', 'claude-code', '', 'did:x:${id}', 'c-${id}', 'o-${id}', 'stub', 'did:web:a', 'ac-1', '${delegatedAc}', 'null',
        'CAP_READ', '[]', '[]', ${driver === "sqlite" ? 1 : "TRUE"}, ${driver === "sqlite" ? 1 : "TRUE"}, 'x', 10, 0, 1, ${now}, ${now}, ${expireTime}, NULL, '', '',
        ${cleanup ? (driver === "sqlite" ? 1 : "TRUE") : driver === "sqlite" ? 0 : "FALSE"})`;
    await sql(
      driver,
      db!.url,
      `INSERT INTO "delegations" VALUES
         ${row("d_cleanup", "REVOKED", true, "ac-dev-1", now + 3600_000)},
         ${row("d_done", "EXPIRED", false, "ac-dev-2", now - 1000)},
         ${row("d_live_ctx", "REVOKED", false, "ac-dev-3", now + 3600_000)},
         ${row("d_active", "ACTIVE", false, "ac-dev-4", now + 3600_000)}`,
    );
    // Five events: 1-2 delivered, 3 refused, 4-5 still pending at the upgrade.
    const state = ["delivered", "delivered", "rejected", "pending", "pending"];
    for (const [i, s] of state.entries()) {
      await sql(
        driver,
        db!.url,
        `INSERT INTO "delegation_events" (revision, delegation_id, delegator_did, type, event_time, reason, snapshot, audit_state)
         VALUES (${i + 1}, 'd_active', 'did:web:a', 'CREATED', ${now}, 'created', '{}', '${s}')`,
      );
    }
    await sql(driver, db!.url, `UPDATE "broker_meta" SET value = 5 WHERE key = 'revision'`);

    expect((await migrate(db!.url)).applied).toEqual(ALL.slice(2));
    const store = await openStore(db!.url);
    try {
      // The identity awaiting deletion and the context of an ended, unexpired delegation became retries due now.
      const idp = await store.dueRetries("idp_delete", now + 1, 10);
      expect(idp.map((e) => e.delegationId)).toEqual(["d_cleanup"]);
      const gsap = await store.dueRetries("gsap_revoke", now + 1, 10);
      expect(gsap.map((e) => e.delegationId).sort()).toEqual(["d_cleanup", "d_live_ctx"]);
      // Earlier endings are not done again from the log: the cursors start at the head.
      expect((await store.pendingEndings("idp_delete", 10)).items).toEqual([]);
      // Audit delivery resumes at the first event still pending; the refusal is counted.
      expect(await store.auditCursor()).toBe(3n);
      expect(await store.auditBacklog()).toMatchObject({ pending: 2, rejected: 1 });
      expect((await store.pendingAudit(10)).map((p) => p.event.revision)).toEqual([4n, 5n]);
    } finally {
      await store.close();
    }
  });

  it("openStore migrates by default, and not with migrate: false", async () => {
    const unmigrated = await openStore(db!.url, { migrate: false });
    try {
      await expect(unmigrated.headRevision()).rejects.toThrow();
    } finally {
      await unmigrated.close();
    }
    const store = await openStore(db!.url);
    try {
      expect(await store.headRevision()).toBe(0n);
    } finally {
      await store.close();
    }
    expect(await recorded(driver, db!.url)).toHaveLength(ALL.length);
  });
});

describe("migrate on postgresql with several replicas starting at once", () => {
  let db: TestDatabase | undefined;

  afterEach(async () => {
    await db?.drop();
    db = undefined;
  });

  it("lets concurrent calls all succeed and applies each migration once", async () => {
    db = await createTestDatabase("postgresql");
    const results = await Promise.all(Array.from({ length: 4 }, () => migrate(db!.url)));
    expect(results.filter((r) => r.applied.includes(INIT))).toHaveLength(1);
    expect(results.filter((r) => r.alreadyApplied.includes(INIT))).toHaveLength(3);
    const rows = await recorded("postgresql", db.url);
    expect(rows.map((r) => r.migration_name).sort()).toEqual(ALL);
  });
});

describe("DATABASE_URL", () => {
  it("rejects an unknown scheme without echoing the password", async () => {
    const url = "mysql://broker:s3cret@127.0.0.1:3306/broker";
    const err = await migrate(url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/DATABASE_URL must start with file: or postgres:\/\//);
    expect((err as Error).message).not.toContain("s3cret");
    await expect(openStore(url)).rejects.toThrow(/DATABASE_URL/);
  });

  it("rejects file: without a path", async () => {
    await expect(migrate("file:")).rejects.toThrow(/needs a path/);
  });

  it("rejects an in-memory SQLite database, which the store would open unmigrated", async () => {
    await expect(openStore("file::memory:")).rejects.toThrow(/file::memory: is not supported/);
    await expect(migrate("file::memory:")).rejects.toThrow(/file::memory: is not supported/);
  });
});
