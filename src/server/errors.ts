/**
 * The one place where errors become Connect/gRPC errors. BrokerErrors keep
 * their code and message and gain an ErrorDetail (reason, field, metadata);
 * anything else is INTERNAL with a generic message, logged with its cause.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BrokerError, type ErrorCode } from "../delegation/errors.js";
import { ErrorDetailSchema } from "../gen/llmbroker/v1/delegation_pb.js";
import type { Logger } from "../logging.js";

const CODES: Record<ErrorCode, Code> = {
  INVALID_ARGUMENT: Code.InvalidArgument,
  NOT_FOUND: Code.NotFound,
  ALREADY_EXISTS: Code.AlreadyExists,
  PERMISSION_DENIED: Code.PermissionDenied,
  UNAUTHENTICATED: Code.Unauthenticated,
  FAILED_PRECONDITION: Code.FailedPrecondition,
  ABORTED: Code.Aborted,
  OUT_OF_RANGE: Code.OutOfRange,
  RESOURCE_EXHAUSTED: Code.ResourceExhausted,
  UNAVAILABLE: Code.Unavailable,
  DEADLINE_EXCEEDED: Code.DeadlineExceeded,
  INTERNAL: Code.Internal,
};

/** Maps any thrown value to a ConnectError that is safe to send. */
export function toConnectError(err: unknown, log?: Logger): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof BrokerError) {
    if (err.code === "UNAVAILABLE" || err.code === "INTERNAL" || err.code === "DEADLINE_EXCEEDED") {
      log?.warn({ err, cause: err.cause, reason: err.reason }, err.message);
    }
    const detail = create(ErrorDetailSchema, { reason: err.reason, field: err.field ?? "", metadata: err.metadata });
    return new ConnectError(err.message, CODES[err.code], undefined, [{ desc: ErrorDetailSchema, value: detail }], err);
  }
  log?.error({ err }, "unexpected error");
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}
