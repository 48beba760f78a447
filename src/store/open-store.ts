/**
 * Opens the store a DATABASE_URL selects: SQLite through better-sqlite3, or
 * PostgreSQL through pg; both through Prisma's driver adapters.
 */
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import { PrismaPg } from "@prisma/adapter-pg";
import { parseDatabaseUrl } from "./database-url.js";
import { PrismaClient as SqliteClient } from "./generated/sqlite/client.js";
import { PrismaClient as PostgresClient } from "./generated/postgresql/client.js";
import { migrate } from "./migrate.js";
import { PrismaStore } from "./prisma-store.js";
import { SqliteReader } from "./sqlite-reader.js";
import type { DelegationStore } from "./store.js";
import type { DelegationEvent } from "../delegation/model.js";

export interface OpenStoreOptions {
  /** Apply pending migrations first. By default, true. */
  migrate?: boolean;
  /** PostgreSQL pool size. By default, 10. */
  poolSize?: number;
  /** Content id of an event's audit record, stored with each event. */
  contentId?: (event: DelegationEvent) => string;
}

/** Opens (and by default migrates) the database at `databaseUrl`. */
export async function openStore(databaseUrl: string, options: OpenStoreOptions = {}): Promise<DelegationStore> {
  const target = parseDatabaseUrl(databaseUrl);
  if (options.migrate ?? true) await migrate(databaseUrl);
  if (target.provider === "sqlite") {
    mkdirSync(dirname(resolve(target.path)), { recursive: true });
    const adapter = new PrismaBetterSqlite3({ url: target.path, timeout: 5000 });
    const client = new SqliteClient({ adapter });
    // WAL lets readers in other processes (backups, `sqlite3`) work during writes.
    await client.$queryRawUnsafe("PRAGMA journal_mode = WAL");
    await client.$queryRawUnsafe("PRAGMA synchronous = NORMAL");
    return new PrismaStore(client, {
      driver: "sqlite",
      reader: new SqliteReader(target.path),
      ...(options.contentId ? { contentId: options.contentId } : {}),
    });
  }
  const adapter = new PrismaPg({ connectionString: target.url, max: options.poolSize ?? 10 });
  const client = new PostgresClient({ adapter });
  return new PrismaStore(client as unknown as SqliteClient, {
    driver: "postgresql",
    ...(options.contentId ? { contentId: options.contentId } : {}),
  });
}
