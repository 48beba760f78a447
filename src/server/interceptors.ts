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

/** Wraps one method's handler. `streaming` tells an async-iterable handler from a unary one. */
export type Interceptor = (next: AnyHandler, method: DescMethod, streaming: boolean) => AnyHandler;

/** Every error leaves as a ConnectError with a safe message (outermost, so it sees all). */
export function errorMapping(log: Logger): Interceptor {
  return (next, _method, streaming) => {
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
  };
}

/** One debug line per unary call with its duration and code. */
export function logging(log: Logger): Interceptor {
  return (next, method, streaming) => {
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
  };
}

/** Puts the caller into the context before the handler runs. */
export function authentication(authenticate: Authenticator): Interceptor {
  return (next, _method, streaming) => {
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
  };
}

/** Applies interceptors (outermost first) to every method of `impl`. */
export function intercept<S extends DescService>(service: S, impl: ServiceImpl<S>, interceptors: Interceptor[]): ServiceImpl<S> {
  const out: Record<string, AnyHandler> = {};
  for (const method of service.methods) {
    const streaming = method.methodKind !== "unary";
    let handler = (impl as unknown as Record<string, AnyHandler>)[method.localName]!.bind(impl);
    for (const i of [...interceptors].reverse()) handler = i(handler, method, streaming);
    out[method.localName] = handler;
  }
  return out as unknown as ServiceImpl<S>;
}
