/** The log follower's settled(): what a Watch from now waits for (src/events/log-follower.ts). */
import { afterEach, describe, expect, it } from "vitest";
import type { DelegationEvent } from "../../src/domain/index.js";
import { LogFollower } from "../../src/events/log-follower.js";
import type { RevisionListener, RevisionNotifier } from "../../src/events/notifier.js";
import type { EventLog } from "../../src/store/store.js";
import { makeDelegation } from "../store/fixtures.js";
import { readGate } from "../helpers/gate.js";

/** A log in memory whose reads can be held, and a notifier the test speaks for. */
function setup() {
  const log: DelegationEvent[] = [];
  const gate = readGate();
  const append = () => {
    const revision = BigInt(log.length + 1);
    log.push({ revision, type: "REVOKED", delegation: makeDelegation(), eventTime: 0, reason: "", actor: "", chronicleCid: "" });
    return revision;
  };
  const store = {
    headRevision: async () => BigInt(log.length),
    readEvents: async (after: bigint, limit: number) => {
      await gate.passed();
      return log.filter((e) => e.revision > after).slice(0, limit);
    },
  } as unknown as EventLog;
  const listeners = new Set<RevisionListener>();
  const notifier: RevisionNotifier = {
    kind: "in-process",
    subscribe: (l) => (listeners.add(l), () => listeners.delete(l)),
    start: async () => undefined,
    close: async () => undefined,
  };
  // A long poll: only notifications (and the test) make it read.
  const follower = new LogFollower(store, notifier, { pollMs: 60_000 });
  const handed: bigint[] = [];
  follower.add((events) => handed.push(...events.map((e) => e.revision)));
  return {
    follower,
    handed,
    append,
    notify: (r: bigint) => listeners.forEach((l) => l(r)),
    hold: gate.hold,
  };
}

const settledFlag = (p: Promise<void>) => {
  const s = { done: false };
  void p.then(() => (s.done = true));
  return s;
};
const turns = async (n = 20) => {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
};

describe("LogFollower.settled", () => {
  let stop: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await stop?.();
    stop = undefined;
  });

  it("resolves once the consumers have had the revision it was told of, not before", async () => {
    const s = setup();
    s.append();
    await s.follower.start();
    stop = () => s.follower.stop();
    expect(s.follower.revision).toBe(1n);
    const release = s.hold();
    const revision = s.append();
    s.notify(revision); // this process committed revision 2; the follower's read of it is held
    const waiting = settledFlag(s.follower.settled());
    await turns();
    expect(waiting.done).toBe(false);
    release();
    await turns();
    expect(waiting.done).toBe(true);
    expect(s.handed).toEqual([2n]);
  });

  it("resolves at once when nothing told of is pending", async () => {
    const s = setup();
    s.append();
    await s.follower.start();
    stop = () => s.follower.stop();
    const waiting = settledFlag(s.follower.settled());
    await turns(2);
    expect(waiting.done).toBe(true);
  });

  it("gives up when the caller's signal aborts, after its longest wait, and when the follower stops", async () => {
    const s = setup();
    await s.follower.start();
    const release = s.hold(); // the log cannot be read
    s.notify(s.append());
    const aborter = new AbortController();
    const byAbort = settledFlag(s.follower.settled(aborter.signal));
    const byTime = settledFlag(s.follower.settled(undefined, 30));
    const byStop = settledFlag(s.follower.settled(undefined, 60_000));
    await turns();
    expect([byAbort.done, byTime.done, byStop.done]).toEqual([false, false, false]);
    aborter.abort();
    await turns();
    expect(byAbort.done).toBe(true);
    await new Promise((r) => setTimeout(r, 60));
    expect([byTime.done, byStop.done]).toEqual([true, false]);
    const stopping = s.follower.stop(); // waits for the read under way
    await turns();
    expect(byStop.done).toBe(true);
    release();
    await stopping;
  });
});
