/**
 * Runs h2load (nghttp2-client) as the load generator and reads its report.
 * h2load only prints min/max/mean/sd of request time, so every request is
 * also logged (--log-file) and p50/p99 are computed from that log.
 */
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type LoadResult, type LoadSpec, grpcFrame, protocolHeaders } from "./load.js";
import { summarize } from "./stats.js";

const BINARY = process.env.H2LOAD ?? "h2load";

/** Whether an h2load binary can be executed. */
export function h2loadAvailable(): boolean {
  const r = spawnSync(BINARY, ["--version"], { encoding: "utf8", timeout: 5000 });
  return r.status === 0 && /h2load/.test(r.stdout);
}

/** Reads the integer in "label: 123 total, ..." style lines. */
function count(report: string, pattern: RegExp, what: string): number {
  const m = pattern.exec(report);
  if (!m?.[1]) throw new Error(`h2load report has no ${what}:\n${report}`);
  return Number(m[1]);
}

/** Runs one timed h2load measurement; `workDir` receives the body and the request log. */
export async function runH2load(spec: LoadSpec, workDir: string, label: string): Promise<LoadResult> {
  const bodyFile = join(workDir, `${label}.body`);
  const logFile = join(workDir, `${label}.log`);
  writeFileSync(bodyFile, spec.protocol === "grpc" ? grpcFrame(spec.body) : spec.body);

  const args = ["-t", "1", "-D", String(spec.durationS), `--log-file=${logFile}`, "-d", bodyFile];
  if (spec.protocol === "grpc") {
    // HTTP/2: `connections` sessions, the in-flight requests spread over them as streams.
    const connections = Math.min(spec.connections, spec.concurrency);
    args.push("-c", String(connections), "-m", String(Math.ceil(spec.concurrency / connections)));
  } else {
    // HTTP/1.1 without pipelining (what browsers and undici do): one request per connection at a time.
    args.push("--h1", "-c", String(spec.concurrency), "-m", "1");
  }
  for (const [k, v] of Object.entries(protocolHeaders(spec.protocol, spec.headers))) args.push("-H", `${k}: ${v}`);
  args.push(`http://${spec.host}:${spec.port}${spec.path}`);

  const report = await new Promise<string>((resolve, reject) => {
    const child = spawn(BINARY, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    // h2load stops itself after -D; this only guards against a hang.
    const guard = setTimeout(() => child.kill("SIGKILL"), (spec.durationS + 30) * 1000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(guard);
      if (code === 0) resolve(out);
      else reject(new Error(`h2load exited with ${code}:\n${out}`));
    });
  });

  const done = count(report, /requests: \d+ total, \d+ started, (\d+) done/, "done count");
  const succeeded = count(report, /(\d+) succeeded/, "succeeded count");
  // "failed" already includes the errored and timed-out requests.
  const failed = count(report, /(\d+) failed/, "failed count");
  const dataBytes = count(report, /\((\d+)\) data/, "data bytes");
  const finished = /finished in ([\d.]+)(m?s)/.exec(report);
  if (!finished?.[1]) throw new Error(`h2load report has no duration:\n${report}`);
  const elapsedS = Number(finished[1]) / (finished[2] === "ms" ? 1000 : 1);

  // Log rows: start time (µs since epoch), HTTP status, request duration (µs).
  const latencies: number[] = [];
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    const cols = line.split("\t");
    if (cols.length < 3 || cols[1] !== "200") continue;
    latencies.push(Number(cols[2]) / 1000);
  }
  const lat = summarize(latencies);
  // Requests still in flight when -D elapsed are "started" but not "done": neither ok nor errors.
  const errors = Math.max(failed, done - succeeded);
  return {
    loadgen: "h2load",
    ok: succeeded,
    errors,
    elapsedS,
    rps: succeeded / elapsedS,
    p50Ms: lat.p50Ms,
    p99Ms: lat.p99Ms,
    meanMs: lat.meanMs,
    maxMs: lat.maxMs,
    dataBytes,
    ...(errors > 0 ? { firstError: report.split("\n").find((l) => /error|fail/i.test(l)) ?? "see h2load output" } : {}),
  };
}
