/**
 * The dashboard's model (web/src/model.ts), DOM-free: a listing replaces the
 * live rows and keeps the ended ones; events upsert the delegation after the
 * change (endings only for rows shown), add and remove pending ceremonies,
 * and an ending takes its delegation's pending ceremonies along; time left
 * follows the broker's clock, not the browser's.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  CeremonySchema,
  CeremonyState,
  DelegationEventSchema,
  DelegationEventType,
  DelegationSchema,
  DelegationState,
} from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { formatDuration, humanize } from "../../web/src/format.js";
import { DashboardModel } from "../../web/src/model.js";

const NOW = 1_800_000_000_000;
const delegation = (id: string, state = DelegationState.ACTIVE, extra: Record<string, unknown> = {}) =>
  create(DelegationSchema, {
    delegationId: id,
    state,
    agentType: "claude-code",
    expireTime: timestampFromMs(NOW + 600_000),
    timeRemaining: durationFromMs(state === DelegationState.ACTIVE ? 600_000 : 0),
    ...extra,
  });
const ceremony = (id: string, delegationId: string, state = CeremonyState.PENDING) => create(CeremonySchema, { ceremonyId: id, delegationId, state, command: "deploy" });
const event = (type: DelegationEventType, d?: ReturnType<typeof delegation>, c?: ReturnType<typeof ceremony>) =>
  create(DelegationEventSchema, { type, ...(d ? { delegation: d } : {}), ...(c ? { ceremony: c } : {}) });

describe("DashboardModel", () => {
  it("a listing replaces the live rows, keeps the ended ones, and drops live rows no longer listed", () => {
    const m = new DashboardModel(() => NOW);
    m.load([delegation("a"), delegation("b")], []);
    m.apply(event(DelegationEventType.REVOKED, delegation("a", DelegationState.REVOKED)));
    m.load([delegation("c")], []);
    expect([...m.delegations.keys()]).toEqual(["a", "c"]);
    expect(m.delegations.get("a")!.state).toBe(DelegationState.REVOKED);
    expect(m.liveCount).toBe(1);
  });

  it("CREATED adds a row at the end; endings and ceremony events update only rows it shows", () => {
    const m = new DashboardModel(() => NOW);
    m.load([delegation("a")], []);
    expect(m.apply(event(DelegationEventType.CREATED, delegation("b")))).toEqual({ delegationId: "b" });
    expect(m.apply(event(DelegationEventType.EXPIRED, delegation("z", DelegationState.EXPIRED)))).toEqual({});
    expect([...m.delegations.keys()]).toEqual(["a", "b"]);
    m.apply(event(DelegationEventType.CEREMONY_USED, delegation("a", DelegationState.ACTIVE, { commandsRemaining: 4 }), ceremony("c1", "a", CeremonyState.USED)));
    expect(m.delegations.get("a")!.commandsRemaining).toBe(4);
    // Applying an event the listing already reflects changes nothing.
    m.apply(event(DelegationEventType.CREATED, delegation("b")));
    expect([...m.delegations.keys()]).toEqual(["a", "b"]);
  });

  it("keeps pending ceremonies from the listing and CEREMONY_REQUESTED, and drops them once decided, expired or their delegation ended", () => {
    const m = new DashboardModel(() => NOW);
    m.load([delegation("a"), delegation("b")], [ceremony("c1", "a"), ceremony("old", "a", CeremonyState.APPROVED)]);
    expect([...m.ceremonies.keys()]).toEqual(["c1"]);
    m.apply(event(DelegationEventType.CEREMONY_REQUESTED, delegation("a"), ceremony("c2", "a")));
    m.apply(event(DelegationEventType.CEREMONY_REQUESTED, delegation("b"), ceremony("c3", "b")));
    expect([...m.ceremonies.keys()]).toEqual(["c1", "c2", "c3"]);
    m.apply(event(DelegationEventType.CEREMONY_DENIED, delegation("a"), ceremony("c1", "a", CeremonyState.DENIED)));
    expect([...m.ceremonies.keys()]).toEqual(["c2", "c3"]);
    m.apply(event(DelegationEventType.REVOKED, delegation("a", DelegationState.REVOKED)));
    expect([...m.ceremonies.keys()]).toEqual(["c3"]);
    m.decided("c3");
    expect(m.ceremonies.size).toBe(0);
  });

  it("counts time left by the broker's clock (estimated from the listing), never below zero, and zero once ended", () => {
    let now = NOW - 5_000; // the browser's clock is 5 s behind the broker's
    const m = new DashboardModel(() => now);
    m.load([delegation("a")], []);
    expect(m.skewMs).toBe(5_000);
    expect(m.timeLeftMs(m.delegations.get("a")!)).toBe(600_000);
    now += 60_000;
    expect(m.timeLeftMs(m.delegations.get("a")!)).toBe(540_000);
    now += 3_600_000;
    expect(m.timeLeftMs(m.delegations.get("a")!)).toBe(0);
    expect(m.timeLeftMs(delegation("x", DelegationState.REVOKED))).toBe(0);
  });
});

describe("formatting", () => {
  it.each([
    [0, "0s"],
    [-5_000, "0s"],
    [12_400, "12s"],
    [249_000, "4m 09s"],
    [3_600_000, "1h 00m"],
    [3_905_000, "1h 05m"],
  ])("formatDuration(%i) is %s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it("humanizes proto names", () => {
    expect(humanize("CEREMONY_REQUESTED")).toBe("Ceremony requested");
  });
});
