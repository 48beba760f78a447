/**
 * What soak.ts and its client processes (soak-load.ts, soak-watchers.ts)
 * share: the IPC messages, and the recorder in which a client keeps, per
 * report interval, each RPC's latencies and every outcome, expected or not.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { summarize } from "./stats.js";

/** The delegators the load is spread over (dev auth: the x-delegator-did header). */
export const SOAK_DELEGATORS = Array.from({ length: 8 }, (_, i) => `did:web:example.com/user/soak-${i}`);

/** The load client's settings, from the driver. */
export interface LoadConfig {
  grpcPort: number;
  webPort: number;
  /** Unary RPCs per second, all kinds together. */
  rate: number;
  createsPerS: number;
  ttlMinS: number;
  ttlMaxS: number;
  /** Share of the delegations revoked before their TTL runs out. */
  revokeShare: number;
  /** Calls in flight beyond which the scheduler skips (and counts) a call instead of piling up. */
  maxInFlight: number;
}

/** The watcher client's settings. */
export interface WatchConfig {
  grpcPort: number;
  watchers: number;
  lifeMinS: number;
  lifeMaxS: number;
}

/** Latency of one RPC kind over a window. */
export interface RpcWindow {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** What a client reports for one interval (or, with `total`, for the whole run). */
export interface ClientReport {
  rpc: Record<string, RpcWindow>;
  /** "rpc outcome" -> count: every answer, e.g. "authorize ALLOW", "authorize DENY/prohibited_command". */
  outcomes: Record<string, number>;
  /** Errors and answers the load did not expect: "rpc CODE/REASON" -> count. */
  unexpected: Record<string, number>;
  /** Errors the load provoked or that a race explains (NOT_FOUND of an unknown id, revoking what just expired). */
  expected: Record<string, number>;
  /** The client's own event-loop delay: a client that lags inflates the latencies it measures. */
  clientEventLoopMs: { p99: number; max: number };
  /** Gauges and counters of the client (open watch streams, calls skipped at the in-flight cap, ...). */
  gauges: Record<string, number>;
  /** The first message of each unexpected outcome seen in the interval. */
  samples: Record<string, string>;
  /** CPU seconds (user + system) the client process has used so far. */
  cpuS: number;
}

export type ToClient = { type: "start"; config: LoadConfig | WatchConfig } | { type: "report" } | { type: "stop" };
export type FromClient = { type: "started" } | { type: "report"; report: ClientReport } | { type: "stopped"; report: ClientReport; total: ClientReport };

/** The gRPC code and the broker's reason of an error, e.g. "NOT_FOUND/DELEGATION_NOT_FOUND". */
export function errorKey(err: unknown): string {
  const e = ConnectError.from(err);
  const code = Code[e.code] ?? String(e.code);
  const name = code.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
  let reason = "";
  try {
    reason = e.findDetails(ErrorDetailSchema)[0]?.reason ?? "";
  } catch {
    // A detail that does not decode: the code alone.
  }
  return reason ? `${name}/${reason}` : name;
}

function bump(m: Record<string, number>, key: string, n = 1): void {
  m[key] = (m[key] ?? 0) + n;
}

/** Latencies and outcomes per interval, and for the whole run. */
export class Recorder {
  private window = new Map<string, number[]>();
  private readonly run = new Map<string, number[]>();
  private outcomes: Record<string, number> = {};
  private unexpected: Record<string, number> = {};
  private expected: Record<string, number> = {};
  private samples: Record<string, string> = {};
  private readonly totalOutcomes: Record<string, number> = {};
  private readonly totalUnexpected: Record<string, number> = {};
  private readonly totalExpected: Record<string, number> = {};
  private readonly totalSamples: Record<string, string> = {};
  private readonly delay = monitorEventLoopDelay({ resolution: 10 });
  private runDelayMax = 0;

  constructor() {
    this.delay.enable();
  }

  latency(rpc: string, ms: number): void {
    let w = this.window.get(rpc);
    if (!w) this.window.set(rpc, (w = []));
    w.push(ms);
    let r = this.run.get(rpc);
    if (!r) this.run.set(rpc, (r = []));
    r.push(ms);
  }

  outcome(rpc: string, what: string): void {
    bump(this.outcomes, `${rpc} ${what}`);
    bump(this.totalOutcomes, `${rpc} ${what}`);
  }

  /** An answer or error the load did not expect; `detail` is kept for the first of each kind. */
  bad(rpc: string, what: string, detail = ""): void {
    const key = `${rpc} ${what}`;
    bump(this.unexpected, key);
    bump(this.totalUnexpected, key);
    this.samples[key] ??= detail;
    this.totalSamples[key] ??= detail;
  }

  /** An error the load provoked on purpose, or that a race with an ending explains. */
  fine(rpc: string, what: string): void {
    bump(this.expected, `${rpc} ${what}`);
    bump(this.totalExpected, `${rpc} ${what}`);
  }

  private summaries(from: Map<string, number[]>): Record<string, RpcWindow> {
    const out: Record<string, RpcWindow> = {};
    for (const [rpc, l] of from) {
      const s = summarize(l);
      out[rpc] = { count: s.count, p50Ms: round(s.p50Ms), p99Ms: round(s.p99Ms), maxMs: round(s.maxMs) };
    }
    return out;
  }

  /** The interval's report; starts the next interval. */
  take(gauges: Record<string, number>): ClientReport {
    const report: ClientReport = {
      rpc: this.summaries(this.window),
      outcomes: this.outcomes,
      unexpected: this.unexpected,
      expected: this.expected,
      clientEventLoopMs: { p99: round(this.delay.percentile(99) / 1e6), max: round(this.delay.max / 1e6) },
      gauges,
      samples: this.samples,
      cpuS: cpuSeconds(),
    };
    this.runDelayMax = Math.max(this.runDelayMax, this.delay.max / 1e6);
    this.window = new Map();
    this.outcomes = {};
    this.unexpected = {};
    this.expected = {};
    this.samples = {};
    this.delay.reset();
    return report;
  }

  /** The whole run. */
  total(gauges: Record<string, number>): ClientReport {
    return {
      rpc: this.summaries(this.run),
      outcomes: this.totalOutcomes,
      unexpected: this.totalUnexpected,
      expected: this.totalExpected,
      clientEventLoopMs: { p99: Number.NaN, max: round(this.runDelayMax) },
      gauges,
      samples: this.totalSamples,
      cpuS: cpuSeconds(),
    };
  }
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function uniform(min: number, max: number): number {
  return min + Math.random() * (max - min);
}

export function pick<T>(xs: readonly T[]): T {
  return xs[Math.floor(Math.random() * xs.length)]!;
}

/**
 * The client side of the IPC: `begin` starts the load, `gauges` reads the
 * client's gauges, `end` stops issuing and waits for what is in flight.
 */
export function serveClient<C>(recorder: Recorder, begin: (config: C) => Promise<void>, gauges: () => Record<string, number>, end: () => Promise<void>): void {
  const send = (m: FromClient) => process.send!(m);
  process.on("message", (m: ToClient) => {
    if (m.type === "start") {
      begin(m.config as C).then(
        () => send({ type: "started" }),
        (err: unknown) => {
          console.error(err);
          process.exit(1);
        },
      );
    } else if (m.type === "report") {
      send({ type: "report", report: recorder.take(gauges()) });
    } else if (m.type === "stop") {
      end().then(() => {
        const g = gauges();
        send({ type: "stopped", report: recorder.take(g), total: recorder.total(g) });
        setTimeout(() => process.exit(0), 100);
      });
    }
  });
  process.on("disconnect", () => process.exit(0));
}
