/**
 * The consequence workers (src/events/effects.ts): effectWorker is a loop
 * task that follows the event log from its kind's cursor, carries out the
 * consequences of each ending, keeps what failed in a retry table and
 * settles a run in one call. Here the store is an in-memory fake with the
 * store's contract (src/store/log-sql.ts): an event log of CREATED and ending
 * events, a cursor per kind and a retry table. Time is a plain variable the
 * handlers can move on (or vitest's fake timers for a Loop); nothing sleeps.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { BrokerError, type EffectKind, UpstreamError, consequencesOf } from "../../src/domain/index.js";
import { EffectsFailing, effectWorker, mapLimit } from "../../src/events/effects.js";
import type { Logger } from "../../src/logging.js";
import { Loop } from "../../src/scheduler/loop.js";
import type { Effect, EffectBacklog, EffectOutcomes, EffectQueue, PendingEndings } from "../../src/store/store.js";

const T0 = Date.UTC(2025, 0, 1);

type EndingType = "REVOKED" | "EXPIRED" | "FAILED" | "COMMAND_LIMIT_REACHED";

interface LogEvent {
  revision: bigint;
  type: "CREATED" | EndingType;
  delegationId: string;
  eventTime: number;
}

/** An ending appended to the log. */
interface Ending {
  delegationId: string;
  revision: bigint;
  eventTime: number;
}

interface RetryRow {
  id: number;
  kind: EffectKind;
  delegationId: string;
  revision: bigint;
  state: "pending" | "rejected";
  /** Failed attempts so far. */
  attempts: number;
  nextAttemptTime: number;
  lastError: string;
  createTime: number;
  updateTime: number;
}

/**
 * The EffectQueue of the store, in memory: the event log (gap-free
 * revisions), the delegations the endings are joined with, a cursor per kind
 * and the retry table. settleEffects is one transaction: it checks the whole
 * call against the contract before it writes anything, and a test can make
 * the next one fail (a crash or a lost connection before the commit).
 */
class FakeEffectLog implements EffectQueue {
  readonly events: LogEvent[] = [];
  readonly delegations = new Map<string, Effect["target"]>();
  readonly cursors: Record<EffectKind, bigint> = { idp_delete: 0n, gsap_revoke: 0n };
  readonly retryTable = new Map<number, RetryRow>();
  readonly calls = {
    pending: [] as { kind: EffectKind; limit: number }[],
    due: [] as { kind: EffectKind; now: number; limit: number }[],
    settle: [] as { kind: EffectKind; outcomes: EffectOutcomes; now: number }[],
    nextTime: [] as EffectKind[],
  };
  /** The next settleEffects throws this before writing anything. */
  failSettle: Error | null = null;
  private revision = 0n;
  private delegationSeq = 0;
  private retrySeq = 0;

  get head(): bigint {
    return this.revision;
  }

  private append(type: LogEvent["type"], delegationId: string, eventTime?: number): LogEvent {
    this.revision++;
    const event = { revision: this.revision, type, delegationId, eventTime: eventTime ?? T0 - 100_000 + Number(this.revision) };
    this.events.push(event);
    return event;
  }

  private newDelegation(withContext: boolean): string {
    const n = ++this.delegationSeq;
    const id = `del-${n}`;
    this.delegations.set(id, {
      agentClientId: `client-${n}`,
      idpObjectId: `obj-${n}`,
      idpBackend: "stub",
      delegatedAcId: withContext ? `ac-${n}` : "",
      endReason: "",
    });
    return id;
  }

  /** A new delegation becomes ACTIVE: a CREATED event, which has no consequence. */
  activate(options: { withContext?: boolean } = {}): string {
    const id = this.newDelegation(options.withContext ?? true);
    this.append("CREATED", id);
    return id;
  }

  /** `id` (by default a new delegation, with a delegated context unless told) ends: its ending event. */
  end(options: { id?: string; type?: EndingType; reason?: string; withContext?: boolean; at?: number } = {}): Ending {
    const id = options.id ?? this.newDelegation(options.withContext ?? true);
    this.delegations.get(id)!.endReason = options.reason ?? "manual_revocation";
    const event = this.append(options.type ?? "REVOKED", id, options.at);
    return { delegationId: id, revision: event.revision, eventTime: event.eventTime };
  }

  endMany(n: number, options: Parameters<FakeEffectLog["end"]>[0] = {}): Ending[] {
    return Array.from({ length: n }, () => this.end(options));
  }

  /**
   * An ending whose `kind` consequence an earlier run failed (`attempts`
   * times) and left in the retry table until `dueAt`; the kind's cursor moves
   * past it. Call it before appending the fresh endings of a test.
   */
  seedRetry(kind: EffectKind, options: { dueAt: number; attempts?: number }): Ending & { retryId: number } {
    const ending = this.end();
    this.cursors[kind] = ending.revision;
    const id = ++this.retrySeq;
    this.retryTable.set(id, {
      id,
      kind,
      delegationId: ending.delegationId,
      revision: ending.revision,
      state: "pending",
      attempts: options.attempts ?? 1,
      nextAttemptTime: options.dueAt,
      lastError: "an earlier failure",
      createTime: ending.eventTime,
      updateTime: T0 - 1,
    });
    return { ...ending, retryId: id };
  }

  /** The retry-table row of `kind` for a delegation, if any. */
  row(kind: EffectKind, delegationId: string): RetryRow | undefined {
    return [...this.retryTable.values()].find((r) => r.kind === kind && r.delegationId === delegationId);
  }

  private pendingRows(kind: EffectKind): RetryRow[] {
    return [...this.retryTable.values()].filter((r) => r.kind === kind && r.state === "pending");
  }

  private target(delegationId: string): Effect["target"] {
    return { ...this.delegations.get(delegationId)! };
  }

  async pendingEndings(kind: EffectKind, limit: number): Promise<PendingEndings> {
    this.calls.pending.push({ kind, limit });
    const cursor = this.cursors[kind];
    const examined = this.events.filter((e) => e.revision > cursor).slice(0, limit);
    const items: Effect[] = [];
    for (const e of examined) {
      if (e.type === "CREATED") continue;
      const target = this.target(e.delegationId);
      if (!consequencesOf(target).includes(kind)) continue;
      items.push({ kind, delegationId: e.delegationId, revision: e.revision, attempts: 0, createTime: e.eventTime, target });
    }
    return { items, through: examined.at(-1)?.revision ?? cursor, examined: examined.length };
  }

  async dueRetries(kind: EffectKind, now: number, limit: number): Promise<Effect[]> {
    this.calls.due.push({ kind, now, limit });
    return this.pendingRows(kind)
      .filter((r) => r.nextAttemptTime <= now)
      .sort((a, b) => a.nextAttemptTime - b.nextAttemptTime || a.id - b.id)
      .slice(0, limit)
      .map((r) => ({
        kind,
        delegationId: r.delegationId,
        revision: r.revision,
        attempts: r.attempts,
        createTime: r.createTime,
        retryId: r.id,
        target: this.target(r.delegationId),
      }));
  }

  /** What is wrong with a settleEffects call, if anything. */
  private violation(kind: EffectKind, o: EffectOutcomes): string | null {
    const cursor = this.cursors[kind];
    if (o.through !== undefined && o.through > this.revision) return `through ${o.through} is past the head ${this.revision}`;
    const seen = new Set<number>();
    for (const id of o.done) {
      const row = this.retryTable.get(id);
      if (!row || row.kind !== kind || row.state !== "pending") return `done id ${id} is no pending ${kind} retry`;
      if (seen.has(id)) return `retry id ${id} settled twice`;
      seen.add(id);
    }
    for (const { effect } of [...o.retry, ...o.rejected]) {
      if (effect.kind !== kind) return `a ${effect.kind} item settled as ${kind}`;
      if (effect.retryId !== undefined) {
        const row = this.retryTable.get(effect.retryId);
        if (!row || row.kind !== kind || row.state !== "pending" || row.delegationId !== effect.delegationId) {
          return `retry id ${effect.retryId} is no pending ${kind} retry of ${effect.delegationId}`;
        }
        if (seen.has(effect.retryId)) return `retry id ${effect.retryId} settled twice`;
        seen.add(effect.retryId);
        continue;
      }
      // A fresh item: an ending between the cursor and where this call moves it, never stored yet.
      if (effect.revision <= cursor) return `fresh item at ${effect.revision} is at or before the cursor ${cursor}`;
      if (o.through === undefined || effect.revision > o.through) return `fresh item at ${effect.revision} is past through ${o.through}`;
      if (this.row(kind, effect.delegationId)) return `a second ${kind} row for ${effect.delegationId}`;
    }
    return null;
  }

  async settleEffects(kind: EffectKind, outcomes: EffectOutcomes, now: number): Promise<void> {
    this.calls.settle.push({ kind, outcomes: structuredClone(outcomes), now });
    if (this.failSettle) {
      const err = this.failSettle;
      this.failSettle = null;
      throw err;
    }
    const problem = this.violation(kind, outcomes);
    if (problem) throw new Error(`settleEffects contract: ${problem}`);
    for (const id of outcomes.done) this.retryTable.delete(id);
    const insert = (effect: Effect, state: RetryRow["state"], error: string, nextAttemptTime: number) => {
      const id = ++this.retrySeq;
      this.retryTable.set(id, {
        id,
        kind,
        delegationId: effect.delegationId,
        revision: effect.revision,
        state,
        attempts: 1,
        nextAttemptTime,
        lastError: error,
        createTime: effect.createTime,
        updateTime: now,
      });
    };
    for (const r of outcomes.retry) {
      if (r.effect.retryId === undefined) insert(r.effect, "pending", r.error, r.nextAttemptTime);
      else {
        const row = this.retryTable.get(r.effect.retryId)!;
        Object.assign(row, { attempts: row.attempts + 1, lastError: r.error, nextAttemptTime: r.nextAttemptTime, updateTime: now });
      }
    }
    for (const r of outcomes.rejected) {
      if (r.effect.retryId === undefined) insert(r.effect, "rejected", r.error, now);
      else {
        const row = this.retryTable.get(r.effect.retryId)!;
        Object.assign(row, { state: "rejected", attempts: row.attempts + 1, lastError: r.error, updateTime: now });
      }
    }
    if (outcomes.through !== undefined && outcomes.through > this.cursors[kind]) this.cursors[kind] = outcomes.through;
  }

  async nextRetryTime(kind: EffectKind): Promise<number | null> {
    this.calls.nextTime.push(kind);
    const times = this.pendingRows(kind).map((r) => r.nextAttemptTime);
    return times.length === 0 ? null : Math.min(...times);
  }

  async effectOwed(kind: EffectKind, delegationId: string): Promise<boolean> {
    const fresh = this.events.some(
      (e) =>
        e.delegationId === delegationId &&
        e.revision > this.cursors[kind] &&
        e.type !== "CREATED" &&
        (kind !== "gsap_revoke" || this.delegations.get(delegationId)?.delegatedAcId !== ""),
    );
    return fresh || [...this.retryTable.values()].some((r) => r.kind === kind && r.delegationId === delegationId && r.state === "pending");
  }

  async effectBacklog(kind: EffectKind): Promise<EffectBacklog> {
    const fresh = this.events.filter(
      (e) => e.revision > this.cursors[kind] && e.type !== "CREATED" && consequencesOf(this.target(e.delegationId)).includes(kind),
    );
    const retrying = this.pendingRows(kind);
    const oldest = [...fresh.map((e) => e.eventTime), ...retrying.map((r) => r.createTime)];
    return {
      pending: fresh.length + retrying.length,
      retrying: retrying.length,
      oldestPendingTime: oldest.length > 0 ? Math.min(...oldest) : null,
      rejected: [...this.retryTable.values()].filter((r) => r.kind === kind && r.state === "rejected").length,
    };
  }

  async pruneEffects(before: number, maxRows: number): Promise<number> {
    const old = [...this.retryTable.values()].filter((r) => r.state === "rejected" && r.updateTime < before).slice(0, maxRows);
    for (const r of old) this.retryTable.delete(r.id);
    return old.length;
  }
}

function fakeLog() {
  const warn = vi.fn();
  const error = vi.fn();
  const info = vi.fn();
  return { log: { warn, error, info } as unknown as Logger, warn, error };
}

const unavailable = () => new UpstreamError("keycloak", "status", "keycloak answered 503", { status: 503 });
const refused = () => new UpstreamError("keycloak", "rejected", "keycloak answered 400", { status: 400 });

/** Lets the event loop turn a few times (real setImmediate, never faked here). */
async function flush(turns = 10): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((r) => setImmediate(r));
}

/** The ids of the delegations a mocked handler was called for, in call order. */
const calledFor = (handler: { mock: { calls: [Effect][] } }) => handler.mock.calls.map(([e]) => e.delegationId);
const ids = (endings: readonly { delegationId: string }[]) => endings.map((e) => e.delegationId);

afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

describe("effectWorker: following the log", () => {
  it("carries out every ending after the cursor, oldest first, and settles the run and the cursor in one call", async () => {
    const store = new FakeEffectLog();
    const first = store.activate(); // 1: CREATED, no consequence
    const e1 = store.end({ id: first }); // 2
    const e2 = store.end({ type: "EXPIRED", reason: "ttl_elapsed" }); // 3
    store.activate(); // 4: CREATED
    const e3 = store.end({ type: "FAILED", reason: "creation_failed", withContext: false }); // 5: an identity may exist all the same
    let now = T0;
    const handled: Effect[] = [];
    const work = effectWorker(
      store,
      "idp_delete",
      async (e) => {
        handled.push(e);
        now += 10;
      },
      { clock: () => now },
    );

    expect(await work()).toEqual({ done: 3, more: false, nextAt: null });
    expect(ids(handled)).toEqual(ids([e1, e2, e3]));
    // The handler gets the whole item: the ending and what it needs of the delegation.
    expect(handled[0]).toStrictEqual({
      kind: "idp_delete",
      delegationId: first,
      revision: 2n,
      attempts: 0,
      createTime: e1.eventTime,
      target: { agentClientId: "client-1", idpObjectId: "obj-1", idpBackend: "stub", delegatedAcId: "ac-1", endReason: "manual_revocation" },
    });
    expect(handled[1]!.target.endReason).toBe("ttl_elapsed");
    expect(store.calls.pending).toEqual([{ kind: "idp_delete", limit: 200 }]);
    // Fresh items that are done leave nothing to record but the cursor, moved to the last event examined.
    expect(store.calls.settle).toEqual([{ kind: "idp_delete", outcomes: { through: 5n, done: [], retry: [], rejected: [] }, now: T0 + 30 }]);
    expect(store.cursors).toEqual({ idp_delete: 5n, gsap_revoke: 0n });
    expect(store.retryTable.size).toBe(0);

    handled.length = 0;
    expect(await work()).toEqual({ done: 0, more: false, nextAt: null });
    expect(handled).toEqual([]);
    expect(await store.effectBacklog("idp_delete")).toEqual({ pending: 0, retrying: 0, oldestPendingTime: null, rejected: 0 });
  });

  it("takes up only what the log gained since its cursor, and each kind follows its own cursor", async () => {
    const store = new FakeEffectLog();
    const before = store.endMany(2);
    const idp = vi.fn(async (_e: Effect) => undefined);
    const gsap = vi.fn(async (_e: Effect) => undefined);
    const idpWorker = effectWorker(store, "idp_delete", idp, { clock: () => T0 });
    const gsapWorker = effectWorker(store, "gsap_revoke", gsap, { clock: () => T0 });

    expect(await idpWorker()).toMatchObject({ done: 2 });
    expect(store.cursors).toEqual({ idp_delete: 2n, gsap_revoke: 0n });
    const after = store.endMany(3);
    idp.mockClear();
    expect(await idpWorker()).toMatchObject({ done: 3 });
    expect(calledFor(idp)).toEqual(ids(after));
    expect(store.cursors.idp_delete).toBe(5n);

    // The other kind has settled nothing yet: it takes every ending from the start.
    expect(await gsapWorker()).toMatchObject({ done: 5 });
    expect(calledFor(gsap)).toEqual(ids([...before, ...after]));
    expect(gsap.mock.calls.every(([e]) => e.kind === "gsap_revoke")).toBe(true);
    expect(store.cursors).toEqual({ idp_delete: 5n, gsap_revoke: 5n });
  });

  it("gsap_revoke passes over endings without a delegated context, and its cursor still moves past them", async () => {
    const store = new FakeEffectLog();
    const a = store.end(); // 1
    const noContext1 = store.end({ withContext: false }); // 2
    store.activate({ withContext: false }); // 3
    const b = store.end({ type: "EXPIRED" }); // 4
    const noContext2 = store.end({ type: "FAILED", withContext: false }); // 5: the last event examined
    const gsap = vi.fn(async (_e: Effect) => undefined);
    const gsapWorker = effectWorker(store, "gsap_revoke", gsap, { clock: () => T0 });

    expect(await gsapWorker()).toEqual({ done: 2, more: false, nextAt: null });
    expect(calledFor(gsap)).toEqual(ids([a, b]));
    expect(store.calls.settle.at(-1)!.outcomes.through).toBe(5n);
    expect(store.cursors.gsap_revoke).toBe(5n);

    // Every ending deletes its identity, context or not.
    const idp = vi.fn(async (_e: Effect) => undefined);
    await effectWorker(store, "idp_delete", idp, { clock: () => T0 })();
    expect(calledFor(idp)).toEqual(ids([a, noContext1, b, noContext2]));

    // A run that finds nothing but endings to pass over handles nothing, yet moves the cursor.
    store.endMany(2, { withContext: false }); // 6, 7
    gsap.mockClear();
    expect(await gsapWorker()).toEqual({ done: 0, more: false, nextAt: null });
    expect(gsap).not.toHaveBeenCalled();
    expect(store.cursors.gsap_revoke).toBe(7n);
    expect(await store.effectBacklog("gsap_revoke")).toMatchObject({ pending: 0 });
  });

  it("takes only retries of its kind that are due at the clock's time (taken when the run starts)", async () => {
    const store = new FakeEffectLog();
    const due = store.seedRetry("idp_delete", { dueAt: T0 });
    const later = store.seedRetry("idp_delete", { dueAt: T0 + 1 });
    const other = store.seedRetry("gsap_revoke", { dueAt: T0 - 1 });
    store.cursors.idp_delete = store.head; // the gsap one's identity is already deleted
    let now = T0;
    const handler = vi.fn(async (_e: Effect) => {
      now += 1000; // time the handlers take does not make more retries due in this run
    });
    const work = effectWorker(store, "idp_delete", handler, { clock: () => now, batchSize: 7 });
    expect(await work()).toEqual({ done: 1, more: false, nextAt: T0 + 1 });
    expect(store.calls.due).toEqual([{ kind: "idp_delete", now: T0, limit: 7 }]);
    expect(calledFor(handler)).toEqual([due.delegationId]);
    expect(handler.mock.calls[0]![0]).toMatchObject({ retryId: due.retryId, attempts: 1, revision: due.revision, createTime: due.eventTime });
    expect(store.calls.settle[0]!.outcomes.done).toEqual([due.retryId]);
    expect(store.row("idp_delete", due.delegationId)).toBeUndefined();
    expect(store.row("idp_delete", later.delegationId)).toMatchObject({ state: "pending", attempts: 1 });
    expect(store.row("gsap_revoke", other.delegationId)).toMatchObject({ state: "pending", attempts: 1 });
  });
});

describe("effectWorker: failures", () => {
  it("keeps a retryable failure in the retry table with a growing backoff, counting its attempts, and never drops it", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.5); // 3/4 of each base
    const store = new FakeEffectLog();
    const failing = store.end();
    const ok = store.end();
    let now = T0;
    const { log, warn } = fakeLog();
    const handler = vi.fn(async (e: Effect) => {
      now += 10; // handlers take time: the backoff counts from when the batch finished
      if (e.delegationId === failing.delegationId) throw unavailable();
    });
    const work = effectWorker(store, "idp_delete", handler, { clock: () => now, log, minBackoffMs: 1000, maxBackoffMs: 10_000 });

    const finished = T0 + 20;
    expect(await work()).toEqual({ done: 1, more: false, nextAt: finished + 750 });
    // The cursor moves past both: the failure now lives in the retry table (inserted: it had no retry id).
    expect(store.cursors.idp_delete).toBe(ok.revision);
    expect(store.calls.settle).toEqual([
      {
        kind: "idp_delete",
        now: finished,
        outcomes: {
          through: ok.revision,
          done: [],
          retry: [{ effect: expect.objectContaining({ delegationId: failing.delegationId, attempts: 0 }), error: "keycloak answered 503", nextAttemptTime: finished + 750 }],
          rejected: [],
        },
      },
    ]);
    expect(store.calls.settle[0]!.outcomes.retry[0]!.effect).not.toHaveProperty("retryId");
    const row = store.row("idp_delete", failing.delegationId)!;
    expect(row).toMatchObject({ state: "pending", attempts: 1, lastError: "keycloak answered 503", nextAttemptTime: finished + 750, createTime: failing.eventTime });
    expect(warn).toHaveBeenCalledWith(
      expect.objectContaining({ kind: "idp_delete", delegationId: failing.delegationId, attempts: 1, err: expect.any(UpstreamError) }),
      expect.any(String),
    );

    // Not before it is due.
    handler.mockClear();
    now = finished + 749;
    expect(await work()).toEqual({ done: 0, more: false, nextAt: finished + 750 });
    expect(handler).not.toHaveBeenCalled();

    // Each time it comes back and fails again, its row is updated and it waits twice as long, up to maxBackoffMs.
    const delays: number[] = [];
    for (let attempt = 2; attempt <= 7; attempt++) {
      now = row.nextAttemptTime;
      await expect(work()).rejects.toBeInstanceOf(EffectsFailing); // the only item of the run failed
      delays.push(row.nextAttemptTime - now); // `now` is when the batch finished
      expect(store.calls.settle.at(-1)!.outcomes.retry.map((r) => r.effect.retryId)).toEqual([row.id]);
      expect(row.attempts).toBe(attempt);
      expect(warn).toHaveBeenLastCalledWith(expect.objectContaining({ attempts: attempt }), expect.any(String));
    }
    expect(delays).toEqual([1500, 3000, 6000, 7500, 7500, 7500]);
    expect(handler).toHaveBeenCalledTimes(6);
    expect([...store.retryTable.values()]).toEqual([row]); // one row, never a second one, never rejected
    expect(row.state).toBe("pending");
    expect(await store.effectBacklog("idp_delete")).toMatchObject({ pending: 1, retrying: 1, rejected: 0 });
  });

  it("jitters the retry delay between half the base and the base", async () => {
    const random = vi.spyOn(Math, "random");
    const delayWith = async (r: number) => {
      random.mockReturnValue(r);
      const store = new FakeEffectLog();
      const retried = store.seedRetry("idp_delete", { dueAt: T0, attempts: 2 }); // base 4 × minBackoff
      store.end();
      const work = effectWorker(
        store,
        "idp_delete",
        async (e) => {
          if (e.delegationId === retried.delegationId) throw unavailable();
        },
        { clock: () => T0, minBackoffMs: 1000 },
      );
      await work();
      return store.row("idp_delete", retried.delegationId)!.nextAttemptTime - T0;
    };
    expect(await delayWith(0)).toBe(2000);
    expect(await delayWith(0.5)).toBe(3000);
    expect(await delayWith(0.9999)).toBe(4000);
  });

  it("uses 1 s as the first retry delay and 5 min as the longest by default", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.999_999);
    const store = new FakeEffectLog();
    const old = store.seedRetry("idp_delete", { dueAt: T0, attempts: 15 });
    const fresh = store.end();
    const ok = store.end();
    const work = effectWorker(
      store,
      "idp_delete",
      async (e) => {
        if (e.delegationId !== ok.delegationId) throw unavailable();
      },
      { clock: () => T0 },
    );
    await work();
    expect(store.row("idp_delete", fresh.delegationId)!.nextAttemptTime - T0).toBe(1000);
    expect(store.row("idp_delete", old.delegationId)!.nextAttemptTime - T0).toBe(300_000);
  });

  it("retries failures that are not UpstreamErrors too (a dropped connection in a library, even a thrown undefined)", async () => {
    const store = new FakeEffectLog();
    const hangUp = store.end();
    const nothing = store.end();
    store.end();
    const work = effectWorker(
      store,
      "idp_delete",
      async (e) => {
        if (e.delegationId === hangUp.delegationId) throw new Error("socket hang up");
        if (e.delegationId === nothing.delegationId) throw undefined;
      },
      { clock: () => T0 },
    );
    expect(await work()).toMatchObject({ done: 1 });
    expect(store.row("idp_delete", hangUp.delegationId)).toMatchObject({ state: "pending", attempts: 1, lastError: "socket hang up" });
    expect(store.row("idp_delete", nothing.delegationId)).toMatchObject({ state: "pending", attempts: 1, lastError: "undefined" });
    expect(store.calls.settle[0]!.outcomes.rejected).toEqual([]);
  });

  it("rejects a permanent refusal, logs it with its status, moves past it and never tries it again", async () => {
    const store = new FakeEffectLog();
    const bad = store.end();
    const good = store.end();
    let now = T0;
    const { log, error, warn } = fakeLog();
    const handler = vi.fn(async (e: Effect) => {
      now += 5;
      if (e.delegationId === bad.delegationId) throw refused();
    });
    const idp = effectWorker(store, "idp_delete", handler, { clock: () => now, log });
    expect(await idp()).toEqual({ done: 1, more: false, nextAt: null });
    expect(store.calls.settle).toEqual([
      {
        kind: "idp_delete",
        now: T0 + 10,
        outcomes: {
          through: good.revision,
          done: [],
          retry: [],
          rejected: [{ effect: expect.objectContaining({ delegationId: bad.delegationId }), error: "keycloak answered 400" }],
        },
      },
    ]);
    expect(store.row("idp_delete", bad.delegationId)).toMatchObject({ state: "rejected", attempts: 1, lastError: "keycloak answered 400" });
    expect(store.cursors.idp_delete).toBe(good.revision);
    expect(error).toHaveBeenCalledTimes(1);
    expect(error).toHaveBeenCalledWith(
      expect.objectContaining({ kind: "idp_delete", delegationId: bad.delegationId, attempts: 1, status: 400, err: expect.any(UpstreamError) }),
      expect.any(String),
    );
    expect(warn).not.toHaveBeenCalled();

    now += 3_600_000;
    handler.mockClear();
    expect(await idp()).toEqual({ done: 0, more: false, nextAt: null });
    expect(handler).not.toHaveBeenCalled();
    expect(await store.effectBacklog("idp_delete")).toEqual({ pending: 0, retrying: 0, oldestPendingTime: null, rejected: 1 });
  });

  it("rejects a retried item refused for good in its retry-table row, with its attempts", async () => {
    const store = new FakeEffectLog();
    const retried = store.seedRetry("idp_delete", { dueAt: T0, attempts: 3 });
    const { log, error } = fakeLog();
    const work = effectWorker(
      store,
      "idp_delete",
      async () => {
        throw refused();
      },
      { clock: () => T0, log },
    );
    expect(await work()).toEqual({ done: 0, more: false, nextAt: null });
    expect(store.calls.settle[0]!.outcomes.rejected.map((r) => r.effect.retryId)).toEqual([retried.retryId]);
    expect(store.retryTable.get(retried.retryId)).toMatchObject({ state: "rejected", attempts: 4, lastError: "keycloak answered 400" });
    expect(error).toHaveBeenCalledWith(expect.objectContaining({ delegationId: retried.delegationId, attempts: 4, status: 400 }), expect.any(String));
    expect(await store.effectBacklog("idp_delete")).toEqual({ pending: 0, retrying: 0, oldestPendingTime: null, rejected: 1 });
  });

  it("rejects a domain answer (BrokerError) too, logged without a status", async () => {
    const store = new FakeEffectLog();
    const bad = store.end();
    const { log, error, warn } = fakeLog();
    const work = effectWorker(
      store,
      "idp_delete",
      async () => {
        throw new BrokerError("FAILED_PRECONDITION", "NOPE", "not allowed");
      },
      { clock: () => T0, log },
    );
    expect(await work()).toEqual({ done: 0, more: false, nextAt: null });
    expect(store.row("idp_delete", bad.delegationId)).toMatchObject({ state: "rejected", lastError: "not allowed" });
    expect(error).toHaveBeenCalledTimes(1);
    expect(error.mock.calls[0]![0]).toMatchObject({ err: expect.any(BrokerError) });
    expect(error.mock.calls[0]![0]).not.toHaveProperty("status");
    expect(warn).not.toHaveBeenCalled();
  });

  it("rejects an UpstreamError marked not retryable, whatever its failure", async () => {
    const store = new FakeEffectLog();
    const bad = store.end();
    const work = effectWorker(
      store,
      "gsap_revoke",
      async () => {
        throw new UpstreamError("gsap", "status", "gsap answered 501", { status: 501, retryable: false });
      },
      { clock: () => T0 },
    );
    expect(await work()).toEqual({ done: 0, more: false, nextAt: null });
    expect(store.row("gsap_revoke", bad.delegationId)).toMatchObject({ state: "rejected", lastError: "gsap answered 501" });
  });

  it("throws EffectsFailing when every item of the batch failed, after recording the retries and moving the cursor", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const store = new FakeEffectLog();
    const retried = store.seedRetry("gsap_revoke", { dueAt: T0, attempts: 1 });
    const fresh = store.endMany(2);
    store.activate();
    store.end({ withContext: false }); // not an item of gsap_revoke; the last event examined
    const work = effectWorker(
      store,
      "gsap_revoke",
      async () => {
        throw unavailable();
      },
      { clock: () => T0 },
    );
    const err = await work().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EffectsFailing);
    expect((err as Error).message).toContain("gsap_revoke");
    expect((err as Error).message).toContain("keycloak answered 503");
    expect(store.calls.settle).toHaveLength(1);
    expect(store.calls.settle[0]!.outcomes.retry.map((r) => r.effect.delegationId)).toEqual(ids([retried, ...fresh]));
    expect(store.cursors.gsap_revoke).toBe(store.head);
    expect(store.row("gsap_revoke", retried.delegationId)).toMatchObject({ state: "pending", attempts: 2, nextAttemptTime: T0 + 1000 });
    for (const e of fresh) expect(store.row("gsap_revoke", e.delegationId)).toMatchObject({ state: "pending", attempts: 1, nextAttemptTime: T0 + 500 });
  });

  it("does not throw when an item was done, when the failures were refusals, or when there was nothing to do", async () => {
    const mixed = new FakeEffectLog();
    const [a, b] = mixed.endMany(2);
    const one = effectWorker(
      mixed,
      "idp_delete",
      async (e) => {
        if (e.delegationId === a!.delegationId) throw unavailable();
      },
      { clock: () => T0 },
    );
    expect(await one()).toMatchObject({ done: 1, more: false });
    expect(mixed.row("idp_delete", b!.delegationId)).toBeUndefined();

    const refusals = new FakeEffectLog();
    refusals.endMany(2);
    const none = effectWorker(
      refusals,
      "idp_delete",
      async () => {
        throw refused();
      },
      { clock: () => T0 },
    );
    expect(await none()).toEqual({ done: 0, more: false, nextAt: null });

    const refusedAndFailed = new FakeEffectLog();
    const [c] = refusedAndFailed.endMany(2);
    const both = effectWorker(
      refusedAndFailed,
      "idp_delete",
      async (e) => {
        throw e.delegationId === c!.delegationId ? refused() : unavailable();
      },
      { clock: () => T0 },
    );
    expect(await both()).toMatchObject({ done: 0, more: false });

    const idle = new FakeEffectLog();
    idle.activate();
    expect(await effectWorker(idle, "idp_delete", async () => undefined, { clock: () => T0 })()).toEqual({ done: 0, more: false, nextAt: null });
  });

  it("makes the Loop back off when every item fails, rather than run again at the retry time", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"], now: T0 });
    vi.spyOn(Math, "random").mockReturnValue(0);
    const store = new FakeEffectLog();
    store.endMany(2);
    const handler = vi.fn(async () => {
      throw unavailable();
    });
    const clock = () => Date.now();
    const loop = new Loop({
      name: "idp-cleanup",
      task: effectWorker(store, "idp_delete", handler, { clock, minBackoffMs: 1000 }),
      minBackoffMs: 8000, // first back-off 4 s with this jitter; the items are due again after 0.5 s
      clock,
    });
    const advance = async (ms: number) => {
      await vi.advanceTimersByTimeAsync(ms);
      await flush();
    };
    try {
      loop.start();
      await advance(0);
      expect(handler).toHaveBeenCalledTimes(2);
      expect(loop.health).toMatchObject({ failures: 1, lastError: expect.stringContaining("every idp_delete item") });
      expect(await store.nextRetryTime("idp_delete")).toBe(T0 + 500);

      await advance(3000); // long past the retry time: the loop waits out its back-off
      expect(handler).toHaveBeenCalledTimes(2);
      await advance(1001); // T0 + 4001: the back-off is over
      expect(handler).toHaveBeenCalledTimes(4);
      expect(loop.health.failures).toBe(2);
    } finally {
      await loop.stop();
    }
  });
});

describe("effectWorker: lanes", () => {
  it("keeps at most `concurrency` items in flight, retries and fresh ones alike, and uses that many", async () => {
    const store = new FakeEffectLog();
    for (let i = 0; i < 6; i++) store.seedRetry("idp_delete", { dueAt: T0 - i });
    store.endMany(14);
    let inFlight = 0;
    let most = 0;
    const handler = vi.fn(async () => {
      inFlight++;
      most = Math.max(most, inFlight);
      await flush(3);
      inFlight--;
    });
    const work = effectWorker(store, "idp_delete", handler, { clock: () => T0, concurrency: 4 });
    expect(await work()).toMatchObject({ done: 20 });
    expect(handler).toHaveBeenCalledTimes(20);
    expect(most).toBe(4);
    expect(inFlight).toBe(0);
    expect(store.retryTable.size).toBe(0);
  });

  it("starts the next item as soon as one lane is free (no waiting for a whole wave)", async () => {
    const store = new FakeEffectLog();
    const [a, b, c] = store.endMany(3);
    const gates = new Map<string, () => void>();
    const started: string[] = [];
    const handler = (e: Effect) =>
      new Promise<void>((resolve) => {
        started.push(e.delegationId);
        gates.set(e.delegationId, resolve);
      });
    const run = effectWorker(store, "idp_delete", handler, { clock: () => T0, concurrency: 2 })();
    await flush();
    expect(started).toEqual(ids([a!, b!]));
    gates.get(b!.delegationId)!();
    await flush();
    expect(started).toEqual(ids([a!, b!, c!])); // a is still in flight
    gates.get(a!.delegationId)!();
    gates.get(c!.delegationId)!();
    expect(await run).toMatchObject({ done: 3 });
  });

  it.each([0, -3, Number.NaN])("with a concurrency of %s still carries out every item, one at a time, and settles none unhandled", async (concurrency) => {
    const store = new FakeEffectLog();
    const retried = store.seedRetry("idp_delete", { dueAt: T0 });
    const fresh = store.endMany(2);
    let inFlight = 0;
    let most = 0;
    const handler = vi.fn(async (_e: Effect) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await flush(2);
      inFlight--;
    });
    const work = effectWorker(store, "idp_delete", handler, { clock: () => T0, concurrency });
    expect(await work()).toEqual({ done: 3, more: false, nextAt: null });
    expect(calledFor(handler)).toEqual(ids([retried, ...fresh]));
    expect(most).toBe(1);
    expect(store.calls.settle[0]!.outcomes.done).toEqual([retried.retryId]);
  });

  it("uses 32 lanes by default", async () => {
    const store = new FakeEffectLog();
    store.endMany(40);
    let inFlight = 0;
    let most = 0;
    const work = effectWorker(
      store,
      "idp_delete",
      async () => {
        inFlight++;
        most = Math.max(most, inFlight);
        await flush(1);
        inFlight--;
      },
      { clock: () => T0 },
    );
    expect(await work()).toMatchObject({ done: 40 });
    expect(most).toBe(32);
  });
});

describe("effectWorker: what a run reports", () => {
  it("calls onDone for each item done (retried or fresh), with the time the batch finished, and not for failures", async () => {
    const store = new FakeEffectLog();
    const retried = store.seedRetry("idp_delete", { dueAt: T0, attempts: 2 });
    const [ok, failed, refusedOne] = store.endMany(3);
    let now = T0;
    const onDone = vi.fn();
    const work = effectWorker(
      store,
      "idp_delete",
      async (e) => {
        now += 100;
        if (e.delegationId === failed!.delegationId) throw unavailable();
        if (e.delegationId === refusedOne!.delegationId) throw refused();
      },
      { clock: () => now, onDone },
    );
    expect(await work()).toMatchObject({ done: 2 });
    expect(onDone).toHaveBeenCalledTimes(2);
    expect(onDone).toHaveBeenNthCalledWith(
      1,
      expect.objectContaining({ delegationId: retried.delegationId, retryId: retried.retryId, createTime: retried.eventTime }),
      T0 + 400,
    );
    expect(onDone).toHaveBeenNthCalledWith(2, expect.objectContaining({ delegationId: ok!.delegationId, createTime: ok!.eventTime }), T0 + 400);
  });

  it("reports more when the events examined filled the batch (CREATED and passed-over events count), and drains the rest next run", async () => {
    const store = new FakeEffectLog();
    store.activate(); // 1
    store.endMany(2); // 2, 3
    store.activate(); // 4
    store.endMany(3); // 5, 6, 7
    const handler = vi.fn(async (_e: Effect) => undefined);
    const work = effectWorker(store, "idp_delete", handler, { clock: () => T0, batchSize: 3 });
    expect(await work()).toEqual({ done: 2, more: true });
    expect(store.cursors.idp_delete).toBe(3n);
    expect(await work()).toEqual({ done: 2, more: true });
    expect(store.cursors.idp_delete).toBe(6n);
    expect(await work()).toEqual({ done: 1, more: false, nextAt: null });
    expect(store.cursors.idp_delete).toBe(7n);
    expect(await work()).toEqual({ done: 0, more: false, nextAt: null });
    expect(handler).toHaveBeenCalledTimes(5);
    expect(store.calls.pending.map((c) => c.limit)).toEqual([3, 3, 3, 3]);

    // A full batch of events it passes over is a full batch too.
    const passOver = new FakeEffectLog();
    passOver.activate();
    passOver.endMany(3, { withContext: false });
    const gsap = effectWorker(passOver, "gsap_revoke", handler, { clock: () => T0, batchSize: 3 });
    expect(await gsap()).toEqual({ done: 0, more: true });
    expect(passOver.cursors.gsap_revoke).toBe(3n);
    expect(await gsap()).toEqual({ done: 0, more: false, nextAt: null });
    expect(passOver.cursors.gsap_revoke).toBe(4n);
  });

  it("takes the due retries before the fresh endings, and reports more when the retries filled the batch", async () => {
    const store = new FakeEffectLog();
    const retries = [T0 - 30, T0 - 20, T0 - 10].map((dueAt) => store.seedRetry("idp_delete", { dueAt }));
    const fresh = store.end();
    const handler = vi.fn(async (_e: Effect) => undefined);
    const work = effectWorker(store, "idp_delete", handler, { clock: () => T0, batchSize: 3, concurrency: 1 });
    expect(await work()).toEqual({ done: 4, more: true }); // the log alone (1 event) would not be a full batch
    expect(calledFor(handler)).toEqual(ids([...retries, fresh]));
    expect(store.calls.due).toEqual([{ kind: "idp_delete", now: T0, limit: 3 }]);
    expect(store.calls.pending).toEqual([{ kind: "idp_delete", limit: 3 }]);
    expect(store.calls.settle[0]!.outcomes).toEqual({ through: fresh.revision, done: retries.map((r) => r.retryId), retry: [], rejected: [] });
    expect(store.retryTable.size).toBe(0);
    expect(await work()).toEqual({ done: 0, more: false, nextAt: null });
  });

  it("does not report more when neither the retries nor the log filled the batch, even if together they did", async () => {
    const store = new FakeEffectLog();
    store.seedRetry("idp_delete", { dueAt: T0 });
    store.seedRetry("idp_delete", { dueAt: T0 });
    store.end();
    store.end();
    const work = effectWorker(store, "idp_delete", async () => undefined, { clock: () => T0, batchSize: 3 });
    expect(await work()).toEqual({ done: 4, more: false, nextAt: null });
  });

  it("takes 200 items per run by default", async () => {
    const store = new FakeEffectLog();
    store.endMany(201);
    const work = effectWorker(store, "idp_delete", async () => undefined, { clock: () => T0 });
    expect(await work()).toEqual({ done: 200, more: true });
    expect(store.calls.pending[0]!.limit).toBe(200);
    expect(store.calls.due[0]!.limit).toBe(200);
    expect(await work()).toEqual({ done: 1, more: false, nextAt: null });
  });

  it("a full batch drains through a Loop at once (more)", async () => {
    const store = new FakeEffectLog();
    store.endMany(7);
    const handler = vi.fn(async () => undefined);
    const loop = new Loop({ name: "idp-cleanup", task: effectWorker(store, "idp_delete", handler, { clock: () => T0, batchSize: 3 }), clock: () => T0 });
    loop.start();
    try {
      await flush(20);
      expect(handler).toHaveBeenCalledTimes(7);
      expect(store.cursors.idp_delete).toBe(7n);
      expect(await store.effectBacklog("idp_delete")).toMatchObject({ pending: 0 });
    } finally {
      await loop.stop();
    }
  });

  it("reports nextAt = the earliest retry of its kind when some items failed", async () => {
    const random = vi.spyOn(Math, "random").mockReturnValue(0);
    const store = new FakeEffectLog();
    store.seedRetry("gsap_revoke", { dueAt: T0 + 100 }); // another kind's retry, due sooner
    store.cursors.idp_delete = store.head;
    const slow = store.seedRetry("idp_delete", { dueAt: T0, attempts: 3 }); // base 8 s
    const fast = store.end(); // base 1 s
    const ok = store.end();
    const work = effectWorker(
      store,
      "idp_delete",
      async (e) => {
        if (e.delegationId !== ok.delegationId) throw unavailable();
      },
      { clock: () => T0 },
    );
    const out = await work();
    expect(random).toHaveBeenCalled();
    expect(store.row("idp_delete", slow.delegationId)!.nextAttemptTime).toBe(T0 + 4000);
    expect(store.row("idp_delete", fast.delegationId)!.nextAttemptTime).toBe(T0 + 500);
    expect(out).toEqual({ done: 1, more: false, nextAt: T0 + 500 });
    expect(store.calls.nextTime).toEqual(["idp_delete"]);
  });

  it("reports nextAt = the store's next retry time when nothing is due, and changes nothing", async () => {
    const store = new FakeEffectLog();
    const r1 = store.seedRetry("idp_delete", { dueAt: T0 + 7000 });
    const r2 = store.seedRetry("idp_delete", { dueAt: T0 + 3000 });
    store.seedRetry("gsap_revoke", { dueAt: T0 + 1000 });
    store.cursors.idp_delete = store.head;
    const rows = structuredClone([...store.retryTable.values()]);
    const handler = vi.fn(async () => undefined);
    const work = effectWorker(store, "idp_delete", handler, { clock: () => T0 });
    expect(await work()).toEqual({ done: 0, more: false, nextAt: T0 + 3000 });
    expect(handler).not.toHaveBeenCalled();
    expect([...store.retryTable.values()]).toEqual(rows);
    expect(store.cursors.idp_delete).toBe(store.head);
    expect(store.row("idp_delete", r1.delegationId)!.attempts).toBe(1);
    expect(store.row("idp_delete", r2.delegationId)!.attempts).toBe(1);
  });

  it("reports nextAt null when there is nothing at all", async () => {
    const store = new FakeEffectLog();
    const work = effectWorker(store, "idp_delete", async () => undefined, { clock: () => T0 });
    expect(await work()).toEqual({ done: 0, more: false, nextAt: null });
    expect(store.calls.nextTime).toEqual(["idp_delete"]);
  });
});

describe("effectWorker: retries and crashes", () => {
  it("an item that failed comes back once due, and is deleted from the retry table when done", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const store = new FakeEffectLog();
    const e = store.end();
    const other = store.end();
    let now = T0;
    let failing = true;
    const handler = vi.fn(async (x: Effect) => {
      if (failing && x.delegationId === e.delegationId) throw unavailable();
    });
    const onDone = vi.fn();
    const work = effectWorker(store, "idp_delete", handler, { clock: () => now, onDone });
    expect(await work()).toEqual({ done: 1, more: false, nextAt: T0 + 500 });
    expect(store.cursors.idp_delete).toBe(other.revision);
    const row = store.row("idp_delete", e.delegationId)!;

    handler.mockClear();
    now = T0 + 499;
    expect(await work()).toEqual({ done: 0, more: false, nextAt: T0 + 500 });
    expect(handler).not.toHaveBeenCalled();

    failing = false;
    now = T0 + 500;
    onDone.mockClear();
    expect(await work()).toEqual({ done: 1, more: false, nextAt: null });
    expect(handler).toHaveBeenCalledTimes(1);
    expect(handler.mock.calls[0]![0]).toMatchObject({ delegationId: e.delegationId, retryId: row.id, attempts: 1, revision: e.revision, createTime: e.eventTime });
    expect(store.calls.settle.at(-1)!.outcomes).toEqual({ through: other.revision, done: [row.id], retry: [], rejected: [] });
    expect(store.row("idp_delete", e.delegationId)).toBeUndefined();
    expect(onDone).toHaveBeenCalledWith(expect.objectContaining({ retryId: row.id }), T0 + 500);
    expect(await store.effectBacklog("idp_delete")).toEqual({ pending: 0, retrying: 0, oldestPendingTime: null, rejected: 0 });
  });

  it("a crash between handling and settling leaves the cursor and the retry table as they were, so the batch is repeated", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const store = new FakeEffectLog();
    const retried = store.seedRetry("idp_delete", { dueAt: T0, attempts: 2 });
    const ok = store.end();
    const failing = store.end();
    const handler = vi.fn(async (e: Effect) => {
      if (e.delegationId === failing.delegationId) throw unavailable();
    });
    const work = effectWorker(store, "idp_delete", handler, { clock: () => T0 });

    store.failSettle = new Error("connection reset during commit");
    const err = await work().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(EffectsFailing);
    expect((err as Error).message).toBe("connection reset during commit");
    expect(calledFor(handler)).toEqual(ids([retried, ok, failing]));
    expect(store.cursors.idp_delete).toBe(retried.revision);
    expect([...store.retryTable.values()]).toEqual([expect.objectContaining({ id: retried.retryId, state: "pending", attempts: 2, nextAttemptTime: T0 })]);

    // The next run carries out the same batch again (every handler is idempotent), and this time it is settled.
    handler.mockClear();
    expect(await work()).toEqual({ done: 2, more: false, nextAt: T0 + 500 });
    expect(calledFor(handler)).toEqual(ids([retried, ok, failing]));
    expect(store.cursors.idp_delete).toBe(failing.revision);
    expect(store.retryTable.get(retried.retryId)).toBeUndefined();
    expect([...store.retryTable.values()]).toEqual([expect.objectContaining({ delegationId: failing.delegationId, attempts: 1, nextAttemptTime: T0 + 500 })]);

    handler.mockClear();
    expect(await work()).toEqual({ done: 0, more: false, nextAt: T0 + 500 });
    expect(handler).not.toHaveBeenCalled();
  });
});

describe("mapLimit", () => {
  it("returns results in the items' order whatever order they finish in", async () => {
    const out = await mapLimit([30, 10, 20, 0], 2, async (n) => {
      await flush(n / 10);
      return n * 2;
    });
    expect(out).toEqual([60, 20, 40, 0]);
  });

  it("keeps at most `limit` in flight", async () => {
    let inFlight = 0;
    let most = 0;
    const out = await mapLimit([1, 2, 3, 4, 5, 6, 7], 3, async (n) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await flush(n % 3);
      inFlight--;
      return n;
    });
    expect(out).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(most).toBe(3);
  });

  it("handles no items", async () => {
    const fn = vi.fn(async () => 1);
    expect(await mapLimit([], 4, fn)).toEqual([]);
    expect(fn).not.toHaveBeenCalled();
  });

  it.each([0, 0.5, -1, Number.NaN])("with a limit of %s runs every item, with one lane", async (limit) => {
    let inFlight = 0;
    let most = 0;
    const out = await mapLimit(["a", "b", "c"], limit, async (s) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await flush(1);
      inFlight--;
      return s.toUpperCase();
    });
    expect(out).toEqual(["A", "B", "C"]);
    expect(most).toBe(1);
  });
});
