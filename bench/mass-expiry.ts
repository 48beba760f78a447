/**
 * Mass expiry: N delegations (100,000 by default) whose expire times fall
 * within a 10-second window, seeded straight into the database, expired by
 * the broker (its own process) while a probe keeps calling it.
 *
 * Reports, per database: expiry lateness (commit time - expire time, as the
 * broker measured each), expirations per second, the broker's event-loop
 * delay during the storm, the probe's GetDelegation / AuthorizeCommand
 * latency (does the broker keep answering?), and when the consequences
 * (identity deletions, GSAP revocations, audit deliveries) had drained.
 *
 *   npx tsx bench/mass-expiry.ts
 *   EXPIRY_N=10000 EXPIRY_DRIVERS=sqlite npx tsx bench/mass-expiry.ts
 */
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Delegation } from "../src/domain/index.js";
import { DelegationService } from "../src/gen/llmbroker/v1/delegation_service_pb.js";
import { DELEGATION_COLUMNS, delegationValues } from "../src/store/rows.js";
import { PostgresDatabase, type SqlDatabase, SqliteDatabase, insertRows } from "../src/store/sql.js";
import { migrate } from "../src/store/migrate.js";
import { createTestDatabase } from "../test/helpers/databases.js";
import { benchDelegation } from "./lib/seed.js";
import { summarize } from "./lib/stats.js";
import { killAllServers, startServerProcess } from "./lib/server-process.js";
import { envNumber } from "./lib/env.js";

const N = envNumber("EXPIRY_N", 100_000, 1, 10_000_000, { integer: true });
const WINDOW_MS = envNumber("EXPIRY_WINDOW_MS", 10_000, 0, 3_600_000, { integer: true });
const LEAD_MS = envNumber("EXPIRY_LEAD_MS", 8_000, 0, 600_000, { integer: true }); // start-up and warm-up before the first is due
const drivers = (process.env.EXPIRY_DRIVERS ?? "sqlite,postgresql").split(",");
const ALICE = "did:web:example.com/user/alice";

process.on("SIGINT", () => {
  killAllServers();
  process.exit(130);
});

function delegation(i: number, expireTime: number, now: number): Delegation {
  return benchDelegation(i, { delegatorDid: ALICE, createTime: now, updateTime: now, expireTime });
}

async function seed(db: SqlDatabase, firstDue: number): Promise<{ probeId: string; lastDue: number }> {
  const now = Date.now();
  let lastDue = 0;
  const batch = 5_000;
  for (let start = 0; start < N; start += batch) {
    const rows: unknown[][] = [];
    for (let i = start; i < Math.min(N, start + batch); i++) {
      const due = firstDue + Math.floor((i / N) * WINDOW_MS);
      lastDue = Math.max(lastDue, due);
      rows.push(delegationValues(delegation(i + 1, due, now)));
    }
    await db.transaction((tx) => insertRows(tx, "delegations", DELEGATION_COLUMNS, rows));
  }
  // The probe's own delegation, which lives on.
  const probe = delegation(0, now + 24 * 3600_000, now);
  await db.transaction((tx) => insertRows(tx, "delegations", DELEGATION_COLUMNS, [delegationValues(probe)]));
  return { probeId: probe.id, lastDue };
}

async function count(db: SqlDatabase, sql: string, params: unknown[] = []): Promise<number> {
  const [row] = await db.all<{ n: number | string }>(sql, params);
  return Number(row?.n ?? 0);
}

interface Stats {
  listeningAfterMs: number;
  eventLoopDelayMs: { max: number; p99: number; mean: number };
  expiryLateness: number[];
}

async function run(driver: string) {
  const tdb = await createTestDatabase(driver as "sqlite" | "postgresql");
  const dir = mkdtempSync(join(tmpdir(), "lpb-expiry-"));
  try {
    await migrate(tdb.url);
    const path = tdb.url.slice("file:".length);
    const db: SqlDatabase = driver === "sqlite" ? new SqliteDatabase(path) : new PostgresDatabase(tdb.url, { poolSize: 2 });
    const seedStart = performance.now();
    const firstDue = Date.now() + LEAD_MS + Math.ceil((N / 20_000) * 1000);
    const { probeId, lastDue } = await seed(db, firstDue);
    const seedS = (performance.now() - seedStart) / 1000;

    const server = await startServerProcess("broker.ts", {
      env: { BENCH_DATABASE_URL: tdb.url, LIMIT_WATCH_STREAMS_PER_PRINCIPAL: "100" },
      startTimeoutMs: 120_000,
      ...(process.env.EXPIRY_CPU_PROFILE_DIR ? { cpuProfileDir: process.env.EXPIRY_CPU_PROFILE_DIR } : {}),
    });
    const channel = createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.ready.grpcPort}` });
    const client = createClient(DelegationService, channel);
    const headers = { "x-delegator-did": ALICE };
    await client.getDelegation({ delegationId: probeId }, { headers });
    const wait = firstDue - Date.now() - 500;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    server.tell({ type: "stats-reset" });
    const cpuBefore = server.cpuSeconds();

    // The probe: one call at a time, every 20 ms, alternating Get and Authorize.
    const probe = { get: [] as number[], authorize: [] as number[], errors: 0 };
    let probing = true;
    const prober = (async () => {
      for (let i = 0; probing; i++) {
        const t0 = performance.now();
        try {
          if (i % 2 === 0) await client.getDelegation({ delegationId: probeId }, { headers });
          else await client.authorizeCommand({ delegationId: probeId, command: "git status" }, { headers });
          (i % 2 === 0 ? probe.get : probe.authorize).push(performance.now() - t0);
        } catch {
          probe.errors++;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    let expiredAt = 0;
    let drainedAt = 0;
    for (;;) {
      await new Promise((r) => setTimeout(r, 250));
      const left = await count(db, `SELECT COUNT(*) AS "n" FROM "delegations" WHERE "state" = 'ACTIVE' AND "expire_time" <= $1`, [lastDue]);
      if (left === 0 && expiredAt === 0) expiredAt = Date.now();
      if (expiredAt > 0) {
        const effects = await count(db, `SELECT COUNT(*) AS "n" FROM "delegation_effects" WHERE "state" = 'pending'`);
        const audit = await count(db, `SELECT COUNT(*) AS "n" FROM "delegation_events" WHERE "audit_state" = 'pending'`);
        if (effects === 0 && audit === 0) {
          drainedAt = Date.now();
          break;
        }
      }
      if (Date.now() > lastDue + 30 * 60_000) throw new Error("expiry did not finish within 30 minutes of the last due time");
    }
    probing = false;
    await prober;
    const stats = await server.ask<Stats>({ type: "stats" }, "stats");
    const cpu = (server.cpuSeconds() ?? Number.NaN) - (cpuBefore ?? Number.NaN);
    const expiredEvents = await count(db, `SELECT COUNT(*) AS "n" FROM "delegation_events" WHERE "type" = 'EXPIRED'`);
    await server.stop();
    await db.close();

    const late = summarize(stats.expiryLateness);
    // EXPIRY_DECILES=1: how lateness moved during the run (the largest of each twentieth of the expiries, in order).
    if (process.env.EXPIRY_DECILES) {
      const l = stats.expiryLateness;
      const step = Math.ceil(l.length / 20);
      const parts: string[] = [];
      for (let i = 0; i < l.length; i += step) parts.push(String(Math.round(Math.max(...l.slice(i, i + step)))));
      console.log(`${driver}: lateness max per twentieth of the expiries, in order: ${parts.join(" ")}`);
    }
    const get = summarize(probe.get);
    const authorize = summarize(probe.authorize);
    const result = {
      bench: "mass-expiry",
      driver,
      n: N,
      windowS: WINDOW_MS / 1000,
      seedS: +seedS.toFixed(1),
      startupMs: Math.round(stats.listeningAfterMs),
      expiredEvents,
      lateness: { p50Ms: late.p50Ms, p99Ms: late.p99Ms, maxMs: late.maxMs },
      lastExpiredAfterLastDueMs: expiredAt - lastDue,
      consequencesDrainedAfterLastDueMs: drainedAt - lastDue,
      eventLoopDelayMs: { max: +stats.eventLoopDelayMs.max.toFixed(1), p99: +stats.eventLoopDelayMs.p99.toFixed(1) },
      probe: {
        getP99Ms: +get.p99Ms.toFixed(1),
        getMaxMs: +get.maxMs.toFixed(1),
        authorizeP99Ms: +authorize.p99Ms.toFixed(1),
        authorizeMaxMs: +authorize.maxMs.toFixed(1),
        calls: get.count + authorize.count,
        errors: probe.errors,
      },
      brokerCpuS: +cpu.toFixed(1),
      loadavg: loadavg().map((x) => +x.toFixed(2)),
    };
    console.log(
      `${driver}: ${N} due within ${WINDOW_MS / 1000} s -> ${expiredEvents} EXPIRED; lateness p50 ${late.p50Ms} ms, p99 ${late.p99Ms} ms, max ${late.maxMs} ms; ` +
        `all expired ${result.lastExpiredAfterLastDueMs} ms after the last due time, consequences drained after ${result.consequencesDrainedAfterLastDueMs} ms; ` +
        `event-loop delay max ${result.eventLoopDelayMs.max} ms (p99 ${result.eventLoopDelayMs.p99}); probe Get p99 ${result.probe.getP99Ms} / max ${result.probe.getMaxMs} ms, ` +
        `Authorize p99 ${result.probe.authorizeP99Ms} / max ${result.probe.authorizeMaxMs} ms (${result.probe.errors} errors); broker CPU ${result.brokerCpuS} s; start-up ${result.startupMs} ms`,
    );
    console.log(JSON.stringify(result));
    return result;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await tdb.drop();
  }
}

try {
  console.log(`mass expiry: ${N} delegations due within ${WINDOW_MS / 1000} s; node ${process.version}; load ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  for (const d of drivers) await run(d);
} finally {
  killAllServers();
}
