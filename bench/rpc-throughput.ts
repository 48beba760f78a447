/**
 * Unary RPC throughput and latency of the broker against a bare grpc-js echo
 * server measured in the same run (see bench/README.md).
 *
 * Every server under test runs in its own process and the load comes from a
 * third one (h2load, or the Node generator when h2load is missing), so that
 * on a 2-core machine the generator never shares an event loop with the
 * server it measures.
 *
 *   npm run bench
 *   BENCH_DURATION_S=5 BENCH_CONCURRENCY=20 BENCH_LOADGEN=node npm run bench
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
  DelegationState,
  GetDelegationRequestSchema,
  GetDelegationResponseSchema,
} from "../src/gen/llmbroker/v1/delegation_pb.js";
import { DelegationService } from "../src/gen/llmbroker/v1/delegation_service_pb.js";
import { h2loadAvailable, runH2load } from "./lib/h2load.js";
import { BENCH_MAX_COMMANDS, ECHO_PATH, type LoadResult, type LoadSpec, type Protocol } from "./lib/load.js";
import { runNodeLoad } from "./lib/node-load.js";
import { type ServerProcess, killAllServers, startServerProcess } from "./lib/server-process.js";

// ---------------------------------------------------------------- settings

function envInt(key: string, def: number, min: number, max: number): number {
  const raw = process.env[key]?.trim();
  if (raw === undefined || raw === "") return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${key} must be an integer in ${min}..${max}, got "${raw}"`);
  return n;
}

const TARGETS = ["echo", "get", "authorize", "connect-get"] as const;
type TargetName = (typeof TARGETS)[number];

const config = {
  durationS: envInt("BENCH_DURATION_S", 10, 1, 600),
  warmupS: envInt("BENCH_WARMUP_S", 2, 0, 120),
  concurrency: envInt("BENCH_CONCURRENCY", 50, 1, 1000),
  connections: envInt("BENCH_CONNECTIONS", 10, 1, 1000),
  loadgen: (process.env.BENCH_LOADGEN ?? "auto") as "auto" | "h2load" | "node",
  targets: (process.env.BENCH_TARGETS ?? TARGETS.join(","))
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "") as TargetName[],
  cpuProfileDir: process.env.BENCH_CPU_PROFILE_DIR,
};
if (!["auto", "h2load", "node"].includes(config.loadgen)) throw new Error(`BENCH_LOADGEN must be auto, h2load or node`);
for (const t of config.targets) if (!TARGETS.includes(t)) throw new Error(`unknown target "${t}" in BENCH_TARGETS (${TARGETS.join(", ")})`);
if (!config.targets.includes("echo")) throw new Error("BENCH_TARGETS must include echo: every ratio is to it");

const ALICE = "did:web:example.com/user/alice";
const AUTH = { "x-delegator-did": ALICE };
const HOST = "127.0.0.1";
const SERVICE_PATH = `/${DelegationService.typeName}`;
/** Matches no default ceremony word (delete, destroy, drop) and no prohibited entry. */
const COMMAND = "git status --short";

// ---------------------------------------------------------------- helpers

let loadgen: "h2load" | "node" = config.loadgen === "node" ? "node" : "h2load";
if (loadgen === "h2load" && !h2loadAvailable()) {
  console.error("h2load not found (apt-get install -y nghttp2-client); using the Node load generator");
  loadgen = "node";
}

const loadStart = loadavg();
const workDir = mkdtempSync(join(tmpdir(), "lpb-bench-run-"));
process.on("SIGINT", () => {
  killAllServers();
  rmSync(workDir, { recursive: true, force: true });
  process.exit(130);
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
}

interface Target {
  name: TargetName;
  server: ServerProcess;
  label: string;
  spec: LoadSpec;
  /** Response bytes of one call made before the run (h2load counts DATA bytes; errors carry none). */
  sampleResponseBytes: number;
  /** Extra check after the measurement (the command counter for AuthorizeCommand). */
  verify?: (served: number) => Promise<string[]>;
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
      result.errors += failed;
      result.rps = result.ok / result.elapsedS;
    }
  }
  if (result.ok === 0) warnings.push("no request succeeded");
  if (t.verify) warnings.push(...(await t.verify(served)));
  return {
    target: t.name,
    label: t.label,
    protocol: t.spec.protocol,
    result,
    cpuUsPerRequest: (cpu * 1e6) / result.ok,
    cpuCores: cpu / result.elapsedS,
    warnings,
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

async function benchBroker(names: TargetName[]): Promise<Row[]> {
  const server: ServerProcess = await startServerProcess("broker.ts", {
    ...(config.cpuProfileDir ? { cpuProfileDir: config.cpuProfileDir } : {}),
  });
  try {
    const { grpcPort, webPort } = server.ready;
    if (webPort === undefined) throw new Error("broker did not report its web port");
    const admin = createClient(DelegationService, createGrpcTransport({ baseUrl: `http://${HOST}:${grpcPort}` }));
    const created = await admin.createDelegation(
      { delegatorAcId: "ac-bench-alice", agentType: "claude-code", scope: { maxCommands: BENCH_MAX_COMMANDS } },
      { headers: AUTH },
    );
    const id = created.delegation?.delegationId;
    if (!id) throw new Error("CreateDelegation returned no delegation");
    const executed = async () => (await admin.getDelegation({ delegationId: id }, { headers: AUTH })).delegation?.commandsExecuted ?? 0;

    const getBody = toBinary(GetDelegationRequestSchema, create(GetDelegationRequestSchema, { delegationId: id }));
    const authBody = toBinary(
      AuthorizeCommandRequestSchema,
      create(AuthorizeCommandRequestSchema, { delegationId: id, command: COMMAND }),
    );
    const getPath = `${SERVICE_PATH}/GetDelegation`;
    const authPath = `${SERVICE_PATH}/AuthorizeCommand`;

    const rows: Row[] = [];
    for (const name of names) {
      if (name === "get") {
        const sample = await grpcOnce(grpcPort, getPath, getBody, AUTH);
        const d = fromBinary(GetDelegationResponseSchema, sample).delegation;
        if (d?.delegationId !== id || d.state !== DelegationState.ACTIVE) throw new Error("GetDelegation preflight: unexpected answer");
        rows.push(
          await measure({
            name,
            server,
            label: "GetDelegation (grpc-js)",
            spec: baseSpec("grpc", grpcPort, getPath, getBody, AUTH),
            sampleResponseBytes: sample.length,
          }),
        );
      } else if (name === "authorize") {
        const sample = await grpcOnce(grpcPort, authPath, authBody, AUTH);
        const r = fromBinary(AuthorizeCommandResponseSchema, sample);
        if (r.decision !== CommandDecision.ALLOW) throw new Error(`AuthorizeCommand preflight: ${r.reason}, not ALLOW`);
        const before = await executed();
        rows.push(
          await measure({
            name,
            server,
            label: "AuthorizeCommand ALLOW (grpc-js)",
            spec: baseSpec("grpc", grpcPort, authPath, authBody, AUTH),
            sampleResponseBytes: sample.length,
            // Every ALLOW counts one command, so the counter must have moved by the successes seen
            // (plus at most the requests in flight when a timed run stopped).
            verify: async (served) => {
              const counted = (await executed()) - before;
              const slack = 2 * config.concurrency;
              return counted >= served && counted <= served + slack
                ? []
                : [`broker counted ${counted} commands, the load generator saw ${served} succeed`];
            },
          }),
        );
      } else if (name === "connect-get") {
        const sample = await connectOnce(webPort, getPath, getBody, AUTH);
        if (fromBinary(GetDelegationResponseSchema, sample).delegation?.delegationId !== id) {
          throw new Error("Connect GetDelegation preflight: unexpected answer");
        }
        rows.push(
          await measure({
            name,
            server,
            label: "GetDelegation (Connect, HTTP/1.1)",
            spec: baseSpec("connect", webPort, getPath, getBody, AUTH),
            sampleResponseBytes: sample.length,
          }),
        );
      }
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

function report(rows: Row[]): void {
  const echo = rows.find((r) => r.target === "echo")!.result;
  const header = ["target", "req/s", "p50 ms", "p99 ms", "vs echo", "server cpu", "cpu us/req", "errors"];
  const lines = rows.map((r) => [
    r.label,
    fmt(r.result.rps, 0),
    fmt(r.result.p50Ms, 2),
    fmt(r.result.p99Ms, 2),
    `${fmt(r.result.rps / echo.rps, 3)}x`,
    `${fmt(r.cpuCores * 100, 0)}%`,
    fmt(r.cpuUsPerRequest, 0),
    String(r.result.errors),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const row = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log("");
  console.log(
    `rpc-throughput: loadgen=${loadgen} duration=${config.durationS}s warmup=${config.warmupS}s concurrency=${config.concurrency}` +
      ` connections=${config.connections} node=${process.version} cpus=${cpus().length}` +
      ` loadavg=${loadStart.map((l) => l.toFixed(2)).join("/")}->${loadavg().map((l) => l.toFixed(2)).join("/")}`,
  );
  console.log(row(header));
  console.log(row(widths.map((w) => "-".repeat(w))));
  for (const l of lines) console.log(row(l));
  for (const r of rows) for (const w of r.warnings) console.log(`WARNING ${r.target}: ${w}`);

  const round = (n: number, d: number) => (Number.isFinite(n) ? Number(n.toFixed(d)) : null);
  const summary = {
    bench: "rpc-throughput",
    loadgen,
    durationS: config.durationS,
    concurrency: config.concurrency,
    connections: config.connections,
    // Other work on the machine lowers req/s; the load average tells whether the run was alone.
    loadavg1m: [round(loadStart[0]!, 2), round(loadavg()[0]!, 2)],
    results: Object.fromEntries(
      rows.map((r) => [
        r.target,
        {
          rps: round(r.result.rps, 0),
          p50Ms: round(r.result.p50Ms, 3),
          p99Ms: round(r.result.p99Ms, 3),
          ratio: round(r.result.rps / echo.rps, 3),
          cpuUsPerReq: round(r.cpuUsPerRequest, 0),
          errors: r.result.errors,
          ok: r.warnings.length === 0,
        },
      ]),
    ),
  };
  console.log(JSON.stringify(summary));
}

async function main(): Promise<number> {
  const rows: Row[] = [];
  try {
    rows.push(await benchEcho());
    const brokerTargets = config.targets.filter((t) => t !== "echo");
    if (brokerTargets.length > 0) rows.push(...(await benchBroker(brokerTargets)));
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
  report(rows);
  return rows.some((r) => r.warnings.length > 0) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    killAllServers();
    console.error(err);
    process.exit(2);
  },
);
