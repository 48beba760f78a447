/**
 * The SQLite hot read path: a second, read-only better-sqlite3 connection
 * with statements prepared once. Through Prisma the same point read costs
 * about 10x the CPU (its adapter prepares every statement anew and runs the
 * query interpreter). In WAL mode this connection sees exactly what has
 * committed, never a transaction still open on the Prisma connection.
 */
import Database from "better-sqlite3";

export class SqliteReader {
  private db: Database.Database | undefined;
  private byId: Database.Statement<[string], unknown> | undefined;

  constructor(private readonly path: string) {}

  /** The delegations row with this id, as stored. Opens the connection on first use. */
  delegation(id: string): unknown {
    if (!this.byId) {
      this.db ??= new Database(this.path, { readonly: true, fileMustExist: true });
      this.db.pragma("busy_timeout = 5000");
      this.byId = this.db.prepare(`SELECT * FROM "delegations" WHERE "id" = ?`);
    }
    return this.byId.get(id);
  }

  close(): void {
    this.db?.close();
    this.db = undefined;
    this.byId = undefined;
  }
}
