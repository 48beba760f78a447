/**
 * `llm-broker migrate-prototype <prototype.db> [--dry-run] [--json]`: imports
 * the Python prototype's delegations into DATABASE_URL (pending migrations
 * applied first), checking each live one's identity with the configured
 * registrar. The work is in src/migration/; this file wires settings to it
 * and prints (its arguments are parsed by migrate-prototype-args.ts, before
 * any of this is loaded). Exit codes: 0 done (also a dry run), 1 failed, 2 usage.
 */
import { existsSync } from "node:fs";
import { eventContentId } from "../clients/chronicle/chronicle-event.js";
import { httpOptionsFrom } from "../clients/http/http-client.js";
import { redactDatabaseUrl } from "../config/redact.js";
import type { Settings } from "../config/settings.js";
import { UpstreamError } from "../domain/index.js";
import { NOTIFY_CHANNEL } from "../events/pg-notifier.js";
import { createLogger } from "../logging.js";
import type { IdentityLookup, ImportReport, ImportStore } from "../migration/index.js";
import {
  PrototypeFileError,
  PrototypeImportError,
  createKeycloakClientLookup,
  formatReport,
  importPrototype,
  readPrototype,
  reportJson,
} from "../migration/index.js";
import { createRegistrar, registrarDriver } from "../registrars/factory.js";
import { parseDatabaseUrl } from "../store/database-url.js";
import { openStore } from "../store/open-store.js";
import type { MigratePrototypeArgs } from "./migrate-prototype-args.js";

/** Runs the command; resolves with the exit code. */
export async function migratePrototype(args: MigratePrototypeArgs, settings: Settings): Promise<number> {
  const fail = (message: string) => {
    console.error(`migrate-prototype: ${message}`);
    return 1;
  };
  // Refuse a wrong file before the broker's database is created or migrated.
  try {
    readPrototype(args.path);
  } catch (err) {
    if (err instanceof PrototypeFileError) return fail(err.message);
    throw err;
  }

  const log = createLogger({ level: settings.logLevel, destination: { write: (line: string) => void process.stderr.write(line) } });
  const driver = registrarDriver(settings);
  const registrar = createRegistrar(settings, log);
  const lookups: (IdentityLookup & { close(): Promise<void> })[] =
    driver === "keycloak" ? [createKeycloakClientLookup({ ...settings.keycloak, httpOptions: httpOptionsFrom(settings.http) })] : [];
  const database = redactDatabaseUrl(settings.databaseUrl);
  let opened: Opened | undefined;
  try {
    opened = await openForImport(settings.databaseUrl, args.dryRun);
    const report = await importPrototype({
      store: opened.store,
      registrar,
      prototypePath: args.path,
      lookups,
      // The stub registers nothing and forgets between processes: it cannot tell whether an identity exists.
      verifyIdentities: driver !== "stub",
      dryRun: args.dryRun,
      capabilityOrder: settings.capabilityOrder,
      log,
    });
    if (driver === "stub") {
      report.warnings.unshift("agent identities were not checked: AGENT_REGISTRAR resolves to the stub, which registers nothing, so no delegation was revoked for a missing identity; set AGENT_REGISTRAR (and its settings) to the prototype's identity provider to check them");
    }
    if (opened.note) report.warnings.unshift(opened.note);
    print(report, { prototypePath: args.path, database }, args.json);
    return 0;
  } catch (err) {
    if (err instanceof PrototypeFileError || err instanceof PrototypeImportError) return fail(err.message);
    if (err instanceof UpstreamError) {
      return fail(`could not look up agent identities in ${err.system}: ${err.message}; nothing was imported`);
    }
    return fail(err instanceof Error ? err.message : String(err));
  } finally {
    await opened?.store.close().catch(() => {});
    for (const l of lookups) await l.close().catch(() => {});
    await registrar.close().catch(() => {});
  }
}

function print(report: ImportReport, ctx: { prototypePath: string; database: string }, json: boolean): void {
  process.stdout.write(json ? reportJson(report, ctx) : formatReport(report, ctx));
}

interface Opened {
  store: ImportStore & { close(): Promise<void> };
  /** Said in the report: why a dry run saw no delegations here. */
  note?: string;
}

/**
 * The store. A dry run writes nothing, not even migrations: a database that
 * does not exist yet, or has no schema yet, is read as empty.
 */
async function openForImport(url: string, dryRun: boolean): Promise<Opened> {
  if (!dryRun) {
    const postgres = parseDatabaseUrl(url).provider === "postgresql";
    return { store: await openStore(url, { contentId: eventContentId, ...(postgres ? { notifyChannel: NOTIFY_CHANNEL } : {}) }) };
  }
  const note = "the broker database has no schema yet (a real run applies the migrations first); the dry run read it as empty";
  const target = parseDatabaseUrl(url);
  if (target.provider === "sqlite" && !existsSync(target.path)) return { store: emptyStore(), note };
  const store = await openStore(url, { migrate: false });
  try {
    await store.get("del-00000000");
  } catch (err) {
    await store.close().catch(() => {});
    if (isMissingTable(err)) return { store: emptyStore(), note };
    throw err;
  }
  return { store };
}

/** SQLite's "no such table", PostgreSQL's undefined_table. */
function isMissingTable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return e?.code === "42P01" || (typeof e?.message === "string" && /no such table/i.test(e.message));
}

/** A database with nothing in it, for a dry run; writing to it is a bug. */
function emptyStore(): Opened["store"] {
  const refuse = () => Promise.reject(new Error("a dry run writes nothing"));
  return {
    get: async () => null,
    findByDelegatedAc: async () => null,
    insertRequested: refuse,
    activate: refuse,
    end: refuse,
    close: async () => {},
  };
}
