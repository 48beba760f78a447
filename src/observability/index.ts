export { startObservability } from "./observability.js";
export type { Observability, ObservabilityOptions } from "./observability.js";
export { BrokerMetrics } from "./metrics.js";
export type { MetricsOptions, MetricsSources } from "./metrics.js";
export { RPC_CODES, codeName } from "./rpc-metrics.js";
export { REQUEST_ID_HEADER, callContextLogger, newRequestId, requestIdFrom } from "./request-context.js";
export { startTracing } from "./tracing.js";
export type { Tracing, TracingOptions } from "./tracing.js";
export { tracedStore } from "./traced-store.js";
