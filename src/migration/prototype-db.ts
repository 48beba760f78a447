/**
 * The Python prototype's SQLite database, opened read-only. The prototype
 * kept everything in one table, `delegations` (SQLModel's `DelegationDB`,
 * created by `SQLModel.metadata.create_all`); a file without that table and
 * the columns this import reads is refused before anything is read.
 */
import { existsSync } from "node:fs";
import Database from "better-sqlite3";

/** The prototype's columns this import reads; `chronicle_cid` is not among them (see prototype-row.ts). */
export const PROTOTYPE_COLUMNS = [
  "delegation_id",
  "status",
  "agent_type",
  "agent_model",
  "agent_did",
  "agent_keycloak_client_id",
  "delegator_did",
  "delegator_ac_id",
  "delegated_ac_id",
  "capability_ceiling",
  "ceremony_required_for",
  "max_commands",
  "commands_executed",
  "created_at",
  "expires_at",
  "revoked_at",
  "revoke_reason",
] as const;

export type PrototypeColumn = (typeof PROTOTYPE_COLUMNS)[number];

/** One prototype row as SQLite returns it: SQLite is dynamically typed, so nothing is trusted yet. */
export type PrototypeRecord = Record<PrototypeColumn, unknown>;

/** The file is missing, is not SQLite, or is not the prototype's database. The message says which. */
export class PrototypeFileError extends Error {
  override name = "PrototypeFileError";
}

/** Reads every row of the prototype database at `path` (read-only), in file order. */
export function readPrototype(path: string): PrototypeRecord[] {
  if (!existsSync(path)) throw new PrototypeFileError(`${path}: no such file`);
  let db: Database.Database;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new PrototypeFileError(`${path} cannot be opened as a SQLite database (${messageOf(err)})`);
  }
  try {
    let tables: string[];
    try {
      tables = (db.prepare(`SELECT "name" FROM "sqlite_master" WHERE "type" = 'table' ORDER BY "name"`).all() as { name: string }[]).map((t) => t.name);
    } catch (err) {
      throw new PrototypeFileError(`${path} is not a SQLite database (${messageOf(err)})`);
    }
    if (!tables.includes("delegations")) {
      const has = tables.length === 0 ? "it has no tables" : `its tables: ${tables.join(", ")}`;
      throw new PrototypeFileError(`${path} is not a prototype database: it has no "delegations" table (${has})`);
    }
    const columns = new Set((db.prepare(`PRAGMA table_info("delegations")`).all() as { name: string }[]).map((c) => c.name));
    const missing = PROTOTYPE_COLUMNS.filter((c) => !columns.has(c));
    if (missing.length > 0) {
      // This broker's own database also has a "delegations" table; say so rather than only list columns.
      const hint = tables.includes("_prisma_migrations") ? "; it looks like this broker's own database" : "";
      throw new PrototypeFileError(
        `${path} is not a prototype database: its "delegations" table lacks the column${missing.length > 1 ? "s" : ""} ${missing.join(", ")}${hint}`,
      );
    }
    const list = PROTOTYPE_COLUMNS.map((c) => `"${c}"`).join(", ");
    return db.prepare(`SELECT ${list} FROM "delegations"`).all() as PrototypeRecord[];
  } finally {
    db.close();
  }
}

// SQLAlchemy's SQLite DATETIME: "2026-04-04 16:52:45.123456", naive, UTC (the prototype used
// datetime.utcnow()). A "T", fewer fraction digits or an explicit offset are accepted too.
const DATETIME = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$/;

/** A prototype timestamp in epoch milliseconds (microseconds truncated), or undefined when it is not one. */
export function parsePrototypeTime(value: unknown): number | undefined {
  if (typeof value !== "string") return undefined;
  const m = DATETIME.exec(value.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  const ms = frac ? Number(frac.slice(0, 3).padEnd(3, "0")) : 0;
  let t = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms);
  // Date.UTC rolls 2026-02-31 over to March: only a date that reads back the same is one.
  const back = new Date(t);
  if (back.getUTCFullYear() !== Number(y) || back.getUTCMonth() !== Number(mo) - 1 || back.getUTCDate() !== Number(d)) return undefined;
  if (Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) return undefined;
  if (zone && zone !== "Z") {
    const sign = zone.startsWith("-") ? -1 : 1;
    const digits = zone.slice(1).replace(":", "");
    t -= sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2))) * 60_000;
  }
  return t;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
