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

/**
 * Longest error message sent to a client. Messages may quote request values
 * (an unknown capability, an id); over gRPC they travel twice in trailers
 * (grpc-message, percent-encoded, and grpc-status-details-bin), and trailers
 * larger than the client accepts (gRPC C-core clients: 8 KiB by default) are
 * never delivered: with a 200 KB message, a grpc-js client's call hung and so
 * did every later call on its HTTP/2 connection. 512 characters stay under
 * 8 KiB even when every character takes three UTF-8 bytes.
 */
export const MAX_MESSAGE_CHARS = 512;
/** Longest ErrorDetail metadata value (they may carry request values too). */
const MAX_METADATA_CHARS = 128;

// A lone surrogate cannot be encoded as UTF-8: the gRPC trailer encoders (encodeURI) throw on it.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `text` cut to `max` characters (marked with …) and made well-formed UTF-16. */
function bounded(text: string, max = MAX_MESSAGE_CHARS): string {
  const cut = text.length > max ? `${text.slice(0, max - 1)}…` : text;
  return cut.replace(LONE_SURROGATE, "\uFFFD");
}

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
      log?.warn({ err, cause: err.cause, reason: err.reason }, bounded(err.message));
    }
    const metadata: Record<string, string> = {};
    for (const [k, v] of Object.entries(err.metadata)) metadata[k] = bounded(v, MAX_METADATA_CHARS);
    const detail = create(ErrorDetailSchema, { reason: err.reason, field: err.field ?? "", metadata });
    return new ConnectError(bounded(err.message), CODES[err.code], undefined, [{ desc: ErrorDetailSchema, value: detail }], err);
  }
  log?.error({ err }, "unexpected error");
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}
