/**
 * Outbound HTTP for every external system (Keycloak, Graph/Entra, GSAP,
 * Chronicle), on undici. One policy for all of them:
 *
 * - every attempt has a deadline (AbortSignal.timeout; undici's own header and
 *   body timers tick at one-second resolution), and the whole call has one too;
 * - retries are bounded and only where repeating is safe: idempotent methods,
 *   or any method when the request provably was not processed (connection
 *   refused, or 429 Too Many Requests);
 * - 429 and 503 honour Retry-After (seconds or HTTP date), capped;
 * - backoff is exponential with full jitter;
 * - failures are UpstreamErrors (the domain's type: system, failure,
 *   retryable); 4xx answers are returned for the driver to interpret;
 * - each attempt is observed (HttpInstrumentation): a client span whose W3C
 *   `traceparent` goes out in the request headers, and its outcome and
 *   duration for the metrics. Without instrumentation nothing is added.
 */
import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { type Attributes, type Span, SpanKind, SpanStatusCode, type TextMapPropagator, type Tracer, context, trace } from "@opentelemetry/api";
import { Agent, type Dispatcher, request } from "undici";
import { UpstreamError } from "../../domain/index.js";

export { UpstreamError };

export interface HttpClientOptions {
  /** Names the system in errors and logs: keycloak, graph, gsap, chronicle. */
  system: string;
  /** Deadline of one attempt. By default, 10 s. */
  timeoutMs?: number;
  /** Deadline of the whole call, retries included. By default, 30 s. */
  deadlineMs?: number;
  /** Retries after the first attempt. By default, 3. */
  maxRetries?: number;
  /** First backoff. By default, 200 ms. */
  minBackoffMs?: number;
  /** Longest backoff, and the cap on Retry-After. By default, 5 s. */
  maxBackoffMs?: number;
  /** Extra CA certificates (PEM) to trust for TLS, e.g. a private CA, in addition to the public roots. */
  ca?: string;
  /** Replaces the connection pool (tests). */
  dispatcher?: Dispatcher;
  /** Sleep function (tests). By default, setTimeout. */
  sleep?: (ms: number) => Promise<void>;
  /** Spans and metrics of each attempt. By default, those of the enclosing withHttpDefaults, else none. */
  instrumentation?: HttpInstrumentation;
  /**
   * When it aborts, the client gives up: requests in flight are cancelled, no
   * retry or backoff starts, and every call rejects with a retryable
   * UpstreamError (the work stays where it was stored, for the next run). The
   * broker aborts it at the end of its shutdown grace. By default, that of
   * the enclosing withHttpDefaults, else none.
   */
  abandon?: AbortSignal;
}

/**
 * What one attempt came to: an answer (ok: below 400; throttled: 429;
 * http_4xx; http_5xx) or no answer (timeout, refused, reset: the connection
 * dropped, unreachable, dns, error: anything else; abandoned: given up at
 * shutdown).
 */
export type UpstreamOutcome =
  | "ok"
  | "http_4xx"
  | "throttled"
  | "http_5xx"
  | "timeout"
  | "refused"
  | "reset"
  | "unreachable"
  | "dns"
  | "error"
  | "abandoned";

/** How outbound calls are observed (the composition root provides it). */
export interface HttpInstrumentation {
  /** Makes a client span per attempt, a child of the active span. */
  tracer?: Tracer | undefined;
  /** Writes the span's trace context (traceparent) into the request headers. */
  propagator?: TextMapPropagator | undefined;
  /** Told of every attempt, with its outcome and duration in seconds. */
  onAttempt?: ((system: string, outcome: UpstreamOutcome, seconds: number) => void) | undefined;
}

/** What the composition root gives every HttpClient the drivers build. */
export interface HttpDefaults {
  instrumentation?: HttpInstrumentation | undefined;
  abandon?: AbortSignal | undefined;
}

let ambient: HttpDefaults = {};

/**
 * Runs `build` (synchronously) so that every HttpClient constructed during it
 * gets `defaults` where its options name none: the drivers' factories build
 * their clients from settings alone, and this lets the composition root
 * observe them and abandon their calls at shutdown without threading either
 * through each one.
 */
export function withHttpDefaults<T>(defaults: HttpDefaults, build: () => T): T {
  const previous = ambient;
  ambient = defaults;
  try {
    return build();
  } finally {
    ambient = previous;
  }
}

export interface HttpRequest {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** Absolute URL. */
  url: string;
  headers?: Record<string, string>;
  /** Sent as application/json. */
  json?: unknown;
  /** Sent as application/x-www-form-urlencoded. */
  form?: Record<string, string>;
  /** Raw body with its own content-type header. */
  body?: string;
  /** Whether repeating the request is harmless. By default, true for GET, PUT and DELETE. */
  idempotent?: boolean;
  timeoutMs?: number;
  /**
   * Resolve with the last answer when retries of a 429/5xx run out, instead
   * of rejecting: for callers that read the answer themselves (MSAL throttles
   * on its status and Retry-After).
   */
  acceptRetryableStatus?: boolean;
}

export interface HttpResponse {
  status: number;
  /** Lower-case header names. */
  headers: Record<string, string>;
  text: string;
}

const IDEMPOTENT = new Set(["GET", "PUT", "DELETE"]);
const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);
// The connection never carried the request: safe to repeat any method.
const NOT_SENT = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "UND_ERR_CONNECT_TIMEOUT"]);
const NETWORK = new Set([...NOT_SENT, "ECONNRESET", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED"]);

function errorCode(err: unknown): string {
  let e = err as { code?: string; cause?: unknown } | undefined;
  for (let i = 0; e && i < 4; i++) {
    if (typeof e.code === "string") return e.code;
    e = e.cause as typeof e;
  }
  return "";
}

function isTimeout(err: unknown): boolean {
  const name = (err as { name?: string })?.name;
  return name === "TimeoutError" || errorCode(err) === "UND_ERR_HEADERS_TIMEOUT" || errorCode(err) === "UND_ERR_BODY_TIMEOUT";
}

function statusOutcome(status: number): UpstreamOutcome {
  if (status < 400) return "ok";
  if (status === 429) return "throttled";
  return status < 500 ? "http_4xx" : "http_5xx";
}

const ERROR_OUTCOMES: Record<string, UpstreamOutcome> = {
  ECONNREFUSED: "refused",
  UND_ERR_CONNECT_TIMEOUT: "timeout",
  ENOTFOUND: "dns",
  EAI_AGAIN: "dns",
  EHOSTUNREACH: "unreachable",
  ENETUNREACH: "unreachable",
  ECONNRESET: "reset",
  EPIPE: "reset",
  UND_ERR_SOCKET: "reset",
  UND_ERR_CLOSED: "reset",
};

function errorOutcome(err: unknown): UpstreamOutcome {
  return isTimeout(err) ? "timeout" : (ERROR_OUTCOMES[errorCode(err)] ?? "error");
}

/** Milliseconds to wait from a Retry-After header (delta-seconds or HTTP-date), or undefined. */
export function retryAfterMs(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // An HTTP-date names its day and month ("Sun, 06 Nov 1994 08:49:37 GMT"). Date.parse alone
  // would also take "1.5" or "-1" as (distant past) dates and retry at once.
  if (!/^[A-Za-z]{3}/.test(v)) return undefined;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function flatHeaders(h: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
  return out;
}

/** An HTTP client for one external system. */
export class HttpClient {
  readonly system: string;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly timeoutMs: number;
  private readonly deadlineMs: number;
  private readonly maxRetries: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly tracer: Tracer | undefined;
  private readonly propagator: TextMapPropagator | undefined;
  private readonly onAttempt: HttpInstrumentation["onAttempt"];
  private readonly abandon: AbortSignal | undefined;

  constructor(options: HttpClientOptions) {
    this.system = options.system;
    const instrumentation = options.instrumentation ?? ambient.instrumentation;
    this.abandon = options.abandon ?? ambient.abandon;
    this.tracer = instrumentation?.tracer;
    this.propagator = instrumentation?.propagator;
    this.onAttempt = instrumentation?.onAttempt;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.deadlineMs = options.deadlineMs ?? 30_000;
    this.maxRetries = options.maxRetries ?? 3;
    this.minBackoffMs = options.minBackoffMs ?? 200;
    this.maxBackoffMs = options.maxBackoffMs ?? 5_000;
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.ownsDispatcher = options.dispatcher === undefined;
    this.dispatcher =
      options.dispatcher ??
      new Agent({
        // Node's `ca` replaces the public roots: keep them, so a private CA is an addition.
        connect: { timeout: Math.min(this.timeoutMs, 10_000), ...(options.ca ? { ca: [...rootCertificates, options.ca] } : {}) },
        keepAliveTimeout: 4_000,
        connections: 32,
      });
  }

  /**
   * Sends `req`, retrying where safe. Resolves with any answer below 500 other
   * than 429; rejects with an UpstreamError otherwise.
   */
  async send(req: HttpRequest): Promise<HttpResponse> {
    const idempotent = req.idempotent ?? IDEMPOTENT.has(req.method);
    const started = Date.now();
    // Lower-case names, so a caller's "Content-Type" replaces the default instead of being sent beside it.
    const headers: Record<string, string> = { accept: "application/json" };
    for (const [k, v] of Object.entries(req.headers ?? {})) headers[k.toLowerCase()] = v;
    let body: string | undefined = req.body;
    if (req.json !== undefined) {
      body = JSON.stringify(req.json);
      headers["content-type"] ??= "application/json";
    } else if (req.form) {
      body = new URLSearchParams(req.form).toString();
      headers["content-type"] ??= "application/x-www-form-urlencoded";
    }
    let last: UpstreamError | undefined;
    let lastRetryable: HttpResponse | undefined;
    for (let attempt = 0; ; attempt++) {
      if (this.abandon?.aborted) throw this.abandoned();
      const left = this.deadlineMs - (Date.now() - started);
      if (left <= 0) break;
      const timeout = Math.min(req.timeoutMs ?? this.timeoutMs, left);
      let waitMs: number | undefined;
      const began = performance.now();
      const span = this.tracer ? this.startSpan(this.tracer, req, headers, attempt) : undefined;
      let observed = false;
      try {
        const res = await request(req.url, {
          dispatcher: this.dispatcher,
          method: req.method,
          headers,
          body,
          signal: this.abandon ? AbortSignal.any([AbortSignal.timeout(timeout), this.abandon]) : AbortSignal.timeout(timeout),
        });
        const text = await res.body.text();
        observed = true;
        this.observe(began, statusOutcome(res.statusCode), span, res.statusCode);
        const response: HttpResponse = { status: res.statusCode, headers: flatHeaders(res.headers), text };
        if (!RETRY_STATUS.has(res.statusCode)) return response;
        lastRetryable = response;
        last = new UpstreamError(this.system, "status", `${this.system} answered ${res.statusCode}`, { status: res.statusCode });
        // 429 means "not processed": repeatable whatever the method. 5xx only when idempotent.
        if (!(idempotent || res.statusCode === 429)) break;
        waitMs = retryAfterMs(response.headers["retry-after"]);
      } catch (err) {
        if (this.abandon?.aborted) {
          if (!observed) this.observe(began, "abandoned", span, undefined);
          throw this.abandoned(err);
        }
        if (!observed) this.observe(began, errorOutcome(err), span, undefined);
        const code = errorCode(err);
        if (isTimeout(err)) {
          last = new UpstreamError(this.system, "timeout", `${this.system} did not answer within ${timeout} ms`, { cause: err });
          if (!idempotent) break;
        } else if (NETWORK.has(code)) {
          last = new UpstreamError(this.system, "unreachable", `${this.system} is unreachable (${code})`, { cause: err });
          if (!(idempotent || NOT_SENT.has(code))) break;
        } else {
          throw new UpstreamError(this.system, "unreachable", `${this.system} request failed`, { cause: err });
        }
      }
      if (attempt >= this.maxRetries) break;
      const backoff = Math.random() * Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** attempt);
      const delay = Math.min(this.maxBackoffMs, waitMs ?? backoff);
      if (Date.now() - started + delay >= this.deadlineMs) break;
      await this.backoff(delay);
    }
    // Only when the last attempt was answered (not a timeout or a dropped connection after it).
    if (req.acceptRetryableStatus && lastRetryable && last?.failure === "status") return lastRetryable;
    throw last ?? new UpstreamError(this.system, "timeout", `${this.system} did not answer within ${this.deadlineMs} ms`);
  }

  /** Sleeps before a retry; an abandonment ends the wait (and the next turn of the loop throws). */
  private backoff(ms: number): Promise<void> {
    const abandon = this.abandon;
    if (!abandon) return this.sleep(ms);
    if (abandon.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        abandon.removeEventListener("abort", done);
        resolve();
      };
      abandon.addEventListener("abort", done, { once: true });
      this.sleep(ms).then(done, done);
    });
  }

  /** The error of a call given up at shutdown: retryable, so the work it served is tried again by the next run. */
  private abandoned(cause?: unknown): UpstreamError {
    return new UpstreamError(this.system, "unreachable", `${this.system} call abandoned: the broker is shutting down`, {
      ...(cause === undefined ? {} : { cause }),
      reason: `${this.system.toUpperCase()}_UNAVAILABLE`,
      retryable: true,
    });
  }

  /** A client span for one attempt, its trace context written into `headers`. */
  private startSpan(tracer: Tracer, req: HttpRequest, headers: Record<string, string>, attempt: number): Span {
    const attributes: Attributes = { "http.request.method": req.method, "peer.service": this.system };
    try {
      const url = new URL(req.url);
      attributes["server.address"] = url.hostname;
      attributes["server.port"] = Number(url.port) || (url.protocol === "https:" ? 443 : 80);
      // Without the query string: it may carry search terms, never needed to read a trace.
      attributes["url.full"] = `${url.origin}${url.pathname}`;
    } catch {
      // undici refuses the URL in a moment; the span says so.
    }
    if (attempt > 0) attributes["http.request.resend_count"] = attempt;
    const parent = context.active();
    const span = tracer.startSpan(`${this.system} ${req.method}`, { kind: SpanKind.CLIENT, attributes }, parent);
    this.propagator?.inject(trace.setSpan(parent, span), headers, {
      set: (carrier, key, value) => {
        (carrier as Record<string, string>)[key] = value;
      },
    });
    return span;
  }

  /** Records one attempt's outcome: metrics, and the end of its span. */
  private observe(began: number, outcome: UpstreamOutcome, span: Span | undefined, status: number | undefined): void {
    this.onAttempt?.(this.system, outcome, (performance.now() - began) / 1000);
    if (!span) return;
    if (status !== undefined) span.setAttribute("http.response.status_code", status);
    // As OpenTelemetry's HTTP conventions have it for a client: 4xx and 5xx are errors, as is no answer.
    if (outcome !== "ok") {
      span.setAttribute("error.type", status !== undefined ? String(status) : outcome);
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  }

  /** Parses a JSON answer; a body that is not JSON is a malformed answer. */
  json<T>(res: HttpResponse): T {
    try {
      return JSON.parse(res.text) as T;
    } catch (err) {
      throw new UpstreamError(this.system, "malformed", `${this.system} answered ${res.status} with a body that is not JSON`, { status: res.status, cause: err });
    }
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close();
  }
}

/** The HttpClient options every driver shares, from settings (HTTP_TIMEOUT_SECONDS, HTTP_MAX_RETRIES, HTTP_CA_FILE). */
export function httpOptionsFrom(http: { timeoutMs: number; maxRetries: number; caFile: string }): Omit<HttpClientOptions, "system"> {
  return {
    timeoutMs: http.timeoutMs,
    maxRetries: http.maxRetries,
    ...(http.caFile ? { ca: readFileSync(http.caFile, "utf8") } : {}),
  };
}
