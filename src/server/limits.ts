/**
 * Per-principal limits applied as an interceptor (after authentication, so
 * the caller is known): rate limits on Create and Authorize, a cap on how
 * long a unary call may run, and on Watch streams open per principal (a
 * service principal has its own, larger allowance) and per HTTP/2
 * connection. Message size and HTTP/2 streams per connection are the
 * listeners' job (create-server.ts); the per-connection Watch limit stays
 * below the latter, so a stream past it is refused instead of waiting.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { Settings } from "../config/settings.js";
import { BrokerError } from "../domain/index.js";
import type { Principal } from "../domain/index.js";
import { DelegationService } from "../gen/llmbroker/v1/delegation_service_pb.js";
import type { Logger } from "../logging.js";
import type { Interceptor } from "./interceptors.js";
import { connectionKey, principalOf } from "./principal.js";
import { RateLimiter } from "./rate-limiter.js";

type AnyHandler = Parameters<Interceptor>[0];

export interface LimitsOptions {
  /** Milliseconds from a monotonic clock, for the rate limiters. By default, performance.now. */
  clock?: () => number;
  /** Most principals whose rate buckets are kept per method. By default, 100,000. */
  maxTrackedPrincipals?: number;
  /** Told of each call a limit refuses, with the method and the reason (RATE_LIMITED, TOO_MANY_WATCHES, …), for the metrics. */
  onRefusal?: (method: string, reason: string) => void;
}

/**
 * Whom a limit counts against: the caller's DID; an agent (no DID) by its
 * OAuth client; otherwise the admin or anonymous caller as one principal each.
 */
export function limitKey(p: Principal): string {
  if (p.did !== "") return p.did;
  if (p.clientId) return `client:${p.clientId}`;
  return p.admin ? "admin" : "anonymous";
}

/** The limits interceptor for `settings.limits`. */
export function limits(settings: Settings["limits"], log: Logger, options: LimitsOptions = {}): Interceptor {
  const bucketOptions = { maxKeys: options.maxTrackedPrincipals ?? 100_000, ...(options.clock ? { clock: options.clock } : {}) };
  // Burst = one period's allowance: a caller idle for a minute may create createPerMinute at once.
  const rates = new Map<DescMethod, { limiter: RateLimiter; allowance: string }>([
    [
      DelegationService.method.createDelegation,
      {
        limiter: new RateLimiter({ ratePerSecond: settings.createPerMinute / 60, burst: settings.createPerMinute, ...bucketOptions }),
        allowance: `${settings.createPerMinute} per minute`,
      },
    ],
    [
      DelegationService.method.authorizeCommand,
      {
        limiter: new RateLimiter({ ratePerSecond: settings.authorizePerSecond, burst: settings.authorizePerSecond, ...bucketOptions }),
        allowance: `${settings.authorizePerSecond} per second`,
      },
    ],
  ]);
  const onRefusal = options.onRefusal;
  const countWatch = watchLimits(settings);
  const openWatch = onRefusal
    ? (ctx: HandlerContext) => {
        try {
          return countWatch(ctx);
        } catch (err) {
          if (err instanceof BrokerError) onRefusal(DelegationService.method.watchDelegations.name, err.reason);
          throw err;
        }
      }
    : countWatch;

  const interceptor: Interceptor = (next, method, streaming) => {
    if (streaming) {
      if (method !== DelegationService.method.watchDelegations) return next;
      return async function* (req, ctx) {
        const release = openWatch(ctx);
        try {
          yield* next(req, ctx) as AsyncIterable<unknown>;
        } finally {
          // Runs however the stream ends: completion, error, client cancel
          // (the transport returns the generator), or shutdown (the signal ends the watch).
          release();
        }
      };
    }
    const rate = rates.get(method);
    const capped = capDeadline(next, method.name, settings.maxDeadlineMs, log);
    if (!rate) return capped;
    return async (req, ctx) => {
      const r = rate.limiter.take(limitKey(principalOf(ctx)));
      if (!r.ok) {
        onRefusal?.(method.name, "RATE_LIMITED");
        throw new BrokerError(
          "RESOURCE_EXHAUSTED",
          "RATE_LIMITED",
          `${method.name} is limited to ${rate.allowance} per caller; retry in ${(Math.ceil(r.retryAfterMs / 100) / 10).toFixed(1)} s`,
          { metadata: { retry_after_ms: String(r.retryAfterMs) } },
        );
      }
      return capped(req, ctx);
    };
  };
  // As hooks for `intercept`: a Watch stream counts from its start until it ends, however it ends.
  interceptor.stream = {
    open: (_req, ctx, method) => (method === DelegationService.method.watchDelegations ? openWatch(ctx) : undefined),
  };
  return interceptor;
}

/**
 * Counts a Watch stream against its caller (a service principal against its
 * own allowance) and its connection; returns the release, or throws
 * RESOURCE_EXHAUSTED naming the limit.
 */
function watchLimits(settings: Settings["limits"]): (ctx: HandlerContext) => () => void {
  const principals = new StreamCounter();
  const connections = new StreamCounter();
  return (ctx) => {
    const p = principalOf(ctx);
    const service = p.admin;
    const key = service ? `service:${p.clientId || p.did || "dev"}` : limitKey(p);
    const releasePrincipal = principals.acquire(
      key,
      service ? settings.watchStreamsPerService : settings.watchStreamsPerPrincipal,
      service
        ? ["TOO_MANY_WATCHES", "per service principal", "LIMIT_WATCH_STREAMS_PER_SERVICE"]
        : ["TOO_MANY_WATCHES", "per caller", "LIMIT_WATCH_STREAMS_PER_PRINCIPAL"],
    );
    const connection = ctx.values.get(connectionKey);
    if (connection === undefined) return releasePrincipal;
    let releaseConnection: () => void;
    try {
      releaseConnection = connections.acquire(connection, settings.watchStreamsPerConnection, [
        "TOO_MANY_WATCHES_ON_CONNECTION",
        "per connection (open another connection for more)",
        "LIMIT_WATCH_STREAMS_PER_CONNECTION",
      ]);
    } catch (err) {
      releasePrincipal();
      throw err;
    }
    return () => {
      releasePrincipal();
      releaseConnection();
    };
  };
}

/** Counts open streams per key; `acquire` refuses beyond the limit. */
class StreamCounter {
  // Only keys with an open stream have an entry.
  private readonly open = new Map<string, number>();

  /** Counts one more stream for `key`, or throws; returns the release (idempotent). */
  acquire(key: string, limit: number, [reason, per, setting]: [string, string, string]): () => void {
    const n = this.open.get(key) ?? 0;
    if (n >= limit) {
      throw new BrokerError("RESOURCE_EXHAUSTED", reason, `at most ${limit} WatchDelegations streams may be open ${per}; close one first`, {
        metadata: { limit: String(limit), setting },
      });
    }
    this.open.set(key, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.open.get(key) ?? 1) - 1;
      if (left <= 0) this.open.delete(key);
      else this.open.set(key, left);
    };
  }
}

/**
 * Runs a unary handler under `maxMs` when the client asked for no deadline
 * or a longer one. The transports abort ctx.signal only for the client's own
 * deadline, and it cannot be aborted from here, so the handler gets a context
 * whose signal and timeoutMs reflect the cap. At the cap the caller gets
 * DEADLINE_EXCEEDED at once, while work that does not watch the signal (the
 * use cases take none today) runs to its end in the background, as it would
 * after a client's own deadline. Creates are then compensated by their own
 * failure paths or left as they finished, which a retry with the same
 * request_id replays.
 *
 * Every call passes here, so it costs little: one sweep timer for all the
 * calls in flight (at an eighth of the cap, at most a second, late), the
 * capped signal made only if the handler reads it, one promise.
 */
function capDeadline(next: AnyHandler, rpc: string, maxMs: number, log: Logger): AnyHandler {
  const sweeper = new DeadlineSweeper(Math.min(1000, Math.max(10, Math.floor(maxMs / 8))));
  const expired = () =>
    new BrokerError(
      "DEADLINE_EXCEEDED",
      "DEADLINE_CAPPED",
      `${rpc} did not finish within the server's limit of ${maxMs / 1000} s; its outcome is unknown (retry a mutation with the same request_id)`,
      { metadata: { max_deadline_ms: String(maxMs) } },
    );
  return (req, ctx) => {
    const clientMs = ctx.timeoutMs();
    if (clientMs !== undefined && clientMs <= maxMs) return next(req, ctx);
    return new Promise((resolve, reject) => {
      const capped = new CappedCall(ctx, Date.now() + maxMs, performance.now(), resolve, reject, expired, rpc, log);
      sweeper.add(capped);
      let work: unknown;
      try {
        work = next(req, capped);
      } catch (err) {
        capped.settle(false, err, sweeper);
        return;
      }
      Promise.resolve(work).then(
        (value) => capped.settle(true, value, sweeper),
        (err: unknown) => capped.settle(false, err, sweeper),
      );
    });
  };
}

/** The calls under a cap, checked by one timer while any is in flight. */
class DeadlineSweeper {
  private readonly calls = new Set<CappedCall>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly everyMs: number) {}

  add(call: CappedCall): void {
    this.calls.add(call);
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), this.everyMs);
      this.timer.unref();
    }
  }

  delete(call: CappedCall): void {
    this.calls.delete(call);
  }

  private sweep(): void {
    if (this.calls.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const now = Date.now();
    for (const call of this.calls) {
      if (call.capAt > now) continue;
      this.calls.delete(call);
      call.expire();
    }
  }
}

/**
 * A call under the cap, and the context its handler gets: the caller's, with
 * the cap's signal and time left (a class with getters: copying a context
 * with Object.create and property descriptors costs more than the call).
 */
class CappedCall implements HandlerContext {
  private controller: AbortController | undefined;
  private expiredWith: BrokerError | undefined;
  private done = false;

  constructor(
    private readonly ctx: HandlerContext,
    readonly capAt: number,
    private readonly start: number,
    private readonly resolve: (value: unknown) => void,
    private readonly reject: (err: unknown) => void,
    private readonly expired: () => BrokerError,
    private readonly rpc: string,
    private readonly log: Logger,
  ) {}

  get method() {
    return this.ctx.method;
  }
  get service() {
    return this.ctx.service;
  }
  get requestMethod() {
    return this.ctx.requestMethod;
  }
  get requestHeader() {
    return this.ctx.requestHeader;
  }
  get responseHeader() {
    return this.ctx.responseHeader;
  }
  get responseTrailer() {
    return this.ctx.responseTrailer;
  }
  get protocolName() {
    return this.ctx.protocolName;
  }
  get values() {
    return this.ctx.values;
  }
  get url() {
    return this.ctx.url;
  }

  readonly timeoutMs = (): number => Math.max(0, this.capAt - Date.now());

  /** Aborts at the cap, or with the caller's signal. */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.expiredWith) this.controller.abort(this.expiredWith);
      else if (this.ctx.signal.aborted) this.follow();
      else this.ctx.signal.addEventListener("abort", this.follow, { once: true });
    }
    return this.controller.signal;
  }

  private readonly follow = (): void => this.controller!.abort(this.ctx.signal.reason);

  /** The cap is reached: the caller is answered now; the work goes on unobserved. */
  expire(): void {
    if (this.done) return;
    this.expiredWith = this.expired();
    this.controller?.abort(this.expiredWith);
    this.reject(this.expiredWith);
  }

  settle(ok: boolean, value: unknown, sweeper: DeadlineSweeper): void {
    if (this.done) return;
    this.done = true;
    sweeper.delete(this);
    if (this.controller) this.ctx.signal.removeEventListener("abort", this.follow);
    if (this.expiredWith) {
      // The caller has its answer; say how the abandoned work ended, for the operator.
      const ms = Math.round(performance.now() - this.start);
      if (ok) this.log.warn({ rpc: this.rpc, ms }, "call succeeded after its deadline cap; the caller was told DEADLINE_EXCEEDED");
      else this.log.warn({ rpc: this.rpc, ms, err: value }, "call failed after its deadline cap");
      return;
    }
    if (ok) this.resolve(value);
    else this.reject(value);
  }
}
