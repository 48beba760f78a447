/**
 * Serves a Connect ServiceImpl on a @grpc/grpc-js server. grpc-js answers
 * gRPC several times faster than connect-node's HTTP/2 server on this
 * machine (see DESIGN.md), so the gRPC port uses it while browsers get
 * Connect and gRPC-Web from connect-node, from the same implementation.
 */
import { type DescMessage, type DescMethod, type DescService, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type HandlerContext,
  type ServiceImpl,
  createContextValues,
} from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import * as grpc from "@grpc/grpc-js";
import { peerKey } from "./principal.js";
import { streamWriterKey } from "./stream-writer.js";

type SurfaceCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;
type Handler = (req: unknown, ctx: HandlerContext) => unknown;

// createHandlerContext copies its headers into a Headers object; a plain record avoids a second copy.
function headersOf(metadata: grpc.Metadata): Record<string, string> {
  const h: Record<string, string> = {};
  for (const [key, value] of Object.entries(metadata.getMap())) {
    h[key] = typeof value === "string" ? value : Buffer.from(value).toString("base64");
  }
  return h;
}

// Built once: grpc-js emits "cancelled" when every stream closes, even after a
// successful reply, and an abort without a reason allocates a DOMException.
const CANCELLED = new ConnectError("cancelled by the client", Code.Canceled);
const FINISHED = new Error("rpc finished");
const SHUTDOWN = new ConnectError("the server is shutting down", Code.Unavailable);

/** The gRPC status grpc-js sends for a ConnectError, with details in grpc-status-details-bin. */
function statusOf(err: unknown): Partial<grpc.StatusObject> {
  const ce = err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal);
  const metadata = new grpc.Metadata();
  const details = setTrailerStatus(new Headers(), ce).get("grpc-status-details-bin");
  if (details) metadata.set("grpc-status-details-bin", Buffer.from(details, "base64"));
  return { code: ce.code as number as grpc.status, details: ce.rawMessage, metadata };
}

/**
 * A request message that did not decode. grpc-js answers INTERNAL when
 * requestDeserialize throws; the client sent bad bytes, so the handler
 * answers INVALID_ARGUMENT instead, as Connect does for the same input.
 */
class Undecodable {
  constructor(readonly error: ConnectError) {}
}

function decodeRequest(schema: DescMessage, bytes: Buffer): unknown {
  try {
    return fromBinary(schema, bytes);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    return new Undecodable(new ConnectError(`parse binary: ${reason}`.slice(0, 256), Code.InvalidArgument));
  }
}

function timeoutOf(call: SurfaceCall): number | undefined {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? Math.max(0, ms - Date.now()) : undefined;
}

/**
 * The context values of one call, with the TLS peer when there is one.
 * grpc-js reports a peer certificate only once the handshake verified it
 * (over cleartext, or unverified, the auth context is empty).
 */
function valuesFor(call: SurfaceCall): ContextValues {
  const values = createContextValues();
  const auth = call.getAuthContext();
  if (auth.transportSecurityType === "ssl") {
    values.set(peerKey, { certificate: auth.sslPeerCertificate, authorized: auth.sslPeerCertificate !== undefined });
  }
  return values;
}

/** Calls in progress, aborted together at shutdown (one listener, not one per call). */
interface LiveCalls {
  shutdown: AbortSignal;
  calls: Set<AbortController>;
}

interface CallContext extends HandlerContext {
  /** Ends the context: aborts its signal, detaches from shutdown. */
  finish(): void;
}

/**
 * The HandlerContext of one grpc-js call. Lighter than Connect's
 * createHandlerContext (one AbortController instead of linked ones per call):
 * grpc-js enforces the deadline itself and reports it, like a client cancel,
 * as "cancelled".
 */
function contextFor(service: DescService, method: DescMethod, call: SurfaceCall, live: LiveCalls): CallContext {
  const controller = new AbortController();
  if (live.shutdown.aborted) controller.abort(SHUTDOWN);
  else live.calls.add(controller);
  call.once("cancelled", () => controller.abort(CANCELLED));
  const deadline = timeoutOf(call);
  const deadlineAt = deadline === undefined ? undefined : Date.now() + deadline;
  let requestHeader: Headers | undefined;
  let responseHeader: Headers | undefined;
  let responseTrailer: Headers | undefined;
  return {
    method,
    service,
    signal: controller.signal,
    timeoutMs: () => (deadlineAt === undefined ? undefined : Math.max(0, deadlineAt - Date.now())),
    requestMethod: "POST",
    get requestHeader() {
      return (requestHeader ??= new Headers(headersOf(call.metadata)));
    },
    get responseHeader() {
      return (responseHeader ??= new Headers());
    },
    get responseTrailer() {
      return (responseTrailer ??= new Headers());
    },
    protocolName: "grpc",
    values: valuesFor(call),
    url: `/${service.typeName}/${method.name}`,
    finish() {
      live.calls.delete(controller);
      if (!controller.signal.aborted) controller.abort(FINISHED);
    },
  };
}

/**
 * Encodings of streamed messages, by message object. Watch hands the same
 * message of an event to every subscriber; it is encoded once.
 */
const encoded = new WeakMap<object, Buffer>();

function encodeShared(schema: DescMessage, m: unknown): Buffer {
  const key = m as object;
  let bytes = encoded.get(key);
  if (!bytes) encoded.set(key, (bytes = Buffer.from(toBinary(schema, create(schema, m as never)))));
  return bytes;
}

/** Registers every method of `service` on `server`, served by `impl`. */
export function addConnectService<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: ServiceImpl<S>,
  shutdown: AbortSignal,
): void {
  const live: LiveCalls = { shutdown, calls: new Set() };
  shutdown.addEventListener(
    "abort",
    () => {
      for (const c of live.calls) c.abort(SHUTDOWN);
      live.calls.clear();
    },
    { once: true },
  );
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    if (method.methodKind !== "unary" && method.methodKind !== "server_streaming") {
      throw new Error(`grpc adapter: ${method.methodKind} methods are not supported (${method.name})`);
    }
    const input: DescMessage = method.input;
    const output: DescMessage = method.output;
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: false,
      responseStream: method.methodKind === "server_streaming",
      requestSerialize: (m: unknown) => Buffer.from(toBinary(input, create(input, m as never))),
      requestDeserialize: (b: Buffer) => decodeRequest(input, b),
      responseSerialize:
        method.methodKind === "server_streaming"
          ? (m: unknown) => encodeShared(output, m)
          : (m: unknown) => Buffer.from(toBinary(output, create(output, m as never))),
      responseDeserialize: (b: Buffer) => fromBinary(output, b),
      originalName: method.localName,
    };
    const handler = (impl as unknown as Record<string, Handler>)[method.localName]!.bind(impl);
    if (method.methodKind === "unary") {
      handlers[method.localName] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        if (call.request instanceof Undecodable) return callback(statusOf(call.request.error));
        const ctx = contextFor(service, method, call, live);
        Promise.resolve()
          .then(() => handler(call.request, ctx))
          .then(
            (res) => callback(null, res),
            (err) => callback(statusOf(err)),
          )
          .finally(() => ctx.finish());
      };
    } else {
      handlers[method.localName] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
        if (call.request instanceof Undecodable) return void call.emit("error", statusOf(call.request.error));
        const ctx = contextFor(service, method, call, live);
        // Messages written directly (live Watch items) share the call with those yielded.
        ctx.values.set(streamWriterKey, {
          write: (message) => (call.cancelled || ctx.signal.aborted ? true : call.write(message)),
          onDrain: (resume) => {
            call.once("drain", resume);
          },
        });
        void (async () => {
          try {
            for await (const msg of handler(call.request, ctx) as AsyncIterable<unknown>) {
              if (ctx.signal.aborted) break;
              if (!call.write(msg)) {
                await new Promise<void>((resolve) => {
                  const done = () => {
                    call.off("drain", done);
                    ctx.signal.removeEventListener("abort", done);
                    resolve();
                  };
                  call.on("drain", done);
                  ctx.signal.addEventListener("abort", done);
                });
              }
            }
            // A stream the server ends (shutdown) must not look finished: the client resumes.
            if (!call.cancelled) {
              if (live.shutdown.aborted) call.emit("error", statusOf(SHUTDOWN));
              else call.end();
            }
          } catch (err) {
            if (!call.cancelled) call.emit("error", statusOf(err));
          } finally {
            ctx.finish();
          }
        })();
      };
    }
  }
  server.addService(definition as grpc.ServiceDefinition, handlers);
}
