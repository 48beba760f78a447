/**
 * The Prometheus metrics at /metrics, through a real broker: every counter
 * and histogram moves by exactly what the calls did (by method, code and
 * protocol, on both transports), the gauges follow the broker's state, the
 * ending path's histograms move with an expiry and a revoke (time driven by
 * the injected clock), upstream calls are counted against loopback fakes, and
 * no label carries a DID, a delegation id or a secret.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { eventually } from "../helpers/eventually.js";
import { failureOf } from "../helpers/grpc-client.js";
import { type World, startWorld } from "../helpers/real-world.js";
import { type Scrape, scrape } from "./scrape.js";

const RPCS = "llm_broker_rpc_requests_total";
const RPC_SECONDS = "llm_broker_rpc_duration_seconds";
const UNKNOWN_ID = `del_${"0".repeat(26)}`;

/** How much each series moved between two scrapes. */
function moved(before: Scrape, after: Scrape) {
  return (name: string, labels: Record<string, string> = {}) => after.value(name, labels) - before.value(name, labels);
}

describe("metrics of a broker", () => {
  let t: TestBroker;
  const page = () => scrape(t.broker.webPort);
  beforeAll(async () => {
    // One AuthorizeCommand per second per caller (burst 1), so refusals are easy to cause.
    t = await startTestBroker({ env: { RATE_LIMIT_AUTHORIZE_PER_SECOND: "1" } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("serves GET and HEAD in the Prometheus text format, refuses other methods, and includes the Node.js process metrics", async () => {
    const url = `http://127.0.0.1:${t.broker.webPort}/metrics`;
    const get = await fetch(url);
    expect(get.status).toBe(200);
    expect(get.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await get.text();
    expect(text).toContain("# TYPE llm_broker_rpc_requests_total counter");
    expect(text).toContain("# TYPE llm_broker_rpc_duration_seconds histogram");
    expect(text).toContain("# TYPE llm_broker_active_delegations gauge");
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds /m);

    const head = await fetch(url, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(await head.text()).toBe("");

    const post = await fetch(url, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });

  it("counts RPCs by method, code and protocol on grpc-js, Connect and gRPC-Web, and times each unary call once", async () => {
    const before = await page();
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-metrics-1" }, as(ALICE));
    const id = c.delegation!.delegationId;
    await t.grpc.unary("getDelegation", { delegationId: id }, as(ALICE));
    await t.grpc.unary("getDelegation", { delegationId: id }, as(ALICE));
    await t.connect.getDelegation({ delegationId: id }, { headers: as(ALICE) });
    await t.grpcWeb.getDelegation({ delegationId: id }, { headers: as(ALICE) });
    expect((await failureOf(t.grpc.unary("getDelegation", { delegationId: UNKNOWN_ID }, as(ALICE)))).code).toBe(Code.NotFound);
    const err = await t.connect.getDelegation({ delegationId: UNKNOWN_ID }, { headers: as(ALICE) }).catch((e: unknown) => e);
    expect(ConnectError.from(err).code).toBe(Code.NotFound);
    const after = await page();
    const d = moved(before, after);

    expect(d(RPCS, { method: "CreateDelegation", code: "OK", protocol: "grpc" })).toBe(1);
    expect(d(RPCS, { method: "GetDelegation", code: "OK", protocol: "grpc" })).toBe(2);
    expect(d(RPCS, { method: "GetDelegation", code: "OK", protocol: "connect" })).toBe(1);
    expect(d(RPCS, { method: "GetDelegation", code: "OK", protocol: "grpc-web" })).toBe(1);
    expect(d(RPCS, { method: "GetDelegation", code: "NOT_FOUND", protocol: "grpc" })).toBe(1);
    expect(d(RPCS, { method: "GetDelegation", code: "NOT_FOUND", protocol: "connect" })).toBe(1);
    // Nothing else moved: 7 calls, 7 counts.
    const total = (s: Scrape) => s.series(RPCS).reduce((n, x) => n + x.value, 0);
    expect(total(after) - total(before)).toBe(7);

    // The histogram (by method and code) saw the same calls, each once.
    expect(d(`${RPC_SECONDS}_count`, { method: "GetDelegation", code: "OK" })).toBe(4);
    expect(d(`${RPC_SECONDS}_count`, { method: "GetDelegation", code: "NOT_FOUND" })).toBe(2);
    expect(d(`${RPC_SECONDS}_bucket`, { method: "GetDelegation", code: "OK", le: "+Inf" })).toBe(4);
    expect(d(`${RPC_SECONDS}_count`, { method: "CreateDelegation", code: "OK" })).toBe(1);
    expect(after.value(`${RPC_SECONDS}_sum`, { method: "GetDelegation", code: "OK" })).toBeGreaterThan(0);
    // Cumulative buckets never decrease, and the last one is the count.
    const buckets = after
      .series(`${RPC_SECONDS}_bucket`)
      .filter((s) => s.labels.method === "GetDelegation" && s.labels.code === "OK")
      .map((s) => s.value);
    expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
    expect(buckets.at(-1)).toBe(after.value(`${RPC_SECONDS}_count`, { method: "GetDelegation", code: "OK" }));
  });

  it("counts rate-limit refusals by method and reason, and the refused calls as RESOURCE_EXHAUSTED", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-metrics-2" }, as(ALICE));
    const id = c.delegation!.delegationId;
    const before = await page();
    const results = await Promise.allSettled(
      [1, 2, 3].map(() => t.grpc.unary("authorizeCommand", { delegationId: id, command: "git status" }, as(ALICE))),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const d = moved(before, await page());
    expect(d("llm_broker_limit_refusals_total", { method: "AuthorizeCommand", reason: "RATE_LIMITED" })).toBe(2);
    expect(d(RPCS, { method: "AuthorizeCommand", code: "RESOURCE_EXHAUSTED", protocol: "grpc" })).toBe(2);
    expect(d(RPCS, { method: "AuthorizeCommand", code: "OK", protocol: "grpc" })).toBe(1);
  });

  it("reports open Watch streams, and counts a stream when it ends", async () => {
    const before = await page();
    const call = t.grpc.watch({}, as(ALICE));
    await new Promise((resolve) => call.once("data", resolve)); // the first checkpoint: subscribed
    expect((await page()).value("llm_broker_watch_streams")).toBe(1);
    call.on("error", () => {}); // the cancel
    call.cancel();
    await eventually("the stream is gone", async () => (await page()).value("llm_broker_watch_streams") === 0);
    await eventually("the stream is counted", async () => moved(before, await page())(RPCS, { method: "WatchDelegations", code: "CANCELLED", protocol: "grpc" }) === 1);
    // A stream's duration is not a latency: it is not in the histogram.
    expect((await page()).series(`${RPC_SECONDS}_count`).some((s) => s.labels.method === "WatchDelegations")).toBe(false);
  });

  it("counts ACTIVE delegations again after creations and endings, not at every scrape", async () => {
    const count = () => page().then((s) => s.value("llm_broker_active_delegations"));
    t.advanceClock(6_000);
    const base = await count();
    const [a] = await Promise.all(
      ["ac-metrics-3", "ac-metrics-4"].map((ac) => t.grpc.unary("createDelegation", { delegatorAcId: ac }, as(ALICE))),
    );
    await t.broker.follower.catchUp();
    // Within the 5 s between counts, a scrape answers the last count.
    expect(await count()).toBe(base);
    t.advanceClock(6_000);
    expect(await count()).toBe(base + 2);
    await t.grpc.unary("revokeDelegation", { delegationId: a!.delegation!.delegationId }, as(ALICE));
    await t.broker.follower.catchUp();
    t.advanceClock(6_000);
    expect(await count()).toBe(base + 1);
    // Nothing changed since: no new count is needed (the value stands).
    t.advanceClock(6_000);
    expect(await count()).toBe(base + 1);
    expect(base + 1).toBe((await t.broker.store.list({ state: "ACTIVE", limit: 0 })).total);
  });

  it("records an expiry's lateness and the time from each ending to its consequences", async () => {
    await t.settle();
    const before = await page();
    const expiring = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-metrics-5", scope: { ttl: durationFromMs(60_000) } }, as(ALICE));
    const revoked = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-metrics-6" }, as(ALICE));
    await t.grpc.unary("revokeDelegation", { delegationId: revoked.delegation!.delegationId }, as(ALICE));
    // Two seconds past its expiry, the broker expires it.
    t.advanceClock(62_000);
    await t.settle();
    const got = await t.grpc.unary("getDelegation", { delegationId: expiring.delegation!.delegationId }, as(ALICE));
    expect(got.delegation!.endReason).toBe("ttl_elapsed");
    const after = await page();
    const d = moved(before, after);

    expect(d("llm_broker_expiry_lateness_seconds_count")).toBe(1);
    expect(d("llm_broker_expiry_lateness_seconds_bucket", { le: "1" })).toBe(0);
    expect(d("llm_broker_expiry_lateness_seconds_bucket", { le: "5" })).toBe(1);
    expect(d("llm_broker_expiry_lateness_seconds_sum")).toBeGreaterThanOrEqual(2);
    // Two endings (the revoke, the expiry), each with its two consequences.
    expect(d("llm_broker_ending_effect_seconds_count", { effect: "idp_delete" })).toBe(2);
    expect(d("llm_broker_ending_effect_seconds_count", { effect: "gsap_revoke" })).toBe(2);
    expect(after.value("llm_broker_ending_effects_pending", { effect: "idp_delete", state: "pending" })).toBe(0);
    expect(after.value("llm_broker_ending_effects_pending", { effect: "gsap_revoke", state: "retrying" })).toBe(0);
    // The audit log (the log sink) has everything: nothing waits in the outbox.
    expect(after.series("llm_broker_audit_outbox_pending")).toEqual([{ labels: {}, value: 0 }]);
    expect(after.value("llm_broker_audit_outbox_oldest_age_seconds")).toBe(0);
    expect(after.value("llm_broker_audit_outbox_failing")).toBe(0);
  });

  it("carries no DID, delegation id or credential in any label or value", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-metrics-7" }, as(ALICE));
    const { text } = await page();
    expect(text).not.toContain("did:");
    expect(text).not.toContain("del_");
    expect(text).not.toContain("ac-metrics");
    expect(c.agentCredential!.clientSecret).not.toBe("");
    expect(text).not.toContain(c.agentCredential!.clientSecret);
    expect(text).not.toContain(c.agentCredential!.clientId);
  });
});

describe("metrics, turned off", () => {
  it("METRICS_ENABLED=false serves no /metrics", async () => {
    const t = await startTestBroker({ env: { METRICS_ENABLED: "false" } });
    try {
      const res = await fetch(`http://127.0.0.1:${t.broker.webPort}/metrics`);
      expect(res.status).not.toBe(200);
      // Calls are served as before.
      await t.grpc.unary("createDelegation", { delegatorAcId: "ac-off" }, as(ALICE));
    } finally {
      await t.close();
    }
  });
});

describe("upstream metrics, against the loopback fakes", () => {
  let world: World;
  let t: TestBroker;
  const page = () => scrape(t.broker.webPort);
  const UPSTREAM = "llm_broker_upstream_requests_total";
  beforeAll(async () => {
    world = await startWorld();
    world.gsap.faultMethod = "POST"; // faults hit the delegated-context request, not the lookup
    world.delegatorContext("ac-alice", ALICE);
    t = await startTestBroker({ env: world.env });
  });
  afterAll(async () => {
    await t?.close();
    await world?.close();
  });

  it("counts every attempt by system and outcome, with its duration", async () => {
    await t.settle();
    const before = await page();
    await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE));
    world.gsap.failNext(1, 503);
    // A POST that answered 503 is not repeated (it may have been processed): one attempt, UNAVAILABLE.
    expect((await failureOf(t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE)))).code).toBe(Code.Unavailable);
    const after = await page();
    const d = moved(before, after);
    expect(d(UPSTREAM, { system: "gsap", outcome: "http_5xx" })).toBe(1);
    expect(d(UPSTREAM, { system: "gsap", outcome: "ok" })).toBeGreaterThanOrEqual(2);
    expect(d(UPSTREAM, { system: "keycloak", outcome: "ok" })).toBeGreaterThanOrEqual(2);
    expect(d("llm_broker_upstream_request_duration_seconds_count", { system: "gsap", outcome: "http_5xx" })).toBe(1);
    expect(after.value("llm_broker_upstream_request_duration_seconds_sum", { system: "keycloak", outcome: "ok" })).toBeGreaterThan(0);
  });

  it("counts refused connections, and the audit backlog they leave", async () => {
    await t.settle();
    const before = await page();
    await world.chronicle.down();
    try {
      await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE));
      await t.broker.follower.catchUp();
      await t.broker.background.outboxLoop.runOnce().catch(() => undefined);
      const after = await page();
      expect(moved(before, after)(UPSTREAM, { system: "chronicle", outcome: "refused" })).toBeGreaterThanOrEqual(1);
      expect(after.value("llm_broker_audit_outbox_pending")).toBeGreaterThanOrEqual(1);
      expect(after.value("llm_broker_audit_outbox_failing")).toBe(1);
    } finally {
      await world.chronicle.up();
    }
    await t.settle();
    expect((await page()).value("llm_broker_audit_outbox_pending")).toBe(0);
  });
});
