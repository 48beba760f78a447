/**
 * Unary RPC throughput and latency of the broker against bare echo servers
 * measured in the same run (see bench/README.md): the gRPC rows against a
 * bare grpc-js echo, the Connect rows (HTTP/1.1 web port) against a bare
 * connect-node echo.
 *
 * Every server under test runs in its own process and the load comes from a
 * third one (h2load, or the Node generator when h2load is missing), so that
 * on a 2-core machine the generator never shares an event loop with the
 * server it measures.
 *
 *   npm run bench
 *   BENCH_DURATION_S=5 BENCH_CONCURRENCY=20 BENCH_LOADGEN=node npm run bench
 *   BENCH_DRIVER=postgresql npm run bench     # a fresh database on the local PostgreSQL
 */
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  AuthorizeCommandRequestSchema,
  AuthorizeCommandResponseSchema,
  CommandDecision,
  CreateDelegationRequestSchema,
  CreateDelegationResponseSchema,
  DelegationState,
  GetDelegationRequestSchema,
  GetDelegationResponseSchema,
} from "../src/gen/llmbroker/v1/delegation_pb.js";
import { DelegationService } from "../src/gen/llmbroker/v1/delegation_service_pb.js";
import { type TestDatabase, createTestDatabase } from "../test/helpers/databases.js";
import { h2loadAvailable, runH2load } from "./lib/h2load.js";
import { BENCH_MAX_COMMANDS, ECHO_PATH, type LoadResult, type LoadSpec, type Protocol } from "./lib/load.js";
import { runNodeLoad } from "./lib/node-load.js";
import { type ServerProcess, killAllServers, startServerProcess } from "./lib/server-process.js";
import { envNumber } from "./lib/env.js";

// ---------------------------------------------------------------- settings

/** Every target, in the order the table lists them: each baseline above the rows measured against it. */
const TARGETS = ["echo", "get", "authorize", "create", "connect-echo", "connect-get", "connect-authorize"] as const;
type TargetName = (typeof TARGETS)[number];
type Baseline = "echo" | "connect-echo";
/** The baseline each row is divided by: the bare server of the same protocol. */
const BASELINE: Record<TargetName, Baseline> = {
  echo: "echo",
  get: "echo",
  authorize: "echo",
  create: "echo",
  "connect-echo": "connect-echo",
  "connect-get": "connect-echo",
  "connect-authorize": "connect-echo",
};
/**
 * The order the broker's targets run in: `create` last, so that the
 * delegations it adds (tens of thousands) and the work they leave behind
 * (events, consequences) cannot weigh on the read and authorize targets.
 */
const BROKER_ORDER: TargetName[] = ["get", "authorize", "connect-get", "connect-authorize", "create"];

const config = {
  durationS: envNumber("BENCH_DURATION_S", 10, 1, 600, { integer: true }),
  warmupS: envNumber("BENCH_WARMUP_S", 2, 0, 120, { integer: true }),
  concurrency: envNumber("BENCH_CONCURRENCY", 50, 1, 1000, { integer: true }),
  connections: envNumber("BENCH_CONNECTIONS", 10, 1, 1000, { integer: true }),
  /** Every target this many times, baselines included, each round's ratios to that round's baselines; then the medians. */
  rounds: envNumber("BENCH_ROUNDS", 1, 1, 20, { integer: true }),
  loadgen: (process.env.BENCH_LOADGEN ?? "auto") as "auto" | "h2load" | "node",
  targets: (process.env.BENCH_TARGETS ?? TARGETS.join(","))
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "") as TargetName[],
  cpuProfileDir: process.env.BENCH_CPU_PROFILE_DIR,
  /** A database given as is (kept afterwards), or undefined: a fresh one of `driver`. */
  databaseUrl: process.env.BENCH_DATABASE_URL?.trim() || undefined,
  driver: (process.env.BENCH_DRIVER?.trim() || "sqlite") as "sqlite" | "postgresql",
};
if (!["auto", "h2load", "node"].includes(config.loadgen)) throw new Error(`BENCH_LOADGEN must be auto, h2load or node`);
for (const t of config.targets) if (!TARGETS.includes(t)) throw new Error(`unknown target "${t}" in BENCH_TARGETS (${TARGETS.join(", ")})`);
if (!config.targets.includes("echo")) throw new Error("BENCH_TARGETS must include echo: every ratio is to it");
if (config.targets.some((t) => BASELINE[t] === "connect-echo") && !config.targets.includes("connect-echo")) {
  throw new Error("BENCH_TARGETS must include connect-echo when a connect-* target runs: the Connect rows' ratios are to it");
}
if (!["sqlite", "postgresql"].includes(config.driver)) throw new Error(`BENCH_DRIVER must be sqlite or postgresql`);
if (config.databaseUrl !== undefined && process.env.BENCH_DRIVER) {
  throw new Error("set BENCH_DATABASE_URL (a database used as is) or BENCH_DRIVER (a fresh one), not both");
}
/** Which kind of database the broker runs on, for the header and the summary. */
const databaseKind = config.databaseUrl === undefined ? config.driver : /^postgres(ql)?:/.test(config.databaseUrl) ? "postgresql" : "sqlite";

const ALICE = "did:web:example.com/user/alice";
const AUTH = { "x-delegator-did": ALICE };
const HOST = "127.0.0.1";
const SERVICE_PATH = `/${DelegationService.typeName}`;
/** Matches no default ceremony word (delete, destroy, drop) and no prohibited entry. */
const COMMAND = "git status --short";
/** The delegator's access context of every delegation the bench creates (dev GSAP knows any). */
const DELEGATOR_AC = "ac-bench-alice";

// ---------------------------------------------------------------- helpers

let loadgen: "h2load" | "node" = config.loadgen === "node" ? "node" : "h2load";
if (loadgen === "h2load" && !h2loadAvailable()) {
  console.error("h2load not found (apt-get install -y nghttp2-client); using the Node load generator");
  loadgen = "node";
}

const loadStart = loadavg();
const workDir = mkdtempSync(join(tmpdir(), "lpb-bench-run-"));
/** The fresh database this run made (PostgreSQL), dropped at the end. */
let freshDatabase: TestDatabase | undefined;
async function dropFreshDatabase(): Promise<void> {
  const db = freshDatabase;
  freshDatabase = undefined;
  await db?.drop();
}
process.on("SIGINT", () => {
  killAllServers();
  rmSync(workDir, { recursive: true, force: true });
  dropFreshDatabase().finally(() => process.exit(130));
});

async function load(spec: LoadSpec, label: string): Promise<LoadResult> {
  return loadgen === "h2load" ? runH2load(spec, workDir, label) : runNodeLoad(spec);
}

/** One raw gRPC call with the exact bytes the load generator sends; returns the response bytes. */
function grpcOnce(port: number, path: string, body: Uint8Array, headers: Record<string, string>): Promise<Buffer> {
  const client = new grpc.Client(`${HOST}:${port}`, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  const same = (b: Buffer) => b;
  return new Promise<Buffer>((resolve, reject) =>
    client.makeUnaryRequest(path, same, same, Buffer.from(body), md, { deadline: Date.now() + 10_000 }, (err, res) =>
      err || !res ? reject(err ?? new Error("no response")) : resolve(res),
    ),
  ).finally(() => client.close());
}

/** One Connect-protocol call over HTTP/1.1 (fetch) with the bytes the load generator sends. */
async function connectOnce(port: number, path: string, body: Uint8Array, headers: Record<string, string>): Promise<Buffer> {
  const res = await fetch(`http://${HOST}:${port}${path}`, {
    method: "POST",
    headers: { "content-type": "application/proto", "connect-protocol-version": "1", ...headers },
    body,
    signal: AbortSignal.timeout(10_000),
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${bytes.toString()}`);
  return bytes;
}

/** One call of `protocol` with the exact bytes the load generator will send. */
function callOnce(protocol: Protocol, port: number, path: string, body: Uint8Array, headers: Record<string, string>): Promise<Buffer> {
  return protocol === "grpc" ? grpcOnce(port, path, body, headers) : connectOnce(port, path, body, headers);
}

interface Row {
  target: TargetName;
  label: string;
  protocol: Protocol;
  result: LoadResult;
  /** Server CPU time per successful request in the measured window, in microseconds. */
  cpuUsPerRequest: number;
  /** Server CPU use in the measured window, 1.0 = one core busy. */
  cpuCores: number;
  /** Warnings from the correctness checks; empty when every request did what it should. */
  warnings: string[];
  /** What the checks counted in the server, e.g. the delegations `create` made. */
  extra?: Record<string, number>;
}

interface Target {
  name: TargetName;
  server: ServerProcess;
  label: string;
  spec: LoadSpec;
  /** Response bytes of one call made before the run (h2load counts DATA bytes; errors carry none). */
  sampleResponseBytes: number;
  /**
   * Extra check after the measurement, given the successes of the warm-up and the timed window
   * (the command counter for AuthorizeCommand, the delegations made for CreateDelegation).
   */
  verify?: (served: number) => Promise<{ warnings: string[]; extra?: Record<string, number> }>;
}

/** Warm-up, then the measured run, then the correctness checks. */
async function measure(t: Target): Promise<Row> {
  process.stderr.write(`  ${t.label}: warm-up ${config.warmupS}s, measuring ${config.durationS}s ...\n`);
  let served = 0;
  if (config.warmupS > 0) {
    const warm = await load({ ...t.spec, durationS: config.warmupS }, `${t.name}-warmup`);
    served += warm.ok;
  }
  const cpuBefore = t.server.cpuSeconds();
  const result = await load(t.spec, t.name);
  const cpuAfter = t.server.cpuSeconds();
  const cpu = cpuBefore === undefined || cpuAfter === undefined ? Number.NaN : cpuAfter - cpuBefore;
  served += result.ok;
  const warnings: string[] = [];
  if (result.errors > 0) warnings.push(`${result.errors} failed requests (first: ${result.firstError ?? "?"})`);
  if (result.dataBytes !== undefined && result.ok > 0) {
    // h2load sees HTTP 200 even when the gRPC status is an error; an error carries no message, so
    // fewer response bytes than one message per request means some requests failed. Their number
    // is estimated from the bytes (a GetDelegation answer varies by a few bytes) and taken out of
    // the successes; their latencies cannot be told apart and stay in the percentiles.
    const expected = t.sampleResponseBytes + (t.spec.protocol === "grpc" ? 5 : 0);
    const perRequest = result.dataBytes / result.ok;
    if (perRequest < expected * 0.97) {
      const failed = Math.min(result.ok, Math.round(result.ok - result.dataBytes / expected));
      warnings.push(
        `responses average ${perRequest.toFixed(1)} bytes, a successful one is ${expected}: about ${failed} calls failed` +
          " (estimated; latency percentiles include them)",
      );
      result.ok -= failed;
      served -= failed;
      result.errors += failed;
      result.rps = result.ok / result.elapsedS;
    }
  }
  if (result.ok === 0) warnings.push("no request succeeded");
  let extra: Record<string, number> | undefined;
  if (t.verify) {
    const checked = await t.verify(served);
    warnings.push(...checked.warnings);
    extra = checked.extra;
  }
  return {
    target: t.name,
    label: t.label,
    protocol: t.spec.protocol,
    result,
    cpuUsPerRequest: (cpu * 1e6) / result.ok,
    cpuCores: cpu / result.elapsedS,
    warnings,
    ...(extra ? { extra } : {}),
  };
}

function baseSpec(protocol: Protocol, port: number, path: string, body: Uint8Array, headers: Record<string, string>): LoadSpec {
  return {
    protocol,
    host: HOST,
    port,
    path,
    body,
    headers,
    concurrency: config.concurrency,
    connections: config.connections,
    durationS: config.durationS,
  };
}

/**
 * Whether a server-side counter moved by the successes the load generator saw: at least that
 * many, and at most the requests that were still in flight when the warm-up and the timed run
 * stopped (the server may finish them after the generator gave up on them).
 */
function countMatches(counted: number, served: number): boolean {
  // h2load keeps `-m` streams on each of its connections (see lib/h2load.ts), so up to this many
  // per run; the Node generator waits for its requests, so none.
  const connections = Math.min(config.connections, config.concurrency);
  const inFlight = connections * Math.ceil(config.concurrency / connections);
  const runs = config.warmupS > 0 ? 2 : 1;
  return counted >= served && counted <= served + runs * Math.max(inFlight, config.concurrency);
}

// ---------------------------------------------------------------- runs

async function benchEcho(): Promise<Row> {
  const server = await startServerProcess("echo.ts");
  try {
    const payload = Buffer.from("llm-principal-broker bench echo!"); // 32 bytes, no protobuf
    const echoed = await grpcOnce(server.ready.grpcPort, ECHO_PATH, payload, {});
    if (!echoed.equals(payload)) throw new Error("echo server answered different bytes");
    return await measure({
      name: "echo",
      server,
      label: "echo (bare grpc-js)",
      spec: baseSpec("grpc", server.ready.grpcPort, ECHO_PATH, payload, {}),
      sampleResponseBytes: echoed.length,
    });
  } finally {
    await server.stop();
  }
}

async function benchConnectEcho(): Promise<Row> {
  const server = await startServerProcess("connect-echo.ts");
  try {
    const port = server.ready.webPort;
    if (port === undefined) throw new Error("connect-echo did not report its port");
    // A GetDelegationRequest as connect-get sends it: an id of the same shape and length.
    const payload = toBinary(GetDelegationRequestSchema, create(GetDelegationRequestSchema, { delegationId: `del_${"0".repeat(26)}` }));
    const echoed = await connectOnce(port, ECHO_PATH, payload, {});
    if (!echoed.equals(payload)) throw new Error("connect-echo server answered different bytes");
    return await measure({
      name: "connect-echo",
      server,
      label: "connect-echo (bare connect-node, HTTP/1.1)",
      spec: baseSpec("connect", port, ECHO_PATH, payload, {}),
      sampleResponseBytes: echoed.length,
    });
  } finally {
    await server.stop();
  }
}

async function benchBroker(names: TargetName[]): Promise<Row[]> {
  const env: Record<string, string> = {};
  if (config.databaseUrl !== undefined) env.BENCH_DATABASE_URL = config.databaseUrl;
  else if (config.driver === "postgresql") {
    freshDatabase = await createTestDatabase("postgresql");
    env.BENCH_DATABASE_URL = freshDatabase.url;
  }
  const server: ServerProcess = await startServerProcess("broker.ts", {
    env,
    ...(config.cpuProfileDir ? { cpuProfileDir: config.cpuProfileDir } : {}),
  });
  try {
    const { grpcPort, webPort } = server.ready;
    if (webPort === undefined) throw new Error("broker did not report its web port");
    const admin = createClient(DelegationService, createGrpcTransport({ baseUrl: `http://${HOST}:${grpcPort}` }));
    const created = await admin.createDelegation(
      { delegatorAcId: DELEGATOR_AC, agentType: "claude-code", scope: { maxCommands: BENCH_MAX_COMMANDS } },
      { headers: AUTH },
    );
    const id = created.delegation?.delegationId;
    if (!id) throw new Error("CreateDelegation returned no delegation");
    const executed = async () => (await admin.getDelegation({ delegationId: id }, { headers: AUTH })).delegation?.commandsExecuted ?? 0;
    /** Alice's ACTIVE delegations, as ListAgents counts them. */
    const activeCount = async () =>
      (await admin.listAgents({ delegatorDid: ALICE, state: DelegationState.ACTIVE, pageSize: 1 }, { headers: AUTH })).totalSize;

    const getBody = toBinary(GetDelegationRequestSchema, create(GetDelegationRequestSchema, { delegationId: id }));
    const authBody = toBinary(
      AuthorizeCommandRequestSchema,
      create(AuthorizeCommandRequestSchema, { delegationId: id, command: COMMAND }),
    );
    // No request_id: a create without one is never deduplicated, so the same bytes make a new
    // delegation every time (src/delegation/create-delegation.ts, claimFor).
    const createBody = toBinary(
      CreateDelegationRequestSchema,
      create(CreateDelegationRequestSchema, { delegatorAcId: DELEGATOR_AC, agentType: "claude-code" }),
    );
    const getPath = `${SERVICE_PATH}/GetDelegation`;
    const authPath = `${SERVICE_PATH}/AuthorizeCommand`;
    const createPath = `${SERVICE_PATH}/CreateDelegation`;

    const getDelegation = async (name: TargetName, protocol: Protocol, label: string): Promise<Row> => {
      const port = protocol === "grpc" ? grpcPort : webPort;
      const sample = await callOnce(protocol, port, getPath, getBody, AUTH);
      const d = fromBinary(GetDelegationResponseSchema, sample).delegation;
      if (d?.delegationId !== id || d.state !== DelegationState.ACTIVE) throw new Error(`${name} preflight: unexpected answer`);
      return measure({ name, server, label, spec: baseSpec(protocol, port, getPath, getBody, AUTH), sampleResponseBytes: sample.length });
    };

    const authorize = async (name: TargetName, protocol: Protocol, label: string): Promise<Row> => {
      const port = protocol === "grpc" ? grpcPort : webPort;
      const sample = await callOnce(protocol, port, authPath, authBody, AUTH);
      const r = fromBinary(AuthorizeCommandResponseSchema, sample);
      if (r.decision !== CommandDecision.ALLOW) throw new Error(`${name} preflight: ${r.reason}, not ALLOW`);
      const before = await executed();
      return measure({
        name,
        server,
        label,
        spec: baseSpec(protocol, port, authPath, authBody, AUTH),
        sampleResponseBytes: sample.length,
        // Every ALLOW counts one command, so the counter must have moved by the successes seen.
        verify: async (served) => {
          const counted = (await executed()) - before;
          return {
            warnings: countMatches(counted, served) ? [] : [`broker counted ${counted} commands, the load generator saw ${served} succeed`],
            extra: { commandsCounted: counted, served },
          };
        },
      });
    };

    const createDelegations = async (name: TargetName, label: string): Promise<Row> => {
      const sample = await grpcOnce(grpcPort, createPath, createBody, AUTH);
      const r = fromBinary(CreateDelegationResponseSchema, sample);
      if (r.delegation?.state !== DelegationState.ACTIVE || r.replayed || r.agentCredential?.clientSecret === "") {
        throw new Error(`${name} preflight: the create answered no new ACTIVE delegation with its credential`);
      }
      const again = fromBinary(CreateDelegationResponseSchema, await grpcOnce(grpcPort, createPath, createBody, AUTH));
      if (again.delegation?.delegationId === r.delegation.delegationId || again.replayed) {
        throw new Error(`${name} preflight: the same request bytes did not make a second delegation`);
      }
      const before = await activeCount();
      return measure({
        name,
        server,
        label,
        spec: baseSpec("grpc", grpcPort, createPath, createBody, AUTH),
        sampleResponseBytes: sample.length,
        // Every success made one ACTIVE delegation (a create cut off by the end of a run is
        // withdrawn or failed by the broker, so it is not ACTIVE; one that finished anyway is
        // within the slack).
        verify: async (served) => {
          const counted = (await activeCount()) - before;
          return {
            warnings: countMatches(counted, served) ? [] : [`broker made ${counted} ACTIVE delegations, the load generator saw ${served} succeed`],
            extra: { delegationsCreated: counted, served },
          };
        },
      });
    };

    const rows: Row[] = [];
    for (const name of BROKER_ORDER.filter((n) => names.includes(n))) {
      if (name === "get") rows.push(await getDelegation(name, "grpc", "GetDelegation (grpc-js)"));
      else if (name === "authorize") rows.push(await authorize(name, "grpc", "AuthorizeCommand ALLOW (grpc-js)"));
      else if (name === "create") rows.push(await createDelegations(name, "CreateDelegation (grpc-js)"));
      else if (name === "connect-get") rows.push(await getDelegation(name, "connect", "GetDelegation (Connect, HTTP/1.1)"));
      else if (name === "connect-authorize") rows.push(await authorize(name, "connect", "AuthorizeCommand ALLOW (Connect, HTTP/1.1)"));
    }
    return rows;
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------- report

function fmt(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "-";
}

/** A table: the first column left-aligned, the others right-aligned, a rule under the header. */
function printTable(header: string[], lines: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const row = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log(row(header));
  console.log(row(widths.map((w) => "-".repeat(w))));
  for (const l of lines) console.log(row(l));
}

/** What every JSON summary starts with. */
function summaryHeader() {
  return {
    bench: "rpc-throughput",
    loadgen,
    database: databaseKind,
    durationS: config.durationS,
    concurrency: config.concurrency,
    connections: config.connections,
    // Other work on the machine lowers req/s; the load average tells whether the run was alone.
    loadavg1m: [rounded(loadStart[0]!, 2), rounded(loadavg()[0]!, 2)],
  };
}

function report(rows: Row[], round?: string): void {
  const rpsOf = (t: TargetName) => rows.find((r) => r.target === t)?.result.rps ?? Number.NaN;
  const echoRps = rpsOf("echo");
  const ratio = (r: Row) => r.result.rps / rpsOf(BASELINE[r.target]);
  const header = ["target", "req/s", "p50 ms", "p99 ms", "vs baseline", "vs grpc echo", "server cpu", "cpu us/req", "errors"];
  const lines = rows.map((r) => [
    r.label,
    fmt(r.result.rps, 0),
    fmt(r.result.p50Ms, 2),
    fmt(r.result.p99Ms, 2),
    `${fmt(ratio(r), 3)}x`,
    `${fmt(r.result.rps / echoRps, 3)}x`,
    `${fmt(r.cpuCores * 100, 0)}%`,
    fmt(r.cpuUsPerRequest, 0),
    String(r.result.errors),
  ]);
  console.log("");
  if (round) console.log(round);
  console.log(
    `rpc-throughput: loadgen=${loadgen} db=${databaseKind} duration=${config.durationS}s warmup=${config.warmupS}s concurrency=${config.concurrency}` +
      ` connections=${config.connections} node=${process.version} cpus=${cpus().length}` +
      ` loadavg=${loadStart.map((l) => l.toFixed(2)).join("/")}->${loadavg().map((l) => l.toFixed(2)).join("/")}`,
  );
  printTable(header, lines);
  console.log("vs baseline: gRPC rows to echo (bare grpc-js), Connect rows to connect-echo (bare connect-node, HTTP/1.1)");
  for (const r of rows) {
    if (r.extra?.delegationsCreated !== undefined) console.log(`${r.target}: ${r.extra.delegationsCreated} ACTIVE delegations made, ${r.extra.served} successes seen (warm-up included)`);
  }
  for (const r of rows) for (const w of r.warnings) console.log(`WARNING ${r.target}: ${w}`);
  if (round) return;
  const summary = {
    ...summaryHeader(),
    results: Object.fromEntries(
      rows.map((r) => [
        r.target,
        {
          rps: rounded(r.result.rps, 0),
          p50Ms: rounded(r.result.p50Ms, 3),
          p99Ms: rounded(r.result.p99Ms, 3),
          baseline: BASELINE[r.target],
          ratio: rounded(ratio(r), 3),
          ratioToEcho: rounded(r.result.rps / echoRps, 3),
          cpuUsPerReq: rounded(r.cpuUsPerRequest, 0),
          errors: r.result.errors,
          ...(r.extra ?? {}),
          ok: r.warnings.length === 0,
        },
      ]),
    ),
  };
  console.log(JSON.stringify(summary));
}

function rounded(n: number, d: number): number | null {
  return Number.isFinite(n) ? Number(n.toFixed(d)) : null;
}

function median(values: number[]): number {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/**
 * Several rounds: each row's ratio is to its baseline of the same round, and
 * the medians are over the rounds. `cpu ratio` is the baseline's CPU per
 * request divided by the row's (1.0 = as cheap as the bare server): other
 * work on the machine moves it far less than req/s.
 */
function reportRounds(rounds: Row[][]): void {
  const of = (rows: Row[], t: TargetName) => rows.find((r) => r.target === t);
  const stat = (t: TargetName) => {
    const per = rounds.map((rows) => {
      const r = of(rows, t)!;
      const base = of(rows, BASELINE[t])!;
      return { rps: r.result.rps, ratio: r.result.rps / base.result.rps, cpuRatio: base.cpuUsPerRequest / r.cpuUsPerRequest, cpu: r.cpuUsPerRequest, p99: r.result.p99Ms };
    });
    const ratios = per.map((p) => p.ratio);
    return {
      rps: median(per.map((p) => p.rps)),
      ratio: median(ratios),
      ratioMin: Math.min(...ratios),
      ratioMax: Math.max(...ratios),
      cpuRatio: median(per.map((p) => p.cpuRatio)),
      cpuUsPerReq: median(per.map((p) => p.cpu)),
      p99Ms: median(per.map((p) => p.p99)),
      ratios,
    };
  };
  const targets = TARGETS.filter((t) => of(rounds[0]!, t) !== undefined);
  const stats = new Map(targets.map((t) => [t, stat(t)]));
  const header = ["target (median of " + rounds.length + " rounds)", "req/s", "vs baseline", "(min-max)", "cpu ratio", "cpu us/req", "p99 ms"];
  const lines = targets.map((t) => {
    const x = stats.get(t)!;
    return [of(rounds[0]!, t)!.label, fmt(x.rps, 0), `${fmt(x.ratio, 3)}x`, `${fmt(x.ratioMin, 3)}-${fmt(x.ratioMax, 3)}`, fmt(x.cpuRatio, 3), fmt(x.cpuUsPerReq, 0), fmt(x.p99Ms, 2)];
  });
  console.log("");
  printTable(header, lines);
  console.log("cpu ratio: the baseline's CPU per request / the row's, in the same round (1.0 = as cheap as the bare server)");
  const summary = {
    ...summaryHeader(),
    rounds: rounds.length,
    median: Object.fromEntries(
      targets.map((t) => {
        const x = stats.get(t)!;
        return [
          t,
          {
            baseline: BASELINE[t],
            rps: rounded(x.rps, 0),
            ratio: rounded(x.ratio, 3),
            ratios: x.ratios.map((r) => rounded(r, 3)),
            cpuRatio: rounded(x.cpuRatio, 3),
            cpuUsPerReq: rounded(x.cpuUsPerReq, 0),
            p99Ms: rounded(x.p99Ms, 3),
          },
        ];
      }),
    ),
    ok: rounds.every((rows) => rows.every((r) => r.warnings.length === 0)),
  };
  console.log(JSON.stringify(summary));
}

async function runRound(): Promise<Row[]> {
  const rows: Row[] = [];
  rows.push(await benchEcho());
  if (config.targets.includes("connect-echo")) rows.push(await benchConnectEcho());
  const brokerTargets = config.targets.filter((t) => t !== "echo" && t !== "connect-echo");
  if (brokerTargets.length > 0) rows.push(...(await benchBroker(brokerTargets)));
  rows.sort((a, b) => TARGETS.indexOf(a.target) - TARGETS.indexOf(b.target));
  return rows;
}

async function main(): Promise<number> {
  const rounds: Row[][] = [];
  try {
    for (let i = 0; i < config.rounds; i++) {
      rounds.push(await runRound());
      // Each round's broker gets a fresh database, as the first did.
      await dropFreshDatabase();
      if (config.rounds > 1) report(rounds[i]!, `round ${i + 1} of ${config.rounds}`);
    }
  } finally {
    rmSync(workDir, { recursive: true, force: true });
    await dropFreshDatabase();
  }
  if (config.rounds > 1) reportRounds(rounds);
  else report(rounds[0]!);
  return rounds.some((rows) => rows.some((r) => r.warnings.length > 0)) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    killAllServers();
    console.error(err);
    dropFreshDatabase().finally(() => process.exit(2));
  },
);
