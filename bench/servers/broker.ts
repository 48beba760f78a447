/**
 * The broker under test, as `npm start` would run it (startBroker with
 * settings from the environment), on the embedded default: a SQLite file in
 * a temp dir, the stub registrar, dev GSAP and dev auth. The command budget
 * cap is raised so AuthorizeCommand can stay on its ALLOW path for a whole run.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startBroker } from "../../src/app.js";
import { loadSettings } from "../../src/config/settings.js";
import { BENCH_MAX_COMMANDS } from "../lib/load.js";
import { serveUntilStopped } from "../lib/server-process.js";

const dir = mkdtempSync(join(tmpdir(), "lpb-bench-"));
const settings = loadSettings({
  // Anything else the caller exported (WATCH_POLL_MS, ...) applies, as it would to `npm start`.
  ...process.env,
  LLM_BROKER_HOST: "127.0.0.1",
  LLM_BROKER_PORT: "0",
  LLM_BROKER_WEB_PORT: "0",
  DATABASE_URL: process.env.BENCH_DATABASE_URL ?? `file:${join(dir, "broker.db")}`,
  AGENT_REGISTRAR: "stub",
  GSAP_DRIVER: "dev",
  AUTH_MODE: "dev",
  MAX_COMMANDS_CAP: String(BENCH_MAX_COMMANDS),
  // Throughput, not throttling, is measured: one principal sends everything.
  RATE_LIMIT_AUTHORIZE_PER_SECOND: "1000000",
  RATE_LIMIT_CREATE_PER_MINUTE: "1000000",
  LOG_LEVEL: process.env.BENCH_BROKER_LOG_LEVEL ?? "warn",
});

const broker = await startBroker(settings).catch((err: unknown) => {
  rmSync(dir, { recursive: true, force: true });
  throw err;
});
serveUntilStopped({ type: "ready", grpcPort: broker.grpcPort, webPort: broker.webPort }, async () => {
  await broker.stop();
  rmSync(dir, { recursive: true, force: true });
});
