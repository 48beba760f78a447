/**
 * The store with a child span per call, for the use cases, wrapped at the
 * composition root so the store itself knows nothing of tracing. A span is
 * made only when the caller has one active (an RPC, an upstream call):
 * background loops poll the store all the time, and a root span per poll
 * would bury the traces that matter. Installed only when tracing is on.
 */
import { type Span, SpanKind, SpanStatusCode, type Tracer, context, trace } from "@opentelemetry/api";

type AnyFn = (...args: unknown[]) => unknown;

/** `store`, whose methods make a `store.<method>` span under the active span. */
export function tracedStore<S extends object>(store: S, tracer: Tracer, driver: string): S {
  const wrapped = Object.create(store) as S;
  const seen = new Set<string>(["constructor"]);
  // Own methods and those of the classes it is an instance of; fields and getters are inherited as they are.
  for (let o: object | null = store; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
    for (const name of Object.getOwnPropertyNames(o)) {
      if (seen.has(name)) continue;
      seen.add(name);
      const fn = Object.getOwnPropertyDescriptor(o, name)?.value as unknown;
      if (typeof fn !== "function") continue;
      Object.defineProperty(wrapped, name, { value: traced(store, fn as AnyFn, `store.${name}`, name, driver, tracer) });
    }
  }
  return wrapped;
}

function traced(store: object, fn: AnyFn, spanName: string, operation: string, driver: string, tracer: Tracer): AnyFn {
  const attributes = { "db.system.name": driver, "db.operation.name": operation };
  return (...args) => {
    const parent = context.active();
    if (trace.getSpan(parent) === undefined) return fn.apply(store, args);
    const span = tracer.startSpan(spanName, { kind: SpanKind.CLIENT, attributes }, parent);
    let result: unknown;
    try {
      result = context.with(trace.setSpan(parent, span), fn, store, ...args);
    } catch (err) {
      fail(span, err);
      throw err;
    }
    if (!(result instanceof Promise)) {
      span.end();
      return result;
    }
    return result.then(
      (value) => {
        span.end();
        return value;
      },
      (err: unknown) => {
        fail(span, err);
        throw err;
      },
    );
  };
}

function fail(span: Span, err: unknown): void {
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.name : "error" });
  span.end();
}
