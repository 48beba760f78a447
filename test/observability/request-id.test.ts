/**
 * Request ids and the access log, through a real broker: the caller's sane
 * x-request-id is echoed, a missing or insane one is replaced by a fresh one,
 * on grpc-js and on Connect / gRPC-Web, unary and streaming, on errors too;
 * each RPC writes one access-log line at info carrying it (and the lines the
 * transport writes about the call carry it as well); LOG_LEVEL=warn turns the
 * access log off; no line ever holds a secret or a bearer token.
 */
import { type DescMethod, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { createLogger } from "../../src/logging.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { flakyRegistrar } from "../helpers/fakes.js";

const UNKNOWN_ID = `del_${"0".repeat(26)}`;
const GENERATED = /^[A-Za-z0-9_-]{16}$/;

/** A pino destination that keeps every line, parsed. */
function captureLog() {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  return {
    lines,
    raw,
    destination: {
      write(s: string) {
        raw.push(s);
        lines.push(JSON.parse(s) as Record<string, unknown>);
      },
    },
    /** The access-log lines of one request id. */
    access(requestId: string) {
      return lines.filter((l) => l.msg === "rpc" && l.requestId === requestId);
    },
  };
}

type Unary = Exclude<keyof typeof DelegationService.method, "watchDelegations">;

/** A grpc-js unary call that also returns the response headers (metadata) it got. */
function grpcCall(t: TestBroker, name: Unary, request: object, headers: Record<string, string>) {
  const method = DelegationService.method[name] as DescMethod;
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return new Promise<{ header: grpc.Metadata; error?: grpc.ServiceError }>((resolve) => {
    let header = new grpc.Metadata();
    const call = t.grpc.raw.makeUnaryRequest(
      `/${DelegationService.typeName}/${method.name}`,
      (m: unknown) => Buffer.from(toBinary(method.input, m as never)),
      (b: Buffer) => fromBinary(method.output, b),
      create(method.input, request as never),
      md,
      { deadline: Date.now() + 10_000 },
      (err) => resolve({ header, ...(err ? { error: err } : {}) }),
    );
    call.on("metadata", (m) => (header = m));
  });
}

describe("request ids and the access log", () => {
  let t: TestBroker;
  const log = captureLog();
  const flaky = flakyRegistrar();
  let delegationId = "";
  let secret = "";
  beforeAll(async () => {
    t = await startTestBroker({ overrides: { log: createLogger({ level: "info", destination: log.destination }), registrar: flaky.registrar } });
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-rid" }, as(ALICE));
    delegationId = c.delegation!.delegationId;
    secret = c.agentCredential!.clientSecret;
  });
  afterAll(async () => {
    await t?.close();
  });

  it("echoes a sane x-request-id on grpc-js and writes it on the call's access-log line", async () => {
    const r = await grpcCall(t, "getDelegation", { delegationId }, { ...as(ALICE), "x-request-id": "req-grpc-1" });
    expect(r.error).toBeUndefined();
    expect(r.header.get("x-request-id")).toEqual(["req-grpc-1"]);
    const [line, ...more] = log.access("req-grpc-1");
    expect(more).toHaveLength(0);
    expect(line).toMatchObject({ level: 30, rpc: "GetDelegation", code: "OK", protocol: "grpc", principal: ALICE, requestId: "req-grpc-1" });
    expect(typeof line!.ms).toBe("number");
    expect(line!.ms as number).toBeGreaterThanOrEqual(0);
  });

  it("makes a fresh id when none is given, or the given one is not sane", async () => {
    const ids = new Set<string>();
    for (const given of [undefined, "has spaces", "x".repeat(129), "semi;colon", "<script>"]) {
      const r = await grpcCall(t, "getDelegation", { delegationId }, { ...as(ALICE), ...(given !== undefined ? { "x-request-id": given } : {}) });
      const [id] = r.header.get("x-request-id") as string[];
      expect(id).toMatch(GENERATED);
      expect(log.access(id!)).toHaveLength(1);
      ids.add(id!);
    }
    expect(ids.size).toBe(5);
    // The longest accepted: 128 characters.
    const long = "a".repeat(128);
    expect((await grpcCall(t, "getDelegation", { delegationId }, { ...as(ALICE), "x-request-id": long })).header.get("x-request-id")).toEqual([long]);
  });

  it("returns the request id on errors too, and logs the code and the message the caller got", async () => {
    const r = await grpcCall(t, "getDelegation", { delegationId: UNKNOWN_ID }, { ...as(ALICE), "x-request-id": "req-grpc-err" });
    expect(r.error?.code).toBe(grpc.status.NOT_FOUND);
    expect(r.header.get("x-request-id")).toEqual(["req-grpc-err"]);
    expect(log.access("req-grpc-err")).toEqual([expect.objectContaining({ rpc: "GetDelegation", code: "NOT_FOUND", protocol: "grpc", error: expect.any(String) })]);

    // Failing authentication: no principal, still a line and the header.
    const anon = await grpcCall(t, "getDelegation", { delegationId }, { "x-delegator-did": "not-a-did", "x-request-id": "req-unauth" });
    expect(anon.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(anon.header.get("x-request-id")).toEqual(["req-unauth"]);
    expect(log.access("req-unauth")).toEqual([expect.objectContaining({ code: "UNAUTHENTICATED", principal: "unauthenticated" })]);
  });

  it("echoes it on Connect and gRPC-Web, on success and on errors", async () => {
    let header: Headers | undefined;
    await t.connect.getDelegation({ delegationId }, { headers: { ...as(ALICE), "x-request-id": "req-connect-1" }, onHeader: (h) => (header = h) });
    expect(header?.get("x-request-id")).toBe("req-connect-1");
    expect(log.access("req-connect-1")).toEqual([expect.objectContaining({ rpc: "GetDelegation", code: "OK", protocol: "connect", principal: ALICE })]);

    await t.grpcWeb.getDelegation({ delegationId }, { headers: as(ALICE), onHeader: (h) => (header = h) });
    const generated = header?.get("x-request-id") ?? "";
    expect(generated).toMatch(GENERATED);
    expect(log.access(generated)).toEqual([expect.objectContaining({ protocol: "grpc-web" })]);

    const err = ConnectError.from(
      await t.connect.getDelegation({ delegationId: UNKNOWN_ID }, { headers: { ...as(ALICE), "x-request-id": "req-connect-err" } }).catch((e: unknown) => e),
    );
    expect(err.code).toBe(Code.NotFound);
    expect(err.metadata.get("x-request-id")).toBe("req-connect-err");
    expect(log.access("req-connect-err")).toEqual([expect.objectContaining({ code: "NOT_FOUND", protocol: "connect" })]);
  });

  it("echoes it on Watch streams (grpc-js and Connect) and logs the stream when it ends", async () => {
    const call = t.grpc.watch({}, { ...as(ALICE), "x-request-id": "req-watch-grpc" });
    const md = await new Promise<grpc.Metadata>((resolve) => call.once("metadata", resolve));
    expect(md.get("x-request-id")).toEqual(["req-watch-grpc"]);
    await new Promise((resolve) => call.once("data", resolve));
    call.on("error", () => {});
    call.cancel();

    const abort = new AbortController();
    let header: Headers | undefined;
    const stream = t.connect.watchDelegations({}, { headers: { ...as(ALICE), "x-request-id": "req-watch-connect" }, signal: abort.signal, onHeader: (h) => (header = h) });
    for await (const _ of stream) break;
    expect(header?.get("x-request-id")).toBe("req-watch-connect");
    abort.abort();

    await expect.poll(() => log.access("req-watch-grpc")).toEqual([expect.objectContaining({ rpc: "WatchDelegations", code: "CANCELLED", protocol: "grpc", principal: ALICE })]);
    await expect.poll(() => log.access("req-watch-connect").length).toBe(1);
  });

  it("puts the request id on the lines the transport writes about a failing call", async () => {
    flaky.state.failRegister = true;
    try {
      const r = await grpcCall(t, "createDelegation", { delegatorAcId: "ac-rid-fail" }, { ...as(ALICE), "x-request-id": "req-failing-create" });
      expect(r.error).toBeDefined();
      expect(r.header.get("x-request-id")).toEqual(["req-failing-create"]);
    } finally {
      flaky.state.failRegister = false;
    }
    const lines = log.lines.filter((l) => l.requestId === "req-failing-create");
    // The error mapping's line (warn or error, with the cause) and the access-log line.
    expect(lines.some((l) => l.msg !== "rpc" && (l.level as number) >= 40)).toBe(true);
    expect(lines.filter((l) => l.msg === "rpc")).toHaveLength(1);
  });

  it("never writes a secret or a bearer token", async () => {
    const token = "eyJhbGciOiJub25lIn0.secret-bearer-token-value.sig";
    await grpcCall(t, "getDelegation", { delegationId }, { ...as(ALICE), authorization: `Bearer ${token}` });
    await t.connect.getDelegation({ delegationId }, { headers: { ...as(ALICE), authorization: `Bearer ${token}` } });
    expect(secret).not.toBe("");
    for (const line of log.raw) {
      expect(line).not.toContain(secret);
      expect(line).not.toContain(token);
    }
    expect(log.lines.filter((l) => l.msg === "rpc").length).toBeGreaterThan(10);
  });
});

describe("the access log, turned down", () => {
  it("LOG_LEVEL=warn writes no access-log line", async () => {
    const log = captureLog();
    const t = await startTestBroker({ overrides: { log: createLogger({ level: "warn", destination: log.destination }) } });
    try {
      const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-quiet" }, as(ALICE));
      await t.connect.getDelegation({ delegationId: c.delegation!.delegationId }, { headers: as(ALICE) });
      expect(log.lines.filter((l) => l.msg === "rpc")).toEqual([]);
    } finally {
      await t.close();
    }
  });
});

describe("LOG_REQUEST_CONTEXT", () => {
  it("puts the request id on the use cases' lines of the call too", async () => {
    const on = captureLog();
    const t = await startTestBroker({ env: { LOG_REQUEST_CONTEXT: "true" }, overrides: { log: createLogger({ level: "info", destination: on.destination }) } });
    try {
      await grpcCall(t, "createDelegation", { delegatorAcId: "ac-ctx" }, { ...as(ALICE), "x-request-id": "req-ctx-create" });
      expect(on.lines.find((l) => l.msg === "delegation created")).toMatchObject({ requestId: "req-ctx-create", delegator: ALICE });
      // Background work runs outside any call: its lines carry none.
      await t.settle();
      expect(on.lines.filter((l) => l.msg === "audit event").every((l) => l.requestId === undefined)).toBe(true);
    } finally {
      await t.close();
    }
  });

  it("is off by default: the use cases' lines carry no request id", async () => {
    const off = captureLog();
    const t = await startTestBroker({ overrides: { log: createLogger({ level: "info", destination: off.destination }) } });
    try {
      await grpcCall(t, "createDelegation", { delegatorAcId: "ac-noctx" }, { ...as(ALICE), "x-request-id": "req-noctx" });
      expect(off.lines.find((l) => l.msg === "delegation created")?.requestId).toBeUndefined();
      expect(off.access("req-noctx")).toHaveLength(1);
    } finally {
      await t.close();
    }
  });
});
