/**
 * What a caller of the broker would be told about an error a driver threw:
 * the transport edge (src/server/errors.ts) chooses the code, so driver tests
 * check drivers' errors through it.
 */
import { BrokerError, UpstreamError } from "../../src/domain/index.js";
import { upstreamCode } from "../../src/server/errors.js";

/** The canonical code the caller gets for `err`. */
export function callerCode(err: unknown): string {
  if (err instanceof UpstreamError) return upstreamCode(err);
  if (err instanceof BrokerError) return err.code;
  return "INTERNAL";
}

/** The error's fields with the caller's code, for toMatchObject. */
export function asCaller(err: unknown): Record<string, unknown> {
  const e = err as Record<string, unknown>;
  return {
    code: callerCode(err),
    reason: e.reason,
    failure: e.failure,
    status: e.status,
    retryable: e.retryable,
    metadata: e.metadata,
    message: e.message,
    field: e.field,
  };
}

/** Either kind of failure the broker's code throws on purpose. */
export type Failure = BrokerError | UpstreamError;

/** Whether `err` is one of them. */
export function isFailure(err: unknown): err is Failure {
  return err instanceof BrokerError || err instanceof UpstreamError;
}
