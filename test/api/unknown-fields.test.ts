/**
 * A request carrying a field the broker does not know is refused, on every
 * transport, with INVALID_ARGUMENT naming it, before any handler runs:
 * ignored, the prototype's `scope.max_ttl_minutes` became a 60-minute
 * delegation. Requests with only known fields still work everywhere.
 */
import * as http from "node:http";
import { type DescMessage, type Message, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType, base64Decode } from "@bufbuild/protobuf/wire";
import { StructSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema, type ErrorDetail } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import {
  CreateDelegationRequestSchema,
  DelegationScopeSchema,
  WatchDelegationsRequestSchema,
} from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { findUnknownField } from "../../src/server/unknown-fields.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { errorDetailOf } from "../helpers/grpc-client.js";
import { StatusSchema } from "../helpers/status.js";
import { collect } from "../helpers/watch.js";

const SERVICE = "llmbroker.v1.DelegationService";

/** What a refusal carried, whatever the transport. */
interface Refusal {
  code: Code | undefined;
  message: string;
  reason: string | undefined;
  field: string | undefined;
}

function fromConnectError(err: unknown): Refusal {
  expect(err).toBeInstanceOf(ConnectError);
  const ce = err as ConnectError;
  const detail = ce.findDetails(ErrorDetailSchema)[0];
  return { code: ce.code, message: ce.rawMessage, reason: detail?.reason, field: detail?.field };
}

async function refusal(call: Promise<unknown>): Promise<Refusal> {
  const err = await call.then(
    () => {
      throw new Error("expected the call to be refused");
    },
    (e: unknown) => e,
  );
  if (err instanceof ConnectError) return fromConnectError(err);
  const g = err as { code: number; details: string };
  const detail = errorDetailOf(err);
  return { code: g.code, message: g.details, reason: detail?.reason, field: detail?.field };
}

/** `bytes` with a varint field `no` appended: a field the broker does not know. */
function withUnknownField(bytes: Uint8Array, no = 99): Uint8Array {
  return new BinaryWriter().raw(bytes).tag(no, WireType.Varint).uint32(5).finish();
}

/** A CreateDelegationRequest whose scope carries unknown field 99. */
function createWithUnknownInScope(): Uint8Array {
  const scope = withUnknownField(toBinary(DelegationScopeSchema, create(DelegationScopeSchema, { maxCommands: 5 })));
  const req = toBinary(CreateDelegationRequestSchema, create(CreateDelegationRequestSchema, { delegatorAcId: "ac-1" }));
  return new BinaryWriter().raw(req).tag(4, WireType.LengthDelimited).bytes(scope).finish();
}

/** `bytes` decoded: their unknown fields kept in `$unknown`, which typed clients send again as they are. */
function decodedWith<T extends Message>(schema: DescMessage, bytes: Uint8Array): T {
  return fromBinary(schema, bytes) as T;
}

/** The ErrorDetail of a Connect JSON error body. */
function jsonDetail(body: { details?: { type: string; value: string }[] }): ErrorDetail | undefined {
  const d = body.details?.find((x) => x.type === "llmbroker.v1.ErrorDetail");
  return d ? fromBinary(ErrorDetailSchema, base64Decode(d.value)) : undefined;
}

describe("unknown fields", () => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker();
  });
  afterAll(async () => {
    await t?.close();
  });

  const url = (method: string) => `http://127.0.0.1:${t.broker.webPort}/${SERVICE}/${method}`;

  /** A Connect unary call with a JSON body, as curl or a browser sends it. */
  async function postJson(method: string, body: string): Promise<{ status: number; json: Record<string, unknown> } & Partial<Refusal>> {
    const res = await fetch(url(method), { method: "POST", headers: { "content-type": "application/json", ...as(ALICE) }, body });
    const json = (await res.json()) as Record<string, unknown>;
    const detail = jsonDetail(json as never);
    return { status: res.status, json, message: json.message as string | undefined, reason: detail?.reason, field: detail?.field };
  }

  async function activeCount(): Promise<number> {
    return (await t.grpc.unary("listAgents", {}, as(ALICE))).totalSize;
  }

  /** The gRPC protocol on the web port (connect-node over HTTP/1.1, trailers in the chunked body). */
  function grpcOnWebPort(method: string, bytes: Uint8Array): Promise<{ status: string; message: string; detail?: ErrorDetail; frames: Buffer }> {
    const frame = Buffer.alloc(5 + bytes.length);
    frame.writeUInt32BE(bytes.length, 1);
    frame.set(bytes, 5);
    return new Promise((resolve, reject) => {
      const req = http.request(
        url(method),
        { method: "POST", headers: { "content-type": "application/grpc+proto", te: "trailers", ...as(ALICE) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const get = (k: string) => (res.trailers[k] ?? res.headers[k]) as string | undefined;
            const details = get("grpc-status-details-bin");
            const status = details ? fromBinary(StatusSchema, base64Decode(details)) : undefined;
            const any = status?.details.find((d) => d.typeUrl.endsWith("llmbroker.v1.ErrorDetail"));
            resolve({
              status: get("grpc-status") ?? "",
              message: decodeURIComponent(get("grpc-message") ?? ""),
              detail: any ? fromBinary(ErrorDetailSchema, any.value) : undefined,
              frames: Buffer.concat(chunks),
            });
          });
        },
      );
      req.on("error", reject);
      req.end(frame);
    });
  }

  it("refuses the prototype's scope.max_ttl_minutes in Connect JSON, naming the field; nothing is created", async () => {
    const before = await activeCount();
    const r = await postJson("CreateDelegation", '{"delegatorAcId":"ac-1","scope":{"max_ttl_minutes":5}}');
    expect(r.status).toBe(400);
    expect(r.json.code).toBe("invalid_argument");
    expect(r.message).toContain("scope.max_ttl_minutes");
    expect(r).toMatchObject({ reason: "UNKNOWN_FIELD", field: "scope.max_ttl_minutes" });
    expect(await activeCount()).toBe(before);
  });

  it("refuses an unknown top-level JSON key, in a POST body and in a Connect GET", async () => {
    const before = await activeCount();
    const r = await postJson("CreateDelegation", '{"delegatorAcId":"ac-1","maxTtlMinutes":5}');
    expect(r).toMatchObject({ status: 400, reason: "UNKNOWN_FIELD", field: "maxTtlMinutes" });
    expect(await activeCount()).toBe(before);

    const query = new URLSearchParams({ connect: "v1", encoding: "json", message: '{"pageSize":1,"page_sise":2}' });
    const res = await fetch(`${url("ListAgents")}?${query}`, { headers: as(ALICE) });
    const body = (await res.json()) as Record<string, unknown>;
    expect(res.status).toBe(400);
    expect(jsonDetail(body as never)).toMatchObject({ reason: "UNKNOWN_FIELD", field: "page_sise" });
  });

  it("refuses unknown enum names and fields set by both names; enum numbers are left to the handler, as protobuf JSON says", async () => {
    const unknownName = await postJson("ListAgents", '{"state":"DELEGATION_STATE_SLEEPING"}');
    expect(unknownName).toMatchObject({ status: 400, reason: "INVALID_FIELD", field: "state" });
    expect(unknownName.message).toContain("DELEGATION_STATE_SLEEPING");

    // Proto3 enums are open: the parser keeps 99, the handler refuses it.
    const unknownNumber = await postJson("ListAgents", '{"state":99}');
    expect(unknownNumber).toMatchObject({ status: 400, reason: "INVALID_FIELD", field: "state" });

    const before = await activeCount();
    const twice = await postJson("CreateDelegation", '{"delegatorAcId":"ac-1","delegator_ac_id":"ac-2"}');
    expect(twice).toMatchObject({ status: 400, reason: "INVALID_FIELD", field: "delegator_ac_id" });
    expect(await activeCount()).toBe(before);
  });

  it("refuses an unknown field in a Connect JSON stream (WatchDelegations)", async () => {
    const json = new TextEncoder().encode('{"startRevision":"0","since_revision":"5"}');
    const envelope = new Uint8Array(5 + json.length);
    new DataView(envelope.buffer).setUint32(1, json.length);
    envelope.set(json, 5);
    const res = await fetch(url("WatchDelegations"), {
      method: "POST",
      headers: { "content-type": "application/connect+json", ...as(ALICE) },
      body: envelope,
      signal: AbortSignal.timeout(10_000),
    });
    const bytes = new Uint8Array(await res.arrayBuffer());
    // One envelope: the end of the stream (flag 2), with the error.
    expect(bytes[0]).toBe(2);
    const end = JSON.parse(new TextDecoder().decode(bytes.subarray(5))) as { error: { code: string; details?: never } };
    expect(end.error.code).toBe("invalid_argument");
    expect(jsonDetail(end.error)).toMatchObject({ reason: "UNKNOWN_FIELD", field: "since_revision" });
  });

  it("refuses an unknown nested field in binary on every transport, naming its number and where it was; nothing is created", async () => {
    const before = await activeCount();
    const bytes = createWithUnknownInScope();
    const typed = () => decodedWith<never>(CreateDelegationRequestSchema, bytes);
    const expected = { code: Code.InvalidArgument, message: "scope: unknown field 99", reason: "UNKNOWN_FIELD", field: "scope" };
    const transports: [string, () => Promise<unknown>][] = [
      ["grpc-js on the gRPC port", () => t.grpc.rawUnary("createDelegation", bytes, as(ALICE))],
      ["Connect's gRPC client on the gRPC port", () => t.connectGrpc.createDelegation(typed(), { headers: as(ALICE) })],
      ["Connect binary on the web port", () => t.connect.createDelegation(typed(), { headers: as(ALICE) })],
      ["gRPC-Web on the web port", () => t.grpcWeb.createDelegation(typed(), { headers: as(ALICE) })],
    ];
    for (const [name, call] of transports) expect(await refusal(call()), name).toMatchObject(expected);

    const web = await grpcOnWebPort("CreateDelegation", bytes);
    expect(web).toMatchObject({ status: String(Code.InvalidArgument), message: expected.message });
    expect(web.detail).toMatchObject({ reason: "UNKNOWN_FIELD", field: "scope" });
    expect(await activeCount()).toBe(before);
  });

  it("names the path of a deeper message (scope.ttl) and refuses an unknown top-level field", async () => {
    const ttl = withUnknownField(new BinaryWriter().tag(1, WireType.Varint).int64(300).finish(), 7);
    const scope = new BinaryWriter().tag(6, WireType.LengthDelimited).bytes(ttl).finish();
    const deep = new BinaryWriter().tag(1, WireType.LengthDelimited).string("ac-1").tag(4, WireType.LengthDelimited).bytes(scope).finish();
    expect(await refusal(t.grpc.rawUnary("createDelegation", deep, as(ALICE)))).toMatchObject({
      code: Code.InvalidArgument,
      message: "scope.ttl: unknown field 7",
      field: "scope.ttl",
    });
    expect(await refusal(t.connect.createDelegation(decodedWith<never>(CreateDelegationRequestSchema, deep), { headers: as(ALICE) }))).toMatchObject({
      code: Code.InvalidArgument,
      field: "scope.ttl",
    });

    const top = withUnknownField(toBinary(CreateDelegationRequestSchema, create(CreateDelegationRequestSchema, { delegatorAcId: "ac-1" })), 42);
    const expected = { code: Code.InvalidArgument, message: "llmbroker.v1.CreateDelegationRequest: unknown field 42", reason: "UNKNOWN_FIELD", field: "" };
    expect(await refusal(t.grpc.rawUnary("createDelegation", top, as(ALICE)))).toMatchObject(expected);
    expect(await refusal(t.grpcWeb.createDelegation(decodedWith<never>(CreateDelegationRequestSchema, top), { headers: as(ALICE) }))).toMatchObject(expected);
  });

  it("refuses a WatchDelegations request with an unknown field on every transport", async () => {
    const bytes = withUnknownField(toBinary(WatchDelegationsRequestSchema, create(WatchDelegationsRequestSchema, { startRevision: 0n })));
    // A known request would get a first checkpoint at once: the stream must end with the error instead.
    const got = await collect(t.grpc.rawWatch(bytes, as(ALICE)), () => true, 10_000);
    expect(got.messages).toEqual([]);
    expect(got.error?.code).toBe(Code.InvalidArgument);
    expect(got.error?.message).toContain("unknown field 99");

    for (const client of [t.connect, t.grpcWeb, t.connectGrpc]) {
      const stream = client.watchDelegations(decodedWith<never>(WatchDelegationsRequestSchema, bytes), {
        headers: as(ALICE),
        signal: AbortSignal.timeout(10_000),
      });
      const received: unknown[] = [];
      const r = await refusal(
        (async () => {
          for await (const m of stream) received.push(m);
        })(),
      );
      expect(received).toEqual([]);
      expect(r).toMatchObject({ code: Code.InvalidArgument, reason: "UNKNOWN_FIELD", field: "" });
    }
  });

  it("still serves requests with only known fields, on every transport", async () => {
    const before = await activeCount();
    const created = [
      await t.grpc.unary("createDelegation", { delegatorAcId: "ac-1" }, as(ALICE)),
      await t.connectGrpc.createDelegation({ delegatorAcId: "ac-1" }, { headers: as(ALICE) }),
      await t.connect.createDelegation({ delegatorAcId: "ac-1" }, { headers: as(ALICE) }),
      await t.grpcWeb.createDelegation({ delegatorAcId: "ac-1" }, { headers: as(ALICE) }),
    ];
    expect(created.every((c) => c.delegation?.delegationId)).toBe(true);

    // JSON by proto names and JSON names, with a nested message and a well-known type.
    const json = await postJson("CreateDelegation", '{"delegator_ac_id":"ac-1","scope":{"maxCommands":5,"ttl":"300s","prohibited_commands":["rm"]}}');
    expect(json.status).toBe(200);
    const d = (json.json as { delegation: { maxCommands: number; createTime: string; expireTime: string } }).delegation;
    expect(d.maxCommands).toBe(5);
    expect(Date.parse(d.expireTime) - Date.parse(d.createTime)).toBe(300_000);

    const raw = toBinary(CreateDelegationRequestSchema, create(CreateDelegationRequestSchema, { delegatorAcId: "ac-1", scope: { maxCommands: 3 } }));
    expect((await t.grpc.rawUnary("createDelegation", raw, as(ALICE))).delegation?.maxCommands).toBe(3);
    const web = await grpcOnWebPort("CreateDelegation", raw);
    expect(web.status).toBe("0");
    expect(await activeCount()).toBe(before + 7);

    const query = new URLSearchParams({ connect: "v1", encoding: "json", message: '{"page_size":1,"state":"DELEGATION_STATE_ACTIVE"}' });
    expect((await fetch(`${url("ListAgents")}?${query}`, { headers: as(ALICE) })).status).toBe(200);

    const first = await collect(t.grpc.watch({ startRevision: 0n }, as(ALICE)), (m) => m.length >= 1);
    expect(first.messages[0]?.kind.case).toBe("checkpoint");
    for (const client of [t.connect, t.grpcWeb, t.connectGrpc]) {
      const controller = new AbortController();
      for await (const m of client.watchDelegations({ startRevision: 0n }, { headers: as(ALICE), signal: controller.signal })) {
        expect(m.kind.case).toBe("checkpoint");
        break;
      }
      controller.abort();
    }
  });
});

describe("findUnknownField", () => {
  it("finds unknown fields in map values, oneof members and repeated messages, naming the path", () => {
    const inner = withUnknownField(toBinary(StructSchema, create(StructSchema, {})), 9);
    // Struct{fields: {"a": Value{list_value: ListValue{values: [Value{bool_value}, Value{struct_value: <inner>}]}}}}
    const second = new BinaryWriter().tag(5, WireType.LengthDelimited).bytes(inner).finish();
    const first = toBinary(ValueSchema, create(ValueSchema, { kind: { case: "boolValue", value: true } }));
    const list = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(first).tag(1, WireType.LengthDelimited).bytes(second).finish();
    const value = new BinaryWriter().tag(6, WireType.LengthDelimited).bytes(list).finish();
    const entry = new BinaryWriter().tag(1, WireType.LengthDelimited).string("a").tag(2, WireType.LengthDelimited).bytes(value).finish();
    const struct = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(entry).finish();
    expect(findUnknownField(StructSchema, fromBinary(StructSchema, struct))).toEqual({
      path: 'fields["a"].list_value.values[1].struct_value',
      number: 9,
      typeName: "google.protobuf.Struct",
    });
    expect(findUnknownField(StructSchema, fromBinary(StructSchema, toBinary(StructSchema, create(StructSchema, {}))))).toBeUndefined();
  });
});
