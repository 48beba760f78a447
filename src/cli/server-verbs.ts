/**
 * The verbs that run the broker itself: `serve`, `migrate` and
 * `migrate-prototype`. Loaded only when one of them runs (the client verbs
 * never load the server, the store or Prisma). Configuration comes from the
 * environment; a start-up failure of the infrastructure is one line naming
 * the setting (start-failure.ts).
 */
import * as grpc from "@grpc/grpc-js";
import { startBroker } from "../app.js";
import { loadSettings } from "../config/settings.js";
import { settingsWarnings } from "../config/warnings.js";
import { migrate } from "../store/migrate.js";
import { banner } from "./banner.js";
import { CLIENT_ENV } from "./client/env.js";
import { EXIT } from "./exit-codes.js";
import type { MigratePrototypeArgs } from "./migrate-prototype-args.js";
import { describeStartFailure } from "./start-failure.js";

/** The environment without the client verbs' variables, which are no broker setting to warn about. */
function brokerEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of Object.values(CLIENT_ENV)) delete env[key];
  return env;
}

/**
 * grpc-js logs its own line when it cannot bind ("No address added …")
 * before the error reaches us; the error is reported once, as one line.
 */
function quietBindErrors(): void {
  grpc.setLogger({
    error: (...args: unknown[]) => {
      if (args.some((a) => typeof a === "string" && a.includes("No address added"))) return;
      console.error(...args);
    },
    info: (...args: unknown[]) => console.error(...args),
    debug: (...args: unknown[]) => console.error(...args),
  });
}

/** Prints a start-up failure it recognises and returns 1; rethrows anything else. */
function startFailed(err: unknown, settings: ReturnType<typeof loadSettings>): number {
  const line = describeStartFailure(err, settings);
  if (line === undefined) throw err;
  console.error(`error: ${line}`);
  return EXIT.error;
}

/** `serve`: starts the broker, prints where it listens, stops on SIGINT/SIGTERM. */
export async function serve(): Promise<number> {
  const settings = loadSettings();
  for (const warning of settingsWarnings(settings, brokerEnv())) console.error(`warning: ${warning}`);
  quietBindErrors();
  let broker: Awaited<ReturnType<typeof startBroker>>;
  try {
    broker = await startBroker(settings);
  } catch (err) {
    return startFailed(err, settings);
  }
  // Listening for the signals before the banner says the broker runs: whoever reads the banner may stop it at
  // once, and a signal with no listener yet kills the process outright (seen: exit by SIGTERM, no clean stop).
  const stopped = new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  console.log(banner(settings, { grpcPort: broker.grpcPort, webPort: broker.webPort, driver: broker.store.driver, drivers: broker.drivers }));
  await stopped;
  await broker.stop();
  return EXIT.ok;
}

/** `migrate`: applies pending migrations to DATABASE_URL. */
export async function migrateDatabase(): Promise<number> {
  const settings = loadSettings();
  try {
    const r = await migrate(settings.databaseUrl);
    console.log(r.applied.length > 0 ? `applied: ${r.applied.join(", ")}` : `up to date (${r.alreadyApplied.length} migrations)`);
    return EXIT.ok;
  } catch (err) {
    return startFailed(err, settings);
  }
}

/** `migrate-prototype`: imports the Python prototype's delegations. */
export async function migratePrototypeDatabase(args: MigratePrototypeArgs): Promise<number> {
  const settings = loadSettings();
  const { migratePrototype } = await import("./migrate-prototype.js");
  return migratePrototype(args, settings);
}
