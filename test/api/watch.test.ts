/**
 * WatchDelegations: replay from a revision then live, with no gap and no
 * duplicate while writers run concurrently; checkpoints; compaction and
 * slow consumers answer clear errors.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ALICE, BOB, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { collect, events } from "../helpers/watch.js";

describe.each(DRIVERS)("WatchDelegations (%s)", (driver) => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker({ driver, env: { WATCH_CHECKPOINT_SECONDS: "1", WATCH_BUFFER_EVENTS: "20" } });
  });
  afterAll(async () => {
    await t?.close();
  });

  const create = (who: string, i: number) => t.grpc.unary("createDelegation", { delegatorAcId: `ac-${i}` }, as(who));

  it("replays from a revision and continues live with every revision exactly once under concurrent writers", async () => {
    for (let i = 0; i < 10; i++) await create(ALICE, i);
    const start = (await t.broker.store.headRevision()) - 5n;
    const stream = t.grpc.watch({ startRevision: start });
    // Three writers run while the watch replays and goes live.
    const writers = Promise.all(
      [ALICE, BOB, ALICE].map(async (who, w) => {
        for (let i = 0; i < 15; i++) {
          const c = await create(who, 100 * w + i);
          if (i % 3 === 0) await t.grpc.unary("revokeDelegation", { delegationId: c.delegation!.delegationId }, as(who));
        }
      }),
    );
    await writers;
    const head = await t.broker.store.headRevision();
    const got = await collect(stream, (m) => m.some((x) => x.kind.case === "event" && x.revision === head));
    const revs = events(got.messages).map((e) => e.revision);
    const expected = Array.from({ length: Number(head - start) }, (_, i) => start + 1n + BigInt(i));
    expect(revs).toEqual(expected);
    // Every message's revision never goes backwards.
    const all = got.messages.map((m) => m.revision);
    expect(all).toEqual([...all].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
  });

  it("start_revision 0 sends only what happens after the watch began, after a first checkpoint", async () => {
    await create(ALICE, 1);
    const head = await t.broker.store.headRevision();
    const stream = t.grpc.watch({ startRevision: 0n });
    const first = await new Promise<bigint>((resolve) => stream.once("data", (m) => resolve(m.revision)));
    expect(first).toBe(head);
    // Listen before creating: the event can arrive before the Create response does.
    const collecting = collect(stream, (m) => events(m).length >= 1);
    const c = await create(ALICE, 2);
    const got = await collecting;
    const [ev] = events(got.messages);
    expect(ev!.delegation!.delegationId).toBe(c.delegation!.delegationId);
    expect(ev!.revision).toBe(head + 1n);
  });

  it("filters by delegator and sends checkpoints that carry the head revision while idle", async () => {
    const start = await t.broker.store.headRevision();
    const stream = t.grpc.watch({ startRevision: start, delegatorDid: BOB });
    await create(ALICE, 1);
    const bobs = await create(BOB, 2);
    await create(ALICE, 3);
    const head = await t.broker.store.headRevision();
    const got = await collect(stream, (m) => m.some((x) => x.kind.case === "checkpoint" && x.revision === head), 5000);
    const ev = events(got.messages);
    expect(ev.map((e) => e.delegation!.delegationId)).toEqual([bobs.delegation!.delegationId]);
  });

  it("lets a delegator watch only their own delegations", async () => {
    const start = await t.broker.store.headRevision();
    const stream = t.grpc.watch({ startRevision: start }, as(ALICE));
    await create(BOB, 1);
    const mine = await create(ALICE, 2);
    const got = await collect(stream, (m) => events(m).length >= 1);
    expect(events(got.messages).map((e) => e.delegation!.delegationId)).toEqual([mine.delegation!.delegationId]);
    const foreign = await create(BOB, 3);
    const w = await collect(t.grpc.watch({ startRevision: 0n, delegationId: foreign.delegation!.delegationId }, as(ALICE)), () => false);
    expect(w.error?.code).toBe(Code.NotFound);
  });

  it("answers OUT_OF_RANGE for a revision that was pruned, telling the client to re-list", async () => {
    await create(ALICE, 1);
    const head = await t.broker.store.headRevision();
    // Pruning stops at events the audit outbox and the consequence workers have not settled: let them.
    await t.settle();
    expect((await t.broker.store.auditBacklog()).pending).toBe(0);
    expect((await t.broker.store.pruneEvents(Date.now() + 1000, 10_000)).deleted).toBeGreaterThan(0);
    const w = await collect(t.grpc.watch({ startRevision: head - 1n }), () => false);
    expect(w.error?.code).toBe(Code.OutOfRange);
    expect(w.error?.message).toContain("re-list");
    // The head itself is still a valid place to resume.
    const collecting = collect(t.grpc.watch({ startRevision: head }), (m) => events(m).length >= 1);
    const c = await create(ALICE, 2);
    const got = await collecting;
    expect(events(got.messages)[0]!.delegation!.delegationId).toBe(c.delegation!.delegationId);
  });

  it("cuts off a consumer that stops reading with RESOURCE_EXHAUSTED and a revision to resume from", async () => {
    const stream = t.grpc.watch({ startRevision: 0n });
    const first = await new Promise<bigint>((resolve) => stream.once("data", (m) => resolve(m.revision)));
    stream.pause();
    // Enough events to fill the HTTP/2 windows and then the 20-event queue.
    for (let i = 0; i < 400; i++) await create(ALICE, i);
    const got = await new Promise<{ code?: number; message: string }>((resolve) => {
      stream.on("error", (e: { code?: number; message: string }) => resolve(e));
      stream.on("data", () => {});
      stream.resume();
    });
    expect(got.code).toBe(Code.ResourceExhausted);
    expect(got.message).toMatch(/start_revision=\d+/);
    expect(first).toBeGreaterThan(0n);
    expect(t.broker.hub.subscriberCount).toBeLessThanOrEqual(1); // only the audit sink remains
  }, 60_000);
});
