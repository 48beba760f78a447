/**
 * Expiry on time: a delegation turns EXPIRED within a second of its
 * expire_time, also when it expired while the broker was down.
 */
import { durationFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommandDecision, DelegationEventType, DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { flakyRegistrar } from "../helpers/fakes.js";
import { collect, events } from "../helpers/watch.js";

describe.each(DRIVERS)("expiry (%s)", (driver) => {
  let t: TestBroker;
  const reg = flakyRegistrar();
  beforeAll(async () => {
    t = await startTestBroker({ driver, overrides: { registrar: reg.registrar } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("expires within one second of expire_time, with an EXPIRED event and the identity deleted", async () => {
    const head = await t.broker.store.headRevision();
    const stream = t.grpc.watch({ startRevision: head });
    const ttls = [1200, 1500, 2100];
    const created = await Promise.all(
      ttls.map((ms, i) => t.grpc.unary("createDelegation", { delegatorAcId: `ac-${i}`, scope: { ttl: durationFromMs(ms) } }, as(ALICE))),
    );
    const ids = new Set(created.map((c) => c.delegation!.delegationId));
    const got = await collect(stream, (m) => events(m).filter((e) => e.type === DelegationEventType.EXPIRED).length >= 3, 10_000);
    const expired = events(got.messages).filter((e) => e.type === DelegationEventType.EXPIRED);
    for (const e of expired) {
      expect(ids.has(e.delegation!.delegationId)).toBe(true);
      const late = timestampMs(e.eventTime!) - timestampMs(e.delegation!.expireTime!);
      expect(late).toBeGreaterThanOrEqual(0);
      expect(late).toBeLessThan(1000);
      expect(e.reason).toBe("ttl_elapsed");
      expect(e.delegation!.state).toBe(DelegationState.EXPIRED);
    }
    await t.settle();
    for (const id of ids) expect(reg.registrar.registered.has(id)).toBe(false);
  });

  it("denies commands once the TTL has passed", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-x", scope: { ttl: durationFromMs(1000) } }, as(ALICE));
    await new Promise((r) => setTimeout(r, 1100));
    const r = await t.grpc.unary("authorizeCommand", { delegationId: c.delegation!.delegationId, command: "ls" }, as(ALICE));
    expect(r.decision).toBe(CommandDecision.DENY);
    expect(["delegation_expired"]).toContain(r.reason);
  });

  it("sweeps delegations that expired while the broker was down at start", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-down", scope: { ttl: durationFromMs(1000) } }, as(ALICE));
    const id = c.delegation!.delegationId;
    const head = await t.broker.store.headRevision();
    await t.broker.stop(); // the broker is down when the TTL passes
    await new Promise((r) => setTimeout(r, 1300));
    expect((await (await import("../../src/store/open-store.js")).openStore(t.db.url).then(async (s) => {
      const d = await s.get(id);
      await s.close();
      return d!.state;
    }))).toBe("ACTIVE");
    await t.restart();
    const got = await collect(t.grpc.watch({ startRevision: head }), (m) => events(m).length >= 1);
    const [ev] = events(got.messages);
    expect(ev!.type).toBe(DelegationEventType.EXPIRED);
    expect(ev!.delegation!.delegationId).toBe(id);
    expect(ev!.reason).toBe("ttl_elapsed");
    await t.settle();
    expect(reg.registrar.registered.has(id)).toBe(false);
  });

  // Last: it moves the broker's clock on by two hours.
  it("expires in every lane (two on PostgreSQL), each lane on its own, each delegation once", async () => {
    const lanes = t.broker.background.expiryLanes;
    expect(lanes.map((l) => l.health.name)).toEqual(driver === "postgresql" ? ["expiry", "expiry-2"] : ["expiry"]);
    const head = await t.broker.store.headRevision();
    const create = (i: number) =>
      t.grpc.unary("createDelegation", { delegatorAcId: `ac-lane-${i}`, scope: { ttl: durationFromMs(3_600_000) } }, as(ALICE));
    const ids = (await Promise.all([0, 1, 2, 3, 4, 5].map(create))).map((c) => c.delegation!.delegationId);
    t.advanceClock(2 * 3_600_000);
    // The last lane alone ends what is due: it is not waiting on the first.
    expect((await lanes.at(-1)!.runOnce()).done).toBeGreaterThanOrEqual(ids.length);
    for (const l of lanes) expect((await l.runOnce()).done).toBe(0);
    const got = await collect(t.grpc.watch({ startRevision: head }), (m) => events(m).filter((e) => e.type === DelegationEventType.EXPIRED).length >= ids.length);
    const expired = events(got.messages).filter((e) => e.type === DelegationEventType.EXPIRED && ids.includes(e.delegation!.delegationId));
    expect(expired.map((e) => e.delegation!.delegationId).sort()).toEqual([...ids].sort());
  });
});
