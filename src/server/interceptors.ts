/**
 * Cross-cutting concerns, applied to the service implementation itself so
 * that every transport (grpc-js and Connect alike) runs the same chain.
 * Each interceptor wraps the next; the array reads outermost first.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { ConnectError } from "@connectrpc/connect";
import type { Logger } from "../logging.js";
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
  /** Before the stream starts; may throw to refuse it. What it returns runs when the stream ends, however it ends. */
  open?(req: unknown, ctx: HandlerContext, method: DescMethod): Promise<(() => void) | void> | (() => void) | void;
  /** Maps an error the stream ends with. */
  error?(err: unknown): unknown;
}

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

/** Every error leaves as a ConnectError with a safe message (outermost, so it sees all). */
export function errorMapping(log: Logger): Interceptor {
  return withStreamHooks((next, _method, streaming) => {
    if (streaming) {
      return async function* (req, ctx) {
        try {
          yield* next(req, ctx) as AsyncIterable<unknown>;
        } catch (err) {
          throw toConnectError(err, log);
        }
      };
    }
    return async (req, ctx) => {
      try {
        return await next(req, ctx);
      } catch (err) {
        throw toConnectError(err, log);
      }
    };
  }, { error: (err) => toConnectError(err, log) });
}

/** One debug line per unary call with its duration and code. */
export function logging(log: Logger): Interceptor {
  return withStreamHooks((next, method, streaming) => {
    if (streaming || !log.isLevelEnabled("debug")) return next;
    return async (req, ctx) => {
      const start = performance.now();
      try {
        const res = await next(req, ctx);
        log.debug({ rpc: method.name, ms: +(performance.now() - start).toFixed(2), protocol: ctx.protocolName }, "ok");
        return res;
      } catch (err) {
        const code = err instanceof ConnectError ? err.code : undefined;
        log.debug({ rpc: method.name, ms: +(performance.now() - start).toFixed(2), code }, "failed");
        throw err;
      }
    };
  }, {});
}

/** Puts the caller into the context before the handler runs. */
export function authentication(authenticate: Authenticator): Interceptor {
  const open = async (_req: unknown, ctx: HandlerContext) => {
    ctx.values.set(principalKey, await authenticate(ctx.requestHeader, ctx.values.get(peerKey)));
  };
  return withStreamHooks((next, _method, streaming) => {
    if (streaming) {
      return async function* (req, ctx) {
        ctx.values.set(principalKey, await authenticate(ctx.requestHeader, ctx.values.get(peerKey)));
        yield* next(req, ctx) as AsyncIterable<unknown>;
      };
    }
    return async (req, ctx) => {
      ctx.values.set(principalKey, await authenticate(ctx.requestHeader, ctx.values.get(peerKey)));
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
    const cleanups: (() => void)[] = [];
    try {
      for (const h of hooks) {
        const cleanup = await h.open?.(req, ctx, method);
        if (cleanup) cleanups.push(cleanup);
      }
      yield* handler(req, ctx) as AsyncIterable<unknown>;
    } catch (err) {
      let mapped = err;
      for (let i = hooks.length - 1; i >= 0; i--) if (hooks[i]!.error) mapped = hooks[i]!.error!(mapped);
      throw mapped;
    } finally {
      for (let i = cleanups.length - 1; i >= 0; i--) cleanups[i]!();
    }
  };
}
