/** The read model's rules, against a scripted source and an injected clock. */
import { describe, expect, it } from "vitest";
import type { Delegation, DelegationEvent } from "../../src/domain/index.js";
import { DelegationReadModel } from "../../src/events/read-model.js";
import { makeDelegation } from "../store/fixtures.js";
import { readGate } from "../helpers/gate.js";

function setup(options: { maxAgeMs?: number; maxEntries?: number } = {}) {
  const rows = new Map<string, Delegation>();
  let reads = 0;
  let commit: (r: bigint) => void = () => undefined;
  const gate = readGate();
  let now = 1_000;
  const source = {
    async get(id: string) {
      reads++;
      await gate.passed();
      const d = rows.get(id);
      return d ? { ...d } : null;
    },
    onCommit(l: (r: bigint) => void) {
      commit = l;
      return () => undefined;
    },
  };
  const model = new DelegationReadModel(source, { clock: () => now, ...options });
  model.startAt(10n);
  const event = (d: Delegation, revision: bigint): DelegationEvent => ({ revision, type: "REVOKED", delegation: d, eventTime: now, reason: "", actor: "", chronicleCid: "" });
  return {
    model,
    rows,
    reads: () => reads,
    commit: (r: bigint) => commit(r),
    hold: gate.hold,
    tick: (ms: number) => (now += ms),
    event,
  };
}

describe("DelegationReadModel", () => {
  it("answers from memory until the entry is maxAgeMs old, then reads again", async () => {
    const s = setup({ maxAgeMs: 1000 });
    s.rows.set("a", makeDelegation({ id: "a" }));
    await s.model.get("a");
    await s.model.get("a");
    expect(s.reads()).toBe(1);
    s.tick(999);
    await s.model.get("a");
    expect(s.reads()).toBe(1);
    s.tick(1);
    await s.model.get("a");
    expect(s.reads()).toBe(2);
  });

  it("drops a delegation when an event for it is applied, and keeps the others", async () => {
    const s = setup();
    s.rows.set("a", makeDelegation({ id: "a" }));
    s.rows.set("b", makeDelegation({ id: "b" }));
    await s.model.get("a");
    await s.model.get("b");
    s.rows.set("a", makeDelegation({ id: "a", state: "REVOKED" }));
    s.model.apply([s.event(s.rows.get("a")!, 11n)]);
    expect((await s.model.get("a"))!.state).toBe("REVOKED");
    await s.model.get("b");
    expect(s.reads()).toBe(3);
  });

  it("reads from the database while a commit of this process is not yet applied", async () => {
    const s = setup();
    s.rows.set("a", makeDelegation({ id: "a" }));
    await s.model.get("a");
    s.commit(12n);
    s.rows.set("a", makeDelegation({ id: "a", state: "REVOKED" }));
    expect((await s.model.get("a"))!.state).toBe("REVOKED");
    expect((await s.model.get("a"))!.state).toBe("REVOKED");
    expect(s.reads()).toBe(3); // neither kept
    s.model.apply([s.event(s.rows.get("a")!, 12n)]);
    await s.model.get("a");
    await s.model.get("a");
    expect(s.reads()).toBe(4);
  });

  it("does not keep a read that an applied event overlapped", async () => {
    const s = setup();
    s.rows.set("a", makeDelegation({ id: "a" }));
    const release = s.hold();
    const pending = s.model.get("a");
    s.model.apply([s.event(makeDelegation({ id: "other" }), 11n)]);
    release();
    await pending;
    await s.model.get("a");
    expect(s.reads()).toBe(2);
  });

  it("shows a count made here at once, never lowering it", async () => {
    const s = setup();
    s.rows.set("a", makeDelegation({ id: "a", commandsExecuted: 5 }));
    await s.model.get("a");
    s.model.counted("a", 7);
    s.model.counted("a", 6);
    expect((await s.model.get("a"))!.commandsExecuted).toBe(7);
    expect(s.reads()).toBe(1);
  });

  it("holds at most maxEntries, the oldest going first; maxAgeMs 0 holds nothing", async () => {
    const s = setup({ maxEntries: 2 });
    for (const id of ["a", "b", "c"]) s.rows.set(id, makeDelegation({ id }));
    for (const id of ["a", "b", "c"]) await s.model.get(id);
    expect(s.model.size).toBe(2);
    await s.model.get("a");
    expect(s.reads()).toBe(4);
    const off = setup({ maxAgeMs: 0 });
    off.rows.set("a", makeDelegation({ id: "a" }));
    await off.model.get("a");
    await off.model.get("a");
    expect(off.reads()).toBe(2);
    expect(off.model.size).toBe(0);
  });

  it("answers an unknown id as the source does, without keeping it", async () => {
    const s = setup();
    expect(await s.model.get("nope")).toBeNull();
    expect(s.model.size).toBe(0);
  });
});

describe("DelegationReadModel memory", () => {
  it("holds only what was read within maxAgeMs: older entries are swept at the next read", async () => {
    const s = setup({ maxAgeMs: 1000 });
    for (const id of ["a", "b", "c"]) s.rows.set(id, makeDelegation({ id }));
    await s.model.get("a");
    await s.model.get("b");
    s.tick(600);
    await s.model.get("c");
    expect(s.model.size).toBe(3);
    s.tick(500); // a and b are 1100 ms old, c 500
    await s.model.get("c");
    expect(s.model.size).toBe(1);
  });

  it("ages an entry made again from its new read, not its first", async () => {
    const s = setup({ maxAgeMs: 1000 });
    for (const id of ["x", "y"]) s.rows.set(id, makeDelegation({ id }));
    await s.model.get("x"); // at 0
    s.tick(500);
    s.model.apply([s.event(s.rows.get("x")!, 11n)]);
    await s.model.get("x"); // made again at 500
    s.tick(600);
    await s.model.get("y"); // at 1100 the first x is old; the x held is 600 ms old
    await s.model.get("x");
    expect(s.reads()).toBe(3);
    s.tick(400);
    await s.model.get("x"); // 1000 ms old now: read again
    expect(s.reads()).toBe(4);
  });

  it("makes room by dropping the oldest entry still held, not one made again since", async () => {
    const s = setup({ maxEntries: 3 });
    for (const id of ["a", "b", "c", "d"]) s.rows.set(id, makeDelegation({ id }));
    for (const id of ["a", "b", "c"]) await s.model.get(id);
    s.model.apply([s.event(s.rows.get("a")!, 11n)]);
    await s.model.get("a"); // made again: now the newest (b, c, a)
    await s.model.get("d"); // full: b goes
    expect(s.model.size).toBe(3);
    const reads = s.reads();
    for (const id of ["c", "a", "d"]) await s.model.get(id);
    expect(s.reads()).toBe(reads);
    await s.model.get("b");
    expect(s.reads()).toBe(reads + 1);
  });

  it("keeps the oldest-first order over many entries made and dropped (past the queue's compaction)", async () => {
    // A read every 20 ms: one is 1000 ms old 50 reads later, but at most 40 are held.
    const s = setup({ maxAgeMs: 1000, maxEntries: 40 });
    for (let i = 0; i < 10_000; i++) s.rows.set(`d${i}`, makeDelegation({ id: `d${i}` }));
    const made: string[] = []; // the id of each entry made, in order
    const get = async (id: string) => {
      const before = s.reads();
      await s.model.get(id);
      if (s.reads() > before) made.push(id);
    };
    for (let i = 0; i < 10_000; i++) {
      s.tick(20);
      await get(`d${i}`);
      if (i % 7 === 0 && i >= 2) {
        // An event drops one still held (its place in the queue goes stale), and it is read again: now the newest.
        s.model.apply([s.event(s.rows.get(`d${i - 2}`)!, BigInt(11 + i))]);
        await get(`d${i - 2}`);
      }
    }
    expect(made.length).toBeGreaterThan(11_000);
    // Held: the 40 entries made last, each answered from memory; the one made before them is read again.
    const newest = [...new Set([...made].reverse())];
    expect(s.model.size).toBe(40);
    const reads = s.reads();
    for (const id of newest.slice(0, 40)) await s.model.get(id);
    expect(s.reads()).toBe(reads);
    await s.model.get(newest[40]!);
    expect(s.reads()).toBe(reads + 1);
  });
});
