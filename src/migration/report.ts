/**
 * How an import report reads: a summary for people, JSON for scripts. Both
 * carry ids, states, reasons and counts only: the prototype's table holds no
 * secret, and nothing here reads one.
 */
import type { ImportReport, Outcome } from "./prototype-import.js";

const LABELS: Record<Outcome, string> = {
  imported_active: "imported, ACTIVE",
  imported_revoked_identity_missing: "imported, then revoked: identity missing",
  imported_ended: "imported, then ended (expired, budget spent, parent ended)",
  skipped_ended: "skipped: ended in the prototype (history not imported)",
  skipped_existing: "skipped: already imported",
  skipped_invalid: "skipped: invalid",
};

/** Where the import read from and wrote to, for the heading. */
export interface ReportContext {
  prototypePath: string;
  /** The broker database, without credentials. */
  database: string;
}

/** The human summary. */
export function formatReport(report: ImportReport, ctx: ReportContext): string {
  const lines: string[] = [];
  const verb = report.dryRun ? "would import" : "imported";
  lines.push(`migrate-prototype: ${ctx.prototypePath} → ${ctx.database}${report.dryRun ? "  (dry run: nothing was written)" : ""}`);
  lines.push(`identities checked in: ${report.identityCheck || "nowhere (not checked)"}`);
  lines.push("");
  const width = Math.max(...Object.values(LABELS).map((l) => l.length));
  for (const [outcome, label] of Object.entries(LABELS) as [Outcome, string][]) {
    lines.push(`  ${label.padEnd(width)}  ${String(report.counts[outcome]).padStart(5)}`);
  }
  if (report.items.length > 0) {
    lines.push("", "delegations:");
    for (const item of report.items) {
      const what = item.outcome.startsWith("imported")
        ? `${verb} → ${item.state}${item.reason ? ` (${item.reason})` : ""}`
        : item.outcome === "skipped_existing"
          ? `skipped, already here (${item.state})`
          : item.outcome === "skipped_ended"
            ? `skipped, ${item.prototypeStatus}${item.reason ? ` (${item.reason})` : ""}`
            : "skipped, invalid";
      lines.push(`  ${(item.id || "(no id)").padEnd(30)}  ${what}: ${item.detail}`);
    }
  }
  const endedHere = report.counts.imported_revoked_identity_missing + report.counts.imported_ended;
  if (!report.dryRun && endedHere > 0) {
    lines.push("", `The broker carries out the consequences of the ${endedHere} ending(s) (agent identity deleted, GSAP context revoked) and delivers every event to the audit log when it runs.`);
  }
  if (report.warnings.length > 0) {
    lines.push("", "needs attention:");
    for (const w of report.warnings) lines.push(`  - ${w}`);
  }
  return `${lines.join("\n")}\n`;
}

/** The report for scripts: the same facts, with snake_case keys (as the prototype named its fields). */
export function reportJson(report: ImportReport, ctx: ReportContext): string {
  return `${JSON.stringify(
    {
      dry_run: report.dryRun,
      prototype: ctx.prototypePath,
      database: ctx.database,
      identity_check: report.identityCheck,
      counts: report.counts,
      delegations: report.items.map((i) => ({
        delegation_id: i.id,
        prototype_status: i.prototypeStatus,
        outcome: i.outcome,
        state: i.state,
        reason: i.reason,
        detail: i.detail,
      })),
      warnings: report.warnings,
    },
    null,
    2,
  )}\n`;
}
