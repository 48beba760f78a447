/**
 * Server reflection with the tools people use: the real `buf curl` lists
 * the broker's services and methods and calls them from what reflection
 * told it (v1 and v1alpha), and a grpc-js reflection client checks every
 * kind of request, the descriptors' completeness and the errors. No token:
 * the broker runs with AUTH_MODE=jwt and reflection answers anyway.
 * GRPC_REFLECTION=false turns it off.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type DescService, create, createFileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health } from "../../src/gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../src/gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../src/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { JwksFake } from "../fakes/jwks-fake.js";
import { ALICE, type TestBroker, startTestBroker } from "../helpers/broker.js";

const BUF = fileURLToPath(new URL("../../node_modules/.bin/buf", import.meta.url));
const run = promisify(execFile);

/** Runs `buf curl` against the gRPC port (async: the broker answers from this very process). */
async function bufCurl(port: number, args: string[], target = "") {
  try {
    const { stdout } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args, `http://127.0.0.1:${port}${target}`], { timeout: 20_000 });
    return { code: 0, stdout, stderr: "" };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const SERVICES: DescService[] = [Health, v1.ServerReflection, v1alpha.ServerReflection, DelegationService];
const METHODS = SERVICES.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`)).sort();

type Request = v1.ServerReflectionRequest["messageRequest"];
type Response = v1.ServerReflectionResponse;

/**
 * A reflection stream opened with grpc-js, on v1 or v1alpha. The two are
 * the same on the wire; each is encoded and decoded with its own schemas.
 */
function reflectionStream(port: number, version: "v1" | "v1alpha") {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const pb = version === "v1" ? v1 : v1alpha;
  const call = client.makeBidiStreamRequest(
    `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
    (m: { host: string; messageRequest: Request }) =>
      Buffer.from(toBinary(pb.ServerReflectionRequestSchema, create(pb.ServerReflectionRequestSchema, m as never))),
    // Read with the v1 schema in both cases, so the test compares one shape (their fields are the same).
    (b: Buffer) => {
      const own = fromBinary(pb.ServerReflectionResponseSchema, b);
      expect(own.$typeName).toBe(`grpc.reflection.${version}.ServerReflectionResponse`);
      return fromBinary(v1.ServerReflectionResponseSchema, b);
    },
    new grpc.Metadata(),
    {},
  );
  const waiting: ((r: Response) => void)[] = [];
  call.on("data", (r: Response) => waiting.shift()?.(r));
  const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  call.on("error", () => undefined);
  return {
    ask(messageRequest: Request, host = ""): Promise<Response> {
      return new Promise((resolve) => {
        waiting.push(resolve);
        call.write({ host, messageRequest });
      });
    },
    async end() {
      call.end();
      const status = await ended;
      client.close();
      return status;
    },
    ended,
  };
}

const fileNames = (r: Response) => {
  expect(r.messageResponse.case).toBe("fileDescriptorResponse");
  const files = r.messageResponse.case === "fileDescriptorResponse" ? r.messageResponse.value.fileDescriptorProto : [];
  return files.map((b) => fromBinary(FileDescriptorProtoSchema, b).name);
};

const errorOf = (r: Response) => (r.messageResponse.case === "errorResponse" ? r.messageResponse.value.errorCode : `no error: ${r.messageResponse.case}`);

describe("server reflection", () => {
  let issuer: JwksFake;
  let t: TestBroker;

  beforeAll(async () => {
    issuer = await JwksFake.start();
    t = await startTestBroker({ env: { ...issuer.env(), ALLOW_DEV_DRIVERS: "true" } });
  });
  afterAll(async () => {
    await t?.close();
    await issuer?.close();
  });

  for (const protocol of ["grpc-v1", "grpc-v1alpha"]) {
    it(`buf curl (${protocol}) lists every service and method without credentials`, async () => {
      const services = await bufCurl(t.broker.grpcPort, ["--reflect-protocol", protocol, "--list-services"]);
      expect(services.stderr).toBe("");
      expect(services.stdout.trim().split("\n")).toEqual(SERVICES.map((s) => s.typeName).sort());
      const methods = await bufCurl(t.broker.grpcPort, ["--reflect-protocol", protocol, "--list-methods"]);
      expect(methods.code).toBe(0);
      expect(methods.stdout.trim().split("\n")).toEqual(METHODS);
    });

    it(`buf curl (${protocol}) calls the broker from the schema reflection gave it, well-known types included`, async () => {
      const token = await issuer.token({ claims: { did: ALICE } });
      const created = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-reflect", scope: { maxCommands: 7 } }, { authorization: `Bearer ${token}` });
      const id = created.delegation!.delegationId;
      const got = await bufCurl(
        t.broker.grpcPort,
        ["--reflect-protocol", protocol, "-H", `authorization: Bearer ${token}`, "-d", JSON.stringify({ delegationId: id })],
        "/llmbroker.v1.DelegationService/GetDelegation",
      );
      expect(got.stderr).toBe("");
      const { delegation } = JSON.parse(got.stdout) as {
        delegation: { delegationId: string; state: string; maxCommands: number; commandsRemaining: number; createTime: string; timeRemaining: string };
      };
      expect(delegation).toMatchObject({ delegationId: id, state: "DELEGATION_STATE_ACTIVE", maxCommands: 7, commandsRemaining: 7 });
      // Timestamp and Duration in their JSON forms: buf curl had google/protobuf/* from reflection.
      const sent = created.delegation!.createTime!;
      expect(Date.parse(delegation.createTime)).toBe(Math.floor(Number(sent.seconds) * 1000 + sent.nanos / 1e6));
      expect(delegation.createTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
      expect(delegation.timeRemaining).toMatch(/^\d+(\.\d+)?s$/);

      const check = await bufCurl(t.broker.grpcPort, ["--reflect-protocol", protocol, "-d", '{"service":"llmbroker.v1.DelegationService"}'], "/grpc.health.v1.Health/Check");
      expect(JSON.parse(check.stdout)).toEqual({ status: "SERVING" });
      // Reflection does not lend the broker's RPCs its openness.
      const anonymous = await bufCurl(t.broker.grpcPort, ["--reflect-protocol", protocol, "-d", "{}"], "/llmbroker.v1.DelegationService/ListAgents");
      expect(anonymous.code).toBe(grpc.status.UNAUTHENTICATED << 3);
    });
  }

  for (const version of ["v1", "v1alpha"] as const) {
    it(`a grpc-js client (${version}) gets services, files with their dependencies, symbols and not-found errors`, async () => {
      const s = reflectionStream(t.broker.grpcPort, version);

      const listed = await s.ask({ case: "listServices", value: "" }, "broker.example");
      expect(listed.validHost).toBe("broker.example");
      expect(listed.originalRequest?.messageRequest).toEqual({ case: "listServices", value: "" });
      expect(listed.messageResponse.case === "listServicesResponse" && listed.messageResponse.value.service.map((x) => x.name)).toEqual([
        "llmbroker.v1.DelegationService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]);

      // The service's file first, then everything it imports.
      const first = await s.ask({ case: "fileContainingSymbol", value: "llmbroker.v1.DelegationService" });
      expect(fileNames(first)).toEqual([
        "llmbroker/v1/delegation_service.proto",
        "llmbroker/v1/delegation.proto",
        "google/protobuf/duration.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/timestamp.proto",
      ]);
      // Complete: a registry builds from them alone, and has every method the broker serves.
      const files = first.messageResponse.case === "fileDescriptorResponse" ? first.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b)) : [];
      const registry = createFileRegistry(files[0]!, (name) => files.find((f) => f.name === name));
      expect(registry.getService("llmbroker.v1.DelegationService")?.methods.map((m) => m.name)).toEqual(DelegationService.methods.map((m) => m.name));
      expect(registry.getMessage("llmbroker.v1.Delegation")?.fields.find((f) => f.name === "create_time")?.message?.typeName).toBe("google.protobuf.Timestamp");

      // Files this stream already has are not sent again; the one asked for always is.
      expect(fileNames(await s.ask({ case: "fileContainingSymbol", value: "llmbroker.v1.DelegationService.GetDelegation" }))).toEqual(["llmbroker/v1/delegation_service.proto"]);
      for (const symbol of ["llmbroker.v1.Delegation", ".llmbroker.v1.Delegation.create_time", "llmbroker.v1.DelegationState", "llmbroker.v1.DELEGATION_STATE_ACTIVE"]) {
        expect(fileNames(await s.ask({ case: "fileContainingSymbol", value: symbol })), symbol).toEqual(["llmbroker/v1/delegation.proto"]);
      }
      expect(fileNames(await s.ask({ case: "fileByFilename", value: "google/protobuf/struct.proto" }))).toEqual(["google/protobuf/struct.proto"]);
      expect(fileNames(await s.ask({ case: "fileContainingSymbol", value: "grpc.health.v1.Health" }))).toEqual(["grpc/health/v1/health.proto"]);

      expect(errorOf(await s.ask({ case: "fileContainingSymbol", value: "llmbroker.v1.NoSuchThing" }))).toBe(grpc.status.NOT_FOUND);
      expect(errorOf(await s.ask({ case: "fileByFilename", value: "llmbroker/v1/secrets.proto" }))).toBe(grpc.status.NOT_FOUND);
      expect(
        errorOf(await s.ask({ case: "fileContainingExtension", value: create(v1.ExtensionRequestSchema, { containingType: "llmbroker.v1.Delegation", extensionNumber: 100 }) })),
      ).toBe(grpc.status.NOT_FOUND);
      const numbers = await s.ask({ case: "allExtensionNumbersOfType", value: "llmbroker.v1.Delegation" });
      expect(numbers.messageResponse).toMatchObject({ case: "allExtensionNumbersResponse", value: { baseTypeName: "llmbroker.v1.Delegation", extensionNumber: [] } });
      expect(errorOf(await s.ask({ case: "allExtensionNumbersOfType", value: "llmbroker.v1.Nope" }))).toBe(grpc.status.NOT_FOUND);
      expect(errorOf(await s.ask({ case: undefined }))).toBe(grpc.status.INVALID_ARGUMENT);

      // The client ends its side: the server ends the call with OK.
      expect((await s.end()).code).toBe(grpc.status.OK);
    });
  }
});

describe("GRPC_REFLECTION=false", () => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker({ env: { GRPC_REFLECTION: "false" } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("serves no reflection (UNIMPLEMENTED), and health still", async () => {
    const listed = await bufCurl(t.broker.grpcPort, ["--list-services"]);
    expect(listed.code).not.toBe(0);
    expect(listed.stderr).toMatch(/unimplemented/i);
    for (const version of ["v1", "v1alpha"] as const) {
      const s = reflectionStream(t.broker.grpcPort, version);
      void s.ask({ case: "listServices", value: "" });
      expect((await s.ended).code, version).toBe(grpc.status.UNIMPLEMENTED);
      await s.end();
    }
    const check = await bufCurl(t.broker.grpcPort, ["--schema", fileURLToPath(new URL("../..", import.meta.url)), "-d", "{}"], "/grpc.health.v1.Health/Check");
    expect(JSON.parse(check.stdout)).toEqual({ status: "SERVING" });
  });
});
