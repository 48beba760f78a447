/**
 * Opens the store a DATABASE_URL selects: SQLite through better-sqlite3, or
 * PostgreSQL through pg, each with the Prisma client for listings on the
 * same driver (Prisma's adapters).
 */
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import { PrismaPg } from "@prisma/adapter-pg";
import type { DelegationEvent } from "../domain/index.js";
import { parseDatabaseUrl } from "./database-url.js";
import { PrismaClient as SqliteClient } from "./generated/sqlite/client.js";
import { PrismaClient as PostgresClient } from "./generated/postgresql/client.js";
import { migrate } from "./migrate.js";
import { createPrismaListing } from "./prisma-listing.js";
import { PostgresDatabase, SqliteDatabase } from "./sql.js";
import { SqlStore } from "./sql-store.js";
import type { DelegationStore } from "./store.js";

export interface OpenStoreOptions {
  /** Apply pending migrations first. By default, true. */
  migrate?: boolean;
  /** PostgreSQL pool size. By default, 10. */
  poolSize?: number;
  /** Content id of an event's audit record, stored with each event. */
  contentId?: (event: DelegationEvent) => string;
  /** PostgreSQL: NOTIFY this channel with the head revision on every commit that appends events. */
  notifyChannel?: string;
  /** Events this process committed kept for the log's readers. By default, 10,000; 0 keeps none. */
  recentEvents?: number;
}

/** Opens (and by default migrates) the database at `databaseUrl`. */
export async function openStore(databaseUrl: string, options: OpenStoreOptions = {}): Promise<DelegationStore> {
  const target = parseDatabaseUrl(databaseUrl);
  if (options.migrate ?? true) await migrate(databaseUrl);
  const contentId = options.contentId ? { contentId: options.contentId } : {};
  const recent = options.recentEvents !== undefined ? { recentEvents: options.recentEvents } : {};
  if (target.provider === "sqlite") {
    mkdirSync(dirname(resolve(target.path)), { recursive: true });
    const db = new SqliteDatabase(target.path);
    const prisma = new SqliteClient({ adapter: new PrismaBetterSqlite3({ url: target.path, timeout: 5000 }) });
    return new SqlStore(db, { ...contentId, ...recent, listing: createPrismaListing(prisma) });
  }
  const db = new PostgresDatabase(target.url, { poolSize: options.poolSize ?? 10 });
  // One pool for both. (The adapter declares a newer @types/pg; the runtime module is the same.)
  const prisma = new PostgresClient({ adapter: new PrismaPg(db.pool as unknown as ConstructorParameters<typeof PrismaPg>[0]) });
  return new SqlStore(db, {
    ...contentId,
    ...recent,
    ...(options.notifyChannel ? { notifyChannel: options.notifyChannel } : {}),
    listing: createPrismaListing(prisma as unknown as SqliteClient),
  });
}
