/**
 * grpc-js method definitions built from generated descriptors, for the
 * services the broker serves with grpc-js directly (health, reflection)
 * rather than through the Connect adapter: messages are encoded and decoded
 * with the method's generated schemas.
 */
import { type DescMethod, type DescService, type MessageShape, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

/**
 * A request message that did not decode. grpc-js answers INTERNAL when
 * requestDeserialize throws; the client sent bad bytes, so the handler
 * answers INVALID_ARGUMENT instead (see `refuse`).
 */
export class Undecodable {
  constructor(readonly reason: string) {}
}

/** The status for an undecodable request. */
export function refuse(u: Undecodable): Partial<grpc.StatusObject> {
  return { code: grpc.status.INVALID_ARGUMENT, details: `parse binary: ${u.reason}`.slice(0, 256) };
}

/** The grpc-js definition of `method`, at `/<service>/<Method>`. */
export function grpcMethod<M extends DescMethod>(
  method: M,
): grpc.MethodDefinition<MessageShape<M["input"]> | Undecodable, MessageShape<M["output"]>> {
  const service: DescService = method.parent;
  return {
    path: `/${service.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: (m) => Buffer.from(toBinary(method.input, m as MessageShape<M["input"]>)),
    requestDeserialize: (b) => {
      try {
        return fromBinary(method.input, b) as MessageShape<M["input"]>;
      } catch (err) {
        return new Undecodable(err instanceof Error ? err.message : String(err));
      }
    },
    responseSerialize: (m) => Buffer.from(toBinary(method.output, m)),
    responseDeserialize: (b) => fromBinary(method.output, b) as MessageShape<M["output"]>,
    originalName: method.localName,
  };
}
