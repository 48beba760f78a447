/**
 * Graceful shutdown through the real transports: Watch streams end at once
 * with UNAVAILABLE; no new call is accepted; unary calls in flight may finish
 * within SHUTDOWN_GRACE_SECONDS; what is still running then is answered
 * UNAVAILABLE on both ports (never INTERNAL, never a dropped connection).
 * GSAP is made slow (an in-process fake) to hold calls in flight.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { GsapFake } from "../fakes/gsap-fake.js";
import { flakyGsap } from "../helpers/fakes.js";
import { GSAP_TOKEN } from "../helpers/real-world.js";
import { collect } from "../helpers/watch.js";

const create = { delegatorAcId: "ac-1", scope: { maxCommands: 5 } };

describe("graceful shutdown", () => {
  let t: TestBroker | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  async function start(graceSeconds: number, gsapDelayMs: number) {
    const slow = flakyGsap();
    t = await startTestBroker({ env: { SHUTDOWN_GRACE_SECONDS: String(graceSeconds) }, overrides: { gsap: slow.gsap } });
    // A delegation to watch, made before GSAP turns slow.
    const d = (await t.grpc.unary("createDelegation", create, as(ALICE))).delegation!;
    slow.state.delayMs = gsapDelayMs;
    return { t, d, slow };
  }

  /** Resolves once GSAP has received `n` delegated-context requests. */
  async function inFlight(state: { requests: number }, n: number) {
    for (let i = 0; i < 200 && state.requests < n; i++) await new Promise((r) => setTimeout(r, 10));
    expect(state.requests).toBe(n);
  }

  it("lets unary calls in flight finish within the grace, on both ports, and ends Watch streams at once", async () => {
    const { t, d, slow } = await start(10, 700);
    const watch = collect(t.grpc.watch({ startRevision: 0n, delegationId: d.delegationId }, as(ALICE)), () => false);
    const viaGrpc = t.grpc.unary("createDelegation", create, as(ALICE));
    const viaConnect = t.connect.createDelegation(create, { headers: as(ALICE) });
    await inFlight(slow.state, 3);
    const began = Date.now();
    const stopped = t.broker.stop();
    // The stream does not wait for the grace.
    const ended = await watch;
    expect(ended.error?.code).toBe(Code.Unavailable);
    const [a, b] = await Promise.all([viaGrpc, viaConnect]);
    expect(a.delegation!.state).toBe(DelegationState.ACTIVE);
    expect(b.delegation!.state).toBe(DelegationState.ACTIVE);
    await stopped;
    // Drained, not cut short: it stopped once the calls were done, long before the 10 s grace.
    expect(Date.now() - began).toBeLessThan(5_000);
  });

  it("answers what is still running after the grace UNAVAILABLE on both ports, and refuses new calls meanwhile", async () => {
    const { t, slow } = await start(1, 30_000);
    const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);
    const viaGrpc = failure(t.grpc.unary("createDelegation", create, as(ALICE)));
    const viaConnect = failure(t.connect.createDelegation(create, { headers: as(ALICE) }));
    await inFlight(slow.state, 3);
    const began = Date.now();
    const stopped = t.broker.stop();
    // A call that arrives after shutdown began is not accepted.
    await new Promise((r) => setTimeout(r, 100));
    const late = await failure(t.connectGrpc.getDelegation({ delegationId: "del_01JD3000000000000000000000" }, { headers: as(ALICE) }));
    expect(ConnectError.from(late).code).toBe(Code.Unavailable);

    const [g, c] = await Promise.all([viaGrpc, viaConnect]);
    expect((g as { code: number }).code).toBe(Code.Unavailable);
    expect((g as Error).message).toMatch(/shutting down/);
    expect(ConnectError.from(c).code).toBe(Code.Unavailable);
    expect(ConnectError.from(c).rawMessage).toMatch(/shutting down/);
    await stopped;
    const took = Date.now() - began;
    expect(took).toBeGreaterThanOrEqual(1_000);
    expect(took).toBeLessThan(5_000);
  });

  it("abandons upstream calls still in flight when the grace ends, instead of waiting out their own timeout", async () => {
    const gsap = await GsapFake.start({ bearerToken: GSAP_TOKEN });
    try {
      gsap.setContext({ contextId: "ac-1", status: "authorized", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE" });
      t = await startTestBroker({
        env: {
          SHUTDOWN_GRACE_SECONDS: "1",
          GSAP_DRIVER: "http",
          GSAP_BROKER_URL: gsap.url,
          GSAP_BEARER_TOKEN: GSAP_TOKEN,
          HTTP_TIMEOUT_SECONDS: "30",
        },
      });
      // The real HTTP driver's request for the agent's context hangs far longer than the grace.
      gsap.faultMethod = "POST";
      gsap.delayNext(1, 60_000);
      const call = t.grpc.unary("createDelegation", create, as(ALICE)).then(
        () => undefined,
        (e: unknown) => e,
      );
      for (let i = 0; i < 300 && gsap.requestsOf("POST").length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(gsap.requestsOf("POST")).toHaveLength(1);
      const began = Date.now();
      await t.broker.stop();
      const took = Date.now() - began;
      expect((await call) as { code: number }).toMatchObject({ code: Code.Unavailable });
      // GSAP saw the broker drop the request at the end of the grace, not 30 s later.
      expect(gsap.abandoned).toHaveLength(1);
      expect(gsap.abandoned[0]! - began).toBeGreaterThanOrEqual(900);
      expect(gsap.abandoned[0]! - began).toBeLessThan(3_000);
      expect(took).toBeLessThan(5_000);
    } finally {
      await gsap.close();
    }
  });
});
