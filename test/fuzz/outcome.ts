/**
 * What the fuzz suites check about one answer: its code is one a client can
 * act on (never INTERNAL, UNKNOWN, or a hang), and an INVALID_ARGUMENT names
 * the field. Also a log sink that counts the broker's "unexpected error"
 * lines (the INTERNAL path of toConnectError), whatever the transport said.
 */
import { Writable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { type Logger, createLogger } from "../../src/logging.js";
import { errorDetailOf } from "../helpers/grpc-client.js";

/** One answer, from any transport. `code` 0 is OK. */
export interface Outcome {
  code: number;
  message: string;
  /** ErrorDetail.field, when the broker attached an ErrorDetail. */
  field?: string;
  hasDetail: boolean;
}

/** The codes bad input may get: each tells the client what to do. */
export const CLIENT_CODES: ReadonlySet<number> = new Set([
  Code.InvalidArgument,
  Code.NotFound,
  Code.AlreadyExists,
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.FailedPrecondition,
  Code.Aborted,
  Code.OutOfRange,
  Code.ResourceExhausted,
  Code.Unimplemented,
]);

export const OK: Outcome = { code: 0, message: "", hasDetail: false };

/** The outcome of a grpc-js client error (status code, details, grpc-status-details-bin). */
export function fromGrpcError(err: unknown): Outcome {
  const e = err as { code?: number; details?: string };
  const detail = errorDetailOf(err);
  return {
    code: typeof e.code === "number" ? e.code : Code.Unknown,
    message: String(e.details ?? err),
    hasDetail: detail !== undefined,
    ...(detail ? { field: detail.field } : {}),
  };
}

/** The outcome of a Connect client error. */
export function fromConnectError(err: unknown): Outcome {
  const ce = ConnectError.from(err);
  const detail = ce.findDetails(ErrorDetailSchema)[0];
  return { code: ce.code, message: ce.rawMessage, hasDetail: detail !== undefined, ...(detail ? { field: detail.field } : {}) };
}

/**
 * Why `o` is not an acceptable answer to bad input, or undefined. A broker
 * INVALID_ARGUMENT carries the field in its ErrorDetail and starts its message
 * with it; one from the transport's own decoding ("cannot decode field …",
 * "parse binary: …") names what it could not decode.
 */
export function badOutcome(o: Outcome): string | undefined {
  if (o.code === 0) return undefined;
  if (!CLIENT_CODES.has(o.code)) return `code ${Code[o.code] ?? o.code}: ${o.message.slice(0, 300)}`;
  if (o.hasDetail && o.message.length > 512) return `error message of ${o.message.length} characters`;
  if (o.code === Code.InvalidArgument) {
    if (o.hasDetail) {
      if (!o.field) return `INVALID_ARGUMENT without a field: ${o.message.slice(0, 300)}`;
      if (!o.message.startsWith(o.field)) return `message does not name ${o.field}: ${o.message.slice(0, 300)}`;
    } else if (!/^(cannot decode|parse binary|protocol error|Invalid count value)/.test(o.message)) {
      return `INVALID_ARGUMENT names no field: ${o.message.slice(0, 300)}`;
    }
  }
  return undefined;
}

/** A logger that keeps nothing but counts, and remembers the first few, "unexpected error" lines. */
export function countingLogger(): { log: Logger; unexpected: string[] } {
  const unexpected: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      const line = chunk.toString("utf8");
      if (line.includes('"msg":"unexpected error"') && unexpected.length < 20) unexpected.push(line.slice(0, 2000));
      done();
    },
  });
  return { log: createLogger({ level: "error", destination }), unexpected };
}

/**
 * INTERNAL answers the transport libraries give, before any broker code runs,
 * to input they cannot read. They cannot be changed from the broker's
 * handlers (grpc-js sends them from its call object; connect-node parses the
 * body before interceptors run); the report of issue #4 lists them.
 */
export const LIBRARY_INTERNALS: { port: "grpc" | "web"; message: RegExp; source: string }[] = [
  {
    port: "grpc",
    message: /^Failed to decompress message$/,
    source: "grpc-js: gzip/deflate-flagged message that does not inflate (the gRPC status-code table lists this as INTERNAL)",
  },
  { port: "grpc", message: /^Invalid grpc-timeout value/, source: "grpc-js: unparseable grpc-timeout header" },
  { port: "web", message: /^parse binary: /, source: "connect-node: proto body that does not decode (its binary serialization throws Code.Internal)" },
  {
    port: "web",
    message: /^received compressed envelope, but do not know how to decompress$/,
    source: "connect-node: envelope flagged compressed with no encoding negotiated",
  },
];
