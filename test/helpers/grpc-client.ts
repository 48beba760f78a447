/**
 * A minimal typed gRPC client on @grpc/grpc-js for the DelegationService,
 * built from the generated descriptors: what a GSAP broker written against
 * grpc-js would send on the wire.
 */
import { type DescMessage, type DescMethod, type MessageInitShape, type MessageShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ErrorDetailSchema } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import type { ErrorDetail } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { StatusSchema } from "./status.js";

type Methods = typeof DelegationService.method;
type In<K extends keyof Methods> = Methods[K]["input"];
type Out<K extends keyof Methods> = Methods[K]["output"];

export interface GrpcError extends Error {
  code: grpc.status;
  details: string;
  metadata: grpc.Metadata;
}

/** The ErrorDetail carried in grpc-status-details-bin, if any. */
export function errorDetailOf(err: unknown): ErrorDetail | undefined {
  const md = (err as GrpcError).metadata;
  const raw = md?.get("grpc-status-details-bin")[0];
  if (!raw) return undefined;
  const status = fromBinary(StatusSchema, raw as Buffer);
  const any = status.details.find((d) => d.typeUrl.endsWith("llmbroker.v1.ErrorDetail"));
  return any ? fromBinary(ErrorDetailSchema, any.value) : undefined;
}

/** The gRPC code and ErrorDetail reason of a call that must fail (throws if it succeeds). */
export async function failureOf(call: Promise<unknown>): Promise<{ code: number; reason: string | undefined }> {
  const err = (await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e,
  )) as { code: number };
  return { code: err.code, reason: errorDetailOf(err)?.reason };
}

function path(method: DescMethod): string {
  return `/${DelegationService.typeName}/${method.name}`;
}

function metadataOf(headers: Record<string, string>): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return md;
}

const ser = (schema: DescMessage) => (m: unknown) => Buffer.from(toBinary(schema, m as never));
const de = (schema: DescMessage) => (b: Buffer) => fromBinary(schema, b);

export class GrpcTestClient {
  readonly raw: grpc.Client;

  /** `options`: channel options, e.g. `grpc.use_local_subchannel_pool` for a connection of its own. */
  constructor(address: string, options: grpc.ChannelOptions = {}) {
    this.raw = new grpc.Client(address, grpc.credentials.createInsecure(), options);
  }

  /** Calls a unary method with optional metadata headers. */
  unary<K extends Exclude<keyof Methods, "watchDelegations">>(
    name: K,
    request: MessageInitShape<In<K>>,
    headers: Record<string, string> = {},
    deadlineMs = 20_000,
  ): Promise<MessageShape<Out<K>>> {
    const method = DelegationService.method[name] as DescMethod;
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(headers)) md.set(k, v);
    return new Promise((resolve, reject) => {
      this.raw.makeUnaryRequest(
        path(method),
        ser(method.input),
        de(method.output),
        create(method.input, request as never),
        md,
        { deadline: Date.now() + deadlineMs },
        (err, res) => (err ? reject(err) : resolve(res as MessageShape<Out<K>>)),
      );
    });
  }

  /** Opens WatchDelegations; the returned call emits 'data', 'error' and 'end'. */
  watch(request: MessageInitShape<In<"watchDelegations">>, headers: Record<string, string> = {}): grpc.ClientReadableStream<MessageShape<Out<"watchDelegations">>> {
    const method = DelegationService.method.watchDelegations as DescMethod;
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(headers)) md.set(k, v);
    return this.raw.makeServerStreamRequest(path(method), ser(method.input), de(method.output), create(method.input, request as never), md, {}) as never;
  }

  /** Calls a unary method with `bytes` sent as the request as they are: what a typed client cannot send. */
  rawUnary<K extends Exclude<keyof Methods, "watchDelegations">>(
    name: K,
    bytes: Uint8Array,
    headers: Record<string, string> = {},
    deadlineMs = 20_000,
  ): Promise<MessageShape<Out<K>>> {
    const method = DelegationService.method[name] as DescMethod;
    return new Promise((resolve, reject) => {
      this.raw.makeUnaryRequest(
        path(method),
        (b: Buffer) => b,
        de(method.output),
        Buffer.from(bytes),
        metadataOf(headers),
        { deadline: Date.now() + deadlineMs },
        (err, res) => (err ? reject(err) : resolve(res as MessageShape<Out<K>>)),
      );
    });
  }

  /** Opens WatchDelegations with `bytes` sent as the request as they are. */
  rawWatch(bytes: Uint8Array, headers: Record<string, string> = {}): grpc.ClientReadableStream<MessageShape<Out<"watchDelegations">>> {
    const method = DelegationService.method.watchDelegations as DescMethod;
    return this.raw.makeServerStreamRequest(path(method), (b: Buffer) => b, de(method.output), Buffer.from(bytes), metadataOf(headers), {}) as never;
  }

  close(): void {
    this.raw.close();
  }
}
