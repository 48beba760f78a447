/**
 * The broker's Prometheus metrics, in a registry of its own (several brokers
 * in one process, as in the tests, do not share counters), served at
 * `/metrics` on the web port. Names start with `llm_broker_`; the default
 * Node.js process metrics (`process_*`, `nodejs_*`) keep their usual names so
 * the usual dashboards work. No label carries a principal, a DID, a
 * delegation id or anything secret: methods, codes, protocols, systems,
 * outcomes and kinds only, so the series stay few and the page can be
 * scraped without credentials.
 *
 * What is counted on a hot path (RPCs) is kept in rpc-metrics.ts; gauges are
 * read when scraped, from sources the composition root passes in.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { type DelegationEvent, isEndingEvent } from "../domain/index.js";
import type { Logger } from "../logging.js";
import { RpcMetrics } from "./rpc-metrics.js";

/** What the gauges read at scrape time. */
export interface MetricsSources {
  /** ACTIVE delegations, counted in the store (an index-only count over delegations(state, id)). */
  countActive(): Promise<number>;
  /** Open WatchDelegations streams on this replica. */
  watchers(): number;
  /** The audit outbox: events not yet delivered, the oldest one's time, events refused for good, whether delivery fails. */
  audit(): Promise<{ pending: number; oldestPendingTime: number | null; rejected: number; failing: boolean }>;
  /** Consequences of endings not yet carried out, by kind (idp_delete, gsap_revoke). */
  effects(): Promise<Record<string, { pending: number; retrying: number }>>;
}

export interface MetricsOptions {
  /** Epoch milliseconds. By default, Date.now. */
  clock?: () => number;
  log?: Logger;
  /** Include the default Node.js process metrics. By default, true. */
  processMetrics?: boolean;
  /**
   * Shortest time between two counts of ACTIVE delegations. A scrape counts
   * only when a CREATED or ending event was read since the last count, and
   * not more often than this. By default, 5 s.
   */
  activeCountIntervalMs?: number;
}

// Bucket upper bounds, in seconds.
const UPSTREAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const LATENESS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const EFFECT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

/** The metrics of one broker. */
export class BrokerMetrics {
  readonly registry = new Registry();
  /** RPCs by method and code (the observe interceptor feeds it). */
  readonly rpc = new RpcMetrics(this.registry);

  private readonly upstreamTotal: Counter<"system" | "outcome">;
  private readonly upstreamSeconds: Histogram<"system" | "outcome">;
  private readonly lateness: Histogram;
  private readonly effectSeconds: Histogram<"effect">;
  private readonly refusals: Counter<"method" | "reason">;
  private readonly clock: () => number;
  private readonly log: Logger | undefined;
  private activeStale = true;
  private activeCountedAt = Number.NEGATIVE_INFINITY;

  constructor(sources: MetricsSources, options: MetricsOptions = {}) {
    const registers = [this.registry];
    this.clock = options.clock ?? Date.now;
    this.log = options.log;
    const activeIntervalMs = options.activeCountIntervalMs ?? 5_000;
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });

    this.upstreamTotal = new Counter({
      name: "llm_broker_upstream_requests_total",
      help: "HTTP requests to external systems (each attempt), by system and outcome (ok, http_4xx, throttled, http_5xx, timeout, refused, reset, unreachable, dns, error, abandoned: given up at shutdown).",
      labelNames: ["system", "outcome"],
      registers,
    });
    this.upstreamSeconds = new Histogram({
      name: "llm_broker_upstream_request_duration_seconds",
      help: "Duration of HTTP requests to external systems (each attempt, body included), by system and outcome.",
      labelNames: ["system", "outcome"],
      buckets: UPSTREAM_BUCKETS,
      registers,
    });
    this.lateness = new Histogram({
      name: "llm_broker_expiry_lateness_seconds",
      help: "How long after its expire time each delegation was expired (the expiry commit).",
      buckets: LATENESS_BUCKETS,
      registers,
    });
    this.effectSeconds = new Histogram({
      name: "llm_broker_ending_effect_seconds",
      help: "Time from an ending's commit to its consequence being done, by effect (idp_delete, gsap_revoke).",
      labelNames: ["effect"],
      buckets: EFFECT_BUCKETS,
      registers,
    });
    this.refusals = new Counter({
      name: "llm_broker_limit_refusals_total",
      help: "Calls refused by a per-principal limit, by method and reason (RATE_LIMITED, TOO_MANY_WATCHES, TOO_MANY_WATCHES_ON_CONNECTION).",
      labelNames: ["method", "reason"],
      registers,
    });

    const metrics = this;
    new Gauge({
      name: "llm_broker_active_delegations",
      help: "ACTIVE delegations in the store (all replicas): counted when delegations were created or ended since the last count, at most every few seconds.",
      registers,
      async collect() {
        const now = metrics.clock();
        if (!metrics.activeStale || now - metrics.activeCountedAt < activeIntervalMs) return;
        metrics.activeStale = false;
        metrics.activeCountedAt = now;
        const n = await metrics.read("active delegations", () => sources.countActive());
        if (n === undefined) metrics.activeStale = true;
        else this.set(n);
      },
    });
    new Gauge({
      name: "llm_broker_watch_streams",
      help: "Open WatchDelegations streams on this replica.",
      registers,
      collect() {
        this.set(sources.watchers());
      },
    });

    const audit = { pending: 0, oldestAge: 0, rejected: 0, failing: 0 };
    const readAudit = async () => {
      const a = await this.read("audit outbox", () => sources.audit());
      if (!a) return;
      audit.pending = a.pending;
      audit.oldestAge = a.oldestPendingTime === null ? 0 : Math.max(0, (this.clock() - a.oldestPendingTime) / 1000);
      audit.rejected = a.rejected;
      audit.failing = a.failing ? 1 : 0;
    };
    // One read of the outbox per scrape, shared by its four gauges (the first one collected reads it).
    let auditRead: Promise<void> | undefined;
    const auditGauge = (name: string, help: string, pick: (a: typeof audit) => number) =>
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          auditRead ??= readAudit().finally(() => (auditRead = undefined));
          await auditRead;
          this.set(pick(audit));
        },
      });
    auditGauge("llm_broker_audit_outbox_pending", "Events not yet delivered to the audit sink (Chronicle).", (a) => a.pending);
    auditGauge("llm_broker_audit_outbox_oldest_age_seconds", "Age of the oldest event not yet delivered to the audit sink; 0 when none is waiting.", (a) => a.oldestAge);
    auditGauge("llm_broker_audit_outbox_rejected", "Events the audit sink refused for good (kept, not retried).", (a) => a.rejected);
    auditGauge("llm_broker_audit_outbox_failing", "1 while the last delivery attempt failed and events are waiting, else 0.", (a) => a.failing);
    new Gauge({
      name: "llm_broker_ending_effects_pending",
      help: "Consequences of endings not yet carried out, by effect (idp_delete, gsap_revoke); retrying: of those, the ones that failed at least once.",
      labelNames: ["effect", "state"],
      registers,
      async collect() {
        const effects = await metrics.read("ending effects", () => sources.effects());
        if (!effects) return;
        for (const [effect, b] of Object.entries(effects)) {
          this.set({ effect, state: "pending" }, b.pending);
          this.set({ effect, state: "retrying" }, b.retrying);
        }
      },
    });
  }

  /** Counts one upstream HTTP attempt (HttpClient's onAttempt). */
  readonly upstreamAttempt = (system: string, outcome: string, seconds: number): void => {
    this.upstreamTotal.inc({ system, outcome });
    this.upstreamSeconds.observe({ system, outcome }, seconds);
  };

  /** Records how late one expiry was (the use cases' onExpired). */
  readonly expired = (lateMs: number): void => {
    this.lateness.observe(Math.max(0, lateMs) / 1000);
  };

  /** Records the time from an ending to one of its consequences (the workers' onEffectDone). */
  readonly effectDone = (effect: string, latencyMs: number): void => {
    this.effectSeconds.observe({ effect }, Math.max(0, latencyMs) / 1000);
  };

  /** Counts a call a limit refused (limits.ts's onRefusal). */
  readonly limitRefused = (method: string, reason: string): void => {
    this.refusals.inc({ method, reason });
  };

  /** Follows the event log: creations and endings make the count of ACTIVE delegations stale. */
  readonly onEvents = (events: readonly DelegationEvent[]): void => {
    if (this.activeStale) return;
    for (const e of events) {
      if (e.type === "CREATED" || isEndingEvent(e.type)) {
        this.activeStale = true;
        return;
      }
    }
  };

  /** The exposition text. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** The `/metrics` route: GET and HEAD, Prometheus text format. */
  route(): { handle: (req: IncomingMessage, res: ServerResponse) => void } {
    return {
      handle: (req, res) => {
        if (req.method !== "GET" && req.method !== "HEAD") {
          res.writeHead(405, { allow: "GET, HEAD" }).end();
          return;
        }
        this.text().then(
          (text) => {
            res.writeHead(200, {
              "content-type": this.registry.contentType,
              "content-length": Buffer.byteLength(text),
              "cache-control": "no-store",
            });
            res.end(req.method === "HEAD" ? undefined : text);
          },
          (err: unknown) => {
            this.log?.warn({ err }, "metrics could not be collected");
            res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end(req.method === "HEAD" ? undefined : "metrics could not be collected\n");
          },
        );
      },
    };
  }

  /** A source's answer, or undefined (logged) when it fails: the gauge keeps its last value. */
  private async read<T>(what: string, source: () => Promise<T>): Promise<T | undefined> {
    try {
      return await source();
    } catch (err) {
      this.log?.warn({ err }, `metrics: could not read ${what}`);
      return undefined;
    }
  }
}
