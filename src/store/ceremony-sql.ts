/**
 * Ceremonies, recorded decisions, the live state of delegator contexts and
 * GSAP approvals, as SQL. Every change that others must hear of appends its
 * event through the lifecycle's one append, in the same transaction.
 */
import type { Ceremony, DecisionRecord, Delegation } from "../domain/index.js";
import type { LifecycleSql } from "./lifecycle-sql.js";
import {
  CEREMONY_COLUMNS,
  type CeremonyRow,
  type DelegationRow,
  ceremonyFromRow,
  ceremonyValues,
  delegationFromRow,
  toNumber,
} from "./rows.js";
import { type SqlConn, forUpdate, inList, insertRows, listParam } from "./sql.js";
import type {
  CeremonyDecision,
  CeremonyQuery,
  ContextAnswer,
  DelegatorContextState,
  GsapApprovalRow,
  Transitioned,
} from "./store.js";

const OPEN = `('PENDING', 'APPROVED')`;

interface ContextRow {
  ac_id: string;
  principal_did: string;
  status: string;
  capability_ceiling: string;
  checked_time: number | string;
  attempt_time: number | string;
  failures: number | string;
  last_error: string;
}

function contextFromRow(r: ContextRow): DelegatorContextState {
  return {
    acId: r.ac_id,
    principalDid: r.principal_did,
    status: r.status,
    capabilityCeiling: r.capability_ceiling,
    checkedTime: toNumber(r.checked_time),
    attemptTime: toNumber(r.attempt_time),
    failures: toNumber(r.failures),
    lastError: r.last_error,
  };
}

interface ApprovalRow {
  delegation_id: string;
  poll_token: string;
  deadline: number | string;
  next_poll_time: number | string;
  attempts: number | string;
  last_error: string;
  create_time: number | string;
  agent_client_id: string;
  idp_object_id: string;
  display_name: string;
  request_scope: string;
  request_id: string;
}

function approvalFromRow(r: ApprovalRow): GsapApprovalRow {
  return {
    delegationId: r.delegation_id,
    pollToken: r.poll_token,
    deadline: toNumber(r.deadline),
    nextPollTime: toNumber(r.next_poll_time),
    attempts: toNumber(r.attempts),
    lastError: r.last_error,
    createTime: toNumber(r.create_time),
    agentClientId: r.agent_client_id,
    idpObjectId: r.idp_object_id,
    displayName: r.display_name,
    requestScope: r.request_scope,
    requestId: r.request_id,
  };
}

export class CeremonySql {
  constructor(private readonly lifecycle: LifecycleSql) {}

  // --- ceremonies

  async request(tx: SqlConn, c: Ceremony, d: Delegation, actor: string, decision: DecisionRecord | undefined): Promise<bigint> {
    await insertRows(tx, "ceremonies", CEREMONY_COLUMNS, [ceremonyValues(c)]);
    const revisions = await this.lifecycle.append(
      tx,
      [
        ...(decision ? [{ delegation: d, type: "COMMAND_DECIDED" as const, reason: decision.reason, actor, cascaded: false, decision }] : []),
        { delegation: d, type: "CEREMONY_REQUESTED", reason: "requested", actor, cascaded: false, ceremony: c },
      ],
      c.requestTime,
    );
    return revisions.at(-1)!;
  }

  async decide(tx: SqlConn, spec: CeremonyDecision): Promise<{ ceremony: Ceremony; revision: bigint } | { refused: Ceremony | null }> {
    const [row] = await tx.all<CeremonyRow>(
      `UPDATE "ceremonies" SET "state" = $1, "decided_by" = $2, "decide_time" = $3, "reason" = $4
        WHERE "id" = $5 AND "state" = 'PENDING' AND "expire_time" > $3
          AND EXISTS (SELECT 1 FROM "delegations" d WHERE d."id" = "ceremonies"."delegation_id" AND d."state" = 'ACTIVE')
    RETURNING *`,
      [spec.approve ? "APPROVED" : "DENIED", spec.actor, spec.now, spec.reason, spec.id],
    );
    if (!row) return { refused: await this.get(tx, spec.id) };
    const ceremony = ceremonyFromRow(row);
    const [d] = await tx.all<DelegationRow>(`SELECT * FROM "delegations" WHERE "id" = $1`, [ceremony.delegationId]);
    const [revision] = await this.lifecycle.append(
      tx,
      [
        {
          delegation: delegationFromRow(d!),
          type: spec.approve ? "CEREMONY_APPROVED" : "CEREMONY_DENIED",
          reason: spec.approve ? "approved" : "denied",
          actor: spec.actor,
          cascaded: false,
          ceremony,
        },
      ],
      spec.now,
    );
    return { ceremony, revision: revision! };
  }

  async get(conn: SqlConn, id: string): Promise<Ceremony | null> {
    const [row] = await conn.all<CeremonyRow>(`SELECT * FROM "ceremonies" WHERE "id" = $1`, [id]);
    return row ? ceremonyFromRow(row) : null;
  }

  async list(conn: SqlConn, q: CeremonyQuery): Promise<Ceremony[]> {
    const where = [`c."state" = $1`];
    const params: unknown[] = [q.state];
    const add = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace("?", `$${params.length}`));
    };
    if (q.delegationId) add(`c."delegation_id" = ?`, q.delegationId);
    if (q.delegatorDid) add(`d."delegator_did" = ?`, q.delegatorDid);
    if (q.afterId) add(`c."id" > ?`, q.afterId);
    params.push(q.limit);
    const rows = await conn.all<CeremonyRow>(
      `SELECT c.* FROM "ceremonies" c JOIN "delegations" d ON d."id" = c."delegation_id"
        WHERE ${where.join(" AND ")} ORDER BY c."id" LIMIT $${params.length}`,
      params,
    );
    return rows.map(ceremonyFromRow);
  }

  /**
   * Open ceremonies past their expiry, or of a delegation no longer ACTIVE,
   * become EXPIRED, with their events; at most `limit` per call.
   */
  async expire(tx: SqlConn, now: number, limit: number): Promise<Transitioned[]> {
    const due = await tx.all<{ id: string }>(
      `SELECT c."id" FROM "ceremonies" c JOIN "delegations" d ON d."id" = c."delegation_id"
        WHERE c."state" IN ${OPEN} AND (c."expire_time" <= $1 OR d."state" <> 'ACTIVE')
        ORDER BY c."expire_time", c."id" LIMIT $2${forUpdate(tx, true)}`,
      [now, limit],
    );
    if (due.length === 0) return [];
    const rows = await tx.all<CeremonyRow>(
      `UPDATE "ceremonies" SET "state" = 'EXPIRED',
              "reason" = CASE WHEN "expire_time" <= $1 THEN 'expired' ELSE 'delegation_ended' END
        WHERE ${inList(tx, `"id"`, 2)} AND "state" IN ${OPEN}
    RETURNING *`,
      [now, listParam(tx, due.map((r) => r.id))],
    );
    if (rows.length === 0) return [];
    const ceremonies = rows.map(ceremonyFromRow).sort((a, b) => a.expireTime - b.expireTime || (a.id < b.id ? -1 : 1));
    const ids = [...new Set(ceremonies.map((c) => c.delegationId))];
    const ds = await tx.all<DelegationRow>(`SELECT * FROM "delegations" WHERE ${inList(tx, `"id"`, 1)}`, [listParam(tx, ids)]);
    const byId = new Map(ds.map((r) => [r.id, delegationFromRow(r)]));
    const revisions = await this.lifecycle.append(
      tx,
      ceremonies.map((c) => ({ delegation: byId.get(c.delegationId)!, type: "CEREMONY_EXPIRED" as const, reason: c.reason, actor: "", cascaded: false, ceremony: c })),
      now,
    );
    return ceremonies.map((c, i) => ({ delegation: byId.get(c.delegationId)!, revision: revisions[i]! }));
  }

  async nextExpiry(conn: SqlConn): Promise<number | null> {
    const [row] = await conn.all<{ t: number | string | null }>(`SELECT MIN("expire_time") AS "t" FROM "ceremonies" WHERE "state" IN ${OPEN}`);
    return row?.t === null || row?.t === undefined ? null : toNumber(row.t);
  }

  // --- recorded decisions

  async recordDecision(tx: SqlConn, d: Delegation, decision: DecisionRecord, actor: string, now: number): Promise<bigint> {
    const [revision] = await this.lifecycle.append(tx, [{ delegation: d, type: "COMMAND_DECIDED", reason: decision.reason, actor, cascaded: false, decision }], now);
    return revision!;
  }

  // --- delegator contexts

  async recordAnswer(conn: SqlConn, a: ContextAnswer): Promise<void> {
    await conn.run(
      `INSERT INTO "delegator_contexts" ("ac_id", "principal_did", "status", "capability_ceiling", "checked_time", "attempt_time", "failures", "last_error")
       VALUES ($1, $2, $3, $4, $5, $5, 0, '')
       ON CONFLICT ("ac_id") DO UPDATE SET "principal_did" = excluded."principal_did", "status" = excluded."status",
         "capability_ceiling" = excluded."capability_ceiling", "checked_time" = excluded."checked_time",
         "attempt_time" = excluded."attempt_time", "failures" = 0, "last_error" = ''`,
      [a.acId, a.principalDid, a.status, a.capabilityCeiling, a.now],
    );
  }

  async recordFailure(conn: SqlConn, acId: string, now: number, error: string): Promise<void> {
    await conn.run(
      `UPDATE "delegator_contexts" SET "attempt_time" = $1, "failures" = "failures" + 1, "last_error" = $2 WHERE "ac_id" = $3`,
      [now, error.slice(0, 500), acId],
    );
  }

  async getContext(conn: SqlConn, acId: string): Promise<DelegatorContextState | null> {
    const [row] = await conn.all<ContextRow>(`SELECT * FROM "delegator_contexts" WHERE "ac_id" = $1`, [acId]);
    return row ? contextFromRow(row) : null;
  }

  /** Root contexts with ACTIVE delegations last tried before `triedBefore`, least recently tried first. */
  async contextsDue(conn: SqlConn, triedBefore: number, limit: number): Promise<DelegatorContextState[]> {
    const rows = await conn.all<ContextRow>(
      `SELECT c.* FROM "delegator_contexts" c
        WHERE c."attempt_time" < $1
          AND EXISTS (SELECT 1 FROM "delegations" d WHERE d."root_ac_id" = c."ac_id" AND d."state" = 'ACTIVE')
        ORDER BY c."attempt_time" LIMIT $2`,
      [triedBefore, limit],
    );
    return rows.map(contextFromRow);
  }

  /**
   * One window of adoption: a row (due at once) for each root context of the
   * first `limit` ACTIVE delegations with ids after `after` that has none.
   * A window, not the table: one statement over every ACTIVE delegation held
   * the write lock, and the event loop, 200 ms at 100,000 of them.
   */
  async adoptContexts(conn: SqlConn, after: string, limit: number): Promise<ContextWindow & { added: number }> {
    const window = await windowAfter(conn, `SELECT "id" AS k FROM "delegations" WHERE "state" = 'ACTIVE' AND "id" > $1 ORDER BY "id" LIMIT $2`, after, limit);
    if (window.last === null) return { added: 0, next: null };
    const added = await conn.run(
      `INSERT INTO "delegator_contexts" ("ac_id", "principal_did", "status", "capability_ceiling", "checked_time", "attempt_time")
       SELECT d."root_ac_id", MIN(d."delegator_did"), 'unknown', '', 0, 0 FROM "delegations" d
        WHERE d."state" = 'ACTIVE' AND d."id" > $1 AND d."id" <= $2 AND d."depth" <= 1 AND d."root_ac_id" <> ''
          AND NOT EXISTS (SELECT 1 FROM "delegator_contexts" c WHERE c."ac_id" = d."root_ac_id")
        GROUP BY d."root_ac_id"
       ON CONFLICT ("ac_id") DO NOTHING`,
      [after, window.last],
    );
    return { added, next: window.next };
  }

  /**
   * One window of forgetting: of the first `limit` contexts with ids after
   * `after`, those without a REQUESTED or ACTIVE delegation last tried before
   * `forgetBefore` (a create records its context's answer before its delegation exists).
   */
  async forgetContexts(conn: SqlConn, forgetBefore: number, after: string, limit: number): Promise<ContextWindow & { forgotten: number }> {
    const window = await windowAfter(conn, `SELECT "ac_id" AS k FROM "delegator_contexts" WHERE "ac_id" > $1 ORDER BY "ac_id" LIMIT $2`, after, limit);
    if (window.last === null) return { forgotten: 0, next: null };
    const forgotten = await conn.run(
      `DELETE FROM "delegator_contexts" WHERE "ac_id" > $1 AND "ac_id" <= $2 AND "attempt_time" < $3 AND NOT EXISTS
         (SELECT 1 FROM "delegations" d WHERE d."root_ac_id" = "delegator_contexts"."ac_id" AND d."state" IN ('REQUESTED', 'ACTIVE'))`,
      [after, window.last, forgetBefore],
    );
    return { forgotten, next: window.next };
  }

  async activeFromContext(conn: SqlConn, acId: string): Promise<{ id: string; capabilityCeiling: string }[]> {
    const rows = await conn.all<{ id: string; capability_ceiling: string }>(ACTIVE_FROM_CONTEXT, [acId]);
    return rows.map((r) => ({ id: r.id, capabilityCeiling: r.capability_ceiling })).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  // --- GSAP approvals

  async addApproval(conn: SqlConn, a: GsapApprovalRow): Promise<void> {
    await conn.run(
      `INSERT INTO "gsap_approvals" ("delegation_id", "poll_token", "deadline", "next_poll_time", "attempts", "last_error", "create_time",
         "agent_client_id", "idp_object_id", "display_name", "request_scope", "request_id")
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
      [a.delegationId, a.pollToken, a.deadline, a.nextPollTime, a.attempts, a.lastError, a.createTime, a.agentClientId, a.idpObjectId, a.displayName, a.requestScope, a.requestId],
    );
  }

  async approvalsDue(conn: SqlConn, now: number, limit: number): Promise<GsapApprovalRow[]> {
    const rows = await conn.all<ApprovalRow>(
      `SELECT * FROM "gsap_approvals" WHERE "next_poll_time" <= $1 ORDER BY "next_poll_time" LIMIT $2`,
      [now, limit],
    );
    return rows.map(approvalFromRow);
  }

  async getApproval(conn: SqlConn, delegationId: string): Promise<GsapApprovalRow | null> {
    const [row] = await conn.all<ApprovalRow>(`SELECT * FROM "gsap_approvals" WHERE "delegation_id" = $1`, [delegationId]);
    return row ? approvalFromRow(row) : null;
  }

  async postponeApproval(conn: SqlConn, delegationId: string, nextPollTime: number, error: string): Promise<void> {
    await conn.run(
      `UPDATE "gsap_approvals" SET "next_poll_time" = $1, "attempts" = "attempts" + 1, "last_error" = $2 WHERE "delegation_id" = $3`,
      [nextPollTime, error.slice(0, 500), delegationId],
    );
  }

  async removeApproval(conn: SqlConn, delegationId: string): Promise<void> {
    await conn.run(`DELETE FROM "gsap_approvals" WHERE "delegation_id" = $1`, [delegationId]);
  }

  async nextApprovalPoll(conn: SqlConn): Promise<number | null> {
    const [row] = await conn.all<{ t: number | string | null }>(`SELECT MIN("next_poll_time") AS "t" FROM "gsap_approvals"`);
    return row?.t === null || row?.t === undefined ? null : toNumber(row.t);
  }
}

/**
 * A context's ACTIVE delegations, sorted here and not by the statement: with
 * ORDER BY "id", SQLite walked (state, id) through every ACTIVE delegation to
 * skip the sort (222 ms at 100,000 of them, on the event loop).
 */
export const ACTIVE_FROM_CONTEXT = `SELECT "id", "capability_ceiling" FROM "delegations" WHERE "delegator_ac_id" = $1 AND "state" = 'ACTIVE'`;

/** Where a window of a walk in key order ends: `next` is where the next window starts, null after the last. */
export interface ContextWindow {
  next: string | null;
}

/** The last key of the window `keys` (a query of keys after $1, limited to $2) selects, and where the next one starts. */
async function windowAfter(conn: SqlConn, keys: string, after: string, limit: number): Promise<{ last: string | null; next: string | null }> {
  const [row] = await conn.all<{ last: string | null; n: number | string }>(`SELECT MAX(w.k) AS last, COUNT(*) AS n FROM (${keys}) w`, [after, limit]);
  const last = row?.last ?? null;
  return { last, next: last !== null && Number(row!.n) >= limit ? last : null };
}
