/**
 * ListAgents at scale: N delegations (1,000, 100,000 and 1,000,000 by
 * default) seeded straight into the database, the broker in its own process
 * (from the sources), and ListAgents called over gRPC one call at a time:
 *
 * - the first page (page_size 50): the page and the one count of the listing,
 * - page 21 (20 tokens followed), and a deep seek (a token 90% of the way
 *   through the matches): the page only, the count rides in the token,
 * - the same deep page with a token of the previous format (no count), which
 *   counts again as every page did before,
 * - filtered by state ACTIVE and EXPIRED (admin, every delegator), and by a
 *   delegator who owns a tenth of all rows,
 * - GetDelegation of random delegations, at the same size.
 *
 * The data is shaped as a broker accumulates it: ids are time-ordered and
 * ended delegations are never deleted, so the oldest 90% have ended (mostly
 * EXPIRED, some REVOKED and FAILED) and the live ones are the newest (of the
 * newest 10%, four in five ACTIVE). A tenth of the rows are alice's, the
 * rest spread over 1,000 delegators. PostgreSQL is VACUUM ANALYZEd after
 * seeding (the state autovacuum keeps it in); SQLite is left as the broker
 * leaves it (no ANALYZE).
 *
 * It prints the query plans of the statements the listing runs (EXPLAIN
 * QUERY PLAN / EXPLAIN on the same database, with each case's parameters),
 * then a table and a one-line JSON summary.
 *
 *   npx tsx bench/list-scale.ts
 *   LIST_SIZES=1000,20000 LIST_DRIVERS=sqlite npx tsx bench/list-scale.ts
 *
 * LIST_SAMPLES (default 200) calls per case after LIST_WARMUP (default 20);
 * LIST_PG_ANALYZE=0 skips the VACUUM ANALYZE.
 */
import { loadavg } from "node:os";
import Database from "better-sqlite3";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { encodePageToken } from "../src/delegation/page-token.js";
import type { Delegation, DelegationState } from "../src/domain/index.js";
import { DelegationState as StateEnum } from "../src/gen/llmbroker/v1/delegation_pb.js";
import { DelegationService } from "../src/gen/llmbroker/v1/delegation_service_pb.js";
import { migrate } from "../src/store/migrate.js";
import { countQuery, pageQuery } from "../src/store/prisma-listing.js";
import { DELEGATION_COLUMNS, delegationValues } from "../src/store/rows.js";
import { PostgresDatabase, type SqlDatabase, SqliteDatabase, insertRows } from "../src/store/sql.js";
import type { ListQuery } from "../src/store/store.js";
import { type Driver, createTestDatabase } from "../test/helpers/databases.js";
import { benchDelegation } from "./lib/seed.js";
import { killAllServers, startServerProcess } from "./lib/server-process.js";
import { summarize } from "./lib/stats.js";
import { envNumber } from "./lib/env.js";

const SIZES = (process.env.LIST_SIZES ?? "1000,100000,1000000").split(",").map(Number);
const DRIVERS = (process.env.LIST_DRIVERS ?? "sqlite,postgresql").split(",") as Driver[];
const SAMPLES = envNumber("LIST_SAMPLES", 200, 1, 1_000_000, { integer: true });
const WARMUP = envNumber("LIST_WARMUP", 20, 0, 1_000_000, { integer: true });
const PAGE = 50;
const ALICE = "did:web:example.com/user/alice";
const DAY = 24 * 3600_000;

process.on("SIGINT", () => {
  killAllServers();
  process.exit(130);
});

/** The state of the i-th delegation (1-based, in id order) of n. */
function stateOf(i: number, n: number): DelegationState {
  if (i > n * 0.9) return i % 5 === 0 ? "EXPIRED" : "ACTIVE";
  if (i % 50 === 0) return "FAILED";
  return i % 7 === 0 ? "REVOKED" : "EXPIRED";
}

function delegatorOf(i: number): string {
  return i % 10 === 3 ? ALICE : `did:web:example.com/user/u${i % 1000}`;
}

function delegation(i: number, n: number, now: number): Delegation {
  const state = stateOf(i, n);
  const t = now - 30 * DAY + Math.floor((i / n) * 30 * DAY);
  const live = state === "ACTIVE";
  return benchDelegation(i, {
    state,
    delegatorDid: delegatorOf(i),
    delegatorAcId: `ac-${i % 1000}`,
    rootAcId: `ac-${i % 1000}`,
    ceremonyRequiredFor: ["drop"],
    maxCommands: 500,
    createTime: t,
    updateTime: t,
    expireTime: live ? now + DAY : t + 3600_000,
    endTime: live ? null : state === "FAILED" ? t : t + 3600_000,
    endReason: live ? "" : state === "REVOKED" ? "manual_revocation" : state === "FAILED" ? "creation_failed" : i % 5 === 0 ? "command_limit" : "ttl_elapsed",
  });
}

const idOf = (i: number) => `del_${String(i).padStart(26, "0")}`;

async function seed(db: SqlDatabase, n: number): Promise<void> {
  const now = Date.now();
  const batch = 5_000;
  for (let start = 1; start <= n; start += batch) {
    const rows: unknown[][] = [];
    for (let i = start; i < Math.min(n + 1, start + batch); i++) rows.push(delegationValues(delegation(i, n, now)));
    await db.transaction((tx) => insertRows(tx, "delegations", DELEGATION_COLUMNS, rows));
  }
}

interface Case {
  name: string;
  state: DelegationState;
  delegatorDid: string;
  /** first: no token; follow: page 21; seek: 90% through; seek-old: the same, token of the previous format. */
  kind: "first" | "follow" | "seek" | "seek-old";
}

const CASES: Case[] = [];
for (const [state, delegatorDid, who] of [
  ["ACTIVE", "", "all"],
  ["EXPIRED", "", "all"],
  ["ACTIVE", ALICE, "alice"],
  ["EXPIRED", ALICE, "alice"],
] as const) {
  for (const kind of ["first", "follow", "seek", "seek-old"] as const) {
    CASES.push({ name: `${state} ${who} ${kind === "first" ? "first page" : kind === "follow" ? "page 21" : kind === "seek" ? "deep seek" : "deep seek, old token"}`, state, delegatorDid, kind });
  }
}

/** The ids (as 1-based positions) that match a case, and how many. */
function matches(n: number, c: Case): { count: number; at: (fraction: number) => number } {
  const hits: number[] = [];
  for (let i = 1; i <= n; i++) if (stateOf(i, n) === c.state && (c.delegatorDid === "" || delegatorOf(i) === c.delegatorDid)) hits.push(i);
  return { count: hits.length, at: (f) => hits[Math.min(hits.length - 1, Math.floor(hits.length * f))]! };
}

/** The statements the listing runs for a query, with its parameters, in each driver's text. */
function statementsOf(q: ListQuery, withCount: boolean): { label: string; sql: string; text: string; values: unknown[] }[] {
  const page = pageQuery(q);
  const out = [{ label: "page", sql: page.sql, text: page.text, values: page.values }];
  if (withCount) {
    const count = countQuery(q);
    out.push({ label: "count", sql: count.sql, text: count.text, values: count.values });
  }
  return out;
}

/** The statement the listing ran before (Prisma's typed findMany), for comparison. */
function previousPage(q: ListQuery): { sql: string; text: string; values: unknown[] } {
  const conds = [`"state" = $1`];
  const values: unknown[] = [q.state];
  if (q.delegatorDid) conds.push(`"delegator_did" = $${values.push(q.delegatorDid)}`);
  if (q.afterId) conds.push(`"id" > $${values.push(q.afterId)}`);
  const text = `SELECT * FROM "delegations" WHERE ${conds.join(" AND ")} ORDER BY "id" LIMIT ${q.limit}`;
  return { text, sql: text.replace(/\$\d+/g, "?"), values };
}

async function explain(driver: Driver, url: string, statement: { sql: string; text: string; values: unknown[] }): Promise<string[]> {
  if (driver === "sqlite") {
    const db = new Database(url.slice("file:".length), { readonly: true });
    try {
      const rows = db.prepare(`EXPLAIN QUERY PLAN ${statement.sql}`).all(...(statement.values as unknown[])) as { detail: string }[];
      return rows.map((r) => r.detail);
    } finally {
      db.close();
    }
  }
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query(`EXPLAIN ${statement.text}`, statement.values);
    return rows.map((r: Record<string, string>) => r["QUERY PLAN"]!.replace(/\s+\(cost=[^)]*\)/, ""));
  } finally {
    await c.end();
  }
}

/** Milliseconds of the statement run directly on the database (the p50 of a few runs). */
async function direct(db: SqlDatabase, statement: { text: string; values: unknown[] }, runs = 7): Promise<number> {
  const times: number[] = [];
  for (let k = 0; k < runs + 1; k++) {
    const t0 = performance.now();
    await db.all(statement.text, statement.values);
    if (k > 0) times.push(performance.now() - t0);
  }
  return summarize(times).p50Ms;
}

interface CaseResult {
  name: string;
  total: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The broker's event-loop delay, max, while the case ran. */
  loopMaxMs: number;
}

interface BrokerStats {
  eventLoopDelayMs: { max: number };
}

async function run(driver: Driver, n: number) {
  const tdb = await createTestDatabase(driver);
  try {
    await migrate(tdb.url);
    const open = (): SqlDatabase =>
      driver === "sqlite" ? new SqliteDatabase(tdb.url.slice("file:".length)) : new PostgresDatabase(tdb.url, { poolSize: 2 });
    const seeder = open();
    const s0 = performance.now();
    await seed(seeder, n);
    if (driver === "postgresql" && process.env.LIST_PG_ANALYZE !== "0") await seeder.run(`VACUUM ANALYZE "delegations"`);
    // Closing checkpoints SQLite's WAL into the database (truncating it): the broker starts on a
    // settled database, as one that has been running, not on a WAL of the whole seed.
    await seeder.close();
    const seedS = (performance.now() - s0) / 1000;
    // For the statements run directly (reads only).
    const db: SqlDatabase =
      driver === "sqlite" ? new SqliteDatabase(tdb.url.slice("file:".length), { checkpointOffThread: false }) : new PostgresDatabase(tdb.url, { poolSize: 1 });

    const server = await startServerProcess("broker.ts", { env: { BENCH_DATABASE_URL: tdb.url }, startTimeoutMs: 600_000 });
    const client = createClient(DelegationService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.ready.grpcPort}` }));
    // No x-delegator-did: dev mode's local operator, an admin, lists every delegator's.
    const list = (state: DelegationState, delegatorDid: string, pageToken: string) =>
      client.listAgents({ state: StateEnum[state], delegatorDid, pageSize: PAGE, pageToken });

    const results: CaseResult[] = [];
    const plans: { name: string; statement: string; plan: string[] }[] = [];
    const previous: { name: string; plan: string[]; ms: number; nowMs: number }[] = [];
    for (const c of CASES) {
      const m = matches(n, c);
      let token = "";
      let afterId: string | undefined;
      if (c.kind === "follow") {
        let page = await list(c.state, c.delegatorDid, "");
        for (let k = 0; k < 20 && page.nextPageToken !== ""; k++) page = await list(c.state, c.delegatorDid, page.nextPageToken);
        token = page.nextPageToken;
        // The cursor of that token: the last id of page 20.
        if (token !== "") afterId = (JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { a: string }).a;
      } else if (c.kind === "seek" || c.kind === "seek-old") {
        afterId = idOf(m.at(0.9));
        const filter = { s: c.state, d: c.delegatorDid };
        token =
          c.kind === "seek"
            ? encodePageToken(afterId, filter, m.count)
            : Buffer.from(JSON.stringify({ v: 1, a: afterId, s: c.state, d: c.delegatorDid })).toString("base64url");
      }
      if (c.kind !== "first" && token === "") {
        results.push({ name: c.name, total: m.count, p50Ms: Number.NaN, p99Ms: Number.NaN, maxMs: Number.NaN, loopMaxMs: Number.NaN });
        continue;
      }
      const check = await list(c.state, c.delegatorDid, token);
      if (check.totalSize !== m.count) throw new Error(`${c.name}: total_size ${check.totalSize}, expected ${m.count}`);
      if (c.kind === "first" && check.delegations.length !== Math.min(PAGE, m.count)) throw new Error(`${c.name}: ${check.delegations.length} delegations`);
      if (afterId !== undefined && check.delegations.some((d) => d.delegationId <= afterId! || d.state !== StateEnum[c.state])) {
        throw new Error(`${c.name}: a delegation out of place`);
      }
      for (let k = 0; k < WARMUP; k++) await list(c.state, c.delegatorDid, token);
      server.tell({ type: "stats-reset" });
      const times: number[] = [];
      for (let k = 0; k < SAMPLES; k++) {
        const t0 = performance.now();
        await list(c.state, c.delegatorDid, token);
        times.push(performance.now() - t0);
      }
      const s = summarize(times);
      const loop = await server.ask<BrokerStats>({ type: "stats" }, "stats");
      results.push({ name: c.name, total: m.count, p50Ms: +s.p50Ms.toFixed(2), p99Ms: +s.p99Ms.toFixed(2), maxMs: +s.maxMs.toFixed(2), loopMaxMs: +loop.eventLoopDelayMs.max.toFixed(1) });

      const q: ListQuery = { state: c.state, ...(c.delegatorDid ? { delegatorDid: c.delegatorDid } : {}), ...(afterId ? { afterId } : {}), limit: PAGE + 1 };
      if (c.kind !== "seek-old") {
        for (const st of statementsOf(q, c.kind === "first")) plans.push({ name: c.name, statement: st.label, plan: await explain(driver, tdb.url, st) });
      }
      if (c.kind === "first" || c.kind === "seek") {
        const before = previousPage(q);
        previous.push({ name: c.name, plan: await explain(driver, tdb.url, before), ms: +(await direct(db, before)).toFixed(2), nowMs: +(await direct(db, pageQuery(q))).toFixed(2) });
      }
    }

    // GetDelegation of random delegations (a fixed sequence), as their delegators.
    let seedRand = 42;
    const rand = () => ((seedRand = (seedRand * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const get = async () => {
      const i = 1 + Math.floor(rand() * n);
      await client.getDelegation({ delegationId: idOf(i) }, { headers: { "x-delegator-did": delegatorOf(i) } });
    };
    for (let k = 0; k < WARMUP; k++) await get();
    server.tell({ type: "stats-reset" });
    const getTimes: number[] = [];
    for (let k = 0; k < SAMPLES; k++) {
      const t0 = performance.now();
      await get();
      getTimes.push(performance.now() - t0);
    }
    const g = summarize(getTimes);
    const loop = await server.ask<BrokerStats>({ type: "stats" }, "stats");
    results.push({ name: "GetDelegation (random)", total: 1, p50Ms: +g.p50Ms.toFixed(2), p99Ms: +g.p99Ms.toFixed(2), maxMs: +g.maxMs.toFixed(2), loopMaxMs: +loop.eventLoopDelayMs.max.toFixed(1) });

    // The counts on their own, run directly: what the first page pays once per listing.
    const counts: { name: string; ms: number }[] = [];
    for (const [state, did, who] of [["ACTIVE", "", "all"], ["EXPIRED", "", "all"], ["ACTIVE", ALICE, "alice"], ["EXPIRED", ALICE, "alice"]] as const) {
      const q: ListQuery = { state, ...(did ? { delegatorDid: did } : {}), limit: PAGE + 1 };
      counts.push({ name: `count ${state} ${who}`, ms: +(await direct(db, countQuery(q))).toFixed(2) });
    }

    await server.stop();
    await db.close();
    return { driver, n, seedS: +seedS.toFixed(1), results, plans, previous, counts };
  } finally {
    await tdb.drop();
  }
}

type RunResult = Awaited<ReturnType<typeof run>>;

function printPlans(r: RunResult): void {
  console.log(`\n${r.driver}, ${r.n.toLocaleString("en-US")} delegations: query plans`);
  for (const p of r.plans) console.log(`  ${p.name} [${p.statement}]: ${p.plan.map((l) => l.trim()).join(" | ")}`);
  console.log(`  the previous statement (Prisma's findMany: state = ? [AND delegator_did = ?] [AND id > ?] ORDER BY id), run directly, vs the new one:`);
  for (const p of r.previous) console.log(`  ${p.name}: ${p.ms} ms (now ${p.nowMs} ms): ${p.plan.map((l) => l.trim()).join(" | ")}`);
  console.log(`  counts, run directly: ${r.counts.map((c) => `${c.name} ${c.ms} ms`).join("; ")}`);
}

function printTable(all: RunResult[]): void {
  const drivers = [...new Set(all.map((r) => r.driver))];
  const sizes = [...new Set(all.map((r) => r.n))];
  const names = all[0]!.results.map((x) => x.name);
  const header = ["case", ...drivers.flatMap((d) => sizes.map((n) => `${d} ${n.toLocaleString("en-US")} p50/p99 ms`))];
  console.log(`\n| ${header.join(" | ")} |`);
  console.log(`|${header.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`);
  for (const name of names) {
    const cells = drivers.flatMap((d) =>
      sizes.map((n) => {
        const x = all.find((r) => r.driver === d && r.n === n)?.results.find((y) => y.name === name);
        return !x ? "" : Number.isNaN(x.p50Ms) ? "n/a" : `${x.p50Ms} / ${x.p99Ms}`;
      }),
    );
    console.log(`| ${name} | ${cells.join(" | ")} |`);
  }
  console.log(`\nmatches per case: ${all.map((r) => `${r.driver} ${r.n}: ${r.results.filter((x) => x.name.endsWith("first page")).map((x) => `${x.name.replace(" first page", "")} ${x.total}`).join(", ")}`).join("; ")}`);
}

try {
  console.log(`ListAgents at scale: sizes ${SIZES.join(", ")}; drivers ${DRIVERS.join(", ")}; ${SAMPLES} calls per case; node ${process.version}; load ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  const all: RunResult[] = [];
  for (const d of DRIVERS) {
    for (const n of SIZES) {
      const r = await run(d, n);
      all.push(r);
      console.log(
        `${d} ${n}: seeded in ${r.seedS} s; ${r.results.map((x) => `${x.name} ${x.p50Ms}/${x.p99Ms}/max ${x.maxMs} ms (broker loop max ${x.loopMaxMs} ms)`).join("; ")}`,
      );
      printPlans(r);
    }
  }
  printTable(all);
  console.log(
    JSON.stringify({
      bench: "list-scale",
      pageSize: PAGE,
      samples: SAMPLES,
      runs: all.map((r) => ({ driver: r.driver, n: r.n, seedS: r.seedS, cases: r.results, counts: r.counts, previous: r.previous.map(({ name, ms, nowMs }) => ({ name, ms, nowMs })) })),
      loadavg: loadavg().map((x) => +x.toFixed(2)),
    }),
  );
} finally {
  killAllServers();
}
