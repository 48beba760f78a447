/**
 * The one place where errors become Connect/gRPC errors. BrokerErrors keep
 * their code and message and gain an ErrorDetail (reason, field, metadata);
 * an UpstreamError (an external system failed) becomes DEADLINE_EXCEEDED when
 * it timed out and UNAVAILABLE otherwise, with its reason and system; anything
 * else is INTERNAL with a generic message, logged with its cause.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BrokerError, type ErrorCode, UpstreamError } from "../domain/index.js";
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

/** The code a caller gets for an external system's failure. */
export function upstreamCode(err: UpstreamError): ErrorCode {
  return err.failure === "timeout" ? "DEADLINE_EXCEEDED" : "UNAVAILABLE";
}

/** Maps any thrown value to a ConnectError that is safe to send. */
export function toConnectError(err: unknown, log?: Logger): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof UpstreamError) {
    log?.warn({ err, cause: err.cause, reason: err.reason, system: err.system }, bounded(err.message));
    return withDetail(upstreamCode(err), err.reason, err.message, undefined, err.metadata, err);
  }
  if (err instanceof BrokerError) {
    // A stream ended by the broker's own shutdown is expected (the hub logs it once).
    const expected = err.reason === "SHUTTING_DOWN";
    if (!expected && (err.code === "UNAVAILABLE" || err.code === "INTERNAL" || err.code === "DEADLINE_EXCEEDED")) {
      log?.warn({ err, cause: err.cause, reason: err.reason }, bounded(err.message));
    }
    return withDetail(err.code, err.reason, err.message, err.field, err.metadata, err);
  }
  log?.error({ err }, "unexpected error");
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

function withDetail(
  code: ErrorCode,
  reason: string,
  message: string,
  field: string | undefined,
  meta: Record<string, string>,
  cause: Error,
): ConnectError {
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) metadata[k] = bounded(v, MAX_METADATA_CHARS);
  const detail = create(ErrorDetailSchema, { reason, field: field ?? "", metadata });
  return new ConnectError(bounded(message), CODES[code], undefined, [{ desc: ErrorDetailSchema, value: detail }], cause);
}
