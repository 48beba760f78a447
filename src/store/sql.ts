/**
 * The store's connection to its database: one small interface, two drivers.
 *
 * - SQLite: one better-sqlite3 connection, statements prepared once. The
 *   driver is synchronous, so every operation (and every transaction, whose
 *   body awaits only this connection) runs under one mutex: a statement of
 *   one task can never land inside another task's open transaction.
 * - PostgreSQL: a pg Pool; a transaction holds one pooled client and is
 *   retried when PostgreSQL aborts it for a deadlock or a serialization failure.
 *
 * SQL is written once with `$1 … $n` placeholders (PostgreSQL's); the SQLite
 * driver rewrites them to `?1 … ?n`. The few places where the dialects differ
 * (a list parameter, multi-row inserts, row locking) go through the helpers
 * at the end of this file.
 *
 * Prisma's driver adapters run over these same drivers; the store talks to them
 * directly on its paths because Prisma's per-query cost (a statement prepared
 * anew and the query interpreter, measured at 10x a prepared statement) would
 * dominate every state change (see docs/architecture.md).
 */
import Database from "better-sqlite3";
import pg from "pg";
import { SqliteCheckpointer } from "./sqlite-checkpointer.js";

export type Dialect = "sqlite" | "postgresql";

/** One connection or transaction. */
export interface SqlConn {
  readonly dialect: Dialect;
  /** Rows of a query (or of a statement with RETURNING). */
  all<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<R[]>;
  /** Runs a statement; resolves with the number of rows it changed. */
  run(sql: string, params?: readonly unknown[]): Promise<number>;
  /**
   * In a transaction: runs `hook` once the transaction has committed, before
   * its caller is answered; never if it rolls back (nor for an attempt that
   * is retried). Absent outside a transaction. A hook must not throw or block.
   */
  afterCommit?(hook: () => void): void;
}

/** Runs the hooks of a committed transaction; one that throws does not stop the others. */
function runHooks(hooks: readonly (() => void)[]): void {
  for (const h of hooks) {
    try {
      h();
    } catch {
      // The commit stands; a hook's failure is its own.
    }
  }
}

export interface SqlDatabase extends SqlConn {
  /** Runs `fn` in one transaction: committed if it resolves, rolled back if it throws. */
  transaction<T>(fn: (tx: SqlConn) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Runs tasks one at a time, in order. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

// SQLite binds numbers, strings, bigints, buffers and null only.
function sqliteParam(v: unknown): unknown {
  if (typeof v === "boolean") return v ? 1 : 0;
  return v === undefined ? null : v;
}

interface Prepared {
  statement: Database.Statement;
  order: number[];
}

export interface SqliteOptions {
  /** Milliseconds another process may hold the write lock before a statement fails. By default, 5000. */
  busyTimeoutMs?: number;
  /** Checkpoint the WAL on a worker thread instead of inside commits (see sqlite-checkpointer.ts). By default, true. */
  checkpointOffThread?: boolean;
  /** Told of a failed background checkpoint. */
  onCheckpointError?: (message: string) => void;
  /** The background checkpoint's interval and WAL restart threshold (tests). By default, 1000 ms and 16,384 frames. */
  checkpointIntervalMs?: number;
  walRestartFrames?: number;
  /** How long a WAL restart waits for another connection's reader before giving up until the next time. By default, 100 ms. */
  walRestartBusyMs?: number;
}

/** Transactions committed together, at most. */
const MAX_GROUP = 64;
/** A group takes no further transaction once it has run this long (it holds the event loop). */
const MAX_GROUP_MS = 10;

/** The SQLite driver: one connection in WAL mode. */
export class SqliteDatabase implements SqlDatabase {
  readonly dialect = "sqlite" as const;
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Prepared>();
  private readonly mutex = new Mutex();
  /** Transactions waiting for the connection, committed together (see transaction). */
  private readonly waiting: { fn: (tx: SqlConn) => Promise<unknown>; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
  private readonly conn: SqlConn;
  private readonly checkpointer: SqliteCheckpointer | undefined;
  /** The checkpointer found the WAL too long: restart it after the next commit (see sqlite-checkpointer.ts). */
  private restartDue = false;
  /** The WAL restart in progress: writes wait for it, reads do not (see startWalRestart). */
  private restarting: Promise<void> | undefined;
  private readonly walRestartBusyMs: number;
  private readonly busyTimeoutMs: number;
  /** WAL restarts done, and given up because another connection was reading (tests). */
  walRestarts = 0;
  walRestartsBusy = 0;

  constructor(path: string, options: SqliteOptions = {}) {
    this.db = new Database(path);
    this.busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    this.walRestartBusyMs = options.walRestartBusyMs ?? 100;
    this.db.pragma(`busy_timeout = ${this.busyTimeoutMs}`);
    // WAL: readers (backups, `sqlite3`) work during writes; NORMAL: a commit is
    // durable against a crash of the broker (not of the machine) without an fsync each.
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    if (options.checkpointOffThread ?? true) {
      this.db.pragma("wal_autocheckpoint = 0");
      // When a checkpoint restarts the WAL, the file is cut back to this (it would otherwise keep its largest size).
      this.db.pragma(`journal_size_limit = ${64 * 1024 * 1024}`);
      this.checkpointer = new SqliteCheckpointer(path, {
        ...(options.onCheckpointError ? { onError: options.onCheckpointError } : {}),
        ...(options.checkpointIntervalMs ? { intervalMs: options.checkpointIntervalMs } : {}),
        ...(options.walRestartFrames ? { restartFrames: options.walRestartFrames } : {}),
        onRestartDue: () => {
          this.restartDue = true;
        },
      });
    }
    this.conn = {
      dialect: "sqlite",
      all: async <R>(sql: string, params: readonly unknown[] = []) => {
        const p = this.statement(sql);
        return p.statement.all(...p.order.map((i) => sqliteParam(params[i]))) as R[];
      },
      run: async (sql: string, params: readonly unknown[] = []) => {
        const p = this.statement(sql);
        return p.statement.run(...p.order.map((i) => sqliteParam(params[i]))).changes;
      },
    };
  }

  /**
   * The prepared form of `sql`: each `$n` becomes a `?`, and `order` says
   * which parameter goes in each place (better-sqlite3 binds numbered
   * parameters only by name, so a parameter used twice is passed twice).
   */
  private statement(sql: string): Prepared {
    let p = this.statements.get(sql);
    if (!p) {
      const order: number[] = [];
      const text = sql.replace(/\$(\d+)/g, (_, n: string) => {
        order.push(Number(n) - 1);
        return "?";
      });
      p = { statement: this.db.prepare(text), order };
      // Dynamic statements (multi-row, IN lists) must not grow the cache without bound.
      if (this.statements.size >= 1000) this.statements.clear();
      this.statements.set(sql, p);
    }
    return p;
  }

  private exec(sql: string): void {
    this.statement(sql).statement.run();
  }

  async all<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<R[]> {
    // A statement that does not prepare (a syntax error, a missing table) rejects, as any other failure.
    const readonly = this.statement(sql).statement.readonly;
    // During a WAL restart no transaction is open on the connection (writes wait for it): a read need not queue behind them.
    if (readonly && this.restarting) return this.conn.all<R>(sql, params);
    return this.mutex.run(async () => {
      if (!readonly) await this.writesAllowed();
      return this.conn.all<R>(sql, params);
    });
  }

  run(sql: string, params?: readonly unknown[]): Promise<number> {
    return this.mutex.run(async () => {
      await this.writesAllowed();
      return this.conn.run(sql, params);
    });
  }

  /** Once no WAL restart is in progress: a write meanwhile would wait for the checkpoint's lock on the event loop. */
  private async writesAllowed(): Promise<void> {
    while (this.restarting) await this.restarting;
  }

  /**
   * Group commit: the transactions waiting for the connection run together,
   * each in a savepoint of one SQLite transaction, and are answered after its
   * one COMMIT. A transaction that throws is rolled back to its savepoint
   * (nothing of it stays, the others are unaffected); a failed COMMIT fails
   * them all. A commit costs most of a small transaction, so under load this
   * does the same writes for a fraction of the commits.
   *
   * A transaction starts at the end of the current turn of the event loop
   * (setImmediate), so the transactions of every call that turn served go
   * together. Code that waits for a commit must therefore let the event loop
   * turn (a timer, I/O), not spin on promises alone: the driver is
   * synchronous, so a loop of awaited reads never yields to it.
   */
  transaction<T>(fn: (tx: SqlConn) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      // At the end of this turn of the event loop, so the transactions of every call it served go together.
      if (this.waiting.length === 1) setImmediate(() => void this.mutex.run(() => this.commitWaiting()));
    });
  }

  private async commitWaiting(): Promise<void> {
    await this.writesAllowed();
    let batch = this.waiting.splice(0, MAX_GROUP);
    if (batch.length === 0) return;
    const outcomes: ({ ok: true; value: unknown } | { ok: false; error: unknown })[] = [];
    /** Each transaction's afterCommit hooks; those of one rolled back to its savepoint are dropped. */
    const hooks: (() => void)[][] = [];
    const began = performance.now();
    try {
      // IMMEDIATE takes the write lock at once: no deadlock upgrading a read lock.
      this.exec("BEGIN IMMEDIATE");
      for (let i = 0; i < batch.length; i++) {
        // The driver is synchronous: a group holds the event loop until its COMMIT. Past MAX_GROUP_MS the
        // rest waits for the next group, after the event loop has turned (I/O, timers, other calls).
        if (i > 0 && performance.now() - began > MAX_GROUP_MS) {
          this.waiting.unshift(...batch.slice(i));
          batch = batch.slice(0, i);
          break;
        }
        this.exec("SAVEPOINT tx");
        const own: (() => void)[] = [];
        hooks.push(own);
        try {
          const value = await batch[i]!.fn({ ...this.conn, afterCommit: (hook) => own.push(hook) });
          this.exec("RELEASE tx");
          outcomes.push({ ok: true, value });
        } catch (error) {
          // SQLite rolled the whole transaction back (an I/O error, a full disk): nothing of the batch stays.
          if (!this.db.inTransaction) throw error;
          this.exec("ROLLBACK TO tx");
          this.exec("RELEASE tx");
          own.length = 0;
          outcomes.push({ ok: false, error });
        }
      }
      this.exec("COMMIT");
    } catch (error) {
      // Nothing of this batch is committed: every caller fails (none has been answered yet).
      if (this.db.inTransaction) this.exec("ROLLBACK");
      for (const t of batch) t.reject(error);
      this.scheduleNext();
      return;
    }
    this.scheduleNext();
    for (const h of hooks) runHooks(h);
    batch.forEach((t, i) => {
      const o = outcomes[i]!;
      if (o.ok) t.resolve(o.value);
      else t.reject(o.error);
    });
    this.startWalRestart();
  }

  /**
   * Right after a commit, with nothing open on the connection: the
   * checkpointer's thread restarts the WAL from its beginning. Until it is
   * done, every write on this connection waits (before it starts: a
   * statement that met the checkpoint's lock would wait for it synchronously,
   * holding the event loop), while reads go on. So the copying and syncing
   * the restart does are off the event loop: under writes faster than
   * PASSIVE copies (pruning 1,000,000 events) they took 150–350 ms, which on
   * this connection stalled the event loop as long.
   */
  private startWalRestart(): void {
    if (!this.restartDue || !this.checkpointer || this.restarting) return;
    this.restartDue = false;
    this.restarting = this.checkpointer.restart({ busyTimeoutMs: this.walRestartBusyMs }).then((restarted) => {
      // Busy (another connection reading), or no answer: the next report asks again.
      if (restarted) this.walRestarts++;
      else this.walRestartsBusy++;
      this.restarting = undefined;
    });
  }

  /** The next group, once the event loop has turned; called with the group just committed out of the way. */
  private scheduleNext(): void {
    if (this.waiting.length > 0) setImmediate(() => void this.mutex.run(() => this.commitWaiting()));
  }

  async close(): Promise<void> {
    await this.mutex.run(async () => {
      this.statements.clear();
      this.db.close();
    });
    await this.checkpointer?.close();
  }
}

/** PostgreSQL error codes after which the whole transaction may simply be run again. */
const RETRY_CODES = new Set(["40001", "40P01"]);

export interface PostgresOptions {
  /** Connections in the pool. By default, 10. */
  poolSize?: number;
  /** How often a transaction aborted for a deadlock or serialization failure is run again. By default, 5. */
  maxTxRetries?: number;
}

/** Names prepared statements so PostgreSQL parses and plans each only once per connection. */
class StatementNames {
  private readonly names = new Map<string, string>();
  name(sql: string, paramCount: number): string | undefined {
    // Multi-row statements vary in length with their batch: not worth a name each.
    if (paramCount > 64) return undefined;
    let n = this.names.get(sql);
    if (n === undefined) {
      if (this.names.size >= 500) return undefined; // dynamic text: run unnamed
      n = `lpb_${this.names.size}`;
      this.names.set(sql, n);
    }
    return n;
  }
}

function pgConn(client: pg.Pool | pg.PoolClient, names: StatementNames): SqlConn {
  const query = async (sql: string, params: readonly unknown[] = []) => {
    const name = names.name(sql, params.length);
    return client.query({ text: sql, values: params as unknown[], ...(name ? { name } : {}) });
  };
  return {
    dialect: "postgresql",
    all: async <R>(sql: string, params?: readonly unknown[]) => (await query(sql, params)).rows as R[],
    run: async (sql: string, params?: readonly unknown[]) => (await query(sql, params)).rowCount ?? 0,
  };
}

/** The PostgreSQL driver: a pool. */
export class PostgresDatabase implements SqlDatabase {
  readonly dialect = "postgresql" as const;
  readonly pool: pg.Pool;
  private readonly names = new StatementNames();
  private readonly conn: SqlConn;
  private readonly maxTxRetries: number;

  constructor(url: string, options: PostgresOptions = {}) {
    this.pool = new pg.Pool({ connectionString: url, max: options.poolSize ?? 10 });
    // An idle client that loses its connection emits here; the pool replaces it.
    this.pool.on("error", () => undefined);
    this.conn = pgConn(this.pool, this.names);
    this.maxTxRetries = options.maxTxRetries ?? 5;
  }

  all<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<R[]> {
    return this.conn.all<R>(sql, params);
  }

  run(sql: string, params?: readonly unknown[]): Promise<number> {
    return this.conn.run(sql, params);
  }

  async transaction<T>(fn: (tx: SqlConn) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const client = await this.pool.connect();
      let broken = false;
      try {
        await client.query("BEGIN");
        const hooks: (() => void)[] = [];
        const result = await fn({ ...pgConn(client, this.names), afterCommit: (hook) => hooks.push(hook) });
        await client.query("COMMIT");
        runHooks(hooks);
        return result;
      } catch (err) {
        try {
          await client.query("ROLLBACK");
        } catch {
          broken = true; // the connection itself failed: do not return it to the pool
        }
        const code = (err as { code?: unknown }).code;
        if (attempt < this.maxTxRetries && typeof code === "string" && RETRY_CODES.has(code)) continue;
        throw err;
      } finally {
        client.release(broken);
      }
    }
  }

  async close(): Promise<void> {
    // Prisma's adapter ends the pool it was given when its client disconnects.
    if (!this.pool.ended) await this.pool.end();
  }
}

/** `column IN (list)` for a list parameter `$n`, in the connection's dialect. */
export function inList(conn: SqlConn, column: string, n: number): string {
  return conn.dialect === "postgresql" ? `${column} = ANY($${n})` : `${column} IN (SELECT value FROM json_each($${n}))`;
}

/**
 * A constant list as SQL literals, e.g. ('REQUESTED', 'ACTIVE'): a partial
 * index is used only when the query's condition names its values literally
 * (a list parameter cannot prove it). Only for the broker's own constants.
 */
export function literalList(values: readonly string[]): string {
  return `(${values.map((v) => `'${v.replace(/'/g, "''")}'`).join(", ")})`;
}

/** A list parameter for `inList`. */
export function listParam(conn: SqlConn, values: readonly (string | number)[]): unknown {
  return conn.dialect === "postgresql" ? values : JSON.stringify(values);
}

/** Row locks for a select that is about to update what it reads (PostgreSQL; SQLite locks the database). */
export function forUpdate(conn: SqlConn, skipLocked = false): string {
  return conn.dialect === "postgresql" ? (skipLocked ? " FOR UPDATE SKIP LOCKED" : " FOR UPDATE") : "";
}

// PostgreSQL accepts at most 65535 parameters per statement; SQLite 32766.
const MAX_PARAMS = 30_000;
/** SQLite: rows per multi-row statement (few distinct statements to prepare and cache). */
const SQLITE_ROWS = 64;

/**
 * Inserts rows into `table` with multi-row VALUES: on PostgreSQL as few round
 * trips as the parameter limit allows; on SQLite chunks of SQLITE_ROWS, so
 * the statements stay few and prepared once.
 */
export async function insertRows(conn: SqlConn, table: string, columns: readonly string[], rows: readonly (readonly unknown[])[]): Promise<void> {
  if (rows.length === 0) return;
  const cols = columns.map((c) => `"${c}"`).join(", ");
  const perStatement = conn.dialect === "sqlite" ? SQLITE_ROWS : Math.max(1, Math.floor(MAX_PARAMS / columns.length));
  for (let start = 0; start < rows.length; start += perStatement) {
    const chunk = rows.slice(start, start + perStatement);
    const values: unknown[] = [];
    const tuples = chunk.map((row) => {
      const base = values.length;
      values.push(...row);
      return `(${row.map((_, i) => `$${base + i + 1}`).join(", ")})`;
    });
    await conn.run(`INSERT INTO "${table}" (${cols}) VALUES ${tuples.join(", ")}`, values);
  }
}
