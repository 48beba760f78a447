/**
 * A failed call as the user reads it: one line with the gRPC code and the
 * broker's message exactly as it was sent (or, for a broker that cannot be
 * reached, what went wrong with the connection), and the exit code. With
 * --json, the same as one JSON object on stderr, with the ErrorDetail's
 * reason and field for scripts.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema } from "../../gen/llmbroker/v1/delegation_pb.js";
import { EXIT } from "../exit-codes.js";

/** gRPC's names of the codes, as the broker's documentation spells them. */
const NAMES: Record<Code, string> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** The gRPC name of a Connect code. */
export function codeName(code: Code): string {
  return NAMES[code] ?? String(code);
}

/** Socket failures that mean "the broker was not reached". */
const CONNECT_FAILURES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "ECONNRESET", "EPIPE"]);

/** Node's codes for a certificate the client could not verify. */
const VERIFY_FAILURES = /CERT|SELF_SIGNED|UNABLE_TO_|ALTNAME/;

export interface Failure {
  exit: number;
  /** One line for people. */
  line: string;
  /** The same for scripts. */
  json: { code: string; message: string; reason?: string; field?: string };
}

function causeOf(err: ConnectError): NodeJS.ErrnoException | undefined {
  let c: unknown = err.cause;
  for (let i = 0; i < 4 && c instanceof Error; i++) {
    if (typeof (c as NodeJS.ErrnoException).code === "string") return c as NodeJS.ErrnoException;
    c = (c as Error & { cause?: unknown }).cause;
  }
  return undefined;
}

/** A TLS handshake that failed: retrying will not help. */
export function isTlsFailure(err: unknown): boolean {
  const code = causeOf(ConnectError.from(err))?.code ?? "";
  return code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_") || VERIFY_FAILURES.test(code);
}

/** The line for a failure of the transport itself (no answer from the broker), if it is one. */
function transportLine(ce: ConnectError, target: string): string | undefined {
  const cause = causeOf(ce);
  const code = cause?.code ?? "";
  if (CONNECT_FAILURES.has(code)) return `cannot reach the broker at ${target} (${code}); is it running there? (--addr, LLM_BROKER_ADDR)`;
  if (code === "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED") {
    return `the broker at ${target} requires a client certificate: pass --cert and --key (LLM_BROKER_CERT, LLM_BROKER_KEY)`;
  }
  if (code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_") || VERIFY_FAILURES.test(code)) {
    const why = (cause as { reason?: unknown }).reason;
    const hint = VERIFY_FAILURES.test(code) ? "; pass the CA that issued its certificate with --ca (LLM_BROKER_CA)" : "; check --ca, --cert and --key";
    return `TLS with the broker at ${target} failed: ${typeof why === "string" ? why : cause!.message} (${code})${hint}`;
  }
  if (ce.code === Code.Canceled && /stream closed with error code/.test(ce.rawMessage)) {
    return `the broker at ${target} closed the call (${ce.rawMessage}); if it uses TLS (AUTH_MODE=mtls), use https:// or --ca`;
  }
  if (ce.code === Code.DeadlineExceeded) return `DEADLINE_EXCEEDED: no answer from ${target} in time (--timeout)`;
  return undefined;
}

/** How `err`, thrown by a call to `target`, is reported. */
export function describeFailure(err: unknown, target: string): Failure {
  const ce = ConnectError.from(err);
  const name = codeName(ce.code);
  const detail = ce.findDetails(ErrorDetailSchema)[0];
  const reason = detail?.reason || undefined;
  const field = detail?.field || undefined;
  // The broker attaches an ErrorDetail to every error it sends; without one, the transport failed.
  let line = detail === undefined ? transportLine(ce, target) : undefined;
  if (line === undefined) {
    line = `${name}: ${ce.rawMessage}`;
    if (ce.code === Code.Unauthenticated) line += " (pass --token or LLM_BROKER_TOKEN, a client certificate, or in dev mode --as)";
  }
  return {
    exit: EXIT.error,
    line,
    json: { code: name, message: ce.rawMessage, ...(reason ? { reason } : {}), ...(field ? { field } : {}) },
  };
}
