/**
 * What follows the event log, as SQL: reading and pruning it, and the
 * cursors over it of the audit outbox and of the consequence workers (with
 * their retry table, delegation_effects).
 */
import { type DelegationEvent, type EffectKind, type EventType, ENDING_EVENT_TYPES, consequencesOf, isEndingEvent } from "../domain/index.js";
import { EFFECT_COLUMNS, EVENT_READ_COLUMNS, type EffectRow, type EventRow, eventFromRow, toNumber } from "./rows.js";
import { type SqlConn, type SqlDatabase, inList, insertRows, listParam, literalList } from "./sql.js";
import type { AuditBacklog, Effect, EffectBacklog, EffectOutcomes, EventFilter, PendingAudit, PendingEndings } from "./store.js";

const MAX_ERROR = 500;

export async function headRevision(db: SqlConn): Promise<bigint> {
  const [row] = await db.all<{ value: number | string }>(`SELECT "value" FROM "broker_meta" WHERE "key" = 'revision'`);
  return BigInt(row!.value);
}

export async function prunedThrough(db: SqlConn): Promise<bigint> {
  const [row] = await db.all<{ value: number | string }>(`SELECT "value" FROM "broker_meta" WHERE "key" = 'pruned_through'`);
  return BigInt(row!.value);
}

export async function readEvents(db: SqlConn, after: bigint, limit: number, filter: EventFilter = {}): Promise<DelegationEvent[]> {
  const params: unknown[] = [after.toString(), limit];
  let where = `"revision" > $1`;
  if (filter.delegationId) {
    params.push(filter.delegationId);
    where += ` AND "delegation_id" = $${params.length}`;
  }
  if (filter.delegatorDid) {
    params.push(filter.delegatorDid);
    where += ` AND "delegator_did" = $${params.length}`;
  }
  const rows = await db.all<EventRow>(`SELECT ${EVENT_READ_COLUMNS} FROM "delegation_events" WHERE ${where} ORDER BY "revision" LIMIT $2`, params);
  return rows.map(eventFromRow);
}

/** A cursor or counter kept in broker_meta. */
export async function meta(db: SqlConn, key: string): Promise<bigint> {
  const [row] = await db.all<{ value: number | string }>(`SELECT "value" FROM "broker_meta" WHERE "key" = $1`, [key]);
  return row ? BigInt(row.value) : 0n;
}

/** Moves a cursor forward (never back: a late writer cannot undo a later one). */
async function advance(db: SqlConn, key: string, to: bigint): Promise<void> {
  await db.run(`UPDATE "broker_meta" SET "value" = $1 WHERE "key" = $2 AND "value" < $1`, [to.toString(), key]);
}

const cursorKey = (kind: EffectKind) => `cursor:${kind}`;
const AUDIT_CURSOR = "cursor:audit";

/** The event time of the first event at or after `revision`, or null. */
async function timeAt(tx: SqlConn, revision: bigint): Promise<number | null> {
  const [row] = await tx.all<{ t: number | string }>(
    `SELECT "event_time" AS "t" FROM "delegation_events" WHERE "revision" >= $1 ORDER BY "revision" LIMIT 1`,
    [revision.toString()],
  );
  return row ? toNumber(row.t) : null;
}

/**
 * The newest revision whose event was written before `before`: a binary
 * search over revisions (primary-key lookups only, never a scan of the log).
 * Event times follow revisions to within the time a transaction takes (each
 * is the writer's clock, read just before its revision is allocated), so the
 * boundary found may put an event a few milliseconds younger than `before` on
 * the pruned side, or keep one as much older: nothing a retention of hours
 * or days can tell apart.
 */
async function lastRevisionBefore(tx: SqlConn, from: bigint, head: bigint, before: number): Promise<bigint> {
  let lo = from; // known to be before (or pruned)
  let hi = head + 1n; // known not to be
  while (hi - lo > 1n) {
    const mid = (lo + hi) / 2n;
    const t = await timeAt(tx, mid);
    if (t !== null && t < before) lo = mid;
    else hi = mid;
  }
  return lo;
}

/**
 * Deletes the oldest events written before `before`, up to `maxRows`, never
 * past one the audit outbox or a consequence worker has not settled (their
 * cursors). Every lookup is by revision, so the log is never scanned.
 */
export async function pruneEvents(db: SqlDatabase, before: number, maxRows: number): Promise<{ deleted: number; more: boolean; through: bigint }> {
  return db.transaction(async (tx) => {
    const from = await prunedThrough(tx);
    let through = await lastRevisionBefore(tx, from, await headRevision(tx), before);
    for (const key of [AUDIT_CURSOR, cursorKey("idp_delete"), cursorKey("gsap_revoke")]) {
      const settled = await meta(tx, key);
      if (settled < through) through = settled;
    }
    const cap = from + BigInt(maxRows);
    const more = through > cap;
    if (more) through = cap;
    if (through <= from) return { deleted: 0, more: false, through: from };
    const deleted = await tx.run(`DELETE FROM "delegation_events" WHERE "revision" > $1 AND "revision" <= $2`, [from.toString(), through.toString()]);
    await advance(tx, "pruned_through", through);
    return { deleted, more, through };
  });
}

// --- the audit outbox: a cursor over the log

export async function pendingAudit(db: SqlConn, limit: number): Promise<PendingAudit[]> {
  const cursor = await meta(db, AUDIT_CURSOR);
  const rows = await db.all<EventRow & { audit_attempts: number | string }>(
    `SELECT ${EVENT_READ_COLUMNS}, "audit_attempts" FROM "delegation_events" WHERE "revision" > $1 ORDER BY "revision" LIMIT $2`,
    [cursor.toString(), limit],
  );
  return rows.map((r) => ({ event: eventFromRow(r), attempts: toNumber(r.audit_attempts) }));
}

export async function markAudited(db: SqlConn, through: bigint, _now: number): Promise<void> {
  await advance(db, AUDIT_CURSOR, through);
}

export async function markAuditFailed(db: SqlConn, revision: bigint, error: string): Promise<void> {
  await db.run(`UPDATE "delegation_events" SET "audit_attempts" = "audit_attempts" + 1, "audit_error" = $1 WHERE "revision" = $2`, [
    error.slice(0, MAX_ERROR),
    revision.toString(),
  ]);
}

export async function markAuditRejected(db: SqlDatabase, revision: bigint, error: string, now: number): Promise<void> {
  await db.transaction(async (tx) => {
    // An event the cursor has passed was delivered (or refused) already: nothing to refuse.
    if ((await meta(tx, AUDIT_CURSOR)) >= revision) return;
    const n = await tx.run(
      `UPDATE "delegation_events" SET "audit_state" = 'rejected', "audit_time" = $1, "audit_error" = $2, "audit_attempts" = "audit_attempts" + 1
        WHERE "revision" = $3 AND "audit_state" <> 'rejected'`,
      [now, error.slice(0, MAX_ERROR), revision.toString()],
    );
    if (n > 0) await tx.run(`UPDATE "broker_meta" SET "value" = "value" + 1 WHERE "key" = 'audit_rejected'`);
    await advance(tx, AUDIT_CURSOR, revision);
  });
}

export function auditCursor(db: SqlConn): Promise<bigint> {
  return meta(db, AUDIT_CURSOR);
}

export async function auditBacklog(db: SqlConn): Promise<AuditBacklog> {
  // Revisions are gap-free and never pruned past the cursor: the backlog is a subtraction.
  const cursor = await meta(db, AUDIT_CURSOR);
  const pending = Number((await headRevision(db)) - cursor);
  return {
    pending,
    oldestPendingTime: pending > 0 ? await timeAt(db, cursor + 1n) : null,
    rejected: Number(await meta(db, "audit_rejected")),
  };
}

// --- consequences of endings: a cursor per kind over the log, and a retry table

const ENDING_TYPES = literalList(ENDING_EVENT_TYPES);

const TARGET_COLUMNS = `d."agent_client_id", d."idp_object_id", d."idp_backend", d."delegated_ac_id", d."end_reason"`;

function effectFromRow(kind: EffectKind, r: EffectRow): Effect {
  return {
    kind,
    delegationId: r.delegation_id,
    revision: BigInt(r.revision),
    attempts: toNumber(r.attempts),
    createTime: toNumber(r.create_time),
    ...(r.id !== undefined ? { retryId: toNumber(r.id) } : {}),
    target: {
      agentClientId: r.agent_client_id,
      idpObjectId: r.idp_object_id,
      idpBackend: r.idp_backend,
      delegatedAcId: r.delegated_ac_id,
      endReason: r.end_reason,
    },
  };
}

/**
 * The endings after `kind`'s cursor (events read by revision, joined with
 * their delegation by id): every ending deletes its identity; only one with
 * a delegated context revokes it.
 */
export async function pendingEndings(db: SqlConn, kind: EffectKind, limit: number): Promise<PendingEndings> {
  const cursor = await meta(db, cursorKey(kind));
  const rows = await db.all<EffectRow & { type: string }>(
    `SELECT e."revision", e."type", e."delegation_id", 0 AS "attempts", e."event_time" AS "create_time", ${TARGET_COLUMNS}
       FROM "delegation_events" e JOIN "delegations" d ON d."id" = e."delegation_id"
      WHERE e."revision" > $1 ORDER BY e."revision" LIMIT $2`,
    [cursor.toString(), limit],
  );
  const last = rows[rows.length - 1];
  const items: Effect[] = [];
  for (const r of rows) {
    if (!isEndingEvent(r.type as EventType)) continue;
    const effect = effectFromRow(kind, r);
    if (consequencesOf(effect.target).includes(kind)) items.push(effect);
  }
  return { items, through: last ? BigInt(last.revision) : cursor, examined: rows.length };
}

export async function dueRetries(db: SqlConn, kind: EffectKind, now: number, limit: number): Promise<Effect[]> {
  const rows = await db.all<EffectRow>(
    `SELECT x."id", x."delegation_id", x."revision", x."attempts", x."create_time", ${TARGET_COLUMNS}
       FROM "delegation_effects" x JOIN "delegations" d ON d."id" = x."delegation_id"
      WHERE x."kind" = $1 AND x."state" = 'pending' AND x."next_attempt_time" <= $2
      ORDER BY x."next_attempt_time", x."id" LIMIT $3`,
    [kind, now, limit],
  );
  return rows.map((r) => effectFromRow(kind, r));
}

export async function settleEffects(db: SqlDatabase, kind: EffectKind, o: EffectOutcomes, now: number): Promise<void> {
  const fresh: unknown[][] = [];
  const failure = (e: Effect, state: "pending" | "rejected", error: string, next: number) => {
    fresh.push([kind, e.delegationId, e.revision.toString(), state, 1, next, error.slice(0, MAX_ERROR), e.createTime, now]);
  };
  await db.transaction(async (tx) => {
    // Every statement names the kind and the pending state: a worker settles only its own items.
    if (o.done.length > 0) {
      await tx.run(`DELETE FROM "delegation_effects" WHERE ${inList(tx, `"id"`, 1)} AND "kind" = $2 AND "state" = 'pending'`, [
        listParam(tx, o.done),
        kind,
      ]);
    }
    for (const r of o.retry) {
      if (r.effect.retryId === undefined) failure(r.effect, "pending", r.error, r.nextAttemptTime);
      else {
        await tx.run(
          `UPDATE "delegation_effects" SET "attempts" = "attempts" + 1, "last_error" = $1, "next_attempt_time" = $2, "update_time" = $3
            WHERE "id" = $4 AND "kind" = $5 AND "state" = 'pending'`,
          [r.error.slice(0, MAX_ERROR), r.nextAttemptTime, now, r.effect.retryId, kind],
        );
      }
    }
    for (const r of o.rejected) {
      if (r.effect.retryId === undefined) failure(r.effect, "rejected", r.error, now);
      else {
        await tx.run(
          `UPDATE "delegation_effects" SET "state" = 'rejected', "attempts" = "attempts" + 1, "last_error" = $1, "update_time" = $2
            WHERE "id" = $3 AND "kind" = $4 AND "state" = 'pending'`,
          [r.error.slice(0, MAX_ERROR), now, r.effect.retryId, kind],
        );
      }
    }
    await insertRows(tx, "delegation_effects", EFFECT_COLUMNS, fresh);
    if (o.through !== undefined) await advance(tx, cursorKey(kind), o.through);
  });
}

export async function nextRetryTime(db: SqlConn, kind: EffectKind): Promise<number | null> {
  const [row] = await db.all<{ t: number | string | null }>(
    `SELECT MIN("next_attempt_time") AS "t" FROM "delegation_effects" WHERE "kind" = $1 AND "state" = 'pending'`,
    [kind],
  );
  return row?.t === null || row?.t === undefined ? null : toNumber(row.t);
}

export async function effectBacklog(db: SqlConn, kind: EffectKind): Promise<EffectBacklog> {
  const cursor = await meta(db, cursorKey(kind));
  // The endings after the cursor: a range of the log (short unless the worker is behind).
  const [fresh] = await db.all<{ n: number | string; oldest: number | string | null }>(
    `SELECT COUNT(*) AS "n", MIN(e."event_time") AS "oldest" FROM "delegation_events" e
       ${kind === "gsap_revoke" ? `JOIN "delegations" d ON d."id" = e."delegation_id" AND d."delegated_ac_id" <> ''` : ""}
      WHERE e."revision" > $1 AND e."type" IN ${ENDING_TYPES}`,
    [cursor.toString()],
  );
  const [retries] = await db.all<{ n: number | string; failed: number | string | null; oldest: number | string | null }>(
    `SELECT COUNT(*) AS "n", SUM(CASE WHEN "attempts" > 0 THEN 1 ELSE 0 END) AS "failed", MIN("create_time") AS "oldest"
       FROM "delegation_effects" WHERE "kind" = $1 AND "state" = 'pending'`,
    [kind],
  );
  const [rejected] = await db.all<{ n: number | string }>(
    `SELECT COUNT(*) AS "n" FROM "delegation_effects" WHERE "kind" = $1 AND "state" = 'rejected'`,
    [kind],
  );
  const oldest = [fresh!.oldest, retries!.oldest].filter((t) => t !== null).map(toNumber);
  return {
    pending: toNumber(fresh!.n) + toNumber(retries!.n),
    retrying: retries!.failed === null ? 0 : toNumber(retries!.failed),
    oldestPendingTime: oldest.length > 0 ? Math.min(...oldest) : null,
    rejected: toNumber(rejected!.n),
  };
}

export async function effectOwed(db: SqlConn, kind: EffectKind, delegationId: string): Promise<boolean> {
  const cursor = await meta(db, cursorKey(kind));
  const rows = await db.all(
    `SELECT 1 AS "owed" FROM "delegation_events" e
       ${kind === "gsap_revoke" ? `JOIN "delegations" d ON d."id" = e."delegation_id" AND d."delegated_ac_id" <> ''` : ""}
      WHERE e."delegation_id" = $1 AND e."revision" > $2 AND e."type" IN ${ENDING_TYPES}
     UNION ALL
     SELECT 1 AS "owed" FROM "delegation_effects" WHERE "delegation_id" = $1 AND "kind" = $3 AND "state" = 'pending'
     LIMIT 1`,
    [delegationId, cursor.toString(), kind],
  );
  return rows.length > 0;
}

/** Rejected items are kept for operators until the retention passes. */
export async function pruneEffects(db: SqlConn, before: number, maxRows: number): Promise<number> {
  return db.run(
    `DELETE FROM "delegation_effects" WHERE "id" IN (
       SELECT "id" FROM "delegation_effects" WHERE "state" = 'rejected' AND "update_time" < $1 LIMIT $2)`,
    [before, maxRows],
  );
}
