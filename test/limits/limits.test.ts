/**
 * Limits (issue #4) against a real broker: per-principal rate limits on
 * Create and Authorize with a retry time, the deadline cap on unary calls,
 * Watch streams per principal, the request size limit, and HTTP/2
 * concurrent streams per connection. Plus the Watch counter in-process,
 * where a shutdown-style abort can be driven directly.
 */
import * as http2 from "node:http2";
import { Code, ConnectError, type HandlerContext, createContextValues } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDevGsap } from "../../src/clients/gsap/dev-gsap.js";
import type { GsapClient } from "../../src/clients/gsap/gsap-client.js";
import { loadSettings } from "../../src/config/settings.js";
import { BrokerError } from "../../src/domain/index.js";
import { DelegationState, ErrorDetailSchema } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { createLogger } from "../../src/logging.js";
import { createStubRegistrar } from "../../src/registrars/stub/stub-registrar.js";
import { limitKey, limits } from "../../src/server/limits.js";
import { principalKey } from "../../src/server/principal.js";
import { type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { GrpcTestClient, errorDetailOf } from "../helpers/grpc-client.js";

/** A fresh delegator per test, so buckets and stream counts never carry over. */
let seq = 0;
const user = (name: string) => `did:web:example.com/user/${name}-${++seq}`;

/** The grpc-js error of a call that must fail: code, reason, metadata. */
async function grpcFailure(call: Promise<unknown>) {
  const err = (await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e,
  )) as { code: number; details: string };
  const detail = errorDetailOf(err);
  return { code: err.code, message: err.details, reason: detail?.reason, metadata: detail?.metadata ?? {} };
}

async function connectFailure(call: Promise<unknown>) {
  const err = await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConnectError);
  const ce = err as ConnectError;
  const detail = ce.findDetails(ErrorDetailSchema)[0];
  return { code: ce.code, message: ce.rawMessage, reason: detail?.reason, metadata: detail?.metadata ?? {} };
}

/** Polls `check` until it returns a value (not undefined) or `timeoutMs` passes. */
async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error("condition not reached in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}

type Watch = grpc.ClientReadableStream<unknown>;

/** Opens a watch and settles on its first message (open) or its error (refused). */
function openWatch(client: GrpcTestClient, who: string, request: { delegationId?: string } = {}) {
  const stream = client.watch({ startRevision: 0n, ...request }, as(who)) as Watch;
  const first = new Promise<{ ok: true } | { ok: false; code: number; reason: string | undefined }>((resolve) => {
    stream.once("data", () => resolve({ ok: true }));
    stream.once("error", (e: { code: number }) => resolve({ ok: false, code: e.code, reason: errorDetailOf(e)?.reason }));
  });
  stream.on("data", () => {});
  stream.on("error", () => {});
  return { stream, first };
}

/**
 * GSAP that answers requestDelegatedContext after 3 s for access contexts
 * named slow-*: slow-fail-* then fails, slow-ok-* then succeeds.
 */
function slowGsap(): GsapClient {
  const inner = createDevGsap();
  return {
    mode: "dev",
    describeDelegatorContext: (id, did) => inner.describeDelegatorContext(id, did),
    async requestDelegatedContext(req) {
      if (req.delegatorAcId.startsWith("slow-")) {
        await new Promise((r) => setTimeout(r, 3000));
        if (req.delegatorAcId.startsWith("slow-fail-")) throw new Error("GSAP answered 504");
      }
      return inner.requestDelegatedContext(req);
    },
    pollApproval: (token, req) => inner.pollApproval(token, req),
    revokeContext: (id, reason, options) => inner.revokeContext(id, reason, options),
    close: () => inner.close(),
  };
}

describe("limits", () => {
  let t: TestBroker;
  const registrar = createStubRegistrar();
  beforeAll(async () => {
    t = await startTestBroker({
      env: {
        RATE_LIMIT_CREATE_PER_MINUTE: "3",
        RATE_LIMIT_AUTHORIZE_PER_SECOND: "5",
        LIMIT_MAX_DEADLINE_SECONDS: "1",
        LIMIT_WATCH_STREAMS_PER_PRINCIPAL: "2",
        LIMIT_WATCH_STREAMS_PER_SERVICE: "4",
        LIMIT_MAX_REQUEST_BYTES: "4096",
        WATCH_CHECKPOINT_SECONDS: "1",
      },
      overrides: { gsap: slowGsap(), registrar },
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  const create = (who: string, ac = "ac-1", extra: { requestId?: string } = {}) =>
    t.grpc.unary("createDelegation", { delegatorAcId: ac, ...extra }, as(who));

  describe("rate limits", () => {
    it("refuses the 4th Create in a minute with RESOURCE_EXHAUSTED, RATE_LIMITED and a retry time, for that principal only", async () => {
      const a = user("rate-a");
      const b = user("rate-b");
      for (let i = 0; i < 3; i++) await create(a);
      const f = await grpcFailure(create(a));
      expect(f.code).toBe(Code.ResourceExhausted);
      expect(f.reason).toBe("RATE_LIMITED");
      // 3 per minute refills one token every 20 s.
      const retry = f.metadata.retry_after_ms!;
      expect(retry).toMatch(/^\d+$/);
      expect(Number(retry)).toBeGreaterThan(15_000);
      expect(Number(retry)).toBeLessThanOrEqual(20_000);
      expect(f.message).toMatch(/retry in \d+\.\d s/);
      // Same principal over another protocol: the limit is per caller, not per connection.
      const c = await connectFailure(t.connect.createDelegation({ delegatorAcId: "ac-1" }, { headers: as(a) }));
      expect(c.code).toBe(Code.ResourceExhausted);
      expect(c.reason).toBe("RATE_LIMITED");
      expect(Number(c.metadata.retry_after_ms)).toBeGreaterThan(0);
      // Another principal is untouched.
      for (let i = 0; i < 3; i++) expect((await create(b)).delegation?.delegationId).toMatch(/^del_/);
    });

    it("limits AuthorizeCommand per principal per second, and a call after the advertised wait succeeds", async () => {
      const a = user("authz");
      const id = (await create(a)).delegation!.delegationId;
      const authorize = (headers: Record<string, string>) =>
        t.grpc.unary("authorizeCommand", { delegationId: id, command: "ls" }, headers);
      for (let i = 0; i < 5; i++) await authorize(as(a));
      const f = await grpcFailure(authorize(as(a)));
      expect(f.code).toBe(Code.ResourceExhausted);
      expect(f.reason).toBe("RATE_LIMITED");
      const retry = Number(f.metadata.retry_after_ms);
      // 5 per second: a token every 200 ms.
      expect(retry).toBeGreaterThan(0);
      expect(retry).toBeLessThanOrEqual(200);
      // The dev operator (admin) has its own bucket.
      expect((await authorize({})).decision).toBeDefined();
      await new Promise((r) => setTimeout(r, retry));
      expect((await authorize(as(a))).decision).toBeDefined();
      // One token only: the next is refused again.
      expect((await grpcFailure(authorize(as(a)))).reason).toBe("RATE_LIMITED");
    });

    it("does not rate-limit other methods", async () => {
      const a = user("other");
      for (let i = 0; i < 20; i++) await t.grpc.unary("listAgents", {}, as(a));
    });
  });

  describe("deadline cap", () => {
    /** `who`'s delegations in `state`. */
    const inState = async (who: string, state: DelegationState) =>
      (await t.grpc.unary("listAgents", { state }, as(who))).delegations;
    /** Waits until `who` has one delegation in `state`; returns it. */
    const settled = (who: string, state: DelegationState) =>
      eventually(async () => (await inState(who, state))[0]);

    it("fails a Create that outlives the 1 s cap with DEADLINE_EXCEEDED / DEADLINE_CAPPED, over grpc-js and Connect", async () => {
      // grpc-js with a 20 s client deadline (longer than the cap), Connect with none.
      for (const call of [
        (who: string) => create(who, "slow-fail-1"),
        (who: string) => t.connect.createDelegation({ delegatorAcId: "slow-fail-1" }, { headers: as(who) }),
      ]) {
        const who = user("slow");
        const started = performance.now();
        const err = await call(who).then(
          () => {
            throw new Error("expected the call to fail");
          },
          (e: unknown) => e,
        );
        const elapsed = performance.now() - started;
        const detail = err instanceof ConnectError ? err.findDetails(ErrorDetailSchema)[0] : errorDetailOf(err);
        expect((err as { code: number }).code).toBe(Code.DeadlineExceeded);
        expect(detail?.reason).toBe("DEADLINE_CAPPED");
        expect(elapsed).toBeGreaterThanOrEqual(900);
        expect(elapsed).toBeLessThan(2500);
        // The create was still REQUESTED when the caller got its answer.
        expect(await inState(who, DelegationState.REQUESTED)).toHaveLength(1);

        // It keeps running; when GSAP fails, its compensation runs: FAILED, identity deleted.
        const d = await settled(who, DelegationState.FAILED);
        expect(registrar.registered.has(d.delegationId)).toBe(false);
        expect(await inState(who, DelegationState.REQUESTED)).toHaveLength(0);
        expect(await inState(who, DelegationState.ACTIVE)).toHaveLength(0);
      }
    }, 30_000);

    it("a Create whose upstream succeeds after the cap is withdrawn: nobody saw its secret; a retry with its request_id creates afresh", async () => {
      const who = user("slow-ok");
      const f = await grpcFailure(create(who, "slow-ok-1", { requestId: "req-1" }));
      expect(f.code).toBe(Code.DeadlineExceeded);
      expect(f.reason).toBe("DEADLINE_CAPPED");
      const d = await settled(who, DelegationState.FAILED);
      expect(await inState(who, DelegationState.REQUESTED)).toHaveLength(0);
      expect(await inState(who, DelegationState.ACTIVE)).toHaveLength(0);
      expect(registrar.registered.has(d.delegationId)).toBe(false);
      // The request id was released, so a retry with it starts over instead of replaying a withdrawn grant.
      expect(await t.broker.store.getIdempotency({ scope: who, method: "CreateDelegation", requestId: "req-1" })).toBeNull();
    }, 30_000);

    it("does not cap Watch streams: one stays open past the cap", async () => {
      const who = user("long-watch");
      const stream = t.grpc.watch({ startRevision: 0n }, as(who));
      const opened = performance.now();
      // Checkpoints come every second; wait for one well past the 1 s cap.
      const lived = await new Promise<number>((resolve, reject) => {
        stream.on("data", () => {
          const ms = performance.now() - opened;
          if (ms > 2000) resolve(ms);
        });
        stream.on("error", reject);
      });
      stream.cancel();
      expect(lived).toBeGreaterThan(2000);
    });
  });

  describe("watch streams per principal", () => {
    it("refuses a 3rd concurrent watch at once with TOO_MANY_WATCHES, for that principal only, and frees the slot when one closes", async () => {
      const a = user("watcher-a");
      const b = user("watcher-b");
      const w1 = openWatch(t.grpc, a);
      const w2 = openWatch(t.grpc, a);
      expect(await w1.first).toEqual({ ok: true });
      expect(await w2.first).toEqual({ ok: true });
      const w3 = openWatch(t.grpc, a);
      expect(await w3.first).toEqual({ ok: false, code: Code.ResourceExhausted, reason: "TOO_MANY_WATCHES" });
      const wb = openWatch(t.grpc, b);
      expect(await wb.first).toEqual({ ok: true });

      // The client cancels one: once the server has seen it, a new watch is accepted.
      w1.stream.cancel();
      const w4 = await eventually(async () => {
        const w = openWatch(t.grpc, a);
        const r = await w.first;
        if (r.ok) return w;
        expect(r.reason).toBe("TOO_MANY_WATCHES");
        return undefined;
      });
      // And the limit still holds with w2 and w4 open.
      const w5 = openWatch(t.grpc, a);
      expect((await w5.first).ok).toBe(false);
      for (const w of [w2, w4, wb]) w.stream.cancel();
    });

    it("gives a service principal (admin) its own allowance, beyond a delegator's", async () => {
      const admin = ""; // dev mode: no DID is the local operator, an admin
      const ws = [1, 2, 3, 4].map(() => openWatch(t.grpc, admin));
      expect((await Promise.all(ws.map((w) => w.first))).every((r) => r.ok)).toBe(true);
      const fifth = t.grpc.watch({ startRevision: 0n }, as(admin)) as Watch;
      const f = await new Promise<{ code: number; setting?: string | undefined }>((resolve) => {
        fifth.once("data", () => resolve({ code: 0 }));
        fifth.once("error", (e: { code: number }) => resolve({ code: e.code, setting: errorDetailOf(e)?.metadata.setting }));
      });
      expect(f).toEqual({ code: Code.ResourceExhausted, setting: "LIMIT_WATCH_STREAMS_PER_SERVICE" });
      // Meanwhile a delegator still has its own two.
      const d = [1, 2].map(() => openWatch(t.grpc, user("beside-service")));
      expect(await Promise.all(d.map((w) => w.first))).toEqual([{ ok: true }, { ok: true }]);
      for (const w of [...ws, ...d]) w.stream.cancel();
    });

    it("frees the slot when a watch ends with an error", async () => {
      const a = user("watch-err");
      for (let i = 0; i < 5; i++) {
        const w = openWatch(t.grpc, a, { delegationId: "del_01AAAAAAAAAAAAAAAAAAAAAAAA" });
        expect(await w.first).toMatchObject({ ok: false, code: Code.NotFound });
      }
      const w1 = openWatch(t.grpc, a);
      const w2 = openWatch(t.grpc, a);
      expect([await w1.first, await w2.first]).toEqual([{ ok: true }, { ok: true }]);
      w1.stream.cancel();
      w2.stream.cancel();
    });
  });

  describe("request size", () => {
    it("refuses a request over LIMIT_MAX_REQUEST_BYTES with RESOURCE_EXHAUSTED on every protocol, serves one just under, and stays up", async () => {
      const a = user("size");
      const id = (await create(a)).delegation!.delegationId;
      // The request is the command plus ~40 bytes of framing and the id.
      const under = { delegationId: id, command: "x".repeat(4000) };
      const over = { delegationId: id, command: "x".repeat(4100) };

      expect((await t.grpc.unary("authorizeCommand", under, as(a))).decision).toBeDefined();
      const g = await grpcFailure(t.grpc.unary("authorizeCommand", over, as(a)));
      expect(g.code).toBe(Code.ResourceExhausted);
      expect(g.message).toContain("larger than max");
      for (const client of [t.connect, t.grpcWeb, t.connectGrpc]) {
        const c = await connectFailure(client.authorizeCommand(over, { headers: as(a) }));
        expect(c.code).toBe(Code.ResourceExhausted);
      }
      // Still serving, on the same connections.
      expect((await t.connect.authorizeCommand(under, { headers: as(a) })).decision).toBeDefined();
      expect((await t.grpc.unary("getDelegation", { delegationId: id }, as(a))).delegation?.delegationId).toBe(id);
    });
  });

  it("keys principals by DID, else OAuth client, else admin/anonymous", () => {
    expect(limitKey({ did: "did:web:x", admin: false, clientId: "c1" })).toBe("did:web:x");
    expect(limitKey({ did: "", admin: false, clientId: "c1" })).toBe("client:c1");
    expect(limitKey({ did: "", admin: true })).toBe("admin");
    expect(limitKey({ did: "", admin: false })).toBe("anonymous");
  });
});

describe("HTTP/2 concurrent streams", () => {
  let t: TestBroker;
  beforeAll(async () => {
    // 4 streams per connection: at most 3 of them Watch, so one is always there for unary calls.
    t = await startTestBroker({ env: { LIMIT_MAX_CONCURRENT_STREAMS: "4" } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("advertises LIMIT_MAX_CONCURRENT_STREAMS in the gRPC port's SETTINGS frame", async () => {
    const session = http2.connect(`http://127.0.0.1:${t.broker.grpcPort}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
      expect(settings.maxConcurrentStreams).toBe(4);
    } finally {
      session.close();
    }
  });

  it("refuses a watch past the connection's allowance at once, and still serves unary calls on that connection", async () => {
    const ws = [1, 2, 3].map((i) => openWatch(t.grpc, user(`h2-${i}`)));
    expect(await Promise.all(ws.map((w) => w.first))).toEqual([{ ok: true }, { ok: true }, { ok: true }]);
    const over = openWatch(t.grpc, user("h2-over"));
    const refused = await over.first;
    expect(refused).toEqual({ ok: false, code: Code.ResourceExhausted, reason: "TOO_MANY_WATCHES_ON_CONNECTION" });
    // The same connection (one grpc-js channel) carries unary calls meanwhile, one after another and together.
    for (let i = 0; i < 3; i++) expect((await t.grpc.unary("listAgents", {}, {}, 2000)).delegations).toBeDefined();
    expect((await Promise.all([1, 2, 3].map(() => t.grpc.unary("listAgents", {}, {}, 2000)))).length).toBe(3);
    // Another connection has its own allowance.
    const other = new GrpcTestClient(`127.0.0.1:${t.broker.grpcPort}`, { "grpc.use_local_subchannel_pool": 1 });
    try {
      const elsewhere = openWatch(other, user("h2-elsewhere"));
      expect(await elsewhere.first).toEqual({ ok: true });
      elsewhere.stream.cancel();
    } finally {
      other.close();
    }
    // A closed watch frees its slot on the connection.
    ws[0]!.stream.cancel();
    const again = await eventually(async () => {
      const w = openWatch(t.grpc, user("h2-again"));
      return (await w.first).ok ? w : undefined;
    });
    for (const w of [again, ws[1]!, ws[2]!]) w.stream.cancel();
  });

});

describe("watch allowances (settings)", () => {
  it("refuses a per-connection Watch allowance that leaves no stream for unary calls, naming both settings", () => {
    expect(() => loadSettings({ LIMIT_MAX_CONCURRENT_STREAMS: "100", LIMIT_WATCH_STREAMS_PER_CONNECTION: "100" })).toThrow(
      /LIMIT_WATCH_STREAMS_PER_CONNECTION \(100\) must be below LIMIT_MAX_CONCURRENT_STREAMS \(100\)/,
    );
    expect(loadSettings({}).limits).toMatchObject({ maxConcurrentStreams: 1000, watchStreamsPerConnection: 900, watchStreamsPerService: 1000 });
    expect(loadSettings({ LIMIT_MAX_CONCURRENT_STREAMS: "50" }).limits.watchStreamsPerConnection).toBe(45);
  });
});

describe("watch counter (in-process)", () => {
  const settings = loadSettings({ LIMIT_WATCH_STREAMS_PER_PRINCIPAL: "2" }).limits;
  const method = DelegationService.method.watchDelegations;

  /** A context for `did`, with an AbortController standing in for the transport. */
  function ctx(did: string) {
    const controller = new AbortController();
    const values = createContextValues();
    values.set(principalKey, { did, admin: false });
    return { controller, ctx: { signal: controller.signal, values, timeoutMs: () => undefined } as unknown as HandlerContext };
  }

  it("counts a stream until it ends on abort (shutdown or cancel), then admits another", async () => {
    // A watch that runs until its signal aborts, like the hub's.
    const next = async function* (_req: unknown, c: HandlerContext) {
      yield "first";
      await new Promise((r) => c.signal.addEventListener("abort", r, { once: true }));
    };
    const handler = limits(settings, createLogger({ level: "silent" }))(next, method, true);
    const open = async (did: string) => {
      const c = ctx(did);
      const it = (handler({}, c.ctx) as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      await it.next();
      const rest = it.next(); // pending until aborted
      return { ...c, rest };
    };
    const s1 = await open("did:web:a");
    const s2 = await open("did:web:a");
    const refused = await open("did:web:a").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(BrokerError);
    expect((refused as BrokerError).reason).toBe("TOO_MANY_WATCHES");
    s1.controller.abort(new Error("shutdown"));
    expect(await s1.rest).toEqual({ done: true, value: undefined });
    const s3 = await open("did:web:a");
    for (const s of [s2, s3]) {
      s.controller.abort();
      await s.rest;
    }
    // All released: two more fit.
    const s4 = await open("did:web:a");
    const s5 = await open("did:web:a");
    for (const s of [s4, s5]) s.controller.abort();
  });

  it("releases when the consumer stops reading early (return())", async () => {
    const next = async function* () {
      for (;;) yield "x";
    };
    const handler = limits(settings, createLogger({ level: "silent" }))(next, method, true);
    for (let i = 0; i < 5; i++) {
      for await (const _ of handler({}, ctx("did:web:b").ctx) as AsyncIterable<unknown>) break;
    }
  });
});
