/**
 * The statements behind ListAgents (src/store/prisma-listing.ts) are answered
 * from the composite indexes on both databases, on data shaped as a broker
 * accumulates it: time-ordered ids, the ended delegations old and many, the
 * live ones the newest. On that data PostgreSQL answered the previous
 * statement (`state = $1 ORDER BY id LIMIT n`) by walking the primary key and
 * filtering on state, reading every ended delegation before the first ACTIVE
 * one; this test fails if a statement goes back to a plan like that (the
 * primary key, a sequential scan, or a sort of every match).
 */
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DelegationState } from "../../src/domain/index.js";
import { migrate } from "../../src/store/migrate.js";
import { ACTIVE_FROM_CONTEXT } from "../../src/store/ceremony-sql.js";
import { EXPIRY_DUE, appendFromRowsSql, liveFromContexts } from "../../src/store/lifecycle-sql.js";
import { countQuery, pageQuery } from "../../src/store/prisma-listing.js";
import { DELEGATION_COLUMNS, delegationValues } from "../../src/store/rows.js";
import { PostgresDatabase, type SqlConn, type SqlDatabase, SqliteDatabase, insertRows } from "../../src/store/sql.js";
import type { ListQuery } from "../../src/store/store.js";
import { benchDelegation } from "../../bench/lib/seed.js";
import { DRIVERS, type TestDatabase, createTestDatabase } from "../helpers/databases.js";

const N = 20_000;
const ALICE = "did:web:example.com/user/alice";

function stateOf(i: number): DelegationState {
  if (i > N * 0.9) return i % 5 === 0 ? "EXPIRED" : "ACTIVE";
  return i % 7 === 0 ? "REVOKED" : "EXPIRED";
}

const idOf = (i: number) => `del_${String(i).padStart(26, "0")}`;

describe.each(DRIVERS)("ListAgents statements use the indexes (%s)", (driver) => {
  let tdb: TestDatabase;

  beforeAll(async () => {
    tdb = await createTestDatabase(driver);
    await migrate(tdb.url);
    const db: SqlDatabase = driver === "sqlite" ? new SqliteDatabase(tdb.url.slice("file:".length)) : new PostgresDatabase(tdb.url, { poolSize: 1 });
    try {
      for (let start = 1; start <= N; start += 5_000) {
        const rows: unknown[][] = [];
        for (let i = start; i < start + 5_000; i++) {
          rows.push(delegationValues(benchDelegation(i, { state: stateOf(i), delegatorDid: i % 10 === 3 ? ALICE : `did:web:example.com/user/u${i % 100}` })));
        }
        await db.transaction((tx) => insertRows(tx, "delegations", DELEGATION_COLUMNS, rows));
      }
      // The state autovacuum keeps a table in; SQLite is left without statistics, as the broker leaves it.
      if (driver === "postgresql") await db.run(`VACUUM ANALYZE "delegations"`);
    } finally {
      await db.close();
    }
  }, 120_000);
  afterAll(async () => {
    await tdb?.drop();
  });

  async function plan(statement: { sql: string; text: string; values: unknown[] }): Promise<string> {
    if (driver === "sqlite") {
      const db = new Database(tdb.url.slice("file:".length), { readonly: true });
      try {
        return (db.prepare(`EXPLAIN QUERY PLAN ${statement.sql}`).all(...statement.values) as { detail: string }[]).map((r) => r.detail).join("\n");
      } finally {
        db.close();
      }
    }
    const c = new pg.Client({ connectionString: tdb.url });
    await c.connect();
    try {
      return (await c.query(`EXPLAIN ${statement.text}`, statement.values)).rows.map((r: Record<string, string>) => r["QUERY PLAN"]).join("\n");
    } finally {
      await c.end();
    }
  }

  const cases: [string, ListQuery, string][] = [
    ["first ACTIVE page", { state: "ACTIVE", limit: 51 }, "delegations_state_id_idx"],
    ["deep ACTIVE page", { state: "ACTIVE", afterId: idOf(19_500), limit: 51 }, "delegations_state_id_idx"],
    ["first EXPIRED page", { state: "EXPIRED", limit: 51 }, "delegations_state_id_idx"],
    ["deep EXPIRED page", { state: "EXPIRED", afterId: idOf(15_000), limit: 51 }, "delegations_state_id_idx"],
    ["first ACTIVE page of a delegator", { state: "ACTIVE", delegatorDid: ALICE, limit: 51 }, "delegations_delegator_did_state_id_idx"],
    ["deep ACTIVE page of a delegator", { state: "ACTIVE", delegatorDid: ALICE, afterId: idOf(19_000), limit: 51 }, "delegations_delegator_did_state_id_idx"],
    ["first EXPIRED page of a delegator", { state: "EXPIRED", delegatorDid: ALICE, limit: 51 }, "delegations_delegator_did_state_id_idx"],
    ["deep EXPIRED page of a delegator", { state: "EXPIRED", delegatorDid: ALICE, afterId: idOf(15_000), limit: 51 }, "delegations_delegator_did_state_id_idx"],
  ];

  it.each(cases)("the %s is a range of its composite index, in index order", async (_, query, index) => {
    const p = await plan(pageQuery(query));
    expect(p).toContain(index);
    if (driver === "sqlite") {
      // A range search from the cursor (the row comparison bounds it), no sort.
      expect(p).toMatch(new RegExp(`SEARCH delegations USING INDEX ${index} \\(.*\\(state,id\\)>\\(\\?,\\?\\)`));
      expect(p).not.toContain("TEMP B-TREE");
    } else {
      expect(p).toMatch(new RegExp(`Index Scan using ${index} on delegations`));
      expect(p).toMatch(/Index Cond: .*ROW\(state, id\) > ROW/);
      expect(p).not.toMatch(/delegations_pkey|Seq Scan|Sort/);
    }
  });

  it.each([
    ["every delegator", { state: "ACTIVE", limit: 51 } as ListQuery],
    ["one delegator", { state: "EXPIRED", delegatorDid: ALICE, limit: 51 } as ListQuery],
  ])("the count of %s reads an index only", async (_, query) => {
    const p = await plan(countQuery(query));
    if (driver === "sqlite") expect(p).toMatch(/USING COVERING INDEX/);
    else {
      expect(p).toMatch(/Index Only Scan/);
      expect(p).not.toMatch(/Seq Scan/);
    }
  });

  it("the live checks' lookup of one context's ACTIVE delegations searches its (delegator_ac_id, state) index", async () => {
    const p = await plan({ sql: ACTIVE_FROM_CONTEXT.replace(/\$\d+/g, "?"), text: ACTIVE_FROM_CONTEXT, values: ["ac-other"] });
    if (driver === "sqlite") expect(p).toMatch(/SEARCH delegations USING INDEX delegations_delegator_ac_id_state_idx \(delegator_ac_id=\? AND state=\?\)/);
    else {
      expect(p).toMatch(/delegations_live_delegator_ac_id_state_idx/);
      expect(p).not.toMatch(/Seq Scan|delegations_state_id_idx/);
    }
  });

  it("expiry reads the due ACTIVE delegations, and the next expire time, from the partial index in expiry order", async () => {
    const due = await plan({ sql: EXPIRY_DUE.replace(/\$\d+/g, "?"), text: EXPIRY_DUE, values: [Date.now() + 86_400_000 * 2, 500] });
    const next = `SELECT MIN("expire_time") AS "t" FROM "delegations" WHERE "state" = 'ACTIVE'`;
    const first = await plan({ sql: next, text: next, values: [] });
    if (driver === "sqlite") {
      expect(due).toMatch(/SEARCH delegations USING COVERING INDEX delegations_active_expire_time_id_idx \(state=\? AND expire_time<\?\)/);
      expect(due).not.toMatch(/TEMP B-TREE/);
      expect(first).toMatch(/delegations_active_expire_time_id_idx/);
    } else {
      for (const p of [due, first]) {
        expect(p).toMatch(/delegations_active_expire_time_id_idx/);
        expect(p).not.toMatch(/Seq Scan|Sort/);
      }
    }
  });

  // Every delegation of this table has the same delegator context ("ac-bench", one human with 20,000 agents), so
  // the statistics say any context matches every row: a statement the planner cannot see the values of would scan.
  it.runIf(driver === "postgresql")("a cascade finds the live delegations made from its contexts in the partial index", async () => {
    const sql = liveFromContexts({ dialect: "postgresql" } as SqlConn);
    const contexts = Array.from({ length: 2000 }, (_, i) => `ac-dev-${idOf(i + 1)}`);
    const p = await plan({ sql, text: sql, values: [contexts] });
    expect(p).toMatch(/delegations_live_delegator_ac_id_state_idx/);
    expect(p).not.toMatch(/Seq Scan/);
  });

  it.runIf(driver === "postgresql")("a large append finds each delegation's row by its key", async () => {
    const ids = Array.from({ length: 2000 }, (_, i) => idOf(N - i));
    const sql = appendFromRowsSql();
    const p = await plan({ sql, text: sql, values: [ids.length, Date.now(), ids, ids.map(() => "EXPIRED"), ids.map(() => "ttl_elapsed"), ids.map(() => "")] });
    expect(p).toMatch(/Index Scan using delegations_pkey on delegations x/);
    expect(p).not.toMatch(/Seq Scan on delegations|Hash Join/);
  });
});
