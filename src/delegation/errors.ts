/**
 * Typed errors of the use cases. The server maps `code` to a gRPC/Connect code
 * and `reason` to a machine-readable detail; `message` is safe to show callers.
 */

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
