/**
 * Applies the SQL migrations under prisma/<provider>/migrations in name order
 * and records them in `_prisma_migrations` the way Prisma Migrate does
 * (sha256 checksum of migration.sql), so `prisma migrate status` agrees.
 * Several replicas may start at once: PostgreSQL takes an advisory lock.
 */
import { createHash, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import pg from "pg";
import { parseDatabaseUrl } from "./database-url.js";

export interface Migration {
  name: string;
  sql: string;
  checksum: string;
}

export interface MigrateResult {
  applied: string[];
  alreadyApplied: string[];
}

/** Raised when the database disagrees with the migrations on disk. */
export class MigrationError extends Error {
  override name = "MigrationError";
}

const here = dirname(fileURLToPath(import.meta.url));

/** The migrations folder of a provider, found from src/ or dist/. */
export function migrationsDir(provider: "sqlite" | "postgresql"): string {
  return resolve(here, "..", "..", "prisma", provider, "migrations");
}

/** Reads the migrations of a provider from disk. */
export function loadMigrations(provider: "sqlite" | "postgresql"): Migration[] {
  const dir = migrationsDir(provider);
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(dir, e.name, "migration.sql")))
    .map((e) => e.name)
    .sort()
    .map((name) => {
      const sql = readFileSync(join(dir, name, "migration.sql"), "utf8");
      return { name, sql, checksum: createHash("sha256").update(sql).digest("hex") };
    });
}

const SQLITE_TABLE = `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    TEXT PRIMARY KEY NOT NULL,
    "checksum"              TEXT NOT NULL,
    "finished_at"           DATETIME,
    "migration_name"        TEXT NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        DATETIME,
    "started_at"            DATETIME NOT NULL DEFAULT current_timestamp,
    "applied_steps_count"   INTEGER UNSIGNED NOT NULL DEFAULT 0
)`;

const PG_TABLE = `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)`;

// Arbitrary constant shared by every replica: "llm-brkr" as bytes.
const PG_LOCK_KEY = 0x6c6c6d2d62726b72n;

function plan(migrations: Migration[], applied: { migration_name: string; checksum: string }[]) {
  const done = new Map(applied.map((r) => [r.migration_name, r.checksum]));
  for (const [name, checksum] of done) {
    const m = migrations.find((x) => x.name === name);
    if (!m) throw new MigrationError(`database has migration ${name}, which is not on disk (newer broker version?)`);
    if (m.checksum !== checksum) throw new MigrationError(`migration ${name} was modified after it was applied`);
  }
  return {
    pending: migrations.filter((m) => !done.has(m.name)),
    alreadyApplied: migrations.filter((m) => done.has(m.name)).map((m) => m.name),
  };
}

export interface MigrateOptions {
  /** Apply migrations only up to this one (tests of upgrades from an older schema). By default, all. */
  through?: string;
}

/** Brings the database at `databaseUrl` up to date. */
export async function migrate(databaseUrl: string, options: MigrateOptions = {}): Promise<MigrateResult> {
  const target = parseDatabaseUrl(databaseUrl);
  if (target.provider === "sqlite") return migrateSqlite(target.path, options);
  return migratePostgres(target.url, options);
}

/** The migrations of a provider, up to `through` when given. */
function migrationsUpTo(provider: "sqlite" | "postgresql", through: string | undefined): Migration[] {
  const all = loadMigrations(provider);
  return through === undefined ? all : all.filter((m) => m.name <= through);
}

function migrateSqlite(path: string, options: MigrateOptions): MigrateResult {
  mkdirSync(dirname(resolve(path)), { recursive: true });
  const db = new Database(path);
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("busy_timeout = 5000");
    db.exec(SQLITE_TABLE);
    // IMMEDIATE: a second process migrating the same file waits instead of racing.
    const run = db.transaction(() => {
      const rows = db
        .prepare(`SELECT migration_name, checksum FROM "_prisma_migrations" WHERE rolled_back_at IS NULL AND finished_at IS NOT NULL`)
        .all() as { migration_name: string; checksum: string }[];
      const { pending, alreadyApplied } = plan(loadMigrations("sqlite"), rows);
      const wanted = new Set(migrationsUpTo("sqlite", options.through).map((m) => m.name));
      pending.splice(0, pending.length, ...pending.filter((m) => wanted.has(m.name)));
      for (const m of pending) {
        db.exec(m.sql);
        db.prepare(
          `INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, started_at, applied_steps_count) VALUES (?, ?, ?, ?, ?, 1)`,
        ).run(randomUUID(), m.checksum, Date.now(), m.name, Date.now());
      }
      return { applied: pending.map((m) => m.name), alreadyApplied };
    });
    return run.immediate();
  } finally {
    db.close();
  }
}

async function migratePostgres(url: string, options: MigrateOptions): Promise<MigrateResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query("SELECT pg_advisory_lock($1)", [PG_LOCK_KEY.toString()]);
    await client.query(PG_TABLE);
    const { rows } = await client.query(
      `SELECT migration_name, checksum FROM "_prisma_migrations" WHERE rolled_back_at IS NULL AND finished_at IS NOT NULL`,
    );
    const { pending, alreadyApplied } = plan(loadMigrations("postgresql"), rows);
    const wanted = new Set(migrationsUpTo("postgresql", options.through).map((m) => m.name));
    pending.splice(0, pending.length, ...pending.filter((m) => wanted.has(m.name)));
    for (const m of pending) {
      await client.query("BEGIN");
      try {
        await client.query(m.sql);
        await client.query(
          `INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, applied_steps_count) VALUES ($1, $2, now(), $3, 1)`,
          [randomUUID(), m.checksum, m.name],
        );
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK");
        throw new MigrationError(`migration ${m.name} failed: ${(err as Error).message}`);
      }
    }
    return { applied: pending.map((m) => m.name), alreadyApplied };
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [PG_LOCK_KEY.toString()]).catch(() => {});
    await client.end();
  }
}
