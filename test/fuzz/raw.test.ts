/**
 * Raw malformed input, written byte for byte: gRPC frames over node:http2 to
 * the grpc-js port (bad length prefixes, truncated frames, a compressed flag
 * without grpc-encoding, garbage protobuf, odd headers); Connect JSON bodies
 * that are not JSON, have wrong types, deep nesting, huge numbers or unknown
 * fields, under right and wrong content types; gRPC-Web framing garbage; and
 * bytes that are not HTTP at all. Whatever arrives, the answer is a code the
 * client can act on (or an HTTP 4xx refusal), never INTERNAL or UNKNOWN from
 * the broker, and the broker keeps serving.
 *
 * A few INTERNAL answers come from grpc-js and connect-node themselves,
 * before any broker code runs (LIBRARY_INTERNALS in outcome.ts); they are
 * allowed only with their exact messages, counted, and printed.
 *
 * Runs per property: FUZZ_RUNS_RAW (default 200). Seed: FUZZ_SEED.
 */
import * as net from "node:net";
import { type DescMessage, create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { CLIENT_CODES, LIBRARY_INTERNALS, countingLogger } from "./outcome.js";
import { H2Client, type RawAnswer, envelope, http1, webAnswer } from "./wire.js";

const SEED = Number(process.env.FUZZ_SEED ?? 4_2026_1123);
const RUNS = Number(process.env.FUZZ_RUNS_RAW ?? 200);
const SERVICE = `/${DelegationService.typeName}/`;

type Method = keyof typeof DelegationService.method;
const METHODS = Object.keys(DelegationService.method) as Method[];
const NAMES = DelegationService.methods.map((m) => m.name);

/** A valid request of each method, to mutate. */
const SAMPLE_INIT: Record<Method, object> = {
  createDelegation: { delegatorAcId: "ac-alice", agentModel: "opus", scope: { ttl: { seconds: 60n }, prohibitedCommands: ["rm -rf"], maxCommands: 5 } },
  revokeDelegation: { delegationId: `del_${"0".repeat(26)}`, reason: "done", requestId: "r-1" },
  getDelegation: { delegationId: `del_${"0".repeat(26)}` },
  listAgents: { pageSize: 10, state: 2, delegatorDid: ALICE },
  watchDelegations: { startRevision: 0n },
  revokeDelegatorContext: { delegatorAcId: "ac-x", reason: "gsap" },
  authorizeCommand: { delegationId: `del_${"0".repeat(26)}`, command: "ls" },
  approveCeremony: { ceremonyId: `cer_${"0".repeat(26)}`, reason: "ok" },
  denyCeremony: { ceremonyId: `cer_${"0".repeat(26)}`, reason: "no" },
  getCeremony: { ceremonyId: `cer_${"0".repeat(26)}` },
  listCeremonies: { delegationId: `del_${"0".repeat(26)}`, state: 1, pageSize: 5 },
};
const schemaOf = (m: Method): DescMessage => DelegationService.method[m].input;
const BINARY = Object.fromEntries(METHODS.map((m) => [m, toBinary(schemaOf(m), create(schemaOf(m), SAMPLE_INIT[m] as never))])) as Record<Method, Uint8Array>;
const JSONS = Object.fromEntries(METHODS.map((m) => [m, toJsonString(schemaOf(m), create(schemaOf(m), SAMPLE_INIT[m] as never))])) as Record<Method, string>;
/** Every field name of every request, JSON and proto spelling, and some that are not. */
const FIELD_NAMES = [
  ...new Set(METHODS.flatMap((m) => schemaOf(m).fields.flatMap((f) => [f.jsonName, f.name]))),
  "scope",
  "ttl",
  "foo",
  "__proto__",
  "constructor",
  "@type",
];

const deepArray = (n: number) => "[".repeat(n) + "]".repeat(n);
const deepObject = (n: number) => '{"scope":'.repeat(n) + "{}" + "}".repeat(n);

/** Why `a` is not an acceptable answer, "library" for an allowed library INTERNAL, or undefined. */
function judge(a: RawAnswer, port: "grpc" | "web", opts: { get?: boolean } = {}): string | undefined {
  if (a.timedOut) return "no answer within 5 s";
  if (a.code === undefined) {
    if (a.transportError) return `no status: ${a.transportError}`;
    // Refused at the HTTP level (404 path, 405 method, 415 content type): not an RPC at all.
    if (a.http >= 400 && a.http < 500) return undefined;
    return `HTTP ${a.http} without a status`;
  }
  if (a.code === 0 || CLIENT_CODES.has(a.code)) return undefined;
  if (a.code === Code.Internal) {
    if (LIBRARY_INTERNALS.some((k) => k.port === port && k.message.test(a.message))) return "library";
    // connect-node answers a GET whose base64 message does not decode with its generic "internal error";
    // the broker's own generic INTERNAL would also log "unexpected error", which the suite checks.
    if (port === "web" && opts.get && a.message === "internal error") return "library";
  }
  return `code ${Code[a.code] ?? a.code}: ${a.message.slice(0, 200)}`;
}

describe("raw malformed input", () => {
  let t: TestBroker;
  let h2: H2Client;
  let sink: ReturnType<typeof countingLogger>;
  const libraryInternals = new Map<string, number>();

  beforeAll(async () => {
    sink = countingLogger();
    t = await startTestBroker({ overrides: { log: sink.log } });
    h2 = new H2Client(t.broker.grpcPort);
  });
  afterAll(async () => {
    h2?.close();
    await t?.close();
    for (const [m, n] of libraryInternals) console.info(`library INTERNAL (allowed, see LIBRARY_INTERNALS): ${n} × ${m}`);
  });

  /** Fails the property on a bad answer; counts allowed library INTERNALs. */
  function check(a: RawAnswer, port: "grpc" | "web", what: string, opts: { get?: boolean } = {}) {
    const verdict = judge(a, port, opts);
    if (verdict === "library") libraryInternals.set(a.message.slice(0, 60), (libraryInternals.get(a.message.slice(0, 60)) ?? 0) + 1);
    else if (verdict) throw new Error(`${what}: ${verdict}`);
  }

  async function expectHealthy() {
    expect((await fetch(`http://127.0.0.1:${t.broker.webPort}/healthz`)).status).toBe(200);
    const list = await t.grpc.unary("listAgents", {}, as(ALICE), 5_000);
    expect(list.totalSize).toBeGreaterThanOrEqual(0);
    const viaConnect = await t.connect.listAgents({}, { headers: as(ALICE), timeoutMs: 5_000 });
    expect(viaConnect.totalSize).toBe(list.totalSize);
    // A fresh raw session too: the one the property used may have been closed by the server.
    const fresh = new H2Client(t.broker.grpcPort);
    try {
      expect((await fresh.call(`${SERVICE}ListAgents`, envelope(new Uint8Array()))).code).toBe(0);
    } finally {
      fresh.close();
    }
    expect(sink.unexpected).toEqual([]);
  }

  // ---- gRPC on the grpc-js port ------------------------------------------------

  describe("gRPC frames (node:http2 → grpc-js)", () => {
    const grpc = (path: string, body: Buffer, headers: Record<string, string> = {}) => h2.call(`${SERVICE}${path}`, body, headers);

    it("undecodable protobuf is INVALID_ARGUMENT, not grpc-js's INTERNAL, for unary and streaming methods", async () => {
      for (const [bytes, why] of [
        [[0xff, 0xff, 0xff], "premature EOF"],
        [[0x0a, 0x02, 0xc3, 0x28], "invalid UTF-8 in a string"],
        [[0x0a, 0x05, 0x01], "length past the end"],
        [[0x07], "field number 0"],
      ] as const) {
        for (const method of ["GetDelegation", "WatchDelegations", "CreateDelegation"]) {
          const a = await grpc(method, envelope(Buffer.from(bytes)), as(ALICE));
          expect({ code: a.code, why, method }).toEqual({ code: Code.InvalidArgument, why, method });
          expect(a.message).toMatch(/^parse binary: /);
        }
      }
    });

    it("answers malformed framing, headers and paths with client codes", async () => {
      const empty = envelope(new Uint8Array());
      const cases: [string, string, Buffer, Record<string, string>, number | "any"][] = [
        ["length prefix past the body", "GetDelegation", envelope(Buffer.from([0x0a]), 0, 10), {}, "any"],
        ["length prefix of 4 GiB", "GetDelegation", envelope(Buffer.from([0x0a]), 0, 0xffffffff), {}, Code.ResourceExhausted],
        ["length prefix past the 256 KiB limit", "GetDelegation", envelope(Buffer.from([0x0a]), 0, 2_000_000), {}, Code.ResourceExhausted],
        ["no body", "GetDelegation", Buffer.alloc(0), {}, "any"],
        ["half a prefix", "GetDelegation", Buffer.from([0, 0, 0]), {}, "any"],
        ["compressed flag without grpc-encoding", "GetDelegation", envelope(Buffer.from([0x0a, 0x00]), 1), {}, "any"],
        ["unsupported grpc-encoding", "GetDelegation", envelope(Buffer.from([0x0a, 0x00]), 1), { "grpc-encoding": "zstd" }, Code.Unimplemented],
        ["flags byte 0xff", "GetDelegation", envelope(Buffer.from([0x0a, 0x00]), 0xff), {}, "any"],
        ["two messages for a unary method", "GetDelegation", Buffer.concat([empty, empty]), {}, "any"],
        ["two messages for a streaming method", "WatchDelegations", Buffer.concat([empty, empty]), {}, "any"],
        ["application/grpc+json (read as proto)", "GetDelegation", envelope(Buffer.from("{}")), { "content-type": "application/grpc+json" }, "any"],
        ["unknown method", "Nope", empty, {}, Code.Unimplemented],
        ["method in lower case", "getDelegation", empty, {}, Code.Unimplemented],
        ["malformed x-delegator-did", "ListAgents", empty, { "x-delegator-did": "nope" }, Code.Unauthenticated],
        ["huge x-delegator-did", "ListAgents", empty, { "x-delegator-did": `did:web:${"x".repeat(8_000)}` }, Code.Unauthenticated],
        ["unknown enum value", "ListAgents", envelope(Buffer.from([0x20, 0x63])), {}, Code.InvalidArgument],
        ["negative page_size (10-byte varint)", "ListAgents", envelope(Buffer.from([0x08, ...Array(9).fill(0xff), 0x01])), {}, Code.InvalidArgument],
        ["negative start_revision", "WatchDelegations", envelope(Buffer.from([0x08, ...Array(9).fill(0xff), 0x01])), {}, Code.InvalidArgument],
        ["start_revision 2^63-1", "WatchDelegations", envelope(Buffer.from([0x08, ...Array(8).fill(0xff), 0x7f])), {}, Code.OutOfRange],
        ["unknown fields only", "ListAgents", envelope(Buffer.from([0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01])), {}, Code.InvalidArgument],
      ];
      for (const [why, method, body, headers, want] of cases) {
        const a = await grpc(method, body, headers);
        check(a, "grpc", why);
        if (want !== "any") expect({ why, code: a.code }).toEqual({ why, code: want });
      }
      // grpc-js itself answers these two INTERNAL (allowed, see LIBRARY_INTERNALS):
      check(await grpc("GetDelegation", envelope(Buffer.from("not gzip"), 1), { "grpc-encoding": "gzip" }), "grpc", "gzip that is not");
      check(await grpc("GetDelegation", empty, { "grpc-timeout": "xyz" }), "grpc", "bad grpc-timeout");
      await expectHealthy();
    });

    it("property: arbitrary frames to every method get client codes", async () => {
      const method = fc.constantFrom<string>(...NAMES, "Nope", "getDelegation", "");
      const payloadFor = (name: string) => {
        const m = METHODS.find((x) => DelegationService.method[x].name === name) ?? "getDelegation";
        const valid = BINARY[m];
        return fc.oneof(
          fc.constant(valid),
          fc.uint8Array({ maxLength: 64 }),
          // the valid message with a few bytes changed
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }).map((edits) => {
            const b = Buffer.from(valid);
            for (const [at, v] of edits) if (b.length > 0) b[at % b.length] = v;
            return b;
          }),
          fc.nat().map((n) => valid.subarray(0, n % (valid.length + 1))),
        );
      };
      const frame = (name: string) =>
        fc.oneof(
          payloadFor(name).map((p) => envelope(p)),
          fc
            .tuple(payloadFor(name), fc.integer({ min: 0, max: 255 }), fc.oneof(fc.nat({ max: 200 }), fc.nat({ max: 2 ** 32 - 1 })))
            .map(([p, flags, len]) => envelope(p, flags, len)),
          fc.tuple(payloadFor(name), fc.nat()).map(([p, n]) => envelope(p).subarray(0, n % (p.length + 6))),
          fc.array(payloadFor(name), { minLength: 2, maxLength: 3 }).map((ps) => Buffer.concat(ps.map((p) => envelope(p)))),
          fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
        );
      const headers = fc
        .record({
          "grpc-encoding": fc.constantFrom(undefined, "identity", "gzip", "deflate", "zstd", "x"),
          "grpc-timeout": fc.constantFrom(undefined, "5S", "xyz", "123456789S", "-1m"),
          "content-type": fc.constantFrom("application/grpc", "application/grpc+proto", "application/grpc+json", "application/grpc-web", "text/plain"),
          "x-delegator-did": fc.constantFrom(undefined, ALICE, "nope", ""),
        })
        .map((h) => Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined)) as Record<string, string>);
      await fc.assert(
        fc.asyncProperty(
          method.chain((name) => fc.tuple(fc.constant(name), frame(name), headers)),
          async ([name, body, hdrs]) => {
            const a = await grpc(name, body, hdrs);
            check(a, "grpc", `${name} ${body.subarray(0, 16).toString("hex")} ${JSON.stringify(hdrs)}`);
          },
        ),
        { seed: SEED, numRuns: RUNS },
      );
      await expectHealthy();
    });

    it("bytes that are not HTTP/2 close the connection and leave the server serving", async () => {
      for (const garbage of [
        Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\xff".repeat(64), "latin1"),
        Buffer.alloc(1024, 0x41),
      ]) {
        const closed = await new Promise<boolean>((resolve) => {
          const s = net.connect(t.broker.grpcPort, "127.0.0.1", () => s.write(garbage));
          s.on("data", () => {});
          s.on("error", () => {});
          s.on("close", () => resolve(true));
          setTimeout(() => {
            s.destroy();
            resolve(false);
          }, 5_000);
        });
        expect(closed).toBe(true);
      }
      await expectHealthy();
    });
  });

  // ---- Connect, gRPC-Web and HTTP on the web port --------------------------------

  describe("Connect and gRPC-Web bodies (HTTP/1.1 → connect-node)", () => {
    const web = (path: string, body: Buffer | string, headers: Record<string, string>, method = "POST") =>
      http1(t.broker.webPort, path, body, headers, method).then(webAnswer);

    it("answers malformed JSON, content types and envelopes with client codes", async () => {
      const J = { "content-type": "application/json" };
      const S = { "content-type": "application/connect+json" };
      const GW = { "content-type": "application/grpc-web+proto" };
      const cases: [string, string, Buffer | string, Record<string, string>, number | "any" | "http4xx", string?][] = [
        ["not JSON", "GetDelegation", "{nope", J, Code.InvalidArgument],
        ["an array", "GetDelegation", "[]", J, Code.InvalidArgument],
        ["null", "GetDelegation", "null", J, "any"],
        ["empty body", "GetDelegation", "", J, "any"],
        ["a number for a string", "GetDelegation", '{"delegationId":5}', J, Code.InvalidArgument],
        ["an object for a string", "GetDelegation", '{"delegationId":{"$gt":""}}', J, Code.InvalidArgument],
        ["100 000 nested arrays", "CreateDelegation", `{"scope":${deepArray(100_000)}}`, J, Code.InvalidArgument],
        ["20 000 nested objects", "CreateDelegation", deepObject(20_000), J, "any"],
        ["1e400", "ListAgents", '{"pageSize":1e400}', J, Code.InvalidArgument],
        ["2^64 for an int32", "ListAgents", '{"pageSize":18446744073709551616}', J, Code.InvalidArgument],
        ["fractional int32", "ListAgents", '{"pageSize":1.5}', J, Code.InvalidArgument],
        ["int64 past 2^63", "WatchDelegations", envelope(Buffer.from('{"startRevision":"99999999999999999999999"}')), S, "any"],
        ["unknown fields", "ListAgents", '{"foo":1,"bar":{"baz":[1,2]}}', J, Code.InvalidArgument],
        ["__proto__ key", "ListAgents", '{"__proto__":{"admin":true},"constructor":{"prototype":{}}}', J, Code.InvalidArgument],
        ["duplicate keys", "ListAgents", '{"pageSize":1,"pageSize":-1}', J, "any"],
        ["unknown enum name", "ListAgents", '{"state":"NOPE"}', J, "any"],
        ["unknown enum number", "ListAgents", '{"state":99}', J, Code.InvalidArgument],
        ["duration 1e30s", "CreateDelegation", '{"delegatorAcId":"a","scope":{"ttl":"1e30s"}}', { ...J, ...as(ALICE) }, Code.InvalidArgument],
        ["duration with 10 fraction digits", "CreateDelegation", '{"delegatorAcId":"a","scope":{"ttl":"1.0000000001s"}}', { ...J, ...as(ALICE) }, Code.InvalidArgument],
        ["lone surrogate escape", "GetDelegation", '{"delegationId":"\\ud800"}', J, Code.InvalidArgument],
        ["invalid UTF-8 bytes", "GetDelegation", Buffer.from([0x7b, 0x22, 0x64, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]), J, "any"],
        ["BOM before the JSON", "ListAgents", "\ufeff{}", J, "any"],
        ["text/plain", "GetDelegation", "{}", { "content-type": "text/plain" }, "http4xx"],
        ["no content type", "GetDelegation", "{}", {}, "http4xx"],
        ["charset latin1", "ListAgents", "{}", { "content-type": "application/json; charset=latin1" }, "any"],
        ["form encoding", "ListAgents", "a=b", { "content-type": "application/x-www-form-urlencoded" }, "http4xx"],
        ["gzip that is not", "GetDelegation", "garbage", { ...J, "content-encoding": "gzip" }, Code.InvalidArgument],
        ["unknown content-encoding", "GetDelegation", "{}", { ...J, "content-encoding": "zstd" }, "any"],
        ["connect-protocol-version 7", "ListAgents", "{}", { ...J, "connect-protocol-version": "7" }, "any"],
        ["negative connect-timeout-ms", "ListAgents", "{}", { ...J, "connect-timeout-ms": "-5" }, Code.InvalidArgument],
        ["streaming: half a prefix", "WatchDelegations", Buffer.from([0, 0, 0]), S, Code.InvalidArgument],
        ["streaming: prefix past the body", "WatchDelegations", envelope(Buffer.from("{}"), 0, 999), S, Code.InvalidArgument],
        ["streaming: end-stream flag on the request", "WatchDelegations", envelope(Buffer.from("{}"), 2), S, "any"],
        ["streaming: 4 GiB prefix", "WatchDelegations", envelope(Buffer.from("{}"), 0, 0xfffffff0), S, Code.ResourceExhausted],
        ["gRPC-Web: garbage", "GetDelegation", Buffer.from([1, 2, 3]), GW, "any"],
        ["gRPC-Web: prefix past the body", "GetDelegation", envelope(Buffer.from([0x0a]), 0, 1000), GW, "any"],
        ["gRPC-Web: 4 GiB prefix", "GetDelegation", envelope(Buffer.from([0x0a]), 0, 0xfffffff0), GW, Code.ResourceExhausted],
        ["gRPC-Web: gzip that is not", "GetDelegation", envelope(Buffer.from([0x0a, 0]), 1), { ...GW, "grpc-encoding": "gzip" }, Code.InvalidArgument],
        ["gRPC-Web: bad grpc-timeout", "GetDelegation", envelope(Buffer.from([])), { ...GW, "grpc-timeout": "zz" }, Code.InvalidArgument],
        ["gRPC-Web: two messages", "GetDelegation", Buffer.concat([envelope(Buffer.from([])), envelope(Buffer.from([]))]), GW, "any"],
        ["gRPC-Web: trailer flag on the request", "GetDelegation", envelope(Buffer.from([]), 0x80), GW, "any"],
        ["gRPC-Web text (unsupported)", "GetDelegation", "AAAAAAA=", { "content-type": "application/grpc-web-text" }, "http4xx"],
        ["gRPC-Web JSON with a lone surrogate", "GetDelegation", envelope(Buffer.from('{"delegationId":"\\ud800"}')), { "content-type": "application/grpc-web+json" }, Code.InvalidArgument],
        ["PUT", "GetDelegation", "{}", J, "http4xx", "PUT"],
        ["GET of a method with side effects", "CreateDelegation?encoding=json&message=%7B%7D", "", {}, "http4xx", "GET"],
        ["GET with a message that is not JSON", "GetDelegation?encoding=json&message=%7Bnope", "", {}, Code.InvalidArgument, "GET"],
        ["GET without encoding", "GetDelegation?message=%7B%7D", "", {}, "any", "GET"],
        ["no such path", "Nope", "{}", J, "http4xx"],
      ];
      for (const [why, path, body, headers, want, method] of cases) {
        const a = await web(`${SERVICE}${path}`, body, headers, method);
        check(a, "web", why, { get: method === "GET" });
        if (want === "http4xx") expect({ why, http: a.http >= 400 && a.http < 500 }).toEqual({ why, http: true });
        else if (want !== "any") expect({ why, code: a.code }).toEqual({ why, code: want });
      }
      // connect-node itself answers these INTERNAL (allowed, see LIBRARY_INTERNALS):
      check(await web(`${SERVICE}GetDelegation`, Buffer.from([0xff, 0xff]), { "content-type": "application/proto" }), "web", "proto garbage");
      check(await web(`${SERVICE}GetDelegation`, envelope(Buffer.from([0xff])), GW), "web", "gRPC-Web proto garbage");
      check(await web(`${SERVICE}GetDelegation`, envelope(Buffer.from([0x0a, 0]), 1), GW), "web", "gRPC-Web compressed flag");
      check(await web(`${SERVICE}WatchDelegations`, envelope(Buffer.from("{}"), 1), S), "web", "Connect stream compressed flag");
      check(await web(`${SERVICE}ListAgents?encoding=proto&base64=1&message=!!!!`, "", {}, "GET"), "web", "GET bad base64", { get: true });
      await expectHealthy();
    });

    it("property: arbitrary JSON bodies and content types get client codes", async () => {
      const names = fc.constantFrom(...NAMES, "Nope");
      const mutatedJson = fc
        .tuple(fc.constantFrom(...Object.values(JSONS)), fc.nat(), fc.string({ unit: "binary-ascii", minLength: 1, maxLength: 3 }))
        .map(([j, at, s]) => j.slice(0, at % (j.length + 1)) + s + j.slice(at % (j.length + 1)));
      const body = fc.oneof(
        fc.jsonValue().map((v) => JSON.stringify(v)),
        fc.dictionary(fc.constantFrom(...FIELD_NAMES), fc.jsonValue(), { maxKeys: 4 }).map((o) => JSON.stringify(o)),
        fc.dictionary(fc.constantFrom(...FIELD_NAMES), fc.oneof(fc.constantFrom(1e308, -1e308, 2 ** 53 + 1, -0, 0.5), fc.double()), { maxKeys: 3 }).map((o) =>
          JSON.stringify(o),
        ),
        mutatedJson,
        fc.string({ unit: "binary", maxLength: 80 }),
        fc.constantFrom(deepArray(10_000), deepObject(5_000), '{"pageSize":1e400}', '{"startRevision":1e300}', "", " ", "\ufeff{}", "{}{}"),
      );
      const contentType = fc.constantFrom(
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "application/proto",
        "application/connect+json",
        "text/plain",
        "",
      );
      await fc.assert(
        fc.asyncProperty(names, body, contentType, fc.constantFrom<Record<string, string>>({}, as(ALICE), as("nope")), async (name, b, type, who) => {
          const streaming = name === "WatchDelegations" && type === "application/connect+json";
          const a = await web(`${SERVICE}${name}`, streaming ? envelope(Buffer.from(b)) : b, { ...(type ? { "content-type": type } : {}), ...who });
          check(a, "web", `${name} ${type} ${b.slice(0, 80)}`);
        }),
        { seed: SEED + 1, numRuns: RUNS },
      );
      await expectHealthy();
    });

    it("property: arbitrary gRPC-Web and Connect-streaming envelopes get client codes", async () => {
      const names = fc.constantFrom(...NAMES);
      const payload = fc.oneof(
        fc.constantFrom(...Object.values(BINARY)),
        fc.constantFrom(...Object.values(JSONS)).map((j) => Buffer.from(j)),
        fc.uint8Array({ maxLength: 48 }),
      );
      const framed = fc.oneof(
        payload.map((p) => envelope(p)),
        fc.tuple(payload, fc.integer({ min: 0, max: 255 }), fc.oneof(fc.nat({ max: 100 }), fc.nat({ max: 2 ** 32 - 1 }))).map(([p, f, n]) => envelope(p, f, n)),
        fc.array(payload, { minLength: 2, maxLength: 3 }).map((ps) => Buffer.concat(ps.map((p) => envelope(p)))),
        fc.uint8Array({ maxLength: 32 }).map((b) => Buffer.from(b)),
      );
      const type = fc.constantFrom(
        "application/grpc-web",
        "application/grpc-web+proto",
        "application/grpc-web+json",
        "application/connect+json",
        "application/connect+proto",
        "application/grpc-web-text",
      );
      const encoding = fc.constantFrom<Record<string, string>>({}, {}, { "grpc-encoding": "gzip" }, { "connect-content-encoding": "gzip" }, { "grpc-encoding": "br" });
      await fc.assert(
        fc.asyncProperty(names, framed, type, encoding, async (name, body, ct, enc) => {
          const a = await web(`${SERVICE}${name}`, body, { "content-type": ct, ...enc, ...as(ALICE) });
          check(a, "web", `${name} ${ct} ${JSON.stringify(enc)} ${body.subarray(0, 16).toString("hex")}`);
        }),
        { seed: SEED + 2, numRuns: RUNS },
      );
      await expectHealthy();
    });

    it("bytes that are not HTTP get 400 and a closed connection", async () => {
      for (const garbage of [Buffer.from("\x00\x01\x02\xff\r\n\r\n", "latin1"), Buffer.from("POST / HTTP/9.9\r\n\r\n"), Buffer.alloc(100_000, 0x41)]) {
        const reply = await new Promise<string>((resolve) => {
          let got = "";
          const s = net.connect(t.broker.webPort, "127.0.0.1", () => s.write(garbage));
          s.on("data", (d) => (got += d.toString("latin1")));
          s.on("error", () => {});
          s.on("close", () => resolve(got));
          setTimeout(() => {
            s.destroy();
            resolve(`${got} (still open after 5 s)`);
          }, 5_000);
        });
        expect(reply).toMatch(/^HTTP\/1\.1 4\d\d|^$/);
      }
      await expectHealthy();
    });

    // connect-node stops reading a chunked body once it passes readMaxBytes and answers
    // RESOURCE_EXHAUSTED; the answer says Connection: close and the connection is closed
    // (create-server.ts, closeIfBodyUnread), so nothing is left hanging: a client
    // reconnects for its next request.
    it("a chunked body past the limit is answered with Connection: close, and the connection closes", async () => {
      const sock = net.connect(t.broker.webPort, "127.0.0.1");
      sock.on("error", () => {});
      onTestFinished(() => void sock.destroy());
      await new Promise((r) => sock.once("connect", r));
      let got = "";
      let closed = false;
      sock.on("data", (d) => (got += d.toString("latin1")));
      sock.on("close", () => (closed = true));
      const big = JSON.stringify({ delegationId: "é".repeat(200_000) });
      sock.write(`POST ${SERVICE}GetDelegation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
      sock.write(`${Buffer.byteLength(big).toString(16)}\r\n${big}\r\n0\r\n\r\n`);
      await expect.poll(() => got, { timeout: 5_000 }).toMatch(/^HTTP\/1\.1 429/);
      expect(got).toMatch(/\r\nconnection: close\r\n/i);
      await expect.poll(() => closed, { timeout: 3_000 }).toBe(true);
      // The next request, on a new connection, is answered (delegation_id missing: 400).
      const next = await fetch(`http://127.0.0.1:${t.broker.webPort}${SERVICE}GetDelegation`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      expect(next.status).toBe(400);
    });

    it("closes a connection whose unread chunked body goes on far past the limit, after answering", async () => {
      const sock = net.connect(t.broker.webPort, "127.0.0.1");
      sock.on("error", () => {});
      onTestFinished(() => void sock.destroy());
      await new Promise((r) => sock.once("connect", r));
      let got = "";
      let closed = false;
      sock.on("data", (d) => (got += d.toString("latin1")));
      sock.on("close", () => (closed = true));
      sock.write(`POST ${SERVICE}GetDelegation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
      const chunk = "x".repeat(64 * 1024);
      // Keep sending (never the last chunk) until the server gives up on the connection.
      for (let i = 0; i < 200 && !closed; i++) {
        sock.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
        await new Promise((r) => setTimeout(r, 5));
      }
      await expect.poll(() => closed, { timeout: 5_000 }).toBe(true);
      expect(got).toMatch(/^HTTP\/1\.1 429/);
    });
  });
});
