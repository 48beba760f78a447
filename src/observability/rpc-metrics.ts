/**
 * RPC counts and latencies, kept where observing a call costs a few array
 * writes: no label objects, no label hashing, no allocation once a method
 * has seen a code. prom-client's Counter and Histogram do all of that on
 * every observation; these collectors only format at scrape time, in the
 * value shape prom-client's Registry writes out (so the text is the same).
 *
 *   llm_broker_rpc_requests_total{method, code, protocol}   counter
 *   llm_broker_rpc_duration_seconds{method, code}          histogram (unary calls)
 */
import type { Metric, MetricValueWithName, Registry } from "prom-client";

/** gRPC status names by code (Connect's codes are the same numbers). */
export const RPC_CODES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

/** The name of a code; anything out of range is UNKNOWN. */
export function codeName(code: number): string {
  return RPC_CODES[code] ?? "UNKNOWN";
}

/** Upper bounds of the latency buckets, in seconds: 0.5 ms to a minute (the longest deadline by default). */
export const RPC_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** The calls of one method that ended with one code. */
class Cell {
  /** Protocols seen ("grpc", "connect", "grpc-web"), and calls by each. */
  readonly protocols: string[] = [];
  readonly calls: number[] = [];
  /** Timed calls per bucket (not cumulative), the last one past every bound. */
  readonly buckets: Float64Array;
  timed = 0;
  sum = 0;

  constructor(bounds: number) {
    this.buckets = new Float64Array(bounds + 1);
  }
}

/** One method's calls, by code. */
export class RpcMethodMetrics {
  private readonly cells: (Cell | undefined)[] = new Array<Cell | undefined>(RPC_CODES.length).fill(undefined);

  constructor(
    readonly method: string,
    private readonly bounds: readonly number[] = RPC_BUCKETS,
  ) {}

  /** Counts a call that ended with `code`; `seconds` also times it (unary calls). */
  observe(code: number, protocol: string, seconds?: number): void {
    const c = code >= 0 && code < RPC_CODES.length ? code : 2;
    const cell = (this.cells[c] ??= new Cell(this.bounds.length));
    const p = cell.protocols.indexOf(protocol);
    if (p === -1) {
      cell.protocols.push(protocol);
      cell.calls.push(1);
    } else {
      cell.calls[p]!++;
    }
    if (seconds === undefined) return;
    let b = 0;
    while (b < this.bounds.length && seconds > this.bounds[b]!) b++;
    cell.buckets[b]!++;
    cell.timed++;
    cell.sum += seconds;
  }

  /** The counter's values. */
  counts(out: MetricValueWithName<string>[]): void {
    for (const [code, cell] of this.cells.entries()) {
      if (!cell) continue;
      for (const [i, protocol] of cell.protocols.entries()) {
        out.push({ labels: { method: this.method, code: RPC_CODES[code]!, protocol }, value: cell.calls[i]! });
      }
    }
  }

  /** The histogram's values: cumulative buckets, +Inf, sum and count, as prom-client writes them. */
  histogram(name: string, out: MetricValueWithName<string>[]): void {
    for (const [code, cell] of this.cells.entries()) {
      if (!cell || cell.timed === 0) continue;
      const labels = { method: this.method, code: RPC_CODES[code]! };
      let acc = 0;
      for (const [b, le] of this.bounds.entries()) {
        acc += cell.buckets[b]!;
        out.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: acc });
      }
      out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: "+Inf" }, value: cell.timed });
      out.push({ metricName: `${name}_sum`, labels, value: cell.sum });
      out.push({ metricName: `${name}_count`, labels, value: cell.timed });
    }
  }
}

/** The RPC metrics of one broker, registered in its registry. */
export class RpcMetrics {
  private readonly methods = new Map<string, RpcMethodMetrics>();

  constructor(registry: Registry) {
    const counter = "llm_broker_rpc_requests_total";
    const histogram = "llm_broker_rpc_duration_seconds";
    this.register(registry, counter, "RPCs handled, by method, final code and protocol (grpc, connect, grpc-web); a stream counts when it ends.", "counter", (out) => {
      for (const m of this.methods.values()) m.counts(out);
    });
    this.register(registry, histogram, "Time from a unary RPC entering the service to its answer, by method and code.", "histogram", (out) => {
      for (const m of this.methods.values()) m.histogram(histogram, out);
    });
  }

  /** The series of `method` (one per method: look it up once, when building the handler). */
  method(name: string): RpcMethodMetrics {
    let m = this.methods.get(name);
    if (!m) this.methods.set(name, (m = new RpcMethodMetrics(name)));
    return m;
  }

  private register(registry: Registry, name: string, help: string, type: "counter" | "histogram", fill: (out: MetricValueWithName<string>[]) => void): void {
    const get = async () => {
      const values: MetricValueWithName<string>[] = [];
      fill(values);
      return { name, help, type, aggregator: "sum" as const, values };
    };
    // What Registry needs of a metric (name, type, get, reset); not a prom-client class, hence the cast.
    registry.registerMetric({ name, help, type, aggregator: "sum", get, reset() {} } as unknown as Metric);
  }
}
