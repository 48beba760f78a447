/**
 * Bad requests do not grow the broker's memory: after a warm-up, thousands of
 * malformed requests over every transport (several of them carrying 5–100 KB
 * of junk) leave the heap, measured after full garbage collections, where it
 * was.
 *
 * The broker and the test's clients share this process's heap (a client-side
 * leak would count too: stricter, not looser).
 * `--expose-gc` is switched on at run time (v8.setFlagsFromString) and gc()
 * taken from a fresh context, so no vitest configuration is needed.
 */
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { CLIENT_CODES, countingLogger } from "./outcome.js";
import { H2Client, envelope } from "./wire.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as (() => void) | undefined;

/** Rounds before the first measurement: lazy compilation, connection pools and caches settle. */
const WARM_UP = 300;
const ROUNDS = 500;
const PER_ROUND = 10;
const REQUESTS = ROUNDS * PER_ROUND;
/**
 * 5 000 requests that each left 1 KiB behind would add 4.9 MiB, and 256
 * bytes each 1.2 MiB; the bound is 1 MiB, so either leak fails the test.
 * (Planting such leaks, an array of 1 KiB or 256 B per request, measured
 * +5.2 MiB and +1.4 MiB; without one, -100 to +0 KiB.) A leak of the junk
 * itself (5–100 KB per request) would add hundreds of MiB.
 */
const MAX_GROWTH_BYTES = 1024 * 1024;

describe("memory under bad requests", () => {
  let t: TestBroker;
  let h2: H2Client;
  let sink: ReturnType<typeof countingLogger>;
  const unexpectedCodes: string[] = [];

  beforeAll(async () => {
    sink = countingLogger();
    t = await startTestBroker({ overrides: { log: sink.log } });
    h2 = new H2Client(t.broker.grpcPort);
  });
  afterAll(async () => {
    h2?.close();
    await t?.close();
  });

  const junk = (n: number, i: number) => `${i}`.padEnd(n, "x");
  const web = (path: string, body: string, headers: Record<string, string> = {}) =>
    fetch(`http://127.0.0.1:${t.broker.webPort}/llmbroker.v1.DelegationService/${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body,
    }).then((r) => r.arrayBuffer().then(() => r.status));
  const expectCode = (code: number, what: string) => {
    if (!CLIENT_CODES.has(code) && unexpectedCodes.length < 10) unexpectedCodes.push(`${what}: ${code}`);
  };
  const grpcCode = (p: Promise<unknown>, what: string) => p.then(() => expectCode(0, what), (e: { code: number }) => expectCode(e.code, what));
  const connectCode = (p: Promise<unknown>, what: string) => p.then(() => expectCode(0, what), (e) => expectCode(ConnectError.from(e).code, what));

  /** Ten bad requests, all different in content (the round number is in each). */
  function round(i: number): Promise<unknown> {
    return Promise.all([
      grpcCode(t.grpc.unary("getDelegation", { delegationId: junk(100_000, i) }, as(ALICE)), "grpc get huge id"),
      grpcCode(t.grpc.unary("createDelegation", { delegatorAcId: "ac-mem", scope: { capabilityCeiling: junk(50_000, i) } }, as(ALICE)), "grpc create unknown capability"),
      grpcCode(t.grpc.unary("authorizeCommand", { delegationId: `del_${String(i).padStart(26, "0")}`, command: junk(5_000, i) }, as(ALICE)), "grpc authorize unknown"),
      grpcCode(t.grpc.unary("listAgents", {}, as(`not-a-did-${i}`)), "grpc bad identity"),
      h2.call("/llmbroker.v1.DelegationService/GetDelegation", envelope(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, i & 0xff]))).then((a) => expectCode(a.code ?? -1, "h2 garbage protobuf")),
      h2.call("/llmbroker.v1.DelegationService/ListAgents", envelope(Buffer.from([0x0a]), 0, 1_000_000)).then((a) => expectCode(a.code ?? -1, "h2 over the limit")),
      web("GetDelegation", `{"delegationId": ${junk(80_000, i)}`).then((s) => expectCode(s === 400 ? 3 : -s, "connect not JSON")),
      connectCode(t.connect.listAgents({ pageToken: Buffer.from(junk(60_000, i)).toString("base64url") }, { headers: as(ALICE) }), "connect bad page token"),
      connectCode(t.connect.revokeDelegation({ delegationId: junk(30, i), reason: "\u0000".repeat(1_000) }, { headers: as(ALICE) }), "connect revoke bad id"),
      connectCode(
        (async () => {
          for await (const _ of t.connect.watchDelegations({ startRevision: BigInt(1_000_000 + i) }, { headers: as(ALICE) })) break;
        })(),
        "connect watch ahead",
      ),
    ]);
  }

  /**
   * The heap in use after full collections, without V8's code spaces: code
   * optimised while the test runs is not held by any request (a heap-snapshot
   * diff of a run showed all of the growth in code). The lowest of three, so
   * a collection still settling does not count.
   */
  async function settledHeap(): Promise<number> {
    let low = Infinity;
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setImmediate(r));
      gc!();
      gc!();
      const used = getHeapSpaceStatistics()
        .filter((s) => !s.space_name.includes("code"))
        .reduce((sum, s) => sum + s.space_used_size, 0);
      low = Math.min(low, used);
    }
    return low;
  }

  it(`${REQUESTS} bad requests leave the heap within ${MAX_GROWTH_BYTES / 1024 / 1024} MiB of where it was`, { timeout: 120_000 }, async () => {
    expect(gc, "gc() could not be exposed").toBeTypeOf("function");
    for (let i = 0; i < WARM_UP; i++) await round(i);
    const before = await settledHeap();
    for (let i = WARM_UP; i < WARM_UP + ROUNDS; i++) await round(i);
    const after = await settledHeap();
    const growth = after - before;
    console.info(`heap after GC, without code: ${(before / 1048576).toFixed(2)} MiB → ${(after / 1048576).toFixed(2)} MiB (${(growth / 1024).toFixed(0)} KiB for ${REQUESTS} bad requests)`);
    expect(unexpectedCodes).toEqual([]);
    expect(sink.unexpected).toEqual([]);
    expect(growth).toBeLessThan(MAX_GROWTH_BYTES);
    expect((await fetch(`http://127.0.0.1:${t.broker.webPort}/healthz`)).status).toBe(200);
  });
});
