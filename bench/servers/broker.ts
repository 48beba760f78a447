/**
 * The broker under test, as `npm start` would run it (startBroker with
 * settings from the environment), on the embedded default: a SQLite file in
 * a temp dir, the stub registrar, dev GSAP and dev auth. The command budget
 * cap is raised so AuthorizeCommand can stay on its ALLOW path for a whole run.
 *
 * Over IPC it also answers {type: "stats"} with its event-loop delay since the
 * last {type: "stats-reset"}, its memory (after a GC when run with
 * --expose-gc) and the latencies of consequences and expiries it observed,
 * the Watch subscribers it holds, its active handles (by resource type) and
 * the size of the GetDelegation read model.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { writeHeapSnapshot } from "node:v8";
import { ensureBuild } from "../../scripts/ensure-build.mjs";
import type * as App from "../../src/app.js";
import type * as Config from "../../src/config/settings.js";
import { BENCH_MAX_COMMANDS } from "../lib/load.js";
import { serveUntilStopped } from "../lib/server-process.js";

// The build `npm start` runs (dist/, built first if a source changed since the last build), unless
// BENCH_BROKER_BUILD=src: the sources through tsx, whose per-call helpers (esbuild's __name) cost extra.
const build = process.env.BENCH_BROKER_BUILD?.trim() || "dist";
if (build !== "dist" && build !== "src") throw new Error(`BENCH_BROKER_BUILD must be dist or src, not "${build}"`);
if (build === "dist") ensureBuild(fileURLToPath(new URL("../..", import.meta.url)));
const root = build === "dist" ? "../../dist" : "../../src";
const { startBroker } = (await import(`${root}/app.js`)) as typeof App;
const { loadSettings } = (await import(`${root}/config/settings.js`)) as typeof Config;

const dir = mkdtempSync(join(tmpdir(), "lpb-bench-"));
const settings = loadSettings({
  // Anything else the caller exported (WATCH_POLL_MS, ...) applies, as it would to `npm start`.
  AGENT_REGISTRAR: "stub",
  GSAP_DRIVER: "dev",
  ...process.env,
  LLM_BROKER_HOST: "127.0.0.1",
  LLM_BROKER_PORT: "0",
  LLM_BROKER_WEB_PORT: "0",
  DATABASE_URL: process.env.BENCH_DATABASE_URL ?? `file:${join(dir, "broker.db")}`,
  AUTH_MODE: "dev",
  MAX_COMMANDS_CAP: String(BENCH_MAX_COMMANDS),
  // Throughput, not throttling, is measured: one principal sends everything.
  RATE_LIMIT_AUTHORIZE_PER_SECOND: "1000000",
  RATE_LIMIT_CREATE_PER_MINUTE: "1000000",
  LOG_LEVEL: process.env.BENCH_BROKER_LOG_LEVEL ?? "warn",
});

const delay = monitorEventLoopDelay({ resolution: 5 });
delay.enable();
const effectLatencies: Record<string, number[]> = { idp_delete: [], gsap_revoke: [] };
const expiryLateness: number[] = [];
/** Commit (event time) to the last write of each fan-out, with its size. */
const fanOuts: { ms: number; deliveries: number }[] = [];
const startedAt = performance.now();

const broker = await startBroker(settings, {
  onEffectDone: (kind, ms) => effectLatencies[kind]!.push(ms),
  onExpired: (ms) => expiryLateness.push(ms),
  onFannedOut: (eventTime, deliveries, doneAt) => fanOuts.push({ ms: doneAt - eventTime, deliveries }),
}).catch((err: unknown) => {
  rmSync(dir, { recursive: true, force: true });
  throw err;
});
const listeningAfterMs = performance.now() - startedAt;

process.on("message", (m: unknown) => {
  const type = (m as { type?: string } | null)?.type;
  if (type === "heap-snapshot") {
    (globalThis as { gc?: () => void }).gc?.();
    process.send!({ type: "heap-snapshot", file: writeHeapSnapshot((m as { file?: string }).file) });
    return;
  }
  if (type === "stats-reset") {
    delay.reset();
    for (const k of Object.keys(effectLatencies)) effectLatencies[k] = [];
    expiryLateness.length = 0;
    fanOuts.length = 0;
  } else if (type === "stats") {
    (globalThis as { gc?: () => void }).gc?.();
    const mem = process.memoryUsage();
    process.send!({
      type: "stats",
      listeningAfterMs,
      eventLoopDelayMs: { max: delay.max / 1e6, p99: delay.percentile(99) / 1e6, mean: delay.mean / 1e6 },
      memory: { rss: mem.rss, heapUsed: mem.heapUsed, heapTotal: mem.heapTotal, external: mem.external, arrayBuffers: mem.arrayBuffers },
      effectLatencies,
      expiryLateness,
      fanOuts,
      watchers: broker.hub.subscriberCount,
      // What keeps the event loop alive (sockets, servers, timers, ...): a leak of these grows without bound (soak.ts).
      activeHandles: (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles().length,
      activeRequests: (process as unknown as { _getActiveRequests(): unknown[] })._getActiveRequests().length,
      activeResources: countByType(process.getActiveResourcesInfo()),
      readModelEntries: readModelEntries(),
    });
  }
});

/** Delegations the GetDelegation read model holds (src/events/read-model.ts), reached through private fields: undefined if they move. */
function readModelEntries(): number | undefined {
  const reads = (broker.useCases as unknown as { read?: { reads?: { size?: unknown } } }).read?.reads;
  return typeof reads?.size === "number" ? reads.size : undefined;
}

function countByType(types: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const t of types) counts[t] = (counts[t] ?? 0) + 1;
  return counts;
}

serveUntilStopped({ type: "ready", grpcPort: broker.grpcPort, webPort: broker.webPort }, async () => {
  await broker.stop();
  rmSync(dir, { recursive: true, force: true });
});
