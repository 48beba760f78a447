/**
 * Start-up and event-log pruning at scale: a database with N delegations
 * (1,000,000 by default; a tenth ACTIVE) and one event each, half of them
 * older than the retention, seeded straight into the database. Measures how
 * long the broker takes to listen, how long the reconciler takes to prune
 * the old half, the broker's event-loop delay meanwhile, and the latency of
 * GetDelegation calls made while it prunes.
 *
 *   npx tsx bench/prune-startup.ts
 *   PRUNE_N=200000 PRUNE_DRIVERS=sqlite npx tsx bench/prune-startup.ts
 */
import { loadavg } from "node:os";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Delegation } from "../src/domain/index.js";
import { DelegationService } from "../src/gen/llmbroker/v1/delegation_service_pb.js";
import { migrate } from "../src/store/migrate.js";
import { DELEGATION_COLUMNS, EVENT_COLUMNS, delegationValues } from "../src/store/rows.js";
import { PostgresDatabase, type SqlDatabase, SqliteDatabase, insertRows } from "../src/store/sql.js";
import { createTestDatabase } from "../test/helpers/databases.js";
import { benchDelegation } from "./lib/seed.js";
import { killAllServers, startServerProcess } from "./lib/server-process.js";
import { summarize } from "./lib/stats.js";
import { envNumber } from "./lib/env.js";

const N = envNumber("PRUNE_N", 1_000_000, 1, 100_000_000, { integer: true });
const drivers = (process.env.PRUNE_DRIVERS ?? "sqlite,postgresql").split(",");
const DAY = 24 * 3600_000;

process.on("SIGINT", () => {
  killAllServers();
  process.exit(130);
});

function delegation(i: number, now: number): Delegation {
  const active = i % 10 === 0;
  return benchDelegation(i, {
    state: active ? "ACTIVE" : "EXPIRED",
    delegatorDid: `did:web:example.com/user/u${i % 1000}`,
    delegatorAcId: `ac-${i % 1000}`,
    ceremonyRequiredFor: ["drop"],
    maxCommands: 500,
    createTime: now - 10 * DAY,
    updateTime: now - 10 * DAY,
    expireTime: active ? now + DAY : now - 9 * DAY,
    endTime: active ? null : now - 9 * DAY,
    endReason: active ? "" : "ttl_elapsed",
  });
}

async function seed(db: SqlDatabase): Promise<void> {
  const now = Date.now();
  const batch = 5_000;
  for (let start = 1; start <= N; start += batch) {
    const ds: unknown[][] = [];
    const es: unknown[][] = [];
    for (let i = start; i < Math.min(N + 1, start + batch); i++) {
      const d = delegation(i, now);
      ds.push(delegationValues(d));
      // The first half of the log is older than the retention (7 days).
      const t = i <= N / 2 ? now - 8 * DAY + i : now - DAY + i;
      // EVENT_COLUMNS: revision … snapshot, chronicle_cid, audit_state, actor (the broker), detail.
      es.push([i, d.id, d.delegatorDid, d.state === "ACTIVE" ? "CREATED" : "EXPIRED", t, "seeded", JSON.stringify(d), "", "", "", ""]);
    }
    await db.transaction(async (tx) => {
      await insertRows(tx, "delegations", DELEGATION_COLUMNS, ds);
      await insertRows(tx, "delegation_events", EVENT_COLUMNS, es);
    });
  }
  // Everything seeded counts as delivered and settled.
  for (const key of ["revision", "cursor:audit", "cursor:idp_delete", "cursor:gsap_revoke"]) {
    await db.run(`UPDATE "broker_meta" SET "value" = $1 WHERE "key" = $2`, [N, key]);
  }
}

interface Stats {
  listeningAfterMs: number;
  eventLoopDelayMs: { max: number; p99: number };
}

async function run(driver: "sqlite" | "postgresql") {
  const tdb = await createTestDatabase(driver);
  try {
    await migrate(tdb.url);
    const db: SqlDatabase = driver === "sqlite" ? new SqliteDatabase(tdb.url.slice("file:".length)) : new PostgresDatabase(tdb.url, { poolSize: 2 });
    const s0 = performance.now();
    await seed(db);
    const seedS = (performance.now() - s0) / 1000;
    if (driver === "postgresql") await db.run(`VACUUM ANALYZE`);

    const started = performance.now();
    const server = await startServerProcess("broker.ts", { env: { BENCH_DATABASE_URL: tdb.url }, startTimeoutMs: 600_000 });
    const startupMs = performance.now() - started;
    const client = createClient(DelegationService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.ready.grpcPort}` }));
    const probe = `del_${String(10).padStart(26, "0")}`;
    const get: number[] = [];
    let pruned = 0;
    const p0 = performance.now();
    while (pruned === 0 || (await count(db)) > N / 2) {
      const t = performance.now();
      await client.getDelegation({ delegationId: probe }, { headers: { "x-delegator-did": "did:web:example.com/user/u10" } });
      get.push(performance.now() - t);
      pruned++;
      await new Promise((r) => setTimeout(r, 20));
      if (performance.now() - p0 > 20 * 60_000) throw new Error("pruning did not finish in 20 minutes");
    }
    const pruneMs = performance.now() - p0;
    const stats = await server.ask<Stats>({ type: "stats" }, "stats");
    await server.stop();
    await db.close();
    const g = summarize(get);
    const result = {
      bench: "prune-startup",
      driver,
      delegations: N,
      events: N,
      seedS: +seedS.toFixed(1),
      startupMs: Math.round(startupMs),
      brokerListeningAfterMs: Math.round(stats.listeningAfterMs),
      prunedHalfWithinMs: Math.round(pruneMs),
      eventLoopDelayMs: { max: +stats.eventLoopDelayMs.max.toFixed(1), p99: +stats.eventLoopDelayMs.p99.toFixed(1) },
      getDuringPruneMs: { p50: +g.p50Ms.toFixed(2), p99: +g.p99Ms.toFixed(2), max: +g.maxMs.toFixed(2), calls: g.count },
      loadavg: loadavg().map((x) => +x.toFixed(2)),
    };
    console.log(
      `${driver}: ${N} delegations and events; process ready in ${result.startupMs} ms (broker listening ${result.brokerListeningAfterMs} ms after it began); ` +
        `old half pruned within ${result.prunedHalfWithinMs} ms; event-loop delay max ${result.eventLoopDelayMs.max} ms; ` +
        `GetDelegation meanwhile p50 ${result.getDuringPruneMs.p50} / p99 ${result.getDuringPruneMs.p99} / max ${result.getDuringPruneMs.max} ms`,
    );
    console.log(JSON.stringify(result));
  } finally {
    await tdb.drop();
  }
}

async function count(db: SqlDatabase): Promise<number> {
  const [row] = await db.all<{ n: number | string }>(`SELECT COUNT(*) AS "n" FROM "delegation_events"`);
  return Number(row!.n);
}

try {
  console.log(`prune and start-up: ${N} delegations; node ${process.version}; load ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  for (const d of drivers) await run(d as "sqlite" | "postgresql");
} finally {
  killAllServers();
}
