/**
 * The Prisma-backed store, shared by the SQLite and PostgreSQL generated
 * clients (their model APIs are identical; the SQLite client's types are used).
 *
 * Ordering: every transaction that appends an event first updates the
 * delegation row, then increments the `revision` row of broker_meta. That row
 * lock is held until commit, so on PostgreSQL revisions commit in order and a
 * reader of "events after N" never skips one that commits later.
 *
 * SQLite: Prisma's better-sqlite3 adapter shares one connection between
 * interactive transactions and every other query and only serializes
 * transactions with each other, so a concurrent write would join (and could
 * be rolled back with) an open transaction. This store therefore runs every
 * SQLite operation through one queue.
 */
import type { Delegation, DelegationEvent, DelegationState, EventType } from "../delegation/model.js";
import type { Prisma, PrismaClient } from "./generated/sqlite/client.js";
import type { SqliteReader } from "./sqlite-reader.js";
import type {
  AuditBacklog,
  ClaimResult,
  CountResult,
  DelegationStore,
  EventFilter,
  IdempotencyClaim,
  IdempotencyKeyRef,
  IdempotencyRecord,
  ListQuery,
  PendingAudit,
  Transitioned,
  TransitionSpec,
} from "./store.js";

type Tx = Prisma.TransactionClient;
type Row = Prisma.DelegationGetPayload<object>;
type KeyRow = Prisma.IdempotencyKeyGetPayload<object>;

const ENDING: ReadonlySet<DelegationState> = new Set(["EXPIRED", "REVOKED", "FAILED"]);

function toRow(d: Delegation): Row {
  return {
    id: d.id,
    state: d.state,
    agentType: d.agentType,
    agentModel: d.agentModel,
    agentDid: d.agentDid,
    agentClientId: d.agentClientId,
    idpObjectId: d.idpObjectId,
    idpBackend: d.idpBackend,
    delegatorDid: d.delegatorDid,
    delegatorAcId: d.delegatorAcId,
    delegatedAcId: d.delegatedAcId,
    delegatedAc: JSON.stringify(d.delegatedAc),
    capabilityCeiling: d.capabilityCeiling,
    ceremonyRequiredFor: JSON.stringify(d.ceremonyRequiredFor),
    prohibitedCommands: JSON.stringify(d.prohibitedCommands),
    inheritCorpus: d.inheritCorpus,
    inheritContexts: d.inheritContexts,
    accordTemplate: d.accordTemplate,
    maxCommands: d.maxCommands,
    commandsExecuted: d.commandsExecuted,
    depth: d.depth,
    createTime: BigInt(d.createTime),
    updateTime: BigInt(d.updateTime),
    expireTime: BigInt(d.expireTime),
    endTime: d.endTime === null ? null : BigInt(d.endTime),
    endReason: d.endReason,
    chronicleCid: d.chronicleCid,
    idpCleanupPending: d.idpCleanupPending,
  };
}

function fromRow(r: Row): Delegation {
  return {
    id: r.id,
    state: r.state as DelegationState,
    agentType: r.agentType,
    agentModel: r.agentModel,
    agentDid: r.agentDid,
    agentClientId: r.agentClientId,
    idpObjectId: r.idpObjectId,
    idpBackend: r.idpBackend,
    delegatorDid: r.delegatorDid,
    delegatorAcId: r.delegatorAcId,
    delegatedAcId: r.delegatedAcId,
    delegatedAc: JSON.parse(r.delegatedAc),
    capabilityCeiling: r.capabilityCeiling,
    ceremonyRequiredFor: JSON.parse(r.ceremonyRequiredFor),
    prohibitedCommands: JSON.parse(r.prohibitedCommands),
    inheritCorpus: r.inheritCorpus,
    inheritContexts: r.inheritContexts,
    accordTemplate: r.accordTemplate,
    maxCommands: r.maxCommands,
    commandsExecuted: r.commandsExecuted,
    depth: r.depth,
    createTime: Number(r.createTime),
    updateTime: Number(r.updateTime),
    expireTime: Number(r.expireTime),
    endTime: r.endTime === null ? null : Number(r.endTime),
    endReason: r.endReason,
    chronicleCid: r.chronicleCid,
    idpCleanupPending: r.idpCleanupPending,
  };
}

/** A delegations row as $queryRaw returns it: snake_case, integer types vary by driver. */
interface RawRow {
  id: string;
  state: string;
  agent_type: string;
  agent_model: string;
  agent_did: string;
  agent_client_id: string;
  idp_object_id: string;
  idp_backend: string;
  delegator_did: string;
  delegator_ac_id: string;
  delegated_ac_id: string;
  delegated_ac: string;
  capability_ceiling: string;
  ceremony_required_for: string;
  prohibited_commands: string;
  inherit_corpus: boolean | number | bigint;
  inherit_contexts: boolean | number | bigint;
  accord_template: string;
  max_commands: number | bigint;
  commands_executed: number | bigint;
  depth: number | bigint;
  create_time: number | bigint;
  update_time: number | bigint;
  expire_time: number | bigint;
  end_time: number | bigint | null;
  end_reason: string;
  chronicle_cid: string;
  idp_cleanup_pending: boolean | number | bigint;
}

// SQLite stores booleans as 0/1; PostgreSQL returns true/false.
const bool = (v: boolean | number | bigint): boolean => (typeof v === "boolean" ? v : Number(v) !== 0);

function fromRawRow(r: RawRow): Delegation {
  return {
    id: r.id,
    state: r.state as DelegationState,
    agentType: r.agent_type,
    agentModel: r.agent_model,
    agentDid: r.agent_did,
    agentClientId: r.agent_client_id,
    idpObjectId: r.idp_object_id,
    idpBackend: r.idp_backend,
    delegatorDid: r.delegator_did,
    delegatorAcId: r.delegator_ac_id,
    delegatedAcId: r.delegated_ac_id,
    delegatedAc: JSON.parse(r.delegated_ac),
    capabilityCeiling: r.capability_ceiling,
    ceremonyRequiredFor: JSON.parse(r.ceremony_required_for),
    prohibitedCommands: JSON.parse(r.prohibited_commands),
    inheritCorpus: bool(r.inherit_corpus),
    inheritContexts: bool(r.inherit_contexts),
    accordTemplate: r.accord_template,
    maxCommands: Number(r.max_commands),
    commandsExecuted: Number(r.commands_executed),
    depth: Number(r.depth),
    createTime: Number(r.create_time),
    updateTime: Number(r.update_time),
    expireTime: Number(r.expire_time),
    endTime: r.end_time === null ? null : Number(r.end_time),
    endReason: r.end_reason,
    chronicleCid: r.chronicle_cid,
    idpCleanupPending: bool(r.idp_cleanup_pending),
  };
}

type EventRow = Prisma.DelegationEventGetPayload<object>;

function fromEventRow(r: EventRow): DelegationEvent {
  return {
    revision: r.revision,
    type: r.type as EventType,
    delegation: JSON.parse(r.snapshot) as Delegation,
    eventTime: Number(r.eventTime),
    reason: r.reason,
    chronicleCid: r.chronicleCid,
  };
}

function fromKeyRow(r: KeyRow): IdempotencyRecord {
  return {
    scope: r.scope,
    method: r.method,
    requestId: r.requestId,
    requestHash: r.requestHash,
    delegationId: r.delegationId,
    response: r.response,
    createTime: Number(r.createTime),
  };
}

const keyWhere = (ref: IdempotencyKeyRef) => ({
  scope_method_requestId: { scope: ref.scope, method: ref.method, requestId: ref.requestId },
});

function isUniqueViolation(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === "P2002";
}

/** Runs tasks one at a time, in order. */
class Queue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

export interface PrismaStoreOptions {
  driver: "sqlite" | "postgresql";
  /** SQLite: the read-only connection for point reads. */
  reader?: SqliteReader;
  /** Content id of an event's audit record, written with the event. */
  contentId?: (event: DelegationEvent) => string;
  /** Closes the client and whatever it holds. */
  dispose?: () => Promise<void>;
}

/** The DelegationStore over a Prisma client of either provider. */
export class PrismaStore implements DelegationStore {
  readonly driver: "sqlite" | "postgresql";
  private readonly listeners = new Set<(revision: bigint) => void>();
  private readonly queue: Queue | undefined;

  constructor(
    private readonly db: PrismaClient,
    private readonly options: PrismaStoreOptions,
  ) {
    this.driver = options.driver;
    this.queue = options.driver === "sqlite" ? new Queue() : undefined;
  }

  private run<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue ? this.queue.run(fn) : fn();
  }

  private tx<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.run(() => this.db.$transaction(fn, { maxWait: 10_000, timeout: 15_000 }));
  }

  private emit(revision: bigint): void {
    for (const l of this.listeners) {
      try {
        l(revision);
      } catch {
        // A listener's failure is its own; the commit stands.
      }
    }
  }

  /**
   * Appends the event of a change. With a content-id function, the event gets
   * its audit record's id, and a CREATED event also stamps it on the
   * delegation (its `chronicle_cid`), in the same transaction. Mutates `d` to match.
   */
  private async appendEvent(tx: Tx, d: Delegation, type: EventType, reason: string, now: number): Promise<bigint> {
    const meta = await tx.brokerMeta.update({ where: { key: "revision" }, data: { value: { increment: 1 } } });
    const revision = meta.value;
    let cid = "";
    if (this.options.contentId) {
      cid = this.options.contentId({ revision, type, delegation: d, eventTime: now, reason, chronicleCid: "" });
      if (type === "CREATED") {
        await tx.delegation.update({ where: { id: d.id }, data: { chronicleCid: cid } });
        d.chronicleCid = cid;
      }
    }
    await tx.delegationEvent.create({
      data: {
        revision,
        delegationId: d.id,
        delegatorDid: d.delegatorDid,
        type,
        eventTime: BigInt(now),
        reason,
        snapshot: JSON.stringify(d),
        chronicleCid: cid,
      },
    });
    return revision;
  }

  async insertRequested(delegation: Delegation, claim?: IdempotencyClaim): Promise<ClaimResult> {
    try {
      return await this.tx(async (tx) => {
        if (claim) {
          const existing = await tx.idempotencyKey.findUnique({ where: keyWhere(claim) });
          if (existing) return { kind: "existing", record: fromKeyRow(existing) } as const;
          await tx.idempotencyKey.create({
            data: { ...claim, response: null, createTime: BigInt(delegation.createTime) },
          });
        }
        await tx.delegation.create({ data: toRow(delegation) });
        return { kind: "claimed" } as const;
      });
    } catch (err) {
      // Two requests with one key raced past findUnique: the loser reports the winner's claim.
      if (claim && isUniqueViolation(err)) {
        const record = await this.getIdempotency(claim);
        if (record) return { kind: "existing", record };
      }
      throw err;
    }
  }

  async claimIdempotency(claim: IdempotencyClaim, now: number): Promise<ClaimResult> {
    try {
      return await this.run(async () => {
        const existing = await this.db.idempotencyKey.findUnique({ where: keyWhere(claim) });
        if (existing) return { kind: "existing", record: fromKeyRow(existing) } as const;
        await this.db.idempotencyKey.create({ data: { ...claim, response: null, createTime: BigInt(now) } });
        return { kind: "claimed" } as const;
      });
    } catch (err) {
      if (isUniqueViolation(err)) {
        const record = await this.getIdempotency(claim);
        if (record) return { kind: "existing", record };
      }
      throw err;
    }
  }

  async transition(spec: TransitionSpec): Promise<Transitioned | null> {
    const ending = ENDING.has(spec.to);
    const result = await this.tx(async (tx) => {
      const patch = spec.patch ?? {};
      const { count } = await tx.delegation.updateMany({
        where: {
          id: spec.id,
          state: { in: spec.from },
          ...(spec.onlyIfExpiredAt !== undefined ? { expireTime: { lte: BigInt(spec.onlyIfExpiredAt) } } : {}),
        },
        data: {
          state: spec.to,
          updateTime: BigInt(spec.now),
          ...(patch.agentClientId !== undefined ? { agentClientId: patch.agentClientId } : {}),
          ...(patch.idpObjectId !== undefined ? { idpObjectId: patch.idpObjectId } : {}),
          ...(patch.idpBackend !== undefined ? { idpBackend: patch.idpBackend } : {}),
          ...(patch.delegatedAcId !== undefined ? { delegatedAcId: patch.delegatedAcId } : {}),
          ...(patch.delegatedAc !== undefined ? { delegatedAc: JSON.stringify(patch.delegatedAc) } : {}),
          ...(ending ? { endTime: BigInt(spec.now), endReason: spec.reason, idpCleanupPending: true } : {}),
        },
      });
      if (count === 0) return null;
      const row = await tx.delegation.findUniqueOrThrow({ where: { id: spec.id } });
      const delegation = fromRow(row);
      const revision = await this.appendEvent(tx, delegation, spec.event, spec.reason, spec.now);
      if (spec.completeIdempotency) {
        await tx.idempotencyKey.update({
          where: keyWhere(spec.completeIdempotency),
          data: { response: spec.completeIdempotency.response(delegation) },
        });
      }
      if (spec.releaseIdempotency) {
        await tx.idempotencyKey.deleteMany({ where: keyWhere(spec.releaseIdempotency).scope_method_requestId });
      }
      return { delegation, revision };
    });
    if (result) this.emit(result.revision);
    return result;
  }

  async countCommand(id: string, now: number): Promise<CountResult> {
    // Fast path: one conditional UPDATE for every command but the last.
    const counted = await this.run(
      () => this.db.$queryRaw<{ commands_executed: number | bigint; max_commands: number | bigint }[]>`
        UPDATE "delegations"
           SET "commands_executed" = "commands_executed" + 1, "update_time" = ${now}
         WHERE "id" = ${id} AND "state" = 'ACTIVE' AND "expire_time" > ${now}
           AND "commands_executed" < "max_commands" - 1
     RETURNING "commands_executed", "max_commands"`,
    );
    const hit = counted[0];
    if (hit) {
      return { kind: "counted", commandsExecuted: Number(hit.commands_executed), maxCommands: Number(hit.max_commands) };
    }
    // The last command of the budget, or a refusal: the count and the end are one transaction.
    const result = await this.tx(async (tx): Promise<CountResult> => {
      const n = await tx.$executeRaw`
        UPDATE "delegations"
           SET "commands_executed" = "max_commands", "state" = 'EXPIRED', "end_time" = ${now},
               "end_reason" = 'command_limit', "idp_cleanup_pending" = TRUE, "update_time" = ${now}
         WHERE "id" = ${id} AND "state" = 'ACTIVE' AND "expire_time" > ${now}
           AND "commands_executed" = "max_commands" - 1`;
      const row = await tx.delegation.findUnique({ where: { id } });
      if (n === 0 || !row) return { kind: "refused", delegation: row ? fromRow(row) : null };
      const delegation = fromRow(row);
      const revision = await this.appendEvent(tx, delegation, "COMMAND_LIMIT_REACHED", "command_limit", now);
      return { kind: "limit_reached", delegation, revision };
    });
    if (result.kind === "limit_reached") this.emit(result.revision);
    return result;
  }

  async get(id: string): Promise<Delegation | null> {
    // The hot read (GetDelegation, AuthorizeCommand's explanations). On SQLite a
    // prepared statement on the read connection; elsewhere one raw SELECT, which
    // costs well under half of findUnique's CPU on this 28-column row.
    if (this.options.reader) {
      const row = this.options.reader.delegation(id) as RawRow | undefined;
      return row ? fromRawRow(row) : null;
    }
    const rows = await this.run(() => this.db.$queryRaw<RawRow[]>`SELECT * FROM "delegations" WHERE "id" = ${id}`);
    return rows[0] ? fromRawRow(rows[0]) : null;
  }

  async list(query: ListQuery): Promise<{ items: Delegation[]; total: number }> {
    const where = {
      state: query.state,
      ...(query.delegatorDid ? { delegatorDid: query.delegatorDid } : {}),
    };
    return this.run(async () => {
      const [rows, total] = await Promise.all([
        this.db.delegation.findMany({
          where: { ...where, ...(query.afterId ? { id: { gt: query.afterId } } : {}) },
          orderBy: { id: "asc" },
          take: query.limit,
        }),
        this.db.delegation.count({ where }),
      ]);
      return { items: rows.map(fromRow), total };
    });
  }

  async findLiveByDelegatorAc(delegatorAcId: string): Promise<Delegation[]> {
    const rows = await this.run(() =>
      this.db.delegation.findMany({
        where: { delegatorAcId, state: { in: ["REQUESTED", "ACTIVE"] } },
        orderBy: { id: "asc" },
      }),
    );
    return rows.map(fromRow);
  }

  async findByDelegatedAc(delegatedAcId: string): Promise<Delegation | null> {
    if (delegatedAcId === "") return null;
    const row = await this.run(() => this.db.delegation.findFirst({ where: { delegatedAcId } }));
    return row ? fromRow(row) : null;
  }

  async dueForExpiry(now: number, limit: number): Promise<Delegation[]> {
    const rows = await this.run(() =>
      this.db.delegation.findMany({
        where: { state: "ACTIVE", expireTime: { lte: BigInt(now) } },
        orderBy: { expireTime: "asc" },
        take: limit,
      }),
    );
    return rows.map(fromRow);
  }

  async nextExpireTime(): Promise<number | null> {
    const row = await this.run(() =>
      this.db.delegation.findFirst({
        where: { state: "ACTIVE" },
        orderBy: { expireTime: "asc" },
        select: { expireTime: true },
      }),
    );
    return row ? Number(row.expireTime) : null;
  }

  async pendingCleanup(limit: number): Promise<Delegation[]> {
    const rows = await this.run(() =>
      this.db.delegation.findMany({ where: { idpCleanupPending: true }, orderBy: { updateTime: "asc" }, take: limit }),
    );
    return rows.map(fromRow);
  }

  async markCleanedUp(id: string): Promise<void> {
    await this.run(() => this.db.delegation.updateMany({ where: { id }, data: { idpCleanupPending: false } }));
  }

  async staleRequested(createdBefore: number, limit: number): Promise<Delegation[]> {
    const rows = await this.run(() =>
      this.db.delegation.findMany({
        where: { state: "REQUESTED", createTime: { lt: BigInt(createdBefore) } },
        orderBy: { createTime: "asc" },
        take: limit,
      }),
    );
    return rows.map(fromRow);
  }

  async getIdempotency(ref: IdempotencyKeyRef): Promise<IdempotencyRecord | null> {
    const row = await this.run(() => this.db.idempotencyKey.findUnique({ where: keyWhere(ref) }));
    return row ? fromKeyRow(row) : null;
  }

  async releaseIdempotency(ref: IdempotencyKeyRef): Promise<void> {
    await this.run(() => this.db.idempotencyKey.deleteMany({ where: keyWhere(ref).scope_method_requestId }));
  }

  async pruneIdempotency(createdBefore: number): Promise<number> {
    const { count } = await this.run(() =>
      this.db.idempotencyKey.deleteMany({ where: { createTime: { lt: BigInt(createdBefore) } } }),
    );
    return count;
  }

  async headRevision(): Promise<bigint> {
    const row = await this.run(() => this.db.brokerMeta.findUniqueOrThrow({ where: { key: "revision" } }));
    return row.value;
  }

  async prunedThrough(): Promise<bigint> {
    const row = await this.run(() => this.db.brokerMeta.findUniqueOrThrow({ where: { key: "pruned_through" } }));
    return row.value;
  }

  async readEvents(after: bigint, limit: number, filter: EventFilter = {}): Promise<DelegationEvent[]> {
    const rows = await this.run(() =>
      this.db.delegationEvent.findMany({
        where: {
          revision: { gt: after },
          ...(filter.delegationId ? { delegationId: filter.delegationId } : {}),
          ...(filter.delegatorDid ? { delegatorDid: filter.delegatorDid } : {}),
        },
        orderBy: { revision: "asc" },
        take: limit,
      }),
    );
    return rows.map(fromEventRow);
  }

  async pendingAudit(limit: number): Promise<PendingAudit[]> {
    const rows = await this.run(() =>
      this.db.delegationEvent.findMany({ where: { auditState: "pending" }, orderBy: { revision: "asc" }, take: limit }),
    );
    return rows.map((r) => ({ event: fromEventRow(r), attempts: r.auditAttempts }));
  }

  async markAudited(revision: bigint, now: number): Promise<void> {
    await this.run(() =>
      this.db.delegationEvent.updateMany({
        where: { revision, auditState: "pending" },
        data: { auditState: "delivered", auditTime: BigInt(now), auditError: "", auditAttempts: { increment: 1 } },
      }),
    );
  }

  async markAuditFailed(revision: bigint, error: string): Promise<void> {
    await this.run(() =>
      this.db.delegationEvent.updateMany({
        where: { revision, auditState: "pending" },
        data: { auditAttempts: { increment: 1 }, auditError: error.slice(0, 500) },
      }),
    );
  }

  async markAuditRejected(revision: bigint, error: string, now: number): Promise<void> {
    await this.run(() =>
      this.db.delegationEvent.updateMany({
        where: { revision, auditState: "pending" },
        data: { auditState: "rejected", auditTime: BigInt(now), auditError: error.slice(0, 500), auditAttempts: { increment: 1 } },
      }),
    );
  }

  async auditBacklog(): Promise<AuditBacklog> {
    return this.run(async () => {
      const [pending, oldest, rejected] = await Promise.all([
        this.db.delegationEvent.count({ where: { auditState: "pending" } }),
        this.db.delegationEvent.findFirst({
          where: { auditState: "pending" },
          orderBy: { revision: "asc" },
          select: { eventTime: true },
        }),
        this.db.delegationEvent.count({ where: { auditState: "rejected" } }),
      ]);
      return { pending, oldestPendingTime: oldest ? Number(oldest.eventTime) : null, rejected };
    });
  }

  async acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean> {
    const until = BigInt(now + ttlMs);
    try {
      return await this.run(async () => {
        const { count } = await this.db.brokerLease.updateMany({
          where: { name, OR: [{ holder }, { expireTime: { lt: BigInt(now) } }] },
          data: { holder, expireTime: until },
        });
        if (count === 1) return true;
        const existing = await this.db.brokerLease.findUnique({ where: { name } });
        if (existing) return false;
        await this.db.brokerLease.create({ data: { name, holder, expireTime: until } });
        return true;
      });
    } catch (err) {
      if (isUniqueViolation(err)) return false; // another replica created it first
      throw err;
    }
  }

  async releaseLease(name: string, holder: string): Promise<void> {
    await this.run(() => this.db.brokerLease.deleteMany({ where: { name, holder } }));
  }

  async pruneEvents(before: number): Promise<number> {
    return this.tx(async (tx) => {
      const newest = await tx.delegationEvent.findFirst({
        where: { eventTime: { lt: BigInt(before) } },
        orderBy: { revision: "desc" },
        select: { revision: true },
      });
      if (!newest) return 0;
      // Never past an event the audit sink has not yet received.
      const undelivered = await tx.delegationEvent.findFirst({
        where: { auditState: "pending" },
        orderBy: { revision: "asc" },
        select: { revision: true },
      });
      let through = newest.revision;
      if (undelivered && undelivered.revision <= through) through = undelivered.revision - 1n;
      if (through <= 0n) return 0;
      const { count } = await tx.delegationEvent.deleteMany({ where: { revision: { lte: through } } });
      await tx.brokerMeta.updateMany({
        where: { key: "pruned_through", value: { lt: through } },
        data: { value: through },
      });
      return count;
    });
  }

  onCommit(listener: (revision: bigint) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.listeners.clear();
    await this.run(async () => {
      this.options.reader?.close();
      await this.db.$disconnect();
      await this.options.dispose?.();
    });
  }
}
