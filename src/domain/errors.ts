/**
 * Errors of the domain and of the systems around it. Inner layers throw
 * these; the transport edge (src/server/errors.ts) alone turns them into
 * gRPC/Connect codes.
 *
 * - BrokerError: an expected outcome of a use case (bad input, not found, not
 *   allowed, a precondition the world does not meet), with a canonical error
 *   class, a stable reason and a message safe to show the caller.
 * - UpstreamError: an external system failed (identity provider, GSAP,
 *   Chronicle, a JWKS). Drivers report what failed and whether repeating
 *   later may help; they never pick a gRPC code.
 */

/** The canonical error classes of use-case outcomes (named as in google.rpc.Code). */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "UNAUTHENTICATED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "RESOURCE_EXHAUSTED"
  | "UNAVAILABLE"
  | "DEADLINE_EXCEEDED"
  | "INTERNAL";

export interface BrokerErrorOptions {
  /** The request field at fault, for INVALID_ARGUMENT. */
  field?: string;
  metadata?: Record<string, string>;
  cause?: unknown;
}

/** An expected failure with a code, a stable reason and a caller-safe message. */
export class BrokerError extends Error {
  override name = "BrokerError";
  readonly field: string | undefined;
  readonly metadata: Record<string, string>;

  constructor(
    readonly code: ErrorCode,
    readonly reason: string,
    message: string,
    options: BrokerErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.field = options.field;
    this.metadata = options.metadata ?? {};
  }
}

/** INVALID_ARGUMENT naming the field. */
export function invalidArgument(field: string, message: string): BrokerError {
  return new BrokerError("INVALID_ARGUMENT", "INVALID_FIELD", `${field}: ${message}`, { field });
}

/** NOT_FOUND for a delegation; the same answer whether it is missing or not the caller's. */
export function delegationNotFound(id: string): BrokerError {
  return new BrokerError("NOT_FOUND", "DELEGATION_NOT_FOUND", `delegation ${id} not found`, {
    metadata: { delegation_id: id },
  });
}

export function ceremonyNotFound(id: string): BrokerError {
  return new BrokerError("NOT_FOUND", "CEREMONY_NOT_FOUND", `ceremony ${id} not found`, { metadata: { ceremony_id: id } });
}

/**
 * How an external system failed:
 * - `timeout`: no answer in time (the request may or may not have been processed);
 * - `unreachable`: no connection, or it broke;
 * - `status`: an answer that says "not now" (5xx, 429);
 * - `malformed`: an answer that breaks the system's contract;
 * - `rejected`: the system refused this request for good (a 4xx);
 * - `credentials`: the system refused the broker's own credentials (401/403).
 */
export type UpstreamFailure = "timeout" | "unreachable" | "status" | "malformed" | "rejected" | "credentials";

export interface UpstreamErrorOptions {
  /** The HTTP status of the answer, if there was one. */
  status?: number;
  /** Stable machine-readable cause. By default, SYSTEM_TIMEOUT or SYSTEM_UNAVAILABLE. */
  reason?: string;
  /** Whether repeating later may succeed. By default, false only for `rejected`. */
  retryable?: boolean;
  metadata?: Record<string, string>;
  cause?: unknown;
}

/** A failed call to an external system. The message names the system, never a secret. */
export class UpstreamError extends Error {
  override name = "UpstreamError";
  readonly status: number | undefined;
  readonly reason: string;
  readonly retryable: boolean;
  readonly metadata: Record<string, string>;

  constructor(
    /** keycloak, entra, gsap, chronicle, jwks, … */
    readonly system: string,
    readonly failure: UpstreamFailure,
    message: string,
    options: UpstreamErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = options.status;
    this.reason = options.reason ?? `${system.toUpperCase()}_${failure === "timeout" ? "TIMEOUT" : "UNAVAILABLE"}`;
    this.retryable = options.retryable ?? failure !== "rejected";
    this.metadata = { system, ...(options.status ? { status: String(options.status) } : {}), ...options.metadata };
  }
}

/** Whether a failure may go away if the same work is tried again later. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof UpstreamError) return err.retryable;
  // Domain answers (bad input, not found, denied) do not change on retry; anything
  // unexpected (a bug, a dropped connection in a library) might.
  return !(err instanceof BrokerError);
}
