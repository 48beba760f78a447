/**
 * Imports the delegations of a prototype database into this broker's store,
 * through the store's own lifecycle operations (insertRequested, activate,
 * end), so every import writes its CREATED event (and an ending its
 * REVOKED / EXPIRED event), which reach Watch, the audit log and the
 * consequence workers (identity deleted, GSAP context revoked) the normal way.
 *
 * What each prototype row becomes:
 * - live (active, before its expiry, budget left, identity found): ACTIVE,
 *   same id, expire time, budget and commands executed;
 * - live, but its agent identity is gone from the IdP: imported, then
 *   REVOKED `identity_missing` (so its GSAP context is revoked);
 * - active but past its expiry, or with its budget spent (the prototype's
 *   30 s sweep had not got to it): imported, then EXPIRED `ttl_elapsed` /
 *   `command_limit`, so its identity and context are cleaned up;
 * - live, made from the delegated context of a delegation that is not live
 *   here: imported, then REVOKED `parent_delegation_ended`;
 * - ended in the prototype (revoked, expired): not imported. `end` stamps
 *   the event time as the end time, and the event log must stay in time
 *   order (pruning and Watch rely on it), so the prototype's end time could
 *   not be kept; the prototype database stays the record of that history;
 * - any value this broker would refuse: skipped, with every problem named.
 * Ids are kept: the IdP's tags, GSAP's records and Chronicle's history all
 * name the prototype id. Running twice imports nothing twice.
 */
import type { DelegationState } from "../domain/index.js";
import type { Logger } from "../logging.js";
import type { AgentRegistrar } from "../registrars/registrar.js";
import type { DelegationReader, LifecycleWriter } from "../store/store.js";
import { type IdentityLookup, firstFound, registrarLookup } from "./identity-lookup.js";
import { type Parent, type Planned, planLive, skipped } from "./import-plan.js";
import { readPrototype } from "./prototype-db.js";
import { type ReadRow, readRow } from "./prototype-row.js";

export type Outcome =
  | "imported_active"
  | "imported_revoked_identity_missing"
  | "imported_ended"
  | "skipped_ended"
  | "skipped_existing"
  | "skipped_invalid";

export const OUTCOMES: readonly Outcome[] = [
  "imported_active",
  "imported_revoked_identity_missing",
  "imported_ended",
  "skipped_ended",
  "skipped_existing",
  "skipped_invalid",
];

/** What became of one prototype row. */
export interface ImportItem {
  id: string;
  /** Its status in the prototype. */
  prototypeStatus: string;
  outcome: Outcome;
  /** Its state here after the import (in a dry run, the state it would get); "" when not imported. */
  state: DelegationState | "";
  /** The end reason of an ending on import, or the prototype's revoke_reason of an ended row. */
  reason: string;
  /** What a person needs to know about it. */
  detail: string;
}

export interface ImportReport {
  dryRun: boolean;
  /** Where identities were looked for (e.g. "keycloak", "entra"); "" when they were not checked. */
  identityCheck: string;
  counts: Record<Outcome, number>;
  items: ImportItem[];
  /** What still needs a person. */
  warnings: string[];
}

/** The store operations the import uses. */
export type ImportStore = Pick<DelegationReader, "get" | "findByDelegatedAc"> & Pick<LifecycleWriter, "insertRequested" | "activate" | "end">;

export interface PrototypeImportOptions {
  store: ImportStore;
  /** The configured registrar: its backend is recorded, its listing is searched for identities. */
  registrar: AgentRegistrar;
  /** The prototype's SQLite file (opened read-only). */
  prototypePath: string;
  /** Lookups tried after the registrar's listing (the prototype's Keycloak clients). By default, none. */
  lookups?: IdentityLookup[];
  /** Check that each live delegation's identity exists. By default, true. */
  verifyIdentities?: boolean;
  /** Decide and report, write nothing. By default, false. */
  dryRun?: boolean;
  /** This broker's CAPABILITY_ORDER. By default, CAP_READ, CAP_MUTATE, CAP_ADMIN. */
  capabilityOrder?: readonly string[];
  clock?: () => number;
  log?: Logger;
}

/** The import stopped part-way (the store failed); what was imported stays, and a second run does the rest. */
export class PrototypeImportError extends Error {
  override name = "PrototypeImportError";
}

/** Imports (or, dry, plans) every delegation of the prototype database; throws PrototypeFileError for a file that is not one. */
export async function importPrototype(o: PrototypeImportOptions): Promise<ImportReport> {
  const clock = o.clock ?? Date.now;
  const order = o.capabilityOrder ?? ["CAP_READ", "CAP_MUTATE", "CAP_ADMIN"];
  const rows = readPrototype(o.prototypePath)
    .map((r) => readRow(r, order))
    // Parents before the delegations made from their contexts.
    .sort((a, b) => createTimeOf(a) - createTimeOf(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const verify = o.verifyIdentities ?? true;
  const lookup = verify ? firstFound([registrarLookup(o.registrar), ...(o.lookups ?? [])]) : undefined;
  const report: ImportReport = {
    dryRun: o.dryRun ?? false,
    identityCheck: lookup?.name ?? "",
    counts: Object.fromEntries(OUTCOMES.map((k) => [k, 0])) as Record<Outcome, number>,
    items: [],
    warnings: [],
  };
  const add = (item: ImportItem) => {
    report.items.push(item);
    report.counts[item.outcome]++;
  };
  const now = clock();
  // Contexts of rows that will not be live here: a delegation made from one ends with its parent.
  const contexts = new Map<string, Parent>();
  for (const row of rows) if (row.kind !== "live" && row.delegatedAcId) contexts.set(row.delegatedAcId, { live: false, depth: 1, rootAcId: "" });
  const plans: Planned[] = [];

  for (const row of rows) {
    if (row.kind !== "live") {
      const { item, warning } = skipped(row, now);
      add(item);
      if (warning) report.warnings.push(warning);
      continue;
    }
    const { item, planned } = await planLive(row, { store: o.store, lookup, backend: o.registrar.backend, now, contexts });
    add(item);
    if (planned) plans.push(planned);
  }

  if (report.dryRun) return report;
  let done = 0;
  try {
    for (const p of plans) {
      await apply(o.store, p, clock);
      done++;
    }
  } catch (err) {
    throw new PrototypeImportError(
      `the import stopped after ${done} of ${plans.length} delegations: ${err instanceof Error ? err.message : String(err)}; running it again imports the rest`,
      { cause: err },
    );
  }
  o.log?.info({ counts: report.counts }, "prototype delegations imported");
  return report;
}

/** REQUESTED → ACTIVE (CREATED), then the ending if it has one: the store's own operations, each one transaction. */
async function apply(store: ImportStore, p: Planned, clock: () => number): Promise<void> {
  const id = p.delegation.id;
  if (!p.resume) await store.insertRequested(p.delegation);
  const activated = await store.activate({ id, now: clock(), patch: p.patch });
  if (!activated) {
    const now = await store.get(id);
    throw new Error(`delegation ${id} was ended (${now?.state ?? "gone"}, ${now?.endReason ?? ""}) by a running broker while it was imported; stop the broker while importing`);
  }
  if (p.ending) {
    const { ending, reason, detail } = p.ending;
    await store.end({ target: { ids: [id] }, ending, reason, ...(detail ? { detail } : {}), now: clock() });
  }
}

function createTimeOf(r: ReadRow): number {
  return r.kind === "live" ? r.createTime : Number.MAX_SAFE_INTEGER;
}
