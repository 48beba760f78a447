/**
 * OpenTelemetry tracing through a real broker with its real drivers against
 * the loopback fakes, spans caught by an injected in-memory exporter: a
 * server span per RPC whose parent is the caller's traceparent (grpc-js and
 * Connect), child spans for the store and for every upstream call, the
 * upstream fakes receiving a traceparent of the same trace, the use cases'
 * log lines carrying the trace. And the production path: OTLP over HTTP to a
 * loopback collector, flushed when the broker stops.
 */
import { type IncomingMessage, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createLogger } from "../../src/logging.js";
import { startTracing } from "../../src/observability/tracing.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { type World, startWorld } from "../helpers/real-world.js";

const SERVICE = "llmbroker.v1.DelegationService";
const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID = "00f067aa0ba902b7";
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_ID}-01`;

/** Whether `span` is `ancestor` or below it. */
function descends(span: ReadableSpan, ancestor: ReadableSpan, all: ReadableSpan[]): boolean {
  for (let s: ReadableSpan | undefined = span; s; ) {
    if (s.spanContext().spanId === ancestor.spanContext().spanId) return true;
    const parent: string | undefined = s.parentSpanContext?.spanId;
    s = parent ? all.find((p) => p.spanContext().spanId === parent) : undefined;
  }
  return false;
}

describe("tracing, spans in memory", () => {
  let world: World;
  let t: TestBroker;
  const exporter = new InMemorySpanExporter();
  const lines: Record<string, unknown>[] = [];
  const spans = () => exporter.getFinishedSpans();
  const serverSpan = (rpc: string) => spans().find((s) => s.name === `${SERVICE}/${rpc}`);
  beforeAll(async () => {
    world = await startWorld();
    world.delegatorContext("ac-alice", ALICE);
    const log = createLogger({ level: "info", destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
    t = await startTestBroker({ env: world.env, overrides: { spanExporter: exporter, log } });
    await t.settle();
  });
  afterAll(async () => {
    await t?.close();
    await world?.close();
  });
  beforeEach(() => exporter.reset());

  it("makes a server span per RPC under the caller's traceparent, with store and upstream children, and sends the trace upstream", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, { ...as(ALICE), traceparent: TRACEPARENT, "x-request-id": "req-traced" });
    const server = serverSpan("CreateDelegation")!;
    expect(server).toBeDefined();
    expect(server.kind).toBe(SpanKind.SERVER);
    expect(server.spanContext().traceId).toBe(TRACE_ID);
    expect(server.parentSpanContext?.spanId).toBe(PARENT_ID);
    expect(server.attributes).toMatchObject({
      "rpc.system": "grpc",
      "rpc.service": SERVICE,
      "rpc.method": "CreateDelegation",
      "rpc.grpc.status_code": 0,
      "llm_broker.request_id": "req-traced",
    });
    expect(server.status.code).toBe(SpanStatusCode.UNSET);

    const all = spans();
    const store = all.filter((s) => s.name.startsWith("store."));
    expect(store.map((s) => s.name)).toContain("store.insertRequested");
    for (const s of store) {
      expect(s.spanContext().traceId).toBe(TRACE_ID);
      expect(descends(s, server, all)).toBe(true);
      expect(s.attributes["db.system.name"]).toBe("sqlite");
    }

    // (Background loops may call Keycloak meanwhile, in traces of their own.)
    const upstream = all.filter((s) => s.kind === SpanKind.CLIENT && s.attributes["peer.service"] !== undefined && s.spanContext().traceId === TRACE_ID);
    expect(new Set(upstream.map((s) => s.attributes["peer.service"]))).toEqual(new Set(["keycloak", "gsap"]));
    expect(all.filter((s) => s.attributes["peer.service"] === "gsap").every((s) => s.spanContext().traceId === TRACE_ID)).toBe(true);
    for (const s of upstream) expect(descends(s, server, all)).toBe(true);
    const gsapPost = upstream.find((s) => s.name === "gsap POST")!;
    expect(gsapPost.attributes).toMatchObject({
      "http.request.method": "POST",
      "http.response.status_code": 200,
      "server.address": "127.0.0.1",
      "url.full": `${world.gsap.url}/governance/authorize/`,
    });

    // Each fake saw the trace, with the id of the client span that called it.
    const sent = world.gsap.requestsOf("POST").at(-1)!.headers.traceparent;
    expect(sent).toBe(`00-${TRACE_ID}-${gsapPost.spanContext().spanId}-01`);
    const keycloakCall = world.keycloak.requests.filter((r) => r.method === "POST").at(-1)!;
    expect(keycloakCall.headers.traceparent).toMatch(new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`));

    // The use case's own line carries the call's request id and trace.
    const created = lines.find((l) => l.msg === "delegation created" && l.delegationId === c.delegation!.delegationId);
    expect(created).toMatchObject({ requestId: "req-traced", traceId: TRACE_ID });
    expect(lines.find((l) => l.msg === "rpc" && l.requestId === "req-traced")).toMatchObject({ traceId: TRACE_ID });
  });

  it("honours traceparent on Connect, starts a new trace without one, and marks only server faults as errors", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE));
    const id = c.delegation!.delegationId;
    exporter.reset();

    await t.connect.getDelegation({ delegationId: id }, { headers: { ...as(ALICE), traceparent: TRACEPARENT } });
    const connect = serverSpan("GetDelegation")!;
    expect(connect.spanContext().traceId).toBe(TRACE_ID);
    expect(connect.parentSpanContext?.spanId).toBe(PARENT_ID);
    expect(connect.attributes["rpc.system"]).toBe("connect_rpc");
    expect(spans().some((s) => s.name === "store.get" && s.parentSpanContext?.spanId === connect.spanContext().spanId)).toBe(true);
    exporter.reset();

    await t.grpc.unary("getDelegation", { delegationId: id }, as(ALICE));
    const fresh = serverSpan("GetDelegation")!;
    expect(fresh.parentSpanContext).toBeUndefined();
    expect(fresh.spanContext().traceId).not.toBe(TRACE_ID);
    exporter.reset();

    await t.grpc.unary("getDelegation", { delegationId: `del_${"0".repeat(26)}` }, as(ALICE)).catch(() => undefined);
    const notFound = serverSpan("GetDelegation")!;
    expect(notFound.attributes["rpc.grpc.status_code"]).toBe(5);
    expect(notFound.status.code).toBe(SpanStatusCode.UNSET); // the caller's mistake, not the server's
  });

  it("traces a Watch stream as one span, and the upstream calls of background work on their own", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, as(ALICE));
    const call = t.grpc.watch({ delegationId: c.delegation!.delegationId }, { ...as(ALICE), traceparent: TRACEPARENT });
    await new Promise((resolve) => call.once("data", resolve));
    call.on("error", () => {});
    call.cancel();
    await expect.poll(() => serverSpan("WatchDelegations")?.parentSpanContext?.spanId).toBe(PARENT_ID);

    exporter.reset();
    await t.grpc.unary("revokeDelegation", { delegationId: c.delegation!.delegationId }, as(ALICE));
    await t.settle();
    // The identity's deletion happens after the RPC, in the clean-up loop: a trace of its own.
    const deleted = spans().find((s) => s.name === "keycloak DELETE")!;
    expect(deleted).toBeDefined();
    expect(deleted.parentSpanContext).toBeUndefined();
    const del = world.keycloak.requests.filter((r) => r.method === "DELETE").at(-1)!;
    expect(del.headers.traceparent).toBe(`00-${deleted.spanContext().traceId}-${deleted.spanContext().spanId}-01`);
    // The loops poll the store all the time: no store span without a caller's span above it.
    expect(spans().filter((s) => s.name.startsWith("store.") && s.parentSpanContext === undefined)).toEqual([]);
  });
});

describe("tracing over OTLP/HTTP", () => {
  /** A loopback OTLP collector: records every export. */
  async function collector() {
    const received: { path: string; contentType: string; body: string }[] = [];
    const server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        received.push({ path: req.url ?? "", contentType: req.headers["content-type"] ?? "", body: Buffer.concat(chunks).toString("utf8") });
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return { url, received, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  }

  it("exports the broker's spans to OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces, flushed when it stops", async () => {
    const otlp = await collector();
    try {
      const t = await startTestBroker({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_SERVICE_NAME: "broker-under-test" } });
      const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-otlp" }, { ...as(ALICE), traceparent: TRACEPARENT });
      await t.grpc.unary("getDelegation", { delegationId: c.delegation!.delegationId }, as(ALICE));
      // Batched: nothing has gone yet (the batch waits up to 5 s); stopping sends it.
      await t.close();
      const body = otlp.received.map((r) => r.body).join("\n");
      expect(otlp.received.every((r) => r.path === "/v1/traces")).toBe(true);
      expect(body).toContain(`${SERVICE}/CreateDelegation`);
      expect(body).toContain(`${SERVICE}/GetDelegation`);
      expect(body).toContain("broker-under-test");
      expect(body).toContain(TRACE_ID);
    } finally {
      await otlp.close();
    }
  });

  it("without an endpoint there is no tracer at all", async () => {
    const off = await startTracing({ otlpTracesUrl: "", serviceName: "x" });
    expect(off.tracer).toBeUndefined();
    expect(off.propagator).toBeUndefined();
    expect(off.contextual).toBe(false);
    await off.shutdown();
  });
});
