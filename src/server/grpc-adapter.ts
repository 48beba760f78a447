/**
 * Serves a Connect ServiceImpl on a @grpc/grpc-js server. grpc-js answers
 * gRPC several times faster than connect-node's HTTP/2 server on this
 * machine (see DESIGN.md), so the gRPC port uses it while browsers get
 * Connect and gRPC-Web from connect-node, from the same implementation.
 */
import { type DescMessage, type DescMethod, type DescService, type Message, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextKey, type ContextValues, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import type { Http2Stream } from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { LightHeaders } from "./light-headers.js";
import { preEncodedOf } from "./pre-encoded.js";
import { connectionKey, peerKey } from "./principal.js";
import { streamWriterKey } from "./stream-writer.js";
import { findUnknownField, unknownFieldError } from "./unknown-fields.js";

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

/** The request in `bytes`, or why it is refused: it does not decode, or it carries a field the broker does not know. */
function decodeRequest(schema: DescMessage, bytes: Buffer): unknown {
  let message: Message;
  try {
    message = fromBinary(schema, bytes);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    return new Undecodable(new ConnectError(`parse binary: ${reason}`.slice(0, 256), Code.InvalidArgument));
  }
  const unknown = findUnknownField(schema, message);
  return unknown ? new Undecodable(unknownFieldError(unknown)) : message;
}

function timeoutOf(call: SurfaceCall): number | undefined {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? Math.max(0, ms - Date.now()) : undefined;
}

/**
 * Context values with their methods on a prototype (Connect's
 * createContextValues makes three closures per call, kept for a stream's life).
 */
class CallValues implements ContextValues {
  [id: symbol]: unknown;
  get<T>(key: ContextKey<T>): T {
    return key.id in this ? (this[key.id] as T) : key.defaultValue;
  }
  set<T>(key: ContextKey<T>, value: T): this {
    this[key.id] = value;
    return this;
  }
  delete(key: ContextKey<unknown>): this {
    delete this[key.id];
    return this;
  }
}

/**
 * The context values of one call, with the TLS peer when there is one.
 * grpc-js reports a peer certificate only once the handshake verified it
 * (over cleartext, or unverified, the auth context is empty).
 */
function valuesFor(call: SurfaceCall): ContextValues {
  const values = new CallValues();
  const auth = call.getAuthContext();
  if (auth.transportSecurityType === "ssl") {
    values.set(peerKey, { certificate: auth.sslPeerCertificate, authorized: auth.sslPeerCertificate !== undefined });
  }
  return values;
}

/** Calls in progress, aborted together at shutdown (one listener, not one per call). */
interface LiveCalls {
  shutdown: AbortSignal;
  calls: Set<GrpcCallContext>;
}

interface CallContext extends HandlerContext {
  /** Ends the context: aborts its signal, detaches from shutdown. */
  finish(): void;
}

/**
 * The HandlerContext of one grpc-js call. Lighter than Connect's
 * createHandlerContext (at most one AbortController, made only when a handler
 * reads the signal, instead of linked ones per call):
 * grpc-js enforces the deadline itself and reports it, like a client cancel,
 * as "cancelled". A class, so its accessors live on the prototype and a
 * long-lived stream holds only its fields.
 */
class GrpcCallContext implements CallContext {
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";
  readonly values: ContextValues;
  /** Made when a handler first reads `signal` (most never do: GetDelegation and AuthorizeCommand take none). */
  private controller: AbortController | undefined;
  /** Why the call ended before `signal` was read, if it did. */
  private ended: unknown;
  private readonly deadlineAt: number | undefined;
  private header: Headers | undefined;
  private headerSent = false;
  private trailer: Headers | undefined;
  /** A unary call's reply, sent once: by the handler, or with UNAVAILABLE when shutdown cuts the call short. */
  private callback: grpc.sendUnaryData<unknown> | undefined;

  constructor(
    readonly service: DescService,
    readonly method: DescMethod,
    private readonly call: SurfaceCall,
    private readonly live: LiveCalls,
  ) {
    if (live.shutdown.aborted) this.ended = SHUTDOWN;
    else live.calls.add(this);
    // `on`, not `once`: grpc-js emits it once, and once() would keep a wrapper and its state per call.
    call.on("cancelled", () => this.abort(CANCELLED));
    const deadline = timeoutOf(call);
    this.deadlineAt = deadline === undefined ? undefined : Date.now() + deadline;
    this.values = valuesFor(call);
  }

  /** Aborts when the client cancels or its deadline passes, at shutdown's end, and when the call is over. */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.ended !== undefined) this.controller.abort(this.ended);
    }
    return this.controller.signal;
  }

  private abort(reason: unknown): void {
    if (this.ended !== undefined) return;
    this.ended = reason;
    this.controller?.abort(reason);
  }

  get url(): string {
    return `/${this.service.typeName}/${this.method.name}`;
  }

  timeoutMs(): number | undefined {
    return this.deadlineAt === undefined ? undefined : Math.max(0, this.deadlineAt - Date.now());
  }

  // Built on each access, not kept: authentication reads it once, and a Watch stream
  // would otherwise hold a Headers object for its whole life.
  get requestHeader(): Headers {
    return new LightHeaders(headersOf(this.call.metadata));
  }

  get responseHeader(): Headers {
    return (this.header ??= new LightHeaders());
  }

  get responseTrailer(): Headers {
    return (this.trailer ??= new LightHeaders());
  }

  /**
   * Sends the response headers the handler set (x-request-id, …) as the
   * call's metadata, once, before its first message or its status; grpc-js
   * would otherwise send empty metadata.
   */
  sendHeader(): void {
    const header = this.header;
    if (header === undefined || this.headerSent || this.call.cancelled) return;
    this.headerSent = true;
    const metadata = new grpc.Metadata();
    header.forEach((value, key) => (key.endsWith("-bin") ? metadata.set(key, Buffer.from(value, "base64")) : metadata.set(key, value)));
    this.call.sendMetadata(metadata);
  }

  /** Makes this a unary call answered through `reply`. */
  answerWith(callback: grpc.sendUnaryData<unknown>): void {
    this.callback = callback;
  }

  /** Answers a unary call, unless shutdown already did. */
  reply(err: Partial<grpc.StatusObject> | null, res?: unknown): void {
    const callback = this.callback;
    if (!callback) return;
    this.callback = undefined;
    this.sendHeader();
    callback(err, res);
  }

  /** Shutdown's grace is over: the handler's signal aborts and a unary caller gets UNAVAILABLE now. */
  cutShort(): void {
    this.abort(SHUTDOWN);
    this.reply(statusOf(SHUTDOWN));
  }

  finish(): void {
    this.live.calls.delete(this);
    this.abort(FINISHED);
  }
}

function contextFor(service: DescService, method: DescMethod, call: SurfaceCall, live: LiveCalls): GrpcCallContext {
  return new GrpcCallContext(service, method, call, live);
}

/**
 * Encodings of streamed messages, by message object. Watch hands the same
 * message of an event to every subscriber; it is encoded once, and framed
 * once (the 5-byte gRPC prefix) for the direct path below.
 */
const encoded = new WeakMap<object, Buffer>();
const framed = new WeakMap<object, Buffer>();

function encodeShared(schema: DescMessage, m: unknown): Buffer {
  const key = m as object;
  let bytes = encoded.get(key);
  if (!bytes) encoded.set(key, (bytes = Buffer.from(toBinary(schema, create(schema, m as never)))));
  return bytes;
}

function frameShared(schema: DescMessage, m: unknown): Buffer {
  const key = m as object;
  let frame = framed.get(key);
  if (!frame) {
    const bytes = encodeShared(schema, m);
    frame = Buffer.allocUnsafe(bytes.length + 5);
    frame.writeUInt8(0, 0); // not compressed
    frame.writeUInt32BE(bytes.length, 1);
    bytes.copy(frame, 5);
    framed.set(key, frame);
  }
  return frame;
}

/**
 * The HTTP/2 stream under a grpc-js server-streaming call, once its response
 * headers are out, or undefined. grpc-js writes each message through an
 * object-mode Writable, its interceptor chain and a fresh framed copy; for a
 * fan-out of one event to thousands of Watch streams that is most of the
 * cost, so live items are written to the stream directly, already framed.
 * This reads grpc-js internals (BaseServerInterceptingCall's `stream` and
 * `metadataSent`, version pinned in package.json): when they are not there,
 * the public write path is used.
 */
function rawStreamOf(call: grpc.ServerWritableStream<unknown, unknown>): Http2Stream | undefined {
  const base = (call as unknown as { call?: { stream?: unknown; metadataSent?: unknown } }).call;
  const stream = base?.stream as Http2Stream | undefined;
  if (base?.metadataSent !== true || !stream || typeof stream.write !== "function") return undefined;
  return stream.destroyed || stream.writableEnded ? undefined : stream;
}

/**
 * Registers every method of `service` on `server`, served by `impl`. When
 * `shutdown` aborts, calls still running are answered UNAVAILABLE. Returns
 * a count of the calls in flight.
 */
export function addConnectService<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: ServiceImpl<S>,
  shutdown: AbortSignal,
): () => number {
  const live: LiveCalls = { shutdown, calls: new Set() };
  shutdown.addEventListener(
    "abort",
    () => {
      for (const c of live.calls) c.cutShort();
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
          : (m: unknown) => {
              const bytes = preEncodedOf(m) ?? toBinary(output, create(output, m as never));
              return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
            },
      responseDeserialize: (b: Buffer) => fromBinary(output, b),
      originalName: method.localName,
    };
    const handler = (impl as unknown as Record<string, Handler>)[method.localName]!.bind(impl);
    if (method.methodKind === "unary") {
      handlers[method.localName] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        if (call.request instanceof Undecodable) return callback(statusOf(call.request.error));
        const ctx = contextFor(service, method, call, live);
        ctx.answerWith(callback);
        const answer = (res: unknown) => {
          ctx.reply(null, res);
          ctx.finish();
        };
        const fail = (err: unknown) => {
          ctx.reply(statusOf(err));
          ctx.finish();
        };
        let result: unknown;
        try {
          result = handler(call.request, ctx);
        } catch (err) {
          return fail(err);
        }
        Promise.resolve(result).then(answer, fail);
      };
    } else {
      handlers[method.localName] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
        if (call.request instanceof Undecodable) return void call.emit("error", statusOf(call.request.error));
        const ctx = contextFor(service, method, call, live);
        // The client's address and port: one per HTTP/2 connection, for the per-connection Watch limit.
        ctx.values.set(connectionKey, call.getPeer());
        // Messages written directly (live Watch items) share the call with those yielded. Straight
        // to the HTTP/2 stream when grpc-js has nothing buffered (so order is kept), else through it.
        let waitOn: "raw" | "call" = "call";
        ctx.values.set(streamWriterKey, {
          write: (message) => {
            if (call.cancelled || ctx.signal.aborted) return true;
            ctx.sendHeader();
            const raw = call.writableLength === 0 ? rawStreamOf(call) : undefined;
            waitOn = raw ? "raw" : "call";
            return raw ? raw.write(frameShared(output, message)) : call.write(message);
          },
          onDrain: (resume) => {
            const raw = waitOn === "raw" ? rawStreamOf(call) : undefined;
            if (raw) raw.once("drain", resume);
            else call.once("drain", resume);
          },
        });
        void (async () => {
          try {
            for await (const msg of handler(call.request, ctx) as AsyncIterable<unknown>) {
              if (ctx.signal.aborted) break;
              ctx.sendHeader();
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
              ctx.sendHeader();
              if (live.shutdown.aborted) call.emit("error", statusOf(SHUTDOWN));
              else call.end();
            }
          } catch (err) {
            if (!call.cancelled) {
              ctx.sendHeader();
              call.emit("error", statusOf(err));
            }
          } finally {
            ctx.finish();
          }
        })();
      };
    }
  }
  server.addService(definition as grpc.ServiceDefinition, handlers);
  return () => live.calls.size;
}
