/**
 * The HTTP GSAP driver against a fake GSAP on a real loopback server: the
 * prototype's request, the response contract it validates, how GSAP's
 * answers and failures map to broker errors, and the retry rules per call.
 */
import { Writable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { DelegatedContextRequest, GsapClient } from "../../src/clients/gsap/gsap-client.js";
import { ACTIVE_CONTEXT_STATUSES, createHttpGsap, errorDetail, parseIsoTime } from "../../src/clients/gsap/http-gsap.js";
import { HttpClient, UpstreamError } from "../../src/clients/http/http-client.js";
import { createLogger } from "../../src/logging.js";
import { GsapFake, type MalformedAnswer } from "../fakes/gsap-fake.js";
import { type Failure, asCaller, callerCode, isFailure } from "../helpers/caller-code.js";

const TOKEN = "gsap-bearer-5f0c1d2e9a8b7c6d";
const ORDER = ["CAP_READ", "CAP_MUTATE", "CAP_ADMIN"];
const CORPUS = "sha256:corpus-under-test";
const ALICE = "did:web:example.com/user/alice";
const BOB = "did:web:example.com/user/bob";
const DELEGATION = "del_01JD5S8W3X9Y7Z6A5B4C3D2E1F";
const AGENT = `did:web:guildhouse.dev/agent/claude-code-${DELEGATION}`;
const ALICE_EXPIRY = "2030-01-01T00:00:00Z";

let fake: GsapFake;
let gsap: GsapClient;
let sleeps: number[];
let logLines: string[];

interface DriverOptions {
  token?: string;
  timeoutMs?: number;
  maxRetries?: number;
  sleep?: (ms: number) => Promise<void>;
}

function driver(o: DriverOptions = {}): GsapClient {
  const log = createLogger({
    level: "debug",
    destination: new Writable({
      write(chunk: Buffer, _enc, done) {
        logLines.push(chunk.toString());
        done();
      },
    }),
  });
  return createHttpGsap({
    url: `${fake.url}/`,
    bearerToken: o.token ?? TOKEN,
    corpusEntryCid: CORPUS,
    capabilityOrder: ORDER,
    log,
    http: new HttpClient({
      system: "gsap",
      timeoutMs: o.timeoutMs ?? 2_000,
      maxRetries: o.maxRetries ?? 2,
      sleep:
        o.sleep ??
        (async (ms) => {
          sleeps.push(ms);
        }),
    }),
  });
}

function request(over: Partial<DelegatedContextRequest> = {}): DelegatedContextRequest {
  return {
    delegatorAcId: "ac-alice",
    agentDid: AGENT,
    delegationId: DELEGATION,
    capabilityCeiling: "CAP_MUTATE",
    ttlMs: 3_600_000,
    accordTemplate: "ai-delegation-standard",
    ...over,
  };
}

/** The error `p` rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<Failure> {
  const outcome = await p.then(
    (v) => ({ ok: true as const, v }),
    (e: unknown) => ({ ok: false as const, e }),
  );
  if (outcome.ok) throw new Error(`expected a rejection, got ${JSON.stringify(outcome.v)}`);
  expect(isFailure(outcome.e)).toBe(true);
  return outcome.e as Failure;
}

function expectMalformed(err: Failure): void {
  expect(err).toBeInstanceOf(UpstreamError);
  expect((err as UpstreamError).failure).toBe("malformed");
  expect(callerCode(err)).toBe("UNAVAILABLE");
  expect(err.reason).toBe("GSAP_UNAVAILABLE");
}

function expectNotActive(err: Failure): void {
  expect(err).not.toBeInstanceOf(UpstreamError);
  expect(callerCode(err)).toBe("FAILED_PRECONDITION");
  expect(err.reason).toBe("DELEGATOR_CONTEXT_NOT_ACTIVE");
}

/** Everything about an error a caller or the log could see, as one string. */
function visible(err: Failure): string {
  const causes: string[] = [];
  for (let c: unknown = err.cause; c && causes.length < 5; c = (c as { cause?: unknown }).cause) causes.push(String(c));
  return JSON.stringify({ message: err.message, reason: err.reason, metadata: err.metadata, stack: err.stack, causes });
}

beforeEach(async () => {
  sleeps = [];
  logLines = [];
  fake = await GsapFake.start({ bearerToken: TOKEN, capabilityOrder: ORDER });
  fake.setContext({ contextId: "ac-alice", status: "authorized", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", expiresAt: ALICE_EXPIRY });
  gsap = driver();
});

afterEach(async () => {
  await gsap.close();
  await fake.close();
  // No log line, whatever the test did, carries the bearer token.
  expect(logLines.join("")).not.toContain(TOKEN);
});

describe("requestDelegatedContext: the request", () => {
  it("POSTs the prototype's on_behalf_of body plus delegator_ac_id, capability_ceiling and ttl_seconds, with the bearer token", async () => {
    expect(gsap.mode).toBe("http");
    await gsap.requestDelegatedContext(request());
    const posts = fake.requestsOf("POST");
    expect(posts).toHaveLength(1);
    const post = posts[0]!;
    expect(post.path).toBe("/governance/authorize/");
    expect(post.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(post.headers["content-type"]).toBe("application/json");
    expect(post.body).toStrictEqual({
      driver_id: "keycloak",
      principal: AGENT,
      playbook: `delegation:${DELEGATION}`,
      corpus_entry_cid: CORPUS,
      parameters_cid: `sha256:delegation-${DELEGATION}`,
      accord_template: "ai-delegation-standard",
      session_mode: "delegation",
      on_behalf_of: AGENT,
      delegator_ac_id: "ac-alice",
      capability_ceiling: "CAP_MUTATE",
      ttl_seconds: 3600,
    });
  });

  it("sends the caller's accord template and a TTL rounded down to whole seconds, at least one", async () => {
    await gsap.requestDelegatedContext(request({ accordTemplate: "ai-delegation-strict", ttlMs: 90_999 }));
    await gsap.requestDelegatedContext(request({ ttlMs: 400 }));
    const [a, b] = fake.requestsOf("POST").map((r) => r.body as Record<string, unknown>);
    expect(a!.accord_template).toBe("ai-delegation-strict");
    expect(a!.ttl_seconds).toBe(90);
    expect(b!.ttl_seconds).toBe(1);
  });
});

describe("requestDelegatedContext: the answer", () => {
  it("returns the issued context with GSAP's whole answer as its attributes", async () => {
    const ctx = await gsap.requestDelegatedContext(request());
    const answer = fake.issued.get("ac-1")!;
    expect(ctx).toStrictEqual({
      contextId: "ac-1",
      status: "authorized",
      principalDid: AGENT,
      delegationId: DELEGATION,
      capabilityCeiling: "CAP_MUTATE",
      expireTime: Date.parse(answer.expires_at as string),
      attributes: answer,
    });
    expect(ctx.attributes.delegation_chain).toEqual([{ context_id: "ac-alice", principal_did: ALICE }]);
  });

  it("keeps a ceiling GSAP narrowed below the requested one", async () => {
    fake.answerOverrides = { capability_ceiling: "CAP_READ" };
    const ctx = await gsap.requestDelegatedContext(request());
    expect(ctx.capabilityCeiling).toBe("CAP_READ");
  });

  it("accepts an answer without the optional fields, filling them from the request", async () => {
    fake.answerOverrides = {
      capability_ceiling: undefined,
      delegation_id: undefined,
      principal_did: undefined,
      on_behalf_of: undefined,
      expires_at: undefined,
    };
    const ctx = await gsap.requestDelegatedContext(request());
    expect(ctx).toMatchObject({ contextId: "ac-1", capabilityCeiling: "CAP_MUTATE", delegationId: DELEGATION, principalDid: AGENT, expireTime: null });
    expect(ctx.attributes).toStrictEqual({ status: "authorized", context_id: "ac-1", delegator_ac_id: "ac-alice", delegation_chain: expect.any(Array) });
  });

  it("takes null optional fields as absent, as FastAPI writes them", async () => {
    fake.answerOverrides = { capability_ceiling: null, delegation_id: null, delegator_ac_id: null, principal_did: null, on_behalf_of: null, expires_at: null };
    const ctx = await gsap.requestDelegatedContext(request());
    expect(ctx).toMatchObject({ contextId: "ac-1", capabilityCeiling: "CAP_MUTATE", delegationId: DELEGATION, principalDid: AGENT, expireTime: null });
  });

  it("reads expire_time as well as expires_at, a time without offset as UTC, and keeps the earlier", async () => {
    fake.answerOverrides = { expires_at: undefined, expire_time: "2030-01-01T00:00:00.123456" };
    expect((await gsap.requestDelegatedContext(request())).expireTime).toBe(Date.UTC(2030, 0, 1, 0, 0, 0, 123));
    fake.answerOverrides = { expires_at: "2030-01-01T01:00:00+01:00", expire_time: "2030-06-01T00:00:00Z" };
    expect((await gsap.requestDelegatedContext(request())).expireTime).toBe(Date.UTC(2030, 0, 1));
  });

  const rejected: [MalformedAnswer, string][] = [
    ["not-json", "a body that is not JSON"],
    ["array", "JSON that is not an object"],
    ["empty-body", "an empty body"],
    ["missing-context-id", "no context_id"],
    ["empty-context-id", "an empty context_id"],
    ["denied", 'status "denied"'],
    ["missing-status", "no status"],
    ["ceiling-above", "a ceiling above the requested one"],
    ["unknown-ceiling", "a ceiling outside CAPABILITY_ORDER"],
    ["wrong-delegation-id", "another delegation_id"],
    ["wrong-delegator", "another delegator_ac_id"],
    ["wrong-principal", "another principal_did"],
    ["wrong-on-behalf-of", "another on_behalf_of"],
    ["bad-expiry", "an expires_at that is not a date"],
    ["impossible-date", "an expires_at on a day that does not exist"],
  ];
  it.each(rejected)("rejects a 200 answer with %s (%s) as malformed, UNAVAILABLE", async (which) => {
    fake.malformNext(which);
    const err = await rejection(gsap.requestDelegatedContext(request()));
    expectMalformed(err);
    expect(fake.requestsOf("POST")).toHaveLength(1);
  });

  it.each([
    ["null", "null"],
    ["a JSON array", "[]"],
    ["a JSON string", `"authorized"`],
  ])("rejects a 200 answer that is %s: not a JSON object", async (_what, text) => {
    fake.failNext(1, 200, text);
    const err = await rejection(gsap.requestDelegatedContext(request()));
    expectMalformed(err);
    expect(err.message).toContain("not an object");
  });

  it("checks the ceiling against the one requested, not the delegator's", async () => {
    fake.answerOverrides = { capability_ceiling: "CAP_MUTATE" };
    expectMalformed(await rejection(gsap.requestDelegatedContext(request({ capabilityCeiling: "CAP_READ" }))));
  });

  it("names the id of a context it rejected, in the log and in the error, so the failed create revokes it", async () => {
    fake.malformNext("wrong-principal");
    const err = await rejection(gsap.requestDelegatedContext(request()));
    expect(err.metadata.context_id).toBe("ac-1");
    const line = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === "GSAP answer rejected");
    expect(line).toMatchObject({ level: 40, contextId: "ac-1", status: 200 });
  });
});

describe("requestDelegatedContext: GSAP's refusals and failures", () => {
  it("maps a 403 policy denial to FAILED_PRECONDITION GSAP_DENIED with GSAP's reason", async () => {
    const err = await rejection(gsap.requestDelegatedContext(request({ capabilityCeiling: "CAP_ADMIN" })));
    expect(err).not.toBeInstanceOf(UpstreamError);
    expect(callerCode(err)).toBe("FAILED_PRECONDITION");
    expect(err.reason).toBe("GSAP_DENIED");
    expect(err.message).toContain("(403)");
    expect(err.message).toContain("policy denial: CAP_ADMIN exceeds the delegator's ceiling");
  });

  it("passes on FastAPI's structured detail of a 422", async () => {
    fake.failNext(1, 422, { detail: [{ loc: ["body", "corpus_entry_cid"], msg: "unknown corpus entry" }] });
    const err = await rejection(gsap.requestDelegatedContext(request()));
    expect(err.reason).toBe("GSAP_DENIED");
    expect(err.message).toContain("unknown corpus entry");
  });

  it("truncates GSAP's error text and removes the token and bearer credentials from it", async () => {
    fake.failNext(1, 400, { detail: `token ${TOKEN} is not valid for Authorization: Bearer abc.def.ghi ${"x".repeat(1000)}` });
    const err = await rejection(gsap.requestDelegatedContext(request()));
    expect(err.reason).toBe("GSAP_DENIED");
    expect(err.message).not.toContain(TOKEN);
    expect(err.message).not.toContain("abc.def.ghi");
    expect(err.message).toContain("[redacted]");
    expect(err.message.length).toBeLessThan(300);
  });

  it("maps a 401 to UNAVAILABLE GSAP_CREDENTIALS_REJECTED: the broker's token, not the request, is wrong", async () => {
    const wrong = driver({ token: "not-the-token-7788" });
    try {
      const err = await rejection(wrong.requestDelegatedContext(request()));
      expect(callerCode(err)).toBe("UNAVAILABLE");
      expect(err.reason).toBe("GSAP_CREDENTIALS_REJECTED");
      expect(visible(err)).not.toContain("not-the-token-7788");
      expect(fake.requestsOf("POST")).toHaveLength(1);
      expect(fake.issued.size).toBe(0);
    } finally {
      await wrong.close();
    }
  });

  it("does not repeat a POST answered 500: GSAP may have issued the context", async () => {
    fake.failNext(1, 500);
    const err = await rejection(gsap.requestDelegatedContext(request()));
    expect(err).toBeInstanceOf(UpstreamError);
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect((err as UpstreamError).status).toBe(500);
    expect(fake.requestsOf("POST")).toHaveLength(1);
    expect(sleeps).toEqual([]);
  });

  it("repeats a POST whose connection was refused: it never reached GSAP", async () => {
    await fake.down();
    const g = driver({
      sleep: async (ms) => {
        sleeps.push(ms);
        await fake.up();
      },
    });
    try {
      const ctx = await g.requestDelegatedContext(request());
      expect(ctx.contextId).toBe("ac-1");
      expect(sleeps).toHaveLength(1);
      expect(fake.requestsOf("POST")).toHaveLength(1);
    } finally {
      await g.close();
    }
  });

  it("reports GSAP down for good as UNAVAILABLE", async () => {
    await fake.down();
    const err = await rejection(gsap.requestDelegatedContext(request()));
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).failure).toBe("unreachable");
    expect(callerCode(err)).toBe("UNAVAILABLE");
  });

  it("repeats a POST answered 429 after the Retry-After", async () => {
    fake.rateLimitNext(1, "1");
    const ctx = await gsap.requestDelegatedContext(request());
    expect(ctx.contextId).toBe("ac-1");
    expect(fake.requestsOf("POST")).toHaveLength(2);
    expect(sleeps).toEqual([1_000]);
  });

  it("ends a POST GSAP is too slow to answer with DEADLINE_EXCEEDED, without repeating it", async () => {
    const slow = driver({ timeoutMs: 150 });
    fake.delayNext(1, 2_000);
    try {
      const err = await rejection(slow.requestDelegatedContext(request()));
      expect(callerCode(err)).toBe("DEADLINE_EXCEEDED");
      expect(err.reason).toBe("GSAP_TIMEOUT");
      expect(fake.requestsOf("POST")).toHaveLength(1);
    } finally {
      await slow.close();
    }
  });

  it("treats a 408 as GSAP failing, not as a denial", async () => {
    fake.failNext(1, 408);
    const err = await rejection(gsap.requestDelegatedContext(request()));
    expect(err).toBeInstanceOf(UpstreamError);
    expect(callerCode(err)).toBe("UNAVAILABLE");
  });
});

describe("describeDelegatorContext", () => {
  it("GETs /governance/authorize/{id}/ with the bearer token and returns the ceiling and expiry", async () => {
    const ctx = await gsap.describeDelegatorContext("ac-alice", ALICE);
    expect(ctx).toStrictEqual({ contextId: "ac-alice", capabilityCeiling: "CAP_MUTATE", expireTime: Date.parse(ALICE_EXPIRY) });
    const [get] = fake.requestsOf("GET");
    expect(get!.path).toBe("/governance/authorize/ac-alice/");
    expect(get!.headers.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it("calls a context without expiry open-ended", async () => {
    fake.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_ADMIN", expiresAt: null });
    expect(await gsap.describeDelegatorContext("ac-alice", ALICE)).toStrictEqual({ contextId: "ac-alice", capabilityCeiling: "CAP_ADMIN", expireTime: null });
  });

  it("reads expire_time when expires_at is absent", async () => {
    fake.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_READ", extra: { expire_time: "2031-05-06 07:08:09" } });
    expect((await gsap.describeDelegatorContext("ac-alice", ALICE)).expireTime).toBe(Date.UTC(2031, 4, 6, 7, 8, 9));
  });

  it.each([...ACTIVE_CONTEXT_STATUSES])("accepts status %s as active", async (status) => {
    fake.setContext({ contextId: "ac-alice", status, principalDid: ALICE, capabilityCeiling: "CAP_MUTATE" });
    expect((await gsap.describeDelegatorContext("ac-alice", ALICE)).capabilityCeiling).toBe("CAP_MUTATE");
  });

  it("defines exactly authorized and active as the active statuses", () => {
    expect([...ACTIVE_CONTEXT_STATUSES].sort()).toEqual(["active", "authorized"]);
  });

  it.each(["pending", "denied", "revoked", "expired", "AUTHORIZED", ""])("refuses a context with status %j as not active", async (status) => {
    fake.setContext({ contextId: "ac-alice", status, principalDid: ALICE, capabilityCeiling: "CAP_MUTATE" });
    expectNotActive(await rejection(gsap.describeDelegatorContext("ac-alice", ALICE)));
  });

  it("refuses a context GSAP does not know (404) as not active", async () => {
    expectNotActive(await rejection(gsap.describeDelegatorContext("ac-nobody", ALICE)));
  });

  it("refuses someone else's context with exactly the answer for an unknown one", async () => {
    const unknown = await rejection(gsap.describeDelegatorContext("ac-nobody", BOB));
    const alices = await rejection(gsap.describeDelegatorContext("ac-alice", BOB));
    expectNotActive(alices);
    expect({ code: callerCode(alices), reason: alices.reason, message: alices.message, metadata: alices.metadata }).toStrictEqual({
      code: callerCode(unknown),
      reason: unknown.reason,
      message: unknown.message,
      metadata: unknown.metadata,
    });
    expect(alices.message).not.toContain(ALICE);
  });

  it("checks the owner before the status and the ceiling, so a stranger learns neither", async () => {
    fake.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_GOD" });
    expectNotActive(await rejection(gsap.describeDelegatorContext("ac-alice", BOB)));
  });

  it("takes `principal` when GSAP gives no principal_did", async () => {
    fake.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", extra: { principal_did: undefined, principal: ALICE } });
    expect((await gsap.describeDelegatorContext("ac-alice", ALICE)).contextId).toBe("ac-alice");
    expectNotActive(await rejection(gsap.describeDelegatorContext("ac-alice", BOB)));
  });

  it("prefers principal_did to principal, which may then be anything", async () => {
    fake.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", extra: { principal: { name: "alice" } } });
    expect((await gsap.describeDelegatorContext("ac-alice", ALICE)).contextId).toBe("ac-alice");
    fake.setContext({ contextId: "ac-alice", status: "active", principalDid: BOB, capabilityCeiling: "CAP_MUTATE", extra: { principal: ALICE } });
    expectNotActive(await rejection(gsap.describeDelegatorContext("ac-alice", ALICE)));
  });

  it("refuses a ceiling outside CAPABILITY_ORDER as DELEGATOR_CEILING_UNKNOWN", async () => {
    fake.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_GOD" });
    const err = await rejection(gsap.describeDelegatorContext("ac-alice", ALICE));
    expect(callerCode(err)).toBe("FAILED_PRECONDITION");
    expect(err.reason).toBe("DELEGATOR_CEILING_UNKNOWN");
  });

  it.each([401, 403])("maps %i to UNAVAILABLE GSAP_CREDENTIALS_REJECTED, without repeating", async (status) => {
    fake.failNext(1, status);
    const err = await rejection(gsap.describeDelegatorContext("ac-alice", ALICE));
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(err.reason).toBe("GSAP_CREDENTIALS_REJECTED");
    expect(fake.requestsOf("GET")).toHaveLength(1);
  });

  it("maps the fake's own 401 for a wrong token the same way", async () => {
    const wrong = driver({ token: "wrong-token-1234" });
    try {
      const err = await rejection(wrong.describeDelegatorContext("ac-alice", ALICE));
      expect(err.reason).toBe("GSAP_CREDENTIALS_REJECTED");
      expect(visible(err)).not.toContain("wrong-token-1234");
    } finally {
      await wrong.close();
    }
  });

  const malformed: [string, (f: GsapFake) => void][] = [
    ["a body that is not JSON", (f) => f.malformNext("not-json")],
    ["a JSON array", (f) => f.malformNext("array")],
    ["no context_id", (f) => f.malformNext("missing-context-id")],
    ["another context_id", (f) => f.malformNext("other-context-id")],
    ["no status", (f) => f.malformNext("missing-status")],
    ["an unparseable expires_at", (f) => f.malformNext("bad-expiry")],
    ["an expires_at on a day that does not exist", (f) => f.malformNext("impossible-date")],
    ["no principal at all", (f) => f.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", extra: { principal_did: undefined } })],
    ["a null principal_did and no principal", (f) => f.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", extra: { principal_did: null } })],
    ["an empty principal", (f) => f.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", extra: { principal_did: undefined, principal: "" } })],
    ["a principal_did that is not a string", (f) => f.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", extra: { principal_did: 42 } })],
    ["no capability_ceiling", (f) => f.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", extra: { capability_ceiling: undefined } })],
    ["a capability_ceiling that is not a string", (f) => f.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", extra: { capability_ceiling: ["CAP_READ"] } })],
    ["an expires_at that is a number", (f) => f.setContext({ contextId: "ac-alice", status: "active", principalDid: ALICE, capabilityCeiling: "CAP_MUTATE", expiresAt: null, extra: { expires_at: 1893456000 } })],
  ];
  it.each(malformed)("rejects an answer with %s as malformed, UNAVAILABLE", async (_what, breakIt) => {
    breakIt(fake);
    expectMalformed(await rejection(gsap.describeDelegatorContext("ac-alice", ALICE)));
  });

  it("repeats a GET answered 500", async () => {
    fake.failNext(2, 500);
    const ctx = await gsap.describeDelegatorContext("ac-alice", ALICE);
    expect(ctx.capabilityCeiling).toBe("CAP_MUTATE");
    expect(fake.requestsOf("GET")).toHaveLength(3);
  });

  it("repeats a GET that timed out, and ends with DEADLINE_EXCEEDED when every attempt does", async () => {
    const slow = driver({ timeoutMs: 150, maxRetries: 1 });
    try {
      fake.delayNext(1, 2_000);
      expect((await slow.describeDelegatorContext("ac-alice", ALICE)).contextId).toBe("ac-alice");
      expect(fake.requestsOf("GET")).toHaveLength(2);
      fake.delayNext(2, 2_000);
      const err = await rejection(slow.describeDelegatorContext("ac-alice", ALICE));
      expect(callerCode(err)).toBe("DEADLINE_EXCEEDED");
      expect(err.reason).toBe("GSAP_TIMEOUT");
      expect(fake.requestsOf("GET")).toHaveLength(4);
    } finally {
      await slow.close();
    }
  });

  it("never sends an id that would change the path, and encodes the rest", async () => {
    for (const id of ["..", ".", "%2e%2E", ".%2e", ""]) {
      expectNotActive(await rejection(gsap.describeDelegatorContext(id, ALICE)));
    }
    expect(fake.requests).toHaveLength(0);
    expectNotActive(await rejection(gsap.describeDelegatorContext("a/../b?c", ALICE)));
    expect(fake.requests.map((r) => r.path)).toEqual(["/governance/authorize/a%2F..%2Fb%3Fc/"]);
  });
});

describe("revokeContext: the broker's assumed revocation endpoint", () => {
  /** A context the fake issued, as the broker would hold it. */
  const issued = async () => (await gsap.requestDelegatedContext(request())).contextId;

  it("POSTs the reason and delegation id to /governance/authorize/{context_id}/revoke/ with the bearer token", async () => {
    const id = await issued();
    await gsap.revokeContext(id, "ttl_elapsed", { delegationId: DELEGATION });
    const post = fake.requestsOf("POST").at(-1)!;
    expect(post.path).toBe(`/governance/authorize/${id}/revoke/`);
    expect(post.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(post.headers["content-type"]).toContain("application/json");
    expect(post.body).toStrictEqual({ reason: "ttl_elapsed", delegation_id: DELEGATION });
    expect(fake.isRevoked(id)).toBe(true);
  });

  it("takes 404 (GSAP no longer knows the context) as done", async () => {
    await expect(gsap.revokeContext("ac-forgotten", "manual_revocation")).resolves.toBeUndefined();
    expect(fake.requestsOf("POST").at(-1)!.path).toBe("/governance/authorize/ac-forgotten/revoke/");
  });

  it.each([200, 202, 204])("takes %i as done", async (status) => {
    fake.failNext(1, status, status === 204 ? "" : { status: "revoked" });
    await expect(gsap.revokeContext("ac-x", "manual_revocation")).resolves.toBeUndefined();
  });

  it("follows GSAP_REVOKE_PATH, encoding the context id", async () => {
    const custom = createHttpGsap({
      url: fake.url,
      bearerToken: TOKEN,
      corpusEntryCid: CORPUS,
      capabilityOrder: ORDER,
      revokePath: "/v2/contexts/{context_id}/revoke/",
      http: new HttpClient({ system: "gsap", maxRetries: 0 }),
    });
    try {
      await custom.revokeContext("ac 1/2", "manual_revocation");
      expect(fake.requestsOf("POST").at(-1)!.path).toBe("/v2/contexts/ac%201%2F2/revoke/");
    } finally {
      await custom.close();
    }
  });

  it("repeats 5xx and 429 within the call (revoking twice is harmless), then reports a retryable failure", async () => {
    const id = "ac-retried";
    fake.setContext({ contextId: id, status: "authorized", principalDid: AGENT, capabilityCeiling: "CAP_READ" });
    fake.faultPathSuffix = "/revoke/";
    fake.failNext(1, 503);
    fake.rateLimitNext(1, "1");
    await gsap.revokeContext(id, "manual_revocation");
    expect(fake.requestsOf("POST").filter((r) => r.path.endsWith("/revoke/"))).toHaveLength(3);
    expect(sleeps).toContain(1000); // Retry-After honoured
    fake.failNext(3, 500);
    const err = await rejection(gsap.revokeContext(id, "manual_revocation"));
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err).toMatchObject({ failure: "status", retryable: true, status: 500 });
    expect(callerCode(err)).toBe("UNAVAILABLE");
    fake.faultPathSuffix = undefined;
  });

  it("reports a revocation GSAP does not answer in time as a retryable timeout", async () => {
    const slow = driver({ timeoutMs: 100, maxRetries: 0 });
    try {
      fake.delayNext(1, 400);
      const err = await rejection(slow.revokeContext("ac-slow", "manual_revocation"));
      expect(err).toMatchObject({ failure: "timeout", retryable: true, reason: "GSAP_TIMEOUT" });
    } finally {
      await slow.close();
    }
  });

  it("reports connection refused as retryable", async () => {
    await fake.down();
    const refused = driver({ maxRetries: 0 });
    try {
      const err = await rejection(refused.revokeContext("ac-down", "manual_revocation"));
      expect(err).toMatchObject({ failure: "unreachable", retryable: true });
    } finally {
      await refused.close();
      await fake.up();
    }
  });

  it.each([400, 409, 422])("records another 4xx (%i) as a refusal for good, with GSAP's words", async (status) => {
    fake.failNext(1, status, { detail: "context is pinned by policy" });
    const err = await rejection(gsap.revokeContext("ac-pinned", "manual_revocation"));
    expect(err).toMatchObject({ failure: "rejected", retryable: false, reason: "GSAP_REVOKE_REJECTED", status });
    expect(err.message).toContain("pinned by policy");
    expect(fake.requestsOf("POST")).toHaveLength(1);
  });

  it("reports 401/403 as the broker's credentials being refused (retryable once fixed)", async () => {
    const wrong = driver({ token: "not-the-token" });
    try {
      const err = await rejection(wrong.revokeContext("ac-x", "manual_revocation"));
      expect(err).toMatchObject({ failure: "credentials", retryable: true, reason: "GSAP_CREDENTIALS_REJECTED", status: 401 });
      expect(visible(err)).not.toContain("not-the-token");
    } finally {
      await wrong.close();
    }
  });

  it("refuses an empty or relative context id without sending anything", async () => {
    for (const id of ["", ".", "..", "%2e%2e"]) {
      const err = await rejection(gsap.revokeContext(id, "manual_revocation"));
      expect(err).toMatchObject({ retryable: false });
    }
    expect(fake.requests).toHaveLength(0);
  });
});

describe("the bearer token", () => {
  it("appears in no error, whatever went wrong", async () => {
    const errors: Failure[] = [];
    fake.failNext(1, 403, { detail: `forbidden for Bearer ${TOKEN}` });
    errors.push(await rejection(gsap.requestDelegatedContext(request())));
    fake.failNext(1, 500, { detail: TOKEN });
    errors.push(await rejection(gsap.requestDelegatedContext(request())));
    fake.failNext(1, 401, { detail: TOKEN });
    errors.push(await rejection(gsap.describeDelegatorContext("ac-alice", ALICE)));
    fake.malformNext("not-json");
    errors.push(await rejection(gsap.describeDelegatorContext("ac-alice", ALICE)));
    const slow = driver({ timeoutMs: 100, maxRetries: 0 });
    fake.delayNext(1, 1_000);
    errors.push(await rejection(slow.describeDelegatorContext("ac-alice", ALICE)));
    await slow.close();
    await fake.down();
    errors.push(await rejection(gsap.requestDelegatedContext(request())));
    expect(errors.map((e) => e.reason)).toEqual([
      "GSAP_DENIED",
      "GSAP_UNAVAILABLE",
      "GSAP_CREDENTIALS_REJECTED",
      "GSAP_UNAVAILABLE",
      "GSAP_TIMEOUT",
      "GSAP_UNAVAILABLE",
    ]);
    for (const e of errors) expect(visible(e)).not.toContain(TOKEN);
  });
});

describe("helpers", () => {
  it("parseIsoTime takes RFC 3339 and naive UTC times, and nothing else", () => {
    expect(parseIsoTime("2026-11-23T19:25:53Z")).toBe(Date.UTC(2026, 10, 23, 19, 25, 53));
    expect(parseIsoTime("2026-11-23T19:25:53.5+01:00")).toBe(Date.UTC(2026, 10, 23, 18, 25, 53, 500));
    expect(parseIsoTime("2026-11-23 19:25")).toBe(Date.UTC(2026, 10, 23, 19, 25));
    for (const bad of ["2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z", "1.5", "Tuesday", "2026-01-01"]) {
      expect(parseIsoTime(bad), bad).toBeNaN();
    }
    expect(parseIsoTime("2028-02-29T00:00:00Z")).toBe(Date.UTC(2028, 1, 29));
  });

  it("errorDetail prefers FastAPI's detail and falls back to the text", () => {
    expect(errorDetail(`{"detail":"no"}`, TOKEN)).toBe("no");
    expect(errorDetail(`{"error":"nope","message":"m"}`, TOKEN)).toBe("nope");
    expect(errorDetail("plain\ntext", TOKEN)).toBe("plain text");
    expect(errorDetail("", TOKEN)).toBe("");
  });
});
