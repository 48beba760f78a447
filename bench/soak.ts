/**
 * Soak: the broker (its own process, bench/servers/broker.ts, --expose-gc)
 * under a steady, rate-limited mixed load for SOAK_DURATION_S (600 s by
 * default) from two client processes: unary calls (lib/soak-load.ts:
 * creates with 30-90 s TTLs so delegations keep expiring, gets, authorizes,
 * ceremonies, revokes, ListAgents pages) and Watch streams that connect and
 * disconnect all the time (lib/soak-watchers.ts). A leak and drift test, not
 * a throughput test: the rate leaves the 2 cores headroom.
 *
 * Before the load, the broker's two bounded in-memory structures that grow
 * with the number of delegations ever seen (the AuthorizeCommand policy
 * cache, 10,000 entries, and the dev GSAP driver's record of revocations,
 * 10,000) are filled to their caps with seeded delegations, so that what the
 * heap does afterwards is what the load does to it, not caches filling up.
 *
 * Every SOAK_REPORT_EVERY_S it prints one line: broker memory after a GC,
 * event-loop delay, active handles, CPU, active delegations and watchers,
 * the consequence backlog, per-RPC latency and errors. At the end, the first
 * and last third of the run (after the warm-up) are compared: heap growth
 * per minute, p99 drift, handle drift, with a verdict and a JSON line.
 *
 *   npx tsx bench/soak.ts
 *   SOAK_DURATION_S=40 SOAK_REPORT_EVERY_S=10 npx tsx bench/soak.ts
 *   SOAK_DRIVER=postgresql npx tsx bench/soak.ts
 */
import { type ChildProcess, fork } from "node:child_process";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { DelegationService } from "../src/gen/llmbroker/v1/delegation_service_pb.js";
import { DELEGATION_COLUMNS, delegationValues } from "../src/store/rows.js";
import { migrate } from "../src/store/migrate.js";
import { PostgresDatabase, type SqlDatabase, SqliteDatabase, insertRows } from "../src/store/sql.js";
import { type Driver, type TestDatabase, createTestDatabase } from "../test/helpers/databases.js";
import { benchDelegation } from "./lib/seed.js";
import { type ServerProcess, killAllServers, startServerProcess } from "./lib/server-process.js";
import { type ClientReport, type FromClient, type LoadConfig, type ToClient, type WatchConfig, round, sleep } from "./lib/soak-shared.js";
import { envNumber, envRange } from "./lib/env.js";

// ---------------------------------------------------------------- settings

const DURATION_S = envNumber("SOAK_DURATION_S", 600, 10, 7 * 86_400);
const REPORT_EVERY_S = envNumber("SOAK_REPORT_EVERY_S", 30, 1, 3600);
const DRIVER = (process.env.SOAK_DRIVER ?? "sqlite") as Driver;
if (DRIVER !== "sqlite" && DRIVER !== "postgresql") throw new Error(`SOAK_DRIVER must be sqlite or postgresql, got "${DRIVER}"`);
const RATE = envNumber("SOAK_RATE", 400, 10, 5000);
const CREATES_PER_S = envNumber("SOAK_CREATES_PER_S", 10, 0.1, 500);
const [TTL_MIN_S, TTL_MAX_S] = envRange("SOAK_TTL_S", [30, 90], 1, 86_400);
const REVOKE_SHARE = envNumber("SOAK_REVOKE_SHARE", 0.25, 0, 1);
const WATCHERS = envNumber("SOAK_WATCHERS", 50, 0, 10_000);
const [WATCH_LIFE_MIN_S, WATCH_LIFE_MAX_S] = envRange("SOAK_WATCH_LIFE_S", [5, 20], 0.1, 3600);
/** Seeded delegations that fill the policy cache and the dev GSAP revocation record (both 10,000) before the load. */
const PREFILL = envNumber("SOAK_PREFILL", 10_000, 0, 1_000_000);
/** Until then the live population is still growing toward its steady state (the longest TTL): left out of the comparison. */
const WARMUP_S = envNumber("SOAK_WARMUP_S", Math.min(TTL_MAX_S, Math.floor(DURATION_S / 4)), 0, DURATION_S / 2);
/** Heap growth (after GC) between the first and the last third above which the verdict says leak. See bench/README.md. */
const HEAP_LIMIT_MB_MIN = envNumber("SOAK_HEAP_SLOPE_LIMIT_MB_PER_MIN", 0.25, 0, 1000);
/** RSS moves by tens of MB between samples (allocator, V8 reservations): only a steady climb of this much says native memory leaks. */
const RSS_LIMIT_MB_MIN = envNumber("SOAK_RSS_SLOPE_LIMIT_MB_PER_MIN", 5, 0, 1000);

const PREFILL_DID = "did:web:example.com/user/soak-prefill";
const PREFILL_AC = "ac-soak-prefill";
const MB = 1024 * 1024;

// ---------------------------------------------------------------- processes

interface BrokerStats {
  eventLoopDelayMs: { max: number; p99: number; mean: number };
  memory: { rss: number; heapUsed: number; heapTotal?: number; external: number; arrayBuffers: number };
  watchers: number;
  activeHandles?: number;
  activeRequests?: number;
  activeResources?: Record<string, number>;
  readModelEntries?: number;
}

interface Healthz {
  revision: string;
  watchers: number;
  audit: { pending: number; rejected: number; failing: boolean };
  consequences: Record<"idp_delete" | "gsap_revoke", { pending: number; failing: boolean }>;
  loops: { name: string; failures: number }[];
}

interface Worker {
  name: string;
  child: ChildProcess;
  ask<T extends FromClient["type"]>(m: ToClient, reply: T, timeoutMs?: number): Promise<Extract<FromClient, { type: T }>>;
}

const workers: Worker[] = [];

function startWorker(name: string, file: string): Worker {
  const child = fork(fileURLToPath(new URL(file, import.meta.url)), [], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const w: Worker = {
    name,
    child,
    ask(m, reply, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const on = (msg: FromClient) => {
          if (msg.type !== reply) return;
          clearTimeout(timer);
          child.off("message", on);
          resolve(msg as never);
        };
        const timer = setTimeout(() => {
          child.off("message", on);
          reject(new Error(`${name}: no ${reply} within ${timeoutMs} ms`));
        }, timeoutMs);
        child.on("message", on);
        child.send(m);
      });
    },
  };
  child.once("exit", (code) => {
    if (code !== 0 && code !== null) console.error(`${name} client exited with ${code}`);
  });
  workers.push(w);
  return w;
}

function killWorkers(): void {
  for (const w of workers) if (w.child.exitCode === null) w.child.kill("SIGKILL");
}

// ---------------------------------------------------------------- prefill

async function seedPrefill(url: string): Promise<void> {
  const db: SqlDatabase = DRIVER === "sqlite" ? new SqliteDatabase(url.slice("file:".length)) : new PostgresDatabase(url, { poolSize: 2 });
  try {
    const now = Date.now();
    for (let start = 0; start < PREFILL; start += 5000) {
      const rows: unknown[][] = [];
      for (let i = start; i < Math.min(PREFILL, start + 5000); i++) {
        const id = `del_${String(i + 1).padStart(26, "0")}`;
        // Shaped like the load's own delegations, so the cache entries they leave are the size of the ones that replace them.
        const d = benchDelegation(i + 1, {
          agentType: "soak",
          agentModel: "soak-model",
          agentDid: `did:web:guildhouse.dev/agent/soak-${id}`,
          agentClientId: `stub-agent-soak-${id}`,
          delegatorDid: PREFILL_DID,
          delegatorAcId: PREFILL_AC,
          rootAcId: PREFILL_AC,
          capabilityCeiling: "CAP_MUTATE",
          prohibitedCommands: ["rm -rf"],
          ceremonyRequiredFor: ["delete", "destroy", "drop"],
          maxCommands: 500,
          createTime: now,
          updateTime: now,
          expireTime: now + 3600_000,
        });
        rows.push(delegationValues(d));
      }
      await db.transaction((tx) => insertRows(tx, "delegations", DELEGATION_COLUMNS, rows));
    }
  } finally {
    await db.close();
  }
}

async function healthz(webPort: number): Promise<Healthz> {
  const res = await fetch(`http://127.0.0.1:${webPort}/healthz`);
  return (await res.json()) as Healthz;
}

const backlogOf = (h: Healthz) => h.consequences.idp_delete.pending + h.consequences.gsap_revoke.pending + h.audit.pending;

/** One command on every seeded delegation (fills the policy cache), then one RevokeDelegatorContext ending them all (fills the revocation record). */
async function runPrefill(server: ServerProcess): Promise<string> {
  const t0 = performance.now();
  const client = createClient(DelegationService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.ready.grpcPort}` }));
  const headers = { "x-delegator-did": PREFILL_DID };
  let next = 0;
  let failed = 0;
  const lane = async () => {
    while (next < PREFILL) {
      const id = `del_${String(++next).padStart(26, "0")}`;
      try {
        await client.authorizeCommand({ delegationId: id, command: "git status --short" }, { headers, timeoutMs: 30_000 });
      } catch {
        failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, lane));
  const authorizedS = (performance.now() - t0) / 1000;
  const r = await client.revokeDelegatorContext({ delegatorAcId: PREFILL_AC, reason: "soak prefill" }, { timeoutMs: 120_000 });
  for (;;) {
    const h = await healthz(server.ready.webPort!);
    if (backlogOf(h) === 0) break;
    if (performance.now() - t0 > 10 * 60_000) throw new Error(`prefill: consequences not drained after 10 minutes (${JSON.stringify(h)})`);
    await sleep(500);
  }
  return (
    `prefill: ${PREFILL} seeded delegations authorized once in ${authorizedS.toFixed(1)} s (${failed} failed), ` +
    `${r.revokedDelegationIds.length} ended by RevokeDelegatorContext, consequences drained after ${((performance.now() - t0) / 1000).toFixed(1)} s`
  );
}

// ---------------------------------------------------------------- samples

interface Sample {
  /** Seconds since the load started, at the end of the interval. */
  t: number;
  intervalS: number;
  rssMB: number;
  heapMB: number;
  externalMB: number;
  eldP99: number;
  eldMax: number;
  handles: number;
  /** Active timers (getActiveResourcesInfo "Timeout"), which _getActiveHandles leaves out. */
  timers: number;
  resources: Record<string, number>;
  /** Delegations held by the GetDelegation read model (NaN when the broker does not say). */
  readModel: number;
  cpuPct: number;
  /** Broker CPU per unary RPC answered, in µs. */
  cpuUsPerRpc: number;
  active: number;
  watchersBroker: number;
  watchersClient: number;
  backlog: number;
  rps: number;
  rpc: Record<string, { count: number; p50Ms: number; p99Ms: number; maxMs: number }>;
  unexpected: Record<string, number>;
  expected: Record<string, number>;
  clientEldMax: number;
  /** CPU of the two client processes together (100 = one core). */
  clientCpuPct: number;
  /** The machine's 1-minute load average (2 cores: above 2, processes wait for a core). */
  load1: number;
  skipped: number;
}

const SHORT: Record<string, string> = {
  create: "create",
  authorize: "authz",
  "authorize-ceremony": "authz-cer",
  approve: "approve",
  get: "get",
  "get-connect": "get-conn",
  "get-unknown": "get-unk",
  revoke: "revoke",
  list: "list",
  "list-ended": "list-ended",
  "watch-open": "w-open",
  "watch-lag": "w-lag",
};
const UNARY = ["create", "authorize", "authorize-ceremony", "approve", "get", "get-connect", "get-unknown", "revoke", "list", "list-ended"];
const ORDER = [...UNARY, "watch-open", "watch-lag"];

function fmt(x: number, digits = 1): string {
  return Number.isFinite(x) ? x.toFixed(digits) : "-";
}

function merge(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

function line(s: Sample): string {
  const lat = ORDER.filter((k) => s.rpc[k])
    .map((k) => `${SHORT[k] ?? k} ${fmt(s.rpc[k]!.p50Ms)}/${fmt(s.rpc[k]!.p99Ms)}`)
    .join(" ");
  const nUnexpected = Object.values(s.unexpected).reduce((a, b) => a + b, 0);
  const byCode: Record<string, number> = {};
  for (const [k, v] of Object.entries(s.expected)) {
    const [rpc, what] = k.split(" ");
    const key = `${rpc} ${what!.split("/")[0]}`;
    byCode[key] = (byCode[key] ?? 0) + v;
  }
  const expected = Object.entries(byCode)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
  const unexpected = Object.entries(s.unexpected)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
  return (
    `[${String(Math.round(s.t)).padStart(5)} s] rss ${fmt(s.rssMB)} MB heap ${fmt(s.heapMB, 2)} MB ext ${fmt(s.externalMB, 2)} MB | ` +
    `eld p99 ${fmt(s.eldP99)} max ${fmt(s.eldMax)} ms | handles ${s.handles} (+${s.timers} timers) | cpu ${fmt(s.cpuPct, 0)}% (${fmt(s.cpuUsPerRpc, 0)} us/rpc) | ` +
    `active ${s.active} | read model ${Number.isFinite(s.readModel) ? s.readModel : "?"} | watchers ${s.watchersClient} (broker ${s.watchersBroker}) | backlog ${s.backlog} | ${fmt(s.rps, 0)} rpc/s | ` +
    `p50/p99 ms: ${lat} | errors: ${nUnexpected === 0 ? "none unexpected" : `UNEXPECTED ${unexpected}`}${expected ? `; expected ${expected}` : ""}` +
    `${s.skipped > 0 ? ` | skipped at the in-flight cap ${s.skipped}` : ""} | clients cpu ${fmt(s.clientCpuPct, 0)}% eld max ${fmt(s.clientEldMax, 0)} ms | load ${fmt(s.load1, 2)}`
  );
}

// ---------------------------------------------------------------- summary

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
function median(xs: number[]): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Least-squares slope of y over t (per second). */
function slope(points: { t: number; y: number }[]): number {
  if (points.length < 2) return Number.NaN;
  const mt = mean(points.map((p) => p.t));
  const my = mean(points.map((p) => p.y));
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - mt) * (p.y - my);
    den += (p.t - mt) ** 2;
  }
  return den === 0 ? Number.NaN : num / den;
}

interface Thirds {
  first: Sample[];
  last: Sample[];
  steady: Sample[];
  /** Minutes between the middles of the first and the last third. */
  spanMin: number;
}

function thirds(samples: Sample[], endS: number): Thirds {
  const steady = samples.filter((s) => s.t - s.intervalS >= WARMUP_S - 1e-6);
  const from = WARMUP_S;
  const third = (endS - from) / 3;
  // An interval belongs to the third its middle falls in.
  const mid = (s: Sample) => s.t - s.intervalS / 2;
  const first = steady.filter((s) => mid(s) < from + third);
  const last = steady.filter((s) => mid(s) >= endS - third);
  const spanMin = (mean(last.map(mid)) - mean(first.map(mid))) / 60;
  return { first, last, steady, spanMin };
}

interface Comparison {
  first: number;
  last: number;
}

/** The verdict on one figure's drift: p99 and event-loop delay get worse by half and by 2 ms at least. */
function drifted(c: Comparison, ratio: number, floor: number): boolean {
  return Number.isFinite(c.first) && Number.isFinite(c.last) && c.last > c.first * ratio && c.last - c.first > floor;
}

// ---------------------------------------------------------------- run

async function main(): Promise<number> {
  console.log(
    `soak: ${DURATION_S} s on ${DRIVER}, ~${RATE} unary RPC/s (${CREATES_PER_S} creates/s, TTL ${TTL_MIN_S}-${TTL_MAX_S} s, ${Math.round(REVOKE_SHARE * 100)}% revoked), ` +
      `${WATCHERS} watchers living ${WATCH_LIFE_MIN_S}-${WATCH_LIFE_MAX_S} s, prefill ${PREFILL}, warm-up ${WARMUP_S} s, report every ${REPORT_EVERY_S} s; ` +
      `node ${process.version}, ${cpus().length} cores, load ${loadavg().map((x) => x.toFixed(2)).join(" ")}`,
  );
  let tdb: TestDatabase | undefined;
  let server: ServerProcess | undefined;
  try {
    tdb = await createTestDatabase(DRIVER);
    await migrate(tdb.url);
    if (PREFILL > 0) await seedPrefill(tdb.url);
    server = await startServerProcess("broker.ts", {
      env: { BENCH_DATABASE_URL: tdb.url },
      nodeArgs: ["--expose-gc"],
      startTimeoutMs: 120_000,
    });
    const broker = server;
    const webPort = broker.ready.webPort!;
    if (PREFILL > 0) console.log(await runPrefill(broker));
    const admin = createClient(DelegationService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${broker.ready.grpcPort}` }));
    const activeCount = async () => (await admin.listAgents({ pageSize: 1 }, { timeoutMs: 30_000 })).totalSize;

    const before = await broker.ask<BrokerStats>({ type: "stats" }, "stats");
    console.log(
      `before the load: rss ${fmt(before.memory.rss / MB)} MB, heap ${fmt(before.memory.heapUsed / MB, 2)} MB (after GC), ` +
        `external ${fmt(before.memory.external / MB, 2)} MB, handles ${before.activeHandles ?? "?"} ${JSON.stringify(before.activeResources ?? {})}`,
    );

    const load = startWorker("load", "./lib/soak-load.ts");
    const watch = startWorker("watchers", "./lib/soak-watchers.ts");
    const loadConfig: LoadConfig = {
      grpcPort: broker.ready.grpcPort,
      webPort,
      rate: RATE,
      createsPerS: CREATES_PER_S,
      ttlMinS: TTL_MIN_S,
      ttlMaxS: TTL_MAX_S,
      revokeShare: REVOKE_SHARE,
      maxInFlight: 256,
    };
    const watchConfig: WatchConfig = { grpcPort: broker.ready.grpcPort, watchers: WATCHERS, lifeMinS: WATCH_LIFE_MIN_S, lifeMaxS: WATCH_LIFE_MAX_S };
    broker.tell({ type: "stats-reset" });
    let cpuBefore = broker.cpuSeconds() ?? Number.NaN;
    await Promise.all([load.ask({ type: "start", config: loadConfig }, "started"), watch.ask({ type: "start", config: watchConfig }, "started")]);
    const start = performance.now();
    const samples: Sample[] = [];
    let prevT = 0;
    // The clients' CPU so far (starting up): the first interval counts from here.
    let prevClientCpu = (await Promise.all([load.ask({ type: "report" }, "report"), watch.ask({ type: "report" }, "report")])).reduce((n, r) => n + r.report.cpuS, 0);

    const collect = async (reports: ClientReport[]): Promise<Sample> => {
      const t = (performance.now() - start) / 1000;
      const stats = await broker.ask<BrokerStats>({ type: "stats" }, "stats");
      broker.tell({ type: "stats-reset" });
      const cpuNow = broker.cpuSeconds() ?? Number.NaN;
      const [h, active] = await Promise.all([healthz(webPort), activeCount()]);
      const [l, w] = reports as [ClientReport, ClientReport];
      const intervalS = t - prevT;
      prevT = t;
      const rpc = { ...l.rpc, ...w.rpc };
      const unary = UNARY.reduce((n, k) => n + (rpc[k]?.count ?? 0), 0);
      const unexpected: Record<string, number> = {};
      merge(unexpected, l.unexpected);
      merge(unexpected, w.unexpected);
      const expected: Record<string, number> = {};
      merge(expected, l.expected);
      merge(expected, w.expected);
      const cpuS = cpuNow - cpuBefore;
      cpuBefore = cpuNow;
      const clientCpu = l.cpuS + w.cpuS;
      const clientCpuPct = ((clientCpu - prevClientCpu) / intervalS) * 100;
      prevClientCpu = clientCpu;
      return {
        t,
        intervalS,
        rssMB: stats.memory.rss / MB,
        heapMB: stats.memory.heapUsed / MB,
        externalMB: stats.memory.external / MB,
        eldP99: stats.eventLoopDelayMs.p99,
        eldMax: stats.eventLoopDelayMs.max,
        handles: stats.activeHandles ?? Number.NaN,
        timers: stats.activeResources?.Timeout ?? 0,
        resources: stats.activeResources ?? {},
        readModel: stats.readModelEntries ?? Number.NaN,
        cpuPct: (cpuS / intervalS) * 100,
        cpuUsPerRpc: (cpuS * 1e6) / Math.max(1, unary),
        active,
        watchersBroker: stats.watchers,
        watchersClient: w.gauges.open ?? 0,
        backlog: backlogOf(h),
        rps: unary / intervalS,
        rpc,
        unexpected,
        expected,
        clientEldMax: Math.max(l.clientEventLoopMs.max, w.clientEventLoopMs.max),
        clientCpuPct,
        load1: loadavg()[0]!,
        skipped: l.gauges.skipped ?? 0,
      };
    };

    const printSample = (s: Sample, reports: ClientReport[]) => {
      samples.push(s);
      console.log(line(s));
      for (const r of reports) for (const [k, v] of Object.entries(r.samples)) console.log(`    unexpected ${k}: ${v}`);
    };

    for (let k = 1; ; k++) {
      const atS = Math.min(DURATION_S, k * REPORT_EVERY_S);
      const wait = start + atS * 1000 - performance.now();
      if (wait > 0) await sleep(wait);
      const reports = await Promise.all([load.ask({ type: "report" }, "report"), watch.ask({ type: "report" }, "report")]);
      printSample(await collect(reports.map((r) => r.report)), reports.map((r) => r.report));
      if (atS >= DURATION_S) break;
    }
    const endS = samples[samples.length - 1]!.t;
    // The clients stop issuing and wait for their calls; what ends meanwhile counts in the totals, not in a sample.
    const [loadEnd, watchEnd] = await Promise.all([load.ask({ type: "stop" }, "stopped", 60_000), watch.ask({ type: "stop" }, "stopped", 60_000)]);
    for (const r of [loadEnd.report, watchEnd.report]) for (const [k, v] of Object.entries(r.samples)) console.log(`    unexpected (while stopping) ${k}: ${v}`);
    for (const w of workers) if (w.child.connected) w.child.disconnect();
    // Closed connections take a moment to be released: then the broker should be back to its handles before the load.
    await sleep(3000);
    const afterStop = await healthz(webPort);
    const idle = await broker.ask<BrokerStats>({ type: "stats" }, "stats");
    const activeAtEnd = await activeCount();

    // ------------------------------------------------------------ summary
    const th = thirds(samples, endS);
    const cmp = (f: (s: Sample) => number, agg: (xs: number[]) => number = mean): Comparison => ({
      first: agg(th.first.map(f)),
      last: agg(th.last.map(f)),
    });
    const perMin = (c: Comparison) => (c.last - c.first) / th.spanMin;
    const heap = cmp((s) => s.heapMB);
    const rss = cmp((s) => s.rssMB);
    const ext = cmp((s) => s.externalMB);
    // Medians: an interval in which calls pile up holds more sockets and per-call timers for a while.
    const handles = cmp((s) => s.handles, median);
    const timers = cmp((s) => s.timers, median);
    const readModel = cmp((s) => s.readModel);
    const machineLoad = cmp((s) => s.load1);
    const busy = Math.max(machineLoad.first, machineLoad.last) > cpus().length;
    const eld = cmp((s) => s.eldP99, median);
    const cpuPerRpc = cmp((s) => s.cpuUsPerRpc, median);
    const heapSlope = perMin(heap);
    const rssSlope = perMin(rss);
    const heapRegression = slope(th.steady.map((s) => ({ t: s.t, y: s.heapMB }))) * 60;
    const rssRegression = slope(th.steady.map((s) => ({ t: s.t, y: s.rssMB }))) * 60;
    const p99: Record<string, Comparison> = {};
    for (const k of ORDER) {
      const c = cmp((s) => s.rpc[k]?.p99Ms ?? Number.NaN, median);
      if (Number.isFinite(c.first) || Number.isFinite(c.last)) p99[k] = c;
    }
    const shortRun = th.first.length < 2 || th.last.length < 2 || th.spanMin < 2;
    const lt = loadEnd.total;
    const wt = watchEnd.total;
    const unexpectedTotal: Record<string, number> = {};
    merge(unexpectedTotal, lt.unexpected);
    merge(unexpectedTotal, wt.unexpected);
    const expectedTotal: Record<string, number> = {};
    merge(expectedTotal, lt.expected);
    merge(expectedTotal, wt.expected);
    const outcomes: Record<string, number> = {};
    merge(outcomes, lt.outcomes);
    merge(outcomes, wt.outcomes);
    const nUnexpected = Object.values(unexpectedTotal).reduce((a, b) => a + b, 0);
    const unaryTotal = UNARY.reduce((n, k) => n + (lt.rpc[k]?.count ?? 0), 0);

    console.log("");
    console.log(
      `summary: ${fmt(endS, 0)} s, ${unaryTotal} unary RPCs (${fmt(unaryTotal / endS, 0)}/s), ${lt.gauges.created ?? 0} delegations created, ` +
        `${lt.gauges.revoked ?? 0} revoked by the load, ${wt.gauges.openedTotal ?? 0} watch streams opened, ${wt.gauges.eventsTotal ?? 0} events received; ` +
        `comparing ${th.first.length} intervals of the first third with ${th.last.length} of the last (after a ${WARMUP_S} s warm-up, ${fmt(th.spanMin, 1)} min apart)`,
    );
    console.log(
      `  heap after GC  ${fmt(heap.first, 2)} -> ${fmt(heap.last, 2)} MB: ${fmt(heapSlope, 3)} MB/min (least squares over the steady part: ${fmt(heapRegression, 3)} MB/min)`,
    );
    console.log(`  rss            ${fmt(rss.first)} -> ${fmt(rss.last)} MB: ${fmt(rssSlope, 2)} MB/min (least squares ${fmt(rssRegression, 2)} MB/min)`);
    console.log(`  external       ${fmt(ext.first, 2)} -> ${fmt(ext.last, 2)} MB`);
    if (Number.isFinite(readModel.first)) {
      const grew = readModel.last - readModel.first;
      console.log(
        `  read model     ${fmt(readModel.first, 0)} -> ${fmt(readModel.last, 0)} delegations held by GetDelegation's read model` +
          (grew > 100 ? ` (+${fmt(grew / th.spanMin, 0)}/min; the heap grew ${fmt(((heap.last - heap.first) * MB) / grew, 0)} bytes per entry added)` : ""),
      );
    }
    console.log(
      `  active handles ${fmt(handles.first)} -> ${fmt(handles.last)} (median), timers ${fmt(timers.first)} -> ${fmt(timers.last)}; at the end ${JSON.stringify(samples[samples.length - 1]!.resources)}`,
    );
    console.log(
      `  machine load   ${fmt(machineLoad.first, 2)} -> ${fmt(machineLoad.last, 2)} (1-minute average, ${cpus().length} cores)${busy ? ": other processes competed for the cores, so latency and event-loop figures carry their noise" : ""}`,
    );
    console.log(`  event-loop p99 ${fmt(eld.first)} -> ${fmt(eld.last)} ms (median of the intervals); max over the run ${fmt(Math.max(...samples.map((s) => s.eldMax)))} ms`);
    console.log(`  broker CPU     ${fmt(cpuPerRpc.first, 0)} -> ${fmt(cpuPerRpc.last, 0)} us per unary RPC`);
    console.log(
      `  p99 ms (median of the intervals), first -> last third: ${Object.entries(p99)
        .map(([k, c]) => `${SHORT[k] ?? k} ${fmt(c.first)} -> ${fmt(c.last)}`)
        .join(", ")}`,
    );
    console.log(
      `  whole run p50/p99/max ms: ${ORDER.filter((k) => lt.rpc[k] ?? wt.rpc[k])
        .map((k) => {
          const r = (lt.rpc[k] ?? wt.rpc[k])!;
          return `${SHORT[k] ?? k} ${fmt(r.p50Ms)}/${fmt(r.p99Ms)}/${fmt(r.maxMs, 0)} (${r.count})`;
        })
        .join(", ")}`,
    );
    console.log(
      `  outcomes: ${Object.entries(outcomes)
        .sort()
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}`,
    );
    console.log(`  expected errors: ${Object.entries(expectedTotal).map(([k, v]) => `${k} ${v}`).join(", ") || "none"}`);
    console.log(`  UNEXPECTED errors and answers: ${nUnexpected === 0 ? "none" : Object.entries(unexpectedTotal).map(([k, v]) => `${k} ${v}`).join(", ")}`);
    for (const [k, v] of Object.entries({ ...lt.samples, ...wt.samples })) console.log(`    first ${k}: ${v}`);
    console.log(
      `  3 s after the clients stopped: watchers held by the broker ${afterStop.watchers}, consequence backlog ${backlogOf(afterStop)}, ` +
        `loop failures ${afterStop.loops.reduce((n, l) => n + l.failures, 0)}; handles ${idle.activeHandles ?? "?"} (before the load ${before.activeHandles ?? "?"}) ` +
        `${JSON.stringify(idle.activeResources ?? {})}; heap ${fmt(idle.memory.heapUsed / MB, 2)} MB (before the load ${fmt(before.memory.heapUsed / MB, 2)}, ` +
        `${activeAtEnd} delegations still active, ${idle.readModelEntries ?? "?"} in the read model); client event-loop max ${fmt(Math.max(lt.clientEventLoopMs.max, wt.clientEventLoopMs.max), 0)} ms`,
    );

    // ok, WARN, or "?": a latency drift while the machine's load rose and CPU per call did not is other processes, not the broker.
    const verdicts: { ok: boolean; text: string; unsure?: boolean }[] = [];
    const loadRose = busy && machineLoad.last > machineLoad.first * 1.3;
    const cpuDrift = cpuPerRpc.last > cpuPerRpc.first * 1.3;
    const contention = loadRose && !cpuDrift;
    const heapLeak = heapSlope > HEAP_LIMIT_MB_MIN;
    const readModelGrew = readModel.last - readModel.first > 100;
    verdicts.push({
      ok: !heapLeak,
      text:
        `heap slope ${fmt(heapSlope, 3)} MB/min (limit ${HEAP_LIMIT_MB_MIN}): ${heapLeak ? "LEAK (the heap grows with the run)" : "no leak"}` +
        (heapLeak && readModelGrew ? `, with the read model up ${fmt(readModel.last - readModel.first, 0)} entries` : ""),
    });
    const rssLeak = rssSlope > RSS_LIMIT_MB_MIN;
    verdicts.push({ ok: !rssLeak, text: `rss slope ${fmt(rssSlope, 2)} MB/min (limit ${RSS_LIMIT_MB_MIN}): ${rssLeak ? "GROWING" : "stable"}` });
    const handleDrift = handles.last - handles.first > Math.max(5, 0.1 * handles.first);
    verdicts.push({
      ok: !handleDrift,
      text: `handles ${fmt(handles.first)} -> ${fmt(handles.last)} (median of the thirds): ${handleDrift ? "DRIFT (they accumulate)" : "stable"}`,
    });
    const busyNote = `the machine's load rose ${fmt(machineLoad.first, 1)} -> ${fmt(machineLoad.last, 1)} on ${cpus().length} cores while CPU per RPC did not: contention, inconclusive`;
    const slow = Object.entries(p99).filter(([, c]) => drifted(c, 1.5, 2));
    verdicts.push({
      ok: slow.length === 0,
      unsure: slow.length > 0 && contention,
      text: `p99 drift: ${slow.length === 0 ? "none (no RPC's p99 rose by half and 2 ms)" : `${slow.map(([k, c]) => `${k} ${fmt(c.first)} -> ${fmt(c.last)} ms`).join(", ")}${contention ? `; ${busyNote}` : ": DRIFT"}`}`,
    });
    const eldDrift = drifted(eld, 1.5, 2);
    verdicts.push({
      ok: !eldDrift,
      unsure: eldDrift && contention,
      text: `event-loop delay p99 ${fmt(eld.first)} -> ${fmt(eld.last)} ms: ${eldDrift ? (contention ? busyNote : "DRIFT") : "stable"}`,
    });
    verdicts.push({ ok: !cpuDrift, text: `CPU per RPC ${fmt(cpuPerRpc.first, 0)} -> ${fmt(cpuPerRpc.last, 0)} us: ${cpuDrift ? "DRIFT (each call costs more as the run goes on)" : "stable"}` });
    const handlesLeft = (idle.activeHandles ?? 0) > (before.activeHandles ?? 0) + 2;
    verdicts.push({
      ok: !handlesLeft,
      text: `handles once the clients had gone: ${idle.activeHandles ?? "?"} (before the load ${before.activeHandles ?? "?"})${handlesLeft ? ": LEFT OPEN" : ""}`,
    });
    const idleTimers = idle.activeResources?.Timeout ?? 0;
    const timersLeft = idleTimers > (before.activeResources?.Timeout ?? 0) + 2;
    verdicts.push({
      ok: !timersLeft,
      text: `timers once the clients had gone: ${idleTimers} (before the load ${before.activeResources?.Timeout ?? 0}; during the run ${fmt(timers.first)} -> ${fmt(timers.last)}, about one per call in flight)${timersLeft ? ": LEFT RUNNING" : ""}`,
    });
    const watchersLeft = afterStop.watchers > 0;
    verdicts.push({ ok: !watchersLeft, text: `watchers left in the broker after every client stream ended: ${afterStop.watchers}` });
    verdicts.push({ ok: nUnexpected === 0, text: `${nUnexpected} unexpected errors or answers` });
    const ok = verdicts.every((v) => v.ok || v.unsure);
    const unsure = verdicts.some((v) => !v.ok && v.unsure);
    console.log("");
    for (const v of verdicts) console.log(`verdict: ${v.ok ? "ok  " : v.unsure ? "?   " : "WARN"} ${v.text}`);
    console.log(
      `verdict: ${ok ? "PASS" : "WARN"}${unsure ? " (latency inconclusive: a busy machine)" : ""}${shortRun ? " (run too short for the comparison to mean much: use the default 600 s)" : ""}`,
    );

    const result = {
      bench: "soak",
      driver: DRIVER,
      durationS: round(endS, 1),
      rate: RATE,
      unaryRps: round(unaryTotal / endS, 1),
      created: lt.gauges.created ?? 0,
      watchStreams: wt.gauges.openedTotal ?? 0,
      prefill: PREFILL,
      warmupS: WARMUP_S,
      heapMB: { first: round(heap.first), last: round(heap.last), slopePerMin: round(heapSlope, 3), regressionPerMin: round(heapRegression, 3) },
      rssMB: { first: round(rss.first, 1), last: round(rss.last, 1), slopePerMin: round(rssSlope, 2) },
      externalMB: { first: round(ext.first), last: round(ext.last) },
      handles: { first: round(handles.first, 1), last: round(handles.last, 1) },
      readModelEntries: { first: Math.round(readModel.first), last: Math.round(readModel.last) },
      timers: { first: round(timers.first, 1), last: round(timers.last, 1) },
      load1: { first: round(machineLoad.first), last: round(machineLoad.last) },
      eventLoopP99Ms: { first: round(eld.first), last: round(eld.last), maxMs: round(Math.max(...samples.map((s) => s.eldMax)), 1) },
      cpuUsPerRpc: { first: Math.round(cpuPerRpc.first), last: Math.round(cpuPerRpc.last) },
      p99Ms: Object.fromEntries(Object.entries(p99).map(([k, c]) => [k, { first: round(c.first), last: round(c.last) }])),
      unexpected: nUnexpected,
      unexpectedByKind: unexpectedTotal,
      expected: expectedTotal,
      watchersLeft: afterStop.watchers,
      handlesAfter: { before: before.activeHandles ?? null, after: idle.activeHandles ?? null },
      timersAfter: { before: before.activeResources?.Timeout ?? 0, after: idleTimers },
      readModelAfter: idle.readModelEntries ?? null,
      verdict: ok ? "pass" : "warn",
      latencyInconclusive: unsure,
      shortRun,
      loadavg: loadavg().map((x) => round(x)),
    };
    console.log(JSON.stringify(result));
    return ok ? 0 : 1;
  } finally {
    killWorkers();
    if (server) await server.stop().catch(() => undefined);
    await tdb?.drop().catch((err: unknown) => console.error("could not drop the database:", err));
  }
}

process.on("SIGINT", () => {
  killWorkers();
  killAllServers();
  process.exit(130);
});

main().then(
  (code) => {
    killAllServers();
    process.exit(code);
  },
  (err: unknown) => {
    console.error(err);
    killWorkers();
    killAllServers();
    process.exit(2);
  },
);
