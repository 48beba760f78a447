/**
 * The Node load generator, run as its own process (never inside the server
 * under test): keeps `concurrency` unary requests in flight for a fixed time
 * and records each one's latency. Reads its LoadSpec from BENCH_LOAD_SPEC and
 * prints one `RESULT {json}` line.
 */
import * as http from "node:http";
import * as grpc from "@grpc/grpc-js";
import type { LoadResult, LoadSpec } from "./load.js";
import { protocolHeaders } from "./load.js";
import { summarize } from "./stats.js";

type WireSpec = Omit<LoadSpec, "body"> & { bodyBase64: string };

/** Upper bound on requests per measurement, so a very fast target cannot exhaust memory. */
const MAX_REQUESTS = 5_000_000;
const CALL_DEADLINE_MS = 10_000;

const spec = JSON.parse(process.env.BENCH_LOAD_SPEC ?? "null") as WireSpec | null;
if (!spec) {
  console.error("BENCH_LOAD_SPEC is not set");
  process.exit(2);
}
const body = Buffer.from(spec.bodyBase64, "base64");
const headers = protocolHeaders(spec.protocol, spec.headers);

// A hard stop in case a request neither completes nor times out.
setTimeout(() => {
  console.error("node load generator: hard timeout");
  process.exit(3);
}, (spec.durationS + 30) * 1000).unref();

type Call = () => Promise<void>;

function grpcCalls(): { calls: Call[]; close(): void } {
  const connections = Math.max(1, Math.min(spec!.connections, spec!.concurrency));
  // A local subchannel pool per client: otherwise grpc-js shares one HTTP/2 connection among them all.
  const clients = Array.from(
    { length: connections },
    () => new grpc.Client(`${spec!.host}:${spec!.port}`, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 }),
  );
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(spec!.headers)) metadata.set(k, v);
  // Buffers pass through untouched: the generator should spend no time on protobuf.
  const same = (b: Buffer) => b;
  const calls = Array.from({ length: spec!.concurrency }, (_, i): Call => {
    const client = clients[i % connections]!;
    return () =>
      new Promise<void>((resolve, reject) => {
        client.makeUnaryRequest(spec!.path, same, same, body, metadata.clone(), { deadline: Date.now() + CALL_DEADLINE_MS }, (err) =>
          err ? reject(err) : resolve(),
        );
      });
  });
  return { calls, close: () => clients.forEach((c) => c.close()) };
}

function connectCalls(): { calls: Call[]; close(): void } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: spec!.concurrency });
  const call: Call = () =>
    new Promise<void>((resolve, reject) => {
      const req = http.request(
        {
          host: spec!.host,
          port: spec!.port,
          method: "POST",
          path: spec!.path,
          agent,
          timeout: CALL_DEADLINE_MS,
          headers: { ...headers, "content-length": String(body.length) },
        },
        (res) => {
          res.on("data", () => {});
          res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", reject);
      req.end(body);
    });
  return { calls: Array.from({ length: spec!.concurrency }, () => call), close: () => agent.destroy() };
}

async function main(): Promise<void> {
  const { calls, close } = spec!.protocol === "grpc" ? grpcCalls() : connectCalls();
  const latencies: number[] = [];
  let errors = 0;
  let issued = 0;
  let firstError: string | undefined;
  const start = process.hrtime.bigint();
  const until = start + BigInt(Math.round(spec!.durationS * 1e9));

  // Each lane keeps one request in flight until the time or the request budget is spent.
  const lane = async (call: Call) => {
    while (process.hrtime.bigint() < until && issued < MAX_REQUESTS) {
      issued++;
      const t0 = process.hrtime.bigint();
      try {
        await call();
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      } catch (err) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
    }
  };
  await Promise.all(calls.map(lane));
  const elapsedS = Number(process.hrtime.bigint() - start) / 1e9;
  close();

  const lat = summarize(latencies);
  const result: LoadResult = {
    loadgen: "node",
    ok: latencies.length,
    errors,
    elapsedS,
    rps: latencies.length / elapsedS,
    p50Ms: lat.p50Ms,
    p99Ms: lat.p99Ms,
    meanMs: lat.meanMs,
    maxMs: lat.maxMs,
    ...(firstError !== undefined ? { firstError } : {}),
  };
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
