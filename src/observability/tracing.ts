/**
 * OpenTelemetry tracing. The code everywhere speaks `@opentelemetry/api`;
 * this file alone starts the SDK, and only when spans have somewhere to go:
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (or `OTEL_EXPORTER_OTLP_ENDPOINT`,
 * plus `/v1/traces`) for OTLP over HTTP with a batch processor, or an
 * exporter a test injects. Otherwise there is no tracer at all: callers test
 * for it once, when they are built, and create nothing per call.
 *
 * The tracer belongs to this broker's provider and is passed to whoever
 * makes spans (the RPC interceptor, the traced store, the HTTP clients), so
 * two brokers in one process keep their spans apart. Only the context
 * manager (which context is active across awaits) is process-wide, as
 * OpenTelemetry makes it; the first one registered stays.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { type Context, type ContextManager, ROOT_CONTEXT, type TextMapPropagator, type Tracer, context } from "@opentelemetry/api";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import type { Logger } from "../logging.js";

export interface TracingOptions {
  /** OTLP/HTTP traces URL; "" sends spans nowhere (no tracer, unless `exporter`). */
  otlpTracesUrl: string;
  /** service.name of every span. */
  serviceName: string;
  /** service.version, when known. */
  serviceVersion?: string;
  /** Export to this instead, each span as it ends (tests: an InMemorySpanExporter). */
  exporter?: SpanExporter;
  /** Run calls in an async context even without tracing, for the call's fields on every log line (LOG_REQUEST_CONTEXT). */
  callContext?: boolean;
  log?: Logger;
}

export interface Tracing {
  /** This broker's tracer; undefined when tracing is off. */
  readonly tracer: Tracer | undefined;
  /** W3C trace context (traceparent, tracestate); undefined when tracing is off. */
  readonly propagator: TextMapPropagator | undefined;
  /** Whether calls run inside an async context (spans and call fields follow every await). */
  readonly contextual: boolean;
  /** Exports the spans still buffered, then stops. */
  shutdown(): Promise<void>;
}

/** Starts tracing as `options` say: the SDK when spans have somewhere to go, else nothing. */
export async function startTracing(options: TracingOptions): Promise<Tracing> {
  const exporting = options.exporter !== undefined || options.otlpTracesUrl !== "";
  const contextual = exporting || options.callContext === true;
  if (contextual) useAsyncContext();
  if (!exporting) return { tracer: undefined, propagator: undefined, contextual, shutdown: async () => {} };

  // Loaded only when tracing is on (the SDK takes a few hundred ms to import).
  const [{ core, resources }, base] = await Promise.all([import("@opentelemetry/sdk-node"), import("@opentelemetry/sdk-trace-base")]);
  let processor;
  if (options.exporter) {
    processor = new base.SimpleSpanProcessor(options.exporter);
  } else {
    const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
    processor = new base.BatchSpanProcessor(new OTLPTraceExporter({ url: options.otlpTracesUrl }));
  }
  // OTEL_RESOURCE_ATTRIBUTES adds to the resource; OTEL_SERVICE_NAME (the setting) names the service.
  const resource = resources
    .defaultResource()
    .merge(resources.detectResources({ detectors: [resources.envDetector] }))
    .merge(
      resources.resourceFromAttributes({
        "service.name": options.serviceName,
        ...(options.serviceVersion ? { "service.version": options.serviceVersion } : {}),
      }),
    );
  // The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
  const provider = new base.BasicTracerProvider({ resource, spanProcessors: [processor] });
  options.log?.info({ exporter: options.exporter ? "injected" : options.otlpTracesUrl, serviceName: options.serviceName }, "tracing on");
  return {
    tracer: provider.getTracer("llm-principal-broker", options.serviceVersion),
    propagator: new core.W3CTraceContextPropagator(),
    contextual,
    async shutdown() {
      try {
        await provider.shutdown();
      } catch (err) {
        options.log?.warn({ err }, "tracing: spans could not be flushed at shutdown");
      }
    },
  };
}

/**
 * The active context across awaits, on AsyncLocalStorage (what
 * @opentelemetry/context-async-hooks does, without its EventEmitter
 * patching, which nothing here needs).
 */
class AsyncContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();

  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.storage.run(ctx, thisArg === undefined ? fn : fn.bind(thisArg), ...args);
  }

  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== "function") return target;
    const fn = target as unknown as (...a: unknown[]) => unknown;
    return ((...args: unknown[]) => this.with(ctx, fn, undefined, ...args)) as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.storage.disable();
    return this;
  }
}

let asyncContext = false;

/** Makes context.active() follow awaits, process-wide (a manager someone else registered first is kept). */
function useAsyncContext(): void {
  if (asyncContext) return;
  asyncContext = true;
  // false when one is registered already (another SDK in the process): it serves as well.
  context.setGlobalContextManager(new AsyncContextManager());
}
