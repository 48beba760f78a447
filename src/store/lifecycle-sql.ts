/**
 * State changes, as SQL: every one a single transaction that changes the
 * delegation rows, appends their events with consecutive revisions and, for
 * endings, writes the work items of their consequences.
 *
 * Lock order on PostgreSQL: delegation rows first, then the revision counter
 * (broker_meta 'revision'), taken once per transaction after every row it
 * changes. Holding the counter until commit makes revisions commit in order,
 * so a reader of "events after N" never skips one that commits later; taking
 * it last means no transaction waits for a delegation row while holding it.
 * It is held until the COMMIT, so every other event-writing transaction waits
 * that long: on PostgreSQL the counter, the events and the notification go in
 * one statement where they can (see append), as the transaction's last.
 */
import {
  type Ceremony,
  type DecisionRecord,
  type Delegation,
  type DelegationEvent,
  type DelegationState,
  EndReason,
  type EventType,
  FINAL_STATES,
  LIVE_STATES,
  TRANSITIONS,
  isEndingEvent,
} from "../domain/index.js";
import {
  type CeremonyRow,
  DELEGATION_COLUMNS,
  type DelegationRow,
  EFFECT_COLUMNS,
  EVENT_COLUMNS,
  ceremonyFromRow,
  delegationFromRow,
  delegationValues,
  eventDetailJson,
  pgSnapshotSql,
  toNumber,
} from "./rows.js";
import type { RecentEvents } from "./recent-events.js";
import { type SqlConn, forUpdate, inList, insertRows, listParam, literalList } from "./sql.js";
import type {
  ActivateSpec,
  ClaimResult,
  CompleteIdempotency,
  CountOptions,
  CountResult,
  EndSpec,
  Ended,
  IdempotencyClaim,
  IdempotencyKeyRef,
  IdempotencyRecord,
  Transitioned,
} from "./store.js";

/** Computes the content id of an event's audit record when it is written. */
export type ContentId = (event: DelegationEvent) => string;

/** What a change appends: one event per delegation. */
export interface Change {
  delegation: Delegation;
  type: EventType;
  reason: string;
  /** Who caused it; "" for the broker. */
  actor: string;
  cascaded: boolean;
  ceremony?: Ceremony;
  decision?: DecisionRecord;
}

/** The live states as SQL literals, matching the partial indexes on delegator_ac_id and root_ac_id (PostgreSQL). */
const LIVE = literalList(LIVE_STATES);

/** The ACTIVE delegations due at $1, the first $2 in the order they expire (the partial index on expire_time, id). */
export const EXPIRY_DUE = `SELECT "id" FROM "delegations" WHERE "state" = 'ACTIVE' AND "expire_time" <= $1 ORDER BY "expire_time", "id" LIMIT $2`;
/** The live delegations made from the contexts in the list $1 (a cascade's next level). */
export function liveFromContexts(conn: SqlConn): string {
  return `SELECT "id" FROM "delegations" WHERE ${inList(conn, `"delegator_ac_id"`, 1)} AND "state" IN ${LIVE} ORDER BY "id"`;
}

/** Deepest cascade followed in one transaction (MAX_DELEGATION_DEPTH is at most 16). */
const MAX_CASCADE_DEPTH = 32;

export interface KeyRow {
  scope: string;
  method: string;
  request_id: string;
  request_hash: string;
  delegation_id: string;
  response: string | null;
  create_time: number | string;
  response_time: number | string | null;
  answered_time: number | string | null;
}

export function keyFromRow(r: KeyRow): IdempotencyRecord {
  return {
    scope: r.scope,
    method: r.method,
    requestId: r.request_id,
    requestHash: r.request_hash,
    delegationId: r.delegation_id,
    response: r.response,
    createTime: toNumber(r.create_time),
    responseTime: r.response_time === null ? null : toNumber(r.response_time),
    answeredTime: r.answered_time === null ? null : toNumber(r.answered_time),
  };
}

const KEY_WHERE = `"scope" = $1 AND "method" = $2 AND "request_id" = $3`;
const keyParams = (k: IdempotencyKeyRef) => [k.scope, k.method, k.requestId];

/** Inserts a claim unless the key exists; the existing record otherwise. */
export async function claimKey(conn: SqlConn, claim: IdempotencyClaim, now: number): Promise<ClaimResult> {
  const inserted = await conn.run(
    `INSERT INTO "idempotency_keys" ("scope", "method", "request_id", "request_hash", "delegation_id", "response", "create_time")
     VALUES ($1, $2, $3, $4, $5, NULL, $6) ON CONFLICT DO NOTHING`,
    [...keyParams(claim), claim.requestHash, claim.delegationId, now],
  );
  if (inserted === 1) return { kind: "claimed" };
  const [row] = await conn.all<KeyRow>(`SELECT * FROM "idempotency_keys" WHERE ${KEY_WHERE}`, keyParams(claim));
  // Deleted between the insert and the read (released by the first request): claim again.
  if (!row) return claimKey(conn, claim, now);
  return { kind: "existing", record: keyFromRow(row) };
}

export async function releaseKey(conn: SqlConn, ref: IdempotencyKeyRef, unanswered = false): Promise<void> {
  await conn.run(`DELETE FROM "idempotency_keys" WHERE ${KEY_WHERE}${unanswered ? ` AND "response" IS NULL` : ""}`, keyParams(ref));
}

async function completeKey(conn: SqlConn, key: CompleteIdempotency, d: Delegation): Promise<void> {
  await conn.run(`UPDATE "idempotency_keys" SET "response" = $4, "response_time" = $5 WHERE ${KEY_WHERE}`, [
    ...keyParams(key),
    key.response(d),
    key.handOutByRetry ? null : d.updateTime,
  ]);
}

/** Marks a key's answer handed out, unless it already is; true when this call marked it. */
export async function markKeyAnswered(conn: SqlConn, ref: IdempotencyKeyRef, now: number): Promise<boolean> {
  const changed = await conn.run(
    `UPDATE "idempotency_keys" SET "answered_time" = $4 WHERE ${KEY_WHERE} AND "response" IS NOT NULL AND "answered_time" IS NULL`,
    [...keyParams(ref), now],
  );
  return changed === 1;
}

/** Withdraws a mark this replica made (at `markedAt`) when the answer could not be handed out after all. */
export async function unmarkKeyAnswered(conn: SqlConn, ref: IdempotencyKeyRef, markedAt: number): Promise<void> {
  await conn.run(`UPDATE "idempotency_keys" SET "answered_time" = NULL WHERE ${KEY_WHERE} AND "answered_time" = $4`, [...keyParams(ref), markedAt]);
}

/** The lifecycle operations of one store, over its connection. */
export class LifecycleSql {
  constructor(
    private readonly contentId: ContentId | undefined,
    /** PostgreSQL: the NOTIFY channel told of each new head revision, in the committing transaction. */
    private readonly notifyChannel: string | undefined,
    /** Where the events go once their transaction has committed, for the log's readers. */
    private readonly recent?: RecentEvents,
  ) {}

  /**
   * Appends one event per change with consecutive revisions and stamps a
   * CREATED event's content id on its delegation. (The consequences of an
   * ending are derived from its event by the workers that follow the log.)
   * Returns the revisions, in the order of `changes`.
   */
  async append(tx: SqlConn, changes: readonly Change[], now: number, options: AppendOptions = {}): Promise<bigint[]> {
    if (changes.length === 0) return [];
    const revisions = await this.write(tx, changes, now, options);
    const recent = this.recent;
    if (recent && tx.afterCommit) {
      const events = changes.map((c, i) => committedEvent(c, revisions[i]!, now, this.contentId !== undefined));
      tx.afterCommit(() => recent.add(events));
    }
    return revisions;
  }

  private async write(tx: SqlConn, changes: readonly Change[], now: number, options: AppendOptions): Promise<bigint[]> {
    // PostgreSQL, for the changes of a call or two: there the round trips are the cost. A large batch (an expiry)
    // is cheaper as a plain multi-row INSERT (measured: 2,000 events in 54 ms, 85-95 ms through a VALUES join),
    // and cheaper still with the snapshots built by the database from the rows just changed (the snapshots
    // sent as one array each instead: 99-141 ms against 54-61 ms, in alternating batches).
    if (tx.dialect === "postgresql" && changes.length <= PG_ONE_STATEMENT_MAX) return this.appendPostgres(tx, changes, now);
    if (tx.dialect === "postgresql" && options.rowsAreSnapshots && changes.every(plainChange)) return this.appendFromRows(tx, changes, now);
    const last = await takeRevisions(tx, changes.length);
    const first = last - BigInt(changes.length) + 1n;
    const events: unknown[][] = [];
    for (const [i, c] of changes.entries()) {
      const cid = this.stampContentId(c, first + BigInt(i), now);
      if (cid) await tx.run(`UPDATE "delegations" SET "chronicle_cid" = $1 WHERE "id" = $2`, [cid, c.delegation.id]);
      events.push(eventValues(c, first + BigInt(i), cid, now));
    }
    await insertRows(tx, "delegation_events", EVENT_COLUMNS, events);
    if (this.notifyChannel && tx.dialect === "postgresql") {
      // Delivered to listeners when (and only if) this transaction commits.
      await tx.all(`SELECT pg_notify($1, $2)`, [this.notifyChannel, last.toString()]);
    }
    return revisions(first, changes.length);
  }

  /**
   * PostgreSQL: as few round trips as possible while the revision counter is
   * held, since every other event-writing transaction waits for it until this
   * one commits, and a round trip under load is mostly the time this process
   * takes to get back to the answer. Without a CREATED content id to compute
   * (it names the revision), the counter, the events and the notification
   * (delivered when, and only if, the transaction commits) are one
   * statement; with one, two.
   */
  private async appendPostgres(tx: SqlConn, changes: readonly Change[], now: number): Promise<bigint[]> {
    const n = changes.length;
    /** The notification of `head` (an SQL expression), its channel appended to `params`. */
    const notify = (params: unknown[], head: string) => {
      if (!this.notifyChannel) return "1";
      params.push(this.notifyChannel);
      return `pg_notify($${params.length}, ${head})`;
    };
    if (!(this.contentId && changes.some((c) => c.type === "CREATED"))) {
      const params: unknown[] = [n];
      // The revision is the statement's: the counter's new value - n + the row's position.
      const rows = changes.map((c, i) => `(${placeholders(params, eventValues(c, 0n, "", now).slice(1), EVENT_CASTS.slice(1))}, ${i + 1})`);
      const [row] = await tx.all<{ value: number | string }>(
        `WITH "m" AS (
           UPDATE "broker_meta" SET "value" = "value" + $1 WHERE "key" = 'revision' RETURNING "value"
         ), "ins" AS (
           INSERT INTO "delegation_events" (${EVENT_COLUMN_LIST})
           SELECT "m"."value" - $1 + v."ord", ${EVENT_COLUMNS.slice(1).map((c) => `v."${c}"`).join(", ")}
             FROM "m", (VALUES ${rows.join(", ")}) AS v(${EVENT_COLUMNS.slice(1).map((c) => `"${c}"`).join(", ")}, "ord")
         )
         SELECT "m"."value", ${notify(params, `"m"."value"::text`)} FROM "m"`,
        params,
      );
      return revisions(BigInt(row!.value) - BigInt(n) + 1n, n);
    }
    const last = await takeRevisions(tx, n);
    const first = last - BigInt(n) + 1n;
    const params: unknown[] = [];
    const stamped: string[] = [];
    const events = changes.map((c, i) => {
      const cid = this.stampContentId(c, first + BigInt(i), now);
      const values = eventValues(c, first + BigInt(i), cid, now);
      if (cid) stamped.push(`(${placeholders(params, [c.delegation.id, cid], ["text", "text"])})`);
      return values;
    });
    const rows = events.map((values) => `(${placeholders(params, values, EVENT_CASTS)})`);
    await tx.all(
      `WITH "ins" AS (
         INSERT INTO "delegation_events" (${EVENT_COLUMN_LIST}) VALUES ${rows.join(", ")}
       ), "stamp" AS (
         UPDATE "delegations" AS d SET "chronicle_cid" = s."cid" FROM (VALUES ${stamped.join(", ")}) AS s("id", "cid") WHERE d."id" = s."id"
       )
       SELECT ${notify(params, `'${last.toString()}'`)}`,
      params,
    );
    return revisions(first, n);
  }

  /**
   * PostgreSQL, a large batch of changes whose delegations are rows this
   * transaction has just updated (so it holds their locks, and each row as it
   * now stands is its event's snapshot): one statement takes the revisions,
   * writes the events with their snapshots built from the rows, and queues
   * the notification. The batch sends its ids, types, reasons and actors as
   * four arrays instead of a kilobyte of snapshot per event (2,000 events:
   * 8,000 parameters and 2 MB fewer to encode, send and parse). An event
   * whose row is missing would leave a gap in the revisions: the statement
   * counts what it wrote, and anything short of every change aborts the
   * transaction.
   */
  private async appendFromRows(tx: SqlConn, changes: readonly Change[], now: number): Promise<bigint[]> {
    const n = changes.length;
    const params: unknown[] = [n, now, changes.map((c) => c.delegation.id), changes.map((c) => c.type), changes.map((c) => c.reason), changes.map((c) => c.actor)];
    let notify = "1";
    if (this.notifyChannel) {
      params.push(this.notifyChannel);
      notify = `pg_notify($${params.length}, "m"."value"::text)`;
    }
    const [row] = await tx.all<{ value: number | string; written: number | string }>(appendFromRowsSql(notify), params);
    if (Number(row!.written) !== n) throw new Error(`appending ${n} events from their rows wrote ${String(row!.written)}: a delegation row is missing`);
    return revisions(BigInt(row!.value) - BigInt(n) + 1n, n);
  }

  /** A CREATED event's content id (it names the revision), stamped on its delegation; "" for any other. */
  private stampContentId(c: Change, revision: bigint, now: number): string {
    // The delegation names its CREATED record, so that id is computed now. Any other
    // record's id is a pure function of the stored event: the sink computes it at delivery.
    if (!this.contentId || c.type !== "CREATED") return "";
    const d = c.delegation;
    const cid = this.contentId({ revision, type: c.type, delegation: d, eventTime: now, reason: c.reason, actor: c.actor, chronicleCid: "" });
    d.chronicleCid = cid;
    return cid;
  }

  async insertRequested(tx: SqlConn, d: Delegation, claim: IdempotencyClaim | undefined): Promise<ClaimResult> {
    if (claim) {
      const got = await claimKey(tx, claim, d.createTime);
      if (got.kind === "existing") return got;
    }
    await insertRows(tx, "delegations", DELEGATION_COLUMNS, [delegationValues(d)]);
    return { kind: "claimed" };
  }

  async activate(tx: SqlConn, spec: ActivateSpec): Promise<Transitioned | null> {
    const t = TRANSITIONS.activate;
    const p = spec.patch;
    const [row] = await tx.all<DelegationRow>(
      `UPDATE "delegations"
          SET "state" = $1, "update_time" = $2, "agent_client_id" = $3, "idp_object_id" = $4, "idp_backend" = $5,
              "delegated_ac_id" = $6, "delegated_ac" = $7
        WHERE "id" = $8 AND ${inList(tx, `"state"`, 9)}
    RETURNING *`,
      [t.to, spec.now, p.agentClientId, p.idpObjectId, p.idpBackend, p.delegatedAcId, JSON.stringify(p.delegatedAc), spec.id, listParam(tx, t.from)],
    );
    if (!row) return null;
    const delegation = delegationFromRow(row);
    const [revision] = await this.append(tx, [{ delegation, type: t.event, reason: "created", actor: delegation.delegatorDid, cascaded: false }], spec.now);
    if (spec.completeIdempotency) await completeKey(tx, spec.completeIdempotency, delegation);
    return { delegation, revision: revision! };
  }

  /** Ids the target names (bounded by the limit), in the order their events are written. */
  private async targetIds(tx: SqlConn, spec: EndSpec, from: readonly DelegationState[]): Promise<string[]> {
    const limit = spec.limit ?? 500;
    const t = spec.target;
    if ("ids" in t) {
      if (t.ids.length <= limit) return [...t.ids];
      // More ids than the limit: the first `limit` of them that the ending still applies to.
      const rows = await tx.all<{ id: string }>(
        `SELECT "id" FROM "delegations" WHERE ${inList(tx, `"id"`, 1)} AND ${inList(tx, `"state"`, 2)}${forUpdate(tx)}`,
        [listParam(tx, t.ids), listParam(tx, from)],
      );
      const live = new Set(rows.map((r) => r.id));
      return t.ids.filter((id) => live.has(id)).slice(0, limit);
    }
    if ("delegatorAcId" in t) {
      // Live rows only, named literally so the partial index applies; `from` narrows further.
      const rows = await tx.all<{ id: string }>(
        `SELECT "id" FROM "delegations" WHERE "delegator_ac_id" = $1 AND "state" IN ${LIVE} AND ${inList(tx, `"state"`, 2)}
          ORDER BY "id" LIMIT $3${forUpdate(tx)}`,
        [t.delegatorAcId, listParam(tx, from), limit],
      );
      return rows.map((r) => r.id);
    }
    // Expiry: skip rows another transaction is ending right now; it will write their events.
    const rows = await tx.all<{ id: string }>(`${EXPIRY_DUE}${forUpdate(tx, true)}`, [t.dueAt, limit]);
    return rows.map((r) => r.id);
  }

  /** Moves the given live delegations to `to`; returns the changed rows in the order of `ids`. */
  private async endRows(
    tx: SqlConn,
    ids: readonly string[],
    from: readonly DelegationState[],
    to: DelegationState,
    reason: string,
    now: number,
    spec: Pick<EndSpec, "patch" | "target" | "detail">,
  ): Promise<Delegation[]> {
    if (ids.length === 0) return [];
    const patch = spec.patch ?? {};
    const params: unknown[] = [to, now, reason, listParam(tx, ids), listParam(tx, from), spec.detail ?? ""];
    const sets = [`"state" = $1`, `"update_time" = $2`, `"end_time" = $2`, `"end_reason" = $3`, `"end_detail" = $6`];
    for (const [column, value] of [
      ["agent_client_id", patch.agentClientId],
      ["idp_object_id", patch.idpObjectId],
      ["idp_backend", patch.idpBackend],
      ["delegated_ac_id", patch.delegatedAcId],
    ] as const) {
      if (value === undefined) continue;
      params.push(value);
      sets.push(`"${column}" = $${params.length}`);
    }
    let condition = "";
    if ("dueAt" in spec.target) {
      params.push(spec.target.dueAt);
      condition = ` AND "expire_time" <= $${params.length}`;
    }
    const rows = await tx.all<DelegationRow>(
      `UPDATE "delegations" SET ${sets.join(", ")}
        WHERE ${inList(tx, `"id"`, 4)} AND ${inList(tx, `"state"`, 5)}${condition}
    RETURNING *`,
      params,
    );
    const order = new Map(ids.map((id, i) => [id, i]));
    return rows.map(delegationFromRow).sort((a, b) => order.get(a.id)! - order.get(b.id)!);
  }

  /** Every live delegation made from the delegated contexts of `parents`, ended with parent_delegation_ended, depth by depth. */
  private async cascade(tx: SqlConn, parents: readonly Delegation[], now: number): Promise<Delegation[]> {
    // The children's end_detail stays empty: their reason says it all.
    const t = TRANSITIONS.revoke;
    const out: Delegation[] = [];
    let level = parents;
    for (let depth = 0; depth < MAX_CASCADE_DEPTH && level.length > 0; depth++) {
      const contexts = [...new Set(level.map((d) => d.delegatedAcId).filter((id) => id !== ""))];
      if (contexts.length === 0) break;
      const children = await tx.all<{ id: string }>(`${liveFromContexts(tx)}${forUpdate(tx)}`, [listParam(tx, contexts)]);
      level = await this.endRows(tx, children.map((c) => c.id), t.from, t.to, EndReason.parentEnded, now, { target: { ids: [] } });
      out.push(...level);
    }
    return out;
  }

  async end(tx: SqlConn, spec: EndSpec): Promise<Ended[]> {
    const t = TRANSITIONS[spec.ending];
    const ids = await this.targetIds(tx, spec, t.from);
    const ended = await this.endRows(tx, ids, t.from, t.to, spec.reason, spec.now, spec);
    const children = spec.cascade === false ? [] : await this.cascade(tx, ended, spec.now);
    const actor = spec.actor ?? "";
    const changes: Change[] = [
      ...ended.map((delegation) => ({ delegation, type: t.event, reason: spec.reason, actor, cascaded: false })),
      ...children.map((delegation) => ({ delegation, type: TRANSITIONS.revoke.event, reason: EndReason.parentEnded, actor, cascaded: true })),
    ];
    const first = ended[0];
    if (first && spec.completeIdempotency) await completeKey(tx, spec.completeIdempotency, first);
    if (spec.releaseIdempotency) await releaseKey(tx, spec.releaseIdempotency);
    // Last: from here to the commit, every other event-writing transaction waits for this one (see append).
    const revisions = await this.append(tx, changes, spec.now, { rowsAreSnapshots: true });
    return changes.map((c, i) => ({ delegation: c.delegation, revision: revisions[i]!, cascaded: c.cascaded }));
  }

  async adoptLateContext(tx: SqlConn, id: string, delegatedAcId: string, now: number): Promise<boolean> {
    const rows = await tx.all<{ id: string }>(
      `UPDATE "delegations" SET "delegated_ac_id" = $1, "update_time" = $2
        WHERE "id" = $3 AND "delegated_ac_id" = '' AND ${inList(tx, `"state"`, 4)} RETURNING "id"`,
      [delegatedAcId, now, id, listParam(tx, FINAL_STATES)],
    );
    if (rows.length === 0) return false;
    // If the gsap-revoke worker has already passed the ending, it will not see this context:
    // a retry item, due now. Otherwise it reads the row when it gets there and revokes it then.
    const [ending] = await tx.all<{ r: number | string | null }>(
      `SELECT MAX("revision") AS "r" FROM "delegation_events" WHERE "delegation_id" = $1`,
      [id],
    );
    const [cursor] = await tx.all<{ value: number | string }>(`SELECT "value" FROM "broker_meta" WHERE "key" = 'cursor:gsap_revoke'`);
    const endedAt = ending?.r === null || ending?.r === undefined ? 0n : BigInt(ending.r);
    if (cursor && BigInt(cursor.value) >= endedAt) {
      await insertRows(tx, "delegation_effects", EFFECT_COLUMNS, [["gsap_revoke", id, endedAt.toString(), "pending", 0, now, "", now, now]]);
    }
    return true;
  }

  /**
   * The fast path of countCommand, for many commands at once (group commit,
   * see count-batcher.ts): in one statement, each delegation of `counts`
   * moves on by its number of commands, if it is active, unexpired at `now`,
   * all of them fit below its budget (none is its last command) and, with
   * strict live checks, its root context was vouched for since `freshSince`.
   * Answers the counters after the statement of those it counted; those it
   * did not are the caller's to count one by one.
   */
  async countMany(
    conn: SqlConn,
    counts: ReadonlyMap<string, number>,
    now: number,
    freshSince?: number,
  ): Promise<Map<string, { commandsExecuted: number; maxCommands: number }>> {
    const ids = [...counts.keys()];
    const pg = conn.dialect === "postgresql";
    const source = pg
      ? `SELECT unnest($2::text[]) AS "id", unnest($3::int[]) AS "k"`
      : `SELECT json_extract(value, '$[0]') AS "id", json_extract(value, '$[1]') AS "k" FROM json_each($2)`;
    const params: unknown[] = pg ? [now, ids, ids.map((id) => counts.get(id)!)] : [now, JSON.stringify(ids.map((id) => [id, counts.get(id)!]))];
    if (freshSince !== undefined) params.push(freshSince);
    const rows = await conn.all<{ id: string; commands_executed: number | string; max_commands: number | string }>(
      `UPDATE "delegations"
          SET "commands_executed" = "delegations"."commands_executed" + v."k", "update_time" = $1
         FROM (${source}) AS v
        WHERE "delegations"."id" = v."id" AND "delegations"."state" = 'ACTIVE' AND "delegations"."expire_time" > $1
          AND "delegations"."commands_executed" + v."k" < "delegations"."max_commands"${fresh(freshSince, params.length)}
    RETURNING "delegations"."id", "delegations"."commands_executed", "delegations"."max_commands"`,
      params,
    );
    const out = new Map<string, { commandsExecuted: number; maxCommands: number }>();
    for (const r of rows) out.set(r.id, { commandsExecuted: toNumber(r.commands_executed), maxCommands: toNumber(r.max_commands) });
    return out;
  }

  /**
   * Counts one command inside a transaction, with what has to be written with
   * it: the use of an approved ceremony (CEREMONY_USED) and the decision's
   * record (COMMAND_DECIDED). A refusal writes nothing (the transaction is
   * rolled back by the caller when this returns "refused").
   */
  async countIn(tx: SqlConn, id: string, now: number, options: CountOptions): Promise<CountResult> {
    let ceremony: Ceremony | undefined;
    if (options.ceremony) {
      const c = options.ceremony;
      const [row] = await tx.all<CeremonyRow>(
        `UPDATE "ceremonies" SET "state" = 'USED', "use_time" = $1
          WHERE "id" = $2 AND "delegation_id" = $3 AND "command_hash" = $4 AND "state" = 'APPROVED' AND "expire_time" > $1
      RETURNING *`,
        [now, c.id, id, c.commandHash],
      );
      if (!row) {
        const [current] = await tx.all<CeremonyRow>(`SELECT * FROM "ceremonies" WHERE "id" = $1`, [c.id]);
        return { kind: "ceremony_refused", ceremony: current ? ceremonyFromRow(current) : null };
      }
      ceremony = ceremonyFromRow(row);
    }
    const extra = (d: Delegation): Change[] => [
      ...(ceremony ? [{ delegation: d, type: "CEREMONY_USED" as const, reason: "used", actor: options.ceremony!.actor, cascaded: false, ceremony }] : []),
      ...(options.record ? [{ delegation: d, type: "COMMAND_DECIDED" as const, reason: options.record.decision.reason, actor: options.record.actor, cascaded: false, decision: options.record.decision }] : []),
    ];
    const [hit] = await tx.all<DelegationRow>(
      `UPDATE "delegations"
          SET "commands_executed" = "commands_executed" + 1, "update_time" = $1
        WHERE "id" = $2 AND "state" = 'ACTIVE' AND "expire_time" > $1 AND "commands_executed" < "max_commands" - 1${fresh(options.contextFreshSince, 3)}
    RETURNING *`,
      options.contextFreshSince === undefined ? [now, id] : [now, id, options.contextFreshSince],
    );
    if (hit) {
      const d = delegationFromRow(hit);
      const revisions = await this.append(tx, extra(d), now);
      return { kind: "counted", commandsExecuted: d.commandsExecuted, maxCommands: d.maxCommands, ...(ceremony ? { ceremony } : {}), revision: revisions.at(-1) };
    }
    const last = await this.countLast(tx, id, now, options.contextFreshSince, extra);
    if (last.kind === "limit_reached" && ceremony) return { ...last, ceremony };
    return last;
  }

  /** The last command of the budget, or a refusal: the count, the end and its cascade are one transaction. */
  async countLast(tx: SqlConn, id: string, now: number, freshSince?: number, extra?: (d: Delegation) => Change[]): Promise<CountResult> {
    const t = TRANSITIONS.exhaust;
    const params: unknown[] = [t.to, now, EndReason.commandLimit, id, listParam(tx, t.from)];
    if (freshSince !== undefined) params.push(freshSince);
    const rows = await tx.all<DelegationRow>(
      `UPDATE "delegations"
          SET "commands_executed" = "max_commands", "state" = $1, "end_time" = $2, "end_reason" = $3, "update_time" = $2
        WHERE "id" = $4 AND ${inList(tx, `"state"`, 5)} AND "expire_time" > $2 AND "commands_executed" = "max_commands" - 1${fresh(freshSince, 6)}
    RETURNING *`,
      params,
    );
    if (rows.length === 0) {
      const [row] = await tx.all<DelegationRow>(`SELECT * FROM "delegations" WHERE "id" = $1`, [id]);
      return { kind: "refused", delegation: row ? delegationFromRow(row) : null };
    }
    const ended = rows.map(delegationFromRow);
    const children = await this.cascade(tx, ended, now);
    const changes: Change[] = [
      ...(extra ? extra(ended[0]!) : []),
      { delegation: ended[0]!, type: t.event, reason: EndReason.commandLimit, actor: "", cascaded: false },
      ...children.map((delegation) => ({ delegation, type: TRANSITIONS.revoke.event, reason: EndReason.parentEnded, actor: "", cascaded: true })),
    ];
    const revisions = await this.append(tx, changes, now);
    const endings = changes.flatMap((c, i) => (isEndingEvent(c.type) ? [{ delegation: c.delegation, revision: revisions[i]!, cascaded: c.cascaded }] : []));
    return { kind: "limit_reached", ended: endings };
  }
}

/** The strict live-check condition on a delegations UPDATE: its root context answered at or after `$n`. */
function fresh(since: number | undefined, n: number): string {
  if (since === undefined) return "";
  return ` AND EXISTS (SELECT 1 FROM "delegator_contexts" c WHERE c."ac_id" = "delegations"."root_ac_id" AND c."checked_time" >= $${n})`;
}

export interface AppendOptions {
  /**
   * Every change's delegation is its row as this transaction left it, locked
   * by the UPDATE that returned it: the database may build the snapshots.
   */
  rowsAreSnapshots?: boolean;
}

/**
 * The statement of appendFromRows; `notify` is its last column ("1", or the
 * pg_notify call). Each row is found by its key: a join of the array to the
 * table was planned as a hash join over the whole table (at 100,000 rows,
 * 15 ms of every batch); the LIMIT keeps the planner from flattening the
 * LATERAL subquery into that join.
 */
export function appendFromRowsSql(notify = "1"): string {
  return `WITH "m" AS (
         UPDATE "broker_meta" SET "value" = "value" + $1 WHERE "key" = 'revision' RETURNING "value"
       ), "ins" AS (
         INSERT INTO "delegation_events" (${EVENT_COLUMN_LIST})
         SELECT "m"."value" - $1 + v."ord", d."id", d."delegator_did", v."type", $2, v."reason", ${pgSnapshotSql("d")}, '', '', v."actor", ''
           FROM "m"
          CROSS JOIN unnest($3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS v("id", "type", "reason", "actor", "ord")
          CROSS JOIN LATERAL (SELECT * FROM "delegations" x WHERE x."id" = v."id" LIMIT 1) d
         RETURNING 1
       )
       SELECT "m"."value", (SELECT count(*) FROM "ins") AS "written", ${notify} FROM "m"`;
}

/** A change whose event carries nothing beyond its delegation row (no content id to compute, no detail). */
function plainChange(c: Change): boolean {
  return c.type !== "CREATED" && !c.ceremony && !c.decision;
}

/**
 * The event of a committed change as the log would give it back: a copy of
 * the delegation (the caller keeps its own), the content id only on a CREATED
 * event of a store that computes them (see stampContentId).
 */
function committedEvent(c: Change, revision: bigint, now: number, contentIds: boolean): DelegationEvent {
  const e: DelegationEvent = {
    revision,
    type: c.type,
    delegation: { ...c.delegation },
    eventTime: now,
    reason: c.reason,
    actor: c.actor,
    chronicleCid: contentIds && c.type === "CREATED" ? c.delegation.chronicleCid : "",
  };
  if (c.ceremony) e.ceremony = { ...c.ceremony };
  if (c.decision) e.decision = { ...c.decision };
  return e;
}

/** An event row's values, in EVENT_COLUMNS order. */
function eventValues(c: Change, revision: bigint, cid: string, now: number): unknown[] {
  const d = c.delegation;
  const detail = eventDetailJson({ ...(c.ceremony ? { ceremony: c.ceremony } : {}), ...(c.decision ? { decision: c.decision } : {}) });
  return [revision, d.id, d.delegatorDid, c.type, now, c.reason, JSON.stringify(d), cid, "", c.actor, detail];
}

function revisions(first: bigint, n: number): bigint[] {
  return Array.from({ length: n }, (_, i) => first + BigInt(i));
}

/** Takes n revisions from the counter (held until commit: see the lock order above); returns the last. */
async function takeRevisions(tx: SqlConn, n: number): Promise<bigint> {
  const [meta] = await tx.all<{ value: number | string }>(
    `UPDATE "broker_meta" SET "value" = "value" + $1 WHERE "key" = 'revision' RETURNING "value"`,
    [n],
  );
  return BigInt(meta!.value);
}

/** Changes appended in one statement on PostgreSQL, at most (see append). */
const PG_ONE_STATEMENT_MAX = 64;
/** The SQL types of EVENT_COLUMNS, for the VALUES lists of the PostgreSQL statements. */
const EVENT_CASTS = ["bigint", "text", "text", "text", "bigint", "text", "text", "text", "text", "text", "text"] as const;
if (EVENT_CASTS.length !== EVENT_COLUMNS.length) throw new Error("EVENT_CASTS must give a type for each of EVENT_COLUMNS");
const EVENT_COLUMN_LIST = EVENT_COLUMNS.map((c) => `"${c}"`).join(", ");

/** `$k::type, …` for `values`, appended to `params`. */
function placeholders(params: unknown[], values: readonly unknown[], casts: readonly string[]): string {
  return values
    .map((v, i) => {
      params.push(typeof v === "bigint" ? v.toString() : v);
      return `$${params.length}::${casts[i]}`;
    })
    .join(", ");
}
