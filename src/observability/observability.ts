/**
 * Metrics, tracing and call context of one broker, built from settings for
 * the composition root: what the RPC interceptor, the HTTP clients, the
 * store and the use cases each get. With METRICS_ENABLED=false and no OTLP
 * endpoint, every part is absent and the hot path does no work for it.
 */
import { ROOT_CONTEXT, context } from "@opentelemetry/api";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import type { HttpInstrumentation } from "../clients/http/http-client.js";
import type { Settings } from "../config/settings.js";
import type { Logger } from "../logging.js";
import { BrokerMetrics, type MetricsSources } from "./metrics.js";
import { callContextLogger } from "./request-context.js";
import type { RpcMetrics } from "./rpc-metrics.js";
import { tracedStore } from "./traced-store.js";
import { type Tracing, startTracing } from "./tracing.js";

export interface ObservabilityOptions {
  log: Logger;
  clock?: () => number;
  /** What the gauges read (called at scrape time only). */
  sources: MetricsSources;
  /** Export spans here (tests), whether or not an OTLP endpoint is set. */
  spanExporter?: SpanExporter | undefined;
}

export interface Observability {
  /** Undefined with METRICS_ENABLED=false. */
  readonly metrics: BrokerMetrics | undefined;
  readonly tracing: Tracing;
  /** For the `observe` interceptor. */
  readonly calls: {
    log: Logger;
    metrics: RpcMetrics | undefined;
    tracer: Tracing["tracer"];
    propagator: Tracing["propagator"];
    contextual: boolean;
  };
  /** For the HttpClients the drivers build (withHttpInstrumentation); undefined when there is nothing to observe. */
  readonly http: HttpInstrumentation | undefined;
  /** Extra web routes: /metrics. */
  readonly routes: Record<string, { handle: ReturnType<BrokerMetrics["route"]>["handle"] }>;
  /** The store the use cases get: with a span per call under the active span when tracing is on. */
  traced<S extends { driver: string }>(store: S): S;
  /** The logger the use cases get: with the call's request id when calls run in an async context. */
  callLog(log: Logger): Logger;
  /**
   * `fn`, run outside any call's context. For what a call sets going but
   * does not own (a commit waking the log follower, and through it every
   * background loop): in the call's context its spans and log lines would be
   * the call's, long after it answered.
   */
  detached<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R;
  /** `source`, whose commit listeners run detached. */
  detachedCommits<S extends { onCommit(listener: (revision: bigint) => void): () => void }>(source: S): { onCommit: S["onCommit"] };
  /** `hook` and the metric's observer, both told. */
  onExpired(hook?: (lateMs: number) => void): ((lateMs: number) => void) | undefined;
  onEffectDone<K extends string>(hook?: (kind: K, latencyMs: number) => void): ((kind: K, latencyMs: number) => void) | undefined;
  /** Flushes spans; call last when stopping. */
  shutdown(): Promise<void>;
}

/** Builds what the settings ask for. */
export async function startObservability(settings: Settings, o: ObservabilityOptions): Promise<Observability> {
  const s = settings.observability;
  const tracing = await startTracing({
    otlpTracesUrl: s.otlpTracesUrl,
    serviceName: s.serviceName,
    callContext: s.logRequestContext,
    log: o.log,
    ...(o.spanExporter ? { exporter: o.spanExporter } : {}),
  });
  const metrics = s.metricsEnabled ? new BrokerMetrics(o.sources, { log: o.log, ...(o.clock ? { clock: o.clock } : {}) }) : undefined;
  const { tracer, propagator } = tracing;
  const upstream = metrics?.upstreamAttempt;
  const detached = <A extends unknown[], R>(fn: (...args: A) => R): ((...args: A) => R) =>
    tracing.contextual ? (...args: A) => context.with(ROOT_CONTEXT, fn, undefined, ...args) : fn;
  return {
    metrics,
    tracing,
    calls: { log: o.log, metrics: metrics?.rpc, tracer, propagator, contextual: tracing.contextual },
    http: tracer || upstream ? { tracer, propagator, onAttempt: upstream } : undefined,
    routes: metrics ? { "/metrics": metrics.route() } : {},
    traced: (store) => (tracer ? tracedStore(store, tracer, store.driver) : store),
    callLog: (log) => (tracing.contextual ? callContextLogger(log) : log),
    detached,
    detachedCommits: (source) => ({ onCommit: (listener) => source.onCommit(detached(listener)) }),
    onExpired(hook) {
      const observe = metrics?.expired;
      if (!observe || !hook) return observe ?? hook;
      return (lateMs) => {
        observe(lateMs);
        hook(lateMs);
      };
    },
    onEffectDone(hook) {
      const observe = metrics?.effectDone;
      if (!observe || !hook) return observe ?? hook;
      return (kind, latencyMs) => {
        observe(kind, latencyMs);
        hook(kind, latencyMs);
      };
    },
    shutdown: () => tracing.shutdown(),
  };
}
