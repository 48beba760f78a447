/**
 * What the broker knows of its own health and of its dependencies', in one
 * report for the gRPC health service and the HTTP probes. Nothing here asks
 * an external system: the store is probed with one cheap read, and the IdP,
 * GSAP and Chronicle are judged from what the background work already
 * recorded (a consequence worker whose last run failed with work waiting,
 * an audit outbox whose last delivery failed).
 *
 * However many probes ask, the report is made at most once per `maxAgeMs`
 * (one read in flight at a time); while someone watches it is remade every
 * `pollMs` and handed to the watchers.
 */
import type { Logger } from "../logging.js";

/** The dependencies reported on. */
export const DEPENDENCIES = ["store", "idp", "gsap", "audit"] as const;
export type Dependency = (typeof DEPENDENCIES)[number];

/** ok; failing (the broker saw it fail); unknown (it could not tell: the store, where that is recorded, did not answer). */
export type DependencyStatus = "ok" | "failing" | "unknown";

/** The background work as health reads it (src/background.ts `Background` satisfies it). */
export interface BackgroundView {
  health(): Promise<{
    loops: readonly { name: string; failures: number }[];
    consequences: Record<"idp_delete" | "gsap_revoke", { pending: number; failing: boolean }>;
  }>;
  outbox: {
    health(): Promise<{ pending: number; oldestPendingTime: number | null; rejected: number; failing: boolean }>;
    /** The last delivery attempt failed (fail-closed creates are refused while it is). */
    readonly failing: boolean;
  };
}

export interface HealthInputs {
  /** `headRevision()` needs the store reachable and its schema migrated (the broker_meta row), and is one point read. */
  store: { headRevision(): Promise<unknown> };
  background: BackgroundView;
  /** AUDIT_FAIL_CLOSED: creates are refused while audit delivery fails. */
  failClosed: boolean;
}

export interface HealthOptions {
  /** How old a report may be when asked for. By default, 500 ms. */
  maxAgeMs?: number;
  /** How often the report is remade while someone watches. By default, 1 s. */
  pollMs?: number;
  /** How long a store read may take before it counts as failed. By default, 2 s. */
  timeoutMs?: number;
  /** Told when the broker starts or stops serving, or being ready. */
  log?: Logger;
}

export interface HealthReport {
  /** When it was made (ms since the epoch). */
  time: number;
  /** The store answers with its schema in place: RPCs can be served. */
  serving: boolean;
  /** Fail-closed audit is refusing creates now. */
  refusingCreates: boolean;
  /** Serving and not refusing creates: /readyz. */
  ready: boolean;
  dependencies: Record<Dependency, DependencyStatus>;
  /** Work waiting for the IdP and GSAP (endings not yet carried out); null when unknown. */
  pending: { idp: number | null; gsap: number | null };
  /** The audit outbox's backlog; null when unknown. */
  outbox: { pending: number; oldestPendingTime: number | null; rejected: number } | null;
}

/** Someone following the reports (a Watch stream). */
export interface HealthWatcher {
  report(r: HealthReport): void;
  /** The monitor closed (shutdown): the watch ends. */
  closed(): void;
}

/** `p`, or a rejection after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** The broker's health report, made on demand (cached) and pushed to watchers. */
export class HealthMonitor {
  private readonly maxAgeMs: number;
  private readonly pollMs: number;
  private readonly timeoutMs: number;
  private current: HealthReport | undefined;
  /** performance.now() of the current report (its age never depends on a test's clock). */
  private madeAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<HealthReport> | undefined;
  private readonly watchers = new Set<HealthWatcher>();
  private timer: NodeJS.Timeout | undefined;
  private isClosed = false;

  constructor(
    private readonly inputs: HealthInputs,
    private readonly options: HealthOptions = {},
  ) {
    this.maxAgeMs = options.maxAgeMs ?? 500;
    this.pollMs = options.pollMs ?? 1000;
    this.timeoutMs = options.timeoutMs ?? 2000;
  }

  /** Whether close() was called (shutdown). */
  get closed(): boolean {
    return this.isClosed;
  }

  /** The last report made, without waiting (undefined before the first). */
  get last(): HealthReport | undefined {
    return this.current;
  }

  /** A report no older than `maxAgeMs`, made now if need be. Never rejects. */
  report(): Promise<HealthReport> {
    // After close() every report says not serving, at once (making one then reads nothing).
    if (!this.isClosed && this.current && performance.now() - this.madeAt < this.maxAgeMs) return Promise.resolve(this.current);
    return this.refresh();
  }

  /** Makes a new report (joining one being made) and hands it to the watchers. */
  refresh(): Promise<HealthReport> {
    this.inflight ??= this.make().then((r) => {
      this.inflight = undefined;
      this.publish(r);
      return r;
    });
    return this.inflight;
  }

  /** Follows the reports until the returned function is called or the monitor closes. */
  watch(w: HealthWatcher): () => void {
    if (this.isClosed) {
      w.closed();
      return () => undefined;
    }
    this.watchers.add(w);
    this.timer ??= setInterval(() => void this.refresh(), this.pollMs).unref();
    return () => {
      this.watchers.delete(w);
      if (this.watchers.size === 0) this.stopPolling();
    };
  }

  /** Shutdown: every report from now on is not serving, and every watch ends. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.stopPolling();
    const watchers = [...this.watchers];
    this.watchers.clear();
    for (const w of watchers) w.closed();
  }

  private stopPolling(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private publish(r: HealthReport): void {
    const before = this.current;
    this.current = r;
    this.madeAt = performance.now();
    const log = this.options.log;
    if (log && before && before.serving !== r.serving) {
      if (r.serving) log.info("health: the store answers again; serving");
      else log.warn("health: the store does not answer (unreachable, or not migrated); not serving");
    }
    if (log && before && before.refusingCreates !== r.refusingCreates) {
      if (r.refusingCreates) log.warn("health: fail-closed audit is failing; not ready (creates are refused)");
      else log.info("health: fail-closed audit delivers again; ready");
    }
    for (const w of [...this.watchers]) w.report(r);
  }

  private async make(): Promise<HealthReport> {
    const { store, background, failClosed } = this.inputs;
    const time = Date.now();
    const serving = !this.isClosed && (await within(store.headRevision(), this.timeoutMs, "the store").then(() => true, () => false));
    // What the loops recorded lives in the store too: without it, the dependencies are unknown.
    const [work, audit] = serving
      ? await Promise.all([
          within(background.health(), this.timeoutMs, "the store").catch(() => undefined),
          within(background.outbox.health(), this.timeoutMs, "the store").catch(() => undefined),
        ])
      : [undefined, undefined];
    const judge = (failing: boolean | undefined): DependencyStatus => (failing === undefined ? "unknown" : failing ? "failing" : "ok");
    // A failed orphan-sweep run is most likely the IdP's listing failing (a store failure mid-run would count too).
    const sweepFailing = work?.loops.some((l) => l.name === "orphan-sweep" && l.failures > 0);
    const refusingCreates = failClosed && background.outbox.failing;
    return {
      time,
      serving,
      refusingCreates,
      ready: serving && !refusingCreates,
      dependencies: {
        store: this.isClosed ? "unknown" : serving ? "ok" : "failing",
        idp: judge(work && (work.consequences.idp_delete.failing || sweepFailing === true)),
        gsap: judge(work?.consequences.gsap_revoke.failing),
        audit: judge(audit && (audit.failing || refusingCreates)),
      },
      pending: { idp: work?.consequences.idp_delete.pending ?? null, gsap: work?.consequences.gsap_revoke.pending ?? null },
      outbox: audit ? { pending: audit.pending, oldestPendingTime: audit.oldestPendingTime, rejected: audit.rejected } : null,
    };
  }
}
