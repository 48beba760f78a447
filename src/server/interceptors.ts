/**
 * Cross-cutting concerns, applied to the service implementation itself so
 * that every transport (grpc-js and Connect alike) runs the same chain.
 * Each interceptor wraps the next; the array reads outermost first.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { Code, ConnectError, createContextKey } from "@connectrpc/connect";
import {
  type Context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapPropagator,
  type Tracer,
  context,
  trace,
} from "@opentelemetry/api";
import type { Principal } from "../domain/index.js";
import type { Logger } from "../logging.js";
import { REQUEST_ID_HEADER, requestIdFrom, withCall } from "../observability/request-context.js";
import { type RpcMethodMetrics, type RpcMetrics, codeName } from "../observability/rpc-metrics.js";
import { toConnectError } from "./errors.js";
import { type Authenticator, peerKey, principalKey } from "./principal.js";

type AnyHandler = (req: unknown, ctx: HandlerContext) => unknown;

/**
 * What an interceptor does around a server stream, as hooks: `intercept`
 * then runs every interceptor's hooks in one generator around the handler,
 * instead of one generator per interceptor (each would hold a frame and a
 * promise per message for the stream's whole life).
 */
export interface StreamHooks {
  /**
   * Before the stream starts; may throw to refuse it. What it returns runs
   * when the stream ends, however it ends, with the error it ends with (as
   * the outermost mapping left it; undefined when it ends without one).
   */
  open?(req: unknown, ctx: HandlerContext, method: DescMethod): Promise<StreamEnd | void> | StreamEnd | void;
  /** Maps an error the stream ends with. */
  error?(err: unknown, ctx: HandlerContext): unknown;
}

/** Told that a stream ended, and with which error. */
export type StreamEnd = (error?: unknown) => void;

/**
 * Wraps one method's handler. `streaming` tells an async-iterable handler
 * from a unary one. An interceptor may also carry `stream` hooks, which
 * `intercept` prefers for server streams.
 */
export type Interceptor = ((next: AnyHandler, method: DescMethod, streaming: boolean) => AnyHandler) & { stream?: StreamHooks };

/** Attaches stream hooks to an interceptor function. */
function withStreamHooks(i: (next: AnyHandler, method: DescMethod, streaming: boolean) => AnyHandler, stream: StreamHooks): Interceptor {
  return Object.assign(i, { stream });
}

/** The request id of the call (set by `observe`). */
export const requestIdKey = createContextKey<string | undefined>(undefined, { description: "request id" });

// The request headers as `observe` read them, for authentication to reuse: the grpc-js
// adapter builds a Headers object on each read of ctx.requestHeader.
const requestHeaderKey = createContextKey<Headers | undefined>(undefined, { description: "request headers, read once" });

function requestHeaderOf(ctx: HandlerContext): Headers {
  return ctx.values.get(requestHeaderKey) ?? ctx.requestHeader;
}

/** The service log with the call's request id, for the lines the transport layer writes about it. */
function callLog(log: Logger, ctx: HandlerContext): Logger {
  const requestId = ctx.values.get(requestIdKey);
  return requestId === undefined ? log : log.child({ requestId });
}

/** Every error leaves as a ConnectError with a safe message (outermost, so it sees all). */
export function errorMapping(log: Logger): Interceptor {
  return withStreamHooks((next, _method, streaming) => {
    if (streaming) {
      return async function* (req, ctx) {
        try {
          yield* next(req, ctx) as AsyncIterable<unknown>;
        } catch (err) {
          throw toConnectError(err, callLog(log, ctx));
        }
      };
    }
    return async (req, ctx) => {
      try {
        return await next(req, ctx);
      } catch (err) {
        throw toConnectError(err, callLog(log, ctx));
      }
    };
  }, { error: (err, ctx) => toConnectError(err, callLog(log, ctx)) });
}

export interface ObserveOptions {
  /** Where the access log goes: one line per RPC at info. */
  log: Logger;
  /** RPC counts and latencies. By default, none. */
  metrics?: RpcMetrics | undefined;
  /** A server span per RPC, a child of the caller's `traceparent`. By default, none. */
  tracer?: Tracer | undefined;
  /** Reads the caller's trace context (W3C); needed with `tracer`. */
  propagator?: TextMapPropagator | undefined;
  /**
   * Run each unary call inside an async context carrying its span and
   * request id, so that the store's and the HTTP clients' spans are its
   * children and the use cases' log lines carry the request id. By default, false.
   */
  contextual?: boolean | undefined;
}

const HEADERS: TextMapGetter<Headers> = {
  get: (h, key) => h.get(key) ?? undefined,
  keys: (h) => [...h.keys()],
};

/** How the access log names the caller: its DID, agent:<client>, service:<client>, operator (dev), or unauthenticated. Never a credential. */
export function principalLabel(p: Principal | undefined): string {
  if (p === undefined) return "unauthenticated";
  if (p.did !== "") return p.did;
  if (p.clientId) return p.admin ? `service:${p.clientId}` : `agent:${p.clientId}`;
  return p.admin ? "operator" : "anonymous";
}

/** Success: Connect's Code has no member for it. */
const OK = 0 as Code;

function codeOf(err: unknown): Code {
  return err instanceof ConnectError ? err.code : Code.Internal;
}

// The codes OpenTelemetry's RPC conventions count as a server's own failure.
const SERVER_FAULTS: ReadonlySet<Code> = new Set([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]);

/** One access-log line. */
interface AccessLine {
  rpc: string;
  code: string;
  ms: number;
  protocol: string;
  principal: string;
  requestId: string;
  traceId?: string;
  error?: string;
}

/** What one call carries from its start to its end. */
interface Call {
  start: number;
  requestId: string;
  span: Span | undefined;
  /** The caller's trace context with the call's span (ROOT_CONTEXT without tracing). */
  active: Context;
}

/**
 * The request id, the RPC metrics, a server span and the access log of
 * every call. Outermost, so it sees the code the caller gets. The request id
 * is the caller's `x-request-id` when sane, else a new one; it goes back in
 * the `x-request-id` response header (on errors too) and on every line the
 * transport layer logs for the call. A stream is counted, spanned and
 * logged when it ends.
 */
export function observe(o: ObserveOptions): Interceptor {
  const { log, metrics, tracer, propagator } = o;
  const contextual = o.contextual === true;
  // The access line's fields are fixed, and none can hold a credential (see principalLabel; the
  // error is the caller's message), so its lines skip the redaction pass: with wildcard paths
  // that is a check of every field, most of the cost of a line. `log` decides the level.
  const access = log.child({}, { redact: [], level: "trace" });

  const begin = (ctx: HandlerContext, method: DescMethod): Call => {
    const start = performance.now();
    const headers = ctx.requestHeader;
    ctx.values.set(requestHeaderKey, headers);
    const requestId = requestIdFrom(headers.get(REQUEST_ID_HEADER));
    ctx.values.set(requestIdKey, requestId);
    ctx.responseHeader.set(REQUEST_ID_HEADER, requestId);
    if (!tracer) return { start, requestId, span: undefined, active: ROOT_CONTEXT };
    const parent = propagator ? propagator.extract(ROOT_CONTEXT, headers, HEADERS) : ROOT_CONTEXT;
    const span = tracer.startSpan(
      `${method.parent.typeName}/${method.name}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          "rpc.system": ctx.protocolName === "connect" ? "connect_rpc" : "grpc",
          "rpc.service": method.parent.typeName,
          "rpc.method": method.name,
          "llm_broker.protocol": ctx.protocolName,
          "llm_broker.request_id": requestId,
        },
      },
      parent,
    );
    return { start, requestId, span, active: trace.setSpan(parent, span) };
  };

  const end = (call: Call, ctx: HandlerContext, method: DescMethod, series: RpcMethodMetrics | undefined, code: Code, err: unknown, timed: boolean): void => {
    const ms = performance.now() - call.start;
    series?.observe(code, ctx.protocolName, timed ? ms / 1000 : undefined);
    const span = call.span;
    if (span) {
      if (ctx.protocolName === "connect") {
        if (code !== OK) span.setAttribute("rpc.connect_rpc.error_code", codeName(code).toLowerCase());
      } else {
        span.setAttribute("rpc.grpc.status_code", code);
      }
      if (SERVER_FAULTS.has(code)) span.setStatus({ code: SpanStatusCode.ERROR, message: codeName(code) });
      span.end();
    }
    if (!log.isLevelEnabled("info")) return;
    const line: AccessLine = {
      rpc: method.name,
      code: codeName(code),
      ms: Math.round(ms * 100) / 100,
      protocol: ctx.protocolName,
      principal: principalLabel(ctx.values.get(principalKey)),
      requestId: call.requestId,
    };
    if (span) line.traceId = span.spanContext().traceId;
    // The message the caller got: client-safe by construction (errors.ts).
    if (err instanceof ConnectError) line.error = err.rawMessage;
    access.info(line, "rpc");
  };

  const stream: StreamHooks = {
    open(_req, ctx, method) {
      const call = begin(ctx, method);
      const series = metrics?.method(method.name);
      return (err) => {
        // Ended by the client (or aborted with a code) rather than by an error of its own.
        const aborted = ctx.signal.aborted ? ctx.signal.reason : undefined;
        const code = err !== undefined ? codeOf(err) : aborted === undefined ? OK : aborted instanceof ConnectError ? aborted.code : Code.Canceled;
        end(call, ctx, method, series, code, err, false);
      };
    },
  };

  return withStreamHooks((next, method, streaming) => {
    if (streaming) return hooked(next, method, [stream]);
    const series = metrics?.method(method.name);
    return async (req, ctx) => {
      const call = begin(ctx, method);
      let code = OK;
      let failure: unknown;
      try {
        if (!contextual) return await next(req, ctx);
        return await context.with(withCall(call.active, { requestId: call.requestId }), next, undefined, req, ctx);
      } catch (err) {
        code = codeOf(err);
        failure = err;
        throw err;
      } finally {
        end(call, ctx, method, series, code, failure, true);
      }
    };
  }, stream);
}

/** The access log alone (no metrics, no spans): `observe({ log })`. */
export function logging(log: Logger): Interceptor {
  return observe({ log });
}

/** Puts the caller into the context before the handler runs. */
export function authentication(authenticate: Authenticator): Interceptor {
  const open = async (_req: unknown, ctx: HandlerContext) => {
    const headers = requestHeaderOf(ctx);
    // A stream lives long: it does not keep the headers once the caller is known.
    ctx.values.delete(requestHeaderKey);
    ctx.values.set(principalKey, await authenticate(headers, ctx.values.get(peerKey)));
  };
  return withStreamHooks((next, _method, streaming) => {
    if (streaming) {
      return async function* (req, ctx) {
        await open(req, ctx);
        yield* next(req, ctx) as AsyncIterable<unknown>;
      };
    }
    return async (req, ctx) => {
      ctx.values.set(principalKey, await authenticate(requestHeaderOf(ctx), ctx.values.get(peerKey)));
      return next(req, ctx);
    };
  }, { open });
}

/** Applies interceptors (outermost first) to every method of `impl`. */
export function intercept<S extends DescService>(service: S, impl: ServiceImpl<S>, interceptors: Interceptor[]): ServiceImpl<S> {
  const out: Record<string, AnyHandler> = {};
  for (const method of service.methods) {
    const streaming = method.methodKind !== "unary";
    let handler = (impl as unknown as Record<string, AnyHandler>)[method.localName]!.bind(impl);
    if (streaming && interceptors.every((i) => i.stream !== undefined)) {
      out[method.localName] = hooked(handler, method, interceptors.map((i) => i.stream!));
      continue;
    }
    for (const i of [...interceptors].reverse()) handler = i(handler, method, streaming);
    out[method.localName] = handler;
  }
  return out as unknown as ServiceImpl<S>;
}

/**
 * A server-streaming handler run inside every interceptor's hooks, in one
 * generator: `open` outermost first (the cleanups run in reverse when the
 * stream ends), errors mapped innermost first, as nested wrappers would.
 */
function hooked(handler: AnyHandler, method: DescMethod, hooks: StreamHooks[]): AnyHandler {
  return async function* (req, ctx) {
    const cleanups: StreamEnd[] = [];
    let failure: unknown;
    try {
      for (const h of hooks) {
        const cleanup = await h.open?.(req, ctx, method);
        if (cleanup) cleanups.push(cleanup);
      }
      yield* handler(req, ctx) as AsyncIterable<unknown>;
    } catch (err) {
      let mapped = err;
      for (let i = hooks.length - 1; i >= 0; i--) if (hooks[i]!.error) mapped = hooks[i]!.error!(mapped, ctx);
      failure = mapped;
      throw mapped;
    } finally {
      for (let i = cleanups.length - 1; i >= 0; i--) cleanups[i]!(failure);
    }
  };
}
