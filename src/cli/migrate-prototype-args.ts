/**
 * The arguments of `llm-broker migrate-prototype`, parsed before the
 * importer (and the store, the registrars) is loaded, so `--help` and usage
 * errors are instant and need no configuration.
 */

export const MIGRATE_PROTOTYPE_USAGE = `usage: llm-broker migrate-prototype <prototype.db> [--dry-run] [--json]

Imports the delegations of the Python prototype's SQLite database (opened
read-only) into DATABASE_URL, applying pending migrations first. Live
delegations become ACTIVE with their remaining TTL and budget; one whose agent
identity is gone from the identity provider (AGENT_REGISTRAR) is imported and
revoked (identity_missing); ended ones are not imported. Running it again
imports nothing twice.

  --dry-run   decide and print what would be done; write nothing
  --json      print the report as JSON (for scripts)

Exit codes: 0 done, 1 failed, 2 usage.`;

export interface MigratePrototypeArgs {
  path: string;
  dryRun: boolean;
  json: boolean;
}

/** The arguments, "help", or a usage error's message. */
export function parseMigratePrototypeArgs(argv: string[]): MigratePrototypeArgs | "help" | string {
  const positional: string[] = [];
  let dryRun = false;
  let json = false;
  for (const a of argv) {
    if (a === "--help" || a === "-h") return "help";
    else if (a === "--dry-run") dryRun = true;
    else if (a === "--json") json = true;
    else if (a.startsWith("-")) return `unknown option ${a}`;
    else positional.push(a);
  }
  if (positional.length === 0) return "the prototype database file is missing";
  if (positional.length > 1) return `one prototype database at a time (got ${positional.length} files)`;
  return { path: positional[0]!, dryRun, json };
}
